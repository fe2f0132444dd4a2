"""The PPP codecs: round trips, and any bytes give a value or a RemoteProtocolError."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.ppp import PPP, PPP_IPCP, PPP_LCP

from tunnels.errors import RemoteProtocolError
from tunnels.ppp.auth import pap
from tunnels.ppp.auth.chap import ChapPacket
from tunnels.ppp.auth.eap import EapPacket
from tunnels.ppp.engine import build_frame, split_frame
from tunnels.ppp.packets import ControlPacket, Option, decode_options, encode_options

options = st.lists(st.builds(Option, st.integers(0, 255), st.binary(max_size=20)), max_size=6)


@given(st.integers(1, 15), st.integers(0, 255), options)
def test_control_packet_and_options_round_trip(code, ident, opts):
    packet = ControlPacket(code, ident, encode_options(opts))
    decoded = ControlPacket.decode(packet.encode())
    assert decoded == packet and decode_options(decoded.data) == opts


@given(st.integers(1, 2), st.integers(0, 255), st.binary(max_size=40), st.binary(max_size=20))
def test_chap_round_trip(code, ident, value, name):
    packet = ChapPacket(code, ident, value, name)
    assert ChapPacket.decode(packet.encode()) == packet


@given(st.integers(1, 2), st.integers(0, 255), st.integers(1, 255), st.binary(max_size=40))
def test_eap_round_trip(code, ident, kind, data):
    packet = EapPacket(code, ident, kind, data)
    assert EapPacket.decode(packet.encode()) == packet


@given(st.binary(max_size=200))
def test_any_bytes_give_a_value_or_a_protocol_error(blob):
    for parse in (ControlPacket.decode, lambda b: decode_options(b), ChapPacket.decode,
                  EapPacket.decode, pap.decode, split_frame):
        try:
            parse(blob)
        except RemoteProtocolError:
            pass


def test_scapy_reads_our_lcp_and_ipcp():
    lcp = ControlPacket(1, 7, encode_options([Option(1, b"\x05\x78"),
                                              Option(5, b"\x01\x02\x03\x04")])).encode()
    pkt = PPP(build_frame(0xC021, lcp)[2:])
    lcp_layer = pkt.payload
    assert pkt.proto == 0xC021 and isinstance(lcp_layer, PPP_LCP)
    assert lcp_layer.code == 1 and lcp_layer.id == 7
    assert lcp_layer.options[0].max_recv_unit == 1400
    ipcp = ControlPacket(1, 3, encode_options([Option(3, bytes(4)),
                                               Option(129, bytes(4))])).encode()
    pkt = PPP(build_frame(0x8021, ipcp)[2:])
    assert isinstance(pkt.payload, PPP_IPCP)
    assert pkt.payload.code == 1 and len(pkt.payload.options) == 2
