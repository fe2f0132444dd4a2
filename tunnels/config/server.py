"""The server's configuration ([server] and the tables beside it), from a TOML file or from
code, validated before use.

Every error names the file, the field, what was found and what was expected, and is raised
before anything is created (no socket, TUN device or route), so a bad file changes nothing:

    [server]
    listen = "203.0.113.2"        # the Internet interface's address (TCP 1723, GRE)
    name = "vpnsrv"
    max_ports = 128                # concurrent calls
    pool = "10.10.100.0/24"        # the first address is the server's tunnel address;
                                   # none with [addresses] source = "dhcp"
    dns = ["10.10.0.53"]
    wins = ["10.10.0.54"]
    auth = ["mschapv2", "mschap"]  # offered in this order
    encryption = "none"            # none | optional | basic | strong | strongest
    mppe = "stateless"             # stateless | stateful
    echo_interval = 10             # LCP echo, seconds (0: off)
    control_echo = 60              # PPTP control-connection Echo-Request interval/timeout
    protocols = ["pptp", "l2tp"]   # what the server answers: TCP 1723 + GRE, UDP 1701,
                                   # "l2tp-ipsec": L2TP only inside ESP (IKE on UDP 500/4500)
    psk = "ipsec-key"              # L2TP/IPsec: IKE pre-shared key
    nat_t = true                   # L2TP/IPsec: NAT traversal (RFC 3947/3948)
    ipsec_ciphers = ["3des-cbc"]   # L2TP/IPsec ESP ciphers; default from `encryption`:
                                   # basic/strong = des-cbc, strongest = 3des-cbc
    keylog = "/var/tmp/esp-keys"   # append each ESP SA's keys (JSON lines) for decoders
    ipsec_lifetime = 3600          # ESP SA lifetime, seconds (rekeyed before it ends)
    ipsec_lifetime_kb = 0          # and in KiB (0: none)
    certificate = "srv.pem"        # L2TP/IPsec with certificates (RSA signatures) instead
    private_key = "srv.key"        #   of psk: our certificate and key (PEM or DER), and the
    ca = ["ca.pem"]                #   CA certificates that issue the peers' certificates
    tunnel_secret = "t0psecret"    # L2TP tunnel authentication (RFC 2661 §5.1.1); optional
    hide_avps = false              # L2TP hidden AVPs (§4.3), needs tunnel_secret
    hello_interval = 60            # L2TP Hello keepalive (§6.5), seconds (0: off)
    data_sequencing = false        # ask L2TP peers for sequenced data messages

    [users.alice]
    password = "s3cret"
    dialin = "allow"               # allow | deny (error 649) | policy: the matching remote
                                   # access policy's permission decides; true/false = allow/deny
    groups = ["VPN Users"]         # for the policies' Windows-Groups condition
    static_address = "10.10.100.50"  # always this address; inside the pool (source "pool")

    [ports]                        # calls at most per tunnel type (Windows: ports per WAN
    pptp = 5                       #   Miniport); default and ceiling: max_ports
    l2tp = 5                       # L2TP and L2TP/IPsec

    [addresses]
    source = "pool"                # pool | dhcp
    server_address = "10.10.100.1" # our virtual interface (default: the pool's first address;
                                   #   with dhcp: the first lease)
    dhcp_interface = "eth1"        # dhcp: the intranet interface we ask on (required)
    dhcp_server = "10.10.0.2"      # dhcp: a unicast DHCP server (default: broadcast)
    dhcp_block = 10                # dhcp: addresses leased at a time

    [authentication]
    provider = "local"             # local ([users]) | radius; RADIUS users' groups are the
                                   #   Accept's Filter-Id values; [[policies]] apply to them
                                   #   too (under the default policy the Accept admits)
    eap = "relay"                  # radius only: relay | md5-as-chap. relay: the EAP
                                   #   conversation goes to RADIUS in EAP-Message attributes
                                   #   and the RADIUS server runs the method (RFC 3579, as
                                   #   RRAS with IAS); md5-as-chap: we run EAP-MD5 and send
                                   #   CHAP-Password/CHAP-Challenge
    [[authentication.radius]]      # radius: one or two servers, in fail-over order
    address = "10.10.0.3"
    port = 1812
    secret = "radsecret"
    timeout = 3                    # seconds per try
    retries = 3                    # tries per server
    nas_identifier = "vpnsrv"      # default: [server].name

    [accounting]
    provider = "none"              # none | local | radius
    log = "/var/log/vpnlab/accounting.jsonl"  # local: connection records (required)
    interim_interval = 0           # seconds between Interim-Updates (0: none)
    [[accounting.radius]]          # radius: one or two servers as above, default port 1813
    address = "10.10.0.3"
    secret = "radsecret"

    [[policies]]                   # remote access policies in order (tunnels/policy.py); none:
    name = "VPN users over PPTP"   #   the Windows 2000 default (only dial-in Allow gets in)
    nas_port_type = ["virtual"]    # conditions: each a list of alternatives, absent = any
    tunnel_type = ["pptp"]         # pptp | l2tp (L2TP/IPsec is l2tp); served by protocols
    groups = ["VPN Users"]         # Windows-Groups: member of any of them
    days_and_times = ["Mon-Fri 08:00-18:00"]  # Day-And-Time-Restrictions, local time
    permission = "grant"           # grant | deny remote access permission (required)
    [policies.profile]             # optional; every key optional, absent = any
    auth = ["mschapv2"]            # among [server].auth
    encryption = ["strong", "strongest"]  # none | basic | strong | strongest
    session_timeout = 3600         # seconds
    idle_timeout = 600
    static_address = "10.10.100.60"

Errors name array entries from 1 (`policies[2].profile.auth`, `authentication.radius[1].port`)
and, when the file has `key =` in that table, end with its line number.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunnels.config.fields import (
    ConfigError,
    Fields,
    l2tp_fields,
    load_file,
    sub_table,
    top_table,
)
from tunnels.policy import (
    DEFAULT_POLICIES,
    LEVELS,
    MPPE_AUTH,  # MPPE keys come from MS-CHAP (RFC 3079): required encryption needs one
    NAS_PORT_TYPES,
    TUNNEL_TYPES,
    Conditions,
    Policy,
    PolicyError,
    Profile,
    TimeWindow,
)
from tunnels.ppp.auth.base import Account, AuthMethod, DialIn, LocalAccounts
from tunnels.ppp.config import EncryptionLevel


@dataclass(frozen=True, slots=True)
class RadiusServer:
    """One RADIUS server, tried `retries` times `timeout` seconds apart before the next."""

    address: str
    port: int
    secret: str
    timeout: float = 3.0
    retries: int = 3
    nas_identifier: str = "vpnlab"  # NAS-Identifier we send; default [server].name


@dataclass(frozen=True, slots=True)
class AddressSettings:
    """Where clients' addresses come from: the static pool, or DHCP leases that the server
    takes `dhcp_block` at a time on the intranet interface (the chapter's two choices)."""

    source: str = "pool"  # pool | dhcp
    server_address: str | None = None  # our virtual interface; None: pool's first / 1st lease
    dhcp_interface: str | None = None
    dhcp_server: str | None = None  # None: broadcast
    dhcp_block: int = 10


@dataclass(frozen=True, slots=True)
class AuthenticationSettings:
    provider: str = "local"  # local | radius
    radius: tuple[RadiusServer, ...] = ()  # fail-over order, at most two
    eap: str = "relay"  # radius: relay (RFC 3579) | md5-as-chap


@dataclass(frozen=True, slots=True)
class AccountingSettings:
    provider: str = "none"  # none | local | radius
    log: Path | None = None  # local: JSON lines, one per connection record
    interim_interval: int = 0  # seconds between Interim-Updates; 0: none
    radius: tuple[RadiusServer, ...] = ()


@dataclass(frozen=True)
class ServerConfig:
    listen: str
    pool: ipaddress.IPv4Network | None  # None only with addresses.source = "dhcp"
    name: str = "vpnlab"
    max_ports: int = 128
    dns: tuple[str, ...] = ()
    wins: tuple[str, ...] = ()
    auth: tuple[AuthMethod, ...] = (AuthMethod.MSCHAPV2,)
    encryption: EncryptionLevel = EncryptionLevel.NONE
    mppe_stateless: bool = True
    echo_interval: float = 10.0
    control_echo: float = 60.0  # PPTP Echo-Request on the control connection (RFC 2637 §2.6)
    accounts: LocalAccounts = field(default_factory=LocalAccounts)
    protocols: tuple[str, ...] = ("pptp",)
    tunnel_secret: str = ""  # L2TP tunnel authentication and hidden AVPs
    hide_avps: bool = False
    hello_interval: float = 60.0
    data_sequencing: bool = False
    psk: str = ""
    nat_t: bool = True
    ipsec_ciphers: tuple[str, ...] = ()  # empty: from the encryption level
    keylog: Path | None = None  # ESP keys for independent decoders (tunnels/runtime/keylog.py)
    ipsec_lifetime: float = 3600.0
    ipsec_lifetime_kb: int = 0
    certificate: bytes | None = None  # DER; with private_key and ca: IKE with RSA signatures
    private_key: bytes | None = None  # DER PKCS#8
    ca: tuple[bytes, ...] = ()  # DER
    ports: Mapping[str, int] = field(default_factory=dict)  # "pptp"/"l2tp": calls at most
    addresses: AddressSettings = field(default_factory=AddressSettings)
    authentication: AuthenticationSettings = field(default_factory=AuthenticationSettings)
    accounting: AccountingSettings = field(default_factory=AccountingSettings)
    policies: tuple[Policy, ...] = DEFAULT_POLICIES  # in order; evaluate() in tunnels/policy.py

    @property
    def tunnel_address(self) -> str | None:
        """The server's own virtual address; None with DHCP until the first lease."""
        if self.addresses.server_address is not None:
            return self.addresses.server_address
        return str(next(self.pool.hosts())) if self.pool is not None else None

    def port_limit(self, tunnel_type: str) -> int:
        """Calls at most for "pptp" or "l2tp" (L2TP and L2TP/IPsec): [ports], else max_ports."""
        return min(self.ports.get(tunnel_type, self.max_ports), self.max_ports)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str = "config") -> ServerConfig:
        table = top_table(data, "server", where, {"users", "ports", "addresses", "authentication",
                                               "accounting", "policies"})
        f = Fields(where, "server", table, {"listen", "pool", "name", "max_ports", "dns",
                                            "wins", "auth", "encryption", "mppe",
                                            "echo_interval", "control_echo", "protocols",
                                            "tunnel_secret", "hide_avps", "hello_interval",
                                            "data_sequencing", "psk", "nat_t",
                                            "ipsec_ciphers", "keylog", "certificate",
                                            "private_key", "ca", "ipsec_lifetime",
                                            "ipsec_lifetime_kb"})
        listen = f.address("listen")
        if ipaddress.IPv4Address(listen).is_unspecified:
            f.fail("listen", "the one address clients reach, not 0.0.0.0: GRE must leave from "
                             "the address the control connection reached (RFC 2637)")
        addresses = _addresses(data.get("addresses", {}), where)
        pool = _pool(f, listen, addresses)
        auth = f.auth("auth", (AuthMethod.MSCHAPV2,))
        name = f.string("name", "vpnlab", 64)
        max_ports = f.number("max_ports", 128, 1, integer=True)
        l2tp = l2tp_fields(f, True)
        space = _AddressSpace(pool, addresses)
        space.check_server_address(where)
        served = _served(l2tp["protocols"])
        authentication = _authentication(data.get("authentication", {}), where, name)
        return cls(listen=listen, pool=pool, name=name, max_ports=max_ports,
                   dns=f.addresses("dns"), wins=f.addresses("wins"), auth=auth,
                   encryption=f.encryption("encryption", auth),
                   mppe_stateless=f.choice("mppe", "stateless",
                                           ("stateless", "stateful")) == "stateless",
                   echo_interval=float(f.number("echo_interval", 10, 0)),
                   control_echo=float(f.number("control_echo", 60, 1)),
                   accounts=_users(data.get("users", {}), where, space), **l2tp,
                   ports=_ports(data.get("ports", {}), where, max_ports, served),
                   addresses=addresses,
                   authentication=authentication,
                   accounting=_accounting(data.get("accounting", {}), where, name),
                   policies=_policies(data.get("policies"), where,
                                      _PolicyContext(auth, l2tp["protocols"], space,
                                                     authentication.provider == "radius")))
    @classmethod
    def load(cls, path: Path) -> ServerConfig:
        return load_file(path, cls.from_mapping)


