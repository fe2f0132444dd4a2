"""L2TPv2 control channel reliable delivery (RFC 2661 §5.8): two channels paired over an
in-memory link with a virtual clock, under loss, reordering and duplication; the exact
retransmission schedule and failure; ZLB acknowledgements; windows; sequence wrap-around."""

from __future__ import annotations

import ast
import heapq
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tunnels.l2tp.reliable as reliable_module
from tunnels.errors import LocalProtocolError
from tunnels.l2tp.reliable import Outbound, ReliableChannel


def transfer(a, b, now, drop=()):
    """Put a's outbound(now) on the wire to b, dropping the packets whose index is in `drop`;
    returns (what a sent, what b delivered)."""
    sent = a.outbound(now)
    delivered = []
    for i, p in enumerate(sent):
        if i not in drop:
            delivered += b.receive(p.ns, p.nr, p.payload, now)
    return sent, delivered


class Link:
    """One direction of a lossy wire: each packet is lost, or arrives once or twice after a
    random delay (so packets overtake each other), from a seeded generator."""

    def __init__(self, rng, loss=0.0, duplicate=0.0, delay=(0.01, 0.3)):
        self.rng, self.loss, self.duplicate, self.delay = rng, loss, duplicate, delay
        self.in_transit: list[tuple[float, int, Outbound]] = []
        self.count = 0

    def put(self, packets, now):
        for p in packets:
            if self.rng.random() < self.loss:
                continue
            for _ in range(2 if self.rng.random() < self.duplicate else 1):
                self.count += 1
                heapq.heappush(self.in_transit, (now + self.rng.uniform(*self.delay),
                                                 self.count, p))

    def next_arrival(self):
        return self.in_transit[0][0] if self.in_transit else None

    def arrivals(self, now):
        while self.in_transit and self.in_transit[0][0] <= now:
            yield heapq.heappop(self.in_transit)[2]


def run_until_quiet(a, b, ab, ba, now, delivered, max_steps=20000):
    """Drive both channels and both links until nothing is in flight, owed or held; bounded.
    `delivered` maps each channel to the payloads it has delivered. Returns the clock."""
    for _ in range(max_steps):
        for dst, link in ((b, ab), (a, ba)):
            for p in link.arrivals(now):
                delivered[dst] += dst.receive(p.ns, p.nr, p.payload, now)
        for ch, link in ((a, ab), (b, ba)):
            ch.handle_timer(now)
            link.put(ch.outbound(now), now)
            assert ch.unacknowledged() <= ch.peer_window  # §5.8: never beyond the window
        if all(ch.idle() and not ch.ack_pending() for ch in (a, b)) and not (
                ab.in_transit or ba.in_transit):
            return now
        assert a.failed is None and b.failed is None
        times = [t for t in (a.get_timer(), b.get_timer(), ab.next_arrival(),
                             ba.next_arrival()) if t is not None]
        assert times, "stalled: nothing scheduled but not quiet"
        now = max(now, min(times))
    raise AssertionError("not quiet after max_steps")


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("loss", [0.1, 0.3])
def test_every_message_delivered_once_in_order_under_loss_reordering_duplication(loss, seed):
    rng = random.Random(seed)
    # Enough retransmissions that 30% loss each way cannot exhaust them: this test is about
    # delivery, the failure path has its own test.
    a, b = ReliableChannel(max_retransmits=30), ReliableChannel(max_retransmits=30)
    ab, ba = (Link(rng, loss=loss, duplicate=0.1) for _ in range(2))
    sent_by_a = [b"a-%d" % i for i in range(40)]
    sent_by_b = [b"b-%d" % i for i in range(25)]
    for m in sent_by_a:
        a.send(m, 0.0)
    for m in sent_by_b:
        b.send(m, 0.0)
    delivered = {a: [], b: []}
    run_until_quiet(a, b, ab, ba, 0.0, delivered)
    assert delivered[b] == sent_by_a and delivered[a] == sent_by_b
    assert a.failed is None and b.failed is None
    assert a.counters["acked"] == 40 and b.counters["acked"] == 25
    assert a.counters["retransmitted"] > 0 and b.counters["duplicates"] > 0


