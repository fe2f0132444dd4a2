"""L2TP/IPsec on the wire, from the server's Internet-side capture, for each ESP cipher (DES
for Basic, 3DES for Strongest, AES-CBC 128 and 256) straight on the Internet and behind a NAT
with NAT-T (two clients there): every ESP packet decrypted independently with the server's key
log (scapy's SecurityAssociation, tshark's esp_sa table) to the expected L2TP over UDP 1701,
IKE decoded by tshark, SPIs and sequence numbers as RFC 4303 says, NAT-T as RFC 3947/3948 say.
"""

from __future__ import annotations

import itertools
from collections import defaultdict

import pytest

from conformance import ipsec_wire as w
from conformance.plugin import start_scenario
from topologies import remote_access as ra

pytestmark = pytest.mark.netns

CIPHERS = {"des": ("des-cbc", {"encryption": "basic"}),
           "3des": ("3des-cbc", {"encryption": "strongest"}),
           "aes128": ("aes-cbc-128", {"cipher": "aes-cbc-128"}),
           "aes256": ("aes-cbc-256", {"cipher": "aes-cbc-256"})}
PATHS = {"direct": {}, "nat-t": {"nat": "pptp-helper", "clients": "2"}}
PPP_IP = 0x0021
SETUP = ["SCCRQ", "SCCRP", "SCCCN", "ICRQ", "ICRP", "ICCN"]  # RFC 2661 §5.1, §5.2.1


@pytest.fixture(scope="module", params=list(itertools.product(CIPHERS, PATHS)),
                ids=lambda p: f"{p[0]}-{p[1]}")
def lab(request):
    cipher, path = request.param
    with start_scenario("remote-access", protocol="l2tp-ipsec", **CIPHERS[cipher][1],
                        **PATHS[path]) as lab:
        lab.cipher, lab.nat = CIPHERS[cipher][0], path != "direct"
        lab.reach = ra.check_reach(lab)  # traffic through every tunnel, both ways
        w.wait_esp(lab, 20 * len(ra.clients(lab)))
        lab.pcap = w.snapshot(lab)  # what every case of this lab reads
        yield lab


def _decrypted(lab) -> list[tuple[w.Datagram, dict, object]]:
    keys = {k["spi"]: k for k in w.keylog(lab)}
    esp = w.of_kind(w.wire(lab.pcap), "esp", "esp-udp")
    unknown = sorted({hex(d.spi) for d in esp if d.spi not in keys})
    assert not unknown, f"ESP with SPIs the key log does not name: {unknown}"
    return [(d, keys[d.spi], w.decrypt(d, keys[d.spi])) for d in esp]


def test_scapy_decrypts_every_esp_packet_to_l2tp(lab):
    """Every captured ESP packet authenticates and decrypts with the exported keys (scapy),
    and carries UDP 1701 -> 1701 L2TP: per client, SCCRQ first and the incoming-call setup in
    RFC 2661 order (retransmissions aside, §5.8), then PPP in data messages, whose IP
    protocol carries IPv4 only (the pings)."""
    keys = w.keylog(lab)
    assert {k["cipher"] for k in keys} == {lab.cipher}, keys
    assert all(bool(k["encap"]) == lab.nat for k in keys), keys
    per_peer: dict[str, list[w.Inner]] = defaultdict(list)
    for d, key, packet in _decrypted(lab):
        inner = w.inner_l2tp(packet)
        assert inner is not None, f"frame {d.frame}: not L2TP inside: {packet!r}"
        assert (inner.sport, inner.dport) == (w.L2TP_PORT, w.L2TP_PORT), inner
        per_peer[key["peer"]].append(inner)
    assert len(per_peer) == len(ra.clients(lab)), sorted(per_peer)
    for peer, inners in per_peer.items():
        firsts = {(i.src, i.ns): i for i in reversed(inners) if i.control}  # not resent ones
        messages = [i.message for i in inners if i.control and i.message != "ZLB"
                    and firsts[(i.src, i.ns)] is i]
        assert messages[:len(SETUP)] == SETUP, f"{peer}: {messages}"
        data = [i for i in inners if not i.control]
        assert len(data) >= 10 and all(i.session for i in data), f"{peer}: {len(data)} data"
        ip = [payload for protocol, payload in (i.ppp for i in data) if protocol == PPP_IP]
        assert len(ip) >= 6, f"{peer}: {len(ip)} IP datagrams (3 pings, both ways)"
        assert all(p[0] >> 4 == 4 for p in ip), f"{peer}: not IPv4 in PPP 0x0021 (RFC 1332)"


