"""Helpers for the interop cases: the matrix as pytest parameters, and the wire checks of our
own pairs (conformance/pptp_wire.py, scapy) applied to a capture against a real peer.

Cells and the scenario checks live in topologies/interop.py, so `vpnlab interop` runs the same
cells outside pytest; what is here only asserts more on the captures.
"""

from __future__ import annotations

from collections import Counter

import pytest

from conformance import pptp_wire as w
from testbed import pcap
from topologies.interop import MATRIX, Cell
from topologies.interop_l2tp import RANDOM_PAYLOAD


def cells(protocol_peers: tuple[str, ...]) -> list:
    """pytest parameters with readable ids; not-applicable cells skip with their reason."""
    out = []
    for cell in MATRIX:
        if cell.peer not in protocol_peers:
            continue
        marks = [pytest.mark.skip(reason=f"not applicable: {cell.not_applicable}")] \
            if cell.not_applicable else []
        out.append(pytest.param(cell, id=cell.id, marks=marks))
    return out


def failed(results: list) -> list[str]:
    return [f"{r.name}: {r.detail}" for r in results if not r.passed]


def assert_pptp_wire(lab, cell: Cell) -> None:  # type: ignore[no-untyped-def]
    """RFC 2637 on our Internet-side capture, for every call of the cell (it dials twice)."""
    ours = lab.address("ours", "isp")
    control = w.control(lab, "ours", "isp")
    for _, msg in control:
        assert msg.magic_cookie == w.MAGIC_COOKIE and msg.type == 1
        assert msg.len == len(bytes(msg))
    requests = [m for _, m in control if int(m.ctrl_msg_type) == w.OCRQ]
    replies = [m for _, m in control if int(m.ctrl_msg_type) == w.OCRP]
    assert len(requests) == len(replies) == 2, [int(m.ctrl_msg_type) for _, m in control]
    for request, reply in zip(requests, replies, strict=True):
        assert reply.peer_call_id == request.call_id and reply.result_code == 1
    # the key of each GRE packet is the receiver's Call ID from the control connection
    announced = {int(m.call_id) for m in requests + replies}
    gre = [(src, w.gre_fields(raw)) for src, raw in w.gre(lab, "ours", "isp")]
    assert gre and {g["call_id"] for _, g in gre} <= announced
    # per sender and Call ID the sequence rises; it starts again only on a new call that
    # reuses the Call ID (pptp-linux starts at 0 on each control connection). The sender adds
    # 1 per packet, but a capture of a loaded machine may miss a few packets (seen on every
    # capture point at once), so only the rise is asserted from the capture.
    uses = Counter(int(m.call_id) for m in requests + replies)
    last: dict[tuple[str, int], int] = {}
    restarts: Counter[tuple[str, int]] = Counter()
    for src, g in gre:
        assert g["version"] == 1 and g["proto"] == 0x880B and g["key"]
        assert not (g["C"] or g["R"] or g["s"] or g["recur"] or g["flags"])
        assert g["length"] == len(g["payload"])
        assert (g["seq"] is not None) == bool(g["payload"])  # S iff there is a payload
        key = (src, g["call_id"])
        if g["seq"] is not None:
            if key not in last or g["seq"] <= last[key]:
                restarts[key] += 1
            last[key] = g["seq"]
    for (src, call), n in restarts.items():
        side = "ours" if src == ours else "theirs"
        assert n <= uses[call], f"{side} to call {call}: sequence fell back {n - 1} times " \
                                f"over {uses[call]} call(s)"
    rows = pcap.tshark_fields(lab.capture_path("ours", "isp"),
                              ["ppp.protocol", "_ws.malformed"], "gre",
                              pcap.TUNNEL_FRAMING_ONLY)
    assert not [r for r in rows if len(r) > 1 and r[1]], "tshark flags malformed frames"


def assert_l2tp_wire(lab, cell: Cell) -> None:  # type: ignore[no-untyped-def]
    """RFC 2661 §3.1 on our Internet-side capture, decoded with scapy, for both tunnels of the
    cell (it dials twice): control messages carry T, L and S, version 2 and a Length equal to
    the datagram; each sender's Ns rises by one per message on a tunnel (retransmissions
    repeat it); data messages name a tunnel announced by a control message."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2tp import L2TP

    packets = [p for p in pcap.read(lab.capture_path("ours", "isp"))
               if IP in p and UDP in p and 1701 in (p[UDP].sport, p[UDP].dport)]
    assert packets, "no L2TP datagram captured"
    control: dict[tuple[str, int], list[int]] = {}
    tunnels: set[int] = set()
    data_tunnels: set[int] = set()
    for p in packets:
        raw = bytes(p[UDP].payload)
        msg = L2TP(raw)
        flags = raw[0] << 8 | raw[1]
        assert flags & 0x000F == 2, f"version {flags & 0xF}"
        if not flags & 0x8000:
            data_tunnels.add(int(msg.tunnel_id))
            continue
        assert flags & 0x4000 and flags & 0x0800 and not flags & 0x0200, hex(flags)
        assert msg.len == len(raw), (msg.len, len(raw))
        tunnels.add(int(msg.tunnel_id))
        if len(raw) > 12:  # a ZLB acknowledges only; it does not take an Ns (§5.8)
            control.setdefault((p[IP].src, int(msg.tunnel_id)), []).append(int(msg.ns))
    for (src, tunnel), ns in control.items():
        steps = {b - a for a, b in zip(ns, ns[1:], strict=False)}
        assert steps <= {0, 1}, f"{src} on tunnel {tunnel}: Ns {ns}"
    assert data_tunnels and data_tunnels <= tunnels, (data_tunnels, tunnels)
    rows = pcap.tshark_fields(lab.capture_path("ours", "isp"), ["frame.number"],
                              "l2tp && _ws.malformed", options=RANDOM_PAYLOAD)
    assert not rows, f"tshark flags malformed L2TP frames: {rows[:3]}"


def run_cell(cell: Cell, assert_wire) -> None:  # type: ignore[no-untyped-def]
    """One cell in its lab: every check passes and ran (the last is the figures), then the
    protocol's own assertions on the capture."""
    from conformance.plugin import start_scenario
    from topologies import interop

    with start_scenario("interop", **cell.params) as lab:
        results = interop.checks(lab, lab.params)
        assert not failed(results), failed(results)
        assert results[-1].name == "figures", [r.name for r in results]
        assert_wire(lab, cell)
