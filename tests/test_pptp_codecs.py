"""PPTP control messages and enhanced GRE against real captures, with scapy as the oracle."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP
from scapy.layers.pptp import PPTP
from scapy.utils import rdpcap

from tunnels.errors import RemoteProtocolError
from tunnels.gre.header import GREPacket, encode_data
from tunnels.pptp import messages as m

CAPTURES = sorted((Path(__file__).parent / "data" / "pptp").glob("*.*cap"))


def _payloads(path: Path):
    for p in rdpcap(str(path)):
        if IP not in p:
            continue
        raw = bytes(p[IP])[p[IP].ihl * 4:p[IP].len]
        if TCP in p and 1723 in (p[TCP].sport, p[TCP].dport):
            body = raw[p[TCP].dataofs * 4:]
            if body:
                yield "tcp", (p[TCP].sport, p[TCP].dport), body
        elif p[IP].proto == 47:
            yield "gre", None, raw


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.name)
def test_real_control_messages_round_trip_and_agree_with_scapy(capture):
    streams: dict = {}
    seen = []
    for kind, key, body in _payloads(capture):
        if kind != "tcp":
            continue
        stream = streams.setdefault(key, m.ControlStream())
        for msg in stream.feed(body):
            encoded = msg.encode()
            assert encoded in body  # byte-identical re-encoding
            oracle = PPTP(encoded)
            assert oracle.ctrl_msg_type == msg.TYPE and oracle.magic_cookie == m.MAGIC_COOKIE
            assert oracle.len == len(encoded)
            if msg.TYPE in (m.ControlMessageType.OCRP,):
                assert (oracle.call_id, oracle.peer_call_id) == (msg.call_id, msg.peer_call_id)
            seen.append(msg.TYPE)
    assert m.ControlMessageType.SCCRQ in seen and m.ControlMessageType.OCRP in seen


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.name)
def test_real_gre_round_trips(capture):
    for kind, _, raw in _payloads(capture):
        if kind == "gre":
            assert GREPacket.decode(raw).encode() == raw


def test_every_message_type_round_trips():
    for cls in m.MESSAGES.values():
        encoded = cls().encode()
        assert len(encoded) == cls.length()
        assert m.decode(encoded) == cls()
        assert PPTP(encoded).ctrl_msg_type == cls.TYPE


@pytest.mark.parametrize("bad", [
    b"\x00\x10\x00\x01\x1a\x2b\x3c\x4e\x00\x05\x00\x00\x00\x00\x00\x01",  # wrong cookie
    b"\x00\x10\x00\x01\x1a\x2b\x3c\x4d\x00\x63\x00\x00\x00\x00\x00\x01",  # unknown type
    b"\x00\x14\x00\x01\x1a\x2b\x3c\x4d\x00\x05\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00",
])
def test_bad_messages_carry_a_stop_answer(bad):
    with pytest.raises(RemoteProtocolError) as info:
        m.decode(bad)
    assert info.value.wire_answer.kind == "stop-control-connection"


def test_stream_reassembles_byte_by_byte():
    data = m.StartControlConnectionRequest(host_name="h").encode() + m.EchoRequest(7).encode()
    stream, out = m.ControlStream(), []
    for i in range(len(data)):
        out += stream.feed(data[i:i + 1])
    assert [type(x) for x in out] == [m.StartControlConnectionRequest, m.EchoRequest]


@given(st.integers(0, 0xFFFF), st.binary(max_size=64), st.none() | st.integers(0, 2**32 - 1),
       st.none() | st.integers(0, 2**32 - 1))
def test_gre_round_trip(call_id, payload, seq, ack):
    if payload and seq is None:
        seq = 0
    packet = GREPacket(call_id, payload, seq, ack)
    assert GREPacket.decode(packet.encode()) == packet
    assert GREPacket._decode(packet.encode()) == packet  # the reference path agrees
    if seq is not None:  # the data path's encoder is byte-identical to the codec's
        assert encode_data(call_id, payload, seq, ack) == packet.encode()


@given(st.binary(max_size=300))
def test_any_bytes_give_a_message_or_a_protocol_error(blob):
    for parse in (m.decode, GREPacket.decode, lambda b: m.ControlStream().feed(b)):
        try:
            parse(blob)
        except RemoteProtocolError:
            pass
