"""PPTP remote access on the wire: our client and server in the `remote-access` scenario.

Everything asserted here is read from captures with scapy (the independent decoder) or from
the daemons' JSON status, never from our own codecs.
"""

from __future__ import annotations

import json
import struct
import time

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.pptp import PPTP

from conformance.plugin import start_scenario
from testbed import pcap
from topologies import remote_access as ra

pytestmark = pytest.mark.netns
AUTHS = ["pap", "chap", "mschap", "mschapv2", "eap-md5"]


def _control(lab):
    out = []
    for p in pcap.read(lab.capture_path("vpnsrv", "isp")):
        if TCP in p and 1723 in (p[TCP].sport, p[TCP].dport):
            start = p[IP].ihl * 4 + p[TCP].dataofs * 4
            body = bytes(p[IP])[start:p[IP].len]
            if body:
                out.append((p[IP].src, PPTP(body)))
    return out


def _gre(lab):
    out = []
    for p in pcap.read(lab.capture_path("vpnsrv", "isp")):
        if IP in p and p[IP].proto == 47:
            out.append((p[IP].src, bytes(p[IP])[p[IP].ihl * 4:p[IP].len]))
    return out


def _gre_fields(raw):
    flags1, flags2, proto, length, call_id = struct.unpack("!BBHHH", raw[:8])
    pos, seq, ack = 8, None, None
    if flags1 & 0x10:
        seq = struct.unpack("!I", raw[pos:pos + 4])[0]
        pos += 4
    if flags2 & 0x80:
        ack = struct.unpack("!I", raw[pos:pos + 4])[0]
        pos += 4
    return {"version": flags2 & 7, "proto": proto, "length": length, "call_id": call_id,
            "seq": seq, "ack": ack, "payload": raw[pos:], "key": bool(flags1 & 0x20)}


COMBOS = [(a, "none", "stateless") for a in AUTHS] + [
    (a, e, m) for a in ("mschap", "mschapv2") for e in ("basic", "strong", "strongest")
    for m in ("stateless", "stateful")]


@pytest.mark.parametrize("auth, encryption, mppe", COMBOS,
                         ids=[f"{a}-{e}" + (f"-{m}" if e != "none" else "") for a, e, m in COMBOS])
def test_tunnel_up_carries_traffic_and_checks_pass(auth, encryption, mppe):
    with start_scenario("remote-access", auth=auth, encryption=encryption, mppe=mppe) as lab:
        results = ra.checks(lab, lab.params)
        failed = [f"{r.name}: {r.detail}" for r in results if not r.passed]
        assert not failed, failed
        st = ra.status(lab, "client")
        assert st["auth"] == auth and st["dns"] == ["10.10.0.53"] and st["nbns"] == ["10.10.0.54"]


@pytest.fixture(scope="module")
def lab():
    with start_scenario("remote-access") as lab:
        ra.check_reach(lab)  # some traffic both ways
        time.sleep(0.3)
        yield lab


def test_control_messages_have_the_rfc_fields(lab):
    control = _control(lab)
    client, server = lab.address("client"), lab.address("vpnsrv", "isp")
    by_type = {}
    for src, msg in control:
        assert msg.magic_cookie == 0x1A2B3C4D and msg.type == 1
        assert msg.len == len(bytes(msg))
        by_type.setdefault(int(msg.ctrl_msg_type), []).append((src, msg))
    assert by_type[1][0][0] == client and by_type[1][0][1].protocol_version == 0x0100
    assert by_type[2][0][0] == server and by_type[2][0][1].result_code == 1
    ocrq, ocrp = by_type[7][0][1], by_type[8][0][1]
    assert by_type[7][0][0] == client and by_type[8][0][0] == server
    assert ocrp.peer_call_id == ocrq.call_id and ocrp.result_code == 1
    gre = [(_src, _gre_fields(raw)) for _src, raw in _gre(lab)]
    # the key field carries the receiver's Call ID: the server's in the client's GRE ...
    assert {g["call_id"] for s, g in gre if s == client} == {ocrp.call_id}
    # ... and the client's in the server's
    assert {g["call_id"] for s, g in gre if s == server} == {ocrq.call_id}


