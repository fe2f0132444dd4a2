"""RFC 1662 HDLC-like framing: FCS, escapes, ACCM, chunked decoding, and scapy as oracle."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.ppp import HDLC, PPP

from tunnels.ppp.framing import GOOD_FCS16, HDLCDecoder, encode_frame, fcs16, fcs32




def test_fcs_of_frame_plus_its_fcs_is_the_good_value():
    data = b"\xff\x03\xc0\x21\x01\x01\x00\x04"
    check = (fcs16(data) ^ 0xFFFF).to_bytes(2, "little")
    assert fcs16(data + check) == GOOD_FCS16
    check32 = (fcs32(data) ^ 0xFFFFFFFF).to_bytes(4, "little")
    assert fcs32(data + check32) == 0xDEBB20E3


def test_default_accm_escapes_control_characters_and_flags():
    wire = encode_frame(b"\xff\x03\x00\x21\x7e\x7d\x01\x41")
    body = wire[1:-1]
    assert 0x7E not in body and all(b >= 0x20 or b == 0x7D for b in body)
    assert b"\x7d\x5e" in body and b"\x7d\x5d" in body and b"\x7d\x21" in body


def test_accm_zero_leaves_control_characters_alone():
    assert b"\x7d\x21" not in encode_frame(b"\xff\x03\x00\x21\x01", accm=0)


@given(st.binary(min_size=2, max_size=300), st.sampled_from([16, 32]),
       st.integers(0, 0xFFFFFFFF))
def test_round_trip_in_random_chunks(frame, fcs_bits, accm):
    wire = encode_frame(frame, accm, fcs_bits) * 3
    decoder = HDLCDecoder(fcs_bits)
    r = random.Random(len(frame))
    frames, pos = [], 0
    while pos < len(wire):
        step = r.randint(1, 7)
        frames += decoder.feed(wire[pos:pos + step])
        pos += step
    assert frames == [frame] * 3


def test_corrupted_frame_is_dropped_and_counted():
    wire = bytearray(encode_frame(b"\xff\x03\xc0\x21\x09\x01\x00\x08abcd"))
    wire[6] ^= 0x01
    decoder = HDLCDecoder()
    good = b"\xff\x03\x00\x21ok"
    assert decoder.feed(bytes(wire) + encode_frame(good)) == [good]
    assert decoder.counters["bad_fcs"] == 1


def test_scapy_decodes_our_frames():
    frame = bytes.fromhex("ff03c0210101000e0506deadbeef0304c023")
    wire = encode_frame(frame)
    unescaped = HDLCDecoder().feed(wire)[0]
    pkt = HDLC(unescaped)
    assert pkt[PPP].proto == 0xC021


def test_fcs_check_values():
    """The catalogued check values of the two CRCs RFC 1662 §C uses (CRC-16/X-25, CRC-32)
    over "123456789"."""
    assert fcs16(b"123456789") ^ 0xFFFF == 0x906E
    assert fcs32(b"123456789") ^ 0xFFFFFFFF == 0xCBF43926


def test_abort_sequence_drops_the_frame():
    decoder = HDLCDecoder()
    good = b"\xff\x03\x00\x21ok"
    assert decoder.feed(b"\x7e\xff\x03\x7d\x7e" + encode_frame(good)) == [good]
    assert decoder.counters["aborts"] == 1


def test_two_engines_over_a_serial_byte_stream():
    """The dial-up case: PPP in HDLC-like framing over bytes cut at random places."""
    from tests.test_ppp_engine import client, server
    from tunnels.ppp import events as ev

    s, c = server(accm=0), client(accm=0)
    decoders = {id(s): HDLCDecoder(), id(c): HDLCDecoder()}
    r = random.Random(3)
    now, got = 0.0, []
    s.open(now)
    c.open(now)
    for _ in range(200):
        moved = False
        for src, dst in ((s, c), (c, s)):
            accm = src.lcp_policy.peer_accm
            stream = b"".join(encode_frame(f, accm) for f in src.frames_to_send())
            while stream:
                moved = True
                cut = r.randint(1, 9)
                for frame in decoders[id(dst)].feed(stream[:cut]):
                    dst.receive_frame(frame, now)
                stream = stream[cut:]
        while (e := c.next_event()) is not None:
            got.append(e)
        if not moved:
            break
    assert any(isinstance(e, ev.NetworkOpened) for e in got)
    assert s.lcp_policy.peer_accm == 0 and c.lcp_policy.peer_accm == 0
