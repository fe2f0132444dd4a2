"""Configuration: files and flags are validated up front, errors name file, field, expectation.

No root: nothing here opens a socket or a device; the CLI cases stop at the configuration error
before the daemon would create anything.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tunnels.config import ClientConfig, ConfigError, ServerConfig
from tunnels.ppp.auth.base import AuthMethod
from tunnels.ppp.config import EncryptionLevel

GOOD_SERVER = """
[server]
listen = "203.0.113.2"
name = "vpnsrv"
max_ports = 4
pool = "10.10.100.0/24"
dns = ["10.10.0.53"]
wins = ["10.10.0.54", "10.10.0.55"]
auth = ["mschapv2", "mschap"]
encryption = "strongest"
mppe = "stateful"
echo_interval = 2.5
control_echo = 30

[users.alice]
password = "s3cret"

[users.bob]
password = "x"
dialin = false
"""

GOOD_CLIENT = """
[client]
server = "203.0.113.2"
user = "alice"
password = "s3cret"
auth = ["mschapv2"]
encryption = "strong"
mppe = "stateful"
routes = "split"
split = ["10.10.0.0/24", "10.20.0.0/16"]
echo_interval = 1
interface = "corp0"
reconnect = 2
reconnect_delay = 1.5
"""


def write(tmp_path: Path, text: str, name: str = "vpn.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_server_file_loads_every_field(tmp_path):
    c = ServerConfig.load(write(tmp_path, GOOD_SERVER))
    assert c.listen == "203.0.113.2" and str(c.pool) == "10.10.100.0/24"
    assert c.tunnel_address == "10.10.100.1" and c.max_ports == 4 and c.name == "vpnsrv"
    assert c.dns == ("10.10.0.53",) and c.wins == ("10.10.0.54", "10.10.0.55")
    assert c.auth == (AuthMethod.MSCHAPV2, AuthMethod.MSCHAP)
    assert c.encryption is EncryptionLevel.STRONGEST and not c.mppe_stateless
    assert c.echo_interval == 2.5 and c.control_echo == 30
    assert c.accounts.lookup("ALICE").password == "s3cret"  # case-insensitive like SAM
    assert c.accounts.lookup("bob").dialin_allowed is False


def test_server_defaults(tmp_path):
    c = ServerConfig.load(write(tmp_path, '[server]\nlisten = "192.0.2.1"\n'
                                          'pool = "10.9.0.0/30"\n'))
    assert c.auth == (AuthMethod.MSCHAPV2,) and c.encryption is EncryptionLevel.NONE
    assert c.mppe_stateless and c.max_ports == 128 and c.echo_interval == 10


BAD_SERVER = [
    ("no-server-table", "[users.a]\npassword='x'\n", "missing [server] table"),
    ("unknown-table", GOOD_SERVER + "\n[clients]\nx=1\n", "[clients]: unknown table"),
    ("unknown-field", GOOD_SERVER.replace("name =", "nmae ="),
     "server.nmae: unknown field; expected one of auth, ca, certificate, control_echo, "
     "data_sequencing, dns"),
    ("listen-missing", GOOD_SERVER.replace('listen = "203.0.113.2"\n', ""),
     "server.listen: missing; expected an IPv4 address"),
    ("listen-bad", GOOD_SERVER.replace('"203.0.113.2"', '"vpn.example"'),
     "server.listen: got 'vpn.example'; expected an IPv4 address"),
    ("listen-any", GOOD_SERVER.replace('"203.0.113.2"', '"0.0.0.0"'),
     "server.listen: got '0.0.0.0'; expected the one address clients reach"),
    ("pool-host-bits", GOOD_SERVER.replace("10.10.100.0/24", "10.10.100.1/24"),
     "server.pool: got '10.10.100.1/24'"),
    ("pool-too-small", GOOD_SERVER.replace("10.10.100.0/24", "10.10.100.0/31"),
     "server.pool: got '10.10.100.0/31'; expected a /30 or larger"),
    ("pool-contains-listen", GOOD_SERVER.replace("10.10.100.0/24", "203.0.113.0/24"),
     "a subnet not containing listen"),
    ("max-ports-zero", GOOD_SERVER.replace("max_ports = 4", "max_ports = 0"),
     "server.max_ports: got 0; expected an integer >= 1"),
    ("max-ports-bool", GOOD_SERVER.replace("max_ports = 4", "max_ports = true"),
     "server.max_ports: got True"),
    ("dns-three", GOOD_SERVER.replace('["10.10.0.53"]', '["1.1.1.1","1.1.1.2","1.1.1.3"]'),
     "server.dns: got"),
    ("auth-unknown", GOOD_SERVER.replace('"mschap"]', '"ntlm"]'),
     "server.auth: got ['mschapv2', 'ntlm']; expected methods among pap, chap"),
    ("auth-empty", GOOD_SERVER.replace('["mschapv2", "mschap"]', "[]"), "server.auth: got []"),
    ("encryption-unknown", GOOD_SERVER.replace('"strongest"', '"max"'),
     "server.encryption: got 'max'; expected one of none, optional, basic"),
    ("mppe-without-mschap", GOOD_SERVER.replace('["mschapv2", "mschap"]', '["pap", "chap"]'),
     "server.encryption: got 'strongest'; expected none or optional with these auth"),
    ("mppe-mode", GOOD_SERVER.replace('"stateful"', '"sometimes"'),
     "server.mppe: got 'sometimes'; expected one of stateless, stateful"),
    ("echo-negative", GOOD_SERVER.replace("2.5", "-1"), "server.echo_interval: got -1"),
    ("control-echo-zero", GOOD_SERVER.replace("control_echo = 30", "control_echo = 0"),
     "server.control_echo: got 0; expected a number >= 1"),
    ("user-no-password", GOOD_SERVER.replace('password = "x"\n', ""),
     "users.bob.password: missing"),
    ("user-password-number", GOOD_SERVER.replace('password = "x"', "password = 5"),
     "users.bob.password: got 5; expected a string"),
    ("user-dialin-string", GOOD_SERVER.replace("dialin = false", 'dialin = "no"'),
     "users.bob.dialin: got 'no'; expected allow, deny or policy (or true or false"),
    ("user-unknown-field", GOOD_SERVER.replace("dialin = false", "group = 'x'"),
     "users.bob.group: unknown field; expected one of dialin, groups, password, "
     "static_address"),
    ("not-toml", "[server\nlisten=", "not valid TOML"),
]


@pytest.mark.parametrize("text, message", [c[1:] for c in BAD_SERVER],
                         ids=[c[0] for c in BAD_SERVER])
def test_server_errors_name_the_file_and_field(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        ServerConfig.load(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.toml: no such file"):
        ServerConfig.load(tmp_path / "nope.toml")


def test_client_file_loads_every_field(tmp_path):
    c = ClientConfig.load(write(tmp_path, GOOD_CLIENT))
    assert (c.server, c.username, c.password) == ("203.0.113.2", "alice", "s3cret")
    assert c.auth == (AuthMethod.MSCHAPV2,) and c.encryption is EncryptionLevel.STRONG
    assert not c.mppe_stateless and c.routes == "split"
    assert c.split == ("10.10.0.0/24", "10.20.0.0/16")
    assert c.echo_interval == 1 and c.interface == "corp0"
    assert c.reconnect == 2 and c.reconnect_delay == 1.5


def test_client_reconnect_is_off_by_default():
    c = ClientConfig(server="203.0.113.2", username="a", password="b")
    assert c.reconnect == 0


def test_client_stop_linger_is_a_full_retransmission_cycle_by_default():
    """RFC 2661 §5.7/§5.8: 1 + 2 + 4 + 8 + 8 + 8 s with the recommended timers."""
    from tunnels.l2tp.reliable import ReliableChannel

    c = ClientConfig(server="203.0.113.2", username="a", password="b")
    assert c.stop_linger == ReliableChannel(16, 4, 1.0, 8.0, 5, 0.1).linger_time() == 31.0


BAD_CLIENT = [
    ("server-name", GOOD_CLIENT.replace('"203.0.113.2"', '"vpn"'), "client.server: got 'vpn'"),
    ("no-user", GOOD_CLIENT.replace('user = "alice"\n', ""), "client.user: missing"),
    ("split-empty", GOOD_CLIENT.replace('["10.10.0.0/24", "10.20.0.0/16"]', "[]"),
     "client.split: got []; expected at least one prefix"),
    ("split-bad", GOOD_CLIENT.replace('"10.20.0.0/16"', '"10.20.0.0/40"'), "client.split"),
    ("routes-bad", GOOD_CLIENT.replace('"split"\n', '"all"\n'), "client.routes: got 'all'"),
    ("interface-long", GOOD_CLIENT.replace('"corp0"', '"a-very-long-ifname"'),
     "client.interface: got 'a-very-long-ifname'"),
    ("reconnect-negative", GOOD_CLIENT.replace("reconnect = 2", "reconnect = -1"),
     "client.reconnect: got -1; expected an integer >= 0"),
    ("mppe-with-pap", GOOD_CLIENT.replace('["mschapv2"]', '["pap"]'),
     "client.encryption: got 'strong'; expected none or optional"),
    ("stop-linger-long", GOOD_CLIENT.replace("reconnect = 2", "reconnect = 2\nstop_linger = 301"),
     "client.stop_linger: got 301; expected a number from 1 to 300"),
    ("stop-linger-zero", GOOD_CLIENT.replace("reconnect = 2", "reconnect = 2\nstop_linger = 0"),
     "client.stop_linger: got 0; expected a number from 1 to 300"),
]


@pytest.mark.parametrize("text, message", [c[1:] for c in BAD_CLIENT],
                         ids=[c[0] for c in BAD_CLIENT])
def test_client_errors_name_the_file_and_field(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        ClientConfig.load(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)


@pytest.mark.parametrize("kwargs, message", [
    ({"server": "x"}, "--server 'x'"),
    ({"username": ""}, "--user"),
    ({"routes": "split"}, "--routes split: expected at least one --split"),
    ({"routes": "split", "split": ("10.0.0.0/33",)}, "--split '10.0.0.0/33'"),
    ({"encryption": EncryptionLevel.BASIC, "auth": (AuthMethod.CHAP,)}, "--encryption basic"),
    ({"interface": "x" * 16}, "--interface"),
    ({"echo_interval": -1.0}, "--echo-interval"),
    ({"stop_linger": 0.5}, "--stop-linger 0.5: expected seconds from 1 to 300"),
], ids=["server", "user", "split-missing", "split-bad", "mppe-without-mschap", "ifname",
        "echo", "stop-linger"])
def test_client_flags_are_checked_like_the_file(kwargs, message):
    base = {"server": "203.0.113.2", "username": "alice", "password": "p"}
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        ClientConfig(**{**base, **kwargs})


def _vpnlab(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "testbed.cli", *args], capture_output=True,
                          text=True, timeout=60)


def test_cli_server_with_a_bad_file_exits_2_before_creating_anything(tmp_path):
    path = write(tmp_path, GOOD_SERVER.replace("max_ports = 4", "max_ports = -3"))
    done = _vpnlab("server", "--config", str(path), "--status", str(tmp_path / "st.json"))
    assert done.returncode == 2
    assert f"{path}: server.max_ports: got -3" in done.stderr
    assert not (tmp_path / "st.json").exists()  # nothing started, not even the status file


def test_cli_connect_errors(tmp_path):
    done = _vpnlab("connect", "--server", "203.0.113.2")
    assert done.returncode == 2 and "--user, --password: required" in done.stderr
    done = _vpnlab("connect", "--protocol", "pptp", "--server", "203.0.113.2", "--user", "a",
                   "--password", "b", "--tunnel-secret", "s")
    assert done.returncode == 2 and "L2TP settings" in done.stderr
    done = _vpnlab("connect", "--protocol", "l2tp", "--server", "203.0.113.2", "--user", "a",
                   "--password", "b", "--hide-avps")
    assert done.returncode == 2 and "--tunnel-secret too" in done.stderr
    path = write(tmp_path, GOOD_CLIENT.replace('"strong"', '"medium"'))
    done = _vpnlab("connect", "--config", str(path))
    assert done.returncode == 2 and f"{path}: client.encryption: got 'medium'" in done.stderr


IPSEC_SERVER = GOOD_SERVER.replace("[server]", '[server]\nprotocols = ["l2tp-ipsec"]')


@pytest.mark.parametrize("extra, message", [
    ("", "server.psk: missing; expected the IKE pre-shared key, or certificate"),
    ('psk = "k"\nencryption = "none"', "server.encryption: got 'none'; expected basic, strong"),
    ('psk = "k"\nipsec_ciphers = ["rc4"]', "server.ipsec_ciphers: got ['rc4']; expected a list"),
    ('certificate = "x.pem"', "server.private_key: expected a file path: certificate, "
                              "private_key and ca go together"),
    ('psk = "k"\nnat_t = "yes"', "server.nat_t: got 'yes'; expected true or false"),
], ids=["no-psk", "no-encryption", "bad-cipher", "partial-certs", "nat-t-string"])
def test_ipsec_server_fields_are_checked(tmp_path, extra, message):
    text = IPSEC_SERVER.replace('encryption = "strongest"\n', "").replace(
        "[server]\n", f"[server]\n{extra}\n", 1)
    with pytest.raises(ConfigError) as err:
        ServerConfig.load(write(tmp_path, text))
    assert message in str(err.value)


def test_ipsec_server_with_certificates_loads_pem_as_der(tmp_path):
    from topologies.pki import make_pki

    pki = make_pki(tmp_path / "pki", ["srv"])
    text = IPSEC_SERVER.replace("[server]\n", f'[server]\ncertificate = "{pki["srv"]["cert"]}"'
                                f'\nprivate_key = "{pki["srv"]["key"]}"\nca = '
                                f'["{pki["ca"]["cert"]}"]\n', 1)
    config = ServerConfig.load(write(tmp_path, text))
    assert config.certificate[:1] == b"\x30" and len(config.ca) == 1 and not config.psk


def test_l2tp_and_l2tp_ipsec_cannot_share_udp_1701(tmp_path):
    text = GOOD_SERVER.replace("[server]", '[server]\nprotocols = ["l2tp", "l2tp-ipsec"]\n'
                               'psk = "k"')
    with pytest.raises(ConfigError, match="l2tp or l2tp-ipsec, not both"):
        ServerConfig.load(write(tmp_path, text))


def test_client_ipsec_flags_are_checked():
    base = {"server": "203.0.113.2", "username": "alice", "password": "p"}
    with pytest.raises(ConfigError, match="expected --psk KEY"):
        ClientConfig(**base, protocol="l2tp-ipsec", encryption=EncryptionLevel.STRONGEST)
    with pytest.raises(ConfigError, match="L2TP/IPsec always encrypts"):
        ClientConfig(**base, protocol="l2tp-ipsec", psk="k")
    with pytest.raises(ConfigError, match="expected --protocol l2tp-ipsec"):
        ClientConfig(**base, protocol="l2tp", psk="k")


# -- issue 9: accounts, ports, addresses, RADIUS, accounting, remote access policies ---------------
POLICY_SERVER = """
[server]
listen = "203.0.113.2"
name = "vpnsrv"
max_ports = 16
pool = "10.10.100.0/24"
auth = ["mschapv2", "mschap", "pap"]
protocols = ["pptp", "l2tp-ipsec"]
psk = "ipsec-key"
encryption = "strongest"

