"""Negative cases for the L2TP server (RFC 2661): a wrong tunnel secret, and hand-made control
messages sent from inside the client's node, each answered as the RFC says (StopCCN result and
error codes, decoded by scapy and the §4.1 layout), while the tunnel that is already up keeps
carrying traffic.
"""

from __future__ import annotations

import time

import pytest

from conformance import l2tp_wire as w
from conformance.plugin import start_scenario
from topologies import remote_access as ra

pytestmark = pytest.mark.netns


def test_wrong_tunnel_secret_gets_stopccn_result_4_and_others_stay_up():
    """§5.1.1: the Challenge Response does not match: StopCCN result 4 (not authorized), the
    client exits 1 naming tunnel authentication; the other client's tunnel is untouched."""
    with start_scenario("remote-access", protocol="l2tp", encryption="none",
                        tunnel_secret="right-s3cret", nat="pptp-helper", clients="2") as lab:
        daemon = lab.node("client2").daemons["vpnclient"]
        assert daemon.stop() == 0
        ra.connect(lab, "client2", lab.params, user="bob",
                   extra=("--tunnel-secret", "wrong-s3cret"))
        assert lab.node("client2").daemons["vpnclient"].wait(20) == 1
        down = [e for e in w.events(lab, "client2") if e["event"] == "tunnel-down"][-1]
        assert "tunnel authentication" in down["reason"], down
        stops = w.wait_control(lab, lambda ms: any(m.type == w.StopCCN and m.result == 4
                                                   for m in ms))
        assert [m.result for m in stops if m.type == w.StopCCN][-1] == 4
        assert not lab.node("client2").run(["ip", "link", "show", "vpn0"]).ok
        assert lab.node("client").run(["ping", "-c1", "-W2", ra.FILESERVER]).ok
        assert len(ra.status(lab, "vpnsrv")["sessions"]) == 1


@pytest.fixture(scope="module")
def server_lab():
    with start_scenario("remote-access", protocol="l2tp", encryption="none") as lab:
        yield lab


@pytest.fixture
def lab(server_lab):
    """After each case: the established tunnel still carries traffic and no input made the
    server's pump count a stack error."""
    yield server_lab
    ping = server_lab.node("client").run(["ping", "-c1", "-W2", ra.FILESERVER])
    assert ping.ok, "the server stopped serving the established tunnel"
    assert ra.status(server_lab, "client")["state"] == "up"
    assert ra.status(server_lab, "vpnsrv")["pumps"]["l2tp"]["stack_errors"] == 0


def _sccrq(tid: int, **kw) -> bytes:
    return w.packet(0, 0, 0, 0, w.sccrq(tid, **kw))


def _stop(exchange: w.Exchange) -> tuple[int, int | None]:
    stops = exchange.of_type(w.StopCCN)
    assert stops, f"no StopCCN: {[t for _, _, _, t, _ in exchange.messages()]}"
    return w.result_code(stops[0])


def test_wrong_protocol_version_gets_stopccn_result_5(lab):
    """§4.4.2: result 5, unsupported protocol version (the header is v2, the AVP says 2.0)."""
    ex = w.raw_exchange(lab, [(_sccrq(0x501, version=0x0200), 0.5), (w.zlb(1, 1), 0)])
    assert _stop(ex)[0] == 5
    assert not ex.of_type(w.SCCRP)


def test_unknown_mandatory_avp_gets_stopccn_result_2_error_8(lab):
    """§4.1: an unrecognized AVP with M set tears the tunnel down: general error 8."""
    bad = w.avp(200, b"vpnlab", mandatory=True)
    ex = w.raw_exchange(lab, [(_sccrq(0x502, extra=bad), 0.5), (w.zlb(1, 1), 0)])
    assert _stop(ex) == (2, 8)
    assert not ex.of_type(w.SCCRP)


def test_unknown_optional_avp_is_ignored(lab):
    """§4.1: an unrecognized AVP without M is ignored: the SCCRP comes back."""
    odd = w.avp(200, b"vpnlab", mandatory=False) + w.avp(1, b"v", mandatory=False, vendor=9)
    ex = w.raw_exchange(lab, [(_sccrq(0x503, extra=odd), 0.5), (w.stop_ccn(0x503, 1, 1), 0.5)])
    sccrp = ex.of_type(w.SCCRP)
    assert sccrp and w.ASSIGNED_TUNNEL_ID in sccrp[0]
    assert not ex.of_type(w.StopCCN)


