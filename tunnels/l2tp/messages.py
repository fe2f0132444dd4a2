"""L2TPv2 packets (RFC 2661 §3.1) and control messages (§3.2, §6).

A UDP datagram is a `ControlPacket` (T=1: always Length and Ns/Nr; an empty payload is a ZLB
acknowledgement, §5.8) or a `DataPacket` (T=0: a PPP frame, optional Length, Ns/Nr, Offset).
`decode_packet` splits the header with `struct` and slices the payload once, without building
AVP objects: it is the data path. A control payload is then a `ControlMessage`: the Message
Type AVP (first, §4.4.1) and the other AVPs in wire order. Header faults are silent discards
(§3.1 has no error message for them); faults inside a control message carry the StopCCN (tunnel
message) or CDN (session message) general error the state machines send back.
"""

from __future__ import annotations

import secrets
import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

from tunnels.errors import DISCARD, LocalProtocolError, RemoteProtocolError, Truncated, WireAnswer
from tunnels.l2tp.avp import (
    AVP,
    AVPType,
    GeneralError,
    ResultCode,
    decode_avps,
    encode_avps,
    general_error,
)

VERSION = 2
_T, _L, _S, _O, _P, _VER = 0x8000, 0x4000, 0x0800, 0x0200, 0x0100, 0x000F
_CONTROL_FLAGS = _T | _L | _S | VERSION
CONTROL_HEADER_LENGTH = 12  # flags, Length, Tunnel ID, Session ID, Ns, Nr
_CONTROL = struct.Struct("!HHHHHH")
_U16 = struct.Struct("!H")
_IDS = struct.Struct("!HH")
_DATA = struct.Struct("!HHH")  # flags, Tunnel ID, Session ID
_DATA_NS = struct.Struct("!HHHHH")  # flags (S), Tunnel ID, Session ID, Ns, Nr


class MessageType(IntEnum):
    """Control message types (§3.2), with the RFC's abbreviations."""

    SCCRQ = 1  # Start-Control-Connection-Request
    SCCRP = 2  # Start-Control-Connection-Reply
    SCCCN = 3  # Start-Control-Connection-Connected
    StopCCN = 4  # Stop-Control-Connection-Notification
    HELLO = 6
    OCRQ = 7  # Outgoing-Call-Request
    OCRP = 8  # Outgoing-Call-Reply
    OCCN = 9  # Outgoing-Call-Connected
    ICRQ = 10  # Incoming-Call-Request
    ICRP = 11  # Incoming-Call-Reply
    ICCN = 12  # Incoming-Call-Connected
    CDN = 14  # Call-Disconnect-Notify
    WEN = 15  # WAN-Error-Notify
    SLI = 16  # Set-Link-Info


T = MessageType
TUNNEL_MESSAGES = frozenset({T.SCCRQ, T.SCCRP, T.SCCCN, T.StopCCN, T.HELLO})

A = AVPType
# §6.1-§6.14: the AVPs each message "MUST" carry (the "MAY" ones are optional).
REQUIRED_AVPS: dict[MessageType, frozenset[AVPType]] = {
    T.SCCRQ: frozenset({A.MESSAGE_TYPE, A.PROTOCOL_VERSION, A.HOST_NAME,
                        A.FRAMING_CAPABILITIES, A.ASSIGNED_TUNNEL_ID}),
    T.SCCRP: frozenset({A.MESSAGE_TYPE, A.PROTOCOL_VERSION, A.FRAMING_CAPABILITIES,
                        A.HOST_NAME, A.ASSIGNED_TUNNEL_ID}),
    T.SCCCN: frozenset({A.MESSAGE_TYPE}),
    T.StopCCN: frozenset({A.MESSAGE_TYPE, A.ASSIGNED_TUNNEL_ID, A.RESULT_CODE}),
    T.HELLO: frozenset({A.MESSAGE_TYPE}),
    T.ICRQ: frozenset({A.MESSAGE_TYPE, A.ASSIGNED_SESSION_ID, A.CALL_SERIAL_NUMBER}),
    T.ICRP: frozenset({A.MESSAGE_TYPE, A.ASSIGNED_SESSION_ID}),
    T.ICCN: frozenset({A.MESSAGE_TYPE, A.TX_CONNECT_SPEED, A.FRAMING_TYPE}),
    T.OCRQ: frozenset({A.MESSAGE_TYPE, A.ASSIGNED_SESSION_ID, A.CALL_SERIAL_NUMBER,
                       A.MINIMUM_BPS, A.MAXIMUM_BPS, A.BEARER_TYPE, A.FRAMING_TYPE,
                       A.CALLED_NUMBER}),
    T.OCRP: frozenset({A.MESSAGE_TYPE, A.ASSIGNED_SESSION_ID}),
    T.OCCN: frozenset({A.MESSAGE_TYPE, A.TX_CONNECT_SPEED, A.FRAMING_TYPE}),
    T.CDN: frozenset({A.MESSAGE_TYPE, A.RESULT_CODE, A.ASSIGNED_SESSION_ID}),
    T.WEN: frozenset({A.MESSAGE_TYPE, A.CALL_ERRORS}),
    T.SLI: frozenset({A.MESSAGE_TYPE, A.ACCM}),
}
_KNOWN_ATTRIBUTES = frozenset(int(t) for t in AVPType)
_SESSION_MESSAGES = frozenset(int(t) for t in MessageType if t not in TUNNEL_MESSAGES)


