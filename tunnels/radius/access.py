"""RADIUS as the PPP authenticator's verifier (RFC 2865 §4.1, RFC 2548 §2.1/§2.3, RFC 2868),
sans-I/O: `access_request` turns the `Credentials` the authenticator collected into an
Access-Request's attributes, `verdict_from` turns the RadiusClient's answer into the `Verdict`
the authenticator words its Success or Failure from.

What an Access-Accept gives MPPE (RFC 2548 §2.4, RFC 3079):
- MS-CHAP v2: MS-MPPE-Send-Key / MS-MPPE-Recv-Key are the NAS's (the server's) send and receive
  start keys (§2.4.2/§2.4.3): `Verdict.mppe_keys = (send, receive)`, 16 octets each; a 40 or
  56-bit key is their first 8 octets (GetAsymmetricStartKey truncates the same SHA-1 digest,
  RFC 3079 §3.4).
- MS-CHAP v1: MS-CHAP-MPPE-Keys carries the LM key (the first 8 octets of LmPasswordHash) and the
  NT key (NtPasswordHashHash, §2.4.1). The 128-bit start key is RFC 3079 §2.3's
  Get_Start_Key(challenge, NT key), the same both ways: `mppe_keys = (k, k)`; 40/56-bit keys come
  from the LM key (§2.1/§2.2): `mppe_material = MPPEMaterial(1, b"", challenge=...,
  lm_password_hash=LM key)`; an all-zero LM key (FreeRADIUS 3.x always sends one: its mschap
  fills in only the NT key) leaves `lm_password_hash` empty and 40/56 bits unavailable
  (`mppe_start_keys` raises `NO_LM_KEY`). One pair of keys cannot carry both, so
  `mppe_start_keys(verdict, key_bits)` is the rule an engine follows; its results equal
  `derive_start_keys` on the password's own material for every length
  (tests/test_radius_access.py).

EAP relayed (RFC 3579; `Credentials.eap_message` set, as Windows 2000 RRAS does with IAS): the
Access-Request carries User-Name (the EAP identity), the peer's EAP packet split into
EAP-Message attributes of at most 253 octets (§3.1), State when the previous Access-Challenge
had one (RFC 2865 §5.24), Framed-MTU (the largest EAP packet we relay, §2.4) and the NAS
attributes; the client adds the Message-Authenticator (§3.2). An Access-Challenge gives
`Verdict.challenged` with the next EAP Request and the State; an Access-Accept a success with
the EAP-Success in `Verdict.eap_message` (and MS-MPPE keys as after MS-CHAP v2, when the
method makes any: EAP-MD5 makes none); an Access-Reject a refusal with the EAP-Failure. The
decision follows the RADIUS code (§2.6.3); an EAP-Message that is malformed, too large, or of
a code conflicting with it refuses the call by name (`bad_eap`)."""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

from tunnels.errors import LocalProtocolError
from tunnels.ppp.auth.base import (
    Authorization,
    AuthMethod,
    Credentials,
    MPPEMaterial,
    Verdict,
    WindowsError_,
)
from tunnels.ppp.auth.chap import MSCHAPFailure, MSCHAPv1Response, MSCHAPv2Response
from tunnels.ppp.auth.eap import RELAY_MAX, EapCode, relay_problem
from tunnels.radius.attributes import (
    MAX_VALUE,
    Attr,
    Attributes,
    ChapPassword,
    FramedProtocol,
    Key,
    NASPortType,
    ServiceType,
    TunnelMediumType,
    TunnelType,
)
from tunnels.radius.client import (
    AccessAccepted,
    AccessChallenged,
    AccessRejected,
    Reply,
    RequestFailed,
)
from tunnels.radius.msvsa import (
    MS,
    EncryptionPolicy,
    EncryptionTypes,
    IdentString,
    MPPEKeysV1,
    MSCHAP2Response,
    MSCHAPResponse,
)

FAILED = WindowsError_.AUTHENTICATION_FAILURE
NO_SUCCESS = "RADIUS Access-Accept without MS-CHAP2-Success"
CHALLENGED = ("RADIUS Access-Challenge: this server does not relay challenge exchanges "
              "(EAP methods other than MD5 are not proxied)")