def test_message_for_an_unknown_tunnel_gets_stopccn_result_2_error_1(lab):
    """§4.4.2 error 1: no control connection exists yet for this LAC-LNS pair."""
    icrq = w.message(w.ICRQ, w.avp(w.ASSIGNED_SESSION_ID, w.u16(5)),
                     w.avp(w.CALL_SERIAL_NUMBER, w.u32(1)))
    ex = w.raw_exchange(lab, [(w.packet(4242, 0, 3, 0, icrq), 0)])
    assert _stop(ex) == (2, 1)


def _tunnels_from(lab, port: int) -> list[dict]:
    tunnels = ra.status(lab, "vpnsrv")["stack"]["tunnels"]
    return [t for t in tunnels if t["peer"][1] == port]


def test_a_retransmitted_sccrq_makes_no_second_tunnel(lab):
    """§5.8: the same SCCRQ again (same Ns) is a duplicate: acknowledged, not a new tunnel."""
    sccrq = _sccrq(0x504)
    ex = w.raw_exchange(lab, [(sccrq, 0.3), (sccrq, 0.5), (w.stop_ccn(0x504, 1, 1), 0.3)])
    replies = ex.messages()
    assert {ns for ns, _, _, t, _ in replies if t == w.SCCRP} == {0}
    assert len({a[w.ASSIGNED_TUNNEL_ID] for a in ex.of_type(w.SCCRP)}) == 1
    deadline = time.monotonic() + 3
    while not _tunnels_from(lab, ex.port) and time.monotonic() < deadline:
        time.sleep(0.2)  # the status file follows events (a closed tunnel lingers, §5.7)
    assert len(_tunnels_from(lab, ex.port)) == 1, _tunnels_from(lab, ex.port)


def test_a_second_sccrq_on_an_established_tunnel_gets_result_3(lab):
    """§4.4.2 result 3: control channel already exists (a new SCCRQ, Ns 2, in the tunnel)."""
    scccn = w.with_tid(w.packet(0, 0, 1, 1, w.message(w.SCCCN)))
    again = w.with_tid(w.packet(0, 0, 2, 1, w.sccrq(0x505)))
    ex = w.raw_exchange(lab, [(_sccrq(0x505), 0.3), (scccn, 0.3), (again, 0.5),
                              (w.zlb(3, 2), 0)])
    assert ex.of_type(w.SCCRP)
    assert _stop(ex)[0] == 3


GARBAGE = [
    b"",  # empty
    b"\xc8",  # one byte
    b"\xc8\x02\x00\x0c\x00\x00",  # header cut short
    w.packet(0, 0, 0, 0, w.sccrq(0x506), flags=0xC803),  # version 3 (L2TPv3's number)
    w.packet(0, 0, 0, 0, w.sccrq(0x507), flags=0xC801),  # version 1 (L2F)
    w.packet(0, 0, 0, 0, w.sccrq(0x508))[:20],  # Length says more than the datagram
    w.packet(0, 0, 0, 0, w.sccrq(0x509), flags=0x8002),  # control without L and S
    w.packet(0, 0, 0, 0, b"\x80\x03\x00\x00\x00\x00"),  # an AVP shorter than its header
]


def test_garbage_and_wrong_versions_are_dropped_and_counted(lab):
    """§3.1: packets with a wrong version or a broken header are silently discarded: no
    answer, counted in the server's status, no stack error (checked after each case)."""
    counters = ("malformed", "unknown_tunnel")
    before = ra.status(lab, "vpnsrv")["stack"]["counters"]
    ex = w.raw_exchange(lab, [(g, 0.02) for g in GARBAGE * 3], wait=1.0)
    assert not ex.replies, ex.messages()
    deadline = time.monotonic() + 3
    while True:  # the status file is rewritten every second
        after = ra.status(lab, "vpnsrv")["stack"]["counters"]
        dropped = sum(after[k] - before[k] for k in counters)
        if dropped >= 3 * len(GARBAGE) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert dropped == 3 * len(GARBAGE), (before, after)
    assert after["malformed"] - before["malformed"] >= 3 * 6, (before, after)
