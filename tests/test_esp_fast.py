"""The compiled ESP path (tunnels/ipsec/_fastesp.c) against the pure-Python one: the same
bytes for every transform, plain and UDP-encapsulated, each opening the other's packets, the
same counted outcome for tampered, badly padded, short and misaligned input, the checksum
equal to ipv4.py_ones_sum, RFC 3602's AES-CBC vectors, and the compiled path actually in use
here (CI and the README's set-up build it)."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.accel import require_compiled
from tunnels.ipsec import crypto
from tunnels.ipsec.crypto import CIPHERS, INTEGRITY, CbcCipher, Hmac96
from tunnels.ipsec.esp import (EspAuthenticationFailed, EspBadPadding, EspError, EspMalformed,
                               decapsulate, encapsulate, encapsulate_udp, protect_ipv4,
                               unprotect_ipv4)
from tunnels.ipsec.ipv4 import address_sum, py_ones_sum
from tunnels.ipsec.sa import SecurityAssociation

try:
    from tunnels.ipsec import _fastesp
except ImportError:  # test_compiled_path_is_in_use says why; the pairs below skip
    _fastesp = None

needs_c = pytest.mark.skipif(_fastesp is None, reason="tunnels/ipsec/_fastesp.c not built")
COMBOS = list(itertools.product(sorted(CIPHERS), sorted(INTEGRITY)))
ENCAPS = pytest.mark.parametrize("encap", [None, (4500, 4500)], ids=["esp", "udp-4500"])
SPI = 0x5EC0A001


def pair(cipher: str, integrity: str, encap: tuple[int, int] | None = None):
    """One SA twice, same keys: on the compiled context, and on the pure-Python path."""
    rnd = random.Random(f"{cipher}/{integrity}")
    enc_key = rnd.randbytes(CIPHERS[cipher].key_size)
    auth_key = rnd.randbytes(INTEGRITY[integrity].key_size)
    c, py = (SecurityAssociation.from_keys(SPI, cipher, enc_key, integrity, auth_key,
                                           "192.0.2.10", "198.51.100.20", encap=encap)
             for _ in range(2))
    c.fast = _fastesp.Context(cipher, enc_key, integrity, auth_key)
    py.fast = None
    return c, py


def ip_packet(payload: bytes, proto: int = 17) -> bytes:
    header = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 7, 0, 64,
                                   proto, 0, bytes([192, 0, 2, 10]), bytes([198, 51, 100, 20])))
    return bytes(header) + payload


def test_compiled_path_is_in_use():
    require_compiled(_fastesp, "tunnels/ipsec/_fastesp.c", "tunnels.ipsec._fastesp")
    assert crypto.FAST
    from tunnels.ipsec import ipv4
    assert ipv4.ones_sum is _fastesp.checksum
    for cipher, integrity in COMBOS:  # every transform IKE can negotiate runs compiled
        sa = SecurityAssociation.from_keys(SPI, cipher, bytes(CIPHERS[cipher].key_size),
                                           integrity, bytes(INTEGRITY[integrity].key_size),
                                           "192.0.2.10", "198.51.100.20")
        assert type(sa.fast) is _fastesp.Context, f"{cipher}/{integrity} not compiled"


@needs_c
@pytest.mark.parametrize("cipher, integrity", COMBOS)
def test_same_bytes_and_each_opens_the_other(cipher, integrity):
    c, py = pair(cipher, integrity)
    c_rx, py_rx = pair(cipher, integrity)
    for n in [0, 1, 2, 7, 13, 14, 15, 16, 17, 100, 1400, 1473]:
        payload = random.Random(n).randbytes(n)
        iv = bytes([n & 0xFF]) * c.enc.block_size
        for sealed_c, sealed_py in (
                (encapsulate(c, 6, payload, iv), encapsulate(py, 6, payload, iv)),
                (encapsulate_udp(c, 1701, 1701, payload, 0x1234, iv),
                 encapsulate_udp(py, 1701, 1701, payload, 0x1234, iv))):
            assert sealed_c == sealed_py, f"{n} octets"
            assert decapsulate(py_rx, sealed_c, 1.0) == decapsulate(c_rx, sealed_py, 1.0)
    assert c.counters == py.counters and c_rx.counters == py_rx.counters


@needs_c
@pytest.mark.parametrize("cipher, integrity", COMBOS)
def test_payloads_come_back_and_iv_none_draws_a_fresh_one(cipher, integrity):
    c, py = pair(cipher, integrity)
    rx = pair(cipher, integrity)[1]
    ivs = set()
    for n in range(0, 40):
        payload = bytes(range(n))
        sealed = encapsulate(c, 17, payload, None)
        ivs.add(sealed[8:8 + c.enc.block_size])
        assert decapsulate(rx, sealed, 1.0) == (17, payload)
    assert len(ivs) == 40


@needs_c
@ENCAPS
@pytest.mark.parametrize("cipher, integrity", COMBOS)
def test_ipv4_transport_mode_both_ways(cipher, integrity, encap):
    c, py = pair(cipher, integrity, encap)
    c_rx, py_rx = pair(cipher, integrity, encap)
    udp = struct.pack("!HHHH", 1701, 1701, 8 + 300, 0) + bytes(300)
    packet = ip_packet(udp)
    iv = bytes(range(c.enc.block_size))
    out_c, out_py = protect_ipv4(c, packet, iv), protect_ipv4(py, packet, iv)
    assert out_c == out_py
    assert unprotect_ipv4(py_rx, out_c, 1.0) == unprotect_ipv4(c_rx, out_py, 1.0)


@needs_c
def test_udp_checksum_over_the_pseudo_header_matches_for_any_addresses():
    rnd = random.Random(3)
    for _ in range(200):
        c, py = pair("aes-cbc-128", "hmac-sha1-96")
        addresses = address_sum(rnd.randbytes(4), rnd.randbytes(4))
        sport, dport = rnd.randrange(65536), rnd.randrange(65536)
        payload = rnd.randbytes(rnd.randrange(0, 200))
        iv = rnd.randbytes(16)
        assert (encapsulate_udp(c, sport, dport, payload, addresses, iv)
                == encapsulate_udp(py, sport, dport, payload, addresses, iv))


def forge(sa: SecurityAssociation, plaintext: bytes, seq: int = 1) -> bytes:
    """An authentic ESP packet around any `plaintext` (whole blocks), bad padding included:
    built with fresh pure-Python contexts, as a peer with the keys could."""
    iv = bytes(sa.enc.block_size)
    head = struct.pack("!II", sa.spi, seq) + iv
    ciphertext = CbcCipher(sa.cipher, sa.enc_key).encrypt(iv, bytearray(plaintext))
    return head + ciphertext + Hmac96(sa.integrity, sa.auth_key).icv(head, ciphertext)


def outcome(sa: SecurityAssociation, data: bytes):
    try:
        return decapsulate(sa, data, 1.0)
    except EspError as exc:
        return type(exc)


def both(cipher: str, integrity: str, data: bytes):
    """The outcome and the SA's counters afterwards, on each path."""
    c, py = pair(cipher, integrity)
    return (outcome(c, data), c.counters.as_dict()), (outcome(py, data), py.counters.as_dict())


