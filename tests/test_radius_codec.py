"""RADIUS codec: the RFC 2865 §7 examples byte for byte, hidden attributes, the Microsoft VSAs
with their encryption, scapy's RADIUS layer as an oracle on what we encode, and the
malformed-input invariant (any bytes give a packet or RemoteProtocolError)."""

from __future__ import annotations

import ast
import hashlib
import hmac
import ipaddress
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunnels.errors import LocalProtocolError, RemoteProtocolError
from tunnels.radius.attributes import (
    Attr,
    Attributes,
    ChapPassword,
    Crypt,
    FramedProtocol,
    ServiceType,
    hide_password,
    unhide_password,
)
from tunnels.radius.msvsa import (
    MS,
    EncryptionPolicy,
    EncryptionTypes,
    IdentString,
    MPPEKeysV1,
    MSCHAP2Response,
    MSCHAPResponse,
    salt_decrypt,
    salt_encrypt,
)
from tunnels.radius.packet import (
    BadAuthenticator,
    BadMessageAuthenticator,
    Code,
    Packet,
    VendorSpecific,
)

DATA = Path(__file__).parent / "data" / "radius"
VECTORS = json.loads((DATA / "rfc2865_radius_examples.json").read_text())
SECRET = VECTORS["shared_secret"].encode()
NAS = ipaddress.IPv4Address("192.168.1.16")


def vector(name: str) -> bytes:
    return bytes.fromhex(VECTORS["packets"][name]["hex"])


def counter_random(start: int = 0):
    state = [start]

    def random(n: int) -> bytes:
        out = bytes((state[0] + i) % 256 for i in range(n))
        state[0] += n
        return out
    return random


# RFC 2865 §7: each example packet encoded from its attributes, byte for byte -----------------

RFC_7 = {
    "7.1_access_request": (None, [(Attr.USER_NAME, "nemo"), (Attr.USER_PASSWORD, "arctangent"),
                                  (Attr.NAS_IP_ADDRESS, NAS), (Attr.NAS_PORT, 3)]),
    "7.1_access_accept": ("7.1_access_request", [
        (Attr.SERVICE_TYPE, ServiceType.LOGIN), (Attr.LOGIN_SERVICE, 0),
        (Attr.LOGIN_IP_HOST, ipaddress.IPv4Address("192.168.1.3"))]),
    "7.2_access_request_chap": (None, [
        (Attr.USER_NAME, "flopsy"),
        (Attr.CHAP_PASSWORD, ChapPassword(0x16, bytes.fromhex("e97557c316185895f293ff6344077275"))),
        (Attr.NAS_IP_ADDRESS, NAS), (Attr.NAS_PORT, 20), (Attr.SERVICE_TYPE, ServiceType.FRAMED),
        (Attr.FRAMED_PROTOCOL, FramedProtocol.PPP)]),
    "7.2_access_accept": ("7.2_access_request_chap", [
        (Attr.SERVICE_TYPE, ServiceType.FRAMED), (Attr.FRAMED_PROTOCOL, FramedProtocol.PPP),
        (Attr.FRAMED_IP_ADDRESS, ipaddress.IPv4Address("255.255.255.254")),
        (Attr.FRAMED_ROUTING, 2), (Attr.FRAMED_COMPRESSION, 1), (Attr.FRAMED_MTU, 1500)]),
    "7.3_access_request_1": (None, [(Attr.USER_NAME, "mopsy"), (Attr.USER_PASSWORD, "challenge"),
                                    (Attr.NAS_IP_ADDRESS, NAS), (Attr.NAS_PORT, 7)]),
    "7.3_access_challenge": ("7.3_access_request_1", [
        (Attr.REPLY_MESSAGE, "Challenge 32769430.  Enter response at prompt."),
        (Attr.STATE, b"32769430")]),
    "7.3_access_reject": ("7.3_access_request_2", []),
}


def _request_authenticator(name: str | None) -> bytes | None:
    return None if name is None else vector(name)[4:20]


