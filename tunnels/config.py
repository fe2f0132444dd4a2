"""Server and client configuration, from a TOML file or from code, validated before use.

Every error names the file, the field, what was found and what was expected, and is raised
before anything is created (no socket, TUN device or route), so a bad file changes nothing:

    [server]
    listen = "203.0.113.2"        # the Internet interface's address (TCP 1723, GRE)
    name = "vpnsrv"
    max_ports = 128                # concurrent calls
    pool = "10.10.100.0/24"        # the first address is the server's tunnel address
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
    dialin = true                  # false: refused with error 649

A client file has one [client] table with the `vpnlab connect` options as fields:

    [client]
    server = "203.0.113.2"
    user = "alice"
    password = "s3cret"
    auth = ["mschapv2"]            # accepted methods (default: all)
    encryption = "strongest"
    mppe = "stateless"
    routes = "split"               # default | split
    split = ["10.10.0.0/24"]
    echo_interval = 10
    interface = "vpn0"
    reconnect = 0                  # attempts after a failure or a drop (0: off)
    reconnect_delay = 5            # seconds before each
    protocol = "pptp"              # pptp | l2tp | l2tp-ipsec
    psk = "ipsec-key"              # L2TP/IPsec, as for the server; also nat_t, ipsec_ciphers
    tunnel_secret = "t0psecret"    # L2TP only, as for the server
    hide_avps = false
    call_mode = "incoming"         # L2TP: incoming (ICRQ, as Windows and xl2tpd) | outgoing (OCRQ)
    hello_interval = 60
"""

from __future__ import annotations

import ipaddress
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunnels.ppp.auth.base import Account, AuthMethod, LocalAccounts
from tunnels.ppp.config import EncryptionLevel

# MPPE keys come from MS-CHAP (RFC 3079): required encryption needs one of these
MPPE_AUTH = (AuthMethod.MSCHAP, AuthMethod.MSCHAPV2)


class ConfigError(ValueError):
    pass


class _Fields:
    """Reads one table's fields, naming `where: table.field` in every error."""

    def __init__(self, where: str, table: str, data: Mapping[str, Any], known: set[str]):
        self.where, self.table, self.data = where, table, data
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{where}: {table}.{unknown[0]}: unknown field; expected one of "
                              f"{', '.join(sorted(known))}")

    def fail(self, name: str, expected: str) -> None:
        got = f"got {self.data[name]!r}; " if name in self.data else ""
        raise ConfigError(f"{self.where}: {self.table}.{name}: {got}expected {expected}")

    def get(self, name: str, default: Any = None) -> Any:
        return self.data.get(name, default)

    def required(self, name: str, expected: str) -> Any:
        if name not in self.data:
            raise ConfigError(f"{self.where}: {self.table}.{name}: missing; expected {expected}")
        return self.data[name]

    def address(self, name: str, default: Any = None) -> str:
        value = self.required(name, "an IPv4 address") if default is None else \
            self.get(name, default)
        try:
            return str(ipaddress.IPv4Address(value))
        except ValueError:
            self.fail(name, "an IPv4 address like 203.0.113.2")
            raise AssertionError from None  # unreachable: fail() raises

    def addresses(self, name: str) -> tuple[str, ...]:
        values = self.get(name, [])
        if not isinstance(values, list) or len(values) > 2:
            self.fail(name, "a list of at most two IPv4 addresses (primary, secondary)")
        try:
            return tuple(str(ipaddress.IPv4Address(v)) for v in values)
        except ValueError:
            self.fail(name, "a list of at most two IPv4 addresses (primary, secondary)")
            raise AssertionError from None

    def prefixes(self, name: str) -> tuple[str, ...]:
        values = self.get(name, [])
        if not isinstance(values, list):
            self.fail(name, 'a list of prefixes like ["10.10.0.0/24"]')
        try:
            return tuple(str(ipaddress.IPv4Network(v, strict=False)) for v in values)
        except ValueError:
            self.fail(name, 'a list of prefixes like ["10.10.0.0/24"]')
            raise AssertionError from None

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.get(name, default)
        if value not in choices:
            self.fail(name, f"one of {', '.join(choices)}")
        return str(value)

    def number(self, name: str, default: float, minimum: float, integer: bool = False) -> Any:
        value = self.get(name, default)
        kinds = (int,) if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds) or value < minimum:
            self.fail(name, f"{'an integer' if integer else 'a number'} >= {minimum}")
        return value

    def string(self, name: str, default: str | None = None, max_len: int = 255) -> str:
        value = self.required(name, "a string") if default is None else self.get(name, default)
        if not isinstance(value, str) or not value or len(value) > max_len:
            self.fail(name, f"a non-empty string of at most {max_len} characters")
        return str(value)

    def auth(self, name: str, default: tuple[AuthMethod, ...]) -> tuple[AuthMethod, ...]:
        values = self.get(name, [m.value for m in default])
        if isinstance(values, str):
            values = [values]
        allowed = ", ".join(m.value for m in AuthMethod)
        if not isinstance(values, list) or not values:
            self.fail(name, f'a non-empty list of methods like ["mschapv2"] ({allowed})')
        try:
            return tuple(AuthMethod(v) for v in values)
        except ValueError:
            self.fail(name, f"methods among {allowed}")
            raise AssertionError from None

    def encryption(self, name: str, auth: tuple[AuthMethod, ...]) -> EncryptionLevel:
        value = EncryptionLevel(self.choice(name, "none", tuple(e.value for e in EncryptionLevel)))
        if value.key_bits and not set(auth) & set(MPPE_AUTH):
            self.fail(name, "none or optional with these auth methods: MPPE keys come from "
                            "MS-CHAP (RFC 3079), add mschap or mschapv2 to auth")
        return value


