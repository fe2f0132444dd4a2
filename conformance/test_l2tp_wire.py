"""L2TP's reliable control channel on the wire (RFC 2661 §5.8, §6.5), read from the server's
Internet-side capture by tshark and scapy: Ns/Nr, ZLB acknowledgements, a retransmission
provoked by dropping one datagram, and the Hello keepalive noticing a cut path.
"""

from __future__ import annotations

import json
import time

import pytest

from conformance import l2tp_wire as w
from conformance.plugin import start_scenario
from topologies import remote_access as ra

pytestmark = pytest.mark.netns


@pytest.fixture(scope="module")
def hung_up():
    """A tunnel brought up, used, and hung up by the client, with the final ZLB captured."""
    with start_scenario("remote-access", protocol="l2tp", encryption="none") as lab:
        assert lab.node("client").run(["ping", "-c3", "-i0.2", "-W2", ra.FILESERVER]).ok
        assert lab.node("client").daemons["vpnclient"].stop() == 0

        def final_zlb(msgs: list[w.Msg]) -> bool:
            stop = [m for m in msgs if m.type == w.StopCCN]
            return bool(stop) and any(m.type is None and m.nr == stop[-1].ns + 1 and
                                      m.frame > stop[-1].frame for m in msgs)
        yield lab, w.wait_control(lab, final_zlb)


def _directions(lab, msgs: list[w.Msg]) -> dict[str, list[w.Msg]]:
    server = lab.address("vpnsrv", "isp")
    return {"client to server": [m for m in msgs if m.src != server],
            "server to client": [m for m in msgs if m.src == server]}


def test_ns_counts_messages_and_zlbs_carry_the_next_ns(hung_up):
    """§5.8: Ns starts at 0 and increases by one per control message; a ZLB carries the Ns the
    next message will have and does not consume it."""
    lab, msgs = hung_up
    for direction, sent in _directions(lab, msgs).items():
        next_ns = 0
        for m in sent:
            assert m.ns == next_ns, f"{direction}: frame {m.frame} {m.name} Ns {m.ns}, " \
                                    f"expected {next_ns}"
            if m.type is not None:
                next_ns += 1
        assert next_ns >= 2, f"{direction}: only {next_ns} messages"


def test_nr_acknowledges_what_was_received(hung_up):
    """§5.8: Nr is the next Ns expected from the peer: never ahead of what the peer sent,
    never going back, and in the end covering every message the peer sent."""
    lab, msgs = hung_up
    server = lab.address("vpnsrv", "isp")
    for m in msgs:
        peer_sent = sum(1 for x in msgs if x.frame < m.frame and x.type is not None and
                        (x.src == server) != (m.src == server))
        assert m.nr <= peer_sent, f"frame {m.frame} {m.name}: Nr {m.nr} ahead of {peer_sent}"
    for direction, sent in _directions(lab, msgs).items():
        nrs = [m.nr for m in sent]
        assert nrs == sorted(nrs), f"{direction}: Nr went back: {nrs}"
    total = {d: sum(1 for m in sent if m.type is not None)
             for d, sent in _directions(lab, msgs).items()}
    last = {d: sent[-1].nr for d, sent in _directions(lab, msgs).items()}
    assert last["server to client"] == total["client to server"], (last, total)


def test_a_zlb_acknowledges_when_nothing_else_does(hung_up):
    """§5.8: the last message of an exchange (ICCN from the client, the client's final
    StopCCN) is acknowledged by a ZLB from the server, and each ZLB acknowledges something new."""
    lab, msgs = hung_up
    server = lab.address("vpnsrv", "isp")
    from_server = [m for m in msgs if m.src == server]
    for name in ("ICCN", "StopCCN"):
        m = next(x for x in msgs if x.name == name and x.src != server)
        acks = [x for x in from_server if x.frame > m.frame and x.nr == m.ns + 1]
        assert acks and acks[0].type is None, \
            f"{name} (Ns {m.ns}) first acknowledged by {acks[0].name if acks else 'nothing'}"
    assert not w.rfc_problems(msgs), w.rfc_problems(msgs)


