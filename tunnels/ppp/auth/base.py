"""The contract between the PPP engine and its authentication methods.

Each method (PAP, CHAP-MD5, MS-CHAP v1, MS-CHAP v2, EAP) has an authenticator side and a peer
side; both are sans-I/O `AuthExchange`s that the engine drives during the Authenticate phase
(RFC 1661 §3.5). The engine never holds a password store: when the peer's answer arrives, the
authenticator side hands its `Credentials` to a `Verifier` and words its Success or Failure
from the `Verdict`. A verifier answers at once (local accounts) or later (RADIUS: the runtime
calls `PPPEngine.complete_authentication`), so the engine stays sans-I/O either way.
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
    NO_REMOTE_ENCRYPTION = 742  # the remote computer does not support the required encryption
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

    # The authenticator side only:
    #   awaiting_verdict: bool -- the peer's credentials are with the verifier
    #   conclude(verdict, now) -- the verifier's answer, worded on the wire


class DialIn(Enum):
    """An account's dial-in permission (the chapter's Dial-in tab): Allow access, Deny access,
    or Control access through Remote Access Policy (the matching policy's permission decides)."""

    ALLOW = "allow"
    DENY = "deny"
    POLICY = "policy"


@dataclass(frozen=True, slots=True)
class Account:
    password: str
    dialin: DialIn = DialIn.ALLOW
    groups: tuple[str, ...] = ()
    static_address: str | None = None

    @property
    def dialin_allowed(self) -> bool:
        """Without remote access policies, only Allow lets the user in."""
        return self.dialin is DialIn.ALLOW


@dataclass(frozen=True, slots=True)
class Credentials:
    """What the peer proved, for whoever holds the passwords to check (local store or RADIUS).

    PAP: `password`. CHAP-MD5 and EAP-MD5: `identifier`, `challenge`, `response` (the 16-octet
    MD5 value; EAP-MD5 computes it exactly as CHAP does, RFC 3748 §5.4). MS-CHAP v1 and v2:
    `challenge` (8 or 16 octets) and the 49-octet Response value. `username` is as sent
    (it may be "DOMAIN\\user").

    EAP relayed to RADIUS (RFC 3579): `eap_message` is the peer's EAP Response packet as it
    arrived (Identity first, then whatever the RADIUS server's method asks), `identifier` its
    Identifier, `username` the EAP identity, and `state` the State of the Access-Challenge it
    answers (RFC 2865 §5.24; empty for the first request)."""

    method: AuthMethod
    username: str
    identifier: int = 0
    challenge: bytes = b""
    response: bytes = b""
    password: bytes = b""
    eap_message: bytes = b""
    state: bytes = b""


@dataclass(frozen=True, slots=True)
class Authorization:
    """What the verifier (account, RADIUS Access-Accept, remote access policy) sets for the
    connection; None leaves the server's configuration in force."""

    peer_address: str | None = None  # a static address (account, Framed-IP-Address, profile)
    encryption: tuple[str, ...] | None = None  # allowed levels: none, basic, strong, strongest
    session_timeout: float | None = None  # seconds; the link is closed when it runs out
    idle_timeout: float | None = None  # seconds without a datagram either way
    policy: str | None = None  # the remote access policy that matched
    class_: tuple[bytes, ...] = ()  # RADIUS Class attributes, echoed in accounting
    detail: str = ""  # why it was granted (shown in status and logs)


@dataclass(frozen=True, slots=True)
class EapChallenge:
    """Not a verdict yet: the verifier runs the EAP method (RADIUS Access-Challenge, RFC 3579
    §2.1) and wants `eap_message` (one EAP Request packet, as the server sent it) relayed to
    the peer; the peer's answer goes back with `state` echoed."""

    eap_message: bytes
    state: bytes = b""


@dataclass(frozen=True, slots=True)
class Verdict:
    """A verifier's answer. On success `mppe_material` (local: from the password) or
    `mppe_keys` (RADIUS: MS-MPPE-Send-Key and Recv-Key, the server's send and receive start
    keys) gives MPPE its keys, and MS-CHAP v2 needs `authenticator_response` ("S=" + 40 hex,
    RFC 2759 §5). On failure `error_code` is the Windows code the peer is shown (691, 649...).

    EAP relayed to RADIUS: `challenge` set means the exchange goes on (success is False, and
    nothing is final: the authenticator relays the Request and asks again); on a final verdict
    `eap_message` is the EAP Success/Failure the RADIUS server sent, when it sent one."""

    success: bool
    error_code: int | None = None
    message: str = ""
    authenticator_response: str = ""
    mppe_material: MPPEMaterial | None = None
    mppe_keys: tuple[bytes, bytes] | None = None
    authorization: Authorization = field(default_factory=Authorization)
    challenge: EapChallenge | None = None
    eap_message: bytes = b""

    @classmethod
    def refused(cls, code: int, message: str) -> Verdict:
        return cls(False, int(code), message)

    @classmethod
    def challenged(cls, eap_message: bytes, state: bytes = b"") -> Verdict:
        return cls(False, challenge=EapChallenge(eap_message, state))


@dataclass(frozen=True, slots=True)
class AuthOutcome:
    success: bool
    username: str
    method: AuthMethod
    error_code: int | None = None
    message: str = ""
    mppe_material: MPPEMaterial | None = None
    mppe_keys: tuple[bytes, bytes] | None = None  # (send, receive) start keys, e.g. from RADIUS
    authorization: Authorization = field(default_factory=Authorization)

    @classmethod
    def of(cls, verdict: Verdict, username: str, method: AuthMethod, message: str,
           success: bool | None = None) -> AuthOutcome:
        """The outcome an authenticator reports for a verdict it put on the wire."""
        ok = verdict.success if success is None else success
        return cls(ok, username, method, None if ok else
                   (verdict.error_code or WindowsError_.AUTHENTICATION_FAILURE),
                   message if ok else (verdict.message or message),
                   verdict.mppe_material if ok else None, verdict.mppe_keys if ok else None,
                   verdict.authorization)


class AwaitsVerdict:
    """The authenticator side's wait for its verifier: `_ask` hands the credentials over and
    concludes at once when the verdict is immediate; `conclude(verdict, now)` (each method's
    wording on the wire) takes them back with `_answered()`."""

    _verifying: Credentials | None = None

    @property
    def awaiting_verdict(self) -> bool:
        return self._verifying is not None

    def _ask(self, verifier: Verifier, credentials: Credentials, now: float) -> None:
        self._verifying = credentials
        verdict = verifier.verify(credentials)
        if verdict is not None:
            self.conclude(verdict, now)

    def _answered(self) -> Credentials | None:
        credentials, self._verifying = self._verifying, None
        return credentials

    def conclude(self, verdict: Verdict, now: float) -> None:
        raise NotImplementedError


class Verifier(Protocol):
    def verify(self, credentials: Credentials) -> Verdict | None:
        """The verdict now, or None when it comes later through
        `PPPEngine.complete_authentication` (the runtime then owns the wait)."""


def relays_eap(verifier: Verifier) -> bool:
    """Whether the verifier runs EAP methods itself (RADIUS, RFC 3579): the EAP authenticator
    then relays the peer's Responses (`Credentials.eap_message`) and the verifier's Requests
    (`Verdict.challenge`) instead of running EAP-MD5. A verifier says so with a true
    `relays_eap` attribute; the local account store has none."""
    return bool(getattr(verifier, "relays_eap", False))


@dataclass(frozen=True)
class LocalAccounts:
    """A local account store (the chapter's local SAM); usernames compare case-insensitively.
    Alone (no policies) it admits accounts whose dial-in permission is Allow."""

    accounts: Mapping[str, Account] = field(default_factory=dict)

    def lookup(self, username: str) -> Account | None:
        wanted = username.casefold()
        for name, account in self.accounts.items():
            if name.casefold() == wanted:
                return account
        return None

    def verify(self, credentials: Credentials) -> Verdict:
        from tunnels.ppp.auth.verify import verify_with_account

        account = self.lookup_sent(credentials.username)
        verdict = verify_with_account(credentials, account)
        if verdict.success and account is not None and not account.dialin_allowed:
            return Verdict.refused(WindowsError_.NO_DIALIN_PERMISSION, "dial-in permission denied")
        return verdict

    def lookup_sent(self, username: str) -> Account | None:
        """Windows peers may send "DOMAIN\\user"; accounts know the bare name (the MS-CHAP v2
        hashes use the bare name too, RFC 2759 §8.2)."""
        return self.lookup(username) or self.lookup(username.rsplit("\\", 1)[-1])
