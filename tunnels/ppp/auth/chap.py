"""CHAP (RFC 1994) with its three algorithms: MD5 (5), MS-CHAP v1 (0x80, RFC 2433) and
MS-CHAP v2 (0x81, RFC 2759). One packet format, one retransmission rule, per-algorithm
response and verification; the MS-CHAP v2 peer checks the authenticator's "S=" response
(mutual authentication) and fails the link when it is wrong.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from enum import IntEnum

from tunnels._wire import Reader, Writer
from tunnels.errors import RemoteProtocolError
from tunnels.ppp.auth import mscrypto
from tunnels.ppp.auth.base import (
    PPP_CHAP,
    AuthMethod,
    AuthOutcome,
    AwaitsVerdict,
    Credentials,
    MPPEMaterial,
    Random,
    Verdict,
    Verifier,
    WindowsError_,
)
from tunnels.ppp.auth.verify import v1_material


class ChapCode(IntEnum):
    CHALLENGE = 1
    RESPONSE = 2
    SUCCESS = 3
    FAILURE = 4


@dataclass(frozen=True, slots=True)
class ChapPacket:
    code: int
    identifier: int
    value: bytes = b""  # Challenge/Response only
    name: bytes = b""  # Challenge/Response: the sender's name; Success/Failure: the message

    def encode(self) -> bytes:
        w = Writer().push_u8(self.code).push_u8(self.identifier).push_u16(0)
        if self.code in (ChapCode.CHALLENGE, ChapCode.RESPONSE):
            w.push_u8(len(self.value)).push_bytes(self.value)
        w.push_bytes(self.name)
        w.patch_u16(2, len(w))
        return w.getvalue()

    @classmethod
    def decode(cls, info: bytes) -> ChapPacket:
        r = Reader(info)
        code, ident, length = r.pull_u8("code"), r.pull_u8("identifier"), r.pull_u16("length")
        if length < 4 or length > len(info):
            raise RemoteProtocolError(f"CHAP length {length} with {len(info)} octets")
        body = r.sub_reader(length - 4, "CHAP data")
        if code in (ChapCode.CHALLENGE, ChapCode.RESPONSE):
            value = body.pull_bytes(body.pull_u8("value size"), "value")
            return cls(code, ident, value, body.pull_rest())
        if code in (ChapCode.SUCCESS, ChapCode.FAILURE):
            return cls(code, ident, b"", body.pull_rest())
        raise RemoteProtocolError(f"unknown CHAP code {code}")


@dataclass(frozen=True, slots=True)
class MSCHAPv1Response:
    """RFC 2433 §5: the 49-octet Response value."""

    lm_response: bytes
    nt_response: bytes
    use_nt: bool = True

    def encode(self) -> bytes:
        return Writer().push_bytes(self.lm_response).push_bytes(self.nt_response) \
            .push_u8(1 if self.use_nt else 0).getvalue()

    @classmethod
    def decode(cls, value: bytes) -> MSCHAPv1Response:
        if len(value) != 49:
            raise RemoteProtocolError(f"MS-CHAP v1 response value of {len(value)} octets, not 49")
        r = Reader(value)
        return cls(r.pull_bytes(24, "LM response"), r.pull_bytes(24, "NT response"),
                   r.pull_u8("use-NT flag") == 1)


@dataclass(frozen=True, slots=True)
class MSCHAPv2Response:
    """RFC 2759 §4: Peer-Challenge, 8 reserved zero octets, NT-Response, Flags."""

    peer_challenge: bytes
    nt_response: bytes
    flags: int = 0

    def encode(self) -> bytes:
        return Writer().push_bytes(self.peer_challenge).push_bytes(bytes(8)) \
            .push_bytes(self.nt_response).push_u8(self.flags).getvalue()

    @classmethod
    def decode(cls, value: bytes) -> MSCHAPv2Response:
        if len(value) != 49:
            raise RemoteProtocolError(f"MS-CHAP v2 response value of {len(value)} octets, not 49")
        r = Reader(value)
        peer_challenge = r.pull_bytes(16, "peer challenge")
        r.skip(8, "reserved")  # RFC 2759 §4: zero, but not checked on receipt
        return cls(peer_challenge, r.pull_bytes(24, "NT-Response"), r.pull_u8("flags"))


_RESPONSES = {AuthMethod.MSCHAP: MSCHAPv1Response, AuthMethod.MSCHAPV2: MSCHAPv2Response}
_FIELD = re.compile(r"([ERCV])=(\S*)")


@dataclass(frozen=True, slots=True)
class MSCHAPFailure:
    """The Failure message of RFC 2433 §6 / RFC 2759 §6: "E=691 R=0 C=<hex> V=3 M=text".

    `error` is a Windows code (base.WindowsError_) or None when the text has no E= field;
    `challenge` is empty when absent (MS-CHAP v1 may omit C=). Decoding is lenient (peers only
    show the text) and never raises."""

    error: int | None
    retry: bool = False
    challenge: bytes = b""
    version: int = 3
    message: str = ""

    def encode(self) -> bytes:
        parts = [f"E={self.error}", f"R={int(self.retry)}"]
        if self.challenge:
            parts.append(f"C={self.challenge.hex().upper()}")
        parts.append(f"V={self.version}")
        if self.message:
            parts.append(f"M={self.message}")
        return " ".join(parts).encode()

    @classmethod
    def decode(cls, raw: bytes) -> MSCHAPFailure:
        text = raw.decode("utf-8", "replace")
        if text.startswith("M="):
            head, message = "", text[2:]
        elif " M=" in text:
            head, message = text.split(" M=", 1)
        else:
            head, message = text, ""
        fields = dict(_FIELD.findall(head))
        if not fields:  # not in the MS-CHAP format at all: keep the whole text
            return cls(None, message=text)
        return cls(_int(fields.get("E", "")), fields.get("R") == "1",
                   _hex(fields.get("C", "")), _int(fields.get("V", "")) or 1, message)


def _int(text: str) -> int | None:
    return int(text) if text.isdigit() and len(text) <= 10 else None


def _hex(text: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        return b""


def parse_failure(message: bytes) -> tuple[int | None, str]:
    """"E=691 R=0 C=... V=3 M=text" into (691, "text")."""
    failure = MSCHAPFailure.decode(message)
    return failure.error, failure.message


class _Exchange:
    protocol = PPP_CHAP

    def __init__(self, method: AuthMethod, random: Random, restart: float = 3.0,
                 max_tries: int = 10):
        self.method = method
        self.random = random
        self.restart = restart
        self.max_tries = max_tries
        self._out: list[bytes] = []
        self.deadline: float | None = None
        self.outcome: AuthOutcome | None = None

    def packets_to_send(self) -> list[bytes]:
        out, self._out = self._out, []
        return out

    def get_timer(self) -> float | None:
        return self.deadline

    def _finish(self, outcome: AuthOutcome) -> None:
        self.outcome = outcome
        self.deadline = None


class ChapAuthenticator(_Exchange, AwaitsVerdict):
    """Sends the challenge, judges the response, answers Success or Failure."""

    def __init__(self, method: AuthMethod, verifier: Verifier, name: str, random: Random,
                 rechallenge: float | None = None, **kw: float):
        super().__init__(method, random, **kw)
        self.verifier = verifier
        self.name = name.encode()
        self.rechallenge = rechallenge
        self._id = 0
        self._challenge = b""
        self._tries = 0
        self._awaiting = False

    def start(self, now: float) -> None:
        self._id = (self._id + 1) & 0xFF
        size = {AuthMethod.MSCHAPV2: 16, AuthMethod.MSCHAP: 8}.get(self.method, 16)
        self._challenge = self.random(size)
        self._tries = 0
        self._awaiting = True
        self._send_challenge(now)

    def _send_challenge(self, now: float) -> None:
        self._tries += 1
        self._out.append(ChapPacket(ChapCode.CHALLENGE, self._id, self._challenge,
                                    self.name).encode())
        self.deadline = now + self.restart

    def handle_timer(self, now: float) -> None:
        if self.deadline is None or now < self.deadline:
            return
        if self._awaiting:
            if self._tries >= self.max_tries:
                self._finish(AuthOutcome(False, "", self.method, None, "no response to challenge"))
            else:
                self._send_challenge(now)
        elif self.rechallenge:
            self.start(now)  # RFC 1994 §2: the authenticator may challenge again at any time

    def receive(self, info: bytes, now: float) -> None:
        packet = ChapPacket.decode(info)
        if packet.code != ChapCode.RESPONSE or packet.identifier != self._id:
            return  # RFC 1994 §4.1: responses to other challenges are silently discarded
        if not self._awaiting:
            # A retransmitted response after our answer was lost: answer the same way again
            # (while the verifier is still out, the answer comes when it does).
            if self.outcome is not None and self._last_answer:
                self._out.append(self._last_answer)
            return
        if self.method in (AuthMethod.MSCHAP, AuthMethod.MSCHAPV2):
            _RESPONSES[self.method].decode(packet.value)  # malformed: raises, discarded
        self._awaiting = False
        self.deadline = None
        self._ask(self.verifier, Credentials(self.method, packet.name.decode("utf-8", "replace"),
                                             self._id, self._challenge, packet.value), now)

    _last_answer = b""
    def conclude(self, verdict: Verdict, now: float) -> None:
        """The verifier's answer (at once or later): Success or Failure on the wire."""
        credentials = self._answered()
        if credentials is None:
            return  # no response is waiting (a late answer after the link went)
        ok = verdict.success
        if ok and self.method is AuthMethod.MSCHAPV2 and not verdict.authenticator_response:
            ok, verdict = False, Verdict.refused(WindowsError_.AUTHENTICATION_FAILURE,
                                                 "the verifier gave no authenticator response")
        message = self._success_text(verdict) if ok else \
            self._failure_text(verdict.error_code or WindowsError_.AUTHENTICATION_FAILURE,
                               verdict.message)
        answer = ChapPacket(ChapCode.SUCCESS if ok else ChapCode.FAILURE, self._id, b"",
                            message.encode()).encode()
        self._last_answer = answer
        self._out.append(answer)
        self.deadline = now + self.rechallenge if (ok and self.rechallenge) else None
        self.outcome = AuthOutcome.of(verdict, credentials.username, self.method, message,
                                      success=ok)

    def _success_text(self, verdict: Verdict) -> str:
        if self.method is AuthMethod.MSCHAPV2:
            return f"{verdict.authenticator_response} M=Access granted"
        return "Access granted" if self.method is AuthMethod.CHAP else ""

    def _failure_text(self, code: int, text: str) -> str:
        if self.method is AuthMethod.CHAP:
            # RFC 1994 leaves the message to the implementation: the MS-CHAP form's E= and M=
            # fields, so a peer (ours, or a user reading pppd's log) sees 691 or 649
            return f"E={code} M={text}"
        # RFC 2433 §6's examples answer MS-CHAP v1 with V=2 and no C=; RFC 2759 §6 uses V=3.
        if self.method is AuthMethod.MSCHAP:
            failure = MSCHAPFailure(code, False, b"", 2, text)
        else:
            failure = MSCHAPFailure(code, False, self._challenge, 3, text)
        return failure.encode().decode()


