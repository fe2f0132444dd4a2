"""RFC 3078 cipher behaviour beyond the in-order pairs of test_mppe.py: header bits, key changes
at the right counts, coherency wrap, reordering and loss, stateful resync, options, and the
malformed-input invariant for the decryptor."""

from __future__ import annotations

import random as _random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunnels.errors import LocalProtocolError, RemoteProtocolError
from tunnels.mppe import keys, options
from tunnels.mppe.cipher import MPPEDecryptor, MPPEEncryptor

KEY = bytes(range(16))
BITS = [40, 56, 128]


def header(packet: bytes) -> tuple[bool, int]:
    value = int.from_bytes(packet[:2], "big")
    assert value & 0x1000, "D (encrypted) must always be set"
    assert not value & 0x6000, "no MPPC: B and C stay clear"
    return bool(value & 0x8000), value & 0x0FFF


def payload(i: int) -> bytes:
    return b"\x00\x21" + i.to_bytes(4, "big") * 4


@pytest.mark.parametrize("bits", BITS)
def test_stateless_every_packet_flushed_and_rekeyed(bits):
    enc = MPPEEncryptor(KEY, bits, stateless=True)
    for i in range(300):
        flushed, count = header(enc.encrypt(payload(i)))
        assert flushed and count == i
    assert enc.key_changes == 300


@pytest.mark.parametrize("bits", BITS)
def test_stateful_rekeys_on_flag_packets_every_256(bits):
    enc = MPPEEncryptor(KEY, bits, stateless=False)
    for i in range(1024):
        flushed, count = header(enc.encrypt(payload(i)))
        assert count == i
        assert flushed == ((i & 0xFF) == 0xFF)  # RFC 3078 §7.3: flag packets
        assert enc.key_changes == (i + 1) // 256


@pytest.mark.parametrize("stateless", [True, False])
def test_coherency_count_wraps_at_4096(stateless):
    enc, dec = MPPEEncryptor(KEY, 128, stateless), MPPEDecryptor(KEY, 128, stateless)
    counts = []
    for i in range(4096 + 10):
        packet = enc.encrypt(payload(i))
        counts.append(header(packet)[1])
        assert dec.decrypt(packet) == payload(i)
    assert counts[4095] == 4095 and counts[4096] == 0 and counts[4105] == 9


@pytest.mark.parametrize("bits", BITS)
def test_session_keys_are_reduced_to_their_strength(bits):
    enc = MPPEEncryptor(KEY, bits, stateless=True)
    enc.encrypt(payload(0))
    assert len(enc.session_key) == (16 if bits == 128 else 8)
    if bits == 40:
        assert enc.session_key[:3] == b"\xd1\x26\x9e"
    elif bits == 56:
        assert enc.session_key[:1] == b"\xd1"


def test_key_change_differs_from_the_rfc_vectors_free_chain():
    start = KEY
    k0 = keys.initial_session_key(start, 128)
    k1 = keys.next_session_key(start, k0, 128)
    assert k0 != k1 and len({k0, k1, keys.next_session_key(start, k1, 128)}) == 3


@pytest.mark.parametrize("bits", BITS)
def test_stateless_loss_and_reordering(bits):
    enc, dec = MPPEEncryptor(KEY, bits, True), MPPEDecryptor(KEY, bits, True)
    packets = [enc.encrypt(payload(i)) for i in range(400)]
    rng = _random.Random(bits)
    order = [i for i in range(400) if rng.random() > 0.1]  # 10 % loss
    for j in range(0, len(order) - 1, 3):  # swap neighbours: reordering
        order[j], order[j + 1] = order[j + 1], order[j]
    got = []
    for i in order:
        got.append(dec.decrypt(packets[i]))
    assert got == [payload(i) for i in order]
    assert dec.counters["reordered"] > 0 and dec.counters["late"] == 0
    assert dec.counters["lost"] == 400 - len(order) - (399 - max(order))


def test_stateless_duplicates_and_too_old_packets_are_dropped():
    enc, dec = MPPEEncryptor(KEY, 128, True), MPPEDecryptor(KEY, 128, True)
    packets = [enc.encrypt(payload(i)) for i in range(200)]
    assert dec.decrypt(packets[0]) == payload(0)
    assert dec.decrypt(packets[199]) == payload(199)  # 198 lost so far
    assert dec.decrypt(packets[150]) == payload(150)  # within the window: reordered
    for late in (packets[150], packets[199], packets[10]):  # replay, replay, too old
        with pytest.raises(RemoteProtocolError):
            dec.decrypt(late)
    assert dec.decrypt(enc.encrypt(payload(200))) == payload(200)


