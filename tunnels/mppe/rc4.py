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
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Protocol

from cryptography.hazmat.decrepit.ciphers.algorithms import ARC4
from cryptography.hazmat.primitives.ciphers import Cipher

# RC4_KEY is {RC4_INT x, y, data[256]}; RC4_INT is a 4-octet unsigned int on every platform
# OpenSSL 3 builds for, so 1032 octets; a little room to spare. Two per stateless session
# (send and receive): a server holding 10,000 sessions keeps 20,000 of them.
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
        lib = ctypes.CDLL(name)
        self.set_key = lib.RC4_set_key
        self.set_key.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p]
        self.set_key.restype = None
        self.rc4 = lib.RC4
        self.rc4.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]
        self.rc4.restype = None


class RekeyedStream:
    """One RC4 state, re-keyed in place for each packet (stateless MPPE); its address is
    computed once."""

    __slots__ = ("_addr", "_state")

    def __init__(self) -> None:
        self._state = ctypes.create_string_buffer(_STATE_SIZE)
        self._addr = ctypes.addressof(self._state)

    def rekey(self, key: bytes) -> RekeyedStream:
        _LIB.set_key(self._addr, len(key), key)  # type: ignore[union-attr]
        return self

    def update(self, data: bytes) -> bytes:
        n = len(data)
        out = ctypes.create_string_buffer(n)  # per call: nothing shared (ctypes drops the GIL)
        _LIB.rc4(self._addr, n, data, out)  # type: ignore[union-attr]
        return out.raw


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
        return RekeyedStream().rekey(key).update(data)  # a fresh 1 KiB state: thread-safe
    return cryptography_stream(key).update(data)


def packet_stream(reused: RekeyedStream | None, key: bytes) -> Stream:
    """A stream for one stateless packet: `reused` re-keyed when libcrypto is in use."""
    if reused is not None:
        return reused.rekey(key)
    return cryptography_stream(key)


def new_reusable() -> RekeyedStream | None:
    return RekeyedStream() if FAST else None
