"""PPTP control messages (RFC 2637 §2): one dataclass each, laid out by a field table.

Every message starts with the common header (Length, PPTP Message Type 1, Magic Cookie
0x1A2B3C4D, Control Message Type, Reserved0); each class lists its remaining fields as
(name, field code) in wire order, so encode and decode are one generic pair and a reader can
check a class against the RFC's figure line by line. `ControlStream` splits TCP bytes into
messages.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum, IntFlag
from typing import Any, ClassVar

from tunnels._wire import Reader, Writer, fixed_string, parse_fixed_string
from tunnels.errors import RemoteProtocolError, WireAnswer

MAGIC_COOKIE = 0x1A2B3C4D
PROTOCOL_VERSION = 0x0100
CONTROL_MESSAGE = 1
HEADER_LENGTH = 12  # Length, PPTP Message Type, Magic Cookie, Control Message Type, Reserved0

# Field codes of the layouts: B/H/I are 8/16/32-bit integers, "<n>s" a NUL-padded string.
_PULL: dict[str, Callable[[Reader, str], int]] = {
    "B": Reader.pull_u8, "H": Reader.pull_u16, "I": Reader.pull_u32}
_PUSH: dict[str, Callable[[Writer, int], Writer]] = {
    "B": Writer.push_u8, "H": Writer.push_u16, "I": Writer.push_u32}
_SIZE = {"B": 1, "H": 2, "I": 4}


def _field_size(code: str) -> int:
    return _SIZE.get(code) or int(code[:-1])


class ControlMessageType(IntEnum):
    SCCRQ = 1  # Start-Control-Connection-Request
    SCCRP = 2  # Start-Control-Connection-Reply
    StopCCRQ = 3  # Stop-Control-Connection-Request
    StopCCRP = 4  # Stop-Control-Connection-Reply
    ECHORQ = 5  # Echo-Request
    ECHORP = 6  # Echo-Reply
    OCRQ = 7  # Outgoing-Call-Request
    OCRP = 8  # Outgoing-Call-Reply
    ICRQ = 9  # Incoming-Call-Request
    ICRP = 10  # Incoming-Call-Reply
    ICCN = 11  # Incoming-Call-Connected
    CCRQ = 12  # Call-Clear-Request
    CDN = 13  # Call-Disconnect-Notify
    WEN = 14  # WAN-Error-Notify
    SLI = 15  # Set-Link-Info


class StartResult(IntEnum):
    """SCCRP Result Code (§2.2)."""

    SUCCESSFUL = 1
    GENERAL_ERROR = 2
    ALREADY_EXISTS = 3
    NOT_AUTHORIZED = 4
    BAD_PROTOCOL_VERSION = 5


class FramingCapability(IntFlag):
    """Framing Capabilities / Framing Type (§2.1, §2.7)."""

    ASYNC = 1
    SYNC = 2


class BearerCapability(IntFlag):
    """Bearer Capabilities / Bearer Type (§2.1, §2.7)."""

    ANALOG = 1
    DIGITAL = 2


class StopResult(IntEnum):
    """StopCCRP Result Code (§2.4)."""

    OK = 1
    GENERAL_ERROR = 2


class EchoResult(IntEnum):
    """Echo-Reply Result Code (§2.6)."""

    OK = 1
    GENERAL_ERROR = 2


class IncomingCallResult(IntEnum):
    """ICRP Result Code (§2.10)."""

    CONNECT = 1
    GENERAL_ERROR = 2
    DO_NOT_ACCEPT = 3


class StopReason(IntEnum):
    """StopCCRQ Reason (§2.3)."""

    NONE = 1
    STOP_PROTOCOL = 2  # the peer's protocol version is not supported
    STOP_LOCAL_SHUTDOWN = 3


class CallResult(IntEnum):
    """OCRP Result Code (§2.8)."""

    CONNECTED = 1
    GENERAL_ERROR = 2
    NO_CARRIER = 3
    BUSY = 4
    NO_DIAL_TONE = 5
    TIME_OUT = 6
    DO_NOT_ACCEPT = 7


class DisconnectResult(IntEnum):
    """CDN Result Code (§2.13)."""

    LOST_CARRIER = 1
    GENERAL_ERROR = 2
    ADMIN_SHUTDOWN = 3
    REQUEST = 4


class GeneralError(IntEnum):
    """General error codes (§2.16)."""

    NONE = 0
    NOT_CONNECTED = 1
    BAD_FORMAT = 2
    BAD_VALUE = 3
    NO_RESOURCE = 4
    BAD_CALL_ID = 5
    PAC_ERROR = 6


class ControlMessage:
    """Base of the 15 messages: LAYOUT lists the fields after the common header, in the
    order of the RFC's figure; the length is fixed per type and computed from it."""

    TYPE: ClassVar[ControlMessageType]
    LAYOUT: ClassVar[tuple[tuple[str, str], ...]]
    _length: ClassVar[int]

    def __init_subclass__(cls) -> None:
        cls._length = HEADER_LENGTH + sum(_field_size(code) for _, code in cls.LAYOUT)

    @classmethod
    def length(cls) -> int:
        return cls._length

    def encode(self) -> bytes:
        w = Writer()
        w.push_u16(self._length).push_u16(CONTROL_MESSAGE).push_u32(MAGIC_COOKIE)
        w.push_u16(self.TYPE).push_u16(0)
        for name, code in self.LAYOUT:
            value = getattr(self, name)
            push = _PUSH.get(code)
            if push is None:
                w.push_bytes(fixed_string(value, _field_size(code)))
            else:
                push(w, value)
        return w.getvalue()

    @classmethod
    def decode_body(cls, r: Reader) -> ControlMessage:
        values: list[Any] = []
        for name, code in cls.LAYOUT:
            pull = _PULL.get(code)
            if pull is None:
                values.append(parse_fixed_string(r.pull_bytes(_field_size(code), name)))
            else:
                values.append(pull(r, name))
        return cls(*values)


