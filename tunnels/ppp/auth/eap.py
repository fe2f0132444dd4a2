"""EAP over PPP (RFC 3748, protocol 0xC227): Identity, then a method; EAP-MD5 built in.

Methods plug in through `EAPMethod` (type number, the authenticator's request data, the
`Credentials` a response gives the verifier, the peer's answer), so EAP-TLS or EAP-MSCHAPv2
can be added without touching the exchange. A peer asked for a method it lacks answers with a
legacy Nak listing its own.

With a verifier that runs EAP itself (`relays_eap`: RADIUS, RFC 3579, as Windows 2000 RRAS
does with IAS) the authenticator is a pass-through after the Identity: each EAP Response
packet goes to the verifier as it arrived (`Credentials.eap_message`, with the State to echo),
each `Verdict.challenge` goes to the peer byte for byte, and the final verdict ends it (see
`EapAuthenticator.conclude`). The RADIUS server chooses the method and handles Naks.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import IntEnum
from collections.abc import Sequence
from typing import Protocol

from tunnels._wire import Reader, Writer
from tunnels.errors import RemoteProtocolError
from tunnels.ppp.auth.base import (
    PPP_EAP,
    AuthMethod,
    AuthOutcome,
    AwaitsVerdict,
    Credentials,
    Random,
    Verdict,
    Verifier,
    WindowsError_,
    relays_eap,
)

# The largest EAP packet relayed to the peer, sent to RADIUS as Framed-MTU so that its methods
# fragment to fit (RFC 3579 §2.4): within the 1400-octet MRU PPTP and L2TP clients negotiate
# (below PPP's default 1500, RFC 1661 §6.1). A larger Request from RADIUS refuses the call.
RELAY_MAX = 1400


class EapCode(IntEnum):
    REQUEST = 1
    RESPONSE = 2
    SUCCESS = 3
    FAILURE = 4


class EapType(IntEnum):
    IDENTITY = 1
    NOTIFICATION = 2
    NAK = 3
    MD5_CHALLENGE = 4


@dataclass(frozen=True, slots=True)
class EapPacket:
    code: int
    identifier: int
    type: int | None = None
    data: bytes = b""

    def encode(self) -> bytes:
        w = Writer().push_u8(self.code).push_u8(self.identifier).push_u16(0)
        if self.type is not None:
            w.push_u8(self.type).push_bytes(self.data)
        w.patch_u16(2, len(w))
        return w.getvalue()

    @classmethod
    def decode(cls, info: bytes) -> EapPacket:
        r = Reader(info)
        code, ident, length = r.pull_u8("code"), r.pull_u8("identifier"), r.pull_u16("length")
        if length < 4 or length > len(info):
            raise RemoteProtocolError(f"EAP length {length} with {len(info)} octets")
        body = Reader(info, 4, length)
        if code in (EapCode.REQUEST, EapCode.RESPONSE):
            return cls(code, ident, body.pull_u8("type"), body.pull_rest())
        if code in (EapCode.SUCCESS, EapCode.FAILURE):
            return cls(code, ident)
        raise RemoteProtocolError(f"unknown EAP code {code}")


class EAPMethod(Protocol):
    type: int

    def request(self, random: Random) -> bytes: ...

    def credentials(self, identity: str, identifier: int, request: bytes,
                    response: bytes) -> Credentials: ...

    def answer(self, identifier: int, request: bytes, username: str, password: str) -> bytes: ...


class MD5Challenge:
    """EAP-MD5 (RFC 3748 §5.4): CHAP-MD5's computation inside EAP."""

    type = EapType.MD5_CHALLENGE

    def request(self, random: Random) -> bytes:
        return bytes((16,)) + random(16)

    @staticmethod
    def _value(identifier: int, request: bytes, password: str) -> bytes:
        r = Reader(request)
        challenge = r.pull_bytes(r.pull_u8("value size"), "challenge")
        return hashlib.md5(bytes((identifier,)) + password.encode() + challenge).digest()

    def credentials(self, identity: str, identifier: int, request: bytes,
                    response: bytes) -> Credentials:
        """What the verifier checks, in CHAP's terms (RADIUS carries it as CHAP-Password)."""
        r, q = Reader(response), Reader(request)
        value = r.pull_bytes(r.pull_u8("value size"), "response")
        challenge = q.pull_bytes(q.pull_u8("value size"), "challenge")
        return Credentials(AuthMethod.EAP_MD5, identity, identifier, challenge, value)

    def answer(self, identifier: int, request: bytes, username: str, password: str) -> bytes:
        return bytes((16,)) + self._value(identifier, request, password) + username.encode()


METHODS: dict[int, EAPMethod] = {EapType.MD5_CHALLENGE: MD5Challenge()}


