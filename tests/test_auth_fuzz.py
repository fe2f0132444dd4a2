"""Property tests for the auth codecs and exchanges: encode/decode round-trips, and any bytes
into any parser or `receive` (either side, any method, any moment) give a value, nothing, or a
RemoteProtocolError: never another exception."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunnels.errors import RemoteProtocolError
from tunnels.ppp.auth import AuthMethod, WindowsError_, make_authenticator, make_peer, pap
from tunnels.ppp.auth.chap import (
    ChapCode,
    ChapPacket,
    MSCHAPFailure,
    MSCHAPv1Response,
    MSCHAPv2Response,
    parse_failure,
)
from tunnels.ppp.auth.eap import EapCode, EapPacket
from tunnels.ppp.auth.pap import AuthenticateReply, AuthenticateRequest, PapCode
from tests.test_auth_pairs import ACCOUNTS, Link, counter_random

u8 = st.integers(0, 255)
field = st.binary(max_size=255)


@given(st.sampled_from([ChapCode.CHALLENGE, ChapCode.RESPONSE]), u8, field, st.binary(max_size=64))
def test_chap_challenge_response_round_trip(code, ident, value, name):
    packet = ChapPacket(code, ident, value, name)
    assert ChapPacket.decode(packet.encode()) == packet


@given(st.sampled_from([ChapCode.SUCCESS, ChapCode.FAILURE]), u8, st.binary(max_size=200))
def test_chap_success_failure_round_trip(code, ident, message):
    packet = ChapPacket(code, ident, b"", message)
    assert ChapPacket.decode(packet.encode()) == packet


@given(st.sampled_from([EapCode.REQUEST, EapCode.RESPONSE]), u8, u8, st.binary(max_size=200))
def test_eap_request_response_round_trip(code, ident, type_, data):
    packet = EapPacket(code, ident, type_, data)
    assert EapPacket.decode(packet.encode()) == packet


@given(st.sampled_from([EapCode.SUCCESS, EapCode.FAILURE]), u8)
def test_eap_success_failure_round_trip(code, ident):
    packet = EapPacket(code, ident)
    assert EapPacket.decode(packet.encode()) == packet


@given(u8, field, field)
def test_pap_request_round_trip(ident, peer_id, password):
    packet = AuthenticateRequest(ident, peer_id, password)
    assert pap.decode_message(packet.encode()) == packet


@given(st.sampled_from([PapCode.AUTHENTICATE_ACK, PapCode.AUTHENTICATE_NAK]), u8, field)
def test_pap_reply_round_trip(code, ident, message):
    packet = AuthenticateReply(code, ident, message)
    assert pap.decode_message(packet.encode()) == packet


@given(st.binary(max_size=300))
def test_chap_decode_is_exact_on_what_it_accepts(data):
    try:
        packet = ChapPacket.decode(data)
    except RemoteProtocolError:
        return
    length = int.from_bytes(data[2:4], "big")
    assert packet.encode() == data[:length]


@pytest.mark.parametrize("parser", [ChapPacket.decode, EapPacket.decode, pap.decode_message,
                                    parse_failure])
@given(data=st.binary(max_size=300))
def test_parsers_never_raise_anything_else(parser, data):
    try:
        parser(data)
    except RemoteProtocolError:
        pass


def _well_formed_or_random():
    """Mostly random bytes, sometimes a plausible packet header so deeper paths run."""
    plausible = st.builds(
        lambda code, ident, body: bytes((code, ident)) + (len(body) + 4).to_bytes(2, "big") + body,
        st.integers(0, 6), u8, st.binary(max_size=60))
    return st.lists(st.one_of(st.binary(max_size=60), plausible), max_size=8)


@pytest.mark.parametrize("method", list(AuthMethod), ids=lambda m: m.value)
@pytest.mark.parametrize("side", ["authenticator", "peer"])
@settings(max_examples=150, deadline=None)
@given(packets=_well_formed_or_random(), before=st.integers(0, 3))
def test_random_input_into_receive(method, side, packets, before):
    """Feed garbage at any point of a real exchange; only RemoteProtocolError may escape."""
    link = Link(make_authenticator(method, ACCOUNTS, "srv", counter_random(), rechallenge=30),
                make_peer(method, "alice", "correct horse", counter_random())).start()
    for _ in range(before):  # let the real exchange progress a little first
        link.transfer()
    target = link.auth if side == "authenticator" else link.peer
    now = link.now
    for data in packets:
        now += 1.0
        try:
            target.receive(data, now)
        except RemoteProtocolError:
            pass
        target.handle_timer(now)
        assert all(isinstance(p, bytes) for p in target.packets_to_send())
        timer = target.get_timer()
        assert timer is None or timer >= now


@given(st.binary(min_size=24, max_size=24), st.binary(min_size=24, max_size=24), st.booleans())
def test_mschapv1_response_round_trip(lm, nt, use_nt):
    value = MSCHAPv1Response(lm, nt, use_nt)
    assert len(value.encode()) == 49 and MSCHAPv1Response.decode(value.encode()) == value


@given(st.binary(min_size=16, max_size=16), st.binary(min_size=24, max_size=24), u8)
def test_mschapv2_response_round_trip(peer_challenge, nt, flags):
    value = MSCHAPv2Response(peer_challenge, nt, flags)
    assert len(value.encode()) == 49 and MSCHAPv2Response.decode(value.encode()) == value


@given(st.sampled_from(list(WindowsError_)), st.booleans(),
       st.sampled_from([b"", bytes(range(16))]), st.integers(1, 3),
       st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40))
def test_mschap_failure_round_trip(error, retry, challenge, version, message):
    failure = MSCHAPFailure(int(error), retry, challenge, version, message)
    assert MSCHAPFailure.decode(failure.encode()) == failure


@pytest.mark.parametrize("text, want", [
    (b"E=691 R=0 C=00112233445566778899AABBCCDDEEFF V=3 M=Authentication failure",
     MSCHAPFailure(691, False, bytes.fromhex("00112233445566778899AABBCCDDEEFF"), 3,
                   "Authentication failure")),
    (b"E=648 R=0 V=2", MSCHAPFailure(648, False, b"", 2, "")),  # RFC 2433 §9 example
    (b"E=649 R=1 V=3 M=M=odd", MSCHAPFailure(649, True, b"", 3, "M=odd")),
    (b"Access denied", MSCHAPFailure(None, message="Access denied")),
    (b"E=zz C=nothex", MSCHAPFailure(None, False, b"", 1, "")),
])
def test_mschap_failure_examples(text, want):
    assert MSCHAPFailure.decode(text) == want


@pytest.mark.parametrize("codec", [MSCHAPv1Response.decode, MSCHAPv2Response.decode,
                                   MSCHAPFailure.decode])
@given(data=st.binary(max_size=80))
def test_mschap_value_parsers_never_raise_anything_else(codec, data):
    try:
        codec(data)
    except RemoteProtocolError:
        pass
