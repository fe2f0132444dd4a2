"""IKEv1 configuration, validated up front: every error names the field, what it got and
what it expects, before a single datagram is built."""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import product

from tunnels.ipsec.ike.constants import AuthAlgorithm, ESPTransform, HashAlgorithm

IKE_CIPHER_NAMES = ("3des-cbc", "aes-cbc-128", "aes-cbc-256")
IKE_HASH_NAMES = ("sha1", "md5")
AUTH_NAMES = ("psk", "rsa-sig")
# The ESP engineer's registry names (tunnels/ipsec/crypto.py); des-cbc is the chapter's
# Basic/Strong level and is offered only when configured explicitly.
ESP_CIPHER_NAMES = ("3des-cbc", "des-cbc", "aes-cbc-128", "aes-cbc-256")
ESP_INTEGRITY_NAMES = ("hmac-sha1-96", "hmac-md5-96")
GROUPS = (1, 2, 14)
NAT_T_VERSION_NAMES = ("rfc3947", "draft-02n", "draft-02", "draft-03")  # constants.NAT_T_VIDS

HASH_IDS = {"sha1": HashAlgorithm.SHA, "md5": HashAlgorithm.MD5}
ESP_CIPHER_IDS: dict[str, tuple[ESPTransform, int | None]] = {
    # (transform ID, Key Length attribute): RFC 3602 §5.1 requires Key Length for ESP_AES
    "3des-cbc": (ESPTransform.ESP_3DES, None),
    "des-cbc": (ESPTransform.ESP_DES, None),
    "aes-cbc-128": (ESPTransform.ESP_AES, 128),
    "aes-cbc-256": (ESPTransform.ESP_AES, 256),
}
ESP_KEY_BYTES = {"3des-cbc": 24, "des-cbc": 8, "aes-cbc-128": 16, "aes-cbc-256": 32}
INTEGRITY_IDS = {"hmac-sha1-96": AuthAlgorithm.HMAC_SHA, "hmac-md5-96": AuthAlgorithm.HMAC_MD5}
INTEGRITY_KEY_BYTES = {"hmac-sha1-96": 20, "hmac-md5-96": 16}


class IKEConfigError(ValueError):
    """A configuration value is wrong; the message names the field."""


@dataclass(frozen=True, slots=True)
class IKEProposal:
    """One phase-1 transform: what Main Mode message 1 offers and the responder picks."""

    cipher: str
    hash: str
    group: int
    auth: str = "psk"


@dataclass(frozen=True, slots=True)
class ESPProposal:
    cipher: str
    integrity: str


def _names(name: str, value: tuple, allowed: tuple) -> None:
    if not isinstance(value, tuple | list):
        raise IKEConfigError(f"{name}: {value!r}; expected a tuple of "
                             f"{', '.join(map(str, allowed))}")
    if not value:
        raise IKEConfigError(f"{name}: empty; expected one or more of "
                             f"{', '.join(map(str, allowed))}")
    for v in value:
        if v not in allowed:
            raise IKEConfigError(f"{name}: {v!r} unknown; expected one of "
                                 f"{', '.join(map(str, allowed))}")


def _positive(name: str, value: float, minimum: float = 0) -> None:
    if not isinstance(value, int | float) or value <= minimum:
        raise IKEConfigError(f"{name}: {value!r}; expected a number > {minimum:g}")


