"""The MS-CHAP primitives of RFC 2759 §8 (and RFC 2433 §A), from MD4, DES and SHA-1.

MD4 comes from pycryptodome (this OpenSSL's hashlib has none) and DES from pycryptodome too;
nothing here is hand-written cryptography, only the RFCs' compositions of it.
"""

from __future__ import annotations

import functools
import hashlib

from Crypto.Cipher import DES
from Crypto.Hash import MD4

MAGIC1 = b"Magic server to client signing constant"
MAGIC2 = b"Pad to make it do more than one iteration"


@functools.lru_cache(maxsize=4096)
def nt_password_hash(password: str) -> bytes:
    """RFC 2759 §8.3: MD4 of the password in UTF-16LE (Unicode). Kept for the passwords in
    use: one MS-CHAP v2 exchange and its MPPE keys need it five times per side, and a server
    setting up hundreds of calls a second (issue 8) already holds the passwords."""
    return MD4.new(password.encode("utf-16-le")).digest()


@functools.lru_cache(maxsize=4096)
def hash_nt_password_hash(password_hash: bytes) -> bytes:
    return MD4.new(password_hash).digest()


@functools.lru_cache(maxsize=4096)  # the keys are thirds of a password's hash: few, reused
def des_key_with_parity(key7: bytes) -> bytes:
    """RFC 2759 §8.6 / RFC 2433 §A.8: spread 56 key bits over 8 octets, each with odd parity
    in its low bit (DES ignores parity; RFC 2433 B.3 and RFC 2759 §9.3 print it this way)."""
    bits = int.from_bytes(key7, "big")
    septets = (((bits >> (49 - 7 * i)) & 0x7F) << 1 for i in range(8))
    return bytes(b | (~bin(b).count("1") & 1) for b in septets)


def des_encrypt(clear8: bytes, key7: bytes) -> bytes:
    return DES.new(des_key_with_parity(key7), DES.MODE_ECB).encrypt(clear8)


def challenge_response(challenge: bytes, password_hash: bytes) -> bytes:
    """RFC 2759 §8.5: three DES encryptions of the 8-octet challenge under the padded hash."""
    z = password_hash + b"\0" * (21 - len(password_hash))
    return b"".join(des_encrypt(challenge, z[i:i + 7]) for i in (0, 7, 14))


def user_name_only(username: str) -> str:
    """RFC 2759 §8.2: the user name without any domain the peer prepended (DOMAIN\\user)."""
    return username.rsplit("\\", 1)[-1]


def challenge_hash(peer_challenge: bytes, authenticator_challenge: bytes, username: str) -> bytes:
    data = peer_challenge + authenticator_challenge + user_name_only(username).encode()
    return hashlib.sha1(data).digest()[:8]


def generate_nt_response(authenticator_challenge: bytes, peer_challenge: bytes, username: str,
                         password: str) -> bytes:
    """RFC 2759 §8.1 GenerateNTResponse."""
    challenge = challenge_hash(peer_challenge, authenticator_challenge, username)
    return challenge_response(challenge, nt_password_hash(password))


def generate_authenticator_response(password: str, nt_response: bytes, peer_challenge: bytes,
                                    authenticator_challenge: bytes, username: str) -> str:
    """RFC 2759 §8.7: the "S=" string that proves the authenticator knew the password too."""
    hash_hash = hash_nt_password_hash(nt_password_hash(password))
    digest = hashlib.sha1(hash_hash + nt_response + MAGIC1).digest()
    challenge = challenge_hash(peer_challenge, authenticator_challenge, username)
    digest = hashlib.sha1(digest + challenge + MAGIC2).digest()
    return "S=" + digest.hex().upper()


def nt_challenge_response_v1(challenge: bytes, password: str) -> bytes:
    """RFC 2433 §A.5 NtChallengeResponse (MS-CHAP v1)."""
    return challenge_response(challenge, nt_password_hash(password))


def lm_challenge_response(challenge: bytes, password: str) -> bytes:
    """RFC 2433 §A.1 LmChallengeResponse (we send zeros and the use-NT flag instead)."""
    return challenge_response(challenge, lm_password_hash(password))


def lm_password_hash(password: str) -> bytes:
    """RFC 2433 §A.2 LmPasswordHash: DES of "KGS!@#$%" under the upper-cased password's two
    7-octet halves (only MS-CHAP v1's 40/56-bit MPPE keys still need it)."""
    raw = password.upper().encode("latin-1", "replace")[:14].ljust(14, b"\0")
    return des_encrypt(b"KGS!@#$%", raw[:7]) + des_encrypt(b"KGS!@#$%", raw[7:])
