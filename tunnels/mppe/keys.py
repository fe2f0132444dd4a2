"""MPPE keys: RFC 3079 start keys from MS-CHAP, RFC 3078 §7.3 session keys and key changes.

Checked against RFC 3079's worked examples (tests/data/rfc3079_mppe_keys.json) and against
Windows traffic (the john-samples captures). Where RFC 3078's prose and practice differ, this
follows practice (as Linux's ppp_mppe does): the initial session key is GetNewKeyFromSHA of the
start key with itself, without the RC4 step that later key changes add.
"""

from __future__ import annotations

import hashlib

from tunnels.errors import LocalProtocolError
from tunnels.mppe.rc4 import rc4
from tunnels.ppp.auth import mscrypto
from tunnels.ppp.auth.base import MPPEMaterial

SHA_PAD1 = b"\x00" * 40
SHA_PAD2 = b"\xf2" * 40
MASTER_MAGIC = b"This is the MPPE Master Key"
CLIENT_SEND_MAGIC = (b"On the client side, this is the send key; "
                     b"on the server side, it is the receive key.")
SERVER_SEND_MAGIC = (b"On the client side, this is the receive key; "
                     b"on the server side, it is the send key.")


def key_length(key_bits: int) -> int:
    if key_bits not in (40, 56, 128):
        raise LocalProtocolError(f"MPPE key length {key_bits}: expected 40, 56 or 128")
    return 16 if key_bits == 128 else 8


def reduce_key(key: bytes, key_bits: int) -> bytes:
    """RFC 3078 §7.3 / RFC 3079: 40-bit keys start D1 26 9E, 56-bit keys start D1."""
    if key_bits == 40:
        return b"\xd1\x26\x9e" + key[3:8]
    if key_bits == 56:
        return b"\xd1" + key[1:8]
    return key


def get_new_key_from_sha(start_key: bytes, session_key: bytes, length: int) -> bytes:
    return hashlib.sha1(start_key[:length] + SHA_PAD1 + session_key[:length] +
                        SHA_PAD2).digest()[:length]


def initial_session_key(start_key: bytes, key_bits: int) -> bytes:
    length = key_length(key_bits)
    return reduce_key(get_new_key_from_sha(start_key, start_key, length), key_bits)


def next_session_key(start_key: bytes, session_key: bytes, key_bits: int) -> bytes:
    """RFC 3078 §7.3 key change: interim key from SHA, RC4-encrypted under itself."""
    length = key_length(key_bits)
    interim = get_new_key_from_sha(start_key, session_key, length)
    return reduce_key(rc4(interim, interim), key_bits)


def master_key_v2(password_hash: bytes, nt_response: bytes) -> bytes:
    """RFC 3079 §3.4 GetMasterKey."""
    password_hash_hash = mscrypto.hash_nt_password_hash(password_hash)
    return hashlib.sha1(password_hash_hash + nt_response + MASTER_MAGIC).digest()[:16]


def asymmetric_start_key(master_key: bytes, length: int, is_send: bool, is_server: bool) -> bytes:
    """RFC 3079 §3.4 GetAsymmetricStartKey."""
    magic = SERVER_SEND_MAGIC if is_send == is_server else CLIENT_SEND_MAGIC
    return hashlib.sha1(master_key + SHA_PAD1 + magic + SHA_PAD2).digest()[:length]


def derive_start_keys(material: MPPEMaterial, key_bits: int,
                      is_server: bool) -> tuple[bytes, bytes]:
    """(send start key, receive start key) for this end of the link."""
    length = key_length(key_bits)
    if material.version == 2:
        master = master_key_v2(material.password_hash, material.nt_response)
        return (asymmetric_start_key(master, length, True, is_server),
                asymmetric_start_key(master, length, False, is_server))
    if key_bits == 128:  # RFC 3079 §2.4: from the NT hash hash and the challenge
        hh = mscrypto.hash_nt_password_hash(material.password_hash)
        start = hashlib.sha1(hh + hh + material.challenge).digest()[:16]
    else:  # RFC 3079 §2.1-2.2: 40 and 56-bit keys come from the LAN Manager hash
        start = (material.lm_password_hash or material.password_hash)[:8]
    return start, start
