"""ISAKMP codecs against real captures (decoded and re-encoded byte for byte), the
RFC 2409 PSK hash against a real exchange, the DH groups, and malformed input."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.all import UDP, rdpcap

from tunnels.errors import RemoteProtocolError
from tunnels.ipsec.ike import crypto as c
from tunnels.ipsec.ike import payloads as pl
from tunnels.ipsec.ike.constants import (
    VID_DPD,
    VID_NAT_T_DRAFT_02N,
    VID_RFC3947,
    ExchangeType,
    NotifyType,
    PayloadType,
)
from tunnels.ipsec.ike.phase1 import parse_ike_transform

DATA = Path(__file__).parent / "data" / "ike"


def isakmp_messages(name: str) -> list[bytes]:
    """ISAKMP messages of a capture: UDP 500, and UDP 4500 after the non-ESP marker."""
    out = []
    for pkt in rdpcap(str(DATA / name)):
        if UDP not in pkt:
            continue
        u, data = pkt[UDP], bytes(pkt[UDP].payload)
        if 4500 in (u.sport, u.dport):
            if data[:4] != b"\0\0\0\0":
                continue  # ESP in UDP (RFC 3948)
            data = data[4:]
        elif 500 not in (u.sport, u.dport):
            continue
        out.append(data)
    return out


CAPTURES = ["l2tp-ipsec.pcap", "ISAKMP_sa_setup.cap", "ikev1-certs.pcap", "ipsec.cap"]


@pytest.mark.parametrize("name", CAPTURES)
def test_real_captures_decode_and_reencode_byte_for_byte(name):
    plain = 0
    for data in isakmp_messages(name):
        header, body = pl.decode_header(data)
        if header.flags & 1:
            assert len(body) % 8 == 0  # encrypted: whole cipher blocks
            continue
        msg = pl.decode_plain(data)
        again = pl.encode_plain(header.icookie, header.rcookie, header.exchange,
                                header.message_id, list(msg.payloads))
        assert again == data[:header.length]
        assert b"".join(msg.raws) == body
        plain += 1
    assert plain >= 4


def test_strongswan_main_mode_as_we_read_it():
    """strongSwan 5.9.8 (tests/data/ike/l2tp-ipsec.pcap): MM1 offers, NAT-T VIDs, NAT-D."""
    mm1, mm2, mm3, mm4 = (pl.decode_plain(m) for m in isakmp_messages("l2tp-ipsec.pcap")[:4])
    assert mm1.header.exchange == ExchangeType.IDENTITY_PROTECTION
    vids = [v.data for v in mm1.find(pl.VID)]
    assert VID_RFC3947 in vids and VID_NAT_T_DRAFT_02N in vids and VID_DPD in vids
    chosen = parse_ike_transform(mm2.first(pl.SA).proposals[0].transforms[0])
    assert chosen is not None and chosen[0].auth == "psk"
    assert len(mm3.find(pl.NAT_D)) == 2 and len(mm4.find(pl.NAT_D)) == 2
    assert len(mm3.first(pl.KE).data) in (128, 256)


def test_cisco_nat_d_type_15_is_kept_as_unknown():
    """Cisco IOS in ISAKMP_sa_setup.cap uses payload 15, an early draft's NAT-D: not ours,
    skipped by its length (RFC 2408 §5.2 lets private/unknown types be ignored)."""
    mm3 = pl.decode_plain(isakmp_messages("ISAKMP_sa_setup.cap")[2])
    assert [p.type for p in mm3.payloads if isinstance(p, pl.Unknown)] == [15, 15]


def test_psk_hash_r_matches_a_real_exchange():
    """ike-scan's psk-crack input (tests/data/ike/psk_test1_md5, PSK "abcde", MD5): the
    fields are g_xr:g_xi:cky_r:cky_i:sai_b:idir_b:ni_b:nr_b:hash_r. RFC 2409 §5:
    SKEYID = prf(psk, Ni_b | Nr_b); HASH_R = prf(SKEYID, g^xr | g^xi | CKY-R | CKY-I |
    SAi_b | IDir_b)."""
    fields = (DATA / "psk_test1_md5").read_text().strip().split(":")
    gxr, gxi, cky_r, cky_i, sai_b, idir_b, ni_b, nr_b, want = map(bytes.fromhex, fields)
    skeyid = c.skeyid_psk("md5", b"abcde", ni_b, nr_b)
    assert c.hash_r("md5", skeyid, gxi, gxr, cky_i, cky_r, sai_b, idir_b) == want
    assert c.hash_r("md5", c.skeyid_psk("md5", b"abcdf", ni_b, nr_b), gxi, gxr, cky_i, cky_r,
                    sai_b, idir_b) != want
    sa = pl.SA.decode_body(pl.Reader(sai_b))  # the SA body as the responder hashed it
    assert sa.encode_body() == sai_b
    assert parse_ike_transform(sa.proposals[0].transforms[0])[0].hash == "md5"
    id_ = pl.ID.decode_body(pl.Reader(idir_b))
    assert (id_.id_type, id_.protocol, id_.port) == (1, 17, 500)


@pytest.mark.parametrize("group,bits", [(1, 768), (2, 1024), (14, 2048)])
def test_modp_primes_are_the_rfc_safe_primes(group, bits):
    p = c.MODP_PRIMES[group]
    assert p.bit_length() == bits and p >> (bits - 64) == 2**64 - 1 and p % 2**64 == 2**64 - 1
    q = (p - 1) // 2
    assert pow(3, p - 1, p) == 1 and pow(3, q - 1, q) == 1  # Fermat on p and (p-1)/2


def test_dh_agrees_and_rejects_degenerate_values():
    import random
    rnd = random.Random(3).randbytes
    a, b = c.DHKeyPair.generate(2, rnd), c.DHKeyPair.generate(2, rnd)
    assert a.shared_secret(b.public) == b.shared_secret(a.public)
    assert len(a.public) == 128
    for bad in (b"\0" * 128, (1).to_bytes(128, "big"),
                (c.MODP_PRIMES[2] - 1).to_bytes(128, "big"), b"\1" * 129, b""):
        with pytest.raises(RemoteProtocolError):
            a.shared_secret(bad)
    # a value without its leading zero octets is the same number (SoftEther sends those)
    y = 2**1000 + 12345
    assert a.shared_secret(y.to_bytes(126, "big")) == a.shared_secret(y.to_bytes(128, "big"))
    assert len(a.shared_secret(y.to_bytes(126, "big"))) == 128


def test_skeyid_e_expansion_appendix_b():
    """3DES needs 24 bytes, SHA-1 gives 20: Ka = K1 | K2, K1 = prf(SKEYID_e, 0),
    K2 = prf(SKEYID_e, K1)."""
    keys = c.derive_phase1("sha1", b"k" * 20, b"g" * 128, b"i" * 8, b"r" * 8, 24)
    k1 = c.prf("sha1", keys.skeyid_e, b"\0")
    assert keys.enc_key == (k1 + c.prf("sha1", keys.skeyid_e, k1))[:24]
    assert c.derive_phase1("sha1", b"k" * 20, b"g" * 128, b"i" * 8, b"r" * 8, 16).enc_key == \
        keys.skeyid_e[:16]


def test_keymat_expansion():
    one = c.keymat("sha1", b"d" * 20, 3, b"\1\2\3\4", b"n" * 32, b"m" * 32, 20)
    long = c.keymat("sha1", b"d" * 20, 3, b"\1\2\3\4", b"n" * 32, b"m" * 32, 52)
    assert long[:20] == one
    assert long[20:40] == c.prf("sha1", b"d" * 20, one + b"\3\1\2\3\4" + b"n" * 32 + b"m" * 32)


def test_attribute_forms():
    w = pl.Writer()
    for a in (pl.Attribute(1, 7), pl.Attribute.long(12, 28800), pl.Attribute(12, 0x12345)):
        a.encode(w)
    data = w.getvalue()
    assert data[:4] == bytes.fromhex("80010007")
    assert data[4:12] == bytes.fromhex("000c000400007080")
    r = pl.Reader(data)
    assert [pl.Attribute.decode(r) for _ in range(3)] == [
        pl.Attribute(1, 7), pl.Attribute(12, 28800, 4), pl.Attribute(12, 0x12345, 3)]


def _mm_with(payload_bytes: bytes, first: int) -> bytes:
    return pl.Header(b"i" * 8, b"\0" * 8, first, 2, 0, 0).encode(len(payload_bytes)) + \
        payload_bytes


@pytest.mark.parametrize("data,notify", [
    (b"\0" * 27, None),
    (pl.Header(b"i" * 8, b"\0" * 8, 0, 2, 0, 0, version=0x20).encode(0), "INVALID_MAJOR_VERSION"),
    (pl.Header(b"i" * 8, b"\0" * 8, 0, 2, 0, 0).encode(10), "UNEQUAL_PAYLOAD_LENGTHS"),
    (_mm_with(b"\0\0\0\3", PayloadType.VID), "PAYLOAD_MALFORMED"),  # length 3 < 4
    (_mm_with(b"\0\0\0\x09abcd", PayloadType.VID), "PAYLOAD_MALFORMED"),  # past the end
    (_mm_with(b"\0\0\0\x04", PayloadType.P), "INVALID_PAYLOAD_TYPE"),  # proposal outside SA
    (_mm_with(b"\0\0\0\x0c\0\0\0\2\0\0\0\1", PayloadType.SA), "DOI_NOT_SUPPORTED"),
    (_mm_with(b"\0\0\0\x0c\0\0\0\1\0\0\0\1", PayloadType.SA), "BAD_PROPOSAL_SYNTAX"),
    # a proposal that announces 2 transforms and carries none
    (_mm_with(b"\0\0\0\x14\0\0\0\1\0\0\0\1" + b"\0\0\0\x08\1\1\0\2", PayloadType.SA),
     "BAD_PROPOSAL_SYNTAX"),
    (_mm_with(b"\0\0\0\x08abcd", PayloadType.NONCE), "PAYLOAD_MALFORMED"),  # nonce < 8
])
def test_malformed_messages_name_their_notify(data, notify):
    with pytest.raises(RemoteProtocolError) as info:
        pl.decode_plain(data)
    if notify is not None:
        assert info.value.wire_answer.detail == NotifyType[notify]


def test_padding_after_the_last_payload_is_ignored():
    _, body = pl.encode_payloads([pl.HASH(b"h" * 20), pl.NONCE(b"n" * 16)])
    payloads, raws = pl.decode_payloads(PayloadType.HASH, body + b"\0" * 7)
    assert payloads == (pl.HASH(b"h" * 20), pl.NONCE(b"n" * 16))
    assert b"".join(raws) == body


def test_every_payload_round_trips():
    payloads = [
        pl.SA((pl.Proposal(1, 3, b"\1\2\3\4", (pl.Transform(1, 12, (pl.Attribute(6, 256),)),
                                                 pl.Transform(2, 3, ()))),)),
        pl.KE(b"k" * 128), pl.ID(1, b"\x0a\0\0\2", 17, 1701), pl.CERT(4, b"der"), pl.CR(4, b""),
        pl.HASH(b"h" * 20), pl.SIG(b"s" * 64), pl.NONCE(b"n" * 32),
        pl.N(NotifyType.R_U_THERE, 1, b"c" * 16, b"\0\0\0\1"), pl.D(3, (b"\1\2\3\4", b"abcd")),
        pl.VID(VID_DPD), pl.NAT_D(b"d" * 20), pl.NAT_D_DRAFT(b"e" * 16),
        pl.NAT_OA(1, b"\x0a\0\0\2"), pl.NAT_OA_DRAFT(1, b"\x0a\0\0\3"), pl.Unknown(200, b"x"),
    ]
    data = pl.encode_plain(b"i" * 8, b"r" * 8, 2, 0, payloads)
    assert list(pl.decode_plain(data).payloads) == payloads


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_decode_or_raise_remote_protocol_error(data):
    try:
        pl.decode_plain(data)
    except RemoteProtocolError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=120), st.integers(0, 255))
def test_any_body_after_a_valid_header(body, first):
    try:
        pl.decode_plain(pl.Header(b"i" * 8, b"r" * 8, first, 2, 0, 0).encode(len(body)) + body)
    except RemoteProtocolError:
        pass
