"""L2TP remote access end to end (RFC 2661, no IPsec): auth x tunnels, both call modes, tunnel
authentication with hidden AVPs, and the clean hang-up.

Asserted from the daemons' JSON status and trace and from the server's Internet-side capture
decoded by tshark (AVPs, bits) and scapy (headers, raw bytes for the §4.3 unhider).
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections import Counter

import pytest

from conformance import l2tp_wire as w
from conformance.plugin import start_scenario
from topologies import remote_access as ra

pytestmark = pytest.mark.netns
AUTHS = ["pap", "chap", "mschapv2", "eap-md5"]
SECRET = "tunnel-s3cret"


def _up_and_checked(lab) -> None:
    results = ra.checks(lab, lab.params)  # tunnel up, ping through it, tshark wire checks
    failed = [f"{r.name}: {r.detail}" for r in results if not r.passed]
    assert not failed, failed


def _hang_up(lab) -> list[w.Msg]:
    """Each client hangs up; the capture until every StopCCN has been acknowledged."""
    n = len(ra.clients(lab))
    for name in ra.clients(lab):
        assert lab.node(name).daemons["vpnclient"].stop() == 0

    def acked(msgs: list[w.Msg]) -> bool:
        stops = [m for m in msgs if m.type == w.StopCCN]
        return len(stops) >= n and all(any(z.type is None and z.nr == s.ns + 1 and
                                           z.frame > s.frame for z in msgs) for s in stops)
    return w.wait_control(lab, acked, timeout=5)


@pytest.mark.parametrize("tunnels", [1, 2], ids=["one-tunnel", "two-tunnels-behind-nat"])
@pytest.mark.parametrize("auth", AUTHS)
def test_tunnel_up_every_message_conforms_and_hangs_up_cleanly(auth, tunnels):
    """Up with the auth asked for, ping through it, every control message in tshark with the
    AVPs §6 requires and §4.4's M bits, nothing malformed; on hang-up each tunnel ends with CDN
    then StopCCN from the client, acknowledged by a ZLB, and both ends' traces say so."""
    params = {"protocol": "l2tp", "auth": auth, "encryption": "none"}
    if tunnels == 2:
        params |= {"nat": "pptp-helper", "clients": "2"}
    with start_scenario("remote-access", **params) as lab:
        _up_and_checked(lab)
        server = ra.status(lab, "vpnsrv")
        sessions = server["sessions"]
        assert len(sessions) == tunnels and len({s["tunnel_id"] for s in sessions}) == tunnels
        msgs = _hang_up(lab)
        assert not w.rfc_problems(msgs), w.rfc_problems(msgs)
        assert not w.malformed_frames(lab)
        server_addr = lab.address("vpnsrv", "isp")
        ports = {m.sport for m in msgs if m.src != server_addr}
        assert {m.dport for m in msgs if m.src == server_addr} == ports
        if tunnels == 2:  # the NAT kept 1701 for one client and gave the other another port
            assert len(ports) == 2 and 1701 in ports, ports
        for s in sessions:  # per tunnel, identified by the server's Tunnel ID
            mine = [m for m in msgs if m.tunnel == s["tunnel_id"] or
                    (m.src == server_addr and m.tunnel == s["peer_tunnel_id"])]
            sent = [m.name for m in mine if m.src != server_addr and m.type is not None]
            assert sent == ["SCCCN", "ICRQ", "ICCN", "CDN", "StopCCN"], sent
            got = [m.name for m in mine if m.src == server_addr and m.type is not None]
            assert got == ["SCCRP", "ICRP"], got
            cdn = next(m for m in mine if m.type == w.CDN)
            assert cdn.session == s["call_id"] and cdn.result is not None
            stop = next(m for m in mine if m.type == w.StopCCN)
            assert stop.session == 0 and stop.result == 1  # §4.4.2: general request to clear
        # both ends' traces: the server cleared each session and tunnel, each client went down
        ended = w.events(lab, "vpnsrv")
        assert len([e for e in ended if e["event"] == "session-down"]) == tunnels
        assert len([e for e in ended if e["event"] == "control-closed"]) == tunnels
        assert ra.status(lab, "vpnsrv")["sessions"] == []
        for name in ra.clients(lab):
            down = [e for e in w.events(lab, name) if e["event"] == "tunnel-down"]
            assert down and "hung up" in down[-1]["reason"], down
            assert not lab.node(name).run(["ip", "link", "show", "vpn0"]).ok