def _load_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def _table(data: Mapping[str, Any], name: str, where: str, others: set[str]) -> Mapping[str, Any]:
    unknown = sorted(set(data) - {name} - others)
    if unknown:
        raise ConfigError(f"{where}: [{unknown[0]}]: unknown table; expected "
                          f"{', '.join(f'[{t}]' for t in sorted({name} | others))}")
    table = data.get(name)
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: missing [{name}] table")
    return table


@dataclass(frozen=True)
class ServerConfig:
    listen: str
    pool: ipaddress.IPv4Network
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

    @property
    def tunnel_address(self) -> str:
        return str(next(self.pool.hosts()))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str = "config") -> ServerConfig:
        table = _table(data, "server", where, {"users"})
        f = _Fields(where, "server", table, {"listen", "pool", "name", "max_ports", "dns",
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
        try:
            pool = ipaddress.IPv4Network(f.required("pool", "a prefix like 10.10.100.0/24"))
        except (ValueError, TypeError):
            f.fail("pool", "a prefix like 10.10.100.0/24 (host bits zero)")
            raise AssertionError from None
        if pool.num_addresses < 4:
            f.fail("pool", "a /30 or larger (the first address is the server's own)")
        if ipaddress.IPv4Address(listen) in pool:
            f.fail("pool", f"a subnet not containing listen ({listen}): the pool is routed "
                           "into the tunnel")
        auth = f.auth("auth", (AuthMethod.MSCHAPV2,))
        return cls(listen=listen, pool=pool, name=f.string("name", "vpnlab", 64),
                   max_ports=f.number("max_ports", 128, 1, integer=True),
                   dns=f.addresses("dns"), wins=f.addresses("wins"), auth=auth,
                   encryption=f.encryption("encryption", auth),
                   mppe_stateless=f.choice("mppe", "stateless",
                                           ("stateless", "stateful")) == "stateless",
                   echo_interval=float(f.number("echo_interval", 10, 0)),
                   control_echo=float(f.number("control_echo", 60, 1)),
                   accounts=_users(data.get("users", {}), where), **_l2tp_fields(f, True))

    @classmethod
    def load(cls, path: Path) -> ServerConfig:
        return cls.from_mapping(_load_toml(path), str(path))


PROTOCOLS = ("pptp", "l2tp", "l2tp-ipsec")
ESP_CIPHERS = ("des-cbc", "3des-cbc", "aes-cbc-128", "aes-cbc-256")
IPSEC_LEVELS = ("basic", "strong", "strongest")
CALL_MODES = ("incoming", "outgoing")


def _l2tp_fields(f: _Fields, server: bool) -> dict[str, Any]:
    """The L2TP settings shared by [server] and [client]; hiding needs a secret (§4.3)."""
    out: dict[str, Any] = {}
    if server:
        protocols = f.get("protocols", ["pptp"])
        if not isinstance(protocols, list) or not protocols or \
                any(p not in PROTOCOLS for p in protocols) or len(set(protocols)) != len(protocols):
            f.fail("protocols", f'a non-empty list among {", ".join(PROTOCOLS)}, like ["pptp", '
                                '"l2tp"]')
        out["protocols"] = tuple(protocols)
        data_sequencing = f.get("data_sequencing", False)
        if not isinstance(data_sequencing, bool):
            f.fail("data_sequencing", "true or false")
        out["data_sequencing"] = data_sequencing
        if "l2tp" in protocols and "l2tp-ipsec" in protocols:
            f.fail("protocols", "l2tp or l2tp-ipsec, not both: both answer on UDP 1701, and "
                                "l2tp-ipsec drops L2TP that is not inside IPsec")
    out.update(_ipsec_fields(f, "l2tp-ipsec" in out.get("protocols", ()) or
                             f.get("protocol") == "l2tp-ipsec"))
    secret = f.get("tunnel_secret", "")
    if not isinstance(secret, str):
        f.fail("tunnel_secret", "a string")
    hide = f.get("hide_avps", False)
    if not isinstance(hide, bool):
        f.fail("hide_avps", "true or false")
    if hide and not secret:
        f.fail("hide_avps", "false, or a tunnel_secret to hide AVPs with (RFC 2661 §4.3)")
    out.update(tunnel_secret=secret, hide_avps=hide,
               hello_interval=float(f.number("hello_interval", 60, 0)))
    return out


def _ipsec_fields(f: _Fields, used: bool) -> dict[str, Any]:
    """psk, nat_t and ipsec_ciphers; with L2TP/IPsec the PSK is required and the encryption
    level must name an ESP cipher (the chapter: L2TP/IPsec always encrypts)."""
    psk = f.get("psk", "")
    if not isinstance(psk, str):
        f.fail("psk", "a string")
    creds = _credentials(f)
    if used and not psk and not creds:
        raise ConfigError(f"{f.where}: {f.table}.psk: missing; expected the IKE pre-shared "
                          "key, or certificate + private_key + ca (L2TP/IPsec)")
    nat_t = f.get("nat_t", True)
    if not isinstance(nat_t, bool):
        f.fail("nat_t", "true or false")
    ciphers = f.get("ipsec_ciphers", [])
    if not isinstance(ciphers, list) or any(c not in ESP_CIPHERS for c in ciphers):
        f.fail("ipsec_ciphers", f"a list among {', '.join(ESP_CIPHERS)}")
    if used and not ciphers and f.get("encryption", "none") not in IPSEC_LEVELS:
        f.fail("encryption", "basic, strong or strongest with L2TP/IPsec (DES, DES, 3DES: the "
                             "chapter's levels), or ipsec_ciphers")
    keylog = f.get("keylog")
    if keylog is not None and (not isinstance(keylog, str) or not keylog):
        f.fail("keylog", "a file path")
    return {"psk": psk, "nat_t": nat_t, "ipsec_ciphers": tuple(ciphers),
            "keylog": Path(keylog) if keylog else None, **creds,
            "ipsec_lifetime": float(f.number("ipsec_lifetime", 3600, 60)),
            "ipsec_lifetime_kb": f.number("ipsec_lifetime_kb", 0, 0, integer=True)}


def load_der(path: Path, kind: str) -> bytes:
    """A certificate or private key file, PEM or DER, as DER; ValueError says what is wrong."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    data = path.read_bytes()
    pem = data.lstrip().startswith(b"-----BEGIN")
    if kind == "certificate":
        cert = x509.load_pem_x509_certificate(data) if pem else \
            x509.load_der_x509_certificate(data)
        return cert.public_bytes(serialization.Encoding.DER)
    key = serialization.load_pem_private_key(data, None) if pem else \
        serialization.load_der_private_key(data, None)
    return key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _credentials(f: _Fields) -> dict[str, Any]:
    """certificate, private_key and ca (a path or a list of paths), all or none."""
    names = ("certificate", "private_key", "ca")
    given = [n for n in names if f.get(n)]
    if not given:
        return {}
    if len(given) != 3:
        missing = [n for n in names if n not in given][0]
        f.fail(missing, "a file path: certificate, private_key and ca go together")
    out: dict[str, Any] = {}
    for name, kind in (("certificate", "certificate"), ("private_key", "key")):
        value = f.get(name)
        if not isinstance(value, str):
            f.fail(name, "a file path")
        out[name] = _load(f, name, Path(value), kind)
    cas = f.get("ca")
    cas = [cas] if isinstance(cas, str) else cas
    if not isinstance(cas, list) or not all(isinstance(c, str) for c in cas):
        f.fail("ca", "a file path or a list of them")
    out["ca"] = tuple(_load(f, "ca", Path(c), "certificate") for c in cas)
    return out


def _load(f: _Fields, name: str, path: Path, kind: str) -> bytes:
    try:
        return load_der(path, kind)
    except OSError as exc:
        raise ConfigError(f"{f.where}: {f.table}.{name}: cannot read {path}: "
                          f"{exc.strerror or exc}") from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{f.where}: {f.table}.{name}: {path} is not a PEM or DER "
                          f"{'certificate' if kind == 'certificate' else 'private key'}: "
                          f"{exc}") from None


def _users(users: Any, where: str) -> LocalAccounts:
    if not isinstance(users, Mapping):
        raise ConfigError(f"{where}: users: expected tables like [users.alice]")
    accounts = {}
    for name, entry in users.items():
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{where}: users.{name}: expected a table with password")
        f = _Fields(where, f"users.{name}", entry, {"password", "dialin"})
        password = f.required("password", "a string")
        if not isinstance(password, str):
            f.fail("password", "a string")
        dialin = f.get("dialin", True)
        if not isinstance(dialin, bool):
            f.fail("dialin", "true or false")
        accounts[name] = Account(password, dialin)
    return LocalAccounts(accounts)


@dataclass(frozen=True)
class ClientConfig:
    server: str
    username: str
    password: str
    auth: tuple[AuthMethod, ...] = tuple(AuthMethod)
    encryption: EncryptionLevel = EncryptionLevel.NONE
    mppe_stateless: bool = True
    routes: str = "default"  # default: all traffic through the tunnel; split: only `split`
    split: tuple[str, ...] = ()
    echo_interval: float = 10.0
    interface: str = "vpn0"
    control_echo: float = 60.0
    reconnect: int = 0  # attempts after a failure or a drop; 0: off
    reconnect_delay: float = 5.0
    protocol: str = "pptp"
    tunnel_secret: str = ""  # L2TP: tunnel authentication (RFC 2661 §5.1.1), hidden AVPs
    hide_avps: bool = False
    call_mode: str = "incoming"  # L2TP: ICRQ (incoming) or OCRQ (outgoing, Table 9.6)
    hello_interval: float = 60.0
    psk: str = ""
    nat_t: bool = True
    ipsec_ciphers: tuple[str, ...] = ()
    keylog: Path | None = None
    certificate: bytes | None = None
    private_key: bytes | None = None
    ca: tuple[bytes, ...] = ()
    ipsec_lifetime: float = 3600.0
    ipsec_lifetime_kb: int = 0

    def __post_init__(self) -> None:
        """The same checks for the CLI's flags as for a file's fields (named as flags)."""
        try:
            ipaddress.IPv4Address(self.server)
        except ValueError:
            raise ConfigError(f"--server {self.server!r}: expected an IPv4 address") from None
        if not self.username:
            raise ConfigError("--user: expected a non-empty user name")
        if not self.auth:
            raise ConfigError("--auth: expected at least one method")
        if self.encryption.key_bits and not set(self.auth) & set(MPPE_AUTH):
            raise ConfigError(f"--encryption {self.encryption.value}: MPPE keys come from "
                              "MS-CHAP (RFC 3079); expected --auth mschap or mschapv2 among "
                              "the accepted methods, or --encryption none/optional")
        if self.routes not in ("default", "split"):
            raise ConfigError(f"--routes {self.routes!r}: expected default or split")
        if self.routes == "split" and not self.split:
            raise ConfigError("--routes split: expected at least one --split PREFIX")
        for prefix in self.split:
            try:
                ipaddress.IPv4Network(prefix, strict=False)
            except ValueError:
                raise ConfigError(f"--split {prefix!r}: expected a prefix like 10.10.0.0/24") \
                    from None
        if self.echo_interval < 0:
            raise ConfigError(f"--echo-interval {self.echo_interval}: expected seconds >= 0")
        if self.control_echo < 1:
            raise ConfigError(f"--control-echo {self.control_echo}: expected seconds >= 1")
        if self.reconnect < 0 or self.reconnect_delay < 0:
            raise ConfigError(f"--reconnect {self.reconnect} --reconnect-delay "
                              f"{self.reconnect_delay}: expected numbers >= 0")
        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"--protocol {self.protocol}: not implemented yet; expected one "
                              f"of {', '.join(PROTOCOLS)}")
        if self.protocol == "pptp" and (self.tunnel_secret or self.hide_avps):
            raise ConfigError("--tunnel-secret/--hide-avps: L2TP settings; expected "
                              "--protocol l2tp or l2tp-ipsec with them")
        if self.protocol == "l2tp-ipsec":
            if not self.psk and not self.certificate:
                raise ConfigError("--protocol l2tp-ipsec: expected --psk KEY (IKE pre-shared "
                                  "key) or --cert/--key/--ca")
            if not self.ipsec_ciphers and self.encryption.value not in IPSEC_LEVELS:
                raise ConfigError(f"--encryption {self.encryption.value}: L2TP/IPsec always "
                                  "encrypts; expected basic, strong or strongest (DES, DES, "
                                  "3DES) or --ipsec-cipher")
        elif self.psk or self.ipsec_ciphers:
            raise ConfigError("--psk/--ipsec-cipher: IPsec settings; expected --protocol "
                              "l2tp-ipsec with them")
        for cipher in self.ipsec_ciphers:
            if cipher not in ESP_CIPHERS:
                raise ConfigError(f"--ipsec-cipher {cipher}: expected one of "
                                  f"{', '.join(ESP_CIPHERS)}")
        if self.hide_avps and not self.tunnel_secret:
            raise ConfigError("--hide-avps: expected --tunnel-secret too (hidden AVPs are "
                              "encrypted with it, RFC 2661 §4.3)")
        if self.call_mode not in CALL_MODES:
            raise ConfigError(f"--call-mode {self.call_mode!r}: expected incoming or outgoing")
        if self.hello_interval < 0:
            raise ConfigError(f"--hello-interval {self.hello_interval}: expected seconds >= 0")
        if not self.interface or len(self.interface) > 15 or "/" in self.interface:
            raise ConfigError(f"--interface {self.interface!r}: expected a name of 1 to 15 "
                              "characters (IFNAMSIZ)")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str = "config") -> ClientConfig:
        table = _table(data, "client", where, set())
        f = _Fields(where, "client", table, {"server", "user", "password", "auth",
                                            "encryption", "mppe", "routes", "split",
                                            "echo_interval", "control_echo", "interface",
                                            "reconnect", "reconnect_delay", "protocol",
                                            "tunnel_secret", "hide_avps", "call_mode",
                                            "hello_interval", "psk", "nat_t",
                                            "ipsec_ciphers", "keylog", "certificate",
                                            "private_key", "ca", "ipsec_lifetime",
                                            "ipsec_lifetime_kb"})
        auth = f.auth("auth", tuple(AuthMethod))
        routes = f.choice("routes", "default", ("default", "split"))
        split = f.prefixes("split")
        if routes == "split" and not split:
            f.fail("split", 'at least one prefix with routes = "split"')
        password = f.required("password", "a string")
        if not isinstance(password, str):
            f.fail("password", "a string")
        return cls(server=f.address("server"), username=f.string("user"), password=password,
                   auth=auth, encryption=f.encryption("encryption", auth),
                   mppe_stateless=f.choice("mppe", "stateless",
                                           ("stateless", "stateful")) == "stateless",
                   routes=routes, split=split,
                   echo_interval=float(f.number("echo_interval", 10, 0)),
                   interface=f.string("interface", "vpn0", 15),
                   control_echo=float(f.number("control_echo", 60, 1)),
                   reconnect=f.number("reconnect", 0, 0, integer=True),
                   reconnect_delay=float(f.number("reconnect_delay", 5, 0)),
                   protocol=f.choice("protocol", "pptp", PROTOCOLS),
                   call_mode=f.choice("call_mode", "incoming", CALL_MODES),
                   **_l2tp_fields(f, False))

    @classmethod
    def load(cls, path: Path) -> ClientConfig:
        return cls.from_mapping(_load_toml(path), str(path))
