"""The RFC 1661 §4 option-negotiation automaton, written once for LCP, IPCP and CCP.

`TRANSITIONS` is RFC 1661 §4.1's state transition table, row by row; each layer plugs in an
`OptionPolicy` (what to request, how to judge the peer's request, what to make of Ack, Nak and
Reject) and receives this-layer-up/down/started/finished through a `Layer` owner. Time is a
parameter: the restart timer is a deadline the owner reads with `get_timer()`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import Protocol

from tunnels.errors import LocalProtocolError, RemoteProtocolError
from tunnels.ppp.packets import Code, ControlPacket, Option, decode_options, encode_options


class State(IntEnum):
    INITIAL = 0
    STARTING = 1
    CLOSED = 2
    STOPPED = 3
    CLOSING = 4
    STOPPING = 5
    REQ_SENT = 6
    ACK_RCVD = 7
    ACK_SENT = 8
    OPENED = 9


class Event(Enum):
    UP = "Up"
    DOWN = "Down"
    OPEN = "Open"
    CLOSE = "Close"
    TO_PLUS = "TO+"
    TO_MINUS = "TO-"
    RCR_PLUS = "RCR+"
    RCR_MINUS = "RCR-"
    RCA = "RCA"
    RCN = "RCN"
    RTR = "RTR"
    RTA = "RTA"
    RUC = "RUC"
    RXJ_PLUS = "RXJ+"
    RXJ_MINUS = "RXJ-"
    RXR = "RXR"


S, E = State, Event
# RFC 1661 §4.1 state transition table: (event, state) -> (actions, next state).
# Cells marked "-" in the RFC are absent; the "r"/"x"/"p" notes (restart, crossed, passive)
# are implementation options this automaton does not take.
_ROWS: dict[Event, dict[State, str]] = {
    E.UP: {S.INITIAL: "/2", S.STARTING: "irc,scr/6"},
    E.DOWN: {S.CLOSED: "/0", S.STOPPED: "tls/1", S.CLOSING: "/0", S.STOPPING: "/1",
             S.REQ_SENT: "/1", S.ACK_RCVD: "/1", S.ACK_SENT: "/1", S.OPENED: "tld/1"},
    E.OPEN: {S.INITIAL: "tls/1", S.STARTING: "/1", S.CLOSED: "irc,scr/6", S.STOPPED: "/3",
             S.CLOSING: "/5", S.STOPPING: "/5", S.REQ_SENT: "/6", S.ACK_RCVD: "/7",
             S.ACK_SENT: "/8", S.OPENED: "/9"},
    E.CLOSE: {S.INITIAL: "/0", S.STARTING: "tlf/0", S.CLOSED: "/2", S.STOPPED: "/2",
              S.CLOSING: "/4", S.STOPPING: "/4", S.REQ_SENT: "irc,str/4",
              S.ACK_RCVD: "irc,str/4", S.ACK_SENT: "irc,str/4", S.OPENED: "tld,irc,str/4"},
    E.TO_PLUS: {S.CLOSING: "str/4", S.STOPPING: "str/5", S.REQ_SENT: "scr/6",
                S.ACK_RCVD: "scr/6", S.ACK_SENT: "scr/8"},
    E.TO_MINUS: {S.CLOSING: "tlf/2", S.STOPPING: "tlf/3", S.REQ_SENT: "tlf/3",
                 S.ACK_RCVD: "tlf/3", S.ACK_SENT: "tlf/3"},
    E.RCR_PLUS: {S.CLOSED: "sta/2", S.STOPPED: "irc,scr,sca/8", S.CLOSING: "/4",
                 S.STOPPING: "/5", S.REQ_SENT: "sca/8", S.ACK_RCVD: "sca,tlu/9",
                 S.ACK_SENT: "sca/8", S.OPENED: "tld,scr,sca/8"},
    E.RCR_MINUS: {S.CLOSED: "sta/2", S.STOPPED: "irc,scr,scn/6", S.CLOSING: "/4",
                  S.STOPPING: "/5", S.REQ_SENT: "scn/6", S.ACK_RCVD: "scn/7",
                  S.ACK_SENT: "scn/6", S.OPENED: "tld,scr,scn/6"},
    E.RCA: {S.CLOSED: "sta/2", S.STOPPED: "sta/3", S.CLOSING: "/4", S.STOPPING: "/5",
            S.REQ_SENT: "irc/7", S.ACK_RCVD: "scr/6", S.ACK_SENT: "irc,tlu/9",
            S.OPENED: "tld,scr/6"},
    E.RCN: {S.CLOSED: "sta/2", S.STOPPED: "sta/3", S.CLOSING: "/4", S.STOPPING: "/5",
            S.REQ_SENT: "irc,scr/6", S.ACK_RCVD: "scr/6", S.ACK_SENT: "irc,scr/8",
            S.OPENED: "tld,scr/6"},
    E.RTR: {S.CLOSED: "sta/2", S.STOPPED: "sta/3", S.CLOSING: "sta/4", S.STOPPING: "sta/5",
            S.REQ_SENT: "sta/6", S.ACK_RCVD: "sta/6", S.ACK_SENT: "sta/6",
            S.OPENED: "tld,zrc,sta/5"},
    E.RTA: {S.CLOSED: "/2", S.STOPPED: "/3", S.CLOSING: "tlf/2", S.STOPPING: "tlf/3",
            S.REQ_SENT: "/6", S.ACK_RCVD: "/6", S.ACK_SENT: "/8", S.OPENED: "tld,scr/6"},
    E.RUC: {s: f"scj/{s.value}" for s in State if s >= S.CLOSED},
    E.RXJ_PLUS: {S.CLOSED: "/2", S.STOPPED: "/3", S.CLOSING: "/4", S.STOPPING: "/5",
                 S.REQ_SENT: "/6", S.ACK_RCVD: "/6", S.ACK_SENT: "/8", S.OPENED: "/9"},
    E.RXJ_MINUS: {S.CLOSED: "tlf/2", S.STOPPED: "tlf/3", S.CLOSING: "tlf/2",
                  S.STOPPING: "tlf/3", S.REQ_SENT: "tlf/3", S.ACK_RCVD: "tlf/3",
                  S.ACK_SENT: "tlf/3", S.OPENED: "tld,irc,str/5"},
    E.RXR: {s: f"/{s.value}" for s in State if s >= S.CLOSED} | {S.OPENED: "ser/9"},
}


_TIMED = (State.CLOSING, State.STOPPING, State.REQ_SENT, State.ACK_RCVD, State.ACK_SENT)


def _parse(cell: str) -> tuple[tuple[str, ...], State]:
    actions, _, nxt = cell.partition("/")
    return tuple(a for a in actions.split(",") if a), State(int(nxt))


TRANSITIONS: dict[tuple[Event, State], tuple[tuple[str, ...], State]] = {
    (event, state): _parse(cell) for event, row in _ROWS.items() for state, cell in row.items()
}


@dataclass(frozen=True, slots=True)
class Verdict:
    """The judgement of a peer's Configure-Request: ack it, nak it with hints, or reject."""

    code: Code
    options: list[Option]


