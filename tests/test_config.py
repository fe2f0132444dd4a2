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
     "server.nmae: unknown field; expected one of auth, ca, certificate, control_echo, data_sequencing, dns"),
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
     "users.bob.dialin: got 'no'; expected true or false"),
    ("user-unknown-field", GOOD_SERVER.replace("dialin = false", "group = 'x'"),
     "users.bob.group: unknown field; expected one of dialin, password"),
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
], ids=["server", "user", "split-missing", "split-bad", "mppe-without-mschap", "ifname",
        "echo"])
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
