"""PPTP remote access end to end: the auth x encryption x MPPE-mode matrix, hang-up, refused
encryption, keepalive on a cut link, the server's port limit.

Asserted from the daemons' JSON status and trace and from captures decoded by scapy/tshark.
"""

from __future__ import annotations

import time

import pytest

from conformance import pptp_wire as w
from conformance.plugin import start_scenario
from testbed import pcap
from topologies import remote_access as ra

pytestmark = pytest.mark.netns
AUTHS = ["pap", "chap", "mschap", "mschapv2", "eap-md5"]
COMBOS = [(a, "none", "stateless") for a in AUTHS] + [
    (a, e, m) for a in ("mschap", "mschapv2") for e in ("basic", "strong", "strongest")
    for m in ("stateless", "stateful")]


@pytest.mark.parametrize("auth, encryption, mppe", COMBOS,
                         ids=[f"{a}-{e}" + (f"-{m}" if e != "none" else "") for a, e, m in COMBOS])
def test_tunnel_up_carries_traffic_and_checks_pass(auth, encryption, mppe):
    """Up with the negotiated auth and MPPE strength, intranet reachable only through it,
    control messages in scapy, enhanced GRE, and the probe payload in clear iff unencrypted."""
    with start_scenario("remote-access", auth=auth, encryption=encryption, mppe=mppe) as lab:
        results = ra.checks(lab, lab.params)
        failed = [f"{r.name}: {r.detail}" for r in results if not r.passed]
        assert not failed, failed
        st = ra.status(lab, "client")
        assert st["auth"] == auth and st["dns"] == ["10.10.0.53"] and st["nbns"] == ["10.10.0.54"]
        server = w.events(lab, "vpnsrv")
        up = [e for e in server if e["event"] == "session-up"]
        assert len(up) == 1 and up[0]["user"] == "alice" and up[0]["auth"] == auth
        assert up[0]["address"] == st["local_address"]


def test_hang_up_removes_tun_and_routes_and_the_server_clears_the_call():
    with start_scenario("remote-access") as lab:
        client = lab.node("client")
        assert client.run(["ip", "link", "show", "vpn0"]).ok
        assert "10.10.0.0/24 dev vpn0" in client.run(["ip", "route"]).stdout
        before = client.run(["ip", "route"]).stdout
        assert client.daemons["vpnclient"].stop() == 0
        assert not client.run(["ip", "link", "show", "vpn0"]).ok
        routes = client.run(["ip", "route"]).stdout
        assert "vpn0" not in routes and "203.0.113.2 via" not in routes
        assert "default via" in routes and "default via" in before  # the original is kept
        down = w.wait_event(lab, "vpnsrv", "session-down")
        assert any(word in down["reason"].lower() for word in ("clear", "terminate", "hung up"))
        # on the wire: the client cleared the call and stopped the control connection
        types = [int(m.ctrl_msg_type) for src, m in w.control(lab)
                 if src == lab.address("client")]
        assert w.CCRQ in types and w.STOPCCRQ in types
        assert types.index(w.CCRQ) < types.index(w.STOPCCRQ)


