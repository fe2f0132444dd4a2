"""ESP transforms: RFC 3602 AES-CBC and RFC 2202 HMAC vectors through tunnels/ipsec/crypto.py,
the chained-context CBC against fresh per-packet contexts for every cipher, the name registry,
and that the ipsec cores stay sans-I/O and scapy-free."""

from __future__ import annotations

import ast
import json
import random
from pathlib import Path

import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from Crypto.Cipher import DES

from tunnels.errors import LocalProtocolError
from tunnels.ipsec.crypto import CIPHERS, INTEGRITY, CbcCipher, Hmac96, cipher_spec
from tunnels.ipsec.esp import encapsulate
from tunnels.ipsec.ipv4 import parse_ipv4
from tunnels.ipsec.sa import SecurityAssociation

DATA = Path(__file__).parent / "data" / "ipsec"
AES = json.loads((DATA / "rfc3602_aes_cbc.json").read_text())["cases"]
HMAC = json.loads((DATA / "rfc2202_hmac_md5_sha1.json").read_text())


def _plaintext(case: dict) -> bytes:
    if "Plaintext_ascii" in case:
        return case["Plaintext_ascii"].encode()
    return bytes.fromhex(case["Plaintext"])


@pytest.mark.parametrize("case", [c for c in AES if c["case"] <= 4], ids=lambda c: str(c["case"]))
def test_rfc3602_aes_cbc_vectors(case):
    cipher = CbcCipher("aes-cbc-128", bytes.fromhex(case["Key"]))
    iv, expected = bytes.fromhex(case["IV"]), bytes.fromhex(case["Ciphertext"])
    assert cipher.encrypt(iv, bytearray(_plaintext(case))) == expected
    assert cipher.decrypt(iv + expected) == _plaintext(case)


def test_rfc3602_case5_transport_mode_esp_packet():
    """Case 5 is an ESP packet with NULL integrity; ours carries an ICV after the same bytes:
    SPI, sequence, IV, and the ciphertext of data + padding 1..14 + pad length + next header."""
    case = AES[4]
    sa = SecurityAssociation(int(case["SPI"], 16), "aes-cbc-128", bytes.fromhex(case["Key"]),
                             "hmac-sha1-96", bytes(20), case["Source_address"],
                             case["Destination_address"])
    esp = encapsulate(sa, int(case["Next_header"], 16), bytes.fromhex(case["Original_data"]),
                      bytes.fromhex(case["IV"]))
    assert esp[:8] == bytes.fromhex(case["SPI_Seq"])
    assert esp[8:24] == bytes.fromhex(case["IV"])
    assert esp[24:-12] == bytes.fromhex(case["Ciphertext"])
    header = parse_ipv4(bytes.fromhex(case["Original_IP_header"]) + bytes(64))
    rewritten = header.rewrite(50, len(esp) - 12)  # the RFC's length has no ICV
    assert rewritten == bytes.fromhex(case["Post_encryption_IP_header"])


def _hmac_cases():
    for name, table in (("hmac-md5-96", "hmac_md5"), ("hmac-sha1-96", "hmac_sha1")):
        for case in HMAC[table]:
            yield pytest.param(name, case, id=f"{table}-{case['test_case']}")


@pytest.mark.parametrize("name,case", list(_hmac_cases()))
def test_rfc2202_hmac_vectors_truncated_to_96_bits(name, case):
    key = b"Jefe" if case["key"] == "Jefe" else bytes.fromhex(case["key"])
    data = bytes.fromhex(case["data"]) if case["data_is_hex"] else case["data"].encode()
    expected = bytes.fromhex(case.get("digest_96") or case["digest"][:24])
    mac = Hmac96(name, key, check_size=len(key) == INTEGRITY[name].key_size)
    assert mac.icv(data) == expected
    assert mac.icv(data[:3], data[3:]) == expected  # parts, as encapsulate passes them
    assert mac.verify(data, expected)
    assert not mac.verify(data, bytes([expected[0] ^ 1]) + expected[1:])


def _reference(name: str, key: bytes, iv: bytes, data: bytes) -> bytes:
    if name == "des-cbc":
        return DES.new(key, DES.MODE_CBC, iv).encrypt(data)
    algorithm = TripleDES(key) if name == "3des-cbc" else algorithms.AES(key)
    return Cipher(algorithm, modes.CBC(iv)).encryptor().update(data)


@pytest.mark.parametrize("name", sorted(CIPHERS))
def test_chained_context_equals_fresh_cbc_per_packet(name):
    """One context for the SA's life gives exactly CBC under each packet's own IV."""
    rng = random.Random(name)
    spec = cipher_spec(name)
    key = rng.randbytes(spec.key_size)
    cipher = CbcCipher(name, key)
    for _ in range(50):
        iv = rng.randbytes(spec.block_size)
        data = rng.randbytes(spec.block_size * rng.randint(1, 90))
        ciphertext = cipher.encrypt(iv, bytearray(data))
        assert ciphertext == _reference(name, key, iv, data)
        assert cipher.decrypt(iv + ciphertext) == data


def test_registry_names_and_sizes_are_the_shared_vocabulary():
    assert {n: (s.key_size, s.block_size, s.iv_size) for n, s in CIPHERS.items()} == {
        "3des-cbc": (24, 8, 8), "des-cbc": (8, 8, 8), "aes-cbc-128": (16, 16, 16),
        "aes-cbc-256": (32, 16, 16)}
    assert {n: (s.key_size, s.icv_size) for n, s in INTEGRITY.items()} == {
        "hmac-sha1-96": (20, 12), "hmac-md5-96": (16, 12)}


def test_unknown_names_and_wrong_key_sizes_are_the_callers_error():
    with pytest.raises(LocalProtocolError, match=r"'blowfish'.*3des-cbc.*aes-cbc-128"):
        CbcCipher("blowfish", bytes(16))
    with pytest.raises(LocalProtocolError, match=r"'hmac-sha256'.*hmac-md5-96, hmac-sha1-96"):
        Hmac96("hmac-sha256", bytes(32))
    with pytest.raises(LocalProtocolError, match="24-octet"):
        CbcCipher("3des-cbc", bytes(16))
    with pytest.raises(LocalProtocolError, match="20-octet"):
        Hmac96("hmac-sha1-96", bytes(16))


ROOT = Path(__file__).resolve().parent.parent / "tunnels" / "ipsec"
FORBIDDEN = {"socket", "asyncio", "time", "subprocess", "threading", "select", "selectors",
             "scapy"}


@pytest.mark.parametrize("path", sorted(ROOT.glob("*.py")), ids=lambda p: p.name)
def test_ipsec_cores_are_sans_io_and_never_use_the_oracle(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            assert name.split(".")[0] not in FORBIDDEN, f"{path.name} imports {name}"