NO_LM_KEY = ("{bits}-bit MPPE after MS-CHAP v1 needs the LM key, and the RADIUS server sent "
             "none (MS-CHAP-MPPE-Keys with an all-zero LM key)")
# RFC 2865 §5.8: 0xFFFFFFFE "the NAS should select an address"; 0xFFFFFFFF "allow the user to
# select" (negotiated), which this server does not offer: the pool's address either way
NAS_CHOOSES = {ipaddress.IPv4Address("255.255.255.254"), ipaddress.IPv4Address("255.255.255.255")}
_S = re.compile(r"S=[0-9A-Fa-f]{40}")
AccessEvent = AccessAccepted | AccessRejected | AccessChallenged | RequestFailed


@dataclass(frozen=True, slots=True)
class NasInfo:
    """Who asks (RFC 2865 §5.4/§5.32: NAS-IP-Address and/or NAS-Identifier, one at least) and
    for which call: `port` is the call's id (NAS-Port), the endpoints are the carrier
    addresses (the client's public one and the server's)."""

    identifier: str | None
    ip_address: str | None
    port: int
    tunnel_type: TunnelType
    client_endpoint: str
    server_endpoint: str

    def __post_init__(self) -> None:
        if not self.identifier and not self.ip_address:
            raise LocalProtocolError("NasInfo: NAS-Identifier or NAS-IP-Address is required "
                                     "(RFC 2865 §4.1)", None)


def nas_attributes(nas: NasInfo) -> list[tuple[Key, Any]]:
    """The NAS, service and tunnel attributes shared by Access- and Accounting-Requests."""
    items: list[tuple[Key, Any]] = []
    if nas.ip_address:
        items.append((Attr.NAS_IP_ADDRESS, ipaddress.IPv4Address(nas.ip_address)))
    if nas.identifier:
        items.append((Attr.NAS_IDENTIFIER, nas.identifier))
    items += [
        (Attr.NAS_PORT, nas.port & 0xFFFFFFFF),
        (Attr.NAS_PORT_TYPE, NASPortType.VIRTUAL),  # RFC 2865 §5.41: Virtual for a VPN
        (Attr.SERVICE_TYPE, ServiceType.FRAMED),
        (Attr.FRAMED_PROTOCOL, FramedProtocol.PPP),
        (Attr.TUNNEL_TYPE, TunnelType(nas.tunnel_type)),  # RFC 2868 §3.1
        (Attr.TUNNEL_MEDIUM_TYPE, TunnelMediumType.IPV4),  # §3.2
        (Attr.TUNNEL_CLIENT_ENDPOINT, nas.client_endpoint),  # §3.3
        (Attr.TUNNEL_SERVER_ENDPOINT, nas.server_endpoint),  # §3.4
        (Attr.CALLING_STATION_ID, nas.client_endpoint),  # RFC 2865 §5.31 (what RRAS sends)
        (Attr.CALLED_STATION_ID, nas.server_endpoint),  # §5.30
    ]
    return items


# Access-Request -------------------------------------------------------------------------------

def _pap(c: Credentials) -> list[tuple[Key, Any]]:
    if not c.password:  # RFC 2865 §5.2 hides 1..128 octets; an empty password proves nothing
        raise LocalProtocolError("PAP with an empty password cannot be sent to RADIUS", None)
    return [(Attr.USER_PASSWORD, c.password)]


def _md5(c: Credentials) -> list[tuple[Key, Any]]:
    """CHAP-MD5 and EAP-MD5 (both MD5(id ‖ secret ‖ challenge), RFC 3748 §5.4): RFC 2865 §5.3
    and §5.40; the challenge always goes in CHAP-Challenge (ours are not 16-octet)."""
    return [(Attr.CHAP_PASSWORD, ChapPassword(c.identifier, c.response)),
            (Attr.CHAP_CHALLENGE, c.challenge)]


def _mschap_v1(c: Credentials) -> list[tuple[Key, Any]]:
    """RFC 2548 §2.1.2/§2.1.3: the 8-octet challenge and the PPP Response value re-laid out
    (Ident, Flags, LM-Response, NT-Response)."""
    r = MSCHAPv1Response.decode(c.response)
    return [(MS.MS_CHAP_CHALLENGE, c.challenge),
            (MS.MS_CHAP_RESPONSE, MSCHAPResponse(c.identifier, r.lm_response, r.nt_response,
                                                 1 if r.use_nt else 0))]