def answer_kind(message_type: int) -> str:
    """What tears down on a fault in this message: the tunnel ("stop-ccn", §4.1 "associated with
    the overall tunnel") or the session ("cdn")."""
    return "cdn" if message_type in _SESSION_MESSAGES else "stop-ccn"


def _rescoped(err: RemoteProtocolError, kind: str) -> RemoteProtocolError:
    """The same fault answered for the message's scope; a silent discard stays one."""
    answer = err.wire_answer
    if answer is not None and isinstance(answer.detail, ResultCode):
        return RemoteProtocolError(str(err), WireAnswer(kind, answer.detail))
    if isinstance(err, Truncated):
        return RemoteProtocolError(str(err),
                                   general_error(GeneralError.BAD_LENGTH, str(err), kind))
    return err


def _peek_message_type(payload: bytes) -> int | None:
    """The Message Type of a well-formed first AVP (plain, 8 octets), else None: enough to
    scope an error found later in the message."""
    if len(payload) < 8:
        return None
    word, vendor, attr, value = struct.unpack_from("!HHHH", payload)
    if word & 0x43FF != 8 or vendor or attr != AVPType.MESSAGE_TYPE:
        return None
    return value


@dataclass(frozen=True, slots=True)
class ControlMessage:
    """One control message: its type and the AVPs after the Message Type AVP, in wire order."""

    message_type: int
    avps: tuple[AVP, ...] = ()

    @classmethod
    def build(cls, message_type: int, *avps: AVP) -> ControlMessage:
        return cls(message_type, avps)

    @property
    def is_tunnel_message(self) -> bool:
        return self.message_type in TUNNEL_MESSAGES

    def get(self, attr_type: int, vendor_id: int = 0) -> AVP | None:
        for avp in self.avps:
            if avp.attr_type == attr_type and avp.vendor_id == vendor_id:
                return avp
        return None

    def has(self, attr_type: int, vendor_id: int = 0) -> bool:
        return self.get(attr_type, vendor_id) is not None

    def unknown_mandatory(self) -> AVP | None:
        """The first AVP with M=1 we do not know (§4.1: its message's tunnel or session "MUST
        be terminated"): an unknown IETF type, a vendor AVP, or one with reserved bits set."""
        for avp in self.avps:
            if avp.mandatory and (avp.vendor_id or avp.reserved
                                  or avp.attr_type not in _KNOWN_ATTRIBUTES):
                return avp
        return None

    def missing_required(self) -> list[AVPType]:
        """The §6 required AVPs absent from this message, in attribute order."""
        required = REQUIRED_AVPS.get(self.message_type, frozenset())  # type: ignore[call-overload]
        return sorted(t for t in required if t != AVPType.MESSAGE_TYPE and not self.has(t))

    def answer(self, error: GeneralError, text: str) -> WireAnswer:
        """The StopCCN or CDN general error that answers a fault in this message."""
        return general_error(error, text, answer_kind(self.message_type))

    def encode(self, secret: bytes | None = None,
               random: Callable[[int], bytes] = secrets.token_bytes) -> bytes:
        """The control payload: Message Type first, M=1 and never hidden (§4.4.1), then the
        AVPs, hidden ones hidden with `secret` (a Random Vector is added when needed)."""
        head = AVP.u16(AVPType.MESSAGE_TYPE, self.message_type)
        return encode_avps((head, *self.avps), secret, random)

    @classmethod
    def decode(cls, payload: bytes, secret: bytes | None = None) -> ControlMessage:
        """A control payload (never a ZLB). Faults raise `RemoteProtocolError` answered by a
        StopCCN (tunnel message, or type unknown) or a CDN (session message) with result 2
        and the general error, or a silent discard for an unknown type without M (§4.4.1).
        Unknown, vendor and missing AVPs are not faults here: see `unknown_mandatory` and
        `missing_required`, which the state machines consult."""
        peeked = _peek_message_type(payload)
        kind = answer_kind(peeked) if peeked is not None else "stop-ccn"
        if not payload:
            text = "empty control message (a ZLB has no payload at all)"
            raise RemoteProtocolError(text, general_error(GeneralError.BAD_LENGTH, text, kind))
        try:
            avps = decode_avps(payload, secret)
            message_type = _message_type(avps[0] if avps else None)
        except RemoteProtocolError as err:
            scoped = _rescoped(err, kind)
            if scoped is err:
                raise
            raise scoped from err
        return cls(message_type, tuple(avps[1:]))