@needs_c
@pytest.mark.parametrize("cipher, integrity", COMBOS)
def test_tampered_badly_padded_short_and_misaligned_input_counted_alike(cipher, integrity):
    c = pair(cipher, integrity)[0]
    block = c.enc.block_size
    good = encapsulate(c, 17, bytes(50), bytes(block))
    cases = {
        "icv": good[:-1] + bytes([good[-1] ^ 1]),
        "ciphertext": good[:20] + bytes([good[20] ^ 0x80]) + good[21:],
        "truncated": good[:-3],
        "one block": good[:8 + block] + good[-12:],
        "misaligned": good[:-12] + b"\0" + good[-12:],
        "header only": good[:8],
        "pad length too long": forge(c, bytes(block - 2) + bytes([block, 17])),
        "pad length past the IV": forge(c, bytes(block - 2) + bytes([255, 17])),
        "padding not 1, 2, 3": forge(c, bytes(block - 5) + b"\x01\x03\x03" + b"\x03\x11"),
        "no padding, fine": forge(c, bytes(block - 2) + b"\x00\x11"),
        "padding right": forge(c, bytes(block - 4) + b"\x01\x02\x02\x06"),
    }
    expected = {"icv": EspAuthenticationFailed, "ciphertext": EspAuthenticationFailed,
                "truncated": EspMalformed, "one block": EspMalformed,
                "misaligned": EspMalformed, "header only": EspMalformed,
                "pad length too long": EspBadPadding, "pad length past the IV": EspBadPadding,
                "padding not 1, 2, 3": EspBadPadding}
    for name, data in cases.items():
        on_c, on_py = both(cipher, integrity, data)
        assert on_c == on_py, name
        if name in expected:
            assert on_c[0] is expected[name], name


@needs_c
@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120), st.sampled_from(COMBOS))
def test_any_bytes_give_the_same_outcome_and_no_crash(junk, combo):
    spi_seq = struct.pack("!II", SPI, 1)
    for data in (junk, spi_seq + junk):
        on_c, on_py = both(*combo, data)
        assert on_c == on_py


