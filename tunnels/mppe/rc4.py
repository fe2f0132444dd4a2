"""RC4 for MPPE's data path: cryptography's ARC4, or libcrypto's RC4_set_key/RC4 when present.

Stateless MPPE changes key before every packet (RFC 3078 §8.1): each packet costs a 16-octet
RC4 for the key change (§7.3) and a fresh RC4 key schedule for its data. cryptography builds a
new OpenSSL cipher context for each key (an EVP fetch of the legacy provider's ARC4: ~4 us
here); OpenSSL's low-level RC4_set_key on a reused state is ~1 us. So when the system's
libcrypto exports RC4 (Debian's libcrypto3 does) and agrees with cryptography on a test vector
at import, per-packet keys use it through ctypes; otherwise everything stays on cryptography.
Long streams (stateful MPPE, one key for 256 packets) stay on cryptography's context, whose
update is the faster of the two. Same OpenSSL algorithm either way; the RFC vectors in
tests/test_mppe*.py run on whichever is in use.

This is the pure-Python path (stream.PyState): when the compiled `_fastmppe` is built and not
disabled (stream.ACCEL), the data path's RC4 and key changes run there and only keys.py's
one-off `rc4()` comes here.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Protocol

from cryptography.hazmat.decrepit.ciphers.algorithms import ARC4
from cryptography.hazmat.primitives.ciphers import Cipher

# RC4_KEY is {RC4_INT x, y, data[256]}; RC4_INT is a 4-octet unsigned int on every platform
# OpenSSL 3 builds for, so 1032 octets; a little room to spare. Two per stateless session
# (send and receive; the key change re-keys the same state), each with an output buffer of
# 256 octets or 1.6 KiB (_room_for): a server holding 10,000 sessions keeps 20,000 of them.
_STATE_SIZE = 1088


class Stream(Protocol):
    def update(self, data: bytes) -> bytes: ...


def cryptography_stream(key: bytes) -> Stream:
    return Cipher(ARC4(key), mode=None).encryptor()  # type: ignore[return-value]


class _Libcrypto:
    def __init__(self) -> None:
        name = ctypes.util.find_library("crypto")
        if name is None:
            raise OSError("no libcrypto")
        # PyDLL: the GIL stays held. Each call is 0.3-2 us on one packet of a one-thread data
        # path; releasing and taking back the GIL around it cost more than it could give.
        lib = ctypes.PyDLL(name)
        self.set_key = lib.RC4_set_key
        self.set_key.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p]
        self.set_key.restype = None
        self.rc4 = lib.RC4
        self.rc4.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]
        self.rc4.restype = None


def _room_for(n: int) -> int:
    """Output buffer sizes: 256 octets while packets are small (an idle session's echoes and
    control), then room for MRU 1500 and the protocol field at once, so a bulk flow grows the
    buffer once, not packet size by packet size."""
    return 256 if n <= 256 else max(n, 1600)


class RekeyedStream:
    """One RC4 state, re-keyed in place for each packet (stateless MPPE), and one output buffer
    reused by every call (grown to the largest packet seen); addresses computed once.

    Per packet that is two ctypes calls and one copy out, with no ctypes object built: a fresh
    `create_string_buffer` per call cost ~0.5 us, a third of the RC4 of 1400 octets. One
    object serves one data path at a time (as its RC4 state already must), so the buffer is
    not shared.
    """

    __slots__ = ("_addr", "_state", "_out", "_out_addr", "_view", "_room")

    def __init__(self, room: int = 0) -> None:
        self._state = ctypes.create_string_buffer(_STATE_SIZE)
        self._addr = ctypes.addressof(self._state)
        self._grow(room)

    def _grow(self, room: int) -> None:
        self._out = ctypes.create_string_buffer(max(room, 1))
        self._out_addr = ctypes.addressof(self._out)
        self._view = memoryview(self._out).cast("B")
        self._room = room

    def rekey(self, key: bytes) -> RekeyedStream:
        _LIB.set_key(self._addr, len(key), key)  # type: ignore[union-attr]
        return self

    def update(self, data: bytes) -> bytes:
        n = len(data)
        if n > self._room:
            self._grow(_room_for(n))
        _LIB.rc4(self._addr, n, data, self._out_addr)  # type: ignore[union-attr]
        return self._view[:n].tobytes()

    def crypt(self, key: bytes, data: bytes) -> bytes:
        """`rekey(key).update(data)` in one call: what stateless MPPE does twice a packet."""
        lib, addr, n = _LIB, self._addr, len(data)
        if n > self._room:
            self._grow(_room_for(n))
        lib.set_key(addr, len(key), key)  # type: ignore[union-attr]
        lib.rc4(addr, n, data, self._out_addr)  # type: ignore[union-attr]
        return self._view[:n].tobytes()


def _load() -> _Libcrypto | None:
    try:
        lib = _Libcrypto()
    except (OSError, AttributeError):
        return None
    key, data = bytes(range(16)), bytes(range(200))
    global _LIB
    _LIB = lib
    ok = RekeyedStream().rekey(key).update(data) == cryptography_stream(key).update(data)
    _LIB = None
    return lib if ok else None


_LIB: _Libcrypto | None = None
_LIB = _load()
FAST = _LIB is not None


def rc4(key: bytes, data: bytes) -> bytes:
    """RC4 of a short buffer under a fresh key (the §7.3 key change: 8 or 16 octets)."""
    if FAST:
        return RekeyedStream(len(data)).rekey(key).update(data)  # fresh state: thread-safe
    return cryptography_stream(key).update(data)


def packet_stream(reused: RekeyedStream | None, key: bytes) -> Stream:
    """A stream for one stateless packet: `reused` re-keyed when libcrypto is in use."""
    if reused is not None:
        return reused.rekey(key)
    return cryptography_stream(key)


def new_reusable() -> RekeyedStream | None:
    return RekeyedStream() if FAST else None
