"""PPP in HDLC-like framing (RFC 1662) for serial lines: the dial-up links of the chapter.

`build_frame`/`split_frame` are the bare framing PPTP and L2TP carry: address/control `FF 03`
and the protocol field, compressed or not (ACFC, PFC: RFC 1661 §6.5-6.6).

`encode_frame` adds the FCS, escapes flag/escape octets and those the peer's ACCM marks, and
wraps in flags; `HDLCDecoder` takes bytes in any chunks and yields frames whose FCS checks,
counting the ones that do not (RFC 1662 §4.3: silently discarded). FCS-16 by default, FCS-32
when negotiated (RFC 1570).
"""

from __future__ import annotations

import struct

from tunnels._wire import Reader
from tunnels.errors import RemoteProtocolError

FLAG, ESCAPE = 0x7E, 0x7D
DEFAULT_ACCM = 0xFFFFFFFF
GOOD_FCS16 = 0xF0B8
GOOD_FCS32 = 0xDEBB20E3


def _crc_table(polynomial: int) -> list[int]:
    """The reflected CRC lookup table of RFC 1662 §C.1 for the given polynomial."""
    table = []
    for b in range(256):
        v = b
        for _ in range(8):
            v = (v >> 1) ^ polynomial if v & 1 else v >> 1
        table.append(v)
    return table


_T16, _T32 = _crc_table(0x8408), _crc_table(0xEDB88320)


def fcs16(data: bytes, fcs: int = 0xFFFF) -> int:
    """RFC 1662 §C.2."""
    for b in data:
        fcs = (fcs >> 8) ^ _T16[(fcs ^ b) & 0xFF]
    return fcs


def fcs32(data: bytes, fcs: int = 0xFFFFFFFF) -> int:
    """RFC 1662 §C.3."""
    for b in data:
        fcs = (fcs >> 8) ^ _T32[(fcs ^ b) & 0xFF]
    return fcs


def _escape(data: bytes, accm: int) -> bytes:
    out = bytearray()
    for b in data:
        if b in (FLAG, ESCAPE) or (b < 0x20 and accm >> b & 1):
            out += bytes((ESCAPE, b ^ 0x20))
        else:
            out.append(b)
    return bytes(out)


def encode_frame(frame: bytes, accm: int = DEFAULT_ACCM, fcs_bits: int = 16) -> bytes:
    """Flag, escaped frame and FCS (least significant octet first), flag."""
    if fcs_bits == 32:
        check = (fcs32(frame) ^ 0xFFFFFFFF).to_bytes(4, "little")
    else:
        check = (fcs16(frame) ^ 0xFFFF).to_bytes(2, "little")
    return bytes((FLAG,)) + _escape(frame + check, accm) + bytes((FLAG,))


class HDLCDecoder:
    def __init__(self, fcs_bits: int = 16):
        self.fcs_bits = fcs_bits
        self._buf = bytearray()
        self._escaped = False
        self.counters = {"frames": 0, "bad_fcs": 0, "runts": 0, "aborts": 0}

    def feed(self, data: bytes) -> list[bytes]:
        frames = []
        for b in data:
            if b == FLAG:
                frame = self._finish()
                if frame is not None:
                    frames.append(frame)
            elif self._escaped:
                self._buf.append(b ^ 0x20)
                self._escaped = False
            elif b == ESCAPE:
                self._escaped = True
            else:
                self._buf.append(b)
        return frames

    def _finish(self) -> bytes | None:
        raw, self._buf = bytes(self._buf), bytearray()
        if self._escaped:  # 7D 7E: the sender aborted the frame (RFC 1662 §4.2)
            self._escaped = False
            self.counters["aborts"] += 1
            return None
        if not raw:
            return None  # back-to-back flags
        size = 4 if self.fcs_bits == 32 else 2
        if len(raw) < size + 2:
            self.counters["runts"] += 1
            return None
        good = fcs32(raw) == GOOD_FCS32 if self.fcs_bits == 32 else fcs16(raw) == GOOD_FCS16
        if not good:
            self.counters["bad_fcs"] += 1
            return None
        self.counters["frames"] += 1
        return raw[:-size]


def split_frame(frame: bytes) -> tuple[int, bytes]:
    """Protocol and information of a frame with or without address/control (ACFC) and with a
    one- or two-octet protocol field (PFC), RFC 1661 §6.5-6.6."""
    r = Reader(frame)
    if r.remaining >= 2 and r.peek_u16("address/control") == 0xFF03:
        r.skip(2)
    first = r.pull_u8("protocol")
    protocol = first if first & 1 else (first << 8) | r.pull_u8("protocol")
    if not protocol & 1:
        raise RemoteProtocolError(f"protocol field {protocol:#06x} is even in its low octet")
    return protocol, r.pull_rest()


def build_frame(protocol: int, info: bytes, *, acfc: bool = False, pfc: bool = False) -> bytes:
    """The engine sends address/control and two protocol octets (both ends accept them);
    `acfc`/`pfc` compress as RFC 1661 allows once negotiated, never for LCP (§6.5-6.6)."""
    lcp = protocol == 0xC021
    header = b"" if acfc and not lcp else b"\xff\x03"
    if pfc and not lcp and protocol < 0x100:
        return header + bytes((protocol,)) + info
    return header + struct.pack("!H", protocol) + info
