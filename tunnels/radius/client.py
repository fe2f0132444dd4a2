"""A sans-I/O RADIUS client (RFC 2865 §2, RFC 2866 §2, RFC 5080 §2.2.1).

The caller gives attributes and the time; the client gives datagrams to send (with their
destination), one timer and events. A request goes to the current server; without a verified
answer it is sent again after `timeout` with the same Identifier and authenticator (so the bytes
are the same), `retries` transmissions in all per server; then it fails over to the next server
(a new Identifier and authenticator: the secret differs) and after the last one it fails with
"no answer from any RADIUS server". A server that answered stays the one new requests go to.
A request carrying the State of an Access-Challenge goes to the server that sent it, and only
there (no other server knows the conversation, RFC 2865 §5.24; an EAP relay's next round).

A reply is matched by (server address and port, Identifier) and accepted only when its Response
Authenticator verifies against that request and, for Access-Accept/Reject/Challenge, when it
carries a valid Message-Authenticator (RFC 3579 §3.2; we always send one, first, as the
Blast-RADIUS advisory recommends). Anything else is dropped and counted in `counters`.
"""

from __future__ import annotations

import os
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tunnels.errors import LocalProtocolError, RemoteProtocolError
from tunnels.radius.attributes import Attr, Attributes, Key, Random
from tunnels.radius.msvsa import MS
from tunnels.radius.packet import (
    REPLIES,
    BadAuthenticator,
    BadMessageAuthenticator,
    Code,
    MissingMessageAuthenticator,
    Packet,
)

NO_ANSWER = "no answer from any RADIUS server"
AUTH_PORT, ACCT_PORT = 1812, 1813
_CREDENTIALS = (Attr.USER_PASSWORD, Attr.CHAP_PASSWORD, Attr.STATE, Attr.EAP_MESSAGE,
                MS.MS_CHAP_RESPONSE, MS.MS_CHAP2_RESPONSE)
Address = tuple[str, int]
_STATES_KEPT = 4096  # conversations in progress whose State we remember the server of


@dataclass(frozen=True, slots=True)
class Server:
    address: str
    port: int
    secret: bytes

    @property
    def endpoint(self) -> Address:
        return (self.address, self.port)


@dataclass(frozen=True, slots=True)
class Reply:
    """A verified answer to request `request_id` from `server`, with its attributes (hidden ones
    decrypted: MS-MPPE keys, MS-CHAP-MPPE-Keys)."""

    request_id: int
    attributes: Attributes
    server: Address


@dataclass(frozen=True, slots=True)
class AccessAccepted(Reply):
    pass


@dataclass(frozen=True, slots=True)
class AccessRejected(Reply):
    pass


@dataclass(frozen=True, slots=True)
class AccessChallenged(Reply):
    pass


@dataclass(frozen=True, slots=True)
class AccountingAcknowledged(Reply):
    pass


@dataclass(frozen=True, slots=True)
class RequestFailed:
    request_id: int
    reason: str
    servers_tried: tuple[Address, ...] = ()


Event = AccessAccepted | AccessRejected | AccessChallenged | AccountingAcknowledged | RequestFailed
_EVENTS: Mapping[Code, type] = {Code.ACCESS_ACCEPT: AccessAccepted,
                                Code.ACCESS_REJECT: AccessRejected,
                                Code.ACCESS_CHALLENGE: AccessChallenged,
                                Code.ACCOUNTING_RESPONSE: AccountingAcknowledged}


@dataclass(slots=True)
class _Pending:
    request_id: int
    code: Code
    attributes: Attributes
    server_index: int
    servers_left: int
    identifier: int = 0
    authenticator: bytes = b""
    datagram: bytes = b""
    sent: int = 0
    deadline: float = 0.0
    tried: list[Address] = field(default_factory=list)