@pytest.mark.parametrize("auth", AUTHS)
def test_two_sessions_in_one_tunnel_each_carry_traffic_and_hang_up(auth):
    """A LAC with two dial-in users (conformance/l2tp_lac.py, beside the client daemon's own
    tunnel): two ICRQ/ICRP/ICCN in one tunnel with distinct Session IDs, an echo answered
    through each, then a CDN per session and one StopCCN; the server's trace shows both
    sessions in that one tunnel, and the daemon's tunnel is untouched."""
    with start_scenario("remote-access", protocol="l2tp", auth=auth, encryption="none") as lab:
        res = lab.node("client").python("conformance.l2tp_lac", lab.address("vpnsrv", "isp"),
                                        "bob", ra.PASSWORD, auth, ra.FILESERVER, timeout=60)
        out = json.loads(res.stdout.strip().splitlines()[-1])
        assert res.ok and len(out["sessions"]) == 2, (out, res.stderr[-2000:])
        assert all(out["replies"].values()) and len(out["replies"]) == 2, out
        assert out["done"], out
        msgs = w.wait_control(lab, lambda ms: any(m.type is None and m.dport == out["port"]
                                                  and m.nr >= 3 for m in ms))
        mine = [m for m in msgs if out["port"] in (m.sport, m.dport)]
        assert not w.rfc_problems(mine), w.rfc_problems(mine)
        assert not w.malformed_frames(lab)
        sent = [m.name for m in mine if m.sport == out["port"] and m.type is not None]
        assert Counter(sent) == Counter(["SCCRQ", "SCCCN", "ICRQ", "ICRQ", "ICCN", "ICCN",
                                         "CDN", "CDN", "StopCCN"]), sent
        assert sent[-1] == "StopCCN" and sent[-3:-1] == ["CDN", "CDN"], sent
        got = [m.name for m in mine if m.dport == out["port"] and m.type is not None]
        assert got == ["SCCRP", "ICRP", "ICRP"], got
        icrq_ids = {w.plain_avps(m, b"")[w.ASSIGNED_SESSION_ID] for m in mine
                    if m.type == w.ICRQ}
        assert len(icrq_ids) == 2
        assert len({m.tunnel for m in mine if m.sport == out["port"] and m.type != w.SCCRQ}) \
            == 1
        port = f":{out['port']}"
        ups = [e for e in w.events(lab, "vpnsrv") if e["event"] == "session-up" and
               e["peer"].endswith(port)]
        assert len(ups) == 2 and len({e["tunnel_id"] for e in ups}) == 1, ups
        downs = {e["call_id"] for e in w.events(lab, "vpnsrv") if e["event"] == "session-down"}
        assert {e["call_id"] for e in ups} <= downs
        assert lab.node("client").run(["ping", "-c1", "-W2", ra.FILESERVER]).ok
        assert len(ra.status(lab, "vpnsrv")["sessions"]) == 1


def test_a_stopping_server_ends_the_call_with_lcp_terminate_then_stopccn():
    """LCP Terminate-Request on the session (RFC 1661 §5.5) and the client's Terminate-Ack,
    then StopCCN with result 6 ("shutting down", RFC 2661 §4.4.2), which clears the session
    without a CDN of its own (§6.4), acknowledged by the client."""
    from testbed import pcap

    with start_scenario("remote-access", protocol="l2tp") as lab:
        _up_and_checked(lab)
        assert lab.node("vpnsrv").daemons["vpnserver"].stop() == 0
        server, client = lab.address("vpnsrv", "isp"), lab.address("client")
        def acked(ms: list[w.Msg]) -> bool:  # the client's ZLB acknowledges the StopCCN
            return any(z.type is None and z.src == client and z.nr == s.ns + 1
                       for s in ms if s.type == w.StopCCN for z in ms)

        msgs = w.wait_control(lab, acked, timeout=5)
        assert acked(msgs), [(m.src, m.name, m.ns, m.nr) for m in msgs][-6:]
        path = lab.capture_path("vpnsrv", "isp")
        lcp = [(float(t), src, int(code)) for t, src, code in
               pcap.tshark_fields(path, ["frame.time_relative", "ip.src", "ppp.code"], "lcp")
               if code in ("5", "6")]
        assert [(src, code) for _, src, code in lcp] == [(server, 5), (client, 6)], lcp
        stops = [m for m in msgs if m.type == w.StopCCN]
        assert len(stops) == 1 and stops[0].src == server and stops[0].result == 6, stops
        assert stops[0].time >= lcp[-1][0]
        assert not [m for m in msgs if m.type == 14 and m.src == server]  # no CDN of ours
        st = ra.status(lab, "client")
        assert st.get("state") != "up", st