def test_tshark_decrypts_each_sa_the_same_with_no_error(lab):
    """tshark, given every SA of the key log in its esp_sa table: every packet's ICV is good,
    the sequence analysis finds no gap, and L2TP inside is what scapy found, with no
    malformed frame or expert warning."""
    by_frame = {d.frame: w.inner_l2tp(packet) for d, _, packet in _decrypted(lab)}
    fields = ["frame.number", "esp.spi", "esp.icv_good", "l2tp.type", "l2tp.avp.message_type",
              "udp.dstport", "_ws.malformed", "esp.sequence-analysis.wrong-sequence-number",
              "_ws.expert.severity", "_ws.expert.message"]
    keys = w.keylog(lab)
    rows = w.tshark_esp(lab.pcap, keys, fields)
    assert {int(r[1], 16) for r in rows} == {k["spi"] for k in keys}, "an SA with no packet"
    seen = 0
    for frame, spi, good, l2tp_type, mtype, dport, bad, wrong_seq, severity, text in rows:
        inner = by_frame[int(frame)]
        assert good == "1" and not bad and not wrong_seq, (spi, frame, text)
        assert str(w.L2TP_PORT) in dport.split(","), (frame, dport)
        assert l2tp_type == ("1" if inner.control else "0"), (frame, l2tp_type, inner)
        if inner.message not in (None, "ZLB"):
            assert w.NAMES[int(mtype.split(",")[0])] == inner.message, (frame, mtype)
        # tshark's severities: 2097152 note, 4194304 warning, 8388608 error
        assert all(int(s) < 4194304 for s in severity.split(",") if s), (frame, text)
        seen += 1
    assert seen == len(by_frame), (seen, len(by_frame))


def test_tshark_decodes_main_mode_and_quick_mode_of_every_client(lab):
    """RFC 2409 §5 / §5.5: per ISAKMP SA (initiator cookie), six Main Mode messages then the
    three of Quick Mode, each decoded by tshark with no malformed frame or warning."""
    assert not w.isakmp_problems(lab.pcap)
    messages = w.isakmp(lab.pcap)
    ike = w.of_kind(w.wire(lab.pcap), "ike", "ike-natt")
    assert {m.frame for m in messages} == {d.frame for d in ike}, "IKE tshark did not decode"
    exchanges: dict[str, list[int]] = defaultdict(list)
    for m in messages:
        exchanges[m.icookie].append(m.exchange)
    assert len(exchanges) == len(ra.clients(lab)), exchanges
    for cookie, kinds in exchanges.items():
        assert kinds[:9] == [w.MAIN_MODE] * 6 + [w.QUICK_MODE] * 3, (cookie, kinds)


def test_spis_and_sequence_numbers_follow_rfc_4303(lab):
    """§2.1: each SA's SPI is the one the key log names, nonzero and not in 1-255; its packets
    go between the key log's addresses (and NAT-T ports); §3.3.3: sequence numbers start at 1
    and grow by one. Each client has its own SA pair. No UDP 1701 in clear (RFC 3193 §4)."""
    datagrams = w.wire(lab.pcap)
    assert not w.of_kind(datagrams, "l2tp-clear"), "UDP 1701 in clear on the Internet side"
    keys = w.keylog(lab)
    assert len(keys) == 2 * len(ra.clients(lab)) == len({k["spi"] for k in keys}), keys
    assert len({k["peer"] for k in keys}) == len(ra.clients(lab)), keys
    esp = w.of_kind(datagrams, "esp", "esp-udp")
    for key in keys:
        mine = [d for d in esp if d.spi == key["spi"]]
        assert key["spi"] >= 256 and mine, key
        assert {(d.src, d.dst) for d in mine} == {(key["src"], key["dst"])}, key
        if key["encap"]:
            assert {(d.sport, d.dport) for d in mine} == {tuple(key["encap"])}, key
        seqs = [d.seq for d in mine]
        assert seqs == list(range(1, len(seqs) + 1)), (hex(key["spi"]), seqs[:20])


