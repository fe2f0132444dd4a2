"""IPv4 ICMP echo (RFC 792) built and recognised without a socket: the ping-equivalent that
`vpnlab load` sends through each session, and that conformance cases send through stacks
driven in memory. The answer comes from the far end's kernel, so these only build and read."""

from __future__ import annotations

import ipaddress
import struct

from tunnels.ipsec.ipv4 import ones_sum


def echo_request(src: str, dst: str, ident: int, payload: bytes = b"vpnlab-load") -> bytes:
    """An IPv4 ICMP echo request (RFC 792) with correct checksums."""
    icmp = struct.pack("!BBHHH", 8, 0, 0, ident & 0xFFFF, 1) + payload
    icmp = icmp[:2] + struct.pack("!H", _checksum(icmp)) + icmp[4:]
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), ident & 0xFFFF, 0, 64, 1, 0,
                         ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed)
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    return header + icmp


def is_echo_reply(packet: bytes, ident: int) -> bool:
    return echo_reply_ident(packet) == ident & 0xFFFF


def echo_reply_ident(packet: bytes) -> int | None:
    """The identifier of an IPv4 ICMP echo reply (RFC 792), None for any other packet."""
    if len(packet) < 28 or packet[9] != 1:
        return None
    ihl = (packet[0] & 0x0F) * 4
    if len(packet) < ihl + 8 or packet[ihl] != 0:
        return None
    return int.from_bytes(packet[ihl + 4:ihl + 6], "big")


def _checksum(data: bytes) -> int:
    """RFC 1071: the complement of the one's-complement sum (compiled when it is built)."""
    return ~ones_sum(data) & 0xFFFF