@needs_c
def test_arguments_are_checked():
    ctx = _fastesp.Context("aes-cbc-128", bytes(16), "hmac-sha1-96", bytes(20))
    with pytest.raises(ValueError, match="16-octet IV"):
        ctx.seal(1, 1, bytes(8), 17, b"")
    with pytest.raises(OverflowError):
        ctx.seal(1 << 32, 1, None, 17, b"")
    with pytest.raises(OverflowError):
        ctx.seal(1, 1, None, 256, b"")
    with pytest.raises(OverflowError):
        ctx.seal_udp(1, 1, None, 70000, 1701, 0, b"")
    with pytest.raises(OverflowError):
        ctx.seal_udp(1, 1, None, 1701, 1701, 0, bytes(65528))
    with pytest.raises(ValueError, match="keys"):
        _fastesp.Context("aes-cbc-128", bytes(15), "hmac-sha1-96", bytes(20))
    with pytest.raises(NotImplementedError):
        _fastesp.Context("aes-gcm-128", bytes(16), "hmac-sha1-96", bytes(20))
    with pytest.raises(ValueError, match="not initialised"):
        _fastesp.Context.__new__(_fastesp.Context).open(b"")
    assert ctx.open(memoryview(bytes(52))) == _fastesp.AUTH
    assert ctx.open(bytearray(7)) == _fastesp.MALFORMED


@needs_c
@pytest.mark.parametrize("integrity, digest, key_size, size", [
    ("hmac-sha1-96", hashlib.sha1, 20, 12), ("hmac-md5-96", hashlib.md5, 16, 12),
    ("hmac-sha256-128", hashlib.sha256, 32, 16)])  # RFC 4868's too, ready for crypto.py
def test_icv_is_the_truncated_hmac(integrity, digest, key_size, size):
    key = bytes(range(key_size))
    ctx = _fastesp.Context("aes-cbc-128", bytes(16), integrity, key)
    assert ctx.icv_size == size and ctx.block_size == 16
    for n in (0, 1, 55, 56, 64, 1000):
        data = bytes(range(256)) * 4
        assert ctx.icv(data[:n]) == hmac.new(key, data[:n], digest).digest()[:size]


# RFC 3602 §4, cases #1-#4: AES-128-CBC (key, IV, plaintext, ciphertext). ESP appends its
# trailer after the plaintext, so the first len(plaintext) octets of the ciphertext are the
# vector's (CBC: a block depends only on the blocks before it).
RFC3602 = [
    ("06a9214036b8a15b512e03d534120006", "3dafba429d9eb430b422da802c9fac41",
     b"Single block msg".hex(), "e353779c1079aeb82708942dbe77181a"),
    ("c286696d887c9aa0611bbb3e2025a45a", "562e17996d093d28ddb3ba695a2e6f58",
     bytes(range(32)).hex(),
     "d296cd94c2cccf8a3a863028b5e1dc0a7586602d253cfff91b8266bea6d61ab1"),
    ("6c3ea0477630ce21a2ce334aa746c2cd", "c782dc4c098c66cbd9cd27d825682c81",
     b"This is a 48-byte message (exactly 3 AES blocks)".hex(),
     "d0a02b3836451753d493665d33f0e8862dea54cdb293abc7506939276772f8d5"
     "021c19216bad525c8579695d83ba2684"),
    ("56e47a38c5598974bc46903dba290349", "8ce82eefbea0da3c44699ed7db51b7d9",
     bytes(range(0xA0, 0xE0)).hex(),
     "c30e32ffedc0774e6aff6af0869f71aa0f3af07a9a31a9c684db207eb0ef8e4e"
     "35907aa632c3ffdf868bb7b29d3d46ad83ce9f9a102ee99d49a53e87f4c3da55"),
]


@needs_c
@pytest.mark.parametrize("key, iv, plaintext, ciphertext", RFC3602)
def test_rfc3602_aes_cbc_vectors(key, iv, plaintext, ciphertext):
    ctx = _fastesp.Context("aes-cbc-128", bytes.fromhex(key), "hmac-sha1-96", bytes(20))
    plain = bytes.fromhex(plaintext)
    sealed = ctx.seal(SPI, 1, bytes.fromhex(iv), 17, plain)
    assert sealed[:8] == struct.pack("!II", SPI, 1)
    assert sealed[8:24] == bytes.fromhex(iv)
    assert sealed[24:24 + len(plain)].hex() == ciphertext
    assert ctx.open(sealed) == (17, plain)


@needs_c
def test_checksum_equals_the_python_sum():
    rnd = random.Random(1071)
    for n in range(65):
        for _ in range(20):
            data = rnd.randbytes(n)
            assert _fastesp.checksum(data) == py_ones_sum(data), data.hex()
    for data in (bytes(64), b"\xff" * 64, b"\xff\xff", b"\x00\x00\xff\xff", b"\xff",
                 rnd.randbytes(1400), rnd.randbytes(65535), rnd.randbytes(100001),
                 b"\xff" * 100000):
        assert _fastesp.checksum(data) == py_ones_sum(data)
        assert _fastesp.checksum(memoryview(data)) == py_ones_sum(data)
        assert _fastesp.checksum(bytearray(data)) == py_ones_sum(data)
