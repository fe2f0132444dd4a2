"""A lab's own small PKI for L2TP/IPsec with certificates (the chapter's default for Windows
computers): one CA, and a certificate + RSA key per host, as PEM files in the run dir."""

from __future__ import annotations

import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "vpnlab lab"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(path: Path, key: rsa.RSAPrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def make_pki(directory: Path, hosts: list[str]) -> dict[str, dict[str, Path]]:
    """{"ca": {"cert": ...}, host: {"cert": ..., "key": ...}}; 2048-bit RSA, one day."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca = (x509.CertificateBuilder().subject_name(_name("vpnlab lab CA"))
          .issuer_name(_name("vpnlab lab CA")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    out: dict[str, dict[str, Path]] = {"ca": {"cert": directory / "ca.pem"}}
    out["ca"]["cert"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for host in hosts:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        cert = (x509.CertificateBuilder().subject_name(_name(host)).issuer_name(ca.subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=1))
                .sign(ca_key, hashes.SHA256()))
        paths = {"cert": directory / f"{host}.pem", "key": directory / f"{host}.key"}
        paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(paths["key"], key)
        out[host] = paths
    return out
