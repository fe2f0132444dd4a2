"""One unidirectional ESP security association (RFC 4301 §4.1, RFC 4303 §3.3.3, §3.4.3).

An SA holds what both directions of the data path need: keys (turned into keyed cipher and
HMAC contexts once, see crypto.py), the outbound sequence counter, the inbound replay window,
lifetimes and counters. It does no I/O and reads no clock: `expired(now)` and
`soft_expired(now)` take the time, so IKE can rekey at the soft limit and the policy can drop
the SA at the hard one (RFC 4301 §4.4.2.1: soft lifetime warns, hard lifetime ends the SA).
"""

from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass, field
from typing import Any

from tunnels.errors import LocalProtocolError
from tunnels.ipsec.crypto import CbcCipher, Hmac96, fast_context
from tunnels.ipsec.replay import DEFAULT_WINDOW, MAX_SEQ, ReplayWindow

# Names the two independent decoders use for our transforms (keys_for_export).
_SCAPY_CIPHERS = {"3des-cbc": "3DES", "des-cbc": "DES", "aes-cbc-128": "AES-CBC",
                  "aes-cbc-256": "AES-CBC"}
_SCAPY_INTEGRITY = {"hmac-sha1-96": "HMAC-SHA1-96", "hmac-md5-96": "HMAC-MD5-96"}
# Wireshark 4.0 packet-ipsec.c esp_encryption_type_vals / esp_authentication_type_vals.
_TSHARK_CIPHERS = {"3des-cbc": "TripleDES-CBC [RFC2451]", "des-cbc": "DES-CBC [RFC2405]",
                   "aes-cbc-128": "AES-CBC [RFC3602]", "aes-cbc-256": "AES-CBC [RFC3602]"}
_TSHARK_INTEGRITY = {"hmac-sha1-96": "HMAC-SHA-1-96 [RFC2404]",
                     "hmac-md5-96": "HMAC-MD5-96 [RFC2403]"}


class SequenceExhausted(LocalProtocolError):
    """RFC 4303 §3.3.3: the sender's counter MUST NOT cycle; the SA must be rekeyed first."""