def test_stateless_large_gap_across_the_wrap():
    enc, dec = MPPEEncryptor(KEY, 128, True), MPPEDecryptor(KEY, 128, True)
    packets = [enc.encrypt(payload(i)) for i in range(4096 + 1500)]
    assert dec.decrypt(packets[0]) == payload(0)
    for i in range(1, 4096 + 1500, 1000):  # gaps of 999: more than the reorder window
        assert dec.decrypt(packets[i]) == payload(i)


@pytest.mark.parametrize("bits", BITS)
def test_stateful_loss_reset_request_flushed_resync(bits):
    enc, dec = MPPEEncryptor(KEY, bits, False), MPPEDecryptor(KEY, bits, False)
    for i in range(10):
        assert dec.decrypt(enc.encrypt(payload(i))) == payload(i)
    enc.encrypt(payload(10))  # lost
    with pytest.raises(RemoteProtocolError) as raised:
        dec.decrypt(enc.encrypt(payload(11)))
    assert raised.value.wire_answer.kind == "ccp-reset-request"
    for i in range(12, 20):  # discarded silently until a flushed packet
        with pytest.raises(RemoteProtocolError) as raised:
            dec.decrypt(enc.encrypt(payload(i)))
        assert raised.value.wire_answer.kind == "discard"
    enc.reset()
    enc.reset()  # two Reset-Requests before the next packet still mean one key change
    packet = enc.encrypt(payload(20))
    assert header(packet)[0]
    assert dec.decrypt(packet) == payload(20)
    for i in range(21, 700):
        assert dec.decrypt(enc.encrypt(payload(i))) == payload(i)


def test_stateful_resync_after_missing_flag_packets():
    """RFC 3078 §8.2: a flushed packet after missed flag packets rekeys once per 256."""
    enc, dec = MPPEEncryptor(KEY, 128, False), MPPEDecryptor(KEY, 128, False)
    assert dec.decrypt(enc.encrypt(payload(0))) == payload(0)
    lost = [enc.encrypt(payload(i)) for i in range(1, 600)]  # crosses flag packets 255, 511
    assert header(lost[254])[0]
    with pytest.raises(RemoteProtocolError):
        dec.decrypt(enc.encrypt(payload(600)))
    enc.reset()
    assert dec.decrypt(enc.encrypt(payload(601))) == payload(601)
    assert dec.decrypt(enc.encrypt(payload(602))) == payload(602)


def test_stateful_resync_on_a_flag_packet():
    enc, dec = MPPEEncryptor(KEY, 128, False), MPPEDecryptor(KEY, 128, False)
    assert dec.decrypt(enc.encrypt(payload(0))) == payload(0)
    for i in range(1, 200):
        enc.encrypt(payload(i))
    with pytest.raises(RemoteProtocolError):
        dec.decrypt(enc.encrypt(payload(200)))
    for i in range(201, 255):
        with pytest.raises(RemoteProtocolError):
            dec.decrypt(enc.encrypt(payload(i)))
    # no reset needed: the flag packet (count 255) is flushed and resynchronises
    assert dec.decrypt(enc.encrypt(payload(255))) == payload(255)


def test_compressed_protocol_field_is_expanded():
    enc, dec = MPPEEncryptor(KEY, 128, True), MPPEDecryptor(KEY, 128, True)
    assert dec.decrypt(enc.encrypt(b"\x21" + b"\x45" * 20)) == b"\x00\x21" + b"\x45" * 20


@pytest.mark.parametrize("info", [b"", b"\x90", b"\x90\x00", b"\x00\x00\x21",
                                  b"\xb0\x00\x21", b"\x70\x00\x21"])
def test_malformed_or_unencrypted_headers_are_protocol_errors(info):
    for stateless in (True, False):
        with pytest.raises(RemoteProtocolError):
            MPPEDecryptor(KEY, 128, stateless).decrypt(info)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=20), st.booleans(), st.sampled_from(BITS))
def test_random_bytes_into_the_decryptor(frames, stateless, bits):
    dec = MPPEDecryptor(KEY, bits, stateless)
    for info in frames:
        try:
            assert isinstance(dec.decrypt(info), bytes)
        except RemoteProtocolError:
            pass


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.binary(min_size=1, max_size=30), st.booleans()), max_size=60),
       st.booleans())
