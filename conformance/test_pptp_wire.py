"""PPTP on the wire, read from the server's Internet-side capture by scapy and tshark:
control messages and their fields, Call IDs in the GRE key, GRE sequence and acks, PPP inside.
"""

from __future__ import annotations

import pytest

from conformance import pptp_wire as w
from conformance.plugin import start_scenario
from testbed import pcap
from topologies import remote_access as ra

pytestmark = pytest.mark.netns


@pytest.fixture(scope="module", params=["stateless", "stateful"])
def lab(request):
    with start_scenario("remote-access", mppe=request.param) as lab:
        ra.check_reach(lab)  # some traffic both ways
        lab.node("client").python("testbed.probe", "udp", ra.FILESERVER, "9", "--count", "20")
        yield lab


def test_control_messages_have_the_rfc_fields(lab):
    control = w.control(lab)
    client, server = lab.address("client"), lab.address("vpnsrv", "isp")
    by_type: dict[int, list] = {}
    for src, msg in control:
        assert msg.magic_cookie == w.MAGIC_COOKIE and msg.type == 1
        assert msg.len == len(bytes(msg))
        by_type.setdefault(int(msg.ctrl_msg_type), []).append((src, msg))
    sccrq_src, sccrq = by_type[w.SCCRQ][0]
    assert sccrq_src == client and sccrq.protocol_version == 0x0100
    sccrp_src, sccrp = by_type[w.SCCRP][0]
    assert sccrp_src == server and sccrp.result_code == 1 and sccrp.protocol_version == 0x0100
    (ocrq_src, ocrq), (ocrp_src, ocrp) = by_type[w.OCRQ][0], by_type[w.OCRP][0]
    assert ocrq_src == client and ocrp_src == server
    assert ocrp.peer_call_id == ocrq.call_id and ocrp.result_code == 1
    assert ocrq.call_id != 0 and ocrp.call_id != 0
    assert ocrq.pkt_window_size >= 1 and ocrp.pkt_window_size >= 1
    gre = [(src, w.gre_fields(raw)) for src, raw in w.gre(lab)]
    # the key field carries the receiver's Call ID: the server's in the client's GRE ...
    assert {g["call_id"] for s, g in gre if s == client} == {ocrp.call_id}
    # ... and the client's in the server's
    assert {g["call_id"] for s, g in gre if s == server} == {ocrq.call_id}


def test_gre_headers_sequence_and_acks(lab):
    client, server = lab.address("client"), lab.address("vpnsrv", "isp")
    gre = [(src, w.gre_fields(raw)) for src, raw in w.gre(lab)]
    assert len(gre) > 20
    highest = {client: -1, server: -1}
    for src, g in gre:
        # RFC 2637 §4.1: C, R, s clear, recursion 0, flags 0, version 1, 0x880B, K set
        assert g["version"] == 1 and g["proto"] == 0x880B and g["key"]
        assert not (g["C"] or g["R"] or g["s"] or g["recur"] or g["flags"])
        assert g["length"] == len(g["payload"])  # payload length = the PPP frame's
        assert (g["seq"] is not None) == bool(g["payload"])  # S iff there is a payload
        other = server if src == client else client
        if g["ack"] is not None:
            assert g["ack"] <= highest[other], "ack ahead of what was received"
        if g["seq"] is not None:
            highest[src] = max(highest[src], g["seq"])
    for side in (client, server):
        seqs = [g["seq"] for s, g in gre if s == side and g["seq"] is not None]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "sequence +1 per packet"
    # both sides acknowledge what they received (piggybacked or ack-only)
    assert all(any(g["ack"] is not None for s, g in gre if s == side) for side in
               (client, server))


def test_tshark_sees_the_mschapv2_exchange_we_computed(lab):
    """tshark's CHAP fields: the client's NT-Response recomputed from the known password."""
    from tunnels.ppp.auth import mscrypto

    path = lab.capture_path("vpnsrv", "isp")
    rows = pcap.tshark_fields(path, ["chap.code", "chap.value", "chap.name"], "chap")
    challenge = next(bytes.fromhex(r[1].replace(":", "")) for r in rows if r[0] == "1")
    response = next(r for r in rows if r[0] == "2")
    value = bytes.fromhex(response[1].replace(":", ""))
    assert response[2] == "alice" and len(value) == 49
    nt = mscrypto.generate_nt_response(challenge, value[:16], "alice", ra.PASSWORD)
    assert value[24:48] == nt
    success = pcap.tshark_fields(path, ["chap.code", "chap.message"], "chap.code == 3")
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