@dataclass(slots=True)
class SACounters:
    """What went through one SA and what was dropped on it, by reason."""

    packets: int = 0
    bytes: int = 0  # payload octets protected or recovered (what byte lifetimes count)
    auth_failures: int = 0
    replayed: int = 0
    bad_padding: int = 0
    malformed: int = 0
    expired: int = 0
    dummy: int = 0  # RFC 4303 §2.6 dummy packets (next header 59), authenticated and dropped

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class ExportedSA:
    """An SA's keys in the vocabulary of the conformance suite's decoders."""

    spi: int
    src: str
    dst: str
    encap: tuple[int, int] | None
    scapy_crypt_algo: str
    scapy_auth_algo: str
    enc_key: bytes
    auth_key: bytes
    tshark_encryption: str
    tshark_authentication: str

    def scapy_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `scapy.layers.ipsec.SecurityAssociation(ESP, **kw)` (the
        caller adds `nat_t_header=UDP(sport=..., dport=...)` when `encap` is set)."""
        return {"spi": self.spi, "crypt_algo": self.scapy_crypt_algo, "crypt_key": self.enc_key,
                "auth_algo": self.scapy_auth_algo, "auth_key": self.auth_key}

    def tshark_uat(self) -> str:
        """One record of Wireshark's `esp_sa` table, as a line of the UAT file or after
        `-o uat:esp_sa:` (protocol, source, destination, SPI, cipher, key, integrity, key)."""
        fields = ["IPv4", self.src, self.dst, f"0x{self.spi:08x}", self.tshark_encryption,
                  "0x" + self.enc_key.hex(), self.tshark_authentication,
                  "0x" + self.auth_key.hex()]
        return ",".join(f'"{f}"' for f in fields)


@dataclass(slots=True, eq=False)
class SecurityAssociation:
    """Keys, counters, sequence state and lifetimes of one ESP SA from `src` to `dst`.

    `encap` is the (source, destination) UDP port pair of RFC 3948 UDP encapsulation, None for
    plain IP protocol 50. `lifetime_bytes` 0 means no byte limit. The soft limits are
    `soft_fraction` of the hard ones (seconds, bytes and the sequence space).
    """

    spi: int
    cipher: str
    enc_key: bytes = field(repr=False)
    integrity: str
    auth_key: bytes = field(repr=False)
    src: str
    dst: str
    encap: tuple[int, int] | None = None
    lifetime_seconds: float = 3600
    lifetime_bytes: int = 0
    soft_fraction: float = 0.9
    created: float = 0.0
    replay_window: int = DEFAULT_WINDOW
    counters: SACounters = field(init=False, repr=False)
    seq: int = field(init=False, default=0)  # last sequence number sent (§3.3.3: first is 1)
    window: ReplayWindow = field(init=False, repr=False)
    enc: CbcCipher = field(init=False, repr=False)
    auth: Hmac96 = field(init=False, repr=False)
    fast: Any = field(init=False, repr=False)  # compiled seal/open (crypto.fast_context)
    src_packed: bytes = field(init=False, repr=False)  # for pseudo-header checksums
    dst_packed: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # RFC 4303 §2.1: SPI 0 is reserved for local use, 1..255 for IANA.
        if not 256 <= self.spi <= MAX_SEQ:
            raise LocalProtocolError(f"SPI {self.spi:#x}: must be 256..2^32-1 (RFC 4303 §2.1)")
        if self.lifetime_seconds <= 0 or self.lifetime_bytes < 0:
            raise LocalProtocolError("SA lifetimes must be positive (bytes: 0 = no limit)")
        if not 0 < self.soft_fraction < 1:
            raise LocalProtocolError(f"soft_fraction {self.soft_fraction}: must be in (0, 1)")
        try:
            self.src_packed = ipaddress.IPv4Address(self.src).packed
            self.dst_packed = ipaddress.IPv4Address(self.dst).packed
        except ValueError as exc:
            raise LocalProtocolError(f"SA addresses: {exc}") from None
        self.enc = CbcCipher(self.cipher, self.enc_key)
        self.auth = Hmac96(self.integrity, self.auth_key)
        self.fast = fast_context(self.cipher, self.enc_key, self.integrity, self.auth_key)
        self.window = ReplayWindow(self.replay_window)
        self.counters = SACounters()

    @classmethod
    def from_keys(cls, spi: int, cipher: str, enc_key: bytes, integrity: str, auth_key: bytes,
                  src: str, dst: str, **kw: Any) -> SecurityAssociation:
        """The IKE side's entry point: transform names as in crypto.CIPHERS/INTEGRITY; a
        `lifetime_bytes` of None (no byte lifetime negotiated) means no limit."""
        if "lifetime_bytes" in kw and kw["lifetime_bytes"] is None:
            kw["lifetime_bytes"] = 0
        return cls(spi, cipher, bytes(enc_key), integrity, bytes(auth_key), src, dst, **kw)

    def next_sequence(self) -> int:
        """The next outbound sequence number; never wraps (§3.3.3)."""
        if self.seq >= MAX_SEQ:
            raise SequenceExhausted(f"SPI {self.spi:#010x}: sequence space used up; rekey")
        self.seq += 1
        return self.seq

    def expired(self, now: float) -> bool:
        """Hard lifetime reached: the SA must not be used any more."""
        return (now >= self.created + self.lifetime_seconds
                or 0 < self.lifetime_bytes <= self.counters.bytes
                or self.seq >= MAX_SEQ)

    def soft_expired(self, now: float) -> bool:
        """Soft lifetime reached: time for IKE to negotiate the replacement SA."""
        f = self.soft_fraction
        return (now >= self.created + f * self.lifetime_seconds
                or 0 < self.lifetime_bytes * f <= self.counters.bytes
                or self.seq >= f * MAX_SEQ)

    def next_deadline(self, now: float) -> float:
        """When the time lifetime changes state next (soft, then hard), for a single timer."""
        soft = self.created + self.soft_fraction * self.lifetime_seconds
        return soft if now < soft else self.created + self.lifetime_seconds

    def keys_for_export(self) -> ExportedSA:
        """Keys and names for scapy's SecurityAssociation and tshark's esp_sa table, so the
        conformance suite can decrypt captures without our codecs."""
        return ExportedSA(self.spi, self.src, self.dst, self.encap,
                          _SCAPY_CIPHERS[self.cipher], _SCAPY_INTEGRITY[self.integrity],
                          self.enc_key, self.auth_key, _TSHARK_CIPHERS[self.cipher],
                          _TSHARK_INTEGRITY[self.integrity])
