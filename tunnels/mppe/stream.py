"""One direction's MPPE keys and RC4 stream (RFC 3078 §7.3, §8): the compiled
`_fastmppe.State` when it is built, else `PyState`, its pure-Python twin.

Why two: stateless MPPE changes key before every packet, so a packet costs a SHA-1, two RC4
key schedules and the RC4 of its data; the C type does that and writes the header in one call
per packet, where Python needs six calls and the bytes glue around them. Both have the same
interface, which is the whole contract cipher.py relies on: `encrypt(data)` (header and
ciphertext), `decrypt_next(info[, offset])` (the in-order case, or None having changed
nothing), the key change `next_key()` / `change_key()`, the stream `rekey(key)` / `update(data)` /
`crypt(key, data)`, and the attributes `count`, `session_key`, `key_changes` and
`flush_next`, read and written by cipher.py's slow paths (gaps, the reorder window, stateful
resynchronisation), which stay in Python and exist once. tests/test_mppe_fast.py pairs the two
byte for byte.

`ACCEL` says whether the compiled type is in use: the extension built (setup.py, with gcc,
python3-dev and libssl-dev) and VPNLAB_NO_ACCEL not set to 1 when this module was imported
(tunnels/accel.py).
"""

from __future__ import annotations

from hashlib import sha1
from typing import Any

from tunnels.accel import load
from tunnels.mppe.keys import SHA_PAD1, SHA_PAD2, initial_session_key, key_length, reduce_key
from tunnels.mppe.rc4 import RekeyedStream, Stream, cryptography_stream, new_reusable, rc4

FLUSHED = 0x8000
ENCRYPTED = 0x1000
# Stateless packets all carry A and D (RFC 3078 §8.1), so their header is this | count.
_STATELESS = FLUSHED | ENCRYPTED


fastmppe = load("tunnels.mppe._fastmppe")
ACCEL = fastmppe is not None


class PyState:
    """`_fastmppe.State` in Python: libcrypto's RC4 through ctypes when present (rc4.py),
    cryptography's otherwise."""

    __slots__ = ("key_bits", "stateless", "count", "session_key", "key_changes", "flush_next",
                 "_length", "_sha_prefix", "_reused", "_stream")

    def __init__(self, start_key: bytes, key_bits: int, stateless: bool = True):
        length = key_length(key_bits)
        if len(start_key) < length:
            raise ValueError(f"{len(start_key)}-octet start key for {key_bits}-bit MPPE")
        self.key_bits, self.stateless, self._length = key_bits, stateless, length
        self.session_key = initial_session_key(start_key, key_bits)
        self.count = 0x0FFF
        self.key_changes = 0
        self.flush_next = False
        # keys.next_session_key with its constant part computed once
        self._sha_prefix = start_key[:length] + SHA_PAD1
        # stateless: one RC4 state re-keyed twice per packet (rc4.py); a stateful stream
        # stays on cryptography's context, whose update is the faster for long streams
        self._reused: RekeyedStream | None = new_reusable() if stateless else None
        self._stream: Stream = self._new_stream(self.session_key)

    def _new_stream(self, key: bytes) -> Stream:
        return self._reused.rekey(key) if self._reused is not None else cryptography_stream(key)

    def next_key(self) -> bytes:
        """RFC 3078 §7.3: interim key from SHA-1, RC4-encrypted under itself (then reduced)."""
        length = self._length
        interim = sha1(self._sha_prefix + self.session_key[:length] + SHA_PAD2).digest()[:length]
        kc = self._reused
        key = kc.crypt(interim, interim) if kc is not None else rc4(interim, interim)
        self.session_key = key = key if self.key_bits == 128 else reduce_key(key, self.key_bits)
        self.key_changes += 1
        return key

    def change_key(self) -> None:
        self._stream = self._new_stream(self.next_key())

    def rekey(self, key: bytes) -> PyState:
        self._stream = self._new_stream(key)
        return self

    def update(self, data: bytes) -> bytes:
        return self._stream.update(data)

    def crypt(self, key: bytes, data: bytes) -> bytes:
        return self.rekey(key).update(data)

    def encrypt(self, data: bytes, prefix: bytes = b"", head: bytes = b"") -> bytes:
        """head | MPPE header | RC4(prefix | data), at the next count with the key change due
        (every packet when stateless, flag packets and after a Reset-Request when stateful).
        The PPP engine passes the protocol field as prefix and address/control/0x00FD as
        head: the compiled type builds the frame in one buffer."""
        self.count = count = (self.count + 1) & 0x0FFF
        if prefix:
            data = prefix + data
        if self._reused is not None:  # stateless with libcrypto: every packet flushed, re-keyed
            head += (_STATELESS | count).to_bytes(2, "big")
            return head + self._reused.crypt(self.next_key(), data)
        flushed = self.stateless or (count & 0xFF) == 0xFF or self.flush_next
        if flushed:
            self.change_key()
            self.flush_next = False
        header = (FLUSHED if flushed else 0) | ENCRYPTED | count
        return head + header.to_bytes(2, "big") + self._stream.update(data)

    def decrypt_next(self, info: bytes, offset: int = 0) -> bytes | None:
        """The in-order case of info[offset:] (the next count; stateless: A and D set, B and
        C clear; stateful: D set, B and C clear, a flag packet flushed): the plaintext with its
        protocol field (PFC undone). None for anything else, nothing changed."""
        if offset:
            if not 0 <= offset <= len(info):
                raise ValueError("decrypt_next: offset outside info")
            info = info[offset:]
        if len(info) < 3:
            return None
        header = int.from_bytes(info[:2], "big")
        count = header & 0x0FFF
        if count != (self.count + 1) & 0x0FFF:
            return None
        flushed = bool(header & FLUSHED)
        if self.stateless:
            if header & 0xF000 != _STATELESS:
                return None
        elif header & 0x7000 != ENCRYPTED or ((count & 0xFF) == 0xFF and not flushed):
            return None
        self.count = count
        if flushed:
            self.change_key()
        plain = self._stream.update(info[2:])
        return b"\x00" + plain if plain[0] & 1 else plain


def new_state(start_key: bytes, key_bits: int, stateless: bool) -> Any:
    """The compiled state when ACCEL, else PyState (same interface)."""
    if fastmppe is not None:
        return fastmppe.State(start_key, key_bits, stateless)
    return PyState(start_key, key_bits, stateless)
