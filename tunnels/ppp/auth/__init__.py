"""Authentication methods behind one factory pair; see base.py for the contract."""

from __future__ import annotations

import os

from tunnels.errors import LocalProtocolError
from tunnels.ppp.auth.base import (
    Account,
    AuthExchange,
    AuthMethod,
    AuthOutcome,
    LocalAccounts,
    MPPEMaterial,
    Random,
    Verifier,
    WindowsError_,
)
from tunnels.ppp.auth.chap import ChapAuthenticator, ChapPeer
from tunnels.ppp.auth.eap import EapAuthenticator, EapPeer
from tunnels.ppp.auth.pap import PapAuthenticator, PapPeer

_CHAP = (AuthMethod.CHAP, AuthMethod.MSCHAP, AuthMethod.MSCHAPV2)


def make_authenticator(method: AuthMethod, verifier: Verifier, name: str,
                       random: Random = os.urandom) -> AuthExchange:
    if method is AuthMethod.PAP:
        return PapAuthenticator(verifier)
    if method in _CHAP:
        return ChapAuthenticator(method, verifier, name, random)
    if method is AuthMethod.EAP_MD5:
        return EapAuthenticator(verifier, random)
    raise LocalProtocolError(f"authentication method {method.value} is not implemented yet")


def make_peer(method: AuthMethod, username: str, password: str,
              random: Random = os.urandom) -> AuthExchange:
    if method is AuthMethod.PAP:
        return PapPeer(username, password, random)
    if method in _CHAP:
        return ChapPeer(method, username, password, random)
    if method is AuthMethod.EAP_MD5:
        return EapPeer(username, password)
    raise LocalProtocolError(f"authentication method {method.value} is not implemented yet")


__all__ = ["Account", "AuthExchange", "AuthMethod", "AuthOutcome", "LocalAccounts",
           "MPPEMaterial", "Verifier", "WindowsError_", "make_authenticator", "make_peer"]