def test_outgoing_call_mode_places_the_call_with_ocrq():
    """call_mode=outgoing: OCRQ from the client, OCRP and OCCN from the server, each with the
    AVPs §6.7-§6.9 require; no ICRQ on the wire; the data path works the same."""
    with start_scenario("remote-access", protocol="l2tp", encryption="none",
                        call_mode="outgoing") as lab:
        _up_and_checked(lab)
        msgs = w.control(lab)
        assert not w.rfc_problems(msgs), w.rfc_problems(msgs)
        server = lab.address("vpnsrv", "isp")
        calls = [(m.src == server, m.name) for m in msgs if m.type in
                 (w.OCRQ, w.OCRP, w.OCCN, w.ICRQ, w.ICRP, w.ICCN)]
        assert calls == [(False, "OCRQ"), (True, "OCRP"), (True, "OCCN")], calls
        assert ra.status(lab, "client")["call_mode"] == "outgoing"


def _response(message_type: int, challenge: bytes) -> bytes:
    """§4.4.3 / §5.1.1: MD5 over the Message Type of the message carrying it, the secret and
    the peer's challenge (as CHAP, RFC 1994)."""
    return hashlib.md5(bytes([message_type]) + SECRET.encode() + challenge).digest()


def test_tunnel_authentication_and_hidden_avps_decode_with_the_secret():
    """tunnel_secret + hide_avps: both ends answer each other's Challenge as §5.1.1 computes
    it, AVPs that may be hidden are (after a Random Vector), none that must not be, and the
    values our §4.3 unhider recovers are those the JSON statuses report."""
    with start_scenario("remote-access", protocol="l2tp", encryption="none", auth="chap",
                        tunnel_secret=SECRET, hide_avps="yes") as lab:
        _up_and_checked(lab)
        msgs = w.control(lab)
        assert not w.rfc_problems(msgs, hidden_ok=True), w.rfc_problems(msgs, hidden_ok=True)
        hidden = {(m.name, t) for m in msgs for t, _, h, _ in m.avps if h}
        assert ("ICRQ", w.ASSIGNED_SESSION_ID) in hidden and \
            ("ICRP", w.ASSIGNED_SESSION_ID) in hidden, hidden
        plain = {m.name: w.plain_avps(m, SECRET.encode()) for m in msgs if m.type}
        client, server = ra.status(lab, "client"), ra.status(lab, "vpnsrv")["sessions"][0]

        def u16(name: str, attr: int) -> int:
            return struct.unpack("!H", plain[name][attr])[0]
        assert u16("ICRQ", w.ASSIGNED_SESSION_ID) == client["call_id"] == \
            server["peer_session_id"]
        assert u16("ICRP", w.ASSIGNED_SESSION_ID) == server["call_id"] == \
            client["peer_call_id"]
        assert u16("SCCRQ", w.ASSIGNED_TUNNEL_ID) == client["tunnel_id"]
        assert u16("SCCRP", w.ASSIGNED_TUNNEL_ID) == server["tunnel_id"]
        # tunnel authentication both ways (§5.1.1)
        assert plain["SCCRP"][w.CHALLENGE_RESPONSE] == \
            _response(w.SCCRP, plain["SCCRQ"][w.CHALLENGE])
        assert plain["SCCCN"][w.CHALLENGE_RESPONSE] == \
            _response(w.SCCCN, plain["SCCRP"][w.CHALLENGE])
