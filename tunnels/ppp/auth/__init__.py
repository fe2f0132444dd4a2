"""Authentication methods behind one factory pair; see base.py for the contract.

Both factories dispatch through tables keyed by `AuthMethod`, so a new method is one entry in
each table (EAP methods plug in one level down, through `eap.METHODS`).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from tunnels.errors import LocalProtocolError
from tunnels.ppp.auth.base import (
    Account,
    AuthExchange,
    AuthMethod,
    Authorization,
    AuthOutcome,
    Credentials,
    DialIn,
    LocalAccounts,
    MPPEMaterial,
    Random,
    Verdict,
    Verifier,
    WindowsError_,
)
from tunnels.ppp.auth.chap import ChapAuthenticator, ChapPeer
from tunnels.ppp.auth.eap import EAPMethod, EapAuthenticator, EapPeer
from tunnels.ppp.auth.pap import PapAuthenticator, PapPeer

_AuthenticatorFactory = Callable[[AuthMethod, Verifier, str, Random, "float | None"], AuthExchange]
_PeerFactory = Callable[[AuthMethod, str, str, Random], AuthExchange]


def _chap_authenticator(method: AuthMethod, verifier: Verifier, name: str, random: Random,
                        rechallenge: float | None) -> AuthExchange:
    return ChapAuthenticator(method, verifier, name, random, rechallenge=rechallenge)


_AUTHENTICATORS: dict[AuthMethod, _AuthenticatorFactory] = {
    AuthMethod.PAP: lambda m, verifier, name, random, rc: PapAuthenticator(verifier),
    AuthMethod.CHAP: _chap_authenticator,
    AuthMethod.MSCHAP: _chap_authenticator,
    AuthMethod.MSCHAPV2: _chap_authenticator,
    AuthMethod.EAP_MD5: lambda m, verifier, name, random, rc: EapAuthenticator(verifier, random),
}

_PEERS: dict[AuthMethod, _PeerFactory] = {
    AuthMethod.PAP: lambda m, user, password, random: PapPeer(user, password, random),
    AuthMethod.CHAP: lambda m, user, password, random: ChapPeer(m, user, password, random),
    AuthMethod.MSCHAP: lambda m, user, password, random: ChapPeer(m, user, password, random),
    AuthMethod.MSCHAPV2: lambda m, user, password, random: ChapPeer(m, user, password, random),
    AuthMethod.EAP_MD5: lambda m, user, password, random: EapPeer(user, password),
}


def make_authenticator(method: AuthMethod, verifier: Verifier, name: str,
                       random: Random = os.urandom, *,
                       rechallenge: float | None = None) -> AuthExchange:
    """The authenticator side (server). `rechallenge`: seconds between CHAP re-challenges after
    a success (RFC 1994 §2), or None; only CHAP-family methods use it."""
    factory = _AUTHENTICATORS.get(method)
    if factory is None:
        raise LocalProtocolError(f"authentication method {method.value} is not implemented")
    return factory(method, verifier, name, random, rechallenge)


def make_peer(method: AuthMethod, username: str, password: str,
              random: Random = os.urandom) -> AuthExchange:
    """The authenticated side (client)."""
    factory = _PEERS.get(method)
    if factory is None:
        raise LocalProtocolError(f"authentication method {method.value} is not implemented")
    return factory(method, username, password, random)


__all__ = ["Account", "AuthExchange", "AuthMethod", "AuthOutcome", "Authorization", "Credentials",
           "DialIn", "EAPMethod", "LocalAccounts", "MPPEMaterial", "Random", "Verdict",
           "Verifier", "WindowsError_", "make_authenticator", "make_peer"]
