"""RSA signature authentication for Main Mode (RFC 2409 §5.1) with the `cryptography` package.

IKEv1 signs HASH_I / HASH_R themselves: "RSA signatures MUST be encoded as a private key
encryption in PKCS #1 format" (RFC 2409 §5.1), i.e. PKCS #1 v1.5 block type 1 over the raw
hash with no DigestInfo (what strongSwan calls EMSA_PKCS1_NULL and Windows sends). The
`cryptography` API always wraps a DigestInfo, so the RSA primitive is applied here to the
padded block with the key's own numbers.

Trust: the peer's certificate must be one of `trusted_certificates` or be signed by one of
them (one level: the chapter's lab CA issues the server and client certificates directly).
Validity dates are not checked: the core has no wall clock, only the caller's `now`.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tunnels.ipsec.ike.constants import NotifyType


class CertificateError(Exception):
    """Why a peer's certificate or signature is refused; `notify` is what to answer."""

    def __init__(self, message: str, notify: NotifyType):
        super().__init__(message)
        self.notify = notify


def _pkcs1_type1(digest: bytes, k: int) -> int:
    if len(digest) + 11 > k:
        raise ValueError("RSA key too small for the hash")
    block = b"\x00\x01" + b"\xff" * (k - len(digest) - 3) + b"\x00" + digest
    return int.from_bytes(block, "big")


@dataclass(frozen=True)
class Credentials:
    """Our certificate (DER) and its private key (DER PKCS#8)."""

    certificate: bytes
    private_key: bytes

    def __post_init__(self) -> None:
        key = serialization.load_der_private_key(self.private_key, None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("private_key: an RSA key is required for rsa-sig")
        cert = x509.load_der_x509_certificate(self.certificate)
        if cert.public_key().public_numbers() != key.public_key().public_numbers():
            raise ValueError("private_key: does not belong to certificate")

    def subject_der(self) -> bytes:
        """ID_DER_ASN1_DN data: the certificate's subject Name, DER-encoded."""
        return x509.load_der_x509_certificate(self.certificate).subject.public_bytes()

    def sign(self, digest: bytes) -> bytes:
        key = serialization.load_der_private_key(self.private_key, None)
        assert isinstance(key, rsa.RSAPrivateKey)
        numbers = key.private_numbers()
        n, k = numbers.public_numbers.n, (key.key_size + 7) // 8
        return pow(_pkcs1_type1(digest, k), numbers.d, n).to_bytes(k, "big")


def verify(cert_der: bytes, id_der: bytes | None, digest: bytes, signature: bytes,
           trusted: tuple[bytes, ...]) -> str:
    """Check the certificate chain, that the ID names the certificate's subject, and the
    signature over the hash. Returns the subject as text. Whatever a peer's certificate
    makes the X.509 parser raise becomes INVALID_CERTIFICATE."""
    try:
        return _verify(cert_der, id_der, digest, signature, trusted)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise CertificateError(f"peer certificate unusable: {exc}",
                               NotifyType.INVALID_CERTIFICATE) from exc


def _verify(cert_der: bytes, id_der: bytes | None, digest: bytes, signature: bytes,
            trusted: tuple[bytes, ...]) -> str:
    try:
        cert = x509.load_der_x509_certificate(cert_der)
    except ValueError as exc:
        raise CertificateError(f"peer certificate does not parse: {exc}",
                               NotifyType.INVALID_CERTIFICATE) from exc
    _check_trust(cert, trusted)
    if id_der is not None and id_der != cert.subject.public_bytes():
        raise CertificateError("peer's ID is not its certificate's subject",
                               NotifyType.INVALID_ID_INFORMATION)
    public = cert.public_key()
    if not isinstance(public, rsa.RSAPublicKey):
        raise CertificateError("peer certificate has no RSA key",
                               NotifyType.CERT_TYPE_UNSUPPORTED)
    numbers = public.public_numbers()
    k = (public.key_size + 7) // 8
    value = int.from_bytes(signature, "big")
    if len(signature) != k or value >= numbers.n:
        raise CertificateError("signature length does not match the peer's key",
                               NotifyType.INVALID_SIGNATURE)
    recovered = pow(value, numbers.e, numbers.n)
    if not hmac.compare_digest(recovered.to_bytes(k, "big"),
                               _pkcs1_type1(digest, k).to_bytes(k, "big")):
        raise CertificateError("peer's signature does not verify",
                               NotifyType.INVALID_SIGNATURE)
    return cert.subject.rfc4514_string()


def _check_trust(cert: x509.Certificate, trusted: tuple[bytes, ...]) -> None:
    for der in trusted:
        anchor = x509.load_der_x509_certificate(der)
        if anchor == cert:
            return
        if anchor.subject != cert.issuer:
            continue
        key = anchor.public_key()
        if not isinstance(key, rsa.RSAPublicKey) or cert.signature_hash_algorithm is None:
            continue
        try:
            key.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(),
                       cert.signature_hash_algorithm)
            return
        except InvalidSignature:
            continue
    raise CertificateError(f"peer certificate ({cert.subject.rfc4514_string()}) is not "
                           "issued by a trusted CA", NotifyType.INVALID_CERT_AUTHORITY)