def test_a_lost_sccrp_is_retransmitted_with_the_same_ns_and_message():
    """One SCCRP dropped before the client (iptables in its namespace, first datagram only):
    the server sends it again with the same Ns and the same AVPs, byte for byte (§5.8: only Nr
    may be updated), and the tunnel comes up."""
    with start_scenario("remote-access", protocol="l2tp", encryption="none") as lab:
        client = lab.node("client")
        assert client.daemons["vpnclient"].stop() == 0
        rule = ["INPUT", "-p", "udp", "--sport", "1701", "-m", "statistic", "--mode", "nth",
                "--every", "1000000", "--packet", "0", "-j", "DROP"]
        client.run(["iptables", "-I", *rule], check=True)
        ra.connect(lab, "client", lab.params)
        assert ra.status(lab, "client")["state"] == "up"
        assert client.run(["ping", "-c1", "-W2", ra.FILESERVER]).ok
        counters = client.run(["iptables", "-vnxL", "INPUT"], check=True).stdout
        assert [line.split()[0] for line in counters.splitlines() if "statistic" in line] \
            == ["1"], counters
        tid = ra.status(lab, "client")["tunnel_id"]
        sccrps = [m for m in w.control(lab) if m.type == w.SCCRP and m.tunnel == tid]
        assert len(sccrps) >= 2, [m.name for m in w.control(lab)]
        first, again = sccrps[:2]
        assert again.ns == first.ns == 0 and again.payload == first.payload
        assert again.nr >= first.nr
        assert 0.5 < again.time - first.time < 2.5, "not the 1 s retransmission timer"
        tunnels = ra.status(lab, "vpnsrv")["stack"]["tunnels"]
        mine = [t for t in tunnels if t["peer_tunnel_id"] == tid]
        assert mine and mine[0]["channel"]["retransmitted"] >= 1, mine


def test_hello_notices_a_cut_path_and_both_ends_clean_up():
    """§6.5 with LCP echo off: a Hello every 2 s of silence; with the path cut (every datagram
    dropped in the ISP router, carrier up), its retransmissions go unanswered, both ends give
    the tunnel up after the retransmission cycle and clean up."""
    with start_scenario("remote-access", protocol="l2tp", encryption="none", hello="2",
                        echo="0") as lab:
        mark = len(w.events(lab, "vpnsrv"))
        lab.node("isp").run(["iptables", "-I", "FORWARD", "-j", "DROP"], check=True)
        client = lab.node("client")
        t0 = time.monotonic()
        assert client.daemons["vpnclient"].wait(50) == 1
        elapsed = time.monotonic() - t0
        down = [e for e in w.events(lab, "client") if e["event"] == "tunnel-down"][-1]
        assert "control channel failed" in down["reason"], down
        # Hello after 2 s, then 1+2+4+8+8 s of retransmissions and 8 s more (§5.8's cap)
        assert 20 < elapsed < 45, f"gave up after {elapsed:.1f}s"
        server_down = w.wait_event(lab, "vpnsrv", "session-down", timeout=10, after=mark)
        assert "control channel failed" in server_down["reason"], server_down
        assert ra.status(lab, "vpnsrv")["sessions"] == []
        assert not client.run(["ip", "link", "show", "vpn0"]).ok
        routes = client.run(["ip", "route"]).stdout
        assert "vpn0" not in routes and "10.10.0.0/24" not in routes, routes
        # on the wire: the server's first Hello and its 5 retransmissions, one Ns, the same
        # message, 1 s doubling up to the 8 s cap (§5.8); later Hellos (one per 2 s without a
        # message from the peer) take the next Ns each
        hellos = [m for m in w.control(lab) if m.type == w.HELLO and
                  m.src == lab.address("vpnsrv", "isp")]
        assert hellos and len({m.payload for m in hellos}) == 1
        first = [m for m in hellos if m.ns == hellos[0].ns]
        gaps = [round(b.time - a.time) for a, b in zip(first, first[1:], strict=False)]
        assert gaps == [1, 2, 4, 8, 8], [(m.frame, m.ns, m.time) for m in first]
        later = sorted({m.ns for m in hellos})
        assert later == list(range(later[0], later[0] + len(later))), later