class _Base:
    protocol = PPP_EAP

    def __init__(self) -> None:
        self._out: list[bytes] = []
        self.deadline: float | None = None
        self.outcome: AuthOutcome | None = None

    def packets_to_send(self) -> list[bytes]:
        out, self._out = self._out, []
        return out

    def get_timer(self) -> float | None:
        return self.deadline


class EapAuthenticator(_Base, AwaitsVerdict):
    def __init__(self, verifier: Verifier, random: Random,
                 method: int | Sequence[int] = EapType.MD5_CHALLENGE,
                 restart: float = 3.0, max_tries: int = 10):
        """`method`: the EAP type to request, or several in order of preference; a peer's Nak
        (RFC 3748 §5.3.1) moves to the next one it asks for. Unused when the verifier relays
        EAP (its server picks the method)."""
        super().__init__()
        wanted = [method] if isinstance(method, int) else list(method)
        self._candidates = [METHODS[t] for t in wanted]
        self.verifier, self.random, self.method = verifier, random, self._candidates[0]
        self.restart, self.max_tries = restart, max_tries
        self._id = random(1)[0]
        self._request: EapPacket | None = None
        self._request_raw = b""
        self._tries = 0
        self._relaying = False  # past the Identity with a relaying verifier
        self._state = b""  # the RADIUS State to echo with the next Response
        self.identity = ""

    def start(self, now: float) -> None:
        self._send(EapPacket(EapCode.REQUEST, self._id, EapType.IDENTITY), now)

    def _send(self, packet: EapPacket, now: float, raw: bytes | None = None) -> None:
        """Send a Request (retransmitted as these very octets: `raw` when relayed)."""
        self._request, self._request_raw, self._tries = packet, raw or packet.encode(), 1
        self._out.append(self._request_raw)
        self.deadline = now + self.restart

    def handle_timer(self, now: float) -> None:
        if self.deadline is None or now < self.deadline or self._request is None:
            return
        if self._tries >= self.max_tries:
            self._finish(False, None, "no EAP response")
            return
        self._tries += 1
        self._out.append(self._request_raw)
        self.deadline = now + self.restart

    def _finish(self, ok: bool, code: int | None, message: str, packet: bytes = b"") -> None:
        self._out.append(packet or EapPacket(EapCode.SUCCESS if ok else EapCode.FAILURE,
                                             self._id).encode())
        self.deadline, self._request = None, None
        self.outcome = AuthOutcome(ok, self.identity, AuthMethod.EAP_MD5, code, message)

    def receive(self, info: bytes, now: float) -> None:
        packet = EapPacket.decode(info)
        if packet.code != EapCode.RESPONSE or self._request is None or \
                packet.identifier != self._id:
            return  # RFC 3748 §4.1: responses must match the outstanding request
        if self._relaying:
            if self._verifying is None:  # RFC 3579 §2.1: the server's method answers it
                self._relay(info[:packet_length(info)], packet.identifier, now)
        elif packet.type == EapType.IDENTITY:
            self.identity = packet.data.decode("utf-8", "replace")
            if relays_eap(self.verifier):
                self._relaying = True
                self._relay(info[:packet_length(info)], packet.identifier, now)
                return
            self._id = (self._id + 1) & 0xFF
            self._send(EapPacket(EapCode.REQUEST, self._id, self.method.type,
                                 self.method.request(self.random) + b"vpnlab"), now)
        elif packet.type == EapType.NAK:
            self._candidates = [m for m in self._candidates if m is not self.method]
            acceptable = [m for m in self._candidates if m.type in packet.data]
            if not acceptable:
                self._finish(False, None, f"the peer refused EAP type {self.method.type}")
                return
            self.method = acceptable[0]
            self._id = (self._id + 1) & 0xFF
            self._send(EapPacket(EapCode.REQUEST, self._id, self.method.type,
                                 self.method.request(self.random) + b"vpnlab"), now)
        elif packet.type == self.method.type and self._verifying is None:
            assert self._request is not None
            self.deadline = None
            self._ask(self.verifier, self.method.credentials(
                self.identity, packet.identifier, self._request.data, packet.data), now)

    def _relay(self, response: bytes, identifier: int, now: float) -> None:
        """The peer's Response to the verifier; no retransmission while it decides."""
        self.deadline = None
        self._ask(self.verifier, Credentials(AuthMethod.EAP_MD5, self.identity, identifier,
                                             eap_message=response, state=self._state), now)

    def conclude(self, verdict: Verdict, now: float) -> None:
        """The verifier's answer (at once or later). A challenge: its EAP Request goes to the
        peer as it is (its Identifier is the one the next Response must carry). Final: EAP
        Success or Failure, the relaying verifier's own packet when it sent one of the right
        code and Identifier (RFC 3748 §4.2), otherwise one we build with the Identifier of
        the Response it answers."""
        credentials = self._answered()
        if credentials is None:
            return
        if verdict.challenge is not None:
            self._challenge(verdict.challenge.eap_message, verdict.challenge.state, now)
            return
        text = "Access granted" if verdict.success else (verdict.message or "bad credentials")
        self._finish(verdict.success, verdict.error_code, text,
                     self._final_packet(verdict.eap_message, verdict.success))
        assert self.outcome is not None
        self.outcome = AuthOutcome.of(verdict, self.identity, AuthMethod.EAP_MD5, text)

    def _challenge(self, raw: bytes, state: bytes, now: float) -> None:
        problem = relay_problem(raw) or (
            f"EAP code {raw[0]} (expected {EapCode.REQUEST.name})"
            if raw[0] != EapCode.REQUEST else "")
        if problem:
            message = f"the verifier's EAP Request cannot be relayed: {problem}"
            self._finish(False, WindowsError_.AUTHENTICATION_FAILURE, message)
            return
        packet = EapPacket.decode(raw)  # relay_problem vouched for its Length, code and Type
        self._id, self._state = packet.identifier, state
        self._send(packet, now, raw)

    def _final_packet(self, raw: bytes, success: bool) -> bytes:
        want = EapCode.SUCCESS if success else EapCode.FAILURE
        if not relay_problem(raw) and raw[0] == want and raw[1] == self._id:
            return raw
        return b""