# -- [addresses], [ports], [authentication], [accounting] -----------------------------------------
def _addresses(data: Any, where: str) -> AddressSettings:
    f = sub_table(data, "addresses", where, {"source", "server_address", "dhcp_interface",
                                        "dhcp_server", "dhcp_block"})
    source = f.choice("source", "pool", ("pool", "dhcp"))
    if source == "pool":
        for key in ("dhcp_interface", "dhcp_server", "dhcp_block"):
            if key in f.data:
                f.fail(key, 'no DHCP setting with source = "pool" (or source = "dhcp")')
        return AddressSettings(server_address=f.optional_address("server_address"))
    if "dhcp_interface" not in f.data:
        f.required("dhcp_interface", 'the intranet interface the server asks DHCP on, like '
                                     '"eth1" (source = "dhcp")')
    interface = f.string("dhcp_interface", "", 15)
    if "/" in interface:
        f.fail("dhcp_interface", "an interface name of at most 15 characters (IFNAMSIZ)")
    return AddressSettings("dhcp", f.optional_address("server_address"), interface,
                           f.optional_address("dhcp_server"),
                           f.number("dhcp_block", 10, 1, integer=True))


def _pool(f: Fields, listen: str, addresses: AddressSettings) -> ipaddress.IPv4Network | None:
    if addresses.source == "dhcp":
        if "pool" in f.data:
            f.fail("pool", 'no pool with [addresses] source = "dhcp" (addresses come from '
                           "DHCP leases)")
        return None
    value = f.required("pool", 'a prefix like 10.10.100.0/24, or [addresses] source = "dhcp"')
    try:
        pool = ipaddress.IPv4Network(value)
    except (ValueError, TypeError):
        f.fail("pool", "a prefix like 10.10.100.0/24 (host bits zero)")
        raise AssertionError from None
    if pool.num_addresses < 4:
        f.fail("pool", "a /30 or larger (the first address is the server's own)")
    if ipaddress.IPv4Address(listen) in pool:
        f.fail("pool", f"a subnet not containing listen ({listen}): the pool is routed "
                       "into the tunnel")
    return pool


