"""PAP (RFC 1334 §2): the peer repeats Authenticate-Request until an Ack or Nak arrives."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import IntEnum

from tunnels._wire import Reader, Writer
from tunnels.errors import RemoteProtocolError, WireAnswer
from tunnels.ppp.auth.base import (
    PPP_PAP,
    AuthMethod,
    AuthOutcome,
    AwaitsVerdict,
    Credentials,
    Random,
    Verdict,
    Verifier,
    WindowsError_,
)


_ERROR = re.compile(r"E=(\d{1,10})\b")


class PapCode(IntEnum):
    AUTHENTICATE_REQUEST = 1
    AUTHENTICATE_ACK = 2
    AUTHENTICATE_NAK = 3


@dataclass(frozen=True, slots=True)
class AuthenticateRequest:
    """RFC 1334 §2.2.1: Peer-ID and Password, each with a one-octet length."""

    identifier: int
    peer_id: bytes
    password: bytes

    def encode(self) -> bytes:
        w = Writer().push_u8(PapCode.AUTHENTICATE_REQUEST).push_u8(self.identifier).push_u16(0)
        w.push_u8(len(self.peer_id)).push_bytes(self.peer_id)
        w.push_u8(len(self.password)).push_bytes(self.password)
        w.patch_u16(2, len(w))
        return w.getvalue()

    @classmethod
    def from_body(cls, identifier: int, body: Reader) -> AuthenticateRequest:
        peer_id = body.pull_bytes(body.pull_u8("peer-id length"), "peer-id")
        return cls(identifier, peer_id, body.pull_bytes(body.pull_u8("password length"),
                                                        "password"))


@dataclass(frozen=True, slots=True)
class AuthenticateReply:
    """RFC 1334 §2.2.2: Authenticate-Ack or -Nak with a message (Msg-Length may be absent
    from a zero-length message in old implementations; we accept that and always send it)."""

    code: int
    identifier: int
    message: bytes = b""

    def encode(self) -> bytes:
        w = Writer().push_u8(self.code).push_u8(self.identifier).push_u16(5 + len(self.message))
        return w.push_u8(len(self.message)).push_bytes(self.message).getvalue()

    @classmethod
    def from_body(cls, code: int, identifier: int, body: Reader) -> AuthenticateReply:
        if body.at_end():
            return cls(code, identifier)
        return cls(code, identifier, body.pull_bytes(body.pull_u8("msg length"), "message"))


PapMessage = AuthenticateRequest | AuthenticateReply


def decode(info: bytes) -> tuple[int, int, Reader]:
    r = Reader(info)
    code, ident, length = r.pull_u8("code"), r.pull_u8("identifier"), r.pull_u16("length")
    if length < 4 or length > len(info):
        raise RemoteProtocolError(f"PAP length {length} with {len(info)} octets")
    return code, ident, Reader(info, 4, length)


def decode_message(info: bytes) -> PapMessage:
    """Any PAP packet as its dataclass; unknown codes are the peer's error (Code-Reject)."""
    code, ident, body = decode(info)
    if code == PapCode.AUTHENTICATE_REQUEST:
        return AuthenticateRequest.from_body(ident, body)
    if code in (PapCode.AUTHENTICATE_ACK, PapCode.AUTHENTICATE_NAK):
        return AuthenticateReply.from_body(code, ident, body)
    raise RemoteProtocolError(f"unknown PAP code {code}", WireAnswer("code-reject", info))


def encode_request(identifier: int, peer_id: bytes, password: bytes) -> bytes:
    return AuthenticateRequest(identifier, peer_id, password).encode()


def encode_reply(code: int, identifier: int, message: bytes) -> bytes:
    return AuthenticateReply(code, identifier, message).encode()


