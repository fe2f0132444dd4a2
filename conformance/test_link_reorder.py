"""Reordering on a shaped link, seen from the receiver's capture (scapy).

Two hosts and one link shaped with a 20 ms delay and netem-style reordering. The sender sends
numbered UDP datagrams 1 ms apart (so about 20 are in flight); the receiver's capture gives the
arrival order. A datagram arrived out of order when an earlier-numbered one arrived after it:
exactly the frames the link sent ahead of the delay, so the fraction should be the configured
one (with gap 1; 1 / (N - 1 + 100 / pct) with gap N).
"""

from __future__ import annotations

import sys
import textwrap

import pytest

from testbed import pcap
from testbed.lab import Lab
from testbed.model import LabSpec, LinkSpec, NodeSpec
from testbed.shaping import LinkShape, wire_control
from testbed.wire import send_wire_control

pytestmark = pytest.mark.netns

PORT = 9999
COUNT = 800
SEED = 2026  # the wire's choices are repeatable; the measured fraction still is a sample
SEND = textwrap.dedent("""
    import socket, sys, time
    dst, port, count, gap = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    t = time.monotonic()
    for i in range(count):
        s.sendto(b"vpnlab-seq %06d" % i, (dst, port))
        t += gap
        ahead = t - time.monotonic()  # read the clock once: a second read may be past t
        if ahead > 0:
            time.sleep(ahead)
""")


def _spec(shape: LinkShape) -> LabSpec:
    return LabSpec("reorder", (NodeSpec("snd"), NodeSpec("rcv")),
                   (LinkSpec("snd", "rcv", "10.99.0.1/24", "10.99.0.2/24", shape),),
                   "a sender and a receiver on one shaped link")


@pytest.fixture(scope="module")
def reorder_lab():
    shape = LinkShape(delay_ms=20, reorder_pct=25, seed=SEED)
    with Lab(_spec(shape)) as lab:
        # resolve ARP first: datagrams waiting for it would leave in a burst
        lab.node("snd").run(["ping", "-c", "2", "-i", "0.2", "-W", "2", "-n",
                             lab.address("rcv")], timeout=15, check=True)
        yield lab


def _reshape(lab: Lab, shape: LinkShape) -> None:
    """A run-time shape change. `set_shape` hands a running wire delay, jitter, loss and rate;
    the reorder fields go in the same control message `wire_control` builds (harmless twice)."""
    link = lab.link("snd", "rcv")
    link.set_shape(shape)
    if link.link_node in lab._wires:
        send_wire_control(str(lab.run_dir / f"{link.link_node}.ctl"), **wire_control(shape))


def _send_and_capture(lab: Lab, tag: int) -> list[int]:
    """Numbers of the datagrams of this round in arrival order at the receiver."""
    port = PORT + tag
    lab.node("snd").run([sys.executable, "-c", SEND, lab.address("rcv"), str(port),
                         str(COUNT), "0.001"], timeout=60, check=True)
    from scapy.layers.inet import IP, UDP

    def mine(pkts: list) -> list[int]:
        return [int(bytes(p[UDP].payload)[11:17]) for p in pkts
                if IP in p and UDP in p and p[UDP].dport == port]

    packets = pcap.wait_for(lab.capture_path("rcv", "snd"), lambda p: len(mine(p)) >= COUNT,
                            timeout=5.0)
    return mine(packets)


def out_of_order(seqs: list[int]) -> int:
    """Datagrams that arrived before some earlier-numbered one (they overtook it)."""
    count, lowest_later = 0, None
    for seq in reversed(seqs):
        if lowest_later is not None and lowest_later < seq:
            count += 1
        lowest_later = seq if lowest_later is None else min(lowest_later, seq)
    return count


def test_out_of_order_counts_overtakers_only():
    assert out_of_order([0, 1, 2, 3]) == 0
    assert out_of_order([0, 3, 1, 2, 4]) == 1  # 3 went ahead of 1 and 2
    assert out_of_order([2, 5, 0, 1, 3, 4]) == 2


def _measure(lab: Lab, tag: int, record_property) -> tuple[float, int]:
    before = lab.link("snd", "rcv").stats()["ab"]["reordered"]
    seqs = _send_and_capture(lab, tag)
    assert sorted(seqs) == list(range(COUNT)), "datagrams lost or duplicated on a lossless link"
    wire_count = lab.link("snd", "rcv").stats()["ab"]["reordered"] - before
    fraction = out_of_order(seqs) / len(seqs)
    print(f"round {tag}: {out_of_order(seqs)} of {len(seqs)} out of order ({fraction:.3f}); "
          f"the wire reordered {wire_count} frames A→B")
    record_property(f"reorder_fraction_{tag}", round(fraction, 4))
    record_property(f"wire_reordered_{tag}", wire_count)
    return fraction, wire_count


def test_reorder_25_percent_arrives_out_of_order(reorder_lab, record_property):
    fraction, wire_count = _measure(reorder_lab, 1, record_property)
    # 800 draws at p = 0.25: sd 1.5 points; the bound is four of them
    assert 0.19 <= fraction <= 0.31, f"{fraction:.3f} out of order for 25% configured"
    # every datagram the wire sent ahead overtook one still in flight (20 ms, 1 ms apart)
    assert abs(wire_count - fraction * COUNT) <= 3


def test_reorder_gap_follows_netem(reorder_lab, record_property):
    _reshape(reorder_lab, LinkShape(delay_ms=20, reorder_pct=50, reorder_gap=3, seed=SEED))
    fraction, _ = _measure(reorder_lab, 2, record_property)
    assert 0.19 <= fraction <= 0.31, f"{fraction:.3f} out of order for 1/(2 + 2) = 25%"


def test_no_reorder_means_none_out_of_order(reorder_lab, record_property):
    _reshape(reorder_lab, LinkShape(delay_ms=20, seed=SEED))
    fraction, wire_count = _measure(reorder_lab, 3, record_property)
    assert fraction == 0 and wire_count == 0