_TEXT = "64s"


@dataclass(frozen=True, slots=True)
class StartControlConnectionRequest(ControlMessage):
    protocol_version: int = PROTOCOL_VERSION
    reserved1: int = 0
    framing_capabilities: int = 3  # async and sync
    bearer_capabilities: int = 3  # analog and digital
    maximum_channels: int = 0
    firmware_revision: int = 1
    host_name: str = ""
    vendor_string: str = "vpnlab"
    TYPE = ControlMessageType.SCCRQ
    LAYOUT = (("protocol_version", "H"), ("reserved1", "H"), ("framing_capabilities", "I"),
              ("bearer_capabilities", "I"), ("maximum_channels", "H"),
              ("firmware_revision", "H"), ("host_name", _TEXT), ("vendor_string", _TEXT))


@dataclass(frozen=True, slots=True)
class StartControlConnectionReply(ControlMessage):
    protocol_version: int = PROTOCOL_VERSION
    result_code: int = StartResult.SUCCESSFUL
    error_code: int = 0
    framing_capabilities: int = 3
    bearer_capabilities: int = 3
    maximum_channels: int = 0
    firmware_revision: int = 1
    host_name: str = ""
    vendor_string: str = "vpnlab"
    TYPE = ControlMessageType.SCCRP
    LAYOUT = (("protocol_version", "H"), ("result_code", "B"), ("error_code", "B"),
              ("framing_capabilities", "I"), ("bearer_capabilities", "I"),
              ("maximum_channels", "H"), ("firmware_revision", "H"), ("host_name", _TEXT),
              ("vendor_string", _TEXT))


@dataclass(frozen=True, slots=True)
class StopControlConnectionRequest(ControlMessage):
    reason: int = StopReason.NONE
    reserved1: int = 0
    reserved2: int = 0
    TYPE = ControlMessageType.StopCCRQ
    LAYOUT = (("reason", "B"), ("reserved1", "B"), ("reserved2", "H"))


@dataclass(frozen=True, slots=True)
class StopControlConnectionReply(ControlMessage):
    result_code: int = 1
    error_code: int = 0
    reserved2: int = 0
    TYPE = ControlMessageType.StopCCRP
    LAYOUT = (("result_code", "B"), ("error_code", "B"), ("reserved2", "H"))


@dataclass(frozen=True, slots=True)
class EchoRequest(ControlMessage):
    identifier: int = 0
    TYPE = ControlMessageType.ECHORQ
    LAYOUT = (("identifier", "I"),)


