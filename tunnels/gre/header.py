"""Enhanced GRE (RFC 2637 §4.1): version 1, protocol 0x880B, key = payload length + call ID.

Flags octet 1: C R K S s Recur; octet 2: A, flags, version. K is always set (the key carries
Payload Length and the peer's Call ID); S is set when a payload (a PPP frame) is present, A when
an acknowledgement number is present. C, R, s, Recur and the flags must be zero, the version 1.
Parsed with the one cursor reader (`tunnels._wire`): a short packet raises `Truncated`, a
`RemoteProtocolError` whose answer is a silent, counted discard (§4.1 has no error message).
"""

from __future__ import annotations

from dataclasses import dataclass

from tunnels._wire import Reader, Writer
from tunnels.errors import RemoteProtocolError

PROTOCOL_PPP = 0x880B
_K, _S, _A = 0x20, 0x10, 0x80
_MUST_BE_ZERO_1 = 0xCF  # C, R, s, Recur (every bit of octet 1 but K and S)
_MUST_BE_ZERO_2 = 0x78  # the flags between A and the version
VERSION = 1


@dataclass(frozen=True, slots=True)
class GREPacket:
    call_id: int  # the receiver's Call ID (RFC 2637 §4.1 "Key (LW)")
    payload: bytes = b""
    sequence: int | None = None
    ack: int | None = None

    def encode(self) -> bytes:
        w = Writer()
        w.push_u8(_K | (_S if self.sequence is not None else 0))
        w.push_u8((_A if self.ack is not None else 0) | VERSION)
        w.push_u16(PROTOCOL_PPP).push_u16(len(self.payload)).push_u16(self.call_id)
        if self.sequence is not None:
            w.push_u32(self.sequence)
        if self.ack is not None:
            w.push_u32(self.ack)
        return w.push_bytes(self.payload).getvalue()

    @classmethod
    def decode(cls, data: bytes) -> GREPacket:
        r = Reader(data)
        flags1, flags2 = r.pull_u8("GRE flags"), r.pull_u8("GRE flags/version")
        protocol = r.pull_u16("GRE protocol type")
        if flags2 & 0x07 != VERSION or protocol != PROTOCOL_PPP or not flags1 & _K:
            raise RemoteProtocolError(
                f"not enhanced GRE (version {flags2 & 7}, protocol {protocol:#06x})")
        if flags1 & _MUST_BE_ZERO_1 or flags2 & _MUST_BE_ZERO_2:
            raise RemoteProtocolError("GRE C/R/s/Recur/flags bits must be zero (RFC 2637 §4.1)")
        length, call_id = r.pull_u16("GRE payload length"), r.pull_u16("GRE call ID")
        seq = r.pull_u32("GRE sequence number") if flags1 & _S else None
        ack = r.pull_u32("GRE acknowledgement number") if flags2 & _A else None
        if length and seq is None:
            raise RemoteProtocolError("GRE payload without a sequence number")
        # Octets after the payload (link-layer padding) are not ours: §4.1's length rules.
        return cls(call_id, r.pull_bytes(length, "GRE payload"), seq, ack)