def reject_or_nak(options: list[Option], acceptable: Callable[[Option], bool],
                  nak_for: Callable[[Option], Option | None]) -> Verdict | None:
    """RFC 1661 §5.3-5.4: unrecognizable options are rejected first (all of them, nothing
    else in that reply); only then are acceptable-but-wrong values naked with hints. None:
    the request can be acked."""
    rejects = [o for o in options if not acceptable(o)]
    if rejects:
        return Verdict(Code.CONFIGURE_REJECT, rejects)
    naks = [nak for o in options if (nak := nak_for(o)) is not None]
    return Verdict(Code.CONFIGURE_NAK, naks) if naks else None


class OptionPolicy(Protocol):
    def request(self) -> list[Option]:
        """Options for our next Configure-Request."""

    def judge(self, options: list[Option]) -> Verdict:
        """Ack (all acceptable), Nak (acceptable types, other values) or Reject (unknown)."""

    def acked(self, options: list[Option]) -> None: ...

    def naked(self, options: list[Option]) -> None: ...

    def rejected(self, options: list[Option]) -> None: ...


class Layer(Protocol):
    def this_layer_up(self, fsm: Automaton) -> None: ...

    def this_layer_down(self, fsm: Automaton) -> None: ...

    def this_layer_started(self, fsm: Automaton) -> None: ...

    def this_layer_finished(self, fsm: Automaton) -> None: ...


@dataclass
class Timers:
    restart: float = 3.0
    max_configure: int = 10
    max_terminate: int = 2
    max_failure: int = 5


