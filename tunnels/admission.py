"""Who may connect, and with what: the server's access decision for each call (the chapter's
"Managing Virtual Private Networking"), sans-I/O like the protocol cores.

A call's PPP authenticator hands its `Credentials` to the call's verifier (`verifier_for`):
1. the authentication provider checks them: the local account store at once, or RADIUS
   (an Access-Request goes out; the verdict comes back later through `complete`);
2. the remote access policies are evaluated in order (tunnels/policy.py) with the account's
   dial-in permission and groups. RADIUS users' groups are the Access-Accept's Filter-Id
   values; their dial-in is "control access through policy" when the server has policies of
   its own (RADIUS vouched for the password, our policies decide) and "allow" under the
   default policy (the Accept admits, as RRAS with IAS);
3. the address is fixed: a per-user static address (account or Framed-IP-Address) before the
   profile's static address before the pool's.
The verdict carries the `Authorization` the PPP engine applies (address, encryption levels,
session and idle timeouts); `decisions` keeps which policy matched and why, for status.

EAP with RADIUS (`eap = "relay"`, the default, as RRAS with IAS): the call's verifier
`relays_eap`, so the EAP authenticator hands over each EAP Response and the RADIUS server
runs the method over Access-Challenges. A challenge is passed straight through to the call
(nothing is decided or recorded); steps 2 and 3 run on the final Access-Accept as for any
method. `eap = "md5-as-chap"`: the authenticator runs EAP-MD5 itself and RADIUS gets
CHAP-Password.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from tunnels.ppp.auth.base import (
    Authorization,
    Credentials,
    DialIn,
    Verdict,
    WindowsError_,
)
from tunnels.ppp.auth.verify import verify_with_account
from tunnels.policy import (
    DEFAULT_POLICIES,
    ConnectionRequest,
    Decision,
    Policy,
    esp_cipher_levels,
    evaluate,
)

CallKey = tuple[str, int]  # (protocol, call id): a PPTP Call ID and an L2TP Session ID may match


@dataclass(frozen=True, slots=True)
class Call:
    """One incoming call as the server sees it before PPP authentication."""

    protocol: str  # pptp | l2tp | l2tp-ipsec
    call_id: int
    peer: str  # the client's public address
    esp_cipher: str | None = None  # L2TP/IPsec: the ESP cipher, fixed before PPP starts

    @property
    def key(self) -> CallKey:
        return (self.protocol, self.call_id)

    @property
    def tunnel_type(self) -> str:
        """RADIUS Tunnel-Type and policy condition: L2TP/IPsec is L2TP."""
        return "pptp" if self.protocol == "pptp" else "l2tp"


class Addresses(Protocol):
    def claim(self, key: CallKey, address: str) -> bool: ...


class RadiusAccess(Protocol):
    """The RADIUS side the admission needs: build the request, send it, map the reply."""

    def submit(self, call: Call, credentials: Credentials,
               answer: Callable[[Verdict, tuple[str, ...]], None]) -> None: ...


@dataclass
class Admission:
    accounts: Any  # LocalAccounts
    policies: tuple[Policy, ...]
    addresses: Addresses
    complete: Callable[[Call, Verdict], None]  # a later verdict (RADIUS) for a call
    radius: RadiusAccess | None = None  # None: the local account store authenticates
    eap: str = "relay"  # with RADIUS: relay | md5-as-chap ([authentication] eap)
    clock: Callable[[], datetime.datetime] = datetime.datetime.now

    def __post_init__(self) -> None:
        self.decisions: dict[CallKey, dict[str, Any]] = {}
        self.counters = {"granted": 0, "refused_credentials": 0, "refused_policy": 0,
                         "refused_address": 0, "radius_pending": 0, "radius_challenges": 0}

    def verifier_for(self, call: Call) -> _CallVerifier:
        return _CallVerifier(self, call)

    def forget(self, key: CallKey) -> dict[str, Any] | None:
        return self.decisions.pop(key, None)

    # -- the steps -----------------------------------------------------------------------------
    def verify_locally(self, call: Call, credentials: Credentials) -> Verdict:
        account = self.accounts.lookup_sent(credentials.username)
        verdict = verify_with_account(credentials, account)
        if not verdict.success:
            return self._refused(call, credentials, verdict, "refused_credentials")
        return self.decide(call, credentials, verdict, account.groups, account.dialin,
                           account.static_address)

    def from_radius(self, call: Call, credentials: Credentials, verdict: Verdict,
                    groups: tuple[str, ...]) -> None:
        self.counters["radius_pending"] -= 1
        if verdict.challenge is not None:  # EAP goes on: the call relays the next Request
            self.counters["radius_challenges"] += 1
            self.complete(call, verdict)
            return
        if verdict.success:
            # RADIUS vouched for the user: with our own policies configured they decide the
            # permission ("control access through policy"); with none, the Accept admits.
            dialin = DialIn.ALLOW if self.policies == DEFAULT_POLICIES else DialIn.POLICY
            verdict = self.decide(call, credentials, verdict, groups, dialin,
                                  verdict.authorization.peer_address)
        else:
            verdict = self._refused(call, credentials, verdict, "refused_credentials")
        self.complete(call, verdict)

    def decide(self, call: Call, credentials: Credentials, verdict: Verdict,
               groups: tuple[str, ...], dialin: DialIn, static_address: str | None) -> Verdict:
        """Good credentials: the policies, then the address."""
        request = ConnectionRequest(
            username=credentials.username, groups=tuple(groups), dialin=dialin,
            tunnel_type=call.tunnel_type, nas_port_type="virtual",
            auth_method=credentials.method, when=self.clock(), static_address=static_address,
            encryption=esp_cipher_levels(call.esp_cipher) if call.esp_cipher else None)
        decision = evaluate(self.policies, request)
        if not decision.granted:
            refusal = Verdict.refused(decision.error_code or WindowsError_.NO_DIALIN_PERMISSION,
                                      decision.reason)
            return self._refused(call, credentials, refusal, "refused_policy", decision)
        profile = decision.authorization()
        given = verdict.authorization
        address = profile.peer_address  # the account's or RADIUS's, else the profile's
        if address is not None and not self.addresses.claim(call.key, address):
            refusal = Verdict.refused(WindowsError_.NO_DIALIN_PERMISSION,
                                      f"the static address {address} is not free")
            return self._refused(call, credentials, refusal, "refused_address", decision)
        encryption = _narrower(given.encryption, profile.encryption)
        if encryption == ():
            refusal = Verdict.refused(WindowsError_.NO_REMOTE_ENCRYPTION,
                                      f"RADIUS allows encryption {'/'.join(given.encryption)}, "
                                      f"policy {decision.policy!r} only "
                                      f"{'/'.join(profile.encryption)}")
            return self._refused(call, credentials, refusal, "refused_policy", decision)
        granted = Authorization(
            peer_address=address,
            # inside IPsec PPP carries no MPPE: the level was checked against the ESP cipher
            encryption=None if call.protocol == "l2tp-ipsec" else encryption,
            session_timeout=_shorter(given.session_timeout, profile.session_timeout),
            idle_timeout=_shorter(given.idle_timeout, profile.idle_timeout),
            policy=decision.policy, class_=given.class_, detail=decision.reason)
        self.counters["granted"] += 1
        self._record(call, credentials, True, decision.reason, decision)
        return replace(verdict, authorization=granted)

    def _refused(self, call: Call, credentials: Credentials, verdict: Verdict, counter: str,
                 decision: Decision | None = None) -> Verdict:
        self.counters[counter] += 1
        self._record(call, credentials, False, verdict.message, decision, verdict.error_code)
        return verdict

    def _record(self, call: Call, credentials: Credentials, granted: bool, reason: str,
                decision: Decision | None, error_code: int | None = None) -> None:
        self.decisions[call.key] = {
            "user": credentials.username, "method": credentials.method.value,
            "tunnel_type": call.tunnel_type, "granted": granted,
            "policy": decision.policy if decision else None, "reason": reason,
            "error_code": error_code, "provider": "radius" if self.radius else "local"}


class _CallVerifier:
    """The PPP engine's `Verifier` for one call."""

    def __init__(self, admission: Admission, call: Call):
        self.admission, self.call = admission, call

    @property
    def relays_eap(self) -> bool:
        """RADIUS runs the EAP method (RFC 3579) unless told to get EAP-MD5 as CHAP."""
        return self.admission.radius is not None and self.admission.eap == "relay"

    def verify(self, credentials: Credentials) -> Verdict | None:
        admission = self.admission
        if admission.radius is None:
            return admission.verify_locally(self.call, credentials)
        admission.counters["radius_pending"] += 1
        admission.radius.submit(self.call, credentials, lambda verdict, groups: (
            admission.from_radius(self.call, credentials, verdict, groups)))
        return None


def _shorter(a: float | None, b: float | None) -> float | None:
    values = [v for v in (a, b) if v]
    return min(values) if values else None



def _narrower(a: tuple[str, ...] | None, b: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """Levels both allow (RADIUS's MS-MPPE-Encryption-Types and the profile's); () when none."""
    if a is None or b is None:
        return a if b is None else b
    return tuple(level for level in a if level in b)