def test_gre_headers_sequence_and_acks(lab):
    client, server = lab.address("client"), lab.address("vpnsrv", "isp")
    gre = [(src, _gre_fields(raw)) for src, raw in _gre(lab)]
    assert gre
    highest = {client: -1, server: -1}
    for src, g in gre:
        assert g["version"] == 1 and g["proto"] == 0x880B and g["key"]
        assert g["length"] == len(g["payload"])  # payload length = the PPP frame's
        if g["payload"]:
            assert g["seq"] is not None
        other = server if src == client else client
        if g["ack"] is not None:
            assert g["ack"] <= highest[other], "ack ahead of what was received"
        if g["seq"] is not None:
            highest[src] = max(highest[src], g["seq"])
    for side in (client, server):
        seqs = [g["seq"] for s, g in gre if s == side and g["seq"] is not None]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "sequence +1 per packet"


def test_tshark_sees_the_mschapv2_exchange_we_computed(lab):
    """tshark's CHAP fields: the client's NT-Response recomputed from the known password."""
    from tunnels.ppp.auth import mscrypto

    rows = pcap.tshark_fields(lab.capture_path("vpnsrv", "isp"),
                              ["chap.code", "chap.value", "chap.name"], "chap")
    challenge = next(bytes.fromhex(r[1].replace(":", "")) for r in rows if r[0] == "1")
    response = next(r for r in rows if r[0] == "2")
    value = bytes.fromhex(response[1].replace(":", ""))
    assert response[2] == "alice" and len(value) == 49
    nt = mscrypto.generate_nt_response(challenge, value[:16], "alice", ra.PASSWORD)
    assert value[24:48] == nt
    success = [r for r in pcap.tshark_fields(lab.capture_path("vpnsrv", "isp"),
                                             ["chap.code", "chap.message"], "chap.code == 3")]
    expected = mscrypto.generate_authenticator_response(ra.PASSWORD, nt, value[:16], challenge,
                                                        "alice")
    assert success and success[0][1].startswith(expected)


def test_ppp_inside_gre_decodes_in_tshark(lab):
    rows = pcap.tshark_fields(lab.capture_path("vpnsrv", "isp"),
                              ["frame.number", "ppp.protocol", "_ws.malformed"], "gre")
    assert rows
    assert not [r for r in rows if len(r) > 2 and r[2]], "tshark flags malformed frames"
    protocols = {r[1] for r in rows if len(r) > 1}
    # LCP, MS-CHAP, IPCP, CCP and MPPE-encrypted data; never clear IP with encryption on
    assert {"0xc021", "0xc223", "0x8021", "0x80fd", "0x00fd"} <= protocols, protocols
    assert "0x0021" not in protocols


def _status_events(lab, node):
    daemon = lab.node(node).daemons["vpnserver" if node == "vpnsrv" else "vpnclient"]
    return [json.loads(line) for line in daemon.output().splitlines() if line.startswith("{")]


@pytest.mark.parametrize("user, password", [("alice", "wrong"), ("mallory", "x")],
                         ids=["wrong-password", "unknown-user"])
def test_bad_credentials_get_691_and_server_keeps_serving(user, password):
    with start_scenario("remote-access", nat="helper", clients="2") as lab:
        lab.node("client").daemons["vpnclient"].stop()
        ra.connect(lab, "client", lab.params, user=user, password=password)
        daemon = lab.node("client").daemons["vpnclient"]
        assert daemon.wait(20) == 1
        down = [e for e in _status_events(lab, "client") if e["event"] == "tunnel-down"]
        assert down and "691" in down[-1]["reason"]
        # the other client is still served
        assert lab.node("client2").run(["ping", "-c1", "-W2", ra.FILESERVER]).ok


def test_hang_up_removes_tun_and_routes():
    with start_scenario("remote-access") as lab:
        client = lab.node("client")
        assert client.run(["ip", "link", "show", "vpn0"]).ok
        assert "10.10.0.0/24 dev vpn0" in client.run(["ip", "route"]).stdout
        assert client.daemons["vpnclient"].stop() == 0
        assert not client.run(["ip", "link", "show", "vpn0"]).ok
        routes = client.run(["ip", "route"]).stdout
        assert "vpn0" not in routes and "203.0.113.2 via" not in routes
        time.sleep(0.5)
        events = [e["event"] for e in _status_events(lab, "vpnsrv")]
        assert "session-down" in events


def test_keepalive_notices_a_cut_internet_link():
    with start_scenario("remote-access", echo="1") as lab:
        lab.link("client", "isp").down()
        client = lab.node("client").daemons["vpnclient"]
        t0 = time.monotonic()
        assert client.wait(15) == 1
        elapsed = time.monotonic() - t0
        down = [e for e in _status_events(lab, "client") if e["event"] == "tunnel-down"]
        assert "LCP Echo-Request" in down[-1]["reason"]
        assert elapsed < 8, f"client noticed after {elapsed:.1f}s with a 1 s echo interval"
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            if any(e["event"] == "session-down" for e in _status_events(lab, "vpnsrv")):
                break
            time.sleep(0.2)
        else:
            pytest.fail("server did not notice the cut")
        assert not lab.node("client").run(["ip", "link", "show", "vpn0"]).ok


