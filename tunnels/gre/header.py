"""Enhanced GRE (RFC 2637 §4.1): version 1, protocol 0x880B, key = payload length + call ID.

Flags octet 1: C R K S s Recur; octet 2: A, flags, version. K is always set (the key carries
Payload Length and the peer's Call ID); S is set when a payload (a PPP frame) is present, A when
an acknowledgement number is present. C, R, s, Recur and the flags must be zero.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from tunnels.errors import RemoteProtocolError

PROTOCOL_PPP = 0x880B
_K, _S, _A = 0x20, 0x10, 0x80
_BASE = struct.Struct("!BBHHH")


@dataclass(frozen=True, slots=True)
class GREPacket:
    call_id: int
    payload: bytes = b""
    sequence: int | None = None
    ack: int | None = None

    def encode(self) -> bytes:
        flags1 = _K | (_S if self.sequence is not None else 0)
        flags2 = (_A if self.ack is not None else 0) | 1
        out = _BASE.pack(flags1, flags2, PROTOCOL_PPP, len(self.payload), self.call_id)
        if self.sequence is not None:
            out += struct.pack("!I", self.sequence)
        if self.ack is not None:
            out += struct.pack("!I", self.ack)
        return out + self.payload

    @classmethod
    def decode(cls, data: bytes) -> GREPacket:
        if len(data) < _BASE.size:
            raise RemoteProtocolError(f"GRE packet of {len(data)} octets")
        flags1, flags2, protocol, length, call_id = _BASE.unpack_from(data)
        if flags2 & 0x07 != 1 or protocol != PROTOCOL_PPP or not flags1 & _K:
            raise RemoteProtocolError(
                f"not enhanced GRE (version {flags2 & 7}, protocol {protocol:#06x})")
        if flags1 & 0xCF != 0 or flags2 & 0x78:
            raise RemoteProtocolError("GRE C/R/s/Recur/flags bits must be zero (RFC 2637 §4.1)")
        pos, seq, ack = _BASE.size, None, None
        if flags1 & _S:
            if len(data) < pos + 4:
                raise RemoteProtocolError("GRE sequence number truncated")
            seq = struct.unpack_from("!I", data, pos)[0]
            pos += 4
        if flags2 & _A:
            if len(data) < pos + 4:
                raise RemoteProtocolError("GRE acknowledgement number truncated")
            ack = struct.unpack_from("!I", data, pos)[0]
            pos += 4
        if len(data) - pos < length:
            raise RemoteProtocolError(f"GRE payload length {length}, {len(data) - pos} present")
        if length and seq is None:
            raise RemoteProtocolError("GRE payload without a sequence number")
        return cls(call_id, data[pos:pos + length], seq, ack)
