"""IKEv1 key material (RFC 2409 §5, §5.5, §6, Appendix B) and phase-1 encryption.

Pure functions: the session passes in nonces, cookies, DH values and keys, and gets bytes back.
The prf is the HMAC of the negotiated hash (RFC 2409 §4: "the HMAC version of the negotiated
hash algorithm is used as a pseudo-random function" when no PRF attribute is negotiated; none
of our peers negotiates one). Diffie-Hellman is plain modular exponentiation over the MODP
groups of RFC 2409 §6 and RFC 3526 §3, whose primes are given in hex as the RFCs print them.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from tunnels.ipsec.ike.payloads import malformed

# -- Diffie-Hellman groups ------------------------------------------------------------------
_PI_PREFIX = ("FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B2251"
              "4A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F4"
              "4C42E9A6")
MODP_PRIMES: dict[int, int] = {
    # RFC 2409 §6.1: First Oakley Group, 768 bits
    1: int(_PI_PREFIX + "3A3620FFFFFFFFFFFFFFFF", 16),
    # RFC 2409 §6.2: Second Oakley Group, 1024 bits
    2: int(_PI_PREFIX + "37ED6B0BFF5CB6F406B7EDEE386BFB5A899FA5AE9F24117C4B1FE649286651ECE653"
           "81FFFFFFFFFFFFFFFF", 16),
    # RFC 3526 §3: 2048-bit MODP Group 14
    14: int(_PI_PREFIX + "37ED6B0BFF5CB6F406B7EDEE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B"
            "3DC2007CB8A163BF0598DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB"
            "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3BE39E772C180E86039B"
            "2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6955817183995497CEA956AE515D2261898FA05101572"
            "8E5A8AACAA68FFFFFFFFFFFFFFFF", 16),
}
GENERATOR = 2


def group_size(group: int) -> int:
    """Bytes of a public value (KE payload length) for a MODP group."""
    return (MODP_PRIMES[group].bit_length() + 7) // 8


@dataclass(frozen=True, slots=True)
class DHKeyPair:
    group: int
    private: int
    public: bytes  # g^x mod p, left-padded to the prime's size (RFC 2409 §5: KE data)

    @classmethod
    def generate(cls, group: int, random: Callable[[int], bytes]) -> DHKeyPair:
        p = MODP_PRIMES[group]
        # 256 private bits are plenty for these groups (RFC 3526 §8 estimates 110-160 bits of
        # strength for 2048) and keep group 14 affordable in pure Python.
        private = int.from_bytes(random(32), "big") | (1 << 255)
        return cls(group, private, pow(GENERATOR, private, p).to_bytes(group_size(group), "big"))

    def shared_secret(self, peer_public: bytes) -> bytes:
        """g^xy, as many bytes as the prime (leading zeros kept: RFC 2409 §5 hashes it).

        A public value shorter than the prime is read as the number it is: RFC 2409 §5 says
        it MUST be padded with zeros, but SoftEther sends OpenSSL's BN_bn2bin bytes as they
        come, one octet short once in 256 keys (see `ke_unpadded`)."""
        p = MODP_PRIMES[self.group]
        y = int.from_bytes(peer_public, "big")
        if not peer_public or len(peer_public) > group_size(self.group):
            raise malformed(f"KE of {len(peer_public)} bytes for group {self.group} "
                            f"(expected {group_size(self.group)})")
        if not 1 < y < p - 1:  # 0, 1 and p-1 would force a known shared secret
            raise malformed("KE public value out of range (1 < y < p-1)")
        return pow(y, self.private, p).to_bytes(group_size(self.group), "big")


def ke_unpadded(group: int, public: bytes) -> bool:
    """A peer's KE data shorter than the prime: its leading zero octets left out, against
    RFC 2409 §5 ("MUST be the length of the negotiated Diffie-Hellman group enforced, if
    necessary, by pre-pending the value with zeros"). Accepted and counted: the value is
    unambiguous, and the HASHes and the phase-1 IV take the KE data as it was sent."""
    return 0 < len(public) < group_size(group)


# -- prf and hashes -------------------------------------------------------------------------
HASHES: dict[str, Callable[[], object]] = {"sha1": hashlib.sha1, "md5": hashlib.md5}


def prf(hash_name: str, key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hash_name).digest()


def hash_(hash_name: str, data: bytes) -> bytes:
    return hashlib.new(hash_name, data).digest()


@dataclass(frozen=True, slots=True)
class Phase1Keys:
    skeyid: bytes
    skeyid_d: bytes
    skeyid_a: bytes
    skeyid_e: bytes
    enc_key: bytes


def skeyid_psk(hash_name: str, psk: bytes, ni_b: bytes, nr_b: bytes) -> bytes:
    """RFC 2409 §5: For pre-shared keys: SKEYID = prf(pre-shared-key, Ni_b | Nr_b)."""
    return prf(hash_name, psk, ni_b + nr_b)


def skeyid_sig(hash_name: str, ni_b: bytes, nr_b: bytes, gxy: bytes) -> bytes:
    """RFC 2409 §5: For signatures: SKEYID = prf(Ni_b | Nr_b, g^xy)."""
    return prf(hash_name, ni_b + nr_b, gxy)


def derive_phase1(hash_name: str, skeyid: bytes, gxy: bytes, cky_i: bytes, cky_r: bytes,
                  key_length: int) -> Phase1Keys:
    """RFC 2409 §5 SKEYID_d/_a/_e and Appendix B's expansion of SKEYID_e to the cipher's key
    length (Ka = K1 | K2 | ..., K1 = prf(SKEYID_e, 0), Kn = prf(SKEYID_e, Kn-1))."""
    d = prf(hash_name, skeyid, gxy + cky_i + cky_r + b"\x00")
    a = prf(hash_name, skeyid, d + gxy + cky_i + cky_r + b"\x01")
    e = prf(hash_name, skeyid, a + gxy + cky_i + cky_r + b"\x02")
    if len(e) >= key_length:
        key = e[:key_length]
    else:
        blocks, k = [], b"\x00"
        while sum(map(len, blocks)) < key_length:
            k = prf(hash_name, e, k)
            blocks.append(k)
        key = b"".join(blocks)[:key_length]
    return Phase1Keys(skeyid, d, a, e, key)


def hash_i(hash_name: str, skeyid: bytes, gxi: bytes, gxr: bytes, cky_i: bytes, cky_r: bytes,
           sai_b: bytes, idii_b: bytes) -> bytes:
    """RFC 2409 §5: HASH_I = prf(SKEYID, g^xi | g^xr | CKY-I | CKY-R | SAi_b | IDii_b)."""
    return prf(hash_name, skeyid, gxi + gxr + cky_i + cky_r + sai_b + idii_b)


def hash_r(hash_name: str, skeyid: bytes, gxi: bytes, gxr: bytes, cky_i: bytes, cky_r: bytes,
           sai_b: bytes, idir_b: bytes) -> bytes:
    """RFC 2409 §5: HASH_R = prf(SKEYID, g^xr | g^xi | CKY-R | CKY-I | SAi_b | IDir_b)."""
    return prf(hash_name, skeyid, gxr + gxi + cky_r + cky_i + sai_b + idir_b)


def keymat(hash_name: str, skeyid_d: bytes, protocol: int, spi: bytes, ni_b: bytes,
           nr_b: bytes, length: int, gqm_xy: bytes = b"") -> bytes:
    """RFC 2409 §5.5: KEYMAT = prf(SKEYID_d, [g(qm)^xy |] protocol | SPI | Ni_b | Nr_b),
    expanded as K1 | K2 | ... with Kn = prf(SKEYID_d, Kn-1 | [g(qm)^xy |] protocol | ...)."""
    seed = gqm_xy + bytes([protocol]) + spi + ni_b + nr_b
    out, k = b"", b""
    while len(out) < length:
        k = prf(hash_name, skeyid_d, k + seed)
        out += k
    return out[:length]


def nat_d_hash(hash_name: str, cky_i: bytes, cky_r: bytes, address: bytes, port: int) -> bytes:
    """RFC 3947 §3.2: HASH = HASH(CKY-I | CKY-R | IP | Port), the negotiated hash, not prf."""
    return hash_(hash_name, cky_i + cky_r + address + port.to_bytes(2, "big"))


# -- phase-1 encryption (RFC 2409 Appendix B) -----------------------------------------------
@dataclass(frozen=True, slots=True)
class IKECipher:
    name: str
    block_size: int
    key_length: int

    def _cipher(self, key: bytes, iv: bytes) -> Cipher:
        algorithm = TripleDES(key) if self.name == "3des-cbc" else algorithms.AES(key)
        return Cipher(algorithm, modes.CBC(iv))

    def encrypt(self, key: bytes, iv: bytes, plain: bytes) -> bytes:
        """Pads with zeros to the block size: RFC 2408 §3.1 leaves the padding's value open
        and receivers find the end of the payloads from their lengths, not from the pad."""
        pad = (-len(plain)) % self.block_size
        enc = self._cipher(key, iv[:self.block_size]).encryptor()
        return enc.update(plain + b"\x00" * pad) + enc.finalize()

    def decrypt(self, key: bytes, iv: bytes, data: bytes) -> bytes:
        if not data or len(data) % self.block_size:
            raise malformed(f"encrypted body of {len(data)} bytes is not a whole number of "
                            f"{self.block_size}-byte blocks")
        dec = self._cipher(key, iv[:self.block_size]).decryptor()
        return dec.update(data) + dec.finalize()


IKE_CIPHERS = {
    "3des-cbc": IKECipher("3des-cbc", 8, 24),
    "aes-cbc-128": IKECipher("aes-cbc-128", 16, 16),
    "aes-cbc-256": IKECipher("aes-cbc-256", 16, 32),
}


def phase1_iv(hash_name: str, gxi: bytes, gxr: bytes, block_size: int) -> bytes:
    """Appendix B: the IV of the first encrypted phase-1 message is hash(g^xi | g^xr)."""
    return hash_(hash_name, gxi + gxr)[:block_size]


def phase2_iv(hash_name: str, last_phase1_block: bytes, message_id: int,
              block_size: int) -> bytes:
    """Appendix B: a phase-2 or Informational exchange starts from hash(the last phase-1 CBC
    output block | M-ID); later messages of the exchange chain on its last block."""
    return hash_(hash_name, last_phase1_block + message_id.to_bytes(4, "big"))[:block_size]