[users.alice]
password = "s3cret"
dialin = "policy"
groups = ["VPN Users"]
static_address = "10.10.100.50"

[users.bob]
password = "x"
dialin = "deny"

[users.carol]
password = "y"
dialin = true

[ports]
pptp = 5
l2tp = 5

[addresses]
source = "pool"
server_address = "10.10.100.1"

[authentication]
provider = "local"

[accounting]
provider = "local"
log = "LOGDIR/accounting.jsonl"
interim_interval = 300

[[policies]]
name = "VPN users over PPTP"
nas_port_type = ["virtual"]
tunnel_type = ["pptp"]
groups = ["VPN Users"]
days_and_times = ["Mon-Fri 08:00-18:00"]
permission = "grant"

[policies.profile]
auth = ["mschapv2"]
encryption = ["strong", "strongest"]
session_timeout = 3600
idle_timeout = 600
static_address = "10.10.100.60"

[[policies]]
name = "L2TP/IPsec"
tunnel_type = ["l2tp"]
permission = "grant"

[policies.profile]
encryption = ["strongest"]
"""

RADIUS_SERVER = """
[server]
listen = "203.0.113.2"
name = "vpnsrv"

[addresses]
source = "dhcp"
dhcp_interface = "eth1"
dhcp_server = "10.10.0.2"
dhcp_block = 20