def _mschap_v2(c: Credentials) -> list[tuple[Key, Any]]:
    """RFC 2548 §2.3.2: the 16-octet Authenticator Challenge and MS-CHAP2-Response."""
    r = MSCHAPv2Response.decode(c.response)
    return [(MS.MS_CHAP_CHALLENGE, c.challenge),
            (MS.MS_CHAP2_RESPONSE, MSCHAP2Response(c.identifier, r.peer_challenge,
                                                   r.nt_response, r.flags))]


def _eap(c: Credentials) -> list[tuple[Key, Any]]:
    """RFC 3579 §3.1: the EAP packet in as many EAP-Message attributes as it takes, State
    echoed (RFC 2865 §5.24), Framed-MTU the largest EAP packet we can relay (§2.4)."""
    m = c.eap_message
    items: list[tuple[Key, Any]] = [(Attr.EAP_MESSAGE, m[i:i + MAX_VALUE])
                                    for i in range(0, len(m), MAX_VALUE)]
    if c.state:
        items.append((Attr.STATE, c.state))
    return items + [(Attr.FRAMED_MTU, RELAY_MAX)]


_CREDENTIALS: Mapping[AuthMethod, Callable[[Credentials], list[tuple[Key, Any]]]] = {
    AuthMethod.PAP: _pap, AuthMethod.CHAP: _md5, AuthMethod.EAP_MD5: _md5,
    AuthMethod.MSCHAP: _mschap_v1, AuthMethod.MSCHAPV2: _mschap_v2,
}


def access_request(credentials: Credentials, nas: NasInfo) -> Attributes:
    """The Access-Request's attributes for RadiusClient.authenticate (which adds the
    Message-Authenticator). User-Name is the name as the peer sent it ("DOMAIN\\user" too:
    the server strips the domain, e.g. FreeRADIUS's with_ntdomain_hack). Raises
    LocalProtocolError for credentials the wire cannot carry (empty PAP password) and
    RemoteProtocolError for a malformed MS-CHAP response value."""
    items: list[tuple[Key, Any]] = [(Attr.USER_NAME, credentials.username)]
    encode = _eap if credentials.eap_message else _CREDENTIALS[credentials.method]
    items += encode(credentials)
    return Attributes(items + nas_attributes(nas))


# Verdict ----------------------------------------------------------------------------------------

def verdict_from(event: AccessEvent, credentials: Credentials) -> Verdict:
    """The Verdict for the RadiusClient's answer to `access_request(credentials, ...)`."""
    if credentials.eap_message and isinstance(event, AccessAccepted | AccessRejected |
                                              AccessChallenged):
        return _eap_verdict(event, credentials)
    if isinstance(event, AccessAccepted):
        return _accepted(event, credentials)
    if isinstance(event, AccessRejected):
        return _rejected(event)
    if isinstance(event, AccessChallenged):
        return Verdict.refused(FAILED, CHALLENGED)
    if isinstance(event, RequestFailed):
        tried = ", ".join(f"{a}:{p}" for a, p in event.servers_tried) or "none"
        return Verdict.refused(FAILED, f"{event.reason} (tried {tried})")
    raise LocalProtocolError(f"{type(event).__name__} answers no Access-Request", None)


def _accepted(event: AccessAccepted, c: Credentials) -> Verdict:
    attrs = event.attributes
    s = ""
    if c.method is AuthMethod.MSCHAPV2:
        s_or_refusal = _authenticator_response(attrs, c.identifier)
        if isinstance(s_or_refusal, Verdict):
            return s_or_refusal
        s = s_or_refusal
    keys, material = _mppe(attrs, c)
    return Verdict(True, message=_reply_message(attrs), authenticator_response=s,
                   mppe_material=material, mppe_keys=keys,
                   authorization=authorization_from(attrs, event.server))


def bad_eap(problem: str) -> Verdict:
    return Verdict.refused(FAILED, f"RADIUS EAP-Message unusable: {problem}")