@pytest.mark.parametrize("name", sorted(RFC_7))
def test_rfc2865_section7_encoded_byte_for_byte(name: str) -> None:
    request, attrs = RFC_7[name]
    raw = vector(name)
    packet = Packet(raw[0], raw[1], Attributes(attrs), raw[4:20])
    assert packet.encode(SECRET, _request_authenticator(request)) == raw


@pytest.mark.parametrize("name", sorted(RFC_7))
def test_rfc2865_section7_decoded_and_verified(name: str) -> None:
    request, attrs = RFC_7[name]
    packet = Packet.decode(vector(name), SECRET, _request_authenticator(request))
    expected = [(k, v.encode() if k == Attr.USER_PASSWORD else v) for k, v in attrs]
    assert list(packet.attributes) == expected


def test_rfc2865_section_7_3_erratum_state_length_is_rejected_and_the_fix_round_trips() -> None:
    """The second Access-Request prints State with length 0x10 in a 10-octet attribute: a
    strict parser must discard it; with 0x0a it decodes (password 99101462) and re-encodes."""
    printed = vector("7.3_access_request_2")
    with pytest.raises(RemoteProtocolError):
        Packet.decode(printed, SECRET)
    fixed = printed[:-10] + b"\x18\x0a" + printed[-8:]
    packet = Packet.decode(fixed, SECRET)
    assert packet.attributes.get(Attr.USER_PASSWORD) == b"99101462"
    assert packet.attributes.get(Attr.STATE) == b"32769430"
    assert Packet(1, 3, packet.attributes, packet.authenticator).encode(SECRET) == fixed


def test_tampered_reply_fails_its_response_authenticator() -> None:
    raw = bytearray(vector("7.2_access_accept"))
    raw[-1] ^= 1
    with pytest.raises(BadAuthenticator):
        Packet.decode(bytes(raw), SECRET, _request_authenticator("7.2_access_request_chap"))
    with pytest.raises(BadAuthenticator):  # right bytes, answering another request
        Packet.decode(vector("7.2_access_accept"), SECRET, b"\0" * 16)


# hidden attributes ---------------------------------------------------------------------------

@given(st.binary(min_size=1, max_size=128).filter(lambda b: not b.endswith(b"\0")),
       st.binary(min_size=1, max_size=40), st.binary(min_size=16, max_size=16))
def test_user_password_hiding_round_trips(password: bytes, secret: bytes, ra: bytes) -> None:
    hidden = hide_password(password, secret, ra)
    assert len(hidden) % 16 == 0 and unhide_password(hidden, secret, ra) == password


def test_user_password_longer_than_128_is_our_callers_error() -> None:
    with pytest.raises(LocalProtocolError):
        hide_password(b"x" * 129, SECRET, b"\0" * 16)


@given(st.binary(min_size=1, max_size=64), st.binary(min_size=2, max_size=2),
       st.binary(min_size=16, max_size=16))
def test_salt_encryption_round_trips_with_high_bit_salt(key: bytes, salt: bytes, ra: bytes) -> None:
    value = salt_encrypt(key, SECRET, ra, salt)
    assert value[0] & 0x80 and (len(value) - 2) % 16 == 0
    assert salt_decrypt(value, SECRET, ra) == key


def test_salt_encryption_layout_rfc2548_2_4_2() -> None:
    """b(1) = MD5(S + R + A); c(1) = p(1) xor b(1) with p = length octet + key + padding."""
    ra, salt, key = bytes(range(16)), b"\x80\x01", bytes(range(100, 116))
    value = salt_encrypt(key, SECRET, ra, salt)
    b1 = hashlib.md5(SECRET + ra + salt).digest()
    p1 = bytes(a ^ b for a, b in zip(value[2:18], b1, strict=True))
    assert p1 == bytes([16]) + key[:15]
    b2 = hashlib.md5(SECRET + value[2:18]).digest()
    p2 = bytes(a ^ b for a, b in zip(value[18:34], b2, strict=True))
    assert p2 == key[15:] + b"\0" * 15


def test_salt_without_high_bit_is_malformed() -> None:
    value = bytearray(salt_encrypt(b"k" * 16, SECRET, b"\0" * 16, b"\x80\x00"))
    value[0] &= 0x7F
    with pytest.raises(RemoteProtocolError):
        salt_decrypt(bytes(value), SECRET, b"\0" * 16)


