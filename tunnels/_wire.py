"""One cursor reader and one writer for every wire format in tunnels/.

Nothing else slices packet buffers by hand: a read past the end raises `Truncated`, which is a
`RemoteProtocolError`, so a short or lying length field can never become an IndexError.
"""

from __future__ import annotations

import struct

from tunnels.errors import Truncated

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")


class Reader:
    """A cursor over received bytes; `pull_*` consume, `peek_*` do not."""

    __slots__ = ("_data", "_pos", "_end")

    def __init__(self, data: bytes | bytearray | memoryview, start: int = 0,
                 end: int | None = None):
        self._data = bytes(data) if not isinstance(data, bytes) else data
        self._pos = start
        self._end = len(self._data) if end is None else end
        if not 0 <= start <= self._end <= len(self._data):
            raise Truncated(f"window {start}..{end} outside {len(self._data)} bytes")

    @property
    def position(self) -> int:
        return self._pos

    @property
    def remaining(self) -> int:
        return self._end - self._pos

    def at_end(self) -> bool:
        return self._pos >= self._end

    def _need(self, n: int, what: str) -> int:
        if n < 0 or self._pos + n > self._end:
            raise Truncated(f"{what}: need {n} bytes at offset {self._pos}, have {self.remaining}")
        start = self._pos
        self._pos += n
        return start

    def pull_u8(self, what: str = "u8") -> int:
        return self._data[self._need(1, what)]

    def pull_u16(self, what: str = "u16") -> int:
        return _U16.unpack_from(self._data, self._need(2, what))[0]

    def pull_u32(self, what: str = "u32") -> int:
        return _U32.unpack_from(self._data, self._need(4, what))[0]

    def pull_bytes(self, n: int, what: str = "bytes") -> bytes:
        start = self._need(n, what)
        return self._data[start : start + n]

    def pull_rest(self) -> bytes:
        return self.pull_bytes(self.remaining, "rest")

    def peek_u8(self, what: str = "u8") -> int:
        if self.remaining < 1:
            raise Truncated(f"{what}: need 1 byte at offset {self._pos}, have 0")
        return self._data[self._pos]

    def peek_u16(self, what: str = "u16") -> int:
        if self.remaining < 2:
            raise Truncated(f"{what}: need 2 bytes at offset {self._pos}, have {self.remaining}")
        return _U16.unpack_from(self._data, self._pos)[0]

    def sub_reader(self, n: int, what: str = "sub-field") -> Reader:
        """A reader over the next `n` bytes (e.g. one option or AVP), consuming them here."""
        start = self._need(n, what)
        return Reader(self._data, start, start + n)

    def skip(self, n: int, what: str = "skip") -> None:
        self._need(n, what)


class Writer:
    """Appends big-endian fields; `getvalue()` returns the bytes written."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def __len__(self) -> int:
        return len(self._buf)

    def push_u8(self, v: int) -> Writer:
        self._buf.append(v)
        return self

    def push_u16(self, v: int) -> Writer:
        self._buf += _U16.pack(v)
        return self

    def push_u32(self, v: int) -> Writer:
        self._buf += _U32.pack(v)
        return self

    def push_bytes(self, b: bytes | bytearray | memoryview) -> Writer:
        self._buf += b
        return self

    def patch_u16(self, offset: int, v: int) -> None:
        """Fill in a length field once the rest of the message is known."""
        _U16.pack_into(self._buf, offset, v)

    def getvalue(self) -> bytes:
        return bytes(self._buf)


def fixed_string(value: str, size: int) -> bytes:
    """A NUL-padded fixed-size field (PPTP host name, vendor string)."""
    raw = value.encode("ascii", "replace")[:size]
    return raw + b"\0" * (size - len(raw))


def parse_fixed_string(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("ascii", "replace")