def eap_message(attrs: Attributes) -> bytes | str:
    """The EAP packet of a reply's EAP-Message attributes, concatenated (RFC 3579 §3.1), or why
    it is unusable; b"" when there is none."""
    raw = b"".join(bytes(v) for v in attrs.get_all(Attr.EAP_MESSAGE))
    return (relay_problem(raw) or raw) if raw else raw


_EAP_CODE = {AccessAccepted: EapCode.SUCCESS, AccessRejected: EapCode.FAILURE,
             AccessChallenged: EapCode.REQUEST}


def _eap_verdict(event: AccessAccepted | AccessRejected | AccessChallenged,
                 c: Credentials) -> Verdict:
    """RFC 3579 §2.6.3: the RADIUS code decides; the EAP packet must agree with it (a
    Challenge without an EAP Request cannot be relayed)."""
    raw = eap_message(event.attributes)
    if isinstance(raw, str):
        return bad_eap(raw)
    want = _EAP_CODE[type(event)]
    if raw and raw[0] != want:
        return bad_eap(f"EAP code {raw[0]} in an {type(event).__name__} "
                       f"(expected {want.name})")
    if isinstance(event, AccessChallenged):
        if not raw:
            return bad_eap("an Access-Challenge without EAP-Message")
        state = event.attributes.get(Attr.STATE)
        return Verdict.challenged(raw, bytes(state) if state is not None else b"")
    if isinstance(event, AccessRejected):
        return replace(_rejected(event), eap_message=raw)
    return replace(_accepted(event, c), eap_message=raw)


def _authenticator_response(attrs: Attributes, ident: int) -> str | Verdict:
    """RFC 2548 §2.3.3: MS-CHAP2-Success = Ident + "S=<40 hex>", Ident that of the response."""
    success = attrs.get(MS.MS_CHAP2_SUCCESS)
    if not isinstance(success, IdentString):
        return Verdict.refused(FAILED, NO_SUCCESS)
    if success.ident != ident:
        return Verdict.refused(FAILED, f"RADIUS MS-CHAP2-Success for Ident {success.ident}, "
                                       f"the response had {ident}")
    found = _S.match(success.message.strip())
    if found is None:
        return Verdict.refused(FAILED, f"RADIUS MS-CHAP2-Success without S=<40 hex>: "
                                       f"{success.message[:60]!r}")
    return "S=" + found.group()[2:].upper()  # RFC 2759 §5: upper-case hex


def _mppe(attrs: Attributes, c: Credentials,
          ) -> tuple[tuple[bytes, bytes] | None, MPPEMaterial | None]:
    v1 = attrs.get(MS.MS_CHAP_MPPE_KEYS)
    if c.method is AuthMethod.MSCHAP and isinstance(v1, MPPEKeysV1):
        start = v1_start_key_128(v1.nt_key, c.challenge)
        # an all-zero LM key: the server gave none (FreeRADIUS 3.x always does this)
        lm = b"" if v1.lm_key == bytes(8) else v1.lm_key
        return (start, start), MPPEMaterial(1, b"", challenge=c.challenge, lm_password_hash=lm)
    send, recv = attrs.get(MS.MS_MPPE_SEND_KEY), attrs.get(MS.MS_MPPE_RECV_KEY)
    if isinstance(send, bytes) and isinstance(recv, bytes) and send and recv:
        return (send, recv), None
    return None, None


def v1_start_key_128(nt_key: bytes, challenge: bytes) -> bytes:
    """RFC 3079 §2.3/§2.4 Get_Start_Key: SHA-1(NtPasswordHashHash ×2 ‖ challenge), 16 octets;
    RFC 2548 §2.4.1's NT key is NtPasswordHashHash."""
    return hashlib.sha1(nt_key + nt_key + challenge).digest()[:16]


class KeyCarrier(Protocol):
    """A Verdict or the AuthOutcome made from it."""

    @property
    def mppe_keys(self) -> tuple[bytes, bytes] | None: ...

    @property
    def mppe_material(self) -> MPPEMaterial | None: ...