class Automaton:
    """One control protocol's automaton; `send` is how its packets leave (the engine frames
    them with `protocol`)."""

    def __init__(self, name: str, protocol: int, policy: OptionPolicy, layer: Layer,
                 send: Callable[[int, bytes], None], timers: Timers | None = None,
                 extra_codes: Callable[[ControlPacket, float], bool] | None = None):
        self.name = name
        self.protocol = protocol
        self.policy = policy
        self.layer = layer
        self._send = send
        self.timers = timers or Timers()
        self._extra_codes = extra_codes
        self.state = State.INITIAL
        self.restart_counter = 0
        self.failure_counter = 0
        self.deadline: float | None = None
        self._identifier = 0
        self._request_id: int | None = None
        self._request_data = b""
        self._last_rcr: ControlPacket | None = None
        self._last_verdict: Verdict | None = None
        self._reject: ControlPacket | None = None
        self._now = 0.0
        self.terminate_reason = ""

    # -- inputs ------------------------------------------------------------------------------
    def up(self, now: float) -> None:
        self._fire(Event.UP, now)

    def down(self, now: float) -> None:
        self._fire(Event.DOWN, now)

    def open(self, now: float) -> None:
        self._fire(Event.OPEN, now)

    def close(self, now: float, reason: str = "") -> None:
        self.terminate_reason = reason
        self._fire(Event.CLOSE, now)

    def get_timer(self) -> float | None:
        return self.deadline

    def handle_timer(self, now: float) -> None:
        if self.deadline is None or now < self.deadline:
            return
        self.deadline = None
        if self.restart_counter > 0:
            self._fire(Event.TO_PLUS, now)
            return
        if self.state in (State.REQ_SENT, State.ACK_RCVD, State.ACK_SENT):
            self.terminate_reason = (f"{self.name}: no agreement after "
                                     f"{self.timers.max_configure} Configure-Requests "
                                     "(Max-Configure)")
        self._fire(Event.TO_MINUS, now)

    def receive(self, info: bytes, now: float) -> None:
        """One control packet (the PPP information field); malformed ones are discarded."""
        packet = ControlPacket.decode(info)
        handler = _RECEIVERS.get(packet.code)
        if handler is not None and packet.code in self.codes():
            handler(self, packet, now)
        elif self._extra_codes is not None and self._extra_codes(packet, now):
            return
        else:
            self._reject = packet
            self._fire(Event.RUC, now)

    def codes(self) -> set[int]:
        return {Code.CONFIGURE_REQUEST, Code.CONFIGURE_ACK, Code.CONFIGURE_NAK,
                Code.CONFIGURE_REJECT, Code.TERMINATE_REQUEST, Code.TERMINATE_ACK,
                Code.CODE_REJECT}

    def receive_code_reject(self, packet: ControlPacket, now: float) -> None:
        """RXJ+ when the rejected code is one the peer may lack, RXJ- when it is essential."""
        rejected = packet.data[:1]
        essential = bool(rejected) and rejected[0] <= Code.CODE_REJECT
        self._fire(Event.RXJ_MINUS if essential else Event.RXJ_PLUS, now)

    def receive_protocol_reject(self, now: float) -> None:
        """The peer does not speak this protocol (RFC 1661 §5.7): RXJ-."""
        self._fire(Event.RXJ_MINUS, now)

    def send_code(self, code: int, data: bytes = b"", identifier: int | None = None) -> None:
        """A packet outside the automaton (Protocol-Reject, Echo, CCP Reset): a fresh
        identifier unless it answers one."""
        self._out(code, self._next_id() if identifier is None else identifier, data)

    # -- automaton ---------------------------------------------------------------------------
    def _fire(self, event: Event, now: float) -> None:
        self._now = now
        entry = TRANSITIONS.get((event, self.state))
        if entry is None:
            if event in (Event.UP, Event.DOWN, Event.OPEN, Event.CLOSE):
                raise LocalProtocolError(f"{self.name}: {event.value} in state {self.state.name}")
            return  # a received packet the table ignores in this state (RFC 1661 §4.1 "-")
        actions, nxt = entry
        self.state = nxt  # layer callbacks see the state being entered
        for i, action in enumerate(actions):
            if action == "irc":
                # RFC 1661 §4.4: Max-Terminate before str, Max-Configure before scr
                terminating = "str" in actions[i:]
                self.restart_counter = (self.timers.max_terminate if terminating
                                        else self.timers.max_configure)
                self.failure_counter = 0
                continue
            getattr(self, f"_{action}")()
        if self.state is nxt and nxt not in _TIMED:
            self.deadline = None  # the restart timer runs only in these states

    def _next_id(self) -> int:
        self._identifier = (self._identifier + 1) & 0xFF
        return self._identifier

    def _out(self, code: int, ident: int, data: bytes = b"") -> None:
        self._send(self.protocol, ControlPacket(code, ident, data).encode())

    def _arm(self) -> None:
        self.deadline = self._now + self.timers.restart

    # actions named as in RFC 1661 §4.4
    def _tlu(self) -> None:
        self.layer.this_layer_up(self)

    def _tld(self) -> None:
        self.layer.this_layer_down(self)

    def _tls(self) -> None:
        self.layer.this_layer_started(self)

    def _tlf(self) -> None:
        self.deadline = None
        self.layer.this_layer_finished(self)

    def _zrc(self) -> None:
        self.restart_counter = 0
        self._arm()

    def _scr(self) -> None:
        self.restart_counter -= 1
        self._request_id = self._next_id()
        self._request_data = encode_options(self.policy.request())
        self._out(Code.CONFIGURE_REQUEST, self._request_id, self._request_data)
        self._arm()

    def _sca(self) -> None:
        assert self._last_rcr is not None
        self._out(Code.CONFIGURE_ACK, self._last_rcr.identifier, self._last_rcr.data)

    def _scn(self) -> None:
        assert self._last_rcr is not None and self._last_verdict is not None
        self._out(self._last_verdict.code, self._last_rcr.identifier,
                  encode_options(self._last_verdict.options))

    def _str(self) -> None:
        self.restart_counter -= 1
        self._out(Code.TERMINATE_REQUEST, self._next_id(), self.terminate_reason.encode()[:64])
        self._arm()

    def _sta(self) -> None:
        self._out(Code.TERMINATE_ACK, self._last_rtr_id)

    def _scj(self) -> None:
        assert self._reject is not None
        self._out(Code.CODE_REJECT, self._next_id(), self._reject.encode()[:1400])

    def _ser(self) -> None:
        pass  # Echo-Reply is sent by LCP's extra-code handler, which owns the magic number

    _last_rtr_id = 0