def test_retransmission_schedule_doubles_to_the_cap_then_fails():
    a = ReliableChannel()
    a.send(b"SCCRQ", 0.0)
    [original] = a.outbound(0.0)
    assert original == Outbound(0, 0, b"SCCRQ", False)
    times = []
    while (t := a.get_timer()) is not None and a.failed is None:
        a.handle_timer(t)
        out = a.outbound(t)
        if out:
            times.append(t)
            # byte-identical: same Ns, Nr (nothing arrived meanwhile) and payload (§5.8)
            assert out == [Outbound(original.ns, original.nr, original.payload, True)]
    assert times == [1.0, 3.0, 7.0, 15.0, 23.0]  # intervals 1, 2, 4, 8, 8 s
    assert [b - a for a, b in zip([0.0, *times], [*times, 31.0], strict=True)] == [
        1, 2, 4, 8, 8, 8]  # and the failure one capped timeout after the last
    assert a.failed == "no acknowledgement of control message Ns=0 after 5 retransmissions"
    assert a.counters["retransmitted"] == 5 and a.counters["failures"] == 1
    assert a.get_timer() is None and a.outbound(100.0) == []  # nothing more after failure
    with pytest.raises(LocalProtocolError):
        a.send(b"HELLO", 100.0)
    assert a.linger_time() == 31.0


def test_failure_message_names_the_unacknowledged_ns():
    a = ReliableChannel(max_retransmits=2)
    a.next_ns = 7
    a.send(b"x", 0.0)
    a.outbound(0.0)
    for t in (1.0, 3.0, 7.0):
        a.handle_timer(t)
        a.outbound(t)
    assert a.failed == "no acknowledgement of control message Ns=7 after 2 retransmissions"


def test_retransmission_carries_the_updated_nr_when_something_arrived_meanwhile():
    a, b = ReliableChannel(), ReliableChannel()
    a.send(b"ICRQ", 0.0)
    [first] = a.outbound(0.0)  # lost
    b.send(b"HELLO", 0.0)
    transfer(b, a, 0.0)  # a now expects Ns=1 from b
    a.handle_timer(1.0)
    [again] = a.outbound(1.0)
    # RFC 2661 §5.8: "the same Ns value, but the Nr value MUST be updated"
    assert (again.ns, again.payload, again.retransmission) == (first.ns, first.payload, True)
    assert (first.nr, again.nr) == (0, 1)


def test_zlb_after_ack_delay_when_nothing_goes_back():
    a, b = ReliableChannel(), ReliableChannel()
    a.send(b"SCCCN", 1.0)
    assert transfer(a, b, 1.0)[1] == [b"SCCCN"]
    assert b.get_timer() == pytest.approx(1.1)
    assert b.outbound(1.05) == []  # too early
    b.handle_timer(1.1)
    [zlb] = b.outbound(1.1)
    assert zlb == Outbound(0, 1, b"", False)  # Ns: the next one b would use (§5.8)
    assert b.counters["zlb_sent"] == 1 and b.get_timer() is None and b.outbound(2.0) == []
    assert a.receive(zlb.ns, zlb.nr, zlb.payload, 1.2) == []
    assert a.idle() and a.counters["zlb_received"] == 1 and a.counters["acked"] == 1
    assert a.get_timer() is None  # a ZLB is never acknowledged itself


def test_reply_piggybacks_the_ack_and_no_zlb_follows():
    a, b = ReliableChannel(), ReliableChannel()
    a.send(b"SCCRQ", 0.0)
    transfer(a, b, 0.0)
    b.send(b"SCCRP", 0.05)
    [reply] = b.outbound(0.05)
    assert (reply.ns, reply.nr, reply.payload) == (0, 1, b"SCCRP")
    assert b.get_timer() == pytest.approx(1.05)  # its retransmission, no ZLB at 0.1
    b.handle_timer(0.1)
    assert b.outbound(0.1) == [] and b.counters["zlb_sent"] == 0
    assert a.receive(reply.ns, reply.nr, reply.payload, 0.1) == [b"SCCRP"]
    assert a.idle()