# an Access-Accept with every Microsoft VSA, our encoding and scapy's reading ----------------

REQUEST_AUTH = bytes(range(16))
MS_ACCEPT = Attributes([
    (Attr.MESSAGE_AUTHENTICATOR, b""),
    (MS.MS_CHAP2_SUCCESS, IdentString(1, "S=" + "AB" * 20)),
    (MS.MS_MPPE_SEND_KEY, bytes(range(32, 48))),
    (MS.MS_MPPE_RECV_KEY, bytes(range(48, 64))),
    (MS.MS_MPPE_ENCRYPTION_POLICY, EncryptionPolicy.REQUIRED),
    (MS.MS_MPPE_ENCRYPTION_TYPES, int(EncryptionTypes.RC4_40 | EncryptionTypes.RC4_128)),
    (MS.MS_CHAP_MPPE_KEYS, MPPEKeysV1(b"L" * 8, b"N" * 16)),
    (Attr.FRAMED_IP_ADDRESS, ipaddress.IPv4Address("10.9.0.7")),
    (Attr.SESSION_TIMEOUT, 3600), (Attr.IDLE_TIMEOUT, 600), (Attr.CLASS, b"policy-1"),
])


def _ms_accept() -> bytes:
    return Packet(Code.ACCESS_ACCEPT, 7, MS_ACCEPT).encode(SECRET, REQUEST_AUTH,
                                                          random=counter_random(0x80))


def test_microsoft_vsas_round_trip_with_their_encryption() -> None:
    decoded = Packet.decode(_ms_accept(), SECRET, REQUEST_AUTH)
    assert list(decoded.attributes)[1:] == list(MS_ACCEPT)[1:]
    assert decoded.has_message_authenticator


def test_ms_chap_request_vsas_round_trip() -> None:
    attrs = Attributes([
        (Attr.MESSAGE_AUTHENTICATOR, b""), (Attr.USER_NAME, "bob"),
        (Attr.NAS_IDENTIFIER, "vpn"),
        (MS.MS_CHAP_CHALLENGE, bytes(16)),
        (MS.MS_CHAP2_RESPONSE, MSCHAP2Response(3, bytes(range(16)), bytes(range(24)))),
        (MS.MS_CHAP_RESPONSE, MSCHAPResponse(4, b"\0" * 24, bytes(range(24)))),
        (MS.MS_CHAP_ERROR, IdentString(3, "E=691 R=0 C=00 V=3")),
    ])
    raw = Packet(Code.ACCESS_REQUEST, 1, attrs, REQUEST_AUTH).encode(SECRET)
    decoded = Packet.decode(raw, SECRET)
    assert list(decoded.attributes)[1:] == list(attrs)[1:]
    assert decoded.attributes.get(MS.MS_CHAP_ERROR).error_code == 691


def test_scapy_oracle_reads_our_access_accept() -> None:
    from scapy.layers.radius import Radius, RadiusAttr_Message_Authenticator

    raw = _ms_accept()
    pkt = Radius(raw)
    assert (pkt.code, pkt.id, pkt.len) == (2, 7, len(raw))
    assert pkt.compute_authenticator(REQUEST_AUTH, SECRET) == raw[4:20]
    mac = bytes(pkt[RadiusAttr_Message_Authenticator].value)
    assert RadiusAttr_Message_Authenticator.compute_message_authenticator(
        Radius(raw), REQUEST_AUTH, SECRET) == mac
    vendor = [(a.vendor_id, a.vendor_type) for a in pkt.attributes if a.type == 26]
    assert vendor == [(311, 26), (311, 16), (311, 17), (311, 7), (311, 8), (311, 12)]
    plain = {a.type: a.value for a in pkt.attributes if a.type != 26}
    assert plain[8] == "10.9.0.7" and plain[27] == 3600 and plain[28] == 600
    assert bytes(plain[25]) == b"policy-1"