def _message_type(first: AVP | None) -> MessageType:
    """§4.4.1: the Message Type AVP "MUST be the first AVP in a message" and is never hidden;
    an unknown type with M set clears the tunnel, with M clear the message is ignored."""
    def fail(text: str, error: GeneralError = GeneralError.OUT_OF_RANGE) -> RemoteProtocolError:
        return RemoteProtocolError(text, general_error(error, text))

    if first is None or first.vendor_id or first.attr_type != AVPType.MESSAGE_TYPE:
        raise fail(f"first AVP is {first.name if first else 'missing'}, not MESSAGE_TYPE")
    if first.hidden:
        raise fail("MESSAGE_TYPE AVP is hidden (§4.4.1: it MUST NOT be)")
    value = first.as_u16()
    try:
        message_type = MessageType(value)
    except ValueError:
        if not first.mandatory:
            raise RemoteProtocolError(f"unknown message type {value} without M bit",
                                      DISCARD) from None
        raise fail(f"unknown message type {value} with M bit",
                   GeneralError.UNKNOWN_MANDATORY_AVP) from None
    return message_type


@dataclass(frozen=True, slots=True)
class ControlPacket:
    """A control packet (§3.1: T=1, L=1, S=1, O=0, P=0); `payload == b""` is a ZLB (§5.8)."""

    tunnel_id: int
    session_id: int
    ns: int
    nr: int
    payload: bytes = b""

    @property
    def is_zlb(self) -> bool:
        return not self.payload

    def encode(self) -> bytes:
        try:
            return _CONTROL.pack(_CONTROL_FLAGS, CONTROL_HEADER_LENGTH + len(self.payload),
                                 self.tunnel_id, self.session_id, self.ns, self.nr) + self.payload
        except struct.error as err:
            raise LocalProtocolError(f"control packet field out of range: {err}") from None


@dataclass(frozen=True, slots=True)
class DataPacket:
    """A data packet (§3.1, T=0) carrying one PPP frame.

    `offset` is the Offset Size (that many pad octets precede the payload); `offset_present`
    keeps an O bit sent with Offset Size 0 (seen in real captures) so re-encoding is exact.
    Nr in a data packet is reserved and ignored on receipt (§3.1); it is kept as received.
    """

    tunnel_id: int
    session_id: int
    payload: bytes
    ns: int | None = None
    nr: int | None = None
    length: bool = False
    offset: int = 0
    priority: bool = False
    offset_present: bool = False

    def encode(self) -> bytes:
        has_offset = self.offset > 0 or self.offset_present
        flags = (VERSION | (_L if self.length else 0) | (_S if self.ns is not None else 0)
                 | (_O if has_offset else 0) | (_P if self.priority else 0))
        fields = [self.tunnel_id, self.session_id]
        if self.ns is not None:
            fields += [self.ns, self.nr or 0]
        if has_offset:
            fields.append(self.offset)
        try:
            header = struct.pack(f"!{len(fields)}H", *fields) + bytes(self.offset)
            total = 2 + (2 if self.length else 0) + len(header) + len(self.payload)
            lead = _IDS.pack(flags, total) if self.length else _U16.pack(flags)
        except struct.error as err:
            raise LocalProtocolError(f"data packet field out of range: {err}") from None
        return lead + header + self.payload