def mppe_start_keys(verdict: KeyCarrier, key_bits: int) -> tuple[bytes, bytes]:
    """(server send, server receive) start keys of `key_bits` from a RADIUS Verdict (or the
    AuthOutcome made from it): MS-CHAP v1's 40/56-bit keys from the LM key (LocalProtocolError
    `NO_LM_KEY` when the server sent none), otherwise the first 8 or 16 octets of
    `mppe_keys`."""
    length = 16 if key_bits == 128 else 8
    material = verdict.mppe_material
    if key_bits != 128 and material is not None and material.version == 1:
        if not material.lm_password_hash:
            raise LocalProtocolError(NO_LM_KEY.format(bits=key_bits), None)
        start = material.lm_password_hash[:8]
        return start, start
    if verdict.mppe_keys is None or min(map(len, verdict.mppe_keys)) < length:
        raise LocalProtocolError(f"the RADIUS verdict carries no {key_bits}-bit MPPE keys", None)
    send, receive = verdict.mppe_keys
    return send[:length], receive[:length]


def authorization_from(attrs: Attributes, server: tuple[str, int] | None = None,
                       ) -> Authorization:
    """Reply items the server applies: Framed-IP-Address (255.255.255.254/255 mean "the NAS
    chooses", RFC 2865 §5.8), Session-Timeout, Idle-Timeout, every Class (echoed in
    accounting, §5.25), MS-MPPE-Encryption-Policy/Types as allowed levels (RFC 2548
    §2.4.4/§2.4.5)."""
    framed = attrs.get(Attr.FRAMED_IP_ADDRESS)
    peer = None if framed is None or framed in NAS_CHOOSES else str(framed)
    session, idle = attrs.get(Attr.SESSION_TIMEOUT), attrs.get(Attr.IDLE_TIMEOUT)
    where = f" from {server[0]}:{server[1]}" if server else ""
    return Authorization(
        peer_address=peer, encryption=encryption_levels(attrs),
        session_timeout=float(session) if session else None,
        idle_timeout=float(idle) if idle else None,
        class_=tuple(bytes(v) for v in attrs.get_all(Attr.CLASS)),
        detail=f"RADIUS Access-Accept{where}")


_LEVELS = ((EncryptionTypes.RC4_40, "basic"), (EncryptionTypes.RC4_56, "strong"),
           (EncryptionTypes.RC4_128, "strongest"))


def encryption_levels(attrs: Attributes) -> tuple[str, ...] | None:
    """The chapter's levels from MS-MPPE-Encryption-Types (and Policy: Allowed adds "none");
    None when the reply says nothing."""
    types, policy = attrs.get(MS.MS_MPPE_ENCRYPTION_TYPES), attrs.get(
        MS.MS_MPPE_ENCRYPTION_POLICY)
    if types is None:
        return None
    levels = tuple(name for bit, name in _LEVELS if int(types) & bit)
    if policy != EncryptionPolicy.REQUIRED or not levels:
        levels = ("none", *levels)
    return levels


def _rejected(event: AccessRejected) -> Verdict:
    """The Windows code from MS-CHAP-Error ("E=691 R=0 ...", RFC 2548 §2.1.5), 691 otherwise;
    the text from Reply-Message."""
    attrs = event.attributes
    error = attrs.get(MS.MS_CHAP_ERROR)
    code, text = int(FAILED), ""
    if isinstance(error, IdentString):
        failure = MSCHAPFailure.decode(error.message.encode())
        code = failure.error or code
        text = failure.message
    return Verdict.refused(code, _reply_message(attrs) or text or "RADIUS Access-Reject")


def _reply_message(attrs: Attributes) -> str:
    """RFC 2865 §5.18: several Reply-Messages are displayed in order, concatenated."""
    return "".join(m for m in attrs.get_all(Attr.REPLY_MESSAGE) if isinstance(m, str)).strip()


def groups_from(reply: Reply | Attributes) -> tuple[str, ...]:
    """Filter-Id values of an Access-Accept (RFC 2865 §5.11), which remote access policies
    can match as group names until Authorization gets a `groups` field."""
    attrs = reply if isinstance(reply, Attributes) else reply.attributes
    return tuple(v for v in attrs.get_all(Attr.FILTER_ID) if isinstance(v, str))


__all__ = ["CHALLENGED", "NO_LM_KEY", "NO_SUCCESS", "NasInfo", "access_request",
           "authorization_from", "bad_eap", "eap_message", "encryption_levels", "groups_from",
           "mppe_start_keys", "nas_attributes", "v1_start_key_128", "verdict_from"]
