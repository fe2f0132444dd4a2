"""The contract between the PPP engine and its authentication methods.

Each method (PAP, CHAP-MD5, MS-CHAP v1, MS-CHAP v2, EAP) has an authenticator side and a peer
side; both are sans-I/O `AuthExchange`s that the engine drives during the Authenticate phase
(RFC 1661 §3.5). The engine never holds a password store: the authenticator side asks a
`Verifier`, which is local accounts now and RADIUS later.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import Protocol

Random = Callable[[int], bytes]


class AuthMethod(Enum):
    """Methods by the names the chapter and the CLI use; value = (PPP protocol, LCP option data)."""

    PAP = "pap"
    CHAP = "chap"
    MSCHAP = "mschap"
    MSCHAPV2 = "mschapv2"
    EAP_MD5 = "eap-md5"

    @property
    def protocol(self) -> int:
        return _PROTOCOL[self]

    @property
    def lcp_option_data(self) -> bytes:
        """The Authentication-Protocol option's data (RFC 1661 §6.2, RFC 1994 §3, RFC 2433/2759)."""
        return _OPTION_DATA[self]

    @classmethod
    def from_lcp_option_data(cls, data: bytes) -> AuthMethod | None:
        for method, raw in _OPTION_DATA.items():
            if raw == data:
                return method
        return None


PPP_PAP = 0xC023
PPP_CHAP = 0xC223
PPP_EAP = 0xC227

_PROTOCOL = {
    AuthMethod.PAP: PPP_PAP,
    AuthMethod.CHAP: PPP_CHAP,
    AuthMethod.MSCHAP: PPP_CHAP,
    AuthMethod.MSCHAPV2: PPP_CHAP,
    AuthMethod.EAP_MD5: PPP_EAP,
}
_OPTION_DATA = {
    AuthMethod.PAP: b"\xc0\x23",
    AuthMethod.CHAP: b"\xc2\x23\x05",  # CHAP with MD5 (RFC 1994)
    AuthMethod.MSCHAP: b"\xc2\x23\x80",  # MS-CHAP v1 (RFC 2433)
    AuthMethod.MSCHAPV2: b"\xc2\x23\x81",  # MS-CHAP v2 (RFC 2759)
    AuthMethod.EAP_MD5: b"\xc2\x27",  # EAP (RFC 3748); the method is chosen inside EAP
}


class WindowsError_(IntEnum):
    """Error codes carried in MS-CHAP Failure messages (RFC 2759 §6) and shown by clients."""

    RESTRICTED_LOGON_HOURS = 646
    ACCT_DISABLED = 647
    PASSWD_EXPIRED = 648
    NO_DIALIN_PERMISSION = 649
    AUTHENTICATION_FAILURE = 691
    CHANGING_PASSWORD = 709


@dataclass(frozen=True, slots=True)
class MPPEMaterial:
    """What RFC 3079 needs to derive MPPE keys after MS-CHAP.

    version 1: `password_hash` is NtPasswordHash (or LM hash), `challenge` the 8-octet challenge.
    version 2: `password_hash` is NtPasswordHash, `nt_response` the 24-octet NT-Response.
    """

    version: int
    password_hash: bytes
    nt_response: bytes = b""
    challenge: bytes = b""
    lm_password_hash: bytes = b""


@dataclass(frozen=True, slots=True)
class AuthOutcome:
    success: bool
    username: str
    method: AuthMethod
    error_code: int | None = None
    message: str = ""
    mppe_material: MPPEMaterial | None = None


class AuthExchange(Protocol):
    """One running authentication, either side. Packets are PPP information fields."""

    protocol: int

    def start(self, now: float) -> None: ...

    def receive(self, info: bytes, now: float) -> None:
        """May raise RemoteProtocolError (malformed) carrying the wire answer."""

    def packets_to_send(self) -> list[bytes]: ...

    def get_timer(self) -> float | None: ...

    def handle_timer(self, now: float) -> None: ...

    @property
    def outcome(self) -> AuthOutcome | None: ...


@dataclass(frozen=True, slots=True)
class Account:
    password: str
    dialin_allowed: bool = True
    groups: tuple[str, ...] = ()
    static_address: str | None = None


class Verifier(Protocol):
    def lookup(self, username: str) -> Account | None: ...


@dataclass(frozen=True)
class LocalAccounts:
    """A local account store (the chapter's local SAM); usernames compare case-insensitively."""

    accounts: Mapping[str, Account] = field(default_factory=dict)

    def lookup(self, username: str) -> Account | None:
        wanted = username.casefold()
        for name, account in self.accounts.items():
            if name.casefold() == wanted:
                return account
        return None