@dataclass(frozen=True, slots=True)
class IKEConfig:
    """What one end of L2TP/IPsec negotiates. Lists are in order of preference: the
    initiator offers them in this order; the responder takes the initiator's first proposal
    that is in its own lists (RFC 2408 §4.2: the responder chooses, the initiator orders)."""

    psk: bytes = b""
    auth: str = "psk"
    ike_ciphers: tuple[str, ...] = ("aes-cbc-256", "aes-cbc-128", "3des-cbc")
    ike_hashes: tuple[str, ...] = ("sha1", "md5")
    dh_groups: tuple[int, ...] = (14, 2)
    allow_group1: bool = False
    esp_ciphers: tuple[str, ...] = ("aes-cbc-256", "aes-cbc-128", "3des-cbc")
    esp_integrity: tuple[str, ...] = ("hmac-sha1-96", "hmac-md5-96")
    pfs_group: int | None = None
    lifetime_phase1: int = 28800
    lifetime_phase2: int = 3600
    lifetime_phase2_kb: int | None = None
    rekey_margin: float = 0.1  # rekey this fraction of the lifetime before it ends
    aggressive: bool = False  # initiator: Aggressive Mode instead of Main Mode
    allow_aggressive: bool = False  # responder: accept it (PSK hashes guessable offline)
    nat_t: bool = True
    nat_t_versions: tuple[str, ...] = ("rfc3947", "draft-02n", "draft-02", "draft-03")
    nat_keepalive: float = 20.0
    dpd_interval: float = 30.0  # 0 turns dead-peer detection off
    dpd_max_failures: int = 5
    retransmit_timeout: float = 2.0
    retransmit_tries: int = 5
    retransmit_backoff: float = 2.0
    half_open_timeout: float = 30.0  # a responder drops a Main Mode not done by then
    l2tp_port: int = 1701
    certificate: bytes | None = None  # DER, for auth="rsa-sig"
    private_key: bytes | None = None  # DER PKCS#8, for auth="rsa-sig"
    trusted_certificates: tuple[bytes, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.auth not in AUTH_NAMES:
            raise IKEConfigError(f"auth: {self.auth!r}; expected one of {', '.join(AUTH_NAMES)}")
        if self.auth == "psk" and (not isinstance(self.psk, bytes) or not self.psk):
            raise IKEConfigError("psk: empty; expected the pre-shared key as non-empty bytes")
        if self.auth == "rsa-sig":
            self._check_credentials()
        _names("ike_ciphers", self.ike_ciphers, IKE_CIPHER_NAMES)
        _names("ike_hashes", self.ike_hashes, IKE_HASH_NAMES)
        _names("dh_groups", self.dh_groups, GROUPS)
        if 1 in self.dh_groups and not self.allow_group1:
            raise IKEConfigError("dh_groups: group 1 (768-bit MODP) is too weak; set "
                                 "allow_group1=True to accept it for old peers")
        _names("esp_ciphers", self.esp_ciphers, ESP_CIPHER_NAMES)
        _names("esp_integrity", self.esp_integrity, ESP_INTEGRITY_NAMES)
        if self.pfs_group is not None:
            _names("pfs_group", (self.pfs_group,), self.dh_groups)
        _positive("lifetime_phase1", self.lifetime_phase1, 60)
        _positive("lifetime_phase2", self.lifetime_phase2, 60)
        if self.lifetime_phase2_kb is not None:
            _positive("lifetime_phase2_kb", self.lifetime_phase2_kb)
        if not 0 < self.rekey_margin < 0.5:
            raise IKEConfigError(f"rekey_margin: {self.rekey_margin!r}; expected 0 < x < 0.5")
        _names("nat_t_versions", self.nat_t_versions, NAT_T_VERSION_NAMES)
        _positive("nat_keepalive", self.nat_keepalive)
        if self.dpd_interval < 0:
            raise IKEConfigError(f"dpd_interval: {self.dpd_interval!r}; expected >= 0 (0: off)")
        _positive("dpd_max_failures", self.dpd_max_failures)
        _positive("retransmit_timeout", self.retransmit_timeout)
        _positive("retransmit_tries", self.retransmit_tries)
        _positive("retransmit_backoff", self.retransmit_backoff, 0.99)
        _positive("half_open_timeout", self.half_open_timeout)
        if not 0 <= self.l2tp_port <= 0xFFFF:
            raise IKEConfigError(f"l2tp_port: {self.l2tp_port!r}; expected 0..65535")

    def _check_credentials(self) -> None:
        from tunnels.ipsec.ike.certs import Credentials  # cryptography only when it is used
        if self.certificate is None or self.private_key is None:
            raise IKEConfigError("certificate/private_key: required for auth='rsa-sig'")
        if not self.trusted_certificates:
            raise IKEConfigError("trusted_certificates: empty; auth='rsa-sig' needs the CA "
                                 "certificate(s) (DER) that issue the peers' certificates")
        try:
            Credentials(self.certificate, self.private_key)
        except ValueError as exc:
            raise IKEConfigError(f"certificate/private_key: {exc}") from exc

    def ike_proposals(self) -> list[IKEProposal]:
        return [IKEProposal(c, h, g, self.auth) for c, h, g in
                product(self.ike_ciphers, self.ike_hashes, self.dh_groups)]

    def esp_proposals(self) -> list[ESPProposal]:
        return [ESPProposal(c, i) for c, i in product(self.esp_ciphers, self.esp_integrity)]