def test_a_lost_ack_of_the_servers_stopccn_is_given_again_while_the_client_lingers():
    """§5.7: "the recipient of a StopCCN MUST send a ZLB ACK ... and maintain enough control
    connection state to properly accept StopCCN retransmissions over at least a full
    retransmission cycle". A scripted LNS (plain sockets in the server's node, our server
    stopped) brings a tunnel up and stops it; the client's first ZLB is dropped in its own
    namespace, so the LNS sends the StopCCN again (same Ns) and the client, lingering,
    acknowledges it again. The client then exits 1 when its --stop-linger (4 s) is over."""
    with start_scenario("remote-access", protocol="l2tp", encryption="none") as lab:
        client, server = lab.node("client"), lab.node("vpnsrv")
        assert client.daemons["vpnclient"].stop() == 0
        assert server.daemons["vpnserver"].stop() == 0
        # the first ZLB the client sends (IP 20 + UDP 8 + L2TP header 12 = 40 octets)
        rule = ["OUTPUT", "-p", "udp", "--dport", "1701", "-m", "length", "--length", "40",
                "-m", "quota", "--quota", "40", "-j", "DROP"]
        client.run(["iptables", "-I", *rule], check=True)
        lns = w.scripted_lns(lab)
        try:
            ra.connect(lab, "client", lab.params, extra=("--stop-linger", "4"), wait=False)
            out, _ = lns.communicate(timeout=45)
        finally:
            if lns.poll() is None:
                lns.kill()
                lns.wait(5)
        report = json.loads(out.strip().splitlines()[-1])
        assert "error" not in report, report
        daemon = client.daemons["vpnclient"]
        assert daemon.running(), "the client did not linger"
        assert daemon.wait(10) == 1
        exited = time.monotonic()
        counters = client.run(["iptables", "-vnxL", "OUTPUT"], check=True).stdout
        assert [line.split()[0] for line in counters.splitlines() if "quota" in line] \
            == ["1"], counters
        # what the LNS sent and got, by its clock (CLOCK_MONOTONIC, as ours)
        (t_stop, stop), (t_again, again) = report["sent"][1:]
        # the same message: header up to Ns and every AVP alike, only Nr may differ (§5.8)
        assert stop[:20] == again[:20] and stop[24:] == again[24:], (stop, again)
        acks = [(t, bytes.fromhex(h)) for t, h in report["got"] if len(h) == 24]
        assert not [t for t, _ in acks if t_stop <= t < t_again], "the first ack got through"
        later = [(t, d) for t, d in acks if t >= t_again]
        assert later and later[0][0] - t_again < 0.5, report["got"]
        stop_ns = int(stop[16:20], 16)
        assert int.from_bytes(later[0][1][10:12], "big") == (stop_ns + 1) & 0xFFFF
        # the linger is the client's: 4 s after the StopCCN, not the 8 s stop grace
        assert 3.5 < exited - t_stop < 7.0, f"exited {exited - t_stop:.1f}s after StopCCN"
        events = w.events(lab, "client")
        down = [e for e in events if e["event"] == "tunnel-down"][-1]
        assert "peer stopped the tunnel" in down["reason"], down
        linger = [e for e in events if e["event"] == "stop-linger"]
        assert linger and linger[0]["seconds"] == 4, events
        # tshark on the server's link: the StopCCN twice with one Ns, then the client's ZLB
        lns_address = lab.address("vpnsrv", "isp")

        def scripted(ms: list[w.Msg]) -> list[w.Msg]:  # from the client's last SCCRQ on
            start = max(m.frame for m in ms if m.type == w.SCCRQ)
            return [m for m in ms if m.frame >= start]
        msgs = scripted(w.wait_control(lab, lambda ms: sum(
            m.type == w.StopCCN and m.src == lns_address for m in scripted(ms)) >= 2))
        stops = [m for m in msgs if m.type == w.StopCCN]
        assert len(stops) == 2 and stops[0].ns == stops[1].ns == stop_ns
        assert {m.src for m in stops} == {lns_address}
        zlbs = [m for m in msgs if m.type is None and m.src != lns_address
                and m.frame > stops[0].frame]
        assert len(zlbs) == 1 and zlbs[0].frame > stops[1].frame and zlbs[0].nr == stop_ns + 1