def _need(data: bytes, pos: int, n: int, end: int, what: str) -> None:
    if pos + n > end:
        raise Truncated(f"L2TP {what}: need {n} octets at offset {pos}, have {end - pos}")


def decode_packet(data: bytes) -> ControlPacket | DataPacket:
    """One UDP payload (§3.1). Every fault is a silent discard: a wrong version (§3.1: "MUST"
    be discarded when unknown), a control packet without L and S or with O, a Length beyond the
    datagram. Octets after Length are link padding and ignored; Offset padding is skipped."""
    end = len(data)
    _need(data, 0, 2, end, "flags/version")
    flags = data[0] << 8 | data[1]
    if flags & _VER != VERSION:
        raise RemoteProtocolError(
            f"L2TP version {flags & _VER} (only version 2 is handled; §3.1 discards others)",
            DISCARD)
    control = bool(flags & _T)
    if control and (flags & (_L | _S) != _L | _S or flags & _O):
        raise RemoteProtocolError(
            f"control packet flags {flags:#06x}: T=1 needs L=1 and S=1 and O=0 (§3.1)", DISCARD)
    pos = 2
    if flags & _L:
        _need(data, pos, 2, end, "Length")
        length = _U16.unpack_from(data, pos)[0]
        if length > end:
            raise RemoteProtocolError(f"L2TP Length {length} exceeds the {end}-octet datagram",
                                      DISCARD)
        end, pos = length, pos + 2
    _need(data, pos, 4, end, "Tunnel ID/Session ID")
    tunnel_id, session_id = _IDS.unpack_from(data, pos)
    pos += 4
    ns = nr = None
    if flags & _S:
        _need(data, pos, 4, end, "Ns/Nr")
        ns, nr = _IDS.unpack_from(data, pos)
        pos += 4
    if control:
        return ControlPacket(tunnel_id, session_id, ns or 0, nr or 0, data[pos:end])
    offset = 0
    if flags & _O:
        _need(data, pos, 2, end, "Offset Size")
        offset = _U16.unpack_from(data, pos)[0]
        _need(data, pos + 2, offset, end, "Offset Pad")
        pos += 2 + offset
    return DataPacket(tunnel_id, session_id, data[pos:end], ns, nr, bool(flags & _L), offset,
                      bool(flags & _P), bool(flags & _O))


def encode_data(tunnel_id: int, session_id: int, payload: bytes, ns: int | None = None) -> bytes:
    """`DataPacket(tunnel_id, session_id, payload, ns, 0).encode()` in one struct call, for
    the data path (what the stacks send: no Length, no Offset, Nr 0)."""
    try:
        if ns is None:
            return _DATA.pack(VERSION, tunnel_id, session_id) + payload
        return _DATA_NS.pack(VERSION | _S, tunnel_id, session_id, ns, 0) + payload
    except struct.error as err:
        raise LocalProtocolError(f"data packet field out of range: {err}") from None


def decode_data(data: bytes) -> tuple[int, int, int | None, bytes] | None:
    """(Tunnel ID, Session ID, Ns or None, PPP frame) of a data packet without Length,
    Offset or Priority, with or without Ns/Nr (what peers send on the data path); None for
    anything else, which `decode_packet` then decodes or refuses with the same result."""
    if len(data) < 6:
        return None
    flags = data[0] << 8 | data[1]
    if flags == VERSION:
        _, tunnel_id, session_id = _DATA.unpack_from(data)
        return tunnel_id, session_id, None, data[6:]
    if flags == VERSION | _S and len(data) >= 10:
        _, tunnel_id, session_id, ns, _ = _DATA_NS.unpack_from(data)
        return tunnel_id, session_id, ns, data[10:]
    return None


def peek_tunnel_id(data: bytes) -> int:
    """The Tunnel ID of a datagram, to find its tunnel before decoding anything else."""
    _need(data, 0, 2, len(data), "flags/version")
    pos = 4 if data[0] & (_L >> 8) else 2
    _need(data, pos, 2, len(data), "Tunnel ID")
    return int(_U16.unpack_from(data, pos)[0])
