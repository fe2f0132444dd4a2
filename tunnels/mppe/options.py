"""The CCP MPPE option (type 18, RFC 3078 §2): four octets of supported bits.

As a 32-bit big-endian value: H (stateless, "history-less") is 0x01000000; in the last octet
M (56-bit) 0x80, S (128-bit) 0x40, L (40-bit) 0x20, D (obsolete) 0x10, C (MPPC compression,
never offered here) 0x01.
"""

from __future__ import annotations

import struct

from tunnels.errors import LocalProtocolError

CCP_OPTION_MPPE = 18
MPPE_H = 0x01000000
MPPE_M = 0x80
MPPE_S = 0x40
MPPE_L = 0x20
MPPE_D = 0x10
MPPE_C = 0x01

KEY_BITS = {MPPE_S: 128, MPPE_M: 56, MPPE_L: 40}
BIT_FOR = {bits: flag for flag, bits in KEY_BITS.items()}


def encode_bits(value: int) -> bytes:
    return struct.pack("!I", value)


def decode_bits(data: bytes) -> int:
    return struct.unpack("!I", data)[0] if len(data) == 4 else 0


def strengths(value: int) -> list[int]:
    """Key lengths offered in a bits value, strongest first."""
    return [bits for flag, bits in KEY_BITS.items() if value & flag]


def describe(value: int) -> str:
    lengths = "/".join(str(b) for b in strengths(value)) or "no key length"
    return f"MPPE {lengths}-bit {'stateless' if value & MPPE_H else 'stateful'}"


def bits_for(key_bits: int, stateless: bool) -> int:
    """The supported-bits value offering exactly one key length (RFC 3078 §2)."""
    if key_bits not in BIT_FOR:
        raise LocalProtocolError(f"MPPE key length {key_bits}: expected 40, 56 or 128")
    return BIT_FOR[key_bits] | (MPPE_H if stateless else 0)


def parse_bits(value: int) -> tuple[int | None, bool]:
    """(strongest key length offered or None, stateless) from a supported-bits value."""
    offered = strengths(value)
    return (offered[0] if offered else None), bool(value & MPPE_H)