def test_ike_ports_and_esp_encapsulation(lab):
    """Without a NAT: IKE stays on 500 and ESP is IP protocol 50. Behind the NAT (RFC 3947
    §4, RFC 3948 §2): Main Mode floats from 500 to 4500 right after the NAT-D payloads of
    messages 3 and 4, IKE on 4500 has the four-zero-octet non-ESP marker and ESP in UDP 4500
    has none (its SPI is nonzero); each client sends from 500 and then 4500, as Windows does."""
    datagrams = w.wire(lab.pcap)
    server = lab.address("vpnsrv", "isp")
    if not lab.nat:
        assert not [d for d in datagrams if w.NAT_T_PORT in (d.sport, d.dport)]
        assert {d.kind for d in datagrams if d.kind.startswith("esp")} == {"esp"}
        assert all(m.sport == m.dport == w.IKE_PORT for m in w.isakmp(lab.pcap))
        return
    assert not w.of_kind(datagrams, "esp"), "raw ESP through the NAT"
    assert all(d.spi != 0 for d in w.of_kind(datagrams, "esp-udp"))
    natt = w.of_kind(datagrams, "ike-natt")
    assert natt and all(server in (d.src, d.dst) and w.NAT_T_PORT in (d.sport, d.dport)
                        for d in natt)
    natt_frames = {d.frame for d in natt}
    by_cookie: dict[str, list[w.IsakmpMessage]] = defaultdict(list)
    for m in w.isakmp(lab.pcap):
        by_cookie[m.icookie].append(m)
    for cookie, msgs in by_cookie.items():
        ports = [w.NAT_T_PORT if m.frame in natt_frames else w.IKE_PORT for m in msgs]
        assert ports[:4] == [w.IKE_PORT] * 4 and set(ports[4:]) == {w.NAT_T_PORT}, \
            (cookie, ports)
        assert all(w.NAT_D in m.payloads for m in msgs[2:4]), (cookie, msgs[2:4])
    for name in ra.clients(lab):
        capture = w.snapshot(lab, name, lab.spec.neighbours(name)[0])
        sent = [d for d in w.wire(capture) if d.src == lab.address(name)
                and d.kind in ("ike", "ike-natt", "esp-udp")]
        assert {d.sport for d in sent} == {w.IKE_PORT, w.NAT_T_PORT}, (name, sent[:3])


def test_nat_d_payloads_hash_the_addresses_as_rfc_3947_says(lab):
    """RFC 3947 §3.2, recomputed from the wire: in Main Mode messages 3 and 4 the first NAT-D
    is HASH(CKY-I | CKY-R | IP | Port) of the packet's destination, the others of the
    sender's own address. The server's always match what it sent from; the client's own one
    matches its source on the server's side exactly when no NAT rewrote it."""
    hash_name = {"1": "md5", "2": "sha1"}[_phase1_hash(lab)]
    by_cookie: dict[bytes, list[w.Datagram]] = defaultdict(list)
    for d in w.of_kind(w.wire(lab.pcap), "ike"):
        by_cookie[d.payload[:8]].append(d)
    assert len(by_cookie) == len(ra.clients(lab))
    server = lab.address("vpnsrv", "isp")
    for cookie, msgs in by_cookie.items():
        for d in msgs[2:4]:  # MM3 from the client, MM4 from the server
            hashes = [body for kind, body in w.isakmp_payloads(d.payload) if kind == w.NAT_D]
            assert len(hashes) >= 2, (cookie.hex(), d.frame)
            assert hashes[0] == w.nat_d(d.payload, d.dst, d.dport, hash_name), d.frame
            own = w.nat_d(d.payload, d.src, d.sport, hash_name)
            assert (own in hashes[1:]) == (d.src == server or not lab.nat), (d.frame, d.src)


def _phase1_hash(lab) -> str:
    """The hash algorithm of the transform the server chose in Main Mode message 2
    (RFC 2409 Appendix A: 1 MD5, 2 SHA), as tshark reads it."""
    rows = w.pcap.tshark_fields(lab.pcap, ["isakmp.ike.attr.hash_algorithm"],
                                f"isakmp && ip.src == {lab.address('vpnsrv', 'isp')}",
                                options=w.decode_as(lab.pcap))
    return next(r[0] for r in rows if r and r[0])


def test_every_client_reaches_the_intranet_in_its_own_session(lab):
    """Each client pinged the intranet through its tunnel; the server holds one session per
    client, each with its own peer (address:NAT port) and SA pair, which the client reports."""
    assert all(r.passed for r in lab.reach), [r for r in lab.reach if not r.passed]
    sessions = ra.status(lab, "vpnsrv")["sessions"]
    assert len(sessions) == len(ra.clients(lab)), sessions
    assert len({s["peer"] for s in sessions}) == len(sessions), sessions
    peers = {k["peer"] for k in w.keylog(lab)}
    if not lab.nat:  # the L2TP peer is address:1701 there, the IKE peer address:500
        peers = {p.replace(f":{w.IKE_PORT}", f":{w.L2TP_PORT}") for p in peers}
    assert {s["peer"] for s in sessions} == peers, (sessions, peers)
    spis = {k["spi"] for k in w.keylog(lab)}
    for name in ra.clients(lab):  # each client reports the SA the wire shows
        sa = ra.status(lab, name)["ipsec"]
        assert sa["cipher"] == lab.cipher and {sa["spi_in"], sa["spi_out"]} <= spis, (name, sa)