def test_duplicate_is_not_delivered_and_acknowledged_again():
    a, b = ReliableChannel(), ReliableChannel()
    a.send(b"ICRQ", 0.0)
    transfer(a, b, 0.0)
    b.handle_timer(0.1)
    b.outbound(0.1)  # the ZLB is lost
    a.handle_timer(1.0)
    sent, delivered = transfer(a, b, 1.0)
    assert sent[0].retransmission and delivered == []
    assert b.counters["duplicates"] == 1 and b.counters["delivered"] == 1
    assert b.get_timer() == pytest.approx(1.1)  # §5.8: receipt of duplicates MUST be acked
    b.handle_timer(1.1)
    [zlb] = b.outbound(1.1)
    a.receive(zlb.ns, zlb.nr, zlb.payload, 1.1)
    assert a.idle() and a.get_timer() is None


def test_out_of_order_messages_are_buffered_and_delivered_when_the_gap_fills():
    b = ReliableChannel(receive_window=4)
    assert b.receive(2, 0, b"m2", 0.0) == [] and b.receive(3, 0, b"m3", 0.0) == []
    assert b.receive(3, 0, b"m3", 0.0) == []  # again while buffered
    assert b.counters["buffered"] == 2 and b.counters["duplicates"] == 1
    assert b.get_timer() is None  # Nr cannot name past the gap: nothing to ack yet
    assert b.receive(0, 0, b"m0", 0.0) == [b"m0"]
    assert b.receive(1, 0, b"m1", 0.0) == [b"m1", b"m2", b"m3"]
    assert b.expected_nr == 4 and b.counters["delivered"] == 4


def test_beyond_our_receive_window_is_dropped_and_counted():
    b = ReliableChannel(receive_window=4)
    assert b.receive(4, 0, b"too far", 0.0) == []
    assert b.receive(32767, 0, b"far too far", 0.0) == []
    assert b.counters["out_of_window"] == 2 and b.counters["buffered"] == 0
    assert b.receive(0, 0, b"m0", 0.0) == [b"m0"] and b.expected_nr == 1


def test_zlb_is_never_delivered_and_its_ns_does_not_move_our_nr():
    b = ReliableChannel()
    assert b.receive(5, 0, b"", 0.0) == []
    assert b.expected_nr == 0 and b.counters["zlb_received"] == 1
    assert b.get_timer() is None and b.outbound(1.0) == []


def test_peer_window_holds_messages_until_acks_open_it():
    a = ReliableChannel()  # peer window 4 until set_peer_window (§5.8 default)
    for i in range(10):
        assert a.send(b"m%d" % i, 0.0) == i
    assert [p.ns for p in a.outbound(0.0)] == [0, 1, 2, 3]
    assert a.unacknowledged() == 4 and a.held() == 6 and a.counters["held_by_window"] == 6
    assert a.outbound(0.1) == []
    a.receive(0, 2, b"", 0.2)  # ZLB acknowledging Ns 0 and 1
    assert a.counters["acked"] == 2
    assert [p.ns for p in a.outbound(0.2)] == [4, 5]
    a.set_peer_window(1)
    a.receive(0, 5, b"", 0.3)  # acks 2..4: one (5) in flight, window of 1 is full
    assert a.outbound(0.3) == [] and a.unacknowledged() == 1
    a.receive(0, 6, b"", 0.4)
    assert [p.ns for p in a.outbound(0.4)] == [6]


def test_zlb_ns_is_the_next_ns_on_the_wire_while_messages_are_held():
    a = ReliableChannel(peer_window=1)
    a.send(b"m0", 0.0)
    a.send(b"m1", 0.0)
    a.outbound(0.0)
    a.receive(0, 0, b"peer", 0.0)
    a.handle_timer(0.1)  # m0's retransmission is not due until 1.0
    assert a.outbound(0.1) == [Outbound(1, 1, b"", False)]


@pytest.mark.parametrize("size", [0, -1, 65536])
def test_invalid_peer_window_is_refused(size):
    with pytest.raises(LocalProtocolError):
        ReliableChannel().set_peer_window(size)