[users.alice]
password = "s3cret"
static_address = "10.10.0.77"

[authentication]
provider = "radius"

[[authentication.radius]]
address = "10.10.0.3"
port = 11812
secret = "radsecret"
timeout = 2.5
retries = 2
nas_identifier = "edge-1"

[[authentication.radius]]
address = "10.10.0.4"
secret = "other"

[accounting]
provider = "radius"

[[accounting.radius]]
address = "10.10.0.3"
secret = "radsecret"
"""


def policy_file(tmp_path: Path, text: str = POLICY_SERVER) -> Path:
    return write(tmp_path, text.replace("LOGDIR", str(tmp_path / "acct")))


def test_policy_server_file_loads_every_new_field(tmp_path):
    from tunnels.policy import Conditions, Policy, Profile
    from tunnels.ppp.auth.base import DialIn

    c = ServerConfig.load(policy_file(tmp_path))
    alice = c.accounts.lookup("alice")
    assert (alice.dialin, alice.groups, alice.static_address) == \
        (DialIn.POLICY, ("VPN Users",), "10.10.100.50")
    assert c.accounts.lookup("bob").dialin is DialIn.DENY
    assert c.accounts.lookup("carol").dialin is DialIn.ALLOW  # true is still allow
    assert dict(c.ports) == {"pptp": 5, "l2tp": 5} and c.port_limit("l2tp") == 5
    assert c.addresses.source == "pool" and c.tunnel_address == "10.10.100.1"
    assert c.authentication.provider == "local" and c.authentication.radius == ()
    assert c.accounting.provider == "local" and c.accounting.interim_interval == 300
    assert c.accounting.log == tmp_path / "acct" / "accounting.jsonl"
    assert not (tmp_path / "acct").exists()  # loading creates nothing
    assert c.policies == (
        Policy("VPN users over PPTP", Conditions(("virtual",), ("pptp",), ("VPN Users",),
                                                 ("Mon-Fri 08:00-18:00",)), "grant",
               Profile((AuthMethod.MSCHAPV2,), ("strong", "strongest"), 3600, 600,
                       "10.10.100.60")),
        Policy("L2TP/IPsec", Conditions(tunnel_type=("l2tp",)), "grant",
               Profile(encryption=("strongest",))))


def test_loaded_policies_decide_connections(tmp_path):
    from datetime import datetime

    from tunnels.policy import ConnectionRequest, esp_cipher_levels, evaluate

    c = ServerConfig.load(policy_file(tmp_path))
    alice = c.accounts.lookup("alice")
    tuesday = datetime(2026, 12, 1, 10, 0)
    pptp = ConnectionRequest("alice", alice.groups, alice.dialin, "pptp", tuesday,
                             AuthMethod.MSCHAPV2, static_address=alice.static_address)
    auth = evaluate(c.policies, pptp).authorization()
    assert auth.policy == "VPN users over PPTP" and auth.peer_address == "10.10.100.50"
    l2tp = ConnectionRequest("alice", alice.groups, alice.dialin, "l2tp", tuesday,
                             AuthMethod.MSCHAPV2, encryption=esp_cipher_levels("des-cbc"))
    refused = evaluate(c.policies, l2tp)
    assert refused.error_code == 742 and "policy 'L2TP/IPsec'" in refused.reason


def test_radius_and_dhcp_file_loads(tmp_path):
    c = ServerConfig.load(write(tmp_path, RADIUS_SERVER))
    assert c.pool is None and c.tunnel_address is None  # the first lease decides
    assert (c.addresses.source, c.addresses.dhcp_interface, c.addresses.dhcp_server,
            c.addresses.dhcp_block) == ("dhcp", "eth1", "10.10.0.2", 20)
    assert c.accounts.lookup("alice").static_address == "10.10.0.77"  # no pool to be inside
    first, second = c.authentication.radius
    assert (first.address, first.port, first.secret, first.timeout, first.retries,
            first.nas_identifier) == ("10.10.0.3", 11812, "radsecret", 2.5, 2, "edge-1")
    assert (second.port, second.timeout, second.retries, second.nas_identifier) == \
        (1812, 3.0, 3, "vpnsrv")  # defaults; NAS-Identifier from [server].name
    (acct,) = c.accounting.radius
    assert c.accounting.provider == "radius" and acct.port == 1813
    with_address = RADIUS_SERVER.replace('source = "dhcp"', 'source = "dhcp"\n'
                                         'server_address = "10.10.0.9"')
    assert ServerConfig.load(write(tmp_path, with_address)).tunnel_address == "10.10.0.9"


def test_new_tables_default_to_todays_behaviour(tmp_path):
    from tunnels.policy import DEFAULT_POLICIES

    c = ServerConfig.load(write(tmp_path, GOOD_SERVER))
    assert c.ports == {} and c.port_limit("pptp") == c.max_ports == 4
    assert c.addresses.source == "pool" and c.addresses.server_address is None
    assert c.authentication.provider == "local" and c.accounting.provider == "none"
    assert c.policies == DEFAULT_POLICIES
    assert ServerConfig(listen="192.0.2.1", pool=None).policies == DEFAULT_POLICIES


def _edit(old: str, new: str, text: str = POLICY_SERVER) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


PROFILE = "[policies.profile]\nauth"
BAD_POLICY_SERVER = [
    # [users]
    ("dialin-word", _edit('dialin = "deny"', 'dialin = "maybe"'),
     "users.bob.dialin: got 'maybe'; expected allow, deny or policy (or true or false"),
    ("groups-string", _edit('groups = ["VPN Users"]', 'groups = "VPN Users"'),
     "users.alice.groups: got 'VPN Users'; expected a list of strings"),
    ("static-not-ip", _edit('"10.10.100.50"', '"ten"'),
     "users.alice.static_address: got 'ten'; expected an IPv4 address"),
    ("static-outside-pool", _edit('"10.10.100.50"', '"10.20.0.5"'),
     "users.alice.static_address: got '10.20.0.5'; expected a host address inside "
     "[server].pool 10.10.100.0/24"),
    ("static-is-server", _edit('"10.10.100.50"', '"10.10.100.1"'),
     "users.alice.static_address: got '10.10.100.1'; expected an address other than the "
     "server's own"),
    ("static-broadcast", _edit('"10.10.100.50"', '"10.10.100.255"'),
     "users.alice.static_address: got '10.10.100.255'; expected a host address inside"),
    ("profile-static-network", _edit('"10.10.100.60"', '"10.10.100.0"'),
     "policies[1].profile.static_address: got '10.10.100.0'; expected a host address inside"),
    # [ports]
    ("ports-above-max", _edit("pptp = 5", "pptp = 17"),
     "ports.pptp: got 17; expected at most [server].max_ports (16)"),
    ("ports-zero", _edit("l2tp = 5", "l2tp = 0"), "ports.l2tp: got 0; expected an integer >= 1"),
    ("ports-unknown", _edit("l2tp = 5", "l2tp = 5\nsstp = 5"),
     "ports.sstp: unknown field; expected one of l2tp, pptp"),
    ("ports-not-served", _edit('protocols = ["pptp", "l2tp-ipsec"]', 'protocols = ["pptp"]'),
     "ports.l2tp: got 5; expected limits only for the tunnel types [server].protocols "
     "answers (pptp)"),
    # [addresses]
    ("source-bad", _edit('source = "pool"', 'source = "static"'),
     "addresses.source: got 'static'; expected one of pool, dhcp"),
    ("server-address-outside", _edit('server_address = "10.10.100.1"',
                                     'server_address = "10.10.99.1"'),
     "addresses.server_address: got '10.10.99.1'; expected a host address of [server].pool"),
    ("dhcp-key-with-pool", _edit('source = "pool"', 'source = "pool"\ndhcp_block = 5'),
     "addresses.dhcp_block: got 5; expected no DHCP setting with source = \"pool\""),
    ("dhcp-without-interface", _edit('source = "pool"\nserver_address = "10.10.100.1"',
                                     'source = "dhcp"'),
     "addresses.dhcp_interface: missing; expected the intranet interface"),
    ("dhcp-with-pool", _edit('source = "pool"\nserver_address = "10.10.100.1"',
                             'source = "dhcp"\ndhcp_interface = "eth1"'),
     "server.pool: got '10.10.100.0/24'; expected no pool with [addresses] source = \"dhcp\""),
    ("pool-missing", _edit('pool = "10.10.100.0/24"\n', ""),
     "server.pool: missing; expected a prefix like 10.10.100.0/24, or [addresses] source"),
    # [authentication]
    ("provider-bad", _edit('provider = "local"', 'provider = "ldap"'),
     "authentication.provider: got 'ldap'; expected one of local, radius"),
    ("radius-without-servers", _edit('provider = "local"', 'provider = "radius"'),
     "authentication.radius: missing; expected one or two [[authentication.radius]] servers"),
    # [accounting]
    ("accounting-provider", _edit('provider = "local"\nlog', 'provider = "syslog"\nlog'),
     "accounting.provider: got 'syslog'; expected one of none, local, radius"),
    ("accounting-local-no-log", _edit('log = "LOGDIR/accounting.jsonl"\n', ""),
     "accounting.log: missing; expected the connection record file"),
    ("accounting-log-with-none", _edit('provider = "local"\nlog', 'provider = "none"\nlog'),
     "accounting.log: got"),
    ("interim-negative", _edit("interim_interval = 300", "interim_interval = -5"),
     "accounting.interim_interval: got -5; expected an integer >= 0"),
    ("accounting-radius-missing", _edit('provider = "local"\nlog = "LOGDIR/accounting.jsonl"',
                                        'provider = "radius"'),
     "accounting.radius: missing; expected one or two [[accounting.radius]] servers"),
    # [[policies]]
    ("policy-no-name", _edit('name = "L2TP/IPsec"\n', ""),
     "policies[2].name: missing; expected a string"),
    ("policy-duplicate", _edit('name = "L2TP/IPsec"', 'name = "vpn users over pptp"'),
     "policies[2].name: got 'vpn users over pptp'; expected a name no other policy has"),
    ("policy-unknown-key", _edit('permission = "grant"', 'permission = "grant"\norder = 1'),
     "policies[1].order: unknown field; expected one of days_and_times, groups"),
    ("permission-missing", _edit('days_and_times = ["Mon-Fri 08:00-18:00"]\n'
                                 'permission = "grant"', 'days_and_times = []'),
     "policies[1].permission: missing; expected grant or deny"),
    ("permission-bad", _edit('permission = "grant"', 'permission = "allow"'),
     "policies[1].permission: got 'allow'; expected grant or deny"),
    ("nas-port-type", _edit('["virtual"]', '["vpn"]'),
     "policies[1].nas_port_type: got ['vpn']; expected a list among async, sync"),
    ("tunnel-type-unknown", _edit('tunnel_type = ["pptp"]', 'tunnel_type = ["sstp"]'),
     "policies[1].tunnel_type: got ['sstp']; expected a list among pptp, l2tp"),
    ("tunnel-type-not-served", _edit('protocols = ["pptp", "l2tp-ipsec"]', 'protocols = ["pptp"]'
                                     ).replace("l2tp = 5\n", ""),
     "policies[2].tunnel_type: got ['l2tp']; expected tunnel types [server].protocols answers "
     "(pptp; L2TP/IPsec is l2tp); [server].protocols is ['pptp']"),
    ("days-and-times", _edit('"Mon-Fri 08:00-18:00"', '"weekdays 8-6"'),
     "policies[1].days_and_times: got 'weekdays 8-6': expected days and times like "
     "\"Mon-Fri 08:00-18:00\""),
    ("profile-unknown-key", _edit("idle_timeout = 600", "idle_timeout = 600\ncallback = 1"),
     "policies[1].profile.callback: unknown field; expected one of auth, encryption"),
    ("profile-auth-not-offered", _edit('auth = ["mschapv2"]\nencryption',
                                       'auth = ["eap-md5"]\nencryption'),
     "policies[1].profile.auth: got ['eap-md5']; expected methods the server offers "
     "([server].auth: mschapv2, mschap, pap)"),
    ("profile-auth-unknown", _edit('auth = ["mschapv2"]\nencryption',
                                   'auth = ["ntlm"]\nencryption'),
     "policies[1].profile.auth: got ['ntlm']; expected a list among pap, chap"),
    ("profile-encryption-level", _edit('["strong", "strongest"]', '["medium"]'),
     "policies[1].profile.encryption: got ['medium']; expected a list among none, basic, "
     "strong, strongest"),
    ("profile-mppe-without-mschap", _edit('auth = ["mschapv2"]\nencryption',
                                          'auth = ["pap"]\nencryption'),
     "policies[1].profile.encryption: got ['strong', 'strongest']; expected \"none\" among "
     "the levels, or mschap/mschapv2 among the auth methods: over pptp MPPE keys come from "
     "MS-CHAP (RFC 3079)"),
    ("profile-none-over-ipsec", _edit('encryption = ["strongest"]', 'encryption = ["none"]'),
     "policies[2].profile.encryption: got ['none']; expected basic, strong or strongest too: "
     "L2TP/IPsec always encrypts"),
    ("profile-timeout", _edit("session_timeout = 3600", "session_timeout = 0"),
     "policies[1].profile.session_timeout: got 0; expected a number >= 1"),
    ("profile-idle-string", _edit("idle_timeout = 600", 'idle_timeout = "10m"'),
     "policies[1].profile.idle_timeout: got '10m'; expected a number >= 1"),
    ("profile-static-outside", _edit('"10.10.100.60"', '"192.168.1.60"'),
     "policies[1].profile.static_address: got '192.168.1.60'; expected a host address inside "
     "[server].pool"),
]

BAD_RADIUS_SERVER = [
    ("three-servers", RADIUS_SERVER.replace('[accounting]', '[[authentication.radius]]\n'
                                            'address = "10.10.0.5"\nsecret = "s"\n'
                                            '[accounting]'),
     "authentication.radius: got 3 servers; expected one or two"),
    ("radius-with-local", RADIUS_SERVER.replace('provider = "radius"', 'provider = "local"', 1),
     "authentication.radius: got"),
    ("no-secret", RADIUS_SERVER.replace('secret = "other"\n', ""),
     "authentication.radius[2].secret: missing; expected a string"),
    ("bad-port", RADIUS_SERVER.replace("port = 11812", "port = 70000"),
     "authentication.radius[1].port: got 70000; expected a UDP port 1..65535"),
    ("bad-address", RADIUS_SERVER.replace('address = "10.10.0.4"', 'address = "radius"'),
     "authentication.radius[2].address: got 'radius'; expected an IPv4 address"),
    ("zero-timeout", RADIUS_SERVER.replace("timeout = 2.5", "timeout = 0"),
     "authentication.radius[1].timeout: got 0; expected a number >= 0.1"),
    ("zero-retries", RADIUS_SERVER.replace("retries = 2", "retries = 0"),
     "authentication.radius[1].retries: got 0; expected an integer >= 1"),
    ("radius-unknown-key", RADIUS_SERVER.replace("retries = 2", "retries = 2\nsource = 'x'"),
     "authentication.radius[1].source: unknown field; expected one of address, nas_identifier"),
    ("acct-bad-secret", RADIUS_SERVER.replace('address = "10.10.0.3"\nsecret = "radsecret"\n',
                                              'address = "10.10.0.3"\nsecret = ""\n'),
     "accounting.radius[1].secret: got ''; expected a non-empty string"),
    ("dhcp-interface-long", RADIUS_SERVER.replace('"eth1"', '"a-very-long-ifname"'),
     "addresses.dhcp_interface: got 'a-very-long-ifname'; expected a non-empty string of at "
     "most 15"),
    ("dhcp-server-bad", RADIUS_SERVER.replace('"10.10.0.2"', '"dhcp.lan"'),
     "addresses.dhcp_server: got 'dhcp.lan'; expected an IPv4 address"),
    ("dhcp-block-zero", RADIUS_SERVER.replace("dhcp_block = 20", "dhcp_block = 0"),
     "addresses.dhcp_block: got 0; expected an integer >= 1"),
    ("addresses-not-table", "addresses = 5\n" + GOOD_SERVER,
     "addresses: expected a table"),
    ("ports-string", RADIUS_SERVER + '\n[ports]\npptp = "five"\n',
     "ports.pptp: got 'five'; expected an integer >= 1"),
]


@pytest.mark.parametrize("text, message", [c[1:] for c in BAD_POLICY_SERVER + BAD_RADIUS_SERVER],
                         ids=[c[0] for c in BAD_POLICY_SERVER + BAD_RADIUS_SERVER])
def test_new_keys_errors_name_the_file_table_key_and_expectation(tmp_path, text, message):
    path = policy_file(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        ServerConfig.load(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)


@pytest.mark.parametrize("old, new, key", [
    ('pptp = 5', 'pptp = 99', "ports.pptp"),
    ('dialin = "deny"', 'dialin = "maybe"', "users.bob.dialin"),
    ('session_timeout = 3600', 'session_timeout = -1', "policies[1].profile.session_timeout"),
    ('encryption = ["strongest"]', 'encryption = ["none"]', "policies[2].profile.encryption"),
    ('tunnel_type = ["l2tp"]', 'tunnel_type = ["ipsec"]', "policies[2].tunnel_type"),
])
def test_errors_give_the_line_of_the_key(tmp_path, old, new, key):
    text = _edit(old, new)
    line = next(n for n, t in enumerate(text.splitlines(), 1) if t.startswith(new))
    with pytest.raises(ConfigError) as err:
        ServerConfig.load(policy_file(tmp_path, text))
    assert f": {key}: " in str(err.value) and str(err.value).endswith(f"(line {line})")


def test_radius_server_errors_give_the_line_in_the_right_entry(tmp_path):
    text = RADIUS_SERVER.replace('secret = "other"', 'secret = 7')
    line = text.splitlines().index("secret = 7") + 1
    with pytest.raises(ConfigError, match=rf"authentication\.radius\[2\]\.secret: got 7; "
                                          rf".* \(line {line}\)$"):
        ServerConfig.load(write(tmp_path, text))


def test_policies_apply_with_a_radius_provider_too(tmp_path):
    """Our own policies after a RADIUS Accept (tunnels/admission.py): allowed, and loaded."""
    path = tmp_path / "srv.toml"
    path.write_text("\n".join([
        "[server]", 'listen = "203.0.113.2"', 'pool = "10.10.100.0/24"', 'auth = ["mschapv2"]',
        "[authentication]", 'provider = "radius"', "[[authentication.radius]]",
        'address = "10.10.0.3"', 'secret = "s"', "[[policies]]", 'name = "p"',
        'groups = ["VPN_Users"]', 'permission = "grant"', ""]))
    config = ServerConfig.load(path)
    assert config.authentication.provider == "radius" and [p.name for p in config.policies] == ["p"]
