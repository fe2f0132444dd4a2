"""Enhanced GRE (RFC 2637 §4): header codec in scapy's eyes, and one call's seq/ack session
under loss, duplication, reordering and an idle receiver (ack-only packets)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import GRE

from tunnels.errors import RemoteProtocolError
from tunnels.gre.header import PROTOCOL_PPP, GREPacket
from tunnels.gre.session import GRESession


def pair():
    return GRESession(peer_call_id=0xB0B), GRESession(peer_call_id=0xA11)


def test_data_packet_decodes_in_scapy_as_enhanced_gre():
    a, _ = pair()
    raw = a.encapsulate(b"\xff\x03\xc0\x21hello")
    g = GRE(raw)
    assert (g.version, g.proto, g.key_present, g.seqnum_present) == (1, PROTOCOL_PPP, 1, 1)
    assert g.chksum_present == 0 and g.routing_present == 0 and g.recursion_control == 0
    assert (g.payload_len, g.call_id, g.sequence_number) == (9, 0xB0B, 0)
    assert g.acknum_present == 0


def test_ack_only_packet_decodes_in_scapy_with_ack_and_no_seq():
    a, b = pair()
    b.receive(GREPacket.decode(a.encapsulate(b"x")), 0.0)
    raw = b.handle_timer(b.get_timer())
    g = GRE(raw)
    assert (g.version, g.key_present, g.seqnum_present, g.acknum_present) == (1, 1, 0, 1)
    assert (g.payload_len, g.call_id, g.ack_number) == (0, 0xA11, 0)


def test_sequence_increases_by_one_and_acks_piggyback():
    a, b = pair()
    for i in range(3):
        p = GREPacket.decode(a.encapsulate(b"a%d" % i))
        assert p.sequence == i and p.ack is None
        assert b.receive(p, 0.0) == b"a%d" % i
    reply = GREPacket.decode(b.encapsulate(b"r"))
    assert reply.ack == 2  # the last one delivered, piggybacked
    assert b.get_timer() is None  # nothing owed any more: no ack-only packet
    a.receive(reply, 0.0)
    assert a.last_acked_by_peer == 2 and a.in_flight() == 0


def test_ack_only_after_delay_when_nothing_to_piggyback():
    a, b = pair()
    b.receive(GREPacket.decode(a.encapsulate(b"x")), 1.0)
    assert b.get_timer() == pytest.approx(1.1)
    assert b.handle_timer(1.05) is None  # too early
    ack = GREPacket.decode(b.handle_timer(1.1))
    assert (ack.sequence, ack.ack, ack.payload) == (None, 0, b"")
    assert b.get_timer() is None and b.counters["acks_sent"] == 1


def test_ack_at_once_when_half_our_window_waits():
    a, b = pair()
    b.own_window = 8
    for _ in range(4):
        b.receive(GREPacket.decode(a.encapsulate(b"x")), 5.0)
    assert b.get_timer() == 5.0
    assert GREPacket.decode(b.handle_timer(5.0)).ack == 3


def test_loss_never_acks_ahead_of_what_was_received():
    a, b = pair()
    packets = [GREPacket.decode(a.encapsulate(b"%d" % i)) for i in range(5)]
    for p in (packets[0], packets[1], packets[3]):  # 2 and 4 are lost
        b.receive(p, 0.0)
    assert GREPacket.decode(b.encapsulate(b"r")).ack == 3


def test_duplicates_and_late_packets_are_dropped_and_counted():
    a, b = pair()
    p0, p1, p2 = (GREPacket.decode(a.encapsulate(b"%d" % i)) for i in range(3))
    assert b.receive(p0, 0.0) == b"0"
    assert b.receive(p0, 0.0) is None
    assert b.receive(p2, 0.0) == b"2"
    assert b.receive(p1, 0.0) is None  # older than delivered: PPP copes with loss, not order
    assert b.counters == {**b.counters, "received": 2, "duplicates": 1, "out_of_order": 1}


def test_sequence_numbers_wrap_around_32_bits():
    a, b = pair()
    a.next_seq = 0xFFFFFFFF
    first = GREPacket.decode(a.encapsulate(b"x"))
    second = GREPacket.decode(a.encapsulate(b"y"))
    assert (first.sequence, second.sequence) == (0xFFFFFFFF, 0)
    assert b.receive(first, 0.0) == b"x" and b.receive(second, 0.0) == b"y"
    assert b.receive(first, 0.0) is None


def test_peer_window_counted_by_default_and_enforced_on_request():
    a, _ = pair()
    a.peer_window = 2
    assert all(a.encapsulate(b"x") is not None for _ in range(3))
    assert a.counters["window_exceeded"] == 1
    strict, _ = pair()
    strict.peer_window, strict.enforce_window = 2, True
    sent = [strict.encapsulate(b"x") for _ in range(3)]
    assert sent[2] is None and strict.counters["window_full"] == 1
    strict.receive(GREPacket(0xA11, b"", None, 1), 0.0)  # the peer acks both
    assert strict.encapsulate(b"x") is not None


@pytest.mark.parametrize("raw", [
    b"",
    b"\x30\x81\x88\x0b\x00",  # short
    bytes.fromhex("3001880b00000001"),  # S bit set, sequence number missing
    bytes.fromhex("2000880b00000001"),  # version 0: plain GRE
    bytes.fromhex("2001080000000001"),  # protocol IPv4
    bytes.fromhex("a001880b00000001"),  # checksum bit
    bytes.fromhex("3001880b0005000100000001ab"),  # payload length beyond the packet
    bytes.fromhex("2001880b0001000100"),  # payload without a sequence number
])
def test_malformed_gre_is_a_remote_protocol_error(raw):
    with pytest.raises(RemoteProtocolError):
        GREPacket.decode(raw)


@given(st.binary(max_size=40))
def test_any_bytes_decode_or_raise_remote_protocol_error(blob):
    try:
        p = GREPacket.decode(blob)
    except RemoteProtocolError:
        return
    assert isinstance(p, GREPacket)


@given(st.lists(st.integers(0, 40), max_size=60))
def test_any_arrival_order_delivers_strictly_increasing_and_acks_received(order):
    a, b = pair()
    packets = [GREPacket.decode(a.encapsulate(b"%d" % i)) for i in range(41)]
    delivered = [int(f) for i in order if (f := b.receive(packets[i], 0.0)) is not None]
    assert delivered == sorted(set(delivered))
    raw = b.encapsulate(b"r")
    ack = GREPacket.decode(raw).ack
    assert ack is None if not delivered else ack == delivered[-1]