@dataclass(frozen=True)
class _AddressSpace:
    """Checks static addresses (accounts, profiles) against the pool and our own address."""

    pool: ipaddress.IPv4Network | None
    settings: AddressSettings

    @property
    def own(self) -> str | None:
        if self.settings.server_address is not None or self.pool is None:
            return self.settings.server_address
        return str(next(self.pool.hosts()))

    def is_host(self, address: str) -> bool:
        """Inside the pool and neither its network nor its broadcast address (no pool: any)."""
        if self.pool is None:
            return True
        ip = ipaddress.IPv4Address(address)
        return ip in self.pool and ip not in (self.pool.network_address,
                                              self.pool.broadcast_address)

    def check_server_address(self, where: str) -> None:
        address = self.settings.server_address
        if address is not None and not self.is_host(address):
            raise ConfigError(f"{where}: addresses.server_address: got {address!r}; expected "
                              f"a host address of [server].pool {self.pool}")

    def check_static(self, f: Fields, name: str) -> str | None:
        address = f.optional_address(name)
        if address is None:
            return None
        if not self.is_host(address):
            f.fail(name, f"a host address inside [server].pool {self.pool} (addresses come "
                         "from the pool)")
        if address == self.own:
            f.fail(name, f"an address other than the server's own ({self.own})")
        return address


