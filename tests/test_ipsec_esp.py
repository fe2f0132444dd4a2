"""RFC 4303 ESP transport mode through tunnels/ipsec/esp.py: round trips for every transform,
the order of the receiver's checks (window, ICV, decrypt, padding, window update), every
single-bit tamper, replay, bad padding, dummy packets, lifetimes and the sequence space, the
IPv4 helpers, and the malformed-input invariant."""

from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunnels.errors import DISCARD, LocalProtocolError, RemoteProtocolError
from tunnels.ipsec.crypto import CIPHERS, INTEGRITY
from tunnels.ipsec.esp import (EspAuthenticationFailed, EspBadPadding, EspDummy, EspExpired,
                               EspMalformed, EspReplayed, EspUnknownSpi, SAExpired, decapsulate,
                               encapsulate, encapsulate_udp, protect_ipv4, unprotect_ipv4)
from tunnels.ipsec.ipv4 import address, address_sum, ones_sum, parse_ipv4
from tunnels.ipsec.replay import MAX_SEQ
from tunnels.ipsec.sa import SecurityAssociation, SequenceExhausted

COMBOS = list(itertools.product(sorted(CIPHERS), sorted(INTEGRITY)))
SPI = 0xC0FFEE01


def make_pair(cipher: str = "aes-cbc-128", integrity: str = "hmac-sha1-96", **kw):
    """Sender and receiver views of one SA (same keys, separate state)."""
    enc_key = bytes(range(1, CIPHERS[cipher].key_size + 1))
    auth_key = bytes(range(100, 100 + INTEGRITY[integrity].key_size))
    return tuple(SecurityAssociation.from_keys(SPI, cipher, enc_key, integrity, auth_key,
                                               "192.0.2.1", "198.51.100.7", **kw)
                 for _ in range(2))


def iv_for(sa: SecurityAssociation, n: int = 0) -> bytes:
    return bytes([n & 0xFF]) * sa.enc.block_size


def seal(sa: SecurityAssociation, plaintext: bytes, seq: int) -> bytes:
    """An authentic ESP packet around an arbitrary (maybe wrongly padded) plaintext."""
    header, iv = struct.pack("!II", sa.spi, seq), iv_for(sa, 7)
    ciphertext = sa.enc.encrypt(iv, bytearray(plaintext))
    return header + iv + ciphertext + sa.auth.icv(header, iv, ciphertext)


class DecryptSpy:
    """Stands in for an SA's cipher to prove what was (not) decrypted."""

    def __init__(self, real):
        self.real, self.calls, self.block_size = real, 0, real.block_size

    def decrypt(self, data):
        self.calls += 1
        return self.real.decrypt(data)

    def decrypt_blocks(self, data):  # the data path's decrypt (keeps the first block)
        self.calls += 1
        return self.real.decrypt_blocks(data)


