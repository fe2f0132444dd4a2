"""ESP transforms by name: CBC ciphers (RFC 2451, RFC 2405, RFC 3602) and HMAC-96 integrity
(RFC 2403, RFC 2404).

The names ("3des-cbc", "des-cbc", "aes-cbc-128", "aes-cbc-256", "hmac-sha1-96", "hmac-md5-96")
are the vocabulary IKE hands over with its keys: `ike/` negotiates a transform and looks it up
here, so both sides of tunnels/ipsec/ agree on key sizes without a second table.

Speed matters on this path, so each SA builds its cipher contexts once. CBC with a fresh IV per
packet would mean a key schedule per packet (about 5 us for AES, four times the cost of
encrypting 1400 bytes); instead one context per direction runs for the life of the SA and each
packet is chained onto it:
- decrypting `IV || C1..Cn` with a context whose chaining value is anything gives garbage for
  the first block and `P1..Pn` after it, since `Pi = D(Ci) xor C(i-1)`;
- encrypting `P1 xor IV xor L, P2..Pn`, where L is the context's chaining value (the last
  ciphertext block it produced), gives `E(P1 xor IV), ...`: exactly CBC under IV.

The compiled path: when tunnels/ipsec/_fastesp.c is built (setup.py), `fast_context` gives an
SA one C object doing ESP's whole per packet cryptography (framing, padding, CBC, HMAC, the
inner UDP checksum) in one call each way; esp.py uses it and keeps the classes below as the
pure-Python path, byte for byte the same (tests/test_esp_fast.py). `FAST` says whether the
extension is in use; VPNLAB_NO_ACCEL=1 at import turns it off (tunnels/accel.py, the one
switch for the MPPE path too).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from Crypto.Cipher import DES

from tunnels.accel import load
from tunnels.errors import LocalProtocolError


ACCEL: Any = load("tunnels.ipsec._fastesp")  # None: not built, or VPNLAB_NO_ACCEL=1
FAST: bool = ACCEL is not None  # the compiled ESP path is in use (module docstring)


def fast_context(cipher: str, enc_key: bytes, integrity: str, auth_key: bytes) -> Any:
    """One SA's compiled seal/open (`_fastesp.Context`), or None: no extension, or a
    transform this libcrypto cannot run (DES needs OpenSSL 3's legacy provider). Keys
    are checked by the pure-Python classes first, which the SA builds anyway."""
    if ACCEL is None:
        return None
    try:
        return ACCEL.Context(cipher, enc_key, integrity, auth_key)
    except NotImplementedError:
        return None


class _Context(Protocol):
    def update(self, data: bytes) -> bytes: ...


def _openssl_cbc(algorithm: Callable[[bytes], Any]) -> Callable[[bytes, bool], _Context]:
    def make(key: bytes, encrypt: bool) -> _Context:
        block = algorithm(key).block_size // 8
        cipher = Cipher(algorithm(key), modes.CBC(bytes(block)))
        return cipher.encryptor() if encrypt else cipher.decryptor()
    return make


class _PyCryptodomeCBC:
    """pycryptodome's DES (cryptography keeps only 3DES) behind the `update` of the others."""

    __slots__ = ("update",)

    def __init__(self, key: bytes, encrypt: bool):
        cbc = DES.new(key, DES.MODE_CBC, bytes(8))
        self.update = cbc.encrypt if encrypt else cbc.decrypt


@dataclass(frozen=True, slots=True)
class CipherSpec:
    """An ESP CBC cipher: the IV is one block (RFC 2451 §3, RFC 3602 §3)."""

    name: str
    key_size: int
    block_size: int
    context: Callable[[bytes, bool], _Context]

    @property
    def iv_size(self) -> int:
        return self.block_size


@dataclass(frozen=True, slots=True)
class IntegritySpec:
    """HMAC-<hash>-96: the ICV is the first 96 bits of the HMAC (RFC 2403 §2, RFC 2404 §2)."""

    name: str
    key_size: int
    icv_size: int
    digest: Callable[..., Any]


CIPHERS: dict[str, CipherSpec] = {
    "3des-cbc": CipherSpec("3des-cbc", 24, 8, _openssl_cbc(TripleDES)),  # RFC 2451
    "des-cbc": CipherSpec("des-cbc", 8, 8, _PyCryptodomeCBC),  # RFC 2405
    "aes-cbc-128": CipherSpec("aes-cbc-128", 16, 16, _openssl_cbc(algorithms.AES)),  # RFC 3602
    "aes-cbc-256": CipherSpec("aes-cbc-256", 32, 16, _openssl_cbc(algorithms.AES)),
}

INTEGRITY: dict[str, IntegritySpec] = {
    "hmac-sha1-96": IntegritySpec("hmac-sha1-96", 20, 12, hashlib.sha1),  # RFC 2404
    "hmac-md5-96": IntegritySpec("hmac-md5-96", 16, 12, hashlib.md5),  # RFC 2403
}


def _lookup(table: dict[str, Any], kind: str, name: str) -> Any:
    try:
        return table[name]
    except KeyError:
        raise LocalProtocolError(
            f"unknown ESP {kind} {name!r}; known: {', '.join(sorted(table))}") from None


def cipher_spec(name: str) -> CipherSpec:
    return _lookup(CIPHERS, "cipher", name)  # type: ignore[no-any-return]


def integrity_spec(name: str) -> IntegritySpec:
    return _lookup(INTEGRITY, "integrity algorithm", name)  # type: ignore[no-any-return]


def _check_key(kind: str, name: str, key: bytes, size: int) -> None:
    if len(key) != size:
        raise LocalProtocolError(f"{name} needs a {size}-octet {kind} key, got {len(key)}")


class CbcCipher:
    """One SA's cipher in one direction, keyed once (see the module docstring)."""

    __slots__ = ("spec", "block_size", "_enc", "_dec", "_chain")

    def __init__(self, name: str, key: bytes):
        spec = cipher_spec(name)
        _check_key("encryption", name, key, spec.key_size)
        self.spec = spec
        self.block_size = spec.block_size
        self._enc = spec.context(bytes(key), True)
        self._dec = spec.context(bytes(key), False)
        self._chain = 0  # the encryptor's chaining value (zero IV at creation)

    def encrypt(self, iv: bytes, plaintext: bytearray) -> bytes:
        """CBC under `iv`; `plaintext` is a whole number of blocks (ESP pads it, RFC 4303
        §2.4) and its first block is overwritten (no copy). The caller checked the IV."""
        n = self.block_size
        first = int.from_bytes(plaintext[:n], "big") ^ int.from_bytes(iv, "big") ^ self._chain
        plaintext[:n] = first.to_bytes(n, "big")
        out = self._enc.update(plaintext)
        self._chain = int.from_bytes(out[-n:], "big")
        return out

    def decrypt(self, iv_and_ciphertext: bytes | memoryview) -> bytes:
        """`IV || ciphertext` in, plaintext out (the first output block is discarded)."""
        return self._dec.update(iv_and_ciphertext)[self.block_size:]

    def decrypt_blocks(self, iv_and_ciphertext: bytes | memoryview) -> bytes:
        """`decrypt` without dropping the first block (one block of garbage, then the
        plaintext): the data path slices out what it keeps once, not twice."""
        return self._dec.update(iv_and_ciphertext)


_IPAD = bytes(x ^ 0x36 for x in range(256))  # RFC 2104 §2: the key XOR ipad, XOR opad
_OPAD = bytes(x ^ 0x5C for x in range(256))


class Hmac96:
    """One SA's integrity key: RFC 2104's inner and outer hash states, each keyed once (one
    compression of K XOR ipad, one of K XOR opad) and copied per packet. That is the stdlib
    `hmac.HMAC.copy()` without its Python wrapper: two hashlib copies, ~0.5 us less for
    every packet in each direction."""

    __slots__ = ("spec", "icv_size", "_inner", "_outer")

    def __init__(self, name: str, key: bytes, *, check_size: bool = True):
        spec = integrity_spec(name)
        if check_size:  # ESP fixes the key size (RFC 2404 §3); HMAC itself takes any key
            _check_key("integrity", name, key, spec.key_size)
        self.spec = spec
        self.icv_size = spec.icv_size
        block = spec.digest().block_size
        key = bytes(key)
        if len(key) > block:  # RFC 2104 §2: a key longer than a block is hashed first
            key = spec.digest(key).digest()
        key = key.ljust(block, b"\0")
        self._inner = spec.digest(key.translate(_IPAD))
        self._outer = spec.digest(key.translate(_OPAD))

    def icv(self, *parts: bytes | memoryview) -> bytes:
        inner = self._inner.copy()
        for part in parts:
            inner.update(part)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()[: self.icv_size]

    def verify(self, data: bytes | memoryview, icv: bytes | memoryview) -> bool:
        """Constant-time comparison (RFC 4303 §3.4.4.1: the ICV is checked before anything
        is decrypted)."""
        return hmac.compare_digest(self.icv(data), icv)
