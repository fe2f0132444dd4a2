"""The little of IPv4 and UDP that transport-mode ESP touches: the header's protocol, length and
checksum (RFC 791), UDP headers (RFC 768) and the Internet checksum (RFC 1071, RFC 1624).

The checksum uses one big-integer conversion instead of a Python loop over 16-bit words:
since 2^16 = 1 (mod 2^16 - 1), a buffer read as one big-endian integer is congruent to the
sum of its 16-bit words, which is the one's-complement sum up to the two forms of zero.
With the compiled ESP path (crypto.FAST) `ones_sum` is its C loop, about 25 times faster.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable
from dataclasses import dataclass

from tunnels._wire import Reader
from tunnels.errors import RemoteProtocolError, Truncated
from tunnels.ipsec.crypto import ACCEL

PROTO_TCP = 6
PROTO_UDP = 17
PROTO_ESP = 50
MF = 0x2000
OFFSET_MASK = 0x1FFF

_HEADER = struct.Struct("!BBHHHBBH4s4s")
_UDP = struct.Struct("!HHHH")


def py_ones_sum(data: bytes | bytearray | memoryview) -> int:
    """The one's-complement sum of `data` as 16-bit words (odd length padded with zero)."""
    value = int.from_bytes(data, "big")
    if len(data) & 1:
        value <<= 8
    folded = value % 0xFFFF
    return 0xFFFF if folded == 0 and value else folded


ones_sum: Callable[[bytes | bytearray | memoryview], int] = \
    ACCEL.checksum if ACCEL is not None else py_ones_sum


def add16(*sums: int) -> int:
    """One's-complement addition of partial sums."""
    total = sum(sums)
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def address(text: str) -> bytes:
    return ipaddress.IPv4Address(text).packed


def address_sum(src: bytes, dst: bytes) -> int:
    """The addresses' part of the RFC 768/793 pseudo-header, which a sender can keep per SA."""
    return add16(ones_sum(src), ones_sum(dst))


def pseudo_header_sum(src: bytes, dst: bytes, proto: int, length: int) -> int:
    """RFC 768/793 pseudo-header: source, destination, zero + protocol, TCP/UDP length."""
    return add16(address_sum(src, dst), proto, length)


def checksum_with(addresses: int, proto: int, segment: bytes | bytearray | memoryview) -> int:
    """TCP or UDP checksum of `segment` (its checksum field zero) given `address_sum`; UDP's
    0 is sent as 0xFFFF (RFC 768: zero means "no checksum")."""
    value = ~add16(addresses, proto, len(segment), ones_sum(segment)) & 0xFFFF
    return 0xFFFF if value == 0 and proto == PROTO_UDP else value


def transport_checksum(src: bytes, dst: bytes, proto: int,
                       segment: bytes | bytearray | memoryview) -> int:
    return checksum_with(address_sum(src, dst), proto, segment)


@dataclass(frozen=True, slots=True)
class IPv4Header:
    """A parsed IPv4 header; `raw` keeps its bytes (options included) for rewriting."""

    header_len: int
    total_len: int
    flags_fragment: int
    proto: int
    src: bytes
    dst: bytes
    raw: bytes

    @property
    def is_fragment(self) -> bool:
        return bool(self.flags_fragment & (MF | OFFSET_MASK))

    def rewrite(self, proto: int, payload_len: int) -> bytes:
        """This header with another protocol and length, checksum recomputed (RFC 791)."""
        head = bytearray(self.raw)
        head[9] = proto
        struct.pack_into("!H", head, 2, self.header_len + payload_len)
        head[10:12] = b"\0\0"
        struct.pack_into("!H", head, 10, ~ones_sum(head) & 0xFFFF)
        return bytes(head)


def parse_ipv4(packet: bytes) -> IPv4Header:
    """The header of an IPv4 packet, checked against what the buffer really holds."""
    reader = Reader(packet)
    ver_ihl = reader.pull_u8("version/IHL")
    reader.skip(1, "TOS")
    total = reader.pull_u16("total length")
    reader.skip(2, "identification")
    flags_fragment = reader.pull_u16("flags/fragment offset")
    reader.skip(1, "TTL")
    proto = reader.pull_u8("protocol")
    reader.skip(2, "header checksum")
    src = reader.pull_bytes(4, "source")
    dst = reader.pull_bytes(4, "destination")
    header_len = (ver_ihl & 0x0F) * 4
    if ver_ihl >> 4 != 4 or header_len < 20:
        raise RemoteProtocolError(f"not an IPv4 header (version/IHL {ver_ihl:#04x})")
    if not header_len <= total <= len(packet):
        raise RemoteProtocolError(f"IPv4 total length {total}, header {header_len}, "
                                  f"{len(packet)} octets received")
    reader.skip(header_len - 20, "options")
    return IPv4Header(header_len, total, flags_fragment, proto, src, dst,
                      packet[:header_len])


def udp_header(sport: int, dport: int, payload_len: int, checksum: int = 0) -> bytes:
    return _UDP.pack(sport, dport, 8 + payload_len, checksum)


def parse_udp(segment: bytes | memoryview) -> tuple[int, int, int]:
    """(source port, destination port, payload length) of a UDP header whose length field
    must fit the segment (RFC 768). On the data path, so one struct read, not a Reader."""
    if len(segment) < 8:
        raise Truncated(f"UDP header: need 8 octets, have {len(segment)}")
    sport, dport, length, _ = _UDP.unpack_from(segment)
    if not 8 <= length <= len(segment):
        raise RemoteProtocolError(f"UDP length {length} in a {len(segment)}-octet segment")
    return sport, dport, length - 8
