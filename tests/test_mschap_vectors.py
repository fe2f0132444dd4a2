"""MS-CHAP v1/v2 primitives against the RFCs' published examples (tests/data/*.json)."""

from __future__ import annotations

import json
from pathlib import Path

from tunnels.ppp.auth import mscrypto

DATA = Path(__file__).parent / "data"


def _hex(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def test_rfc2759_section_9_2_hash_example():
    v = json.loads((DATA / "rfc2759_mschapv2.json").read_text())["hash_example_9_2"]
    auth, peer = _hex(v["AuthenticatorChallenge"]), _hex(v["PeerChallenge"])
    assert mscrypto.challenge_hash(peer, auth, "User") == _hex(v["Challenge"])
    assert mscrypto.nt_password_hash("clientPass") == _hex(v["PasswordHash"])
    assert mscrypto.hash_nt_password_hash(_hex(v["PasswordHash"])) == _hex(v["PasswordHashHash"])
    nt = mscrypto.generate_nt_response(auth, peer, "User", "clientPass")
    assert nt == _hex(v["NT_Response"])
    assert mscrypto.generate_authenticator_response("clientPass", nt, peer, auth, "User") == \
        v["AuthenticatorResponse"]


def test_domain_prefix_is_not_hashed():
    a, p = b"\x01" * 16, b"\x02" * 16
    assert mscrypto.challenge_hash(p, a, "CORP\\User") == mscrypto.challenge_hash(p, a, "User")


def test_rfc2433_appendix_b2_nt_challenge_response():
    v = json.loads((DATA / "rfc2433_mschapv1.json").read_text())["hash_example_B_2"]
    assert mscrypto.nt_password_hash("MyPw") == _hex(v["NtPasswordHash"])
    assert mscrypto.nt_challenge_response_v1(_hex(v["Challenge"]), "MyPw") == \
        _hex(v["NtChallengeResponse"])


def test_md4_suite():
    from Crypto.Hash import MD4

    cases = json.loads((DATA / "rfc1320_md4.json").read_text())
    items = cases.get("cases") or cases.get("vectors") or []
    assert items, "no MD4 cases found in the vector file"
    for case in items:
        msg = case.get("input", case.get("message", ""))
        assert MD4.new(msg.encode()).hexdigest() == case.get("md4", case.get("digest")).lower()


def test_des_key_parity_examples():
    """RFC 2433 App. B.3 and RFC 2759 §9.3 (same octets): 7→8 octet expansion, odd parity."""
    for name, section in (("rfc2433_mschapv1.json", "des_key_generation_B_3"),
                          ("rfc2759_mschapv2.json", "des_key_generation_9_3")):
        v = json.loads((DATA / name).read_text())[section]
        assert mscrypto.nt_password_hash("MyPw") == _hex(v["NtPasswordHash" if "B_3" in section
                                                          else "PasswordHash"])
        for which in ("first", "second"):
            assert mscrypto.des_key_with_parity(_hex(v[f"{which}_raw_DES_key"])) == \
                _hex(v[f"{which}_parity_corrected_DES_key"])


def test_rfc2433_lm_values_derived_by_the_collection():
    v = json.loads((DATA / "rfc2433_mschapv1.json").read_text())
    derived, b2 = v["derived_not_published"], v["hash_example_B_2"]
    assert mscrypto.lm_password_hash("MyPw") == _hex(derived["LmPasswordHash(MyPw)"])
    assert mscrypto.lm_challenge_response(_hex(b2["Challenge"]), "MyPw") == \
        _hex(derived["LmChallengeResponse"])


def test_rfc2759_user_name_and_password_octets():
    v = json.loads((DATA / "rfc2759_mschapv2.json").read_text())["hash_example_9_2"]
    assert "User".encode() == _hex(v["UserName"])
    assert "clientPass".encode("utf-16-le") == _hex(v["Password"])
