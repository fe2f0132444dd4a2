"""PPP control packets (RFC 1661 §5) and their options (§6), shared by LCP, IPCP and CCP."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from tunnels._wire import Reader, Writer
from tunnels.errors import RemoteProtocolError, WireAnswer


class Code(IntEnum):
    """RFC 1661 §5 codes; 8-11 are LCP-only, 14/15 are CCP's Reset (RFC 1962 §2.1)."""

    CONFIGURE_REQUEST = 1
    CONFIGURE_ACK = 2
    CONFIGURE_NAK = 3
    CONFIGURE_REJECT = 4
    TERMINATE_REQUEST = 5
    TERMINATE_ACK = 6
    CODE_REJECT = 7
    PROTOCOL_REJECT = 8
    ECHO_REQUEST = 9
    ECHO_REPLY = 10
    DISCARD_REQUEST = 11
    IDENTIFICATION = 12  # RFC 1570
    TIME_REMAINING = 13  # RFC 1570
    RESET_REQUEST = 14
    RESET_ACK = 15


@dataclass(frozen=True, slots=True)
class ControlPacket:
    code: int
    identifier: int
    data: bytes = b""

    def encode(self) -> bytes:
        return (Writer().push_u8(self.code).push_u8(self.identifier)
                .push_u16(4 + len(self.data)).push_bytes(self.data).getvalue())

    @classmethod
    def decode(cls, info: bytes) -> ControlPacket:
        """RFC 1661 §5: octets past Length are padding and ignored; a Length larger than the
        packet, or under 4, makes the packet silently discarded."""
        r = Reader(info)
        code, ident, length = r.pull_u8("code"), r.pull_u8("identifier"), r.pull_u16("length")
        if length < 4 or length > len(info):
            raise RemoteProtocolError(f"control packet length {length} with {len(info)} octets")
        return cls(code, ident, info[4:length])


@dataclass(frozen=True, slots=True)
class Option:
    type: int
    data: bytes = b""

    def encode(self) -> bytes:
        return bytes((self.type, 2 + len(self.data))) + self.data


def decode_options(data: bytes) -> list[Option]:
    """Type-length-value options; a length under 2 or past the end is malformed (RFC 1661 §6)."""
    r = Reader(data)
    options = []
    while not r.at_end():
        kind = r.pull_u8("option type")
        length = r.pull_u8("option length")
        if length < 2:
            raise RemoteProtocolError(f"option {kind} has length {length}",
                                      WireAnswer("discard"))
        options.append(Option(kind, r.pull_bytes(length - 2, f"option {kind} data")))
    return options


def encode_options(options: list[Option]) -> bytes:
    return b"".join(o.encode() for o in options)