@dataclass(frozen=True, slots=True)
class EchoReply(ControlMessage):
    identifier: int = 0
    result_code: int = 1
    error_code: int = 0
    reserved1: int = 0
    TYPE = ControlMessageType.ECHORP
    LAYOUT = (("identifier", "I"), ("result_code", "B"), ("error_code", "B"), ("reserved1", "H"))


@dataclass(frozen=True, slots=True)
class OutgoingCallRequest(ControlMessage):
    call_id: int = 0
    call_serial_number: int = 0
    minimum_bps: int = 300
    maximum_bps: int = 100_000_000
    bearer_type: int = 3
    framing_type: int = 3
    packet_receive_window: int = 64
    packet_processing_delay: int = 0
    phone_number_length: int = 0
    reserved1: int = 0
    phone_number: str = ""
    subaddress: str = ""
    TYPE = ControlMessageType.OCRQ
    LAYOUT = (("call_id", "H"), ("call_serial_number", "H"), ("minimum_bps", "I"),
              ("maximum_bps", "I"), ("bearer_type", "I"), ("framing_type", "I"),
              ("packet_receive_window", "H"), ("packet_processing_delay", "H"),
              ("phone_number_length", "H"), ("reserved1", "H"), ("phone_number", _TEXT),
              ("subaddress", _TEXT))


@dataclass(frozen=True, slots=True)
class OutgoingCallReply(ControlMessage):
    call_id: int = 0
    peer_call_id: int = 0
    result_code: int = CallResult.CONNECTED
    error_code: int = 0
    cause_code: int = 0
    connect_speed: int = 100_000_000
    packet_receive_window: int = 64
    packet_processing_delay: int = 0
    physical_channel_id: int = 0
    TYPE = ControlMessageType.OCRP
    LAYOUT = (("call_id", "H"), ("peer_call_id", "H"), ("result_code", "B"),
              ("error_code", "B"), ("cause_code", "H"), ("connect_speed", "I"),
              ("packet_receive_window", "H"), ("packet_processing_delay", "H"),
              ("physical_channel_id", "I"))


@dataclass(frozen=True, slots=True)
class IncomingCallRequest(ControlMessage):
    call_id: int = 0
    call_serial_number: int = 0
    call_bearer_type: int = 1
    physical_channel_id: int = 0
    dialed_number_length: int = 0
    dialing_number_length: int = 0
    dialed_number: str = ""
    dialing_number: str = ""
    subaddress: str = ""
    TYPE = ControlMessageType.ICRQ
    LAYOUT = (("call_id", "H"), ("call_serial_number", "H"), ("call_bearer_type", "I"),
              ("physical_channel_id", "I"), ("dialed_number_length", "H"),
              ("dialing_number_length", "H"), ("dialed_number", _TEXT),
              ("dialing_number", _TEXT), ("subaddress", _TEXT))


@dataclass(frozen=True, slots=True)
class IncomingCallReply(ControlMessage):
    call_id: int = 0
    peer_call_id: int = 0
    result_code: int = 1
    error_code: int = 0
    packet_receive_window: int = 64
    packet_transmit_delay: int = 0
    reserved1: int = 0
    TYPE = ControlMessageType.ICRP
    LAYOUT = (("call_id", "H"), ("peer_call_id", "H"), ("result_code", "B"),
              ("error_code", "B"), ("packet_receive_window", "H"),
              ("packet_transmit_delay", "H"), ("reserved1", "H"))


@dataclass(frozen=True, slots=True)
class IncomingCallConnected(ControlMessage):
    peer_call_id: int = 0
    reserved1: int = 0
    connect_speed: int = 100_000_000
    packet_receive_window: int = 64
    packet_transmit_delay: int = 0
    framing_type: int = 1
    TYPE = ControlMessageType.ICCN
    LAYOUT = (("peer_call_id", "H"), ("reserved1", "H"), ("connect_speed", "I"),
              ("packet_receive_window", "H"), ("packet_transmit_delay", "H"),
              ("framing_type", "I"))


@dataclass(frozen=True, slots=True)
class CallClearRequest(ControlMessage):
    call_id: int = 0
    reserved1: int = 0
    TYPE = ControlMessageType.CCRQ
    LAYOUT = (("call_id", "H"), ("reserved1", "H"))


