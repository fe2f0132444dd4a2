"""RFC 3079 vectors not covered by test_mppe.py: every intermediate step, the printed errata,
and the collection's derived key-change chains (tests/data/rfc3079_mppe_keys.json)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunnels.mppe import keys
from tunnels.ppp.auth import mscrypto
from tunnels.ppp.auth.base import MPPEMaterial

V = json.loads((Path(__file__).parent / "data" / "rfc3079_mppe_keys.json").read_text())


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


@pytest.mark.parametrize("bits, section, step4", [
    (40, "mschapv1_2_5_1_40bit", "SessionKey_step4_40bit"),
    (56, "mschapv1_2_5_2_56bit", "SessionKey_step4_56bit"),
])
def test_mschapv1_40_56_from_the_lm_hash(bits, section, step4):
    v = V[section]
    lm = mscrypto.lm_password_hash(v["Password"])
    assert lm == h(v["PasswordHash"])
    material = MPPEMaterial(1, mscrypto.nt_password_hash(v["Password"]), challenge=bytes(8),
                            lm_password_hash=lm)
    start, receive = keys.derive_start_keys(material, bits, is_server=True)
    assert start == receive == lm[:8]  # RFC 3079 §2.1: v1 keys are the same both ways
    assert keys.get_new_key_from_sha(start, start, 8) == h(v["SessionKey_step3_GetKey"])
    assert keys.initial_session_key(start, bits) == h(v[step4])


def test_mschapv1_128_and_the_step3_erratum():
    v = V["mschapv1_2_5_3_128bit"]
    nt = mscrypto.nt_password_hash(v["Password"])
    assert nt == h(v["PasswordHash"])
    assert mscrypto.hash_nt_password_hash(nt) == h(v["PasswordHashHash"])
    start, _ = keys.derive_start_keys(MPPEMaterial(1, nt, challenge=h(v["Challenge"])), 128, True)
    assert start == h(v["CurrentSessionKey_step4_as_printed"])
    assert start != h(v["InitialSessionKey_step3_as_printed"])  # RFC 3079 erratum "ac ca"
    assert keys.initial_session_key(start, 128) == h(v["CurrentSessionKey_step5"])


@pytest.mark.parametrize("bits", [40, 56, 128])
def test_mschapv2_start_keys_and_the_56bit_erratum(bits):
    material = MPPEMaterial(2, h(V["mschapv2_initial_values_3_5"]["PasswordHash"]),
                            nt_response=h(V["mschapv2_initial_values_3_5"]["NT_Response"]))
    section = {40: "mschapv2_3_5_1_40bit", 56: "mschapv2_3_5_2_56bit",
               128: "mschapv2_3_5_3_128bit"}[bits]
    send, _ = keys.derive_start_keys(material, bits, is_server=True)
    assert send == h(V[section][f"SendStartKey{bits}"])
    if bits == 56:
        session = keys.initial_session_key(send, 56)
        printed = h(V[section]["rc4_SendSessionKey56_test_message"])
        assert keys.rc4(session, b"test message") != printed  # RFC 3079 erratum "57 58"


def test_client_send_start_key_uses_magic2():
    iv = V["mschapv2_initial_values_3_5"]
    material = MPPEMaterial(2, h(iv["PasswordHash"]), nt_response=h(iv["NT_Response"]))
    client_send, _ = keys.derive_start_keys(material, 128, is_server=False)
    assert client_send == h(V["derived_not_published"]["client_send_start_key128_magic2"])
    _, server_receive = keys.derive_start_keys(material, 128, is_server=True)
    assert server_receive == client_send


def test_server_40bit_key_change_chain():
    start = h(V["mschapv2_3_5_1_40bit"]["SendStartKey40"])
    key = keys.initial_session_key(start, 40)
    for expected in V["derived_not_published"]["server_send_session_key40_chain"]:
        assert key == h(expected)
        key = keys.next_session_key(start, key, 40)


def test_key_lengths_are_checked():
    from tunnels.errors import LocalProtocolError

    with pytest.raises(LocalProtocolError):
        keys.key_length(64)