@pytest.mark.parametrize("cipher,integrity", COMBOS)
def test_round_trip_every_transform_and_payload_size(cipher, integrity):
    tx, rx = make_pair(cipher, integrity)
    block = CIPHERS[cipher].block_size
    for n in range(0, 3 * block + 3):
        payload = bytes(range(n))
        packet = encapsulate(tx, 17, payload, iv_for(tx, n))
        assert struct.unpack("!II", packet[:8]) == (SPI, n + 1)  # §3.3.3: first seq is 1
        assert len(packet) == 8 + block + -(-(n + 2) // block) * block + 12  # minimal padding
        assert decapsulate(rx, packet, 0.0) == (17, payload)
    assert tx.counters.packets == rx.counters.packets == 3 * block + 3
    assert tx.counters.bytes == rx.counters.bytes == sum(range(3 * block + 3))


def test_every_single_bit_flip_is_rejected_and_never_decrypted():
    tx, rx = make_pair()
    for _ in range(4):
        encapsulate(tx, 17, b"x", iv_for(tx))
    packet = encapsulate(tx, 17, b"L2TP hello, thirty octets long", iv_for(tx))  # seq 5
    spy = rx.enc = DecryptSpy(rx.enc)
    unknown_spi = 0
    for bit in range(len(packet) * 8):
        tampered = bytearray(packet)
        tampered[bit // 8] ^= 0x80 >> (bit % 8)
        with pytest.raises((EspAuthenticationFailed, EspUnknownSpi)) as info:
            decapsulate(rx, bytes(tampered), 0.0)
        assert info.value.wire_answer is DISCARD
        unknown_spi += isinstance(info.value, EspUnknownSpi)
    assert unknown_spi == 32  # the SPI's own bits: another SA's packet, for the policy to count
    assert rx.counters.auth_failures == len(packet) * 8 - 32
    assert spy.calls == 0
    assert decapsulate(rx, packet, 0.0)[1] == b"L2TP hello, thirty octets long"  # window intact


def test_replayed_packet_is_dropped_counted_and_checked_before_the_icv():
    tx, rx = make_pair()
    packet = encapsulate(tx, 17, b"once", iv_for(tx))
    decapsulate(rx, packet, 0.0)
    spy = rx.enc = DecryptSpy(rx.enc)
    with pytest.raises(EspReplayed):
        decapsulate(rx, packet, 0.0)
    forged = packet[:-1] + bytes([packet[-1] ^ 1])  # replayed and forged: replay wins, no HMAC
    with pytest.raises(EspReplayed):
        decapsulate(rx, forged, 0.0)
    assert (rx.counters.replayed, rx.counters.auth_failures, spy.calls) == (2, 0, 0)


def test_window_old_reordered_and_far_ahead_packets():
    tx, rx = make_pair(replay_window=32)
    packets = [encapsulate(tx, 17, bytes([i]), iv_for(tx)) for i in range(100)]
    decapsulate(rx, packets[50], 0.0)  # seq 51
    decapsulate(rx, packets[30], 0.0)  # seq 31: reordered, still inside 20..51
    with pytest.raises(EspReplayed):
        decapsulate(rx, packets[10], 0.0)  # seq 11: left of the window
    tx.seq = 1_000_000
    far = encapsulate(tx, 17, b"far", iv_for(tx))
    assert decapsulate(rx, far, 0.0) == (17, b"far")
    with pytest.raises(EspReplayed):
        decapsulate(rx, packets[99], 0.0)
    assert rx.counters.replayed == 2


@pytest.mark.parametrize("trailer", [b"\x01\x03\x02\x11", b"\x00\x00\x02\x11", b"\x0e\x11"],
                         ids=["wrong-order", "zeros", "longer-than-packet"])
def test_bad_padding_is_counted_and_leaves_the_window(trailer):
    tx, rx = make_pair()
    plaintext = bytes(16 - len(trailer)) + trailer
    with pytest.raises(EspBadPadding) as info:
        decapsulate(rx, seal(tx, plaintext, 9), 0.0)
    assert rx.counters.bad_padding == 1 and not rx.window.seen(9)
    assert info.value.wire_answer is DISCARD
    good = seal(tx, bytes(12) + b"\x01\x02\x02\x11", 9)
    assert decapsulate(rx, good, 0.0) == (17, bytes(12))


def test_dummy_packet_is_authenticated_then_dropped():
    tx, rx = make_pair()
    with pytest.raises(EspDummy):
        decapsulate(rx, encapsulate(tx, 59, b"filler", iv_for(tx)), 0.0)
    assert rx.counters.dummy == 1 and rx.window.seen(1) and rx.counters.packets == 0


@pytest.mark.parametrize("size", [0, 7, 8 + 16 + 12, 8 + 16 + 15 + 12, 8 + 32 + 13])
def test_wrong_lengths_are_malformed(size):
    _, rx = make_pair()
    data = struct.pack("!II", SPI, 1) + bytes(max(0, size - 8)) if size >= 8 else bytes(size)
    with pytest.raises(EspMalformed):
        decapsulate(rx, data, 0.0)
    assert rx.counters.malformed == 1


def test_time_lifetime_soft_then_hard():
    tx, rx = make_pair(lifetime_seconds=100, soft_fraction=0.8, created=1000.0)
    packet = encapsulate(tx, 17, b"a", iv_for(tx), now=1050.0)
    assert not tx.soft_expired(1079.9) and tx.soft_expired(1080.0) and not tx.expired(1080.0)
    assert tx.next_deadline(1050.0) == 1080.0 and tx.next_deadline(1085.0) == 1100.0
    assert decapsulate(rx, packet, 1099.0) == (17, b"a")
    assert tx.expired(1100.0)
    with pytest.raises(SAExpired):
        encapsulate(tx, 17, b"b", iv_for(tx), now=1100.0)
    late = seal(tx, bytes(14) + b"\x00\x11", 2)
    with pytest.raises(EspExpired):
        decapsulate(rx, late, 1100.0)
    assert rx.counters.expired == 1


def test_byte_lifetime_soft_then_hard():
    tx, rx = make_pair(lifetime_bytes=1000, soft_fraction=0.5)
    for _ in range(3):
        decapsulate(rx, encapsulate(tx, 17, bytes(125), iv_for(tx)), 0.0)
    assert not tx.soft_expired(0.0) and not rx.soft_expired(0.0)
    decapsulate(rx, encapsulate(tx, 17, bytes(125), iv_for(tx)), 0.0)  # 500 octets: soft
    assert tx.soft_expired(0.0) and rx.soft_expired(0.0) and not tx.expired(0.0)
    for _ in range(4):
        encapsulate(tx, 17, bytes(125), iv_for(tx))
    assert tx.expired(0.0)
    with pytest.raises(SAExpired):
        encapsulate(tx, 17, b"", iv_for(tx))


def test_sequence_counter_never_wraps():
    tx, rx = make_pair()
    tx.seq = MAX_SEQ - 1
    assert not tx.expired(0.0) and tx.soft_expired(0.0)
    packet = encapsulate(tx, 17, b"last", iv_for(tx))
    assert struct.unpack("!I", packet[4:8])[0] == MAX_SEQ
    assert decapsulate(rx, packet, 0.0) == (17, b"last")
    assert tx.expired(0.0)
    with pytest.raises(SequenceExhausted):
        encapsulate(tx, 17, b"wrapped", iv_for(tx))


def test_callers_errors_are_local():
    tx, _ = make_pair()
    with pytest.raises(LocalProtocolError, match="16-octet IV"):
        encapsulate(tx, 17, b"", bytes(8))
    with pytest.raises(LocalProtocolError, match="SPI"):
        SecurityAssociation(255, "des-cbc", bytes(8), "hmac-md5-96", bytes(16), "10.0.0.1",
                            "10.0.0.2")
    with pytest.raises(LocalProtocolError, match="addresses"):
        SecurityAssociation(SPI, "des-cbc", bytes(8), "hmac-md5-96", bytes(16), "10.0.0.1",
                            "not-an-address")
    assert "enc_key" not in repr(tx) and "counters" not in repr(tx)
    assert SecurityAssociation.from_keys(SPI, "des-cbc", bytes(8), "hmac-md5-96", bytes(16),
                                         "10.0.0.1", "10.0.0.2",
                                         lifetime_bytes=None).lifetime_bytes == 0


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_give_only_remote_protocol_errors(data):
    _, rx = make_pair("3des-cbc", "hmac-md5-96")
    for candidate in (data, struct.pack("!I", SPI) + data):
        try:
            decapsulate(rx, candidate, 0.0)
        except RemoteProtocolError as exc:
            assert exc.wire_answer is DISCARD


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=6).map(lambda b: b * 8), st.integers(0, MAX_SEQ + 1))
def test_any_authentic_plaintext_gives_a_payload_or_a_remote_error(blocks, seq):
    """Past the ICV, whatever the plaintext holds (padding, pad length, next header)."""
    tx, rx = make_pair("des-cbc", "hmac-sha1-96")
    try:
        next_header, payload = decapsulate(rx, seal(tx, blocks, seq & MAX_SEQ), 0.0)
    except RemoteProtocolError:
        return
    assert next_header == blocks[-1] and len(payload) == len(blocks) - 2 - blocks[-2]