def _served(protocols: tuple[str, ...]) -> tuple[str, ...]:
    """The policies' Tunnel-Type values the server answers (L2TP/IPsec is L2TP)."""
    return tuple(t for t in TUNNEL_TYPES if any(p.split("-")[0] == t for p in protocols))


def _ports(data: Any, where: str, max_ports: int, served: tuple[str, ...]) -> dict[str, int]:
    f = sub_table(data, "ports", where, set(TUNNEL_TYPES))
    out = {}
    for kind in TUNNEL_TYPES:
        if kind not in f.data:
            continue
        if kind not in served:
            f.fail(kind, f"limits only for the tunnel types [server].protocols answers "
                         f"({', '.join(served)})")
        value = f.number(kind, 0, 1, integer=True)
        if value > max_ports:
            f.fail(kind, f"at most [server].max_ports ({max_ports})")
        out[kind] = value
    return out


def _radius_servers(data: Any, where: str, table: str, port: int,
                    name: str) -> tuple[RadiusServer, ...]:
    if not isinstance(data, list) or not all(isinstance(e, Mapping) for e in data):
        raise ConfigError(f"{where}: {table}: expected [[{table}]] tables")
    if not 1 <= len(data) <= 2:
        raise ConfigError(f"{where}: {table}: got {len(data)} servers; expected one or two "
                          f"[[{table}]] tables (primary, secondary)")
    servers = []
    for i, entry in enumerate(data, 1):
        f = Fields(where, f"{table}[{i}]", entry, {"address", "port", "secret", "timeout",
                                                    "retries", "nas_identifier"})
        number = f.number("port", port, 1, integer=True)
        if number > 65535:
            f.fail("port", "a UDP port 1..65535")
        servers.append(RadiusServer(f.address("address"), number, f.string("secret"),
                                    float(f.number("timeout", 3, 0.1)),
                                    f.number("retries", 3, 1, integer=True),
                                    f.string("nas_identifier", name, 253)))
    return tuple(servers)


