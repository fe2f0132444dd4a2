"""PPP link configuration: one frozen value per link, validated when made."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from enum import Enum

from tunnels.errors import LocalProtocolError
from tunnels.ppp.auth.base import AuthMethod, LocalAccounts, Verifier


class EncryptionLevel(Enum):
    """The chapter's encryption settings; for PPTP: MPPE 40, 56 and 128-bit keys."""

    NONE = "none"
    OPTIONAL = "optional"
    BASIC = "basic"
    STRONG = "strong"
    STRONGEST = "strongest"

    @property
    def key_bits(self) -> int | None:
        return {"basic": 40, "strong": 56, "strongest": 128}.get(self.value)


@dataclass(frozen=True)
class PPPConfig:
    is_authenticator: bool
    auth_methods: tuple[AuthMethod, ...] = (AuthMethod.MSCHAPV2,)
    username: str = ""
    password: str = ""
    verifier: Verifier = field(default_factory=LocalAccounts)
    name: str = "vpnlab"
    encryption: EncryptionLevel = EncryptionLevel.NONE
    mppe_stateless: bool = True
    mru: int = 1400
    echo_interval: float = 10.0
    echo_failures: int = 3
    restart_timer: float = 3.0
    max_configure: int = 10
    max_terminate: int = 2
    max_failure: int = 5
    auth_timeout: float = 30.0  # the Authenticate phase may not last longer than this
    chap_rechallenge: float | None = None  # seconds between CHAP re-challenges (RFC 1994 §2)
    accm: int | None = None  # async HDLC only: the ACCM to ask for (None: not requested)
    local_address: str | None = None
    peer_address: str | None = None
    dns: tuple[str, ...] = ()
    nbns: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.auth_methods:
            raise LocalProtocolError("PPPConfig.auth_methods: expected at least one method")
        if not self.is_authenticator and not self.username:
            raise LocalProtocolError("PPPConfig.username: the authenticated peer needs one")
        if self.is_authenticator and (self.local_address is None or self.peer_address is None):
            raise LocalProtocolError("PPPConfig: an authenticator (server) needs local_address "
                                     "and peer_address to assign")
        for name in ("local_address", "peer_address"):
            value = getattr(self, name)
            if value is not None:
                ipaddress.IPv4Address(value)
        if len(self.dns) > 2 or len(self.nbns) > 2:
            raise LocalProtocolError("PPPConfig.dns/nbns: at most a primary and a secondary")
        if self.accm is not None and not 0 <= self.accm <= 0xFFFFFFFF:
            raise LocalProtocolError(f"PPPConfig.accm={self.accm}: expected a 32-bit map")
        if not 128 <= self.mru <= 1500:
            raise LocalProtocolError(f"PPPConfig.mru={self.mru}: expected 128..1500")