class PapPeer:
    protocol = PPP_PAP

    def __init__(self, username: str, password: str, random: Random, restart: float = 3.0,
                 max_tries: int = 10):
        self.username, self.password = username.encode(), password.encode()
        self.restart, self.max_tries = restart, max_tries
        self._id = random(1)[0]
        self._tries = 0
        self._out: list[bytes] = []
        self.deadline: float | None = None
        self.outcome: AuthOutcome | None = None

    def start(self, now: float) -> None:
        self._send(now)

    def _send(self, now: float) -> None:
        self._tries += 1
        self._out.append(encode_request(self._id, self.username, self.password))
        self.deadline = now + self.restart

    def handle_timer(self, now: float) -> None:
        if self.deadline is None or now < self.deadline or self.outcome is not None:
            return
        if self._tries >= self.max_tries:
            self.outcome = AuthOutcome(False, self.username.decode(), AuthMethod.PAP, None,
                                       "no answer to Authenticate-Request")
            self.deadline = None
        else:
            self._send(now)

    def receive(self, info: bytes, now: float) -> None:
        code, ident, body = decode(info)
        if ident != self._id or code not in (PapCode.AUTHENTICATE_ACK, PapCode.AUTHENTICATE_NAK):
            return
        reply = AuthenticateReply.from_body(code, ident, body)
        message = reply.message.decode("utf-8", "replace")
        ok = code == PapCode.AUTHENTICATE_ACK
        error = None
        if not ok:  # our Naks (and RRAS's) start "E=691 ...": keep the Windows code
            match = _ERROR.match(message)
            error = int(match.group(1)) if match else None
        self.outcome = AuthOutcome(ok, self.username.decode(), AuthMethod.PAP, error, message)
        self.deadline = None

    def packets_to_send(self) -> list[bytes]:
        out, self._out = self._out, []
        return out

    def get_timer(self) -> float | None:
        return self.deadline


class PapAuthenticator(AwaitsVerdict):
    protocol = PPP_PAP

    def __init__(self, verifier: Verifier, wait: float = 30.0):
        self.verifier = verifier
        self.wait = wait
        self._out: list[bytes] = []
        self.deadline: float | None = None
        self.outcome: AuthOutcome | None = None
        self._answer: tuple[int, bytes] | None = None

    def start(self, now: float) -> None:
        self.deadline = now + self.wait

    def handle_timer(self, now: float) -> None:
        if self.deadline is not None and now >= self.deadline and self.outcome is None:
            self.outcome = AuthOutcome(False, "", AuthMethod.PAP, None,
                                       "no Authenticate-Request from the peer")
            self.deadline = None

    def receive(self, info: bytes, now: float) -> None:
        code, ident, body = decode(info)
        if code != PapCode.AUTHENTICATE_REQUEST:
            return
        if self._answer is not None:  # RFC 1334: a repeated request gets the same answer
            self._out.append(self._answer[1])
            return
        if self._verifying is not None:
            return  # the verifier is still out: its answer will be the answer
        request = AuthenticateRequest.from_body(ident, body)
        self.deadline = None
        self._ask(self.verifier, Credentials(AuthMethod.PAP, request.peer_id.decode(
            "utf-8", "replace"), ident, password=request.password), now)

    def conclude(self, verdict: Verdict, now: float) -> None:
        """The verifier's answer (at once or later): Authenticate-Ack or -Nak on the wire."""
        credentials = self._answered()
        if credentials is None:
            return
        ok = verdict.success
        text = "Access granted" if ok else (verdict.message or "bad credentials")
        error = None if ok else (verdict.error_code or WindowsError_.AUTHENTICATION_FAILURE)
        # RFC 1334 §2.2.2: Msg-Length is one octet; a long policy reason is cut to fit
        message = (text if ok else f"E={error} {text}").encode()[:255]
        reply = encode_reply(PapCode.AUTHENTICATE_ACK if ok else PapCode.AUTHENTICATE_NAK,
                             credentials.identifier, message)
        self._answer = (credentials.identifier, reply)
        self._out.append(reply)
        self.outcome = AuthOutcome.of(verdict, credentials.username, AuthMethod.PAP, text)

    def packets_to_send(self) -> list[bytes]:
        out, self._out = self._out, []
        return out

    def get_timer(self) -> float | None:
        return self.deadline