def test_scapy_oracle_reads_our_access_request() -> None:
    from scapy.layers.radius import Radius, RadiusAttr_Message_Authenticator

    attrs = [(Attr.MESSAGE_AUTHENTICATOR, b""), (Attr.USER_NAME, "bob"),
             (Attr.USER_PASSWORD, "secret-pw"), (Attr.NAS_IDENTIFIER, "vpn")]
    raw = Packet(Code.ACCESS_REQUEST, 9, Attributes(attrs), REQUEST_AUTH).encode(SECRET)
    pkt = Radius(raw)
    mac = bytes(pkt[RadiusAttr_Message_Authenticator].value)
    assert RadiusAttr_Message_Authenticator.compute_message_authenticator(
        Radius(raw), REQUEST_AUTH, SECRET) == mac
    hidden = next(bytes(a.value) for a in pkt.attributes if a.type == 2)
    pad = hashlib.md5(SECRET + REQUEST_AUTH).digest()
    assert bytes(a ^ b for a, b in zip(hidden, pad, strict=True)).rstrip(b"\0") == b"secret-pw"


def test_accounting_request_authenticator_rfc2866_section_3() -> None:
    attrs = Attributes([(Attr.MESSAGE_AUTHENTICATOR, b""), (Attr.ACCT_STATUS_TYPE, 1),
                        (Attr.ACCT_SESSION_ID, "s1"), (Attr.NAS_IDENTIFIER, "vpn")])
    raw = Packet(Code.ACCOUNTING_REQUEST, 5, attrs).encode(SECRET)
    zeroed = raw[:4] + b"\0" * 16 + raw[20:]
    assert raw[4:20] == hashlib.md5(zeroed + SECRET).digest()
    ma_at = raw.index(b"\x50\x12") + 2
    blank = zeroed[:ma_at] + b"\0" * 16 + zeroed[ma_at + 16:]
    assert raw[ma_at:ma_at + 16] == hmac.new(SECRET, blank, hashlib.md5).digest()
    assert Packet.decode(raw, SECRET).attributes.get(Attr.ACCT_SESSION_ID) == "s1"


# receivers' rules ----------------------------------------------------------------------------

def test_unknown_attribute_and_vendor_are_kept_raw_and_the_rest_decoded() -> None:
    """RFC 2865 §5: a receiver MAY ignore an unknown type; it does not skip the next one."""
    attrs = Attributes([(200, b"\x01\x02"), (Attr.VENDOR_SPECIFIC, VendorSpecific(9, b"\x01\x03x")),
                        ((311, 99), b"zz"), (Attr.USER_NAME, "after")])
    raw = Packet(Code.ACCESS_ACCEPT, 1, attrs).encode(SECRET, REQUEST_AUTH)
    assert list(Packet.decode(raw, SECRET, REQUEST_AUTH).attributes) == list(attrs)


def test_octets_past_length_are_padding() -> None:
    raw = vector("7.2_access_accept")
    assert Packet.decode(raw + b"junk", SECRET, _request_authenticator("7.2_access_request_chap"))


def test_bad_message_authenticator_is_named() -> None:
    raw = bytearray(Packet(Code.ACCESS_REQUEST, 1, Attributes(
        [(Attr.MESSAGE_AUTHENTICATOR, b""), (Attr.USER_NAME, "x")]), REQUEST_AUTH).encode(SECRET))
    raw[-1] ^= 1
    with pytest.raises(BadMessageAuthenticator):
        Packet.decode(bytes(raw), SECRET)


@pytest.mark.parametrize("mutation", ["short", "long", "zero-attr", "attr-past-end", "bad-int",
                                      "bad-utf8", "two-ma", "bad-code", "empty-value"])
def test_each_malformation_is_a_remote_protocol_error(mutation: str) -> None:
    def packet(body: bytes, code: int = 1) -> bytes:
        return bytes([code, 1]) + (20 + len(body)).to_bytes(2, "big") + REQUEST_AUTH + body
    raw = {
        "short": packet(b"")[:19],
        "long": packet(b"")[:2] + b"\x10\x01" + packet(b"")[4:],
        "zero-attr": packet(b"\x01\x00"),
        "attr-past-end": packet(b"\x01\x09abc"),
        "bad-int": packet(b"\x05\x05abc"),
        "bad-utf8": packet(b"\x01\x03\xff"),
        "two-ma": packet(b"\x50\x12" + b"\0" * 16 + b"\x50\x12" + b"\0" * 16),
        "bad-code": packet(b"", code=99),
        "empty-value": packet(b"\x01\x02"),
    }[mutation]
    with pytest.raises(RemoteProtocolError):
        Packet.decode(raw, SECRET)


