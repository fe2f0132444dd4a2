"""Aggressive Mode (RFC 2409 §5.4): three messages, refused unless the responder allows it."""

from __future__ import annotations

import shutil

import pytest

from tests.test_ike_oracles import run_tshark, write_pcap
from tests.test_ike_pairs import Net, assert_keys_agree, cfg
from tunnels.ipsec.ike import IKEFailed, Phase1Established
from tunnels.ipsec.ike import crypto as c
from tunnels.ipsec.ike import payloads as pl


def am(**kw):
    return cfg(aggressive=True, **kw)


def test_aggressive_mode_then_quick_mode():
    net = Net(am(), cfg(allow_aggressive=True))
    net.run(until=10)
    ci, cr = net.children()
    assert_keys_agree(ci[0], cr[0])
    exchanges = [pl.decode_header(d)[0].exchange for _, _, d in net.log]
    assert exchanges[:6] == [4, 4, 4, 32, 32, 32]


def test_aggressive_mode_through_nat_floats_for_message_3():
    net = Net(am(), cfg(allow_aggressive=True), nat=True)
    net.run(until=10)
    ci, cr = net.children()
    assert_keys_agree(ci[0], cr[0])
    assert ci[0].encapsulation == "udp-transport"
    server_ports = [dst[1] if dst[0] == "192.0.2.1" else src[1] for src, dst, _ in net.log]
    assert server_ports[:2] == [500, 500] and set(server_ports[2:]) == {4500}


def test_refused_unless_allowed():
    net = Net(am(), cfg())
    net.run(until=30)
    fails = [e for e in net.client_events[0] if isinstance(e, IKEFailed)]
    assert fails and fails[0].notify == "INVALID_EXCHANGE_TYPE"


def test_wrong_psk_found_by_the_initiator_from_hash_r():
    net = Net(am(psk=b"a"), cfg(psk=b"b", allow_aggressive=True))
    net.run(until=30)
    fails = [e for e in net.client_events[0] if isinstance(e, IKEFailed)]
    assert fails[0].notify == "INVALID_HASH_INFORMATION"
    assert [e.notify for e in net.server_events if isinstance(e, IKEFailed)] == [
        "INVALID_HASH_INFORMATION"]
    assert not net.children()[0] and not net.children()[1]


@pytest.mark.parametrize("lost", [1, 2, 3])
def test_each_lost_message_recovered(lost):
    net = Net(am(), cfg(allow_aggressive=True))
    net.drop = lambda i, d: i == lost
    net.run(until=60)
    ci, cr = net.children()
    assert len(ci) == len(cr) == 1
    assert_keys_agree(ci[0], cr[0])


def test_hash_r_is_checkable_offline_as_psk_crack_does():
    """Why Aggressive Mode is off by default: AM1 and AM2 alone let anyone test a PSK."""
    net = Net(am(psk=b"abcde"), cfg(psk=b"abcde", allow_aggressive=True))
    net.run(until=5)
    am1, am2 = (pl.decode_plain(d) for _, _, d in net.log[:2])
    skeyid = c.skeyid_psk("sha1", b"abcde", am1.first(pl.NONCE).data, am2.first(pl.NONCE).data)
    want = c.hash_r("sha1", skeyid, am1.first(pl.KE).data, am2.first(pl.KE).data,
                    am1.header.icookie, am2.header.rcookie, am1.raw_of(pl.SA)[4:],
                    am2.raw_of(pl.ID)[4:])
    assert am2.first(pl.HASH).data == want


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_tshark_dissects_aggressive_mode(tmp_path):
    net = Net(am(), cfg(allow_aggressive=True), nat=True)
    net.run(until=5)
    sa = net.clients[0]._current()
    pcap = tmp_path / "am.pcap"
    write_pcap(net, pcap)
    keys = [(sa.icookie.hex(), sa.keys.enc_key.hex())]
    assert run_tshark(pcap, keys, "-Y", "_ws.malformed || _ws.expert.severity >= warning") == ""
    text = run_tshark(pcap, keys, "-V")
    assert text.count("Exchange type: Aggressive (4)") == 3
    p1 = [e for e in net.client_events[0] if isinstance(e, Phase1Established)]
    assert p1 and p1[0].local_behind_nat
