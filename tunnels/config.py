"""Server and client configuration, from a TOML file or from code, validated before use.

An error names the file, the field and what was expected, and nothing starts:

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

    [users.alice]
    password = "s3cret"
    dialin = true                  # false: refused with error 649
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


class ConfigError(ValueError):
    pass


def _auth(where: str, values: Any) -> tuple[AuthMethod, ...]:
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{where}: expected a list of methods like [\"mschapv2\"]")
    out = []
    for v in values:
        try:
            out.append(AuthMethod(v))
        except ValueError:
            raise ConfigError(f"{where}: {v!r}: expected one of "
                              f"{', '.join(m.value for m in AuthMethod)}") from None
    return tuple(out)


def _encryption(where: str, value: Any) -> EncryptionLevel:
    try:
        return EncryptionLevel(value)
    except ValueError:
        raise ConfigError(f"{where}: {value!r}: expected one of "
                          f"{', '.join(e.value for e in EncryptionLevel)}") from None


def _addresses(where: str, values: Any) -> tuple[str, ...]:
    if not isinstance(values, list) or len(values) > 2:
        raise ConfigError(f"{where}: expected a list of at most two IPv4 addresses")
    try:
        return tuple(str(ipaddress.IPv4Address(v)) for v in values)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


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
    accounts: LocalAccounts = field(default_factory=LocalAccounts)

    @property
    def tunnel_address(self) -> str:
        return str(next(self.pool.hosts()))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str = "config") -> ServerConfig:
        server = data.get("server")
        if not isinstance(server, Mapping):
            raise ConfigError(f"{where}: missing [server] table")
        known = {"listen", "pool", "name", "max_ports", "dns", "wins", "auth", "encryption",
                 "mppe", "echo_interval"}
        unknown = set(server) - known
        if unknown:
            raise ConfigError(f"{where}: [server]: unknown field(s) {', '.join(sorted(unknown))}"
                              f"; expected {', '.join(sorted(known))}")
        try:
            listen = str(ipaddress.IPv4Address(server.get("listen", "")))
        except ValueError:
            raise ConfigError(f"{where}: server.listen: expected the server's IPv4 address") \
                from None
        try:
            pool = ipaddress.IPv4Network(server.get("pool", ""), strict=True)
        except ValueError:
            raise ConfigError(f"{where}: server.pool: expected a prefix like 10.10.100.0/24") \
                from None
        if pool.num_addresses < 4:
            raise ConfigError(f"{where}: server.pool: {pool} is too small (need /30 or larger)")
        max_ports = server.get("max_ports", 128)
        if not isinstance(max_ports, int) or max_ports < 1:
            raise ConfigError(f"{where}: server.max_ports: expected a positive integer")
        mppe = server.get("mppe", "stateless")
        if mppe not in ("stateless", "stateful"):
            raise ConfigError(f"{where}: server.mppe: expected stateless or stateful")
        echo = server.get("echo_interval", 10)
        if not isinstance(echo, (int, float)) or echo < 0:
            raise ConfigError(f"{where}: server.echo_interval: expected seconds >= 0")
        return cls(listen=listen, pool=pool, name=str(server.get("name", "vpnlab")),
                   max_ports=max_ports, dns=_addresses(f"{where}: server.dns",
                                                       server.get("dns", [])),
                   wins=_addresses(f"{where}: server.wins", server.get("wins", [])),
                   auth=_auth(f"{where}: server.auth", server.get("auth", ["mschapv2"])),
                   encryption=_encryption(f"{where}: server.encryption",
                                          server.get("encryption", "none")),
                   mppe_stateless=mppe == "stateless", echo_interval=float(echo),
                   accounts=_users(data.get("users", {}), where))

    @classmethod
    def load(cls, path: Path) -> ServerConfig:
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such file") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        return cls.from_mapping(data, str(path))


def _users(users: Any, where: str) -> LocalAccounts:
    if not isinstance(users, Mapping):
        raise ConfigError(f"{where}: [users]: expected tables like [users.alice]")
    accounts = {}
    for name, entry in users.items():
        if not isinstance(entry, Mapping) or not isinstance(entry.get("password"), str):
            raise ConfigError(f"{where}: users.{name}.password: expected a string")
        dialin = entry.get("dialin", True)
        if not isinstance(dialin, bool):
            raise ConfigError(f"{where}: users.{name}.dialin: expected true or false")
        accounts[name] = Account(entry["password"], dialin)
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

    def __post_init__(self) -> None:
        try:
            ipaddress.IPv4Address(self.server)
        except ValueError:
            raise ConfigError(f"--server {self.server!r}: expected an IPv4 address") from None
        if self.routes not in ("default", "split"):
            raise ConfigError(f"--routes {self.routes!r}: expected default or split")
        for prefix in self.split:
            try:
                ipaddress.IPv4Network(prefix)
            except ValueError:
                raise ConfigError(f"--split {prefix!r}: expected a prefix like 10.10.0.0/24") \
                    from None
