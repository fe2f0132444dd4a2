"""Enhanced GRE (RFC 2637 §4.1): version 1, protocol 0x880B, key = payload length + call ID.

Flags octet 1: C R K S s Recur; octet 2: A, flags, version. K is always set (the key carries
Payload Length and the peer's Call ID); S is set when a payload (a PPP frame) is present, A when
an acknowledgement number is present. C, R, s, Recur and the flags must be zero, the version 1.
Parsed with the one cursor reader (`tunnels._wire`): a short packet raises `Truncated`, a
`RemoteProtocolError` whose answer is a silent, counted discard (§4.1 has no error message).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from tunnels._wire import Reader, Writer
from tunnels.errors import RemoteProtocolError

PROTOCOL_PPP = 0x880B
_K, _S, _A = 0x20, 0x10, 0x80
_MUST_BE_ZERO_1 = 0xCF  # C, R, s, Recur (every bit of octet 1 but K and S)
_MUST_BE_ZERO_2 = 0x78  # the flags between A and the version
VERSION = 1
# The data path's two shapes, packed and unpacked with one struct call each (the codec below
# is the reference; these give byte-identical results, tests/test_pptp_codecs.py pairs them).
_DATA_ACK = struct.Struct("!BBHHHII")  # S and A: sequence and acknowledgement numbers
_DATA = struct.Struct("!BBHHHI")  # S only
_DATA_ACK_FLAGS = (_K | _S, _A | VERSION)
_DATA_FLAGS = (_K | _S, VERSION)


def encode_data(call_id: int, payload: bytes, sequence: int, ack: int | None) -> bytes:
    """`GREPacket(call_id, payload, sequence, ack).encode()` without the object: the data
    path sends every PPP frame through here (one pack, one concatenation)."""
    if ack is None:
        return _DATA.pack(_K | _S, VERSION, PROTOCOL_PPP, len(payload), call_id,
                          sequence) + payload
    return _DATA_ACK.pack(_K | _S, _A | VERSION, PROTOCOL_PPP, len(payload), call_id,
                          sequence, ack) + payload


def decode_data(data: bytes) -> tuple[int, int, int | None, bytes] | None:
    """(call ID, sequence, ack or None, payload) of a well-formed data packet, the two shapes
    encode_data writes, in one struct call and no object; None for any other input, which
    GREPacket.decode then parses (or names what is wrong with)."""
    if len(data) < 12 or data[0] != _K | _S:
        return None
    f2 = data[1]
    if f2 == _A | VERSION:
        if len(data) >= 16:
            _, _, protocol, length, call_id, seq, ack = _DATA_ACK.unpack_from(data)
            if protocol == PROTOCOL_PPP and len(data) >= 16 + length:
                return call_id, seq, ack, data[16:16 + length]
    elif f2 == VERSION:
        _, _, protocol, length, call_id, seq = _DATA.unpack_from(data)
        if protocol == PROTOCOL_PPP and len(data) >= 12 + length:
            return call_id, seq, None, data[12:12 + length]
    return None


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
        """The packet, or RemoteProtocolError. Well-formed data packets take one struct
        call (decode_data); any other input goes through the cursor reader, which names what
        is wrong."""
        fields = decode_data(data)
        if fields is not None:
            call_id, seq, ack, payload = fields
            return cls(call_id, payload, seq, ack)
        return cls._decode(data)

    @classmethod
    def _decode(cls, data: bytes) -> GREPacket:
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