def _authentication(data: Any, where: str, name: str) -> AuthenticationSettings:
    f = sub_table(data, "authentication", where, {"provider", "radius", "eap"})
    provider = f.choice("provider", "local", ("local", "radius"))
    if provider == "local":
        if "radius" in f.data:
            f.fail("radius", 'no RADIUS servers with provider = "local" (or provider = '
                             '"radius")')
        if "eap" in f.data:
            f.fail("eap", 'no eap with provider = "local" (the local account store runs '
                          'EAP-MD5 itself), or provider = "radius"')
        return AuthenticationSettings()
    if "radius" not in f.data:
        f.required("radius", 'one or two [[authentication.radius]] servers with provider = '
                             '"radius"')
    eap = f.choice("eap", "relay", ("relay", "md5-as-chap"))
    return AuthenticationSettings("radius", _radius_servers(
        f.get("radius"), where, "authentication.radius", 1812, name), eap)


def _accounting(data: Any, where: str, name: str) -> AccountingSettings:
    f = sub_table(data, "accounting", where, {"provider", "log", "interim_interval", "radius"})
    provider = f.choice("provider", "none", ("none", "local", "radius"))
    for key, needs in (("log", "local"), ("radius", "radius")):
        if key in f.data and provider != needs:
            f.fail(key, f'provider = "{needs}" with {key}')
    if provider == "none" and "interim_interval" in f.data:
        f.fail("interim_interval", 'provider = "local" or "radius" with interim_interval')
    interim = f.number("interim_interval", 0, 0, integer=True)
    if provider == "local":
        log = f.string("log", None, 4096) if "log" in f.data else f.required(
            "log", 'the connection record file (JSON lines) with provider = "local"')
        return AccountingSettings("local", Path(log), interim)
    if provider == "radius":
        if "radius" not in f.data:
            f.required("radius", 'one or two [[accounting.radius]] servers with provider = '
                                 '"radius"')
        return AccountingSettings("radius", None, interim, _radius_servers(
            f.get("radius"), where, "accounting.radius", 1813, name))
    return AccountingSettings()


# -- [[policies]] ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class _PolicyContext:
    auth: tuple[AuthMethod, ...]  # [server].auth
    protocols: tuple[str, ...]  # [server].protocols
    space: _AddressSpace
    radius: bool  # [authentication] provider = "radius"


def _policies(entries: Any, where: str, ctx: _PolicyContext) -> tuple[Policy, ...]:
    if entries is None:
        return DEFAULT_POLICIES
    if not isinstance(entries, list) or not entries or \
            not all(isinstance(e, Mapping) for e in entries):
        raise ConfigError(f"{where}: policies: expected [[policies]] tables (none at all for "
                          "the Windows 2000 default policy)")
    policies: list[Policy] = []
    for i, entry in enumerate(entries, 1):
        policy = _policy(entry, where, f"policies[{i}]", ctx)
        if any(p.name.casefold() == policy.name.casefold() for p in policies):
            raise ConfigError(f"{where}: policies[{i}].name: got {policy.name!r}; expected a "
                              "name no other policy has")
        policies.append(policy)
    return tuple(policies)