def _receive_request(fsm: Automaton, packet: ControlPacket, now: float) -> None:
    options = decode_options(packet.data)
    verdict = fsm.policy.judge(options)
    if verdict.code is Code.CONFIGURE_NAK:
        fsm.failure_counter += 1
        if fsm.failure_counter > fsm.timers.max_failure:
            # RFC 1661 §4.6 Max-Failure: stop nakking what does not converge; reject it.
            verdict = Verdict(Code.CONFIGURE_REJECT, verdict.options)
    fsm._last_rcr, fsm._last_verdict = packet, verdict
    fsm._fire(Event.RCR_PLUS if verdict.code is Code.CONFIGURE_ACK else Event.RCR_MINUS, now)


def _receive_ack(fsm: Automaton, packet: ControlPacket, now: float) -> None:
    if packet.identifier != fsm._request_id or packet.data != fsm._request_data:
        # RFC 1661 §5.2: the Ack's options must be exactly those of our last request
        return
    fsm.policy.acked(decode_options(packet.data))
    fsm._fire(Event.RCA, now)


def _receive_nak_or_reject(fsm: Automaton, packet: ControlPacket, now: float) -> None:
    if packet.identifier != fsm._request_id:
        return
    options = decode_options(packet.data)
    if packet.code == Code.CONFIGURE_NAK:
        fsm.policy.naked(options)
    else:
        fsm.policy.rejected(options)
    fsm._fire(Event.RCN, now)


def _receive_terminate_request(fsm: Automaton, packet: ControlPacket, now: float) -> None:
    fsm._last_rtr_id = packet.identifier
    fsm.terminate_reason = "peer sent Terminate-Request" + (
        f": {packet.data.decode('utf-8', 'replace')}" if packet.data else "")
    fsm._fire(Event.RTR, now)


def _receive_terminate_ack(fsm: Automaton, packet: ControlPacket, now: float) -> None:
    fsm._fire(Event.RTA, now)


def _receive_code_reject(fsm: Automaton, packet: ControlPacket, now: float) -> None:
    fsm.receive_code_reject(packet, now)


_RECEIVERS: dict[int, Callable[[Automaton, ControlPacket, float], None]] = {
    Code.CONFIGURE_REQUEST: _receive_request,
    Code.CONFIGURE_ACK: _receive_ack,
    Code.CONFIGURE_NAK: _receive_nak_or_reject,
    Code.CONFIGURE_REJECT: _receive_nak_or_reject,
    Code.TERMINATE_REQUEST: _receive_terminate_request,
    Code.TERMINATE_ACK: _receive_terminate_ack,
    Code.CODE_REJECT: _receive_code_reject,
}

__all__ = ["Automaton", "Event", "Layer", "OptionPolicy", "RemoteProtocolError", "State",
           "TRANSITIONS", "Timers", "Verdict"]
