"""RADIUS packets (RFC 2865 §3, §4; RFC 2866 §3, §4): encoding with the Request and Response
Authenticators and the Message-Authenticator (RFC 3579 §3.2, RFC 2869 §5.14), strict decoding.

Decoding checks, and names in the error, everything a receiver must check: the Length field
(20..4096 octets, octets past it are padding, RFC 2865 §3), every attribute's length, the
Response Authenticator of a reply (or the Request Authenticator of an Accounting-Request) and
the Message-Authenticator when present. Every failure is a `RemoteProtocolError` whose answer is
a silent discard; an attribute of a type we do not know is kept raw (RFC 2865 §5 lets a
receiver ignore it).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from tunnels._wire import Reader, Writer
from tunnels.errors import LocalProtocolError, RemoteProtocolError
from tunnels.radius.attributes import (
    MAX_VALUE,
    STANDARD_CODECS,
    VSA,
    Attr,
    Attributes,
    Codec,
    Crypt,
    Key,
    Random,
)
from tunnels.radius.msvsa import MICROSOFT, MS, MS_CODECS

HEADER = 20
MAX_PACKET = 4096  # RFC 2865 §3
VENDOR_CODECS = {MICROSOFT: MS_CODECS}


class Code(IntEnum):
    ACCESS_REQUEST = 1
    ACCESS_ACCEPT = 2
    ACCESS_REJECT = 3
    ACCOUNTING_REQUEST = 4
    ACCOUNTING_RESPONSE = 5
    ACCESS_CHALLENGE = 11
    STATUS_SERVER = 12


REQUESTS = {Code.ACCESS_REQUEST, Code.ACCOUNTING_REQUEST, Code.STATUS_SERVER}
REPLIES = {Code.ACCESS_REQUEST: {Code.ACCESS_ACCEPT, Code.ACCESS_REJECT, Code.ACCESS_CHALLENGE},
           Code.ACCOUNTING_REQUEST: {Code.ACCOUNTING_RESPONSE},
           Code.STATUS_SERVER: {Code.ACCESS_ACCEPT, Code.ACCOUNTING_RESPONSE}}


class BadAuthenticator(RemoteProtocolError):
    """A Response Authenticator (or Accounting Request Authenticator) that does not verify."""


class BadMessageAuthenticator(RemoteProtocolError):
    """A Message-Authenticator that does not verify."""


class MissingMessageAuthenticator(RemoteProtocolError):
    """A reply without the Message-Authenticator we require (RFC 3579 §3.2)."""


@dataclass(frozen=True, slots=True)
class VendorSpecific:
    """A Vendor-Specific attribute we cannot split (unknown vendor or not in the RFC 2865 §5.26
    recommended format): kept whole."""

    vendor: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Packet:
    """One RADIUS packet. `authenticator` is the Request Authenticator of an Access-Request
    (unpredictable, our caller's random) and, after decoding, whatever the header carried."""

    code: int
    identifier: int
    attributes: Attributes = field(default_factory=Attributes)
    authenticator: bytes = b"\0" * 16

    @property
    def has_message_authenticator(self) -> bool:
        return Attr.MESSAGE_AUTHENTICATOR in self.attributes

    def encode(self, secret: bytes, request_authenticator: bytes | None = None,
               random: Random | None = None) -> bytes:
        """The packet on the wire. A reply needs the `request_authenticator` it answers; salted
        attributes need `random`. A Message-Authenticator is computed where the attributes
        hold one (its value is a placeholder)."""
        code = Code(self.code)
        if code in REQUESTS and request_authenticator is not None:
            raise LocalProtocolError("a request has no request_authenticator to answer", None)
        if code not in REQUESTS and request_authenticator is None:
            raise LocalProtocolError(f"{code.name} needs the request's authenticator", None)
        if code is Code.ACCOUNTING_REQUEST:
            hiding = b"\0" * 16  # RFC 2866 §3: its authenticator covers the attributes
        else:
            hiding = request_authenticator or self.authenticator
        body = encode_attributes(self.attributes, Crypt(secret, hiding, random))
        header = bytearray(Writer().push_u8(code).push_u8(self.identifier)
                           .push_u16(HEADER + len(body)).getvalue())
        if HEADER + len(body) > MAX_PACKET:
            raise LocalProtocolError(f"packet of {HEADER + len(body)} octets > 4096", None)
        # RFC 3579 §3.2: the HMAC covers the packet with the Message-Authenticator zeroed and,
        # in a reply, the Request Authenticator; RFC 5080 §2.2.1's zeros for accounting
        ma_vector = {Code.ACCESS_REQUEST: self.authenticator,
                     Code.STATUS_SERVER: self.authenticator}.get(code, hiding)
        body = _fill_message_authenticator(bytes(header), ma_vector, body, secret)
        if code in (Code.ACCESS_REQUEST, Code.STATUS_SERVER):
            auth = _exact16(self.authenticator)
        else:
            auth = hashlib.md5(bytes(header) + hiding + body + secret).digest()
        return bytes(header) + auth + body

    @classmethod
    def decode(cls, data: bytes, secret: bytes, request_authenticator: bytes | None = None,
               ) -> Packet:
        """Parse and verify. For a reply give the Request Authenticator of its request."""
        r = Reader(data)
        code, ident, length = r.pull_u8("code"), r.pull_u8("identifier"), r.pull_u16("length")
        authenticator = r.pull_bytes(16, "authenticator")
        if not HEADER <= length <= MAX_PACKET or length > len(data):
            raise RemoteProtocolError(f"Length {length} with {len(data)} octets (20..4096)")
        if code not in Code._value2member_map_:
            raise RemoteProtocolError(f"unknown RADIUS code {code}")
        packet = data[:length]  # RFC 2865 §3: octets past Length are padding
        is_reply = code not in REQUESTS
        if is_reply and request_authenticator is None:
            raise LocalProtocolError("decoding a reply needs its request's authenticator", None)
        vector = _verify(Code(code), packet, secret, request_authenticator)
        raw = split_attributes(packet[HEADER:])
        ma_vector = authenticator if code in (Code.ACCESS_REQUEST, Code.STATUS_SERVER) else vector
        _check_message_authenticator(packet, raw, ma_vector, secret)
        hiding = authenticator if not is_reply and code != Code.ACCOUNTING_REQUEST else vector
        attrs = decode_attributes(raw, Crypt(secret, hiding))
        return cls(Code(code), ident, attrs, authenticator)


def _exact16(value: bytes) -> bytes:
    if len(value) != 16:
        raise LocalProtocolError(f"authenticator of {len(value)} octets, 16 expected", None)
    return value


def _verify(code: Code, packet: bytes, secret: bytes, request_auth: bytes | None) -> bytes:
    """Check the authenticator the header carries; return the vector the Message-Authenticator
    and hidden attributes use."""
    if code in (Code.ACCESS_REQUEST, Code.STATUS_SERVER):
        return packet[4:20]  # random: nothing to check
    vector = b"\0" * 16 if code is Code.ACCOUNTING_REQUEST else _exact16(request_auth or b"")
    expected = hashlib.md5(packet[:4] + vector + packet[HEADER:] + secret).digest()
    if not hmac.compare_digest(expected, packet[4:20]):
        what = "Request" if code is Code.ACCOUNTING_REQUEST else "Response"
        raise BadAuthenticator(f"{code.name}: {what} Authenticator does not verify")
    return vector


def _fill_message_authenticator(header: bytes, vector: bytes, body: bytes,
                                secret: bytes) -> bytes:
    offset = _message_authenticator_offset(body)
    if offset is None:
        return body
    mac = hmac.new(secret, header + vector + body, hashlib.md5).digest()
    return body[:offset] + mac + body[offset + 16 :]


def _message_authenticator_offset(body: bytes) -> int | None:
    pos = 0
    while pos < len(body):
        if body[pos] == Attr.MESSAGE_AUTHENTICATOR:
            return pos + 2
        pos += body[pos + 1]
    return None


def _check_message_authenticator(packet: bytes, raw: list[tuple[int, int, bytes]],
                                 vector: bytes, secret: bytes) -> None:
    found = [(offset, value) for t, offset, value in raw if t == Attr.MESSAGE_AUTHENTICATOR]
    if not found:
        return
    if len(found) > 1:  # RFC 3579 §3.2: at most one
        raise RemoteProtocolError(f"{len(found)} Message-Authenticators")
    offset, value = found[0]
    if len(value) != 16:
        raise RemoteProtocolError(f"Message-Authenticator of {len(value)} octets")
    zeroed = packet[:4] + vector + packet[HEADER:offset] + b"\0" * 16 + packet[offset + 16 :]
    expected = hmac.new(secret, zeroed, hashlib.md5).digest()
    if not hmac.compare_digest(expected, value):
        raise BadMessageAuthenticator("Message-Authenticator does not verify")


def split_attributes(body: bytes) -> list[tuple[int, int, bytes]]:
    """(type, offset of the value in the packet, value) for each attribute; every length
    checked (RFC 2865 §5: at least 2, within the packet)."""
    r = Reader(body)
    out = []
    while not r.at_end():
        atype, length = r.pull_u8("attribute type"), r.pull_u8("attribute length")
        if length < 2:
            raise RemoteProtocolError(f"attribute {atype} with length {length} (< 2)")
        offset = HEADER + r.position
        out.append((atype, offset, r.pull_bytes(length - 2, f"attribute {atype} value")))
    return out


def decode_attributes(raw: list[tuple[int, int, bytes]], crypt: Crypt) -> Attributes:
    items: list[tuple[Key, Any]] = []
    for atype, _, value in raw:
        if atype == Attr.VENDOR_SPECIFIC:
            items.extend(_decode_vendor(value, crypt))
            continue
        codec = STANDARD_CODECS.get(atype)
        key = Attr(atype) if atype in Attr._value2member_map_ else atype
        items.append((key, value if codec is None else _decode_value(codec, value, crypt, key)))
    return Attributes(items)


def _decode_value(codec: Codec, value: bytes, crypt: Crypt, key: Key) -> Any:
    if not value:  # RFC 2865 §5: no attribute of ours has an empty value
        raise RemoteProtocolError(f"{key!r} with an empty value")
    return codec.decode(value, crypt)


def _decode_vendor(value: bytes, crypt: Crypt) -> list[tuple[Key, Any]]:
    r = Reader(value)
    vendor = r.pull_u32("Vendor-Id")
    codecs = VENDOR_CODECS.get(vendor)
    if codecs is None:
        return [(Attr.VENDOR_SPECIFIC, VendorSpecific(vendor, r.pull_rest()))]
    items: list[tuple[Key, Any]] = []
    while not r.at_end():  # RFC 2865 §5.26's recommended format, which Microsoft's follows
        vtype, vlen = r.pull_u8("vendor type"), r.pull_u8("vendor length")
        if vlen < 2:
            raise RemoteProtocolError(f"vendor {vendor} attribute {vtype} with length {vlen}")
        sub = r.pull_bytes(vlen - 2, f"vendor {vendor} attribute {vtype}")
        key: Key = VSA(vendor, vtype)
        if vendor == MICROSOFT and key in MS._value2member_map_:
            key = MS(key)
        codec = codecs.get(vtype)
        items.append((key, sub if codec is None else _decode_value(codec, sub, crypt, key)))
    return items


def encode_attributes(attributes: Attributes, crypt: Crypt) -> bytes:
    w = Writer()
    for key, value in attributes:
        if isinstance(key, tuple):
            codecs = VENDOR_CODECS.get(key[0], {})
            raw = _encode_value(codecs.get(key[1]), value, crypt)
            _push(w, Attr.VENDOR_SPECIFIC, key[0].to_bytes(4, "big")
                  + _sub_attribute(key[1], raw))
        elif key == Attr.VENDOR_SPECIFIC and isinstance(value, VendorSpecific):
            _push(w, key, value.vendor.to_bytes(4, "big") + value.data)
        else:
            _push(w, key, _encode_value(STANDARD_CODECS.get(key), value, crypt))
    return w.getvalue()


def _encode_value(codec: Codec | None, value: Any, crypt: Crypt) -> bytes:
    if codec is not None:
        return codec.encode(value, crypt)
    if not isinstance(value, (bytes, bytearray)):
        raise LocalProtocolError(f"value {value!r} of an attribute without a codec", None)
    return bytes(value)


def _sub_attribute(vtype: int, raw: bytes) -> bytes:
    if len(raw) > MAX_VALUE - 6:
        raise LocalProtocolError(f"vendor attribute {vtype} of {len(raw)} octets", None)
    return bytes([vtype, len(raw) + 2]) + raw


def _push(w: Writer, atype: int, raw: bytes) -> None:
    if len(raw) > MAX_VALUE:
        raise LocalProtocolError(f"attribute {atype} of {len(raw)} octets (at most 253)", None)
    w.push_u8(atype).push_u8(len(raw) + 2).push_bytes(raw)
