"""Main Mode with RSA signatures (RFC 2409 §5.1): certificates from a test CA, the chapter's
default for Windows L2TP/IPsec."""

from __future__ import annotations

import datetime
import shutil

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tests.test_ike_oracles import run_tshark, write_pcap
from tests.test_ike_pairs import Net, assert_keys_agree, cfg
from tunnels.ipsec.ike import IKEConfigError, IKEFailed, Phase1Established
from tunnels.ipsec.ike.certs import Credentials, verify

DER = serialization.Encoding.DER


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "vpnlab"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject: str, key, issuer: str, issuer_key) -> bytes:
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=3650))
            .sign(issuer_key, hashes.SHA256()))
    return cert.public_bytes(DER)


def _key():
    return rsa.generate_private_key(public_exponent=65537, key_size=1024)  # CPU: tests only


def _pkcs8(key) -> bytes:
    return key.private_bytes(DER, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@pytest.fixture(scope="module")
def pki():
    ca_key, other_ca_key = _key(), _key()
    ca = _cert("Lab CA", ca_key, "Lab CA", ca_key)
    other_ca = _cert("Other CA", other_ca_key, "Other CA", other_ca_key)
    server_key, client_key = _key(), _key()
    return {
        "ca": ca, "other_ca": other_ca,
        "server": (_cert("vpn.lab", server_key, "Lab CA", ca_key), _pkcs8(server_key)),
        "client": (_cert("client1", client_key, "Lab CA", ca_key), _pkcs8(client_key)),
        "rogue": (_cert("client1", client_key, "Other CA", other_ca_key), _pkcs8(client_key)),
    }


def rsa_cfg(pki, who: str, trusted=("ca",), **kw):
    cert, key = pki[who]
    return cfg(psk=b"", auth="rsa-sig", certificate=cert, private_key=key,
               trusted_certificates=tuple(pki[t] for t in trusted), **kw)


def test_signature_round_trip_is_pkcs1_without_digestinfo(pki):
    cert, key = pki["client"]
    creds = Credentials(cert, key)
    sig = creds.sign(b"h" * 20)
    assert verify(cert, creds.subject_der(), b"h" * 20, sig, (pki["ca"],)) == \
        "CN=client1,O=vpnlab"
    public = x509.load_der_x509_certificate(cert).public_key().public_numbers()
    block = pow(int.from_bytes(sig, "big"), public.e, public.n).to_bytes(128, "big")
    assert block.startswith(b"\x00\x01\xff") and block.endswith(b"\x00" + b"h" * 20)


def test_main_mode_with_certificates(pki, tmp_path):
    net = Net(rsa_cfg(pki, "client"), rsa_cfg(pki, "server"), nat=True)
    net.run(until=10)
    ci, cr = net.children()
    assert_keys_agree(ci[0], cr[0])
    p1c = [e for e in net.client_events[0] if isinstance(e, Phase1Established)][0]
    p1s = [e for e in net.server_events if isinstance(e, Phase1Established)][0]
    assert p1c.auth == "rsa-sig" and p1c.peer_id == "CN=vpn.lab,O=vpnlab"
    assert p1s.peer_id == "CN=client1,O=vpnlab"
    if shutil.which("tshark"):
        pcap = tmp_path / "certs.pcap"
        write_pcap(net, pcap)
        sa = net.clients[0]._current()
        keys = [(sa.icookie.hex(), sa.keys.enc_key.hex())]
        assert run_tshark(pcap, keys, "-Y",
                          "_ws.malformed || _ws.expert.severity >= warning") == ""
        text = run_tshark(pcap, keys, "-V")
        assert "Payload: Certificate (6)" in text and "Payload: Signature (9)" in text
        assert "Payload: Certificate Request (7)" in text
        assert "RSA signatures" in text or "RSA-Sig" in text or "RSA signature" in text


def test_certificate_from_an_untrusted_ca_is_refused(pki):
    net = Net(rsa_cfg(pki, "rogue"), rsa_cfg(pki, "server"))
    net.run(until=60)
    fails = [e for e in net.client_events[0] if isinstance(e, IKEFailed)]
    assert len(fails) == 1 and fails[0].notify == "INVALID_CERT_AUTHORITY"
    sfails = [e for e in net.server_events if isinstance(e, IKEFailed)]
    assert "not issued by a trusted CA" in sfails[0].reason
    assert not net.children()[0]


def test_client_refuses_a_server_it_does_not_trust(pki):
    net = Net(rsa_cfg(pki, "client", trusted=("other_ca",)), rsa_cfg(pki, "server"))
    net.run(until=60)
    fails = [e for e in net.client_events[0] if isinstance(e, IKEFailed)]
    assert fails and fails[0].notify == "INVALID_CERT_AUTHORITY"
    assert not net.children()[0]


def test_psk_client_against_certificate_server_is_no_proposal(pki):
    net = Net(cfg(), rsa_cfg(pki, "server"))
    net.run(until=60)
    assert [e.notify for e in net.client_events[0] if isinstance(e, IKEFailed)] == [
        "NO_PROPOSAL_CHOSEN"]


def test_config_checks_credentials(pki):
    cert, _ = pki["client"]
    _, other_key = pki["server"]
    with pytest.raises(IKEConfigError, match="does not belong"):
        cfg(psk=b"", auth="rsa-sig", certificate=cert, private_key=other_key,
            trusted_certificates=(pki["ca"],))
    with pytest.raises(IKEConfigError, match="trusted_certificates"):
        cfg(psk=b"", auth="rsa-sig", certificate=cert, private_key=pki["client"][1])


def test_garbage_certificates_are_invalid_certificate(pki):
    from tunnels.ipsec.ike.certs import CertificateError
    from tunnels.ipsec.ike.constants import NotifyType
    for der in (b"", b"\x30\x03\x02\x01\x01", pki["client"][0][:-10]):
        with pytest.raises(CertificateError) as info:
            verify(der, None, b"h" * 20, b"s" * 128, (pki["ca"],))
        assert info.value.notify == NotifyType.INVALID_CERTIFICATE
    with pytest.raises(CertificateError) as info:
        verify(pki["client"][0], None, b"h" * 20, b"s" * 128, (pki["ca"],))
    assert info.value.notify == NotifyType.INVALID_SIGNATURE


def test_aggressive_mode_with_certificates(pki):
    net = Net(rsa_cfg(pki, "client", aggressive=True),
              rsa_cfg(pki, "server", allow_aggressive=True))
    net.run(until=10)
    ci, cr = net.children()
    assert_keys_agree(ci[0], cr[0])
    p1s = [e for e in net.server_events if isinstance(e, Phase1Established)][0]
    assert p1s.peer_id == "CN=client1,O=vpnlab"
