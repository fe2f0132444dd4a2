"""One call's GRE data channel (RFC 2637 §4.2-4.4): sequence numbers, acks, window.

Sending: each data packet gets the next sequence number and carries the latest ack we owe.
Receiving: a packet older than or equal to the last one delivered is a duplicate or late and is
dropped (counted): PPP copes with loss, not with reordering, so the newest wins, as pptpd does.
An ack we owe and cannot piggyback goes out alone after `ack_delay`, or at once when half of
our own advertised receive window (`own_window`, sent in OCRQ/OCRP) is waiting for an ack, so a
one-way bulk flow never stalls the sender on our window. Acks only ever name the highest
sequence number actually delivered (never ahead of what was received).

The peer's receive window (§4.4: no more than that many unacknowledged packets in flight):
with `enforce_window` a frame beyond it is dropped and counted ("window_full"), which PPP
tolerates like loss; without it (the default) it is sent and counted ("window_exceeded"),
because Windows, pptpd and the Linux kernel driver keep sending and some peers ack late; a
stall would be worse than a burst. §4.4 leaves the policy to the implementation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tunnels.gre.header import GREPacket, encode_data


def _newer(a: int, b: int) -> bool:
    """Sequence `a` comes after `b` in 32-bit serial arithmetic."""
    return 0 < (a - b) & 0xFFFFFFFF < 0x80000000


@dataclass
class GRESession:
    peer_call_id: int  # goes in our packets' key field
    peer_window: int = 64
    ack_delay: float = 0.1
    own_window: int = 64
    enforce_window: bool = False
    next_seq: int = 0
    last_received: int | None = None
    last_acked_by_us: int | None = None
    last_acked_by_peer: int | None = None
    ack_deadline: float | None = None
    unacked_in: int = 0  # delivered packets we have not acknowledged yet
    counters: dict[str, int] = field(default_factory=lambda: {
        "sent": 0, "received": 0, "duplicates": 0, "out_of_order": 0, "acks_sent": 0,
        "window_exceeded": 0, "window_full": 0})

    def _owed_ack(self) -> int | None:
        if self.last_received is None or self.last_received == self.last_acked_by_us:
            return None
        return self.last_received

    def in_flight(self) -> int:
        """Our data packets the peer has not acknowledged yet."""
        if self.last_acked_by_peer is None:
            return self.next_seq  # first sequence number is 0
        return (self.next_seq - self.last_acked_by_peer - 1) & 0xFFFFFFFF

    def encapsulate(self, ppp_frame: bytes) -> bytes | None:
        """The GRE packet for one PPP frame (None: dropped, peer's window full). Every data
        packet comes through here: in_flight() and _owed_ack() are written out inline."""
        seq, peer_acked = self.next_seq, self.last_acked_by_peer
        in_flight = seq if peer_acked is None else (seq - peer_acked - 1) & 0xFFFFFFFF
        if self.peer_window and in_flight >= self.peer_window:
            if self.enforce_window:
                self.counters["window_full"] += 1
                return None
            self.counters["window_exceeded"] += 1
        ack = self.last_received
        if ack is None or ack == self.last_acked_by_us:
            ack = None
        else:
            self.last_acked_by_us, self.ack_deadline, self.unacked_in = ack, None, 0
        self.next_seq = (seq + 1) & 0xFFFFFFFF
        self.counters["sent"] += 1
        return encode_data(self.peer_call_id, ppp_frame, seq, ack)

    def receive(self, packet: GREPacket, now: float) -> bytes | None:
        """The PPP frame to deliver, or None (ack-only, duplicate or late)."""
        return self.receive_data(packet.sequence, packet.ack, packet.payload, now)

    def receive_data(self, sequence: int | None, ack: int | None, payload: bytes,
                     now: float) -> bytes | None:
        """receive() on a packet's fields (header.decode_data's), without the object."""
        if ack is not None:
            if self.last_acked_by_peer is None or _newer(ack, self.last_acked_by_peer):
                self.last_acked_by_peer = ack
        if sequence is None:
            return None
        last = self.last_received
        if last is not None and not 0 < (sequence - last) & 0xFFFFFFFF < 0x80000000:
            key = "duplicates" if sequence == last else "out_of_order"
            self.counters[key] += 1
            return None
        self.last_received = sequence
        self.counters["received"] += 1
        self.unacked_in = unacked = self.unacked_in + 1
        if unacked >= max(1, self.own_window // 2):
            self.ack_deadline = now  # ack at the next timer tick, not after ack_delay
        elif self.ack_deadline is None:
            self.ack_deadline = now + self.ack_delay
        return payload

    def get_timer(self) -> float | None:
        return self.ack_deadline if self._owed_ack() is not None else None

    def handle_timer(self, now: float) -> bytes | None:
        """An ack-only packet when an ack is still owed at its deadline."""
        if self.ack_deadline is None or now < self.ack_deadline:
            return None
        self.ack_deadline = None
        ack = self._owed_ack()
        if ack is None:
            return None
        self.last_acked_by_us, self.unacked_in = ack, 0
        self.counters["acks_sent"] += 1
        return GREPacket(self.peer_call_id, b"", None, ack).encode()