def _policy(entry: Mapping[str, Any], where: str, table: str, ctx: _PolicyContext) -> Policy:
    f = Fields(where, table, entry, {"name", "nas_port_type", "tunnel_type", "groups",
                                      "days_and_times", "permission", "profile"})
    name = f.string("name")
    served = _served(ctx.protocols)
    tunnel_type = f.names("tunnel_type", TUNNEL_TYPES, '["pptp", "l2tp"]')
    if set(tunnel_type) - set(served):
        f.fail("tunnel_type", f"tunnel types [server].protocols answers ({', '.join(served)}; "
                              f"L2TP/IPsec is l2tp); [server].protocols is "
                              f"{list(ctx.protocols)}")
    days = f.names("days_and_times", None, '["Mon-Fri 08:00-18:00"]')
    for entry_text in days:
        try:
            TimeWindow.parse(entry_text)
        except PolicyError as exc:
            raise ConfigError(f"{where}: {table}.days_and_times: got {exc}") from None
    conditions = Conditions(f.names("nas_port_type", NAS_PORT_TYPES, '["virtual"]'),
                            tunnel_type, f.names("groups"), days)
    permission = f.required("permission", "grant or deny")
    if permission not in ("grant", "deny"):
        f.fail("permission", "grant or deny (remote access permission)")
    profile = _profile(f.get("profile", {}), where, f"{table}.profile", ctx,
                       tunnel_type or served)
    return Policy(name, conditions, permission, profile)


def _profile(data: Any, where: str, table: str, ctx: _PolicyContext,
             tunnels: tuple[str, ...]) -> Profile:
    f = sub_table(data, table, where, {"auth", "encryption", "session_timeout", "idle_timeout",
                                  "static_address"})
    offered = [m.value for m in ctx.auth]
    methods = f.names("auth", tuple(m.value for m in AuthMethod), '["mschapv2"]')
    if set(methods) - set(offered):
        f.fail("auth", f"methods the server offers ([server].auth: {', '.join(offered)})")
    auth = tuple(AuthMethod(m) for m in methods)
    levels = f.names("encryption", LEVELS, '["strong", "strongest"]')
    mppe = [t for t in tunnels if t == "pptp" or t == "l2tp" and "l2tp" in ctx.protocols]
    if levels and "none" not in levels and mppe and not set(auth or ctx.auth) & set(MPPE_AUTH):
        f.fail("encryption", f'"none" among the levels, or mschap/mschapv2 among the auth '
                             f"methods: over {', '.join(mppe)} MPPE keys come from MS-CHAP "
                             "(RFC 3079)")
    if tuple(levels) == ("none",) and tunnels == ("l2tp",) and "l2tp-ipsec" in ctx.protocols:
        f.fail("encryption", "basic, strong or strongest too: L2TP/IPsec always encrypts, "
                             "every connection would be refused with 742")
    timeouts = {}
    for key in ("session_timeout", "idle_timeout"):
        timeouts[key] = float(f.number(key, 0, 1)) if key in f.data else None
    return Profile(auth, levels, static_address=ctx.space.check_static(f, "static_address"),
                   **timeouts)


def _users(users: Any, where: str, space: _AddressSpace) -> LocalAccounts:
    if not isinstance(users, Mapping):
        raise ConfigError(f"{where}: users: expected tables like [users.alice]")
    accounts = {}
    for name, entry in users.items():
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{where}: users.{name}: expected a table with password")
        f = Fields(where, f"users.{name}", entry, {"password", "dialin", "groups",
                                                    "static_address"})
        password = f.required("password", "a string")
        if not isinstance(password, str):
            f.fail("password", "a string")
        accounts[name] = Account(password, _dialin(f), f.names("groups"),
                                 space.check_static(f, "static_address"))
    return LocalAccounts(accounts)


_DIALIN = {"allow": DialIn.ALLOW, "deny": DialIn.DENY, "policy": DialIn.POLICY,
           True: DialIn.ALLOW, False: DialIn.DENY}


def _dialin(f: Fields) -> DialIn:
    """The Dial-in tab: allow, deny, or policy (control access through remote access policy);
    true and false, this file's older spelling, are allow and deny."""
    value = f.get("dialin", "allow")
    if not isinstance(value, str | bool) or value not in _DIALIN:
        f.fail("dialin", "allow, deny or policy (or true or false: allow or deny)")
    return _DIALIN[value]
