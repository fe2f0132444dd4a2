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
