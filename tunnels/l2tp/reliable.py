"""The L2TPv2 control channel's reliable delivery (RFC 2661 §5.8), sans-I/O.

One `ReliableChannel` per control connection. It owns the Ns/Nr fields of the control header
(RFC 2661 §3.1) and nothing else: payloads are opaque bytes (the AVPs of one control message),
b"" being a ZLB acknowledgement. Time is the `now` parameter; `get_timer()` is the one next
deadline (a retransmission or a delayed ZLB).

Sequence numbers (§5.8): Ns starts at 0 and counts modulo 2^16; every message except a ZLB
takes one slot, so a ZLB carries the Ns the next message will use and does not advance it.
"x is newer than y" when (x - y) mod 2^16 is in 1..32767. A received Ns in the 32768 values
ending with the last one received is a duplicate: not delivered, but it MUST be acknowledged
again ("particularly in the case of a lost ZLB ACK message"), by piggyback or by a ZLB. Nr is
the Ns we expect next; a ZLB's Nr flushes our retransmit queue but its Ns never moves our Nr.

Decisions, each checked against the RFC text:
- Nr on retransmission. RFC 2661 §5.8 itself says "The retransmitted message contains the same
  Ns value, but the Nr value MUST be updated with the sequence number of the next expected
  message" (RFC 3931 §4.2 repeats it). So a retransmission is the original payload and Ns with
  our current Nr: byte-identical to the original whenever nothing new arrived from the peer in
  between (the usual case), and with a newer Nr otherwise, as the MUST requires.
- Out-of-order messages: §5.8 allows queueing them for in-order delivery or discarding them.
  We buffer the ones inside our advertised receive window (the peer may not have more than that
  many outstanding, so anything further is a peer error: dropped, counted "out_of_window").
  A buffered message is not acknowledged by itself: Nr can only name the first gap, and the ack
  goes out when the gap fills. We never withhold an ack to flow-control the peer (§5.8 MUST NOT).
- Window: at most `peer_window` (the peer's Receive Window Size AVP, 4 when absent; 0 is
  invalid, §5.8) messages unacknowledged on the wire; later ones are held and go out as acks
  open the window. The slow start and congestion avoidance of Appendix A are a SHOULD we do not
  implement: the window is fixed at the peer's RWS, which is what it allows.
- Retransmission (§5.8): each unacknowledged message has its own timer, `retransmit_initial`
  (1 s recommended) doubling after each retransmission up to `retransmit_cap` (which MUST be no
  less than 8 s). After `max_retransmits` retransmissions (5 recommended) and one more full
  timeout without an ack, `failed` names the message and the tunnel "and all sessions within
  MUST be cleared"; the channel retransmits nothing more and refuses new messages. Hello
  (§5.5, §6.5) is reliable like any other message, so a lost peer surfaces here too.
- An Nr acknowledging a message we never put on the wire is ignored and counted
  ("nr_beyond_sent"); an Nr older than our oldest unacknowledged message is stale (reordering)
  and simply changes nothing.
- Teardown (§5.7, §5.8): after the final exchange the tunnel MUST keep this channel running
  (acking the peer's retransmissions) for a full retransmission interval: `linger_time()`.
- The data channel's optional Ns/Nr (§5.4) are another sequence space, never retransmitted:
  not this class.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from tunnels.errors import LocalProtocolError

MODULUS = 0x10000
HALF = 0x8000  # serial arithmetic: newer means 1..HALF-1 ahead


def _ahead(x: int, y: int) -> int:
    """How far `x` is ahead of `y` modulo 2^16 (0..65535)."""
    return (x - y) % MODULUS


def _newer(x: int, y: int) -> bool:
    """`x` comes after `y` in 16-bit serial arithmetic (RFC 2661 §5.8)."""
    return 0 < _ahead(x, y) < HALF


@dataclass(frozen=True, slots=True)
class Outbound:
    """One control packet to put on the wire now (the tunnel adds the rest of the header)."""

    ns: int
    nr: int
    payload: bytes  # b"" is a ZLB acknowledgement
    retransmission: bool  # True when this is a copy of an earlier transmission


@dataclass(slots=True)
class _Pending:
    """One of our messages not yet acknowledged by the peer."""

    ns: int
    payload: bytes
    transmitted: bool = False
    retransmits: int = 0
    deadline: float = 0.0  # next retransmission (meaningful once transmitted)
    due: bool = False  # its timer fired: retransmit at the next outbound()


class ReliableChannel:
    """Ns/Nr, retransmission, windows and ZLB acknowledgements of one control connection."""

    def __init__(self, receive_window: int = 16, peer_window: int = 4,
                 retransmit_initial: float = 1.0, retransmit_cap: float = 8.0,
                 max_retransmits: int = 5, ack_delay: float = 0.1):
        if not 1 <= receive_window < HALF:
            raise ValueError(f"receive_window must be 1..{HALF - 1}, got {receive_window}")
        if retransmit_initial <= 0:
            raise ValueError(f"retransmit_initial must be > 0, got {retransmit_initial}")
        if retransmit_cap < max(8.0, retransmit_initial):
            # RFC 2661 §5.8: "This cap MUST be no less than 8 seconds per retransmission."
            raise ValueError(f"retransmit_cap must be >= 8 s and >= retransmit_initial, "
                             f"got {retransmit_cap}")
        if max_retransmits < 0 or ack_delay < 0:
            raise ValueError("max_retransmits and ack_delay must not be negative")
        self.receive_window = receive_window  # what we advertise (Receive Window Size AVP)
        self.peer_window = 4
        self.set_peer_window(peer_window)
        self.retransmit_initial = retransmit_initial
        self.retransmit_cap = retransmit_cap
        self.max_retransmits = max_retransmits
        self.ack_delay = ack_delay
        self.next_ns = 0  # the Ns the next send() gets
        self.expected_nr = 0  # the Ns we expect next from the peer: our Nr
        self.failed: str | None = None
        self._queue: deque[_Pending] = deque()  # unacknowledged, in Ns order
        self._buffer: dict[int, bytes] = {}  # received ahead of a gap, by Ns
        self._ack_deadline: float | None = None  # an ack is owed by then
        self.counters: dict[str, int] = {
            "sent": 0, "retransmitted": 0, "acked": 0, "received": 0, "delivered": 0,
            "duplicates": 0, "out_of_window": 0, "buffered": 0, "zlb_sent": 0,
            "zlb_received": 0, "held_by_window": 0, "nr_beyond_sent": 0, "failures": 0}

    # --- configuration -------------------------------------------------------------------

    def set_peer_window(self, size: int) -> None:
        """The peer's Receive Window Size AVP (RFC 2661 §5.8: 0 is invalid).

        Values above 32767 are used as 32767: more in flight would make 16-bit serial
        comparisons ambiguous.
        """
        if not 1 <= size < MODULUS:
            raise LocalProtocolError(f"Receive Window Size {size} is invalid (1..65535, "
                                     "RFC 2661 §5.8)")
        self.peer_window = min(size, HALF - 1)

    def linger_time(self) -> float:
        """The full retransmission interval (RFC 2661 §5.7, §5.8): how long a tunnel torn down
        for reasons other than lost connectivity keeps this channel running after the final
        exchange (31 s with the recommended 1 s, cap 8 s, 5 retransmissions)."""
        return sum(self._timeout(k) for k in range(self.max_retransmits + 1))

    def _timeout(self, retransmits: int) -> float:
        """Timer after the original (0) or the k-th retransmission: exponential back-off."""
        return min(self.retransmit_initial * 2 ** retransmits, self.retransmit_cap)

    # --- sending -------------------------------------------------------------------------

    def send(self, payload: bytes, now: float) -> int:
        """Queue one control message; returns its Ns. It goes out at the next outbound(now)
        if it fits in the peer's window (RFC 2661 §5.8), otherwise it is held until acks
        open the window."""
        if not payload:
            raise LocalProtocolError("an empty payload is a ZLB: the channel sends those itself")
        if self.failed is not None:
            raise LocalProtocolError(f"control channel failed ({self.failed}): "
                                     "the tunnel must be cleared (RFC 2661 §5.8)")
        ns = self.next_ns
        if len(self._queue) >= self.peer_window:
            self.counters["held_by_window"] += 1
        self._queue.append(_Pending(ns, bytes(payload)))
        self.next_ns = (ns + 1) % MODULUS
        return ns

    def _wire_ns(self) -> int:
        """The Ns the next new message on the wire gets: a ZLB carries it (§5.8)."""
        for entry in self._queue:
            if not entry.transmitted:
                return entry.ns
        return self.next_ns

    def outbound(self, now: float) -> list[Outbound]:
        """What to transmit now: due retransmissions, new messages the window allows, or a ZLB
        when an ack is owed, `ack_delay` has passed and nothing else carries our Nr."""
        self._expire(now)
        out: list[Outbound] = []
        if self.failed is None:
            for i, entry in enumerate(self._queue):
                if entry.due:
                    entry.due = False
                    out.append(Outbound(entry.ns, self.expected_nr, entry.payload, True))
                    self.counters["retransmitted"] += 1
                elif not entry.transmitted and i < self.peer_window:
                    entry.transmitted, entry.deadline = True, now + self._timeout(0)
                    out.append(Outbound(entry.ns, self.expected_nr, entry.payload, False))
                    self.counters["sent"] += 1
        if out:
            self._ack_deadline = None  # every packet carries our current Nr
        elif self._ack_deadline is not None and now >= self._ack_deadline:
            self._ack_deadline = None
            out.append(Outbound(self._wire_ns(), self.expected_nr, b"", False))
            self.counters["zlb_sent"] += 1
        return out

    # --- receiving -----------------------------------------------------------------------

    def receive(self, ns: int, nr: int, payload: bytes, now: float) -> list[bytes]:
        """One received control packet (payload b"" = ZLB); returns the payloads now
        deliverable, in order, each exactly once."""
        if not (0 <= ns < MODULUS and 0 <= nr < MODULUS):
            raise LocalProtocolError(f"Ns={ns} / Nr={nr} are not 16-bit values")
        self._acknowledge(nr)
        if not payload:
            # §5.8: a ZLB takes no sequence slot; its Ns must not move our Nr, and it is
            # never acknowledged itself.
            self.counters["zlb_received"] += 1
            return []
        self.counters["received"] += 1
        ahead = _ahead(ns, self.expected_nr)
        if ahead == 0:
            return self._deliver(payload, now)
        if ahead >= HALF:  # within the 32768 values ending with the last one received
            self.counters["duplicates"] += 1
            self._owe_ack(now)  # §5.8: duplicates MUST be acknowledged (our ack was lost)
        elif ahead >= self.receive_window:
            self.counters["out_of_window"] += 1  # beyond what the peer may have outstanding
        elif ns in self._buffer:
            self.counters["duplicates"] += 1
        else:
            self._buffer[ns] = bytes(payload)
            self.counters["buffered"] += 1
        return []

    def _deliver(self, payload: bytes, now: float) -> list[bytes]:
        delivered = [bytes(payload)]
        self.expected_nr = (self.expected_nr + 1) % MODULUS
        while self.expected_nr in self._buffer:
            delivered.append(self._buffer.pop(self.expected_nr))
            self.expected_nr = (self.expected_nr + 1) % MODULUS
        self.counters["delivered"] += len(delivered)
        self._owe_ack(now)
        return delivered

    def _owe_ack(self, now: float) -> None:
        if self._ack_deadline is None:
            self._ack_deadline = now + self.ack_delay

    def _acknowledge(self, nr: int) -> None:
        """Drop our messages with Ns before `nr` from the retransmit queue (§5.8)."""
        oldest = self._queue[0].ns if self._queue else self.next_ns
        if _ahead(nr, oldest) > _ahead(self._wire_ns(), oldest):
            if _newer(nr, self._wire_ns()):
                self.counters["nr_beyond_sent"] += 1  # acks what we never sent: ignored
            return  # otherwise stale: older than anything unacknowledged
        while self._queue and _newer(nr, self._queue[0].ns):
            self._queue.popleft()
            self.counters["acked"] += 1

    # --- timers --------------------------------------------------------------------------

    def _expire(self, now: float) -> None:
        if self.failed is not None:
            return
        for entry in self._queue:
            if not entry.transmitted or entry.due or now < entry.deadline:
                continue
            if entry.retransmits >= self.max_retransmits:
                self.failed = (f"no acknowledgement of control message Ns={entry.ns} after "
                               f"{entry.retransmits} retransmissions")
                self.counters["failures"] += 1
                for other in self._queue:
                    other.due = False
                return
            entry.retransmits += 1
            entry.due = True
            entry.deadline = now + self._timeout(entry.retransmits)

    def get_timer(self) -> float | None:
        """The one next deadline: a retransmission or a delayed ZLB."""
        deadlines = [] if self.failed is not None else [
            e.deadline for e in self._queue if e.transmitted and not e.due]
        if self._ack_deadline is not None:
            deadlines.append(self._ack_deadline)
        return min(deadlines, default=None)

    def handle_timer(self, now: float) -> None:
        """Fire what is due at `now`; outbound(now) then holds the packets to send."""
        self._expire(now)

    # --- state ---------------------------------------------------------------------------

    def idle(self) -> bool:
        """Nothing unacknowledged and nothing held."""
        return not self._queue

    def ack_owed(self) -> bool:
        """A received message waits for our acknowledgement (a ZLB due within ack_delay):
        an end that goes away now would leave e.g. the peer's StopCCN unacknowledged
        (RFC 2661 §5.7: its receiver MUST send a ZLB ACK)."""
        return self._ack_deadline is not None

    def unacknowledged(self) -> int:
        """Our messages on the wire the peer has not acknowledged (never above peer_window,
        unless set_peer_window shrank it after they went out)."""
        return sum(1 for e in self._queue if e.transmitted)

    def held(self) -> int:
        """Messages queued but not transmitted yet (window full or outbound() not called)."""
        return sum(1 for e in self._queue if not e.transmitted)

    def ack_pending(self) -> bool:
        """Something received still needs acknowledging."""
        return self._ack_deadline is not None