class ChapPeer(_Exchange):
    """Answers challenges; for MS-CHAP v2, checks the authenticator response."""

    def __init__(self, method: AuthMethod, username: str, password: str, random: Random,
                 **kw: float):
        super().__init__(method, random, **kw)
        self.username = username
        self.password = password
        self._expected_s = ""
        self._material: MPPEMaterial | None = None
        self._id: int | None = None
        self._challenge = b""
        self._response = b""
        self._sent = 0

    def start(self, now: float) -> None:
        pass  # the authenticator speaks first

    def handle_timer(self, now: float) -> None:
        """The Success or Failure may be lost; RFC 1994 §4.2 has the authenticator answer a
        repeated Response the same way. The RFC leaves the peer's timer to implementations:
        like pppd, the peer repeats its Response until it hears (at most `max_tries`)."""
        if self.deadline is None or now < self.deadline or self.outcome is not None:
            return
        if self._sent >= self.max_tries:
            self.deadline = None
            return
        self._sent += 1
        self._out.append(self._response)
        self.deadline = now + self.restart

    def receive(self, info: bytes, now: float) -> None:
        packet = ChapPacket.decode(info)
        if packet.code == ChapCode.CHALLENGE:
            # A repeated challenge (the authenticator's restart timer, or a lost response):
            # the same answer. Answering afresh would draw a new MS-CHAP v2 peer challenge,
            # and the Success for the first response would then fail our check (RFC 2759 §5).
            if packet.identifier == self._id and (self.outcome is not None or
                                                  packet.value == self._challenge):
                self._out.append(self._response)
                return
            self._challenge = packet.value
            self._answer(packet)
            self._sent = 1
            self.deadline = None if self.outcome is not None else now + self.restart
        elif packet.code == ChapCode.SUCCESS and packet.identifier == self._id:
            self._success(packet.name)
        elif packet.code == ChapCode.FAILURE and packet.identifier == self._id:
            code, msg = parse_failure(packet.name)
            self._finish(AuthOutcome(False, self.username, self.method, code, msg))

    def _answer(self, packet: ChapPacket) -> None:
        self._id = packet.identifier
        user = self.username.encode()
        if self.method is AuthMethod.CHAP:
            value = hashlib.md5(bytes((packet.identifier,)) + self.password.encode() +
                                packet.value).digest()
        elif self.method is AuthMethod.MSCHAP:
            if len(packet.value) != 8:
                raise RemoteProtocolError("MS-CHAP v1 challenge must have 8 octets")
            nt = mscrypto.nt_challenge_response_v1(packet.value, self.password)
            value = MSCHAPv1Response(bytes(24), nt, use_nt=True).encode()  # LM response zero
            self._material = v1_material(self.password, packet.value)
        else:
            if len(packet.value) != 16:
                raise RemoteProtocolError("MS-CHAP v2 challenge must have 16 octets")
            peer_challenge = self.random(16)
            nt = mscrypto.generate_nt_response(packet.value, peer_challenge, self.username,
                                               self.password)
            value = MSCHAPv2Response(peer_challenge, nt).encode()
            self._expected_s = mscrypto.generate_authenticator_response(
                self.password, nt, peer_challenge, packet.value, self.username)
            self._material = MPPEMaterial(2, mscrypto.nt_password_hash(self.password),
                                          nt_response=nt)
        self._response = ChapPacket(ChapCode.RESPONSE, packet.identifier, value, user).encode()
        self._out.append(self._response)

    def _success(self, message: bytes) -> None:
        if self.method is AuthMethod.MSCHAPV2:
            text = message.decode("utf-8", "replace")
            if not hmac.compare_digest(text[:42].upper().encode(), self._expected_s.encode()):
                self._finish(AuthOutcome(False, self.username, self.method, None,
                                         "the server's authenticator response is wrong: it "
                                         "does not know the password (RFC 2759 §5)"))
                return
        self._finish(AuthOutcome(True, self.username, self.method, None,
                                 message.decode("utf-8", "replace"), self._material))