def test_any_loss_pattern_never_yields_wrong_plaintext(items, stateless):
    """Whatever is lost, what the decryptor returns is exactly what was sent."""
    enc, dec = MPPEEncryptor(KEY, 128, stateless), MPPEDecryptor(KEY, 128, stateless)
    for data, delivered in items:
        plain = b"\x00\x21" + data
        packet = enc.encrypt(plain)
        if not delivered:
            continue
        try:
            assert dec.decrypt(packet) == plain
        except RemoteProtocolError as error:
            if error.wire_answer is not None and error.wire_answer.kind == "ccp-reset-request":
                enc.reset()


# -- the CCP MPPE option's supported bits (RFC 3078 §2) -------------------------------------

def test_option_bits_match_rfc3078_and_pppd():
    assert (options.MPPE_H, options.MPPE_M, options.MPPE_S, options.MPPE_L, options.MPPE_D,
            options.MPPE_C) == (0x01000000, 0x80, 0x40, 0x20, 0x10, 0x01)
    assert options.encode_bits(options.MPPE_H | options.MPPE_S) == b"\x01\x00\x00\x40"


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("stateless", [True, False])
def test_option_helpers_round_trip(bits, stateless):
    value = options.bits_for(bits, stateless)
    assert options.decode_bits(options.encode_bits(value)) == value
    assert options.parse_bits(value) == (bits, stateless)


def test_option_parse_picks_the_strongest_and_rejects_bad_lengths():
    value = options.MPPE_L | options.MPPE_M | options.MPPE_S
    assert options.parse_bits(value) == (128, False) and options.strengths(value) == [128, 56, 40]
    assert options.parse_bits(options.MPPE_C) == (None, False)
    with pytest.raises(LocalProtocolError):
        options.bits_for(64, False)


@given(st.integers(0, 2**32 - 1))
def test_option_value_round_trip(value):
    assert options.decode_bits(options.encode_bits(value)) == value
    assert options.parse_bits(value)[1] == bool(value & options.MPPE_H)


@pytest.mark.parametrize("bits, size", [(128, 8), (56, 7), (40, 0)])
def test_short_start_key_is_a_local_error(bits, size):
    for cls in (MPPEEncryptor, MPPEDecryptor):
        with pytest.raises(LocalProtocolError):
            cls(bytes(size), bits, True)


@given(st.sampled_from([8, 16]).flatmap(lambda n: st.binary(min_size=n, max_size=n)),
       st.sampled_from([8, 16]).flatmap(lambda n: st.binary(min_size=n, max_size=n)),
       st.binary(max_size=300))
def test_reused_libcrypto_rc4_state_matches_cryptography(first, key, data):
    """Stateless MPPE re-keys one libcrypto RC4 state per packet (tunnels/mppe/rc4.py): after
    any earlier key it must give cryptography's ARC4 output for the new key."""
    from tunnels.mppe import rc4

    if not rc4.FAST:
        pytest.skip("libcrypto's RC4 is not available: cryptography is used throughout")
    stream = rc4.RekeyedStream().rekey(first)
    stream.update(data)
    assert stream.rekey(key).update(data) == rc4.cryptography_stream(key).update(data)
    assert stream.crypt(key, data) == rc4.cryptography_stream(key).update(data)
    assert rc4.rc4(key, data) == rc4.cryptography_stream(key).update(data)


@given(st.lists(st.binary(max_size=2100), min_size=1, max_size=6))
def test_reused_output_buffer_never_leaks_between_calls(packets):
    """The stream's output buffer is reused (and grown past 1600 octets): each result is
    its own bytes, unchanged by later calls, and equal to cryptography's."""
    from tunnels.mppe import rc4

    if not rc4.FAST:
        pytest.skip("libcrypto's RC4 is not available: cryptography is used throughout")
    stream, key = rc4.RekeyedStream(), bytes(range(16))
    results = [stream.crypt(key, p) for p in packets]
    assert results == [rc4.cryptography_stream(key).update(p) for p in packets]


@given(st.sampled_from(BITS), st.binary(min_size=16, max_size=16), st.integers(1, 5))
def test_change_key_is_rfc3078_next_session_key(bits, start, changes):
    """The cipher's own key change (constants precomputed) equals keys.next_session_key."""
    enc = MPPEEncryptor(start, bits, stateless=True)
    expected = enc.session_key
    for _ in range(changes):
        enc.change_key()
        expected = keys.next_session_key(start, expected, bits)
    assert enc.session_key == expected
