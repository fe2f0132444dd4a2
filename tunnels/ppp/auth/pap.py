"""PAP (RFC 1334 §2): the peer repeats Authenticate-Request until an Ack or Nak arrives."""

from __future__ import annotations

import hmac
import re
from enum import IntEnum

from tunnels._wire import Reader, Writer
from tunnels.errors import RemoteProtocolError
from tunnels.ppp.auth.base import PPP_PAP, AuthMethod, AuthOutcome, Random, Verifier, WindowsError_


_ERROR = re.compile(r"E=(\d{1,10})\b")


class PapCode(IntEnum):
    AUTHENTICATE_REQUEST = 1
    AUTHENTICATE_ACK = 2
    AUTHENTICATE_NAK = 3


def encode_request(identifier: int, peer_id: bytes, password: bytes) -> bytes:
    w = Writer().push_u8(PapCode.AUTHENTICATE_REQUEST).push_u8(identifier).push_u16(0)
    w.push_u8(len(peer_id)).push_bytes(peer_id).push_u8(len(password)).push_bytes(password)
    w.patch_u16(2, len(w))
    return w.getvalue()


def encode_reply(code: int, identifier: int, message: bytes) -> bytes:
    w = Writer().push_u8(code).push_u8(identifier).push_u16(5 + len(message))
    return w.push_u8(len(message)).push_bytes(message).getvalue()


def decode(info: bytes) -> tuple[int, int, Reader]:
    r = Reader(info)
    code, ident, length = r.pull_u8("code"), r.pull_u8("identifier"), r.pull_u16("length")
    if length < 4 or length > len(info):
        raise RemoteProtocolError(f"PAP length {length} with {len(info)} octets")
    return code, ident, Reader(info, 4, length)


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
        message = body.pull_bytes(body.pull_u8("msg length")).decode("utf-8", "replace") \
            if not body.at_end() else ""
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


class PapAuthenticator:
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
        user = body.pull_bytes(body.pull_u8("peer-id length"), "peer-id").decode("utf-8", "replace")
        password = body.pull_bytes(body.pull_u8("password length"), "password")
        account = self.verifier.lookup(user)
        if account is None or not hmac.compare_digest(account.password.encode(), password):
            ok, error, text = False, int(WindowsError_.AUTHENTICATION_FAILURE), "bad credentials"
        elif not account.dialin_allowed:
            ok, error = False, int(WindowsError_.NO_DIALIN_PERMISSION)
            text = "no dial-in permission"
        else:
            ok, error, text = True, None, "Access granted"
        message = (text if ok else f"E={error} {text}").encode()
        reply = encode_reply(PapCode.AUTHENTICATE_ACK if ok else PapCode.AUTHENTICATE_NAK,
                             ident, message)
        self._answer = (ident, reply)
        self._out.append(reply)
        self.outcome = AuthOutcome(ok, user, AuthMethod.PAP, error, text)
        self.deadline = None

    def packets_to_send(self) -> list[bytes]:
        out, self._out = self._out, []
        return out

    def get_timer(self) -> float | None:
        return self.deadline