def test_nr_acknowledging_more_than_we_sent_is_ignored_and_counted():
    a = ReliableChannel(peer_window=1)
    a.send(b"m0", 0.0)
    a.send(b"m1", 0.0)  # held: never on the wire
    a.outbound(0.0)
    a.receive(0, 2, b"", 0.1)
    assert a.counters["nr_beyond_sent"] == 1 and a.unacknowledged() == 1 and a.held() == 1
    a.receive(0, 0, b"", 0.1)  # stale: acknowledges nothing, not an error
    assert a.counters["nr_beyond_sent"] == 1 and a.counters["acked"] == 0
    a.receive(0, 1, b"", 0.2)
    assert a.counters["acked"] == 1 and [p.ns for p in a.outbound(0.2)] == [1]


def test_sequence_numbers_wrap_around_16_bits():
    a, b = ReliableChannel(), ReliableChannel()
    a.next_ns = b.expected_nr = 65534
    assert [a.send(b"w%d" % i, 0.0) for i in range(4)] == [65534, 65535, 0, 1]
    sent, delivered = transfer(a, b, 0.0, drop={1})  # 65535 lost: 0 and 1 wait behind it
    assert delivered == [b"w0"] and b.counters["buffered"] == 2
    b.handle_timer(0.1)
    [zlb], _ = transfer(b, a, 0.1)
    assert zlb.nr == 65535 and a.counters["acked"] == 1
    a.handle_timer(1.0)
    sent, delivered = transfer(a, b, 1.0)
    assert [p.ns for p in sent] == [65535, 0, 1]
    assert delivered == [b"w1", b"w2", b"w3"] and b.expected_nr == 2
    assert b.receive(65535, 0, b"w1", 1.0) == [] and b.counters["duplicates"] >= 1
    b.handle_timer(1.1)
    [zlb] = b.outbound(1.1)
    a.receive(zlb.ns, zlb.nr, zlb.payload, 1.1)
    assert zlb.nr == 2 and a.idle()


def test_empty_payload_cannot_be_sent():
    with pytest.raises(LocalProtocolError):
        ReliableChannel().send(b"", 0.0)


def test_retransmit_cap_below_8_seconds_is_refused():
    with pytest.raises(ValueError):
        ReliableChannel(retransmit_cap=4.0)  # §5.8: the cap MUST be no less than 8 s


def test_module_is_sans_io():
    tree = ast.parse(Path(reliable_module.__file__).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert not imported & {"socket", "time", "asyncio", "os", "subprocess", "threading"}


@given(st.lists(st.tuples(st.integers(0, 40) | st.integers(0, 65535), st.integers(0, 65535),
                          st.booleans()),
                max_size=80))
def test_any_received_sequence_never_raises_and_delivers_each_once_in_order(packets):
    b = ReliableChannel(receive_window=8)
    b.next_ns = 30000
    b.send(b"ours", 0.0)
    b.outbound(0.0)
    delivered = []
    for t, (ns, nr, zlb) in enumerate(packets):
        delivered += b.receive(ns, nr, b"" if zlb else b"%d" % ns, float(t))
        b.handle_timer(float(t))
        b.outbound(float(t))
    assert delivered == [b"%d" % i for i in range(len(delivered))]
    assert b.expected_nr == len(delivered)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32), st.floats(0.0, 0.4), st.floats(0.0, 0.3), st.integers(1, 8),
       st.integers(0, 65535))
def test_any_lossy_link_delivers_everything_once_in_order(seed, loss, duplicate, window, first):
    rng = random.Random(seed)  # genuine randomness: hypothesis' own would learn to lose all
    a = ReliableChannel(peer_window=window, max_retransmits=40)
    b = ReliableChannel(receive_window=window, max_retransmits=40)
    a.next_ns = b.expected_nr = first  # anywhere in the sequence space, wrap included
    ab, ba = Link(rng, loss, duplicate), Link(rng, loss, duplicate)
    messages = [b"m%d" % i for i in range(12)]
    for m in messages:
        a.send(m, 0.0)
    delivered = {a: [], b: []}
    run_until_quiet(a, b, ab, ba, 0.0, delivered)
    assert delivered[b] == messages and delivered[a] == [] and a.failed is None