# IPv4 helpers -------------------------------------------------------------------------------
def ref_sum(data: bytes) -> int:
    """RFC 1071's loop, independent of ipv4.ones_sum's big-integer shortcut."""
    data = data + b"\0" * (len(data) & 1)
    total = 0
    for i in range(0, len(data), 2):
        total += (data[i] << 8) | data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return total


def ipv4_udp(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    udp = bytearray(struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload)
    pseudo = address(src) + address(dst) + struct.pack("!HH", 17, len(udp))
    struct.pack_into("!H", udp, 6, (~ref_sum(pseudo + udp) & 0xFFFF) or 0xFFFF)
    header = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0x1234, 0x4000, 64,
                                   17, 0, address(src), address(dst)))
    struct.pack_into("!H", header, 10, ~ref_sum(bytes(header)) & 0xFFFF)
    return bytes(header + udp)


def udp_checksum_ok(src: bytes, dst: bytes, segment: bytes) -> bool:
    if segment[6:8] == b"\0\0":
        return True  # no checksum
    return ref_sum(src + dst + struct.pack("!HH", 17, len(segment)) + segment) == 0xFFFF


@given(st.binary(max_size=300))
def test_big_integer_checksum_equals_rfc1071_loop(data):
    assert ones_sum(data) == ref_sum(data) or {ones_sum(data), ref_sum(data)} == {0, 0xFFFF}