@dataclass(frozen=True, slots=True)
class CallDisconnectNotify(ControlMessage):
    call_id: int = 0
    result_code: int = DisconnectResult.REQUEST
    error_code: int = 0
    cause_code: int = 0
    reserved1: int = 0
    call_statistics: str = ""
    TYPE = ControlMessageType.CDN
    LAYOUT = (("call_id", "H"), ("result_code", "B"), ("error_code", "B"),
              ("cause_code", "H"), ("reserved1", "H"), ("call_statistics", "128s"))


@dataclass(frozen=True, slots=True)
class WanErrorNotify(ControlMessage):
    peer_call_id: int = 0
    reserved1: int = 0
    crc_errors: int = 0
    framing_errors: int = 0
    hardware_overruns: int = 0
    buffer_overruns: int = 0
    timeout_errors: int = 0
    alignment_errors: int = 0
    TYPE = ControlMessageType.WEN
    LAYOUT = (("peer_call_id", "H"), ("reserved1", "H"), ("crc_errors", "I"),
              ("framing_errors", "I"), ("hardware_overruns", "I"), ("buffer_overruns", "I"),
              ("timeout_errors", "I"), ("alignment_errors", "I"))


@dataclass(frozen=True, slots=True)
class SetLinkInfo(ControlMessage):
    peer_call_id: int = 0
    reserved1: int = 0
    send_accm: int = 0xFFFFFFFF
    receive_accm: int = 0xFFFFFFFF
    TYPE = ControlMessageType.SLI
    LAYOUT = (("peer_call_id", "H"), ("reserved1", "H"), ("send_accm", "I"),
              ("receive_accm", "I"))


MESSAGES: dict[int, type[ControlMessage]] = {
    cls.TYPE: cls for cls in (
        StartControlConnectionRequest, StartControlConnectionReply,
        StopControlConnectionRequest, StopControlConnectionReply, EchoRequest, EchoReply,
        OutgoingCallRequest, OutgoingCallReply, IncomingCallRequest, IncomingCallReply,
        IncomingCallConnected, CallClearRequest, CallDisconnectNotify, WanErrorNotify,
        SetLinkInfo)
}

BAD_FORMAT = WireAnswer("stop-control-connection", GeneralError.BAD_FORMAT)


def decode(message: bytes) -> ControlMessage:
    """One whole control message; a bad cookie, type or length is the peer's fault and the
    answer is to stop the control connection (RFC 2637 §2.3, general error 2 "bad format")."""
    if len(message) < HEADER_LENGTH:
        raise RemoteProtocolError(f"PPTP message of {len(message)} octets", BAD_FORMAT)
    r = Reader(message)
    length, kind = r.pull_u16("Length"), r.pull_u16("PPTP Message Type")
    cookie, ctype = r.pull_u32("Magic Cookie"), r.pull_u16("Control Message Type")
    r.skip(2, "Reserved0")
    if cookie != MAGIC_COOKIE:
        raise RemoteProtocolError(f"magic cookie {cookie:#010x}, expected 0x1a2b3c4d",
                                  BAD_FORMAT)
    if kind != CONTROL_MESSAGE:
        raise RemoteProtocolError(f"PPTP message type {kind} is not a control message",
                                  BAD_FORMAT)
    cls = MESSAGES.get(ctype)
    if cls is None:
        raise RemoteProtocolError(f"unknown control message type {ctype}", BAD_FORMAT)
    if length != cls.length() or len(message) != length:
        raise RemoteProtocolError(
            f"{cls.TYPE.name} length {length} (have {len(message)}), expected {cls.length()}",
            BAD_FORMAT)
    return cls.decode_body(r)


class ControlStream:
    """Reassembles control messages from TCP bytes fed in arbitrary chunks."""

    MAX_LENGTH = 1024

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[ControlMessage]:
        self._buf += data
        out = []
        while len(self._buf) >= 2:
            length = Reader(self._buf[:2]).pull_u16("Length")
            if length < HEADER_LENGTH or length > self.MAX_LENGTH:
                self._buf.clear()
                raise RemoteProtocolError(f"control message length field {length}", BAD_FORMAT)
            if len(self._buf) < length:
                break
            chunk = bytes(self._buf[:length])
            del self._buf[:length]
            out.append(decode(chunk))
        return out