def test_a_stopping_server_ends_the_call_with_lcp_terminate_then_stopccrq():
    """As RRAS does: LCP Terminate-Request on the call (RFC 1661 §5.5), the client's
    Terminate-Ack, then Stop-Control-Connection-Request with reason 3 (local shutdown, RFC
    2637 §2.3); the client goes down saying so, the server says every call acked."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.ppp import PPP, PPP_LCP_Terminate
    from scapy.layers.pptp import PPTP

    with start_scenario("remote-access") as lab:
        assert lab.node("vpnsrv").daemons["vpnserver"].stop() == 0
        server, client = lab.address("vpnsrv", "isp"), lab.address("client")
        lcp, stops = [], []
        for p in pcap.read(lab.capture_path("vpnsrv", "isp")):
            if IP in p and p[IP].proto == 47:
                payload = w.gre_fields(bytes(p[IP])[p[IP].ihl * 4:p[IP].len])["payload"]
                frame = PPP(payload) if payload else None
                if frame is not None and frame.haslayer(PPP_LCP_Terminate):
                    lcp.append((float(p.time), p[IP].src, frame[PPP_LCP_Terminate].code))
            elif TCP in p and p[TCP].sport == 1723 and len(p[TCP].payload) >= 12:
                message = PPTP(bytes(p[TCP].payload))
                if int(message.ctrl_msg_type) == w.STOPCCRQ:
                    stops.append((float(p.time), int(message.reason)))
        assert [(src, code) for _, src, code in lcp] == [(server, 5), (client, 6)], lcp
        assert len(stops) == 1 and stops[0][1] == 3 and stops[0][0] >= lcp[-1][0], stops
        ended = w.wait_event(lab, "vpnsrv", "calls-terminated")
        assert ended["lcp_terminated"] == ended["acked"] == 1 and ended["unanswered"] == 0
        assert ended["waited"] < 1.0, ended
        deadline = time.monotonic() + 10
        while ra.status(lab, "client").get("state") == "up" and time.monotonic() < deadline:
            time.sleep(0.1)
        st = ra.status(lab, "client")
        assert st.get("state") != "up" and "shutting down" in st.get("reason", ""), st


def test_encryption_required_by_the_server_refused_by_the_client():
    """Server requires MPPE-128, client refuses encryption: no IP crosses, the call is
    cleared at both ends, and the client names MPPE as the reason."""
    with start_scenario("remote-access", encryption="strongest") as lab:
        lab.node("client").daemons["vpnclient"].stop()
        mark = len(w.events(lab, "vpnsrv"))
        ra.connect(lab, "client", {**lab.params, "encryption": "none"})
        st = ra.status(lab, "client")
        assert st["state"] == "down" and "MPPE" in st["reason"], st
        assert not lab.node("client").run(["ip", "link", "show", "vpn0"]).ok
        assert lab.node("client").daemons["vpnclient"].wait(10) == 1
        down = w.wait_event(lab, "vpnsrv", "session-down", after=mark)
        assert not [e for e in w.events(lab, "vpnsrv")[mark:] if e["event"] == "session-up"]
        assert down["reason"]
        # no clear IP ever on the wire
        rows = pcap.tshark_fields(lab.capture_path("vpnsrv", "isp"), ["ppp.protocol"], "gre")
        assert "0x0021" not in [r[0] for r in rows if r and r[0]]
        # the call was cleared on the control connection (CCRQ or CDN after the 2nd OCRQ)
        msgs = [int(m.ctrl_msg_type) for _, m in w.control(lab)]
        second = [i for i, t in enumerate(msgs) if t == w.OCRQ][1]
        assert {w.CCRQ, w.CDN} & set(msgs[second:]), msgs


def test_keepalive_notices_a_cut_internet_link():
    """Both ends notice within the echo interval (1 s here, 3 misses) and clean up: the
    client's TUN device and routes go, the server's session ends."""
    with start_scenario("remote-access", echo="1") as lab:
        mark = len(w.events(lab, "vpnsrv"))
        lab.link("client", "isp").down()
        client = lab.node("client").daemons["vpnclient"]
        t0 = time.monotonic()
        assert client.wait(15) == 1
        elapsed = time.monotonic() - t0
        down = [e for e in w.events(lab, "client") if e["event"] == "tunnel-down"]
        assert "LCP Echo-Request" in down[-1]["reason"]
        assert elapsed < 8, f"client noticed after {elapsed:.1f}s with a 1 s echo interval"
        server_down = w.wait_event(lab, "vpnsrv", "session-down", timeout=8, after=mark)
        assert "echo" in server_down["reason"].lower(), server_down
        client_node = lab.node("client")
        assert not client_node.run(["ip", "link", "show", "vpn0"]).ok
        routes = client_node.run(["ip", "route"]).stdout
        assert "vpn0" not in routes and "10.10.0.0/24" not in routes


def test_the_server_refuses_calls_beyond_max_ports_and_keeps_the_others():
    with start_scenario("remote-access", nat="pptp-helper", clients="2", max_ports="1") as lab:
        first, second = ra.status(lab, "client"), ra.status(lab, "client2")
        assert first["state"] == "up", first
        assert second["state"] == "down" and "BUSY" in second["reason"], second
        assert lab.node("client2").daemons["vpnclient"].wait(10) == 1
        # the refusal on the wire: an Outgoing-Call-Reply with result 4 (busy, RFC 2637 §2.8)
        replies = [m for _, m in w.control(lab) if int(m.ctrl_msg_type) == w.OCRP]
        assert sorted(int(m.result_code) for m in replies) == [1, 4]
        assert lab.node("client").run(["ping", "-c1", "-W2", ra.FILESERVER]).ok


def test_pptp_echo_keepalive_notices_a_cut_link_with_lcp_echo_off():
    """The chapter's PPTP keepalive: with LCP echo off and the control connection's
    Echo-Request every second, an unanswered Echo-Request tears the tunnel down at both ends
    after the configured time, and both say why."""
    with start_scenario("remote-access", echo="0", control_echo="1") as lab:
        mark = len(w.events(lab, "vpnsrv"))
        lab.link("client", "isp").down()
        t0 = time.monotonic()
        assert lab.node("client").daemons["vpnclient"].wait(15) == 1
        elapsed = time.monotonic() - t0
        down = [e for e in w.events(lab, "client") if e["event"] == "tunnel-down"][-1]
        assert "Echo-Request" in down["reason"] and "LCP" not in down["reason"], down
        assert elapsed < 5, f"noticed after {elapsed:.1f}s with a 1 s control echo"
        server_down = w.wait_event(lab, "vpnsrv", "session-down", timeout=8, after=mark)
        assert "Echo-Request" in server_down["reason"], server_down
        assert not lab.node("client").run(["ip", "link", "show", "vpn0"]).ok