def test_udp_helper_builds_valid_checksums():
    packet = ipv4_udp("192.0.2.1", "198.51.100.7", 1701, 1701, b"hello")
    assert ref_sum(packet[:20]) == 0xFFFF
    assert udp_checksum_ok(packet[12:16], packet[16:20], packet[20:])


@pytest.mark.parametrize("encap", [None, (4500, 4500)], ids=["esp", "udp-encap"])
def test_protect_and_unprotect_ipv4(encap):
    tx, rx = make_pair(encap=encap)
    inner = ipv4_udp("192.0.2.1", "198.51.100.7", 1701, 1701, b"\xc8\x02" + bytes(40))
    wire = protect_ipv4(tx, inner, iv_for(tx))
    outer = parse_ipv4(wire)
    assert outer.proto == (50 if encap is None else 17) and outer.total_len == len(wire)
    assert ref_sum(wire[:20]) == 0xFFFF and wire[4:9] == inner[4:9]  # id, flags, TTL kept
    if encap:
        assert wire[20:24] == b"\x11\x94\x11\x94" and wire[26:28] == b"\0\0"  # RFC 3948 §2.1
        # Without NAT-OA the receiver may zero the inner UDP checksum (RFC 3948 §3.1.2).
        zeroed = unprotect_ipv4(rx, wire, 0.0)
        assert zeroed[:26] == inner[:26] and zeroed[26:28] == b"\0\0" and zeroed[28:] == inner[28:]
        wire = protect_ipv4(tx, inner, iv_for(tx))
    original = (address("192.0.2.1"), address("198.51.100.7"))
    assert unprotect_ipv4(rx, wire, 0.0, original=original) == inner