class RadiusClient:
    """`servers` are (address, port, secret); accounting goes to `port + 1` of each unless
    `accounting_servers` are given (RFC 2866 §3: 1813 beside 1812)."""

    def __init__(self, servers: Sequence[tuple[str, int, bytes | str]], timeout: float = 3.0,
                 retries: int = 3, random: Random = os.urandom,
                 accounting_servers: Sequence[tuple[str, int, bytes | str]] | None = None,
                 require_message_authenticator: bool = True):
        if not servers or retries < 1 or timeout <= 0:
            raise LocalProtocolError("at least one server, retries >= 1, timeout > 0", None)
        self.servers = [_server(s) for s in servers]
        acct = accounting_servers or [(s.address, s.port + 1, s.secret) for s in self.servers]
        self.accounting_servers = [_server(s) for s in acct]
        self.timeout, self.retries, self.random = timeout, retries, random
        self.require_message_authenticator = require_message_authenticator
        self.counters: Counter[str] = Counter()
        self._current = {Code.ACCESS_REQUEST: 0, Code.ACCOUNTING_REQUEST: 0}
        self._pending: dict[tuple[Address, int], _Pending] = {}
        self._next_id = 0
        self._next_identifier: dict[Address, int] = {}
        self._outbox: list[tuple[Address, bytes]] = []
        self._events: deque[Event] = deque()
        # State of an Access-Challenge -> the index of the server that sent it (bounded)
        self._state_origin: dict[bytes, int] = {}

    # API -------------------------------------------------------------------------------------

    def authenticate(self, attributes: Attributes | Iterable[tuple[Key, Any]] | Mapping[Key, Any],
                     now: float) -> int:
        """Send an Access-Request (RFC 2865 §4.1); returns the request id events carry."""
        attrs = _attributes(attributes)
        if not any(k in attrs for k in _CREDENTIALS):
            raise LocalProtocolError("an Access-Request needs a password, CHAP or MS-CHAP "
                                     "response, State or EAP-Message", None)
        if Attr.USER_PASSWORD in attrs and Attr.CHAP_PASSWORD in attrs:
            raise LocalProtocolError("User-Password and CHAP-Password together (§5.2)", None)
        if Attr.NAS_IP_ADDRESS not in attrs and Attr.NAS_IDENTIFIER not in attrs:
            raise LocalProtocolError("NAS-IP-Address or NAS-Identifier is required (§4.1)",
                                     None)
        return self._start(Code.ACCESS_REQUEST, attrs, now)

    def account(self, attributes: Attributes | Iterable[tuple[Key, Any]] | Mapping[Key, Any],
                now: float) -> int:
        """Send an Accounting-Request (RFC 2866 §4.1); Acct-Status-Type and Acct-Session-Id are
        required (§5.1, §5.5)."""
        attrs = _attributes(attributes)
        for needed in (Attr.ACCT_STATUS_TYPE, Attr.ACCT_SESSION_ID):
            if needed not in attrs:
                raise LocalProtocolError(f"an Accounting-Request needs {needed.name}", None)
        return self._start(Code.ACCOUNTING_REQUEST, attrs, now)

    def datagrams_to_send(self) -> list[tuple[Address, bytes]]:
        out, self._outbox = self._outbox, []
        return out

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        return min((p.deadline for p in self._pending.values()), default=None)

    def handle_timer(self, now: float) -> None:
        for pending in [p for p in self._pending.values() if p.deadline <= now]:
            if pending.sent < self.retries:
                self._transmit(pending, now)
                self.counters["retransmissions"] += 1
            else:
                self._fail_over(pending, now)

    def receive_datagram(self, src: Address, data: bytes, now: float) -> None:
        """A datagram from `src`; never raises for its content (drops are counted)."""
        if len(data) < 20:
            self.counters["malformed"] += 1
            return
        pending = self._pending.get((tuple(src), data[1]))  # type: ignore[arg-type]
        if pending is None:
            self.counters["unmatched"] += 1
            return
        try:
            reply = self._decode(pending, data)
        except MissingMessageAuthenticator:
            self.counters["missing_message_authenticator"] += 1
        except BadMessageAuthenticator:
            self.counters["bad_message_authenticator"] += 1
        except BadAuthenticator:
            self.counters["bad_authenticator"] += 1
        except RemoteProtocolError:
            self.counters["malformed"] += 1
        else:
            del self._pending[(tuple(src), data[1])]  # type: ignore[index]
            self._current[pending.code] = pending.server_index
            state = reply.attributes.get(Attr.STATE)
            if reply.code == Code.ACCESS_CHALLENGE and state is not None:
                if len(self._state_origin) >= _STATES_KEPT:
                    del self._state_origin[next(iter(self._state_origin))]
                self._state_origin[bytes(state)] = pending.server_index
            event = _EVENTS[Code(reply.code)]
            self._events.append(event(pending.request_id, reply.attributes, tuple(src)))

    # internals -------------------------------------------------------------------------------

    def _servers(self, code: Code) -> list[Server]:
        return self.servers if code is Code.ACCESS_REQUEST else self.accounting_servers

    def _start(self, code: Code, attrs: Attributes, now: float) -> int:
        self._next_id += 1
        servers = self._servers(code)
        pending = _Pending(self._next_id, code, attrs, self._current[code], len(servers))
        state = attrs.get(Attr.STATE) if code is Code.ACCESS_REQUEST else None
        origin = self._state_origin.pop(bytes(state), None) if state is not None else None
        if origin is not None:  # the challenger's conversation: that server, no fail-over
            pending.server_index, pending.servers_left = origin, 1
        self._assign(pending, now)
        return pending.request_id

    def _assign(self, pending: _Pending, now: float) -> None:
        """Encode for the pending's server under a free Identifier and send."""
        server = self._servers(pending.code)[pending.server_index]
        pending.identifier = self._free_identifier(server.endpoint)
        pending.authenticator = self.random(16)
        attrs = pending.attributes.without(Attr.MESSAGE_AUTHENTICATOR).plus(
            (Attr.MESSAGE_AUTHENTICATOR, b""), first=True)
        packet = Packet(pending.code, pending.identifier, attrs, pending.authenticator)
        pending.datagram = packet.encode(server.secret, random=self.random)
        if pending.code is Code.ACCOUNTING_REQUEST:
            pending.authenticator = pending.datagram[4:20]
        pending.sent = 0
        pending.tried.append(server.endpoint)
        self._pending[(server.endpoint, pending.identifier)] = pending
        self._transmit(pending, now)

    def _transmit(self, pending: _Pending, now: float) -> None:
        server = self._servers(pending.code)[pending.server_index]
        self._outbox.append((server.endpoint, pending.datagram))
        pending.sent += 1
        pending.deadline = now + self.timeout

    def _fail_over(self, pending: _Pending, now: float) -> None:
        servers = self._servers(pending.code)
        del self._pending[(servers[pending.server_index].endpoint, pending.identifier)]
        pending.servers_left -= 1
        if pending.servers_left == 0:
            self.counters["requests_failed"] += 1
            self._events.append(RequestFailed(pending.request_id, NO_ANSWER,
                                              tuple(pending.tried)))
            return
        self.counters["fail_overs"] += 1
        pending.server_index = (pending.server_index + 1) % len(servers)
        self._current[pending.code] = pending.server_index
        self._assign(pending, now)

    def _free_identifier(self, endpoint: Address) -> int:
        start = self._next_identifier.get(endpoint, self.random(1)[0])
        for step in range(256):
            ident = (start + step) % 256
            if (endpoint, ident) not in self._pending:
                self._next_identifier[endpoint] = (ident + 1) % 256
                return ident
        raise LocalProtocolError(f"256 requests already in flight to {endpoint}", None)

    def _decode(self, pending: _Pending, data: bytes) -> Packet:
        server = self._servers(pending.code)[pending.server_index]
        reply = Packet.decode(data, server.secret, pending.authenticator)
        if reply.code not in REPLIES[pending.code]:
            raise RemoteProtocolError(f"{Code(reply.code).name} answers no {pending.code.name}")
        if (self.require_message_authenticator and pending.code is Code.ACCESS_REQUEST
                and not reply.has_message_authenticator):
            raise MissingMessageAuthenticator(f"{Code(reply.code).name} without "
                                              "Message-Authenticator")
        return reply


def _server(spec: tuple[str, int, bytes | str]) -> Server:
    address, port, secret = spec
    return Server(address, int(port), secret.encode() if isinstance(secret, str) else secret)


def _attributes(given: Attributes | Iterable[tuple[Key, Any]] | Mapping[Key, Any]) -> Attributes:
    return given if isinstance(given, Attributes) else Attributes(given)
