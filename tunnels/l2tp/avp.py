"""L2TPv2 Attribute Value Pairs (RFC 2661 §4): the header, hiding (§4.3) and the value types.

Every AVP is `|M|H|rsvd(4)|Length(10)|Vendor ID(16)|Attribute Type(16)|value...|` (§4.1). An
`AVP` always holds the plain value; `hidden` only says whether it came (or will go) hidden, so
the layers above never see ciphertext and re-encoding a decoded list gives the same wire bytes
when nothing was hidden. Decoding never judges an AVP's meaning: unknown and vendor AVPs stay in
the list (with their M bit) and the message layer (`messages.ControlMessage.unknown_mandatory`)
decides, because §4.1's answer depends on whether the message is a tunnel or a session one.
Every error raised for peer data is a `RemoteProtocolError` whose wire answer is a StopCCN
general error (`ControlMessage.decode` turns it into a CDN for session messages).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import IntEnum

from tunnels._wire import Reader, Writer
from tunnels.errors import LocalProtocolError, RemoteProtocolError, WireAnswer

HEADER_LENGTH = 6  # flags + length, Vendor ID, Attribute Type (§4.1)
MAX_LENGTH = 0x03FF  # the Length field has 10 bits
_M, _H, _RESERVED, _LENGTH = 0x8000, 0x4000, 0x3C00, 0x03FF
RANDOM_VECTOR_LENGTH = 16  # §4.4.1: "at least 1 octet"; 16 matches MD5's block
_MD5_BLOCK = 16


class AVPType(IntEnum):
    """IETF attribute types (vendor 0) of RFC 2661 §4.4, named as the RFC names them."""

    MESSAGE_TYPE = 0
    RESULT_CODE = 1
    PROTOCOL_VERSION = 2
    FRAMING_CAPABILITIES = 3
    BEARER_CAPABILITIES = 4
    TIE_BREAKER = 5
    FIRMWARE_REVISION = 6
    HOST_NAME = 7
    VENDOR_NAME = 8
    ASSIGNED_TUNNEL_ID = 9
    RECEIVE_WINDOW_SIZE = 10
    CHALLENGE = 11
    Q931_CAUSE_CODE = 12
    CHALLENGE_RESPONSE = 13
    ASSIGNED_SESSION_ID = 14
    CALL_SERIAL_NUMBER = 15
    MINIMUM_BPS = 16
    MAXIMUM_BPS = 17
    BEARER_TYPE = 18
    FRAMING_TYPE = 19
    CALLED_NUMBER = 21
    CALLING_NUMBER = 22
    SUB_ADDRESS = 23
    TX_CONNECT_SPEED = 24
    PHYSICAL_CHANNEL_ID = 25
    INITIAL_RECEIVED_LCP_CONFREQ = 26
    LAST_SENT_LCP_CONFREQ = 27
    LAST_RECEIVED_LCP_CONFREQ = 28
    PROXY_AUTHEN_TYPE = 29
    PROXY_AUTHEN_NAME = 30
    PROXY_AUTHEN_CHALLENGE = 31
    PROXY_AUTHEN_ID = 32
    PROXY_AUTHEN_RESPONSE = 33
    CALL_ERRORS = 34
    ACCM = 35
    RANDOM_VECTOR = 36
    PRIVATE_GROUP_ID = 37
    RX_CONNECT_SPEED = 38
    SEQUENCING_REQUIRED = 39


class StopCCNResult(IntEnum):
    """Result Code values of StopCCN (§4.4.2)."""

    GENERAL_REQUEST = 1  # general request to clear the control connection
    GENERAL_ERROR = 2  # the Error Code says what
    ALREADY_EXISTS = 3
    NOT_AUTHORIZED = 4
    BAD_PROTOCOL_VERSION = 5
    SHUTTING_DOWN = 6
    FSM_ERROR = 7


class CDNResult(IntEnum):
    """Result Code values of CDN (§4.4.2)."""

    LOSS_OF_CARRIER = 1
    GENERAL_ERROR = 2  # the Error Code says what
    ADMINISTRATIVE = 3
    NO_FACILITIES_TEMPORARY = 4
    NO_FACILITIES_PERMANENT = 5
    INVALID_DESTINATION = 6
    NO_CARRIER = 7
    BUSY = 8
    NO_DIAL_TONE = 9
    TIMEOUT = 10
    NO_FRAMING = 11


class GeneralError(IntEnum):
    """General Error Codes (§4.4.2), carried when the result is GENERAL_ERROR."""

    NONE = 0
    NO_CONTROL_CONNECTION = 1
    BAD_LENGTH = 2
    OUT_OF_RANGE = 3  # a field value out of range, or a reserved field non-zero
    NO_RESOURCES = 4
    INVALID_SESSION_ID = 5
    VENDOR_SPECIFIC = 6
    TRY_ANOTHER = 7
    UNKNOWN_MANDATORY_AVP = 8


def general_error(error: GeneralError, text: str, kind: str = "stop-ccn") -> WireAnswer:
    """The wire answer "result 2 (general error), error `error`" for a StopCCN or a CDN."""
    return WireAnswer(kind, ResultCode(StopCCNResult.GENERAL_ERROR, error, text))


def _malformed(text: str, error: GeneralError = GeneralError.BAD_LENGTH) -> RemoteProtocolError:
    return RemoteProtocolError(text, general_error(error, text))


def _name(attr_type: int, vendor_id: int = 0) -> str:
    if vendor_id:
        return f"vendor {vendor_id} attribute {attr_type}"
    try:
        return AVPType(attr_type).name
    except ValueError:
        return f"attribute {attr_type}"


def _unsigned(attr_type: int, v: int, size: int) -> bytes:
    if not 0 <= v < 1 << 8 * size:
        raise LocalProtocolError(f"{_name(attr_type)}: {v} does not fit {size} octets")
    return v.to_bytes(size, "big")


@dataclass(frozen=True, slots=True)
class AVP:
    """One attribute with its plain value; `hidden` says whether it is sent hidden (§4.3).

    `reserved` keeps reserved header bits a peer set: §4.1 says such an AVP "MUST be treated
    as an unrecognized AVP", which `ControlMessage.unknown_mandatory` does.
    """

    attr_type: int
    value: bytes
    mandatory: bool = True
    hidden: bool = False
    vendor_id: int = 0
    reserved: int = 0

    @classmethod
    def u16(cls, t: int, v: int, mandatory: bool = True, hidden: bool = False) -> AVP:
        return cls(t, _unsigned(t, v, 2), mandatory, hidden)

    @classmethod
    def u32(cls, t: int, v: int, mandatory: bool = True, hidden: bool = False) -> AVP:
        return cls(t, _unsigned(t, v, 4), mandatory, hidden)

    @classmethod
    def u64(cls, t: int, v: int, mandatory: bool = True, hidden: bool = False) -> AVP:
        return cls(t, _unsigned(t, v, 8), mandatory, hidden)

    @classmethod
    def string(cls, t: int, s: str, mandatory: bool = True, hidden: bool = False) -> AVP:
        return cls(t, s.encode("utf-8"), mandatory, hidden)

    @classmethod
    def raw(cls, t: int, b: bytes, mandatory: bool = True, hidden: bool = False) -> AVP:
        return cls(t, bytes(b), mandatory, hidden)

    @property
    def name(self) -> str:
        return _name(self.attr_type, self.vendor_id)

    def _sized(self, size: int) -> int:
        if len(self.value) != size:
            raise _malformed(f"{self.name}: {len(self.value)} octets of value, expected {size}")
        return int.from_bytes(self.value, "big")

    def as_u16(self) -> int:
        return self._sized(2)

    def as_u32(self) -> int:
        return self._sized(4)

    def as_u64(self) -> int:
        return self._sized(8)

    def as_string(self) -> str:
        # Host Name, Vendor Name, numbers, ...: octet strings in practice ASCII; never fail on
        # a peer's odd byte, show it replaced.
        return self.value.decode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class ResultCode:
    """Result Code AVP value (§4.4.2): result (2), optional error (2), optional message.

    The message can only follow an error code, so `encode` writes error 0 when there is a
    message but no error.
    """

    result: int
    error: int | None = None
    message: str = ""

    def encode(self) -> bytes:
        w = Writer().push_u16(self.result)
        if self.error is not None or self.message:
            w.push_u16(self.error or 0)
        return w.push_bytes(self.message.encode("utf-8")).getvalue()

    @classmethod
    def decode(cls, b: bytes) -> ResultCode:
        if len(b) < 2 or len(b) == 3:
            raise _malformed(f"RESULT_CODE: {len(b)} octets (2, or 4 and more)")
        r = Reader(b)
        result = r.pull_u16("result code")
        error = r.pull_u16("error code") if r.remaining else None
        return cls(result, error, r.pull_rest().decode("utf-8", "replace"))


def _md5(*parts: bytes) -> bytes:
    return hashlib.md5(b"".join(parts), usedforsecurity=False).digest()


def _md5_chain(attr_type: int, secret: bytes, vector: bytes, data: bytes, decrypt: bool) -> bytes:
    """§4.3: b1 = MD5(type + secret + RV), c1 = p1 xor b1; bi = MD5(secret + c(i-1)).

    The last segment may be short: only its octets are XORed. The chain always runs over the
    ciphertext, so decrypting feeds the received blocks and encrypting the produced ones.
    """
    out = bytearray()
    key = _md5(attr_type.to_bytes(2, "big"), secret, vector)
    for i in range(0, len(data), _MD5_BLOCK):
        block = data[i : i + _MD5_BLOCK]
        mixed = bytes(a ^ b for a, b in zip(block, key, strict=False))
        out += mixed
        key = _md5(secret, block if decrypt else mixed)
    return bytes(out)


def _hidden_padding(value_length: int) -> int:
    """Padding octets for a hidden value: the subformat (2 + value + pad) is rounded up to whole
    MD5 blocks, so the wire length only tells the value's length to 16 octets (§4.3 suggests
    padding for exactly this), and never past the 10-bit AVP length."""
    subformat = 2 + value_length
    padded = max(_MD5_BLOCK, -(-subformat // _MD5_BLOCK) * _MD5_BLOCK)
    return max(0, min(padded, MAX_LENGTH - HEADER_LENGTH) - subformat)


def _push_avp(w: Writer, avp: AVP, body: bytes) -> None:
    length = HEADER_LENGTH + len(body)
    if length > MAX_LENGTH:
        raise LocalProtocolError(f"{avp.name}: {length} octets exceed the AVP Length field")
    if not (0 <= avp.vendor_id <= 0xFFFF and 0 <= avp.attr_type <= 0xFFFF):
        raise LocalProtocolError(f"{avp.name}: vendor and attribute type are 16-bit")
    flags = (_M if avp.mandatory else 0) | (_H if avp.hidden else 0) | avp.reserved & _RESERVED
    w.push_u16(flags | length).push_u16(avp.vendor_id).push_u16(avp.attr_type)
    w.push_bytes(body)


def _is_random_vector(avp: AVP) -> bool:
    return avp.vendor_id == 0 and avp.attr_type == AVPType.RANDOM_VECTOR


def encode_avps(avps: Iterable[AVP], secret: bytes | None,
                random: Callable[[int], bytes]) -> bytes:
    """The AVPs in order, hidden ones hidden (§4.3) with the Random Vector in force.

    §4.3: a Random Vector AVP "MUST precede the first AVP with the H bit set"; when the caller
    put none before a hidden AVP one is made with `random` and inserted just before it.
    """
    w = Writer()
    vector: bytes | None = None
    for avp in avps:
        if _is_random_vector(avp) and not avp.hidden:
            vector = avp.value
        if not avp.hidden:
            _push_avp(w, avp, avp.value)
            continue
        if not secret:
            raise LocalProtocolError(f"{avp.name}: hiding needs the tunnel's shared secret")
        if vector is None:
            vector = random(RANDOM_VECTOR_LENGTH)
            _push_avp(w, AVP(AVPType.RANDOM_VECTOR, vector), vector)
        pad = random(_hidden_padding(len(avp.value)))
        plain = len(avp.value).to_bytes(2, "big") + avp.value + pad
        _push_avp(w, avp, _md5_chain(avp.attr_type, secret, vector, plain, decrypt=False))
    return w.getvalue()


def _unhide(attr_type: int, vendor_id: int, data: bytes, secret: bytes | None,
            vector: bytes | None) -> bytes:
    name = _name(attr_type, vendor_id)
    if vector is None:
        raise _malformed(f"{name} is hidden but no Random Vector AVP precedes it (§4.3)",
                         GeneralError.OUT_OF_RANGE)
    if not secret:
        raise _malformed(f"{name} is hidden and we have no shared secret (§4.3)",
                         GeneralError.OUT_OF_RANGE)
    r = Reader(_md5_chain(attr_type, secret, vector, data, decrypt=True))
    length = r.pull_u16(f"{name} hidden original length")
    if length > r.remaining:
        raise _malformed(f"{name}: hidden original length {length} exceeds the "
                         f"{r.remaining} octets hidden (wrong shared secret?)")
    return r.pull_bytes(length, name)


def decode_avps(data: bytes, secret: bytes | None) -> list[AVP]:
    """Every AVP of a control message body, hidden ones decrypted (§4.1, §4.3).

    An AVP with reserved bits set but M clear is dropped (§4.1: treated as unrecognized, and an
    unrecognized AVP without M "MUST be ignored"); with M set it is kept, `reserved` non-zero,
    so the message layer tears down what §4.1 says. Vendor AVPs are kept whatever their M bit.
    """
    r = Reader(data)
    out: list[AVP] = []
    vector: bytes | None = None
    while not r.at_end():
        if r.remaining < HEADER_LENGTH:
            raise _malformed(f"{r.remaining} octets after the last AVP (an AVP has at least 6)")
        word = r.pull_u16("AVP flags/length")
        length = word & _LENGTH
        if length < HEADER_LENGTH or length - 2 > r.remaining:
            raise _malformed(f"AVP length {length} at offset {r.position - 2} "
                             f"({r.remaining + 2} octets left)")
        vendor_id, attr_type = r.pull_u16("Vendor ID"), r.pull_u16("Attribute Type")
        body = r.pull_bytes(length - HEADER_LENGTH, _name(attr_type, vendor_id))
        mandatory, hidden, reserved = bool(word & _M), bool(word & _H), word & _RESERVED
        if reserved:
            if mandatory:
                out.append(AVP(attr_type, body, True, hidden, vendor_id, reserved))
            continue
        if hidden:
            body = _unhide(attr_type, vendor_id, body, secret, vector)
        avp = AVP(attr_type, body, mandatory, hidden, vendor_id)
        if _is_random_vector(avp) and not hidden:
            vector = body
        out.append(avp)
    return out
