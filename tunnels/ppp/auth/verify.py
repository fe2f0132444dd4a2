"""Checking `Credentials` against a known password: the local account store's side of each
method (RADIUS does the same on its server). One function per method, one dispatch table.

MS-CHAP v1 accepts only the NT response (LM responses are crackable, RFC 2433 §12); MS-CHAP v2
returns the authenticator response the Success message carries (RFC 2759 §5).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

from tunnels.errors import RemoteProtocolError
from tunnels.ppp.auth import mscrypto
from tunnels.ppp.auth.base import (
    Account,
    AuthMethod,
    Credentials,
    MPPEMaterial,
    Verdict,
    WindowsError_,
)

BAD_CREDENTIALS = "unknown user or bad password"


def _bad() -> Verdict:
    return Verdict.refused(WindowsError_.AUTHENTICATION_FAILURE, BAD_CREDENTIALS)


def _pap(c: Credentials, password: str) -> Verdict:
    return Verdict(True) if hmac.compare_digest(password.encode(), c.password) else _bad()


def _md5(c: Credentials, password: str) -> Verdict:
    """CHAP-MD5 (RFC 1994 §2) and EAP-MD5 (RFC 3748 §5.4): MD5(identifier ‖ secret ‖ challenge)."""
    want = hashlib.md5(bytes((c.identifier,)) + password.encode() + c.challenge).digest()
    return Verdict(True) if hmac.compare_digest(want, c.response) else _bad()


def _mschap_v1(c: Credentials, password: str) -> Verdict:
    from tunnels.ppp.auth.chap import MSCHAPv1Response

    response = MSCHAPv1Response.decode(c.response)
    nt = mscrypto.nt_challenge_response_v1(c.challenge, password)
    if not (response.use_nt and hmac.compare_digest(nt, response.nt_response)):
        return _bad()
    return Verdict(True, mppe_material=v1_material(password, c.challenge))


def _mschap_v2(c: Credentials, password: str) -> Verdict:
    from tunnels.ppp.auth.chap import MSCHAPv2Response

    response = MSCHAPv2Response.decode(c.response)
    want = mscrypto.generate_nt_response(c.challenge, response.peer_challenge, c.username,
                                         password)
    if not hmac.compare_digest(want, response.nt_response):
        return _bad()
    s = mscrypto.generate_authenticator_response(password, response.nt_response,
                                                 response.peer_challenge, c.challenge,
                                                 c.username)
    material = MPPEMaterial(2, mscrypto.nt_password_hash(password),
                            nt_response=response.nt_response)
    return Verdict(True, authenticator_response=s, mppe_material=material)


def v1_material(password: str, challenge: bytes) -> MPPEMaterial:
    """RFC 3079 §2: 128-bit keys come from the NT hash, 40/56-bit ones from the LM hash."""
    return MPPEMaterial(1, mscrypto.nt_password_hash(password), challenge=challenge,
                        lm_password_hash=mscrypto.lm_password_hash(password))


_CHECKS: dict[AuthMethod, Callable[[Credentials, str], Verdict]] = {
    AuthMethod.PAP: _pap, AuthMethod.CHAP: _md5, AuthMethod.EAP_MD5: _md5,
    AuthMethod.MSCHAP: _mschap_v1, AuthMethod.MSCHAPV2: _mschap_v2,
}


def verify_with_account(credentials: Credentials, account: Account | None) -> Verdict:
    """The credentials checked against the account's password; unknown users and wrong
    passwords get the same answer (691), so the reply tells a prober nothing."""
    if account is None:
        return _bad()
    try:
        return _CHECKS[credentials.method](credentials, account.password)
    except RemoteProtocolError:
        return _bad()  # a malformed response value proves nothing