def _raw_control(lab, payloads, read=True):
    """Send raw bytes to the server's TCP 1723 from the client node; return what came back."""
    script = (
        "import socket,sys,time\n"
        f"s=socket.create_connection(('{lab.address('vpnsrv', 'isp')}',1723),timeout=3)\n"
        f"for p in {payloads!r}: s.sendall(bytes.fromhex(p)); time.sleep(0.2)\n"
        "s.settimeout(1)\nout=b''\n"
        "try:\n  while True:\n    d=s.recv(4096)\n    if not d: break\n    out+=d\n"
        "except OSError: pass\nprint(out.hex())\n")
    res = lab.node("client").run(["python3", "-c", script], timeout=20, check=True)
    return bytes.fromhex(res.stdout.strip())


def _messages(blob):
    out = []
    while len(blob) >= 12:
        length = struct.unpack("!H", blob[:2])[0]
        out.append(PPTP(blob[:length]))
        blob = blob[length:]
    return out


SCCRQ = ("009c00011a2b3c4d00010000" + "0100" + "0000" + "00000003" + "00000003" + "0000" +
         "0001" + "00" * 128)


@pytest.fixture(scope="module")
def server_lab():
    with start_scenario("remote-access") as lab:
        yield lab


def test_unsupported_version_gets_result_5(server_lab):
    bad = SCCRQ[:24] + "0200" + SCCRQ[28:]
    replies = _messages(_raw_control(server_lab, [bad]))
    assert replies and replies[0].ctrl_msg_type == 2 and replies[0].result_code == 5


def test_second_sccrq_gets_already_exists(server_lab):
    replies = _messages(_raw_control(server_lab, [SCCRQ, SCCRQ]))
    assert [r.result_code for r in replies[:2]] == [1, 3]


def test_malformed_length_gets_stop_control_connection(server_lab):
    replies = _messages(_raw_control(server_lab, ["0005" + "00" * 30]))
    assert replies and replies[0].ctrl_msg_type == 3  # Stop-Control-Connection-Request
    # and the server still serves the tunnel that was up
    assert server_lab.node("client").run(["ping", "-c1", "-W2", ra.FILESERVER]).ok


def test_two_clients_behind_one_nat_with_the_helper():
    with start_scenario("remote-access", nat="helper", clients="2") as lab:
        results = ra.checks(lab, lab.params)
        assert all(r.passed for r in results), [r for r in results if not r.passed]
        addrs = {ra.status(lab, c)["local_address"] for c in ("client", "client2")}
        assert len(addrs) == 2
        # both calls leave the NAT from its one outside address, with distinct Call IDs
        gre_srcs = {src for src, _ in _gre(lab)} - {lab.address("vpnsrv", "isp")}
        assert gre_srcs == {lab.address("homenat", "isp")}


def test_without_the_helper_the_failure_is_named():
    with start_scenario("remote-access", nat="no-helper") as lab:
        results = ra.checks(lab, lab.params)
        assert results and all(r.passed for r in results), [r.detail for r in results]


def test_encryption_required_by_the_server_refused_by_the_client():
    with start_scenario("remote-access", encryption="strongest") as lab:
        lab.node("client").daemons["vpnclient"].stop()
        ra.connect(lab, "client", {**lab.params, "encryption": "none"})
        st = ra.status(lab, "client")
        assert st["state"] == "down" and "MPPE" in st["reason"], st
        assert not lab.node("client").run(["ip", "link", "show", "vpn0"]).ok
        assert lab.node("client").daemons["vpnclient"].wait(10) == 1
        # no data crossed: no clear IP and no MPPE frames from this attempt on the wire
        rows = pcap.tshark_fields(lab.capture_path("vpnsrv", "isp"), ["ppp.protocol"], "gre")
        protocols = [r[0] for r in rows if r and r[0]]
        assert "0x0021" not in protocols


def test_firewall_dropping_gre_gives_the_same_diagnosis():
    with start_scenario("remote-access") as lab:
        lab.node("client").daemons["vpnclient"].stop()
        lab.node("isp").run(["iptables", "-A", "FORWARD", "-p", "gre", "-j", "DROP"], check=True)
        ra.connect(lab, "client", lab.params)
        st = ra.status(lab, "client")
        assert st["state"] == "down" and "no GRE received" in st["reason"]