def packet_length(info: bytes) -> int:
    """An EAP packet's Length field (RFC 3748 §4); 0 when too short to have one."""
    return int.from_bytes(info[2:4], "big") if len(info) >= 4 else 0


def relay_problem(raw: bytes) -> str:
    """Why an EAP packet from the verifier (RADIUS's EAP-Message, RFC 3579 §3.1) cannot be
    passed on as it is, or "": one check for the RADIUS reply and the authenticator."""
    if len(raw) > RELAY_MAX:
        return f"{len(raw)} octets, more than the {RELAY_MAX} we relay (Framed-MTU)"
    if len(raw) < 4 or packet_length(raw) != len(raw):
        return f"an EAP Length of {packet_length(raw)} in {len(raw)} octets"
    if raw[0] not in tuple(EapCode):
        return f"EAP code {raw[0]}"
    code = EapCode(raw[0])
    if code in (EapCode.REQUEST, EapCode.RESPONSE) and len(raw) < 5:
        return f"an EAP {code.name.title()} without a Type"
    if code in (EapCode.SUCCESS, EapCode.FAILURE) and len(raw) != 4:
        return f"an EAP {code.name.title()} of {len(raw)} octets (RFC 3748 §4.2: 4)"
    return ""


class EapPeer(_Base):
    def __init__(self, username: str, password: str):
        super().__init__()
        self.username, self.password = username, password

    def start(self, now: float) -> None:
        pass  # the authenticator speaks first

    def handle_timer(self, now: float) -> None:
        pass

    def receive(self, info: bytes, now: float) -> None:
        packet = EapPacket.decode(info)
        if packet.code == EapCode.SUCCESS:
            self.outcome = AuthOutcome(True, self.username, AuthMethod.EAP_MD5)
        elif packet.code == EapCode.FAILURE:
            # RFC 3748 §4.2: Failure carries no reason; like Windows, report 691.
            self.outcome = AuthOutcome(False, self.username, AuthMethod.EAP_MD5,
                                       WindowsError_.AUTHENTICATION_FAILURE, "EAP Failure")
        elif packet.code == EapCode.REQUEST:
            self._out.append(self._answer(packet).encode())

    def assume_success(self) -> bool:
        """A lower-layer success indication (RFC 3748 §3.4, §7.2), once a method has run."""
        if self.outcome is None and self._answered_method:
            self.outcome = AuthOutcome(True, self.username, AuthMethod.EAP_MD5, None,
                                       "EAP Success lost; network-layer packets seen")
            return True
        return False

    _answered_method = False

    def _answer(self, request: EapPacket) -> EapPacket:
        ident = request.identifier
        if request.type == EapType.IDENTITY:
            return EapPacket(EapCode.RESPONSE, ident, EapType.IDENTITY, self.username.encode())
        if request.type == EapType.NOTIFICATION:
            return EapPacket(EapCode.RESPONSE, ident, EapType.NOTIFICATION)
        method = METHODS.get(request.type or 0)
        if method is None:  # RFC 3748 §5.3.1: legacy Nak with the types we can do
            return EapPacket(EapCode.RESPONSE, ident, EapType.NAK, bytes(sorted(METHODS)))
        self._answered_method = True
        return EapPacket(EapCode.RESPONSE, ident, method.type,
                         method.answer(ident, request.data, self.username, self.password))
