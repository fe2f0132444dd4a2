"""The client's configuration, from a TOML file or from `vpnlab connect`'s flags (checked the
same way, the errors naming the flags), validated before use.

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
    stop_linger = 31               # L2TP: seconds to re-ack a StopCCN of the server's (§5.7)
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunnels.config.fields import (
    CALL_MODES,
    ESP_CIPHERS,
    IPSEC_LEVELS,
    PROTOCOLS,
    ConfigError,
    Fields,
    l2tp_fields,
    load_file,
    top_table,
)
from tunnels.policy import MPPE_AUTH  # MPPE keys come from MS-CHAP (RFC 3079)
from tunnels.ppp.auth.base import AuthMethod
from tunnels.ppp.config import EncryptionLevel


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
    # L2TP: after the server's StopCCN, how long we keep re-acking its retransmissions
    # (RFC 2661 §5.7: "at least a full retransmission cycle", 31 s with the §5.8 timers)
    stop_linger: float = 31.0
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
        if not 1 <= self.stop_linger <= 300:
            raise ConfigError(f"--stop-linger {self.stop_linger}: expected seconds from 1 to "
                              "300 (RFC 2661 §5.7 asks for a full retransmission cycle, 31 s)")
        if not self.interface or len(self.interface) > 15 or "/" in self.interface:
            raise ConfigError(f"--interface {self.interface!r}: expected a name of 1 to 15 "
                              "characters (IFNAMSIZ)")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str = "config") -> ClientConfig:
        table = top_table(data, "client", where, set())
        f = Fields(where, "client", table, {"server", "user", "password", "auth",
                                            "encryption", "mppe", "routes", "split",
                                            "echo_interval", "control_echo", "interface",
                                            "reconnect", "reconnect_delay", "protocol",
                                            "tunnel_secret", "hide_avps", "call_mode",
                                            "hello_interval", "psk", "nat_t",
                                            "ipsec_ciphers", "keylog", "certificate",
                                            "private_key", "ca", "ipsec_lifetime",
                                            "ipsec_lifetime_kb", "stop_linger"})
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
                   stop_linger=float(f.number("stop_linger", 31, 1, maximum=300)),
                   **l2tp_fields(f, False))
    @classmethod
    def load(cls, path: Path) -> ClientConfig:
        return load_file(path, cls.from_mapping)