@settings(max_examples=400)
@given(st.binary(max_size=300), st.booleans())
def test_any_bytes_give_a_packet_or_remote_protocol_error(data: bytes, reply: bool) -> None:
    try:
        Packet.decode(data, SECRET, REQUEST_AUTH if reply else None)
    except RemoteProtocolError:
        pass
    except LocalProtocolError:  # a reply code decoded without its request: our call, not data
        assert not reply


@settings(max_examples=400)
@given(st.integers(0, 400), st.integers(0, 255), st.integers(1, 4))
def test_mutated_real_packets_give_a_packet_or_remote_protocol_error(pos: int, byte: int,
                                                                     cut: int) -> None:
    """Mutations of a valid Access-Accept with every MS VSA, checks switched off by computing the
    authenticators again: the attribute parsers themselves meet the bad bytes."""
    raw = bytearray(_ms_accept())
    raw[pos % len(raw)] = byte
    raw = raw[: len(raw) - (cut if cut > 2 else 0)]
    raw[2:4] = len(raw).to_bytes(2, "big")
    raw = _resign(bytes(raw))
    try:
        Packet.decode(raw, SECRET, REQUEST_AUTH)
    except RemoteProtocolError:
        pass


def _resign(raw: bytes) -> bytes:
    """Recompute the Message-Authenticator (if findable) and the Response Authenticator."""
    body = raw[20:]
    pos, ma = 0, None
    while pos + 1 < len(body) and body[pos + 1] >= 2:
        if body[pos] == 80 and body[pos + 1] == 18:
            ma = 20 + pos + 2
        pos += body[pos + 1]
    if ma is not None and ma + 16 <= len(raw):
        blank = raw[:4] + REQUEST_AUTH + raw[20:ma] + b"\0" * 16 + raw[ma + 16:]
        raw = raw[:ma] + hmac.new(SECRET, blank, hashlib.md5).digest() + raw[ma + 16:]
    auth = hashlib.md5(raw[:4] + REQUEST_AUTH + raw[20:] + SECRET).digest()
    return raw[:4] + auth + raw[20:]


def test_encode_refuses_what_the_wire_cannot_carry() -> None:
    with pytest.raises(LocalProtocolError):
        Packet(Code.ACCESS_REQUEST, 1, Attributes([(Attr.USER_NAME, "x" * 254)]),
               REQUEST_AUTH).encode(SECRET)
    with pytest.raises(LocalProtocolError):
        Packet(Code.ACCESS_ACCEPT, 1).encode(SECRET)  # a reply needs its request
    with pytest.raises(LocalProtocolError):
        Packet(Code.ACCESS_REQUEST, 1, Attributes([(Attr.NAS_PORT, "3")]),
               REQUEST_AUTH).encode(SECRET)
    with pytest.raises(LocalProtocolError):  # a salted key needs a random source
        Packet(Code.ACCESS_ACCEPT, 1, Attributes([(MS.MS_MPPE_SEND_KEY, b"k" * 16)])).encode(
            SECRET, REQUEST_AUTH)


def test_crypt_is_a_plain_value() -> None:
    assert Crypt(b"s", b"\0" * 16) == Crypt(b"s", b"\0" * 16)


def test_the_radius_core_does_no_io() -> None:
    """Style rule 1: no socket, asyncio, time, subprocess in tunnels/radius (os only for the
    default random source)."""
    for path in (Path(__file__).parents[1] / "tunnels" / "radius").glob("*.py"):
        tree = ast.parse(path.read_text())
        names = {a.name.split(".")[0] for n in ast.walk(tree)
                 if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
        names |= {n.module.split(".")[0] for n in ast.walk(tree)
                  if isinstance(n, ast.ImportFrom) and n.module}
        assert not names & {"socket", "asyncio", "time", "subprocess", "select", "threading"}, path