def test_unprotect_after_nat_repairs_the_inner_udp_checksum():
    """RFC 3948 §3.1.2: the client's checksum covers 10.0.0.5; the server sees 203.0.113.9."""
    tx = SecurityAssociation(SPI, "3des-cbc", bytes(range(24)), "hmac-sha1-96", bytes(20),
                             "10.0.0.5", "198.51.100.7", encap=(4500, 4500))
    rx = SecurityAssociation(SPI, "3des-cbc", bytes(range(24)), "hmac-sha1-96", bytes(20),
                             "203.0.113.9", "198.51.100.7", encap=(40123, 4500))
    inner = ipv4_udp("10.0.0.5", "198.51.100.7", 1701, 1701, b"l2tp" * 10)
    wire = bytearray(protect_ipv4(tx, inner, bytes(8)))
    wire[12:16] = address("203.0.113.9")  # what the NAT does to the outer header
    received = (address("203.0.113.9"), address("198.51.100.7"))
    with_oa = unprotect_ipv4(rx, bytes(wire), 0.0, original=(address("10.0.0.5"),
                                                            address("198.51.100.7")))
    assert with_oa[20:26] == inner[20:26] and with_oa[26:28] != b"\0\0"
    assert udp_checksum_ok(*received, with_oa[20:])
    rx.window = type(rx.window)(64)
    without_oa = unprotect_ipv4(rx, bytes(wire), 0.0)
    assert without_oa[26:28] == b"\0\0" and without_oa[28:] == inner[28:]


def test_ipv4_envelope_errors():
    tx, rx = make_pair()
    inner = ipv4_udp("192.0.2.1", "198.51.100.7", 1701, 1701, b"x")
    fragment = inner[:6] + b"\x20\x00" + inner[8:]
    with pytest.raises(LocalProtocolError, match="fragments"):
        protect_ipv4(tx, fragment, iv_for(tx))
    with pytest.raises(LocalProtocolError):
        protect_ipv4(tx, b"\x60" + bytes(39), iv_for(tx))
    wire = protect_ipv4(tx, inner, iv_for(tx))
    for bad in (wire[:19], wire[:9] + b"\x11" + wire[10:], b"\x46" + wire[1:]):
        with pytest.raises(EspMalformed):
            unprotect_ipv4(rx, bad, 0.0)
    assert rx.counters.malformed == 3


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120), st.sampled_from([None, (4500, 4500)]))
def test_any_bytes_into_unprotect_give_only_remote_protocol_errors(data, encap):
    _, rx = make_pair(encap=encap)
    header = bytes.fromhex("4500") + (20 + len(data)).to_bytes(2, "big") + bytes(5) + \
        (bytes([17]) if encap else bytes([50])) + bytes(2) + address("192.0.2.1") + \
        address("198.51.100.7")
    for candidate in (data, header + data, header + b"\x11\x94\x11\x94" + data):
        try:
            unprotect_ipv4(rx, candidate, 0.0)
        except RemoteProtocolError as exc:
            assert exc.wire_answer is DISCARD


@settings(max_examples=60)
@given(st.sampled_from(sorted(CIPHERS)), st.integers(0, 65535), st.integers(0, 65535),
       st.binary(max_size=1500))
def test_encapsulate_udp_equals_encapsulating_a_checksummed_segment(cipher, sport, dport,
                                                                     payload):
    """The policy's one-buffer path (UDP header, checksum and ESP trailer built in the
    plaintext) gives the very bytes of `encapsulate` around the same UDP segment, and the
    receiver gets a segment whose RFC 768 checksum holds for the SA's addresses."""
    one, other = make_pair(cipher)
    src, dst = address("192.0.2.1"), address("198.51.100.7")
    segment = bytearray(struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload)
    checksum = ~ref_sum(src + dst + struct.pack("!HH", 17, len(segment)) + segment) & 0xFFFF
    segment[6:8] = (checksum or 0xFFFF).to_bytes(2, "big")
    iv = iv_for(one, len(payload))
    packet = encapsulate_udp(one, sport, dport, payload, address_sum(src, dst), iv)
    assert packet == encapsulate(other, 17, bytes(segment), iv)
    rx = make_pair(cipher)[1]
    next_header, got = decapsulate(rx, packet, 0.0)
    assert (next_header, got) == (17, bytes(segment))
    assert udp_checksum_ok(src, dst, got)
    assert one.counters.bytes == rx.counters.bytes == len(segment)
