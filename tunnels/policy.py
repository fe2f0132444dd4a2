"""Remote access policies as Windows 2000 RRAS evaluates them (the chapter's "Managing Virtual
Private Networking"), sans-I/O: the caller gives the connection attempt and its local time.

    Policy 1 ... Policy n, in order: the first whose conditions all match is the one
        no policy matches                       -> refused, 649
    the account's dial-in permission
        Deny access                             -> refused, 649
        Allow access                            -> granted, whatever the policy's permission
        Control access through Remote Access Policy -> the policy's permission (grant/deny)
    the policy's profile
        authentication method not allowed       -> refused, 649
        encryption known now and not allowed    -> refused, 742

Conditions: NAS-Port-Type (a VPN server's ports are Virtual), Tunnel-Type (PPTP, L2TP; L2TP/
IPsec is L2TP), Windows-Groups (member of any listed group) and Day-And-Time-Restrictions (any
listed window); several values of one condition are alternatives, different conditions must
all match, an empty condition matches anything. With no configured policy the server keeps
Windows 2000's default, `DEFAULT_POLICIES`: conditions any, permission deny, so only accounts
whose dial-in permission is Allow get in.

Bad credentials (691) are not decided here: `evaluate` runs after the password checked out.
Encryption is "known at evaluation time" for L2TP/IPsec (the ESP cipher: `esp_cipher_levels`)
and for PPP whose authentication gives no MPPE keys (PAP, CHAP, EAP-MD5: RFC 3079 derives the
keys from MS-CHAP only), which can only be unencrypted. For PPTP and plain L2TP with MS-CHAP the
level is negotiated in CCP afterwards: `mppe_bits_for` turns the profile's levels into what the
PPP engine's CCPPolicy takes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from tunnels.errors import LocalProtocolError
from tunnels.ppp.auth.base import AuthMethod, Authorization, DialIn, WindowsError_
from tunnels.radius.attributes import NASPortType

LEVELS = ("none", "basic", "strong", "strongest")  # the profile's Encryption tab, in order
TUNNEL_TYPES = ("pptp", "l2tp")
PERMISSIONS = ("grant", "deny")
NAS_PORT_TYPES = tuple(m.name.lower().replace("_", "-") for m in NASPortType)
MPPE_AUTH = (AuthMethod.MSCHAP, AuthMethod.MSCHAPV2)  # MPPE keys come from MS-CHAP (RFC 3079)
MPPE_BITS = {"basic": 40, "strong": 56, "strongest": 128}
DEFAULT_POLICY_NAME = "Allow access if dial-in permission is enabled"

NO_PERMISSION = int(WindowsError_.NO_DIALIN_PERMISSION)  # 649
# ERROR_REMOTE_REQUIRES_ENCRYPTION: "The remote computer does not support the required data
# encryption type." (not in WindowsError_ yet)
ENCRYPTION_REFUSED = 742

_DIALIN_TEXT = {
    DialIn.ALLOW: "Allow access",
    DialIn.DENY: "Deny access",
    DialIn.POLICY: "Control access through Remote Access Policy",
}
_TUNNEL_TEXT = {"pptp": "PPTP", "l2tp": "L2TP"}
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_FULL_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_WINDOW = re.compile(r"^\s*(?P<days>[A-Za-z][A-Za-z,\- ]*?)\s+(?P<times>[0-9:,\- ]+?)\s*$")
_SPAN = re.compile(r"^(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})$")


class PolicyError(ValueError):
    """A policy, condition or profile that cannot be evaluated; the text says what was expected."""


def _check_values(what: str, values: Sequence[str], allowed: Sequence[str]) -> tuple[str, ...]:
    if isinstance(values, str):
        raise PolicyError(f"{what}: expected a tuple of values, got the string {values!r}")
    bad = [v for v in values if v not in allowed]
    if bad:
        raise PolicyError(f"{what}: {bad[0]!r}: expected values among {', '.join(allowed)}")
    return tuple(values)


# -- Day-And-Time-Restrictions ------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TimeWindow:
    """One Day-And-Time-Restrictions entry, like "Mon-Fri 08:00-18:00" or "Sat,Sun 00:00-24:00":
    the days (0 = Monday) and spans of minutes since midnight, [start, end)."""

    text: str
    days: frozenset[int]
    spans: tuple[tuple[int, int], ...]

    @classmethod
    def parse(cls, text: str) -> TimeWindow:
        expected = ('expected days and times like "Mon-Fri 08:00-18:00" or "Sat,Sun '
                    '00:00-24:00" (days Mon..Sun, ranges with -, lists with ,; times HH:MM-HH:MM '
                    'within 00:00-24:00, start before end)')
        match = _WINDOW.match(text) if isinstance(text, str) else None
        if match is None:
            raise PolicyError(f"{text!r}: {expected}")
        days = _parse_days(match["days"])
        spans = tuple(_parse_span(s) for s in match["times"].replace(" ", "").split(","))
        if days is None or any(s is None for s in spans):
            raise PolicyError(f"{text!r}: {expected}")
        return cls(text.strip(), frozenset(days), spans)  # type: ignore[arg-type]

    def contains(self, when: datetime) -> bool:
        minute = when.hour * 60 + when.minute
        return when.weekday() in self.days and any(a <= minute < b for a, b in self.spans)


def _day(name: str) -> int | None:
    key = name.strip().lower()
    if key in _DAYS:
        return _DAYS.index(key)
    return _FULL_DAYS.index(key) if key in _FULL_DAYS else None


def _parse_days(text: str) -> set[int] | None:
    days: set[int] = set()
    for item in text.replace(" ", "").split(","):
        first, _, last = item.partition("-")
        a, b = _day(first), _day(last) if last else _day(first)
        if a is None or b is None:
            return None
        days.update((a + i) % 7 for i in range((b - a) % 7 + 1))  # Fri-Mon wraps the week
    return days


def _parse_span(text: str) -> tuple[int, int] | None:
    match = _SPAN.match(text)
    if match is None:
        return None
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if m1 > 59 or m2 > 59 or h1 > 23 or end > 24 * 60 or start >= end:
        return None  # overnight spans are two entries ("Mon 22:00-24:00", "Tue 00:00-06:00")
    return start, end


# -- policies -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Profile:
    """The policy's profile: what a granted connection may use and gets (empty tuple: any)."""

    auth: tuple[AuthMethod, ...] = ()
    encryption: tuple[str, ...] = ()  # among none, basic, strong, strongest
    session_timeout: float | None = None  # seconds
    idle_timeout: float | None = None  # seconds
    static_address: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.auth, AuthMethod | str) or \
                not all(isinstance(m, AuthMethod) for m in self.auth):
            raise PolicyError(f"Profile.auth: expected a tuple of AuthMethod, got {self.auth!r}")
        _check_values("Profile.encryption", self.encryption, LEVELS)
        for name in ("session_timeout", "idle_timeout"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or
                                      not isinstance(value, int | float) or value <= 0):
                raise PolicyError(f"Profile.{name}: expected seconds > 0 or None, got {value!r}")


@dataclass(frozen=True, slots=True)
class Conditions:
    """The policy's conditions; each an alternative list, empty matching anything."""

    nas_port_type: tuple[str, ...] = ()
    tunnel_type: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()  # Windows-Groups
    days_and_times: tuple[str, ...] = ()  # Day-And-Time-Restrictions
    windows: tuple[TimeWindow, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_values("Conditions.nas_port_type", self.nas_port_type, NAS_PORT_TYPES)
        _check_values("Conditions.tunnel_type", self.tunnel_type, TUNNEL_TYPES)
        if isinstance(self.groups, str) or not all(isinstance(g, str) and g for g in self.groups):
            raise PolicyError(f"Conditions.groups: expected a tuple of group names, got "
                              f"{self.groups!r}")
        if isinstance(self.days_and_times, str):
            raise PolicyError("Conditions.days_and_times: expected a tuple of entries, got the "
                              f"string {self.days_and_times!r}")
        windows = []
        for entry in self.days_and_times:
            try:
                windows.append(TimeWindow.parse(entry))
            except PolicyError as exc:
                raise PolicyError(f"Conditions.days_and_times: {exc}") from None
        object.__setattr__(self, "windows", tuple(windows))

    def mismatch(self, request: ConnectionRequest) -> str | None:
        """Why the request does not match (the first condition that fails), or None."""
        if self.nas_port_type and request.nas_port_type not in self.nas_port_type:
            return (f"NAS-Port-Type is {request.nas_port_type}, the policy wants "
                    f"{' or '.join(self.nas_port_type)}")
        if self.tunnel_type and request.tunnel_type not in self.tunnel_type:
            return (f"Tunnel-Type is {_TUNNEL_TEXT[request.tunnel_type]}, the policy wants "
                    f"{' or '.join(_TUNNEL_TEXT[t] for t in self.tunnel_type)}")
        if self.groups and not _member(request.groups, self.groups):
            return (f"Windows-Groups: {request.username} is not in {' or '.join(self.groups)} "
                    f"(member of {', '.join(request.groups) or 'no group'})")
        if self.windows and not any(w.contains(request.when) for w in self.windows):
            return (f"Day-And-Time-Restrictions: {request.when:%a %H:%M} is outside "
                    f"{'; '.join(w.text for w in self.windows)}")
        return None

    def describe(self) -> str:
        parts = [f"NAS-Port-Type {' or '.join(self.nas_port_type)}" if self.nas_port_type else "",
                 "Tunnel-Type " + " or ".join(_TUNNEL_TEXT[t] for t in self.tunnel_type)
                 if self.tunnel_type else "",
                 f"Windows-Groups {' or '.join(self.groups)}" if self.groups else "",
                 f"Day-And-Time-Restrictions {'; '.join(self.days_and_times)}"
                 if self.days_and_times else ""]
        return ", ".join(p for p in parts if p) or "any connection"


def _member(groups: Iterable[str], wanted: Iterable[str]) -> bool:
    """Windows group names compare case-insensitively, "DOMAIN\\Group" as the bare name too."""
    def names(group: str) -> set[str]:
        return {group.casefold(), group.rsplit("\\", 1)[-1].casefold()}
    have = set().union(*(names(g) for g in groups)) if groups else set()
    return any(g.casefold() in have for g in wanted)


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    conditions: Conditions = field(default_factory=Conditions)
    permission: str = "deny"  # grant | deny remote access permission
    profile: Profile = field(default_factory=Profile)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise PolicyError(f"Policy.name: expected a non-empty name, got {self.name!r}")
        if self.permission not in PERMISSIONS:
            raise PolicyError(f"Policy {self.name!r}: permission {self.permission!r}: expected "
                              "grant or deny")


DEFAULT_POLICIES: tuple[Policy, ...] = (Policy(DEFAULT_POLICY_NAME),)


@dataclass(frozen=True, slots=True)
class ConnectionRequest:
    """One connection attempt whose credentials checked out, as the policies see it.

    `encryption` is the level already known: one name, or several when one cipher counts as
    several levels (ESP DES is both Basic and Strong: `esp_cipher_levels`); None when it is
    negotiated after authentication (MPPE over PPTP or L2TP). `static_address` is the
    account's own (its Dial-in tab), which wins over the profile's."""

    username: str
    groups: tuple[str, ...]
    dialin: DialIn
    tunnel_type: str
    when: datetime
    auth_method: AuthMethod
    nas_port_type: str = "virtual"
    encryption: str | tuple[str, ...] | None = None
    static_address: str | None = None

    def __post_init__(self) -> None:
        _check_values("ConnectionRequest.tunnel_type", (self.tunnel_type,), TUNNEL_TYPES)
        _check_values("ConnectionRequest.nas_port_type", (self.nas_port_type,), NAS_PORT_TYPES)
        if not isinstance(self.dialin, DialIn) or not isinstance(self.auth_method, AuthMethod):
            raise PolicyError("ConnectionRequest: dialin and auth_method must be DialIn and "
                              "AuthMethod members")
        if isinstance(self.encryption, str):
            object.__setattr__(self, "encryption", (self.encryption,))
        if self.encryption is not None:
            _check_values("ConnectionRequest.encryption", self.encryption, LEVELS)

    def known_encryption(self) -> tuple[str, ...] | None:
        """The levels this connection's encryption counts as, if known before CCP."""
        if self.encryption is not None:
            return self.encryption  # type: ignore[return-value]  # a tuple after __post_init__
        if self.auth_method not in MPPE_AUTH:
            return ("none",)  # no MPPE keys without MS-CHAP (RFC 3079)
        return None


@dataclass(frozen=True, slots=True)
class Decision:
    granted: bool
    policy: str | None  # the policy that matched
    error_code: int | None  # the Windows error the client is shown when refused
    reason: str  # which policy matched and why it was granted or refused
    profile: Profile | None = None
    static_address: str | None = None  # the account's, else the profile's

    def authorization(self) -> Authorization:
        if not self.granted or self.profile is None:
            raise LocalProtocolError(f"Decision.authorization: the connection was refused "
                                     f"({self.error_code}: {self.reason})")
        p = self.profile
        return Authorization(peer_address=self.static_address, encryption=p.encryption or None,
                             session_timeout=p.session_timeout, idle_timeout=p.idle_timeout,
                             policy=self.policy, detail=self.reason)


def evaluate(policies: Sequence[Policy], request: ConnectionRequest) -> Decision:
    """The first matching policy, the account's dial-in permission, then the profile."""
    misses = []
    for policy in policies:
        why = policy.conditions.mismatch(request)
        if why is None:
            return _permission(policy, request)
        misses.append(f"{policy.name!r}: {why}")
    detail = "; ".join(misses) if misses else "there are no remote access policies"
    return Decision(False, None, NO_PERMISSION,
                    f"no remote access policy matched ({detail})")


def _permission(policy: Policy, request: ConnectionRequest) -> Decision:
    matched = f"policy {policy.name!r} matched ({policy.conditions.describe()})"
    dialin = f"dial-in permission of {request.username} is {_DIALIN_TEXT[request.dialin]}"
    if request.dialin is DialIn.DENY:
        return Decision(False, policy.name, NO_PERMISSION, f"{matched}; refused: {dialin}")
    if request.dialin is DialIn.ALLOW:
        why = f"{dialin} (the policy's {policy.permission} is not consulted)"
    elif policy.permission == "deny":
        return Decision(False, policy.name, NO_PERMISSION,
                        f"{matched}; refused: the policy denies remote access permission "
                        f"({dialin})")
    else:
        why = f"the policy grants remote access permission ({dialin})"
    return _profile(policy, request, f"{matched}; {why}")


def _profile(policy: Policy, request: ConnectionRequest, granted: str) -> Decision:
    profile = policy.profile
    problems = []
    bad_auth = bool(profile.auth) and request.auth_method not in profile.auth
    if bad_auth:
        problems.append(f"authentication {request.auth_method.value} is not allowed by the "
                        f"profile of policy {policy.name!r} "
                        f"(allowed: {', '.join(m.value for m in profile.auth)})")
    known = request.known_encryption()
    if profile.encryption and known is not None and not set(known) & set(profile.encryption):
        problems.append(f"encryption {' or '.join(known)} is not allowed by the profile of "
                        f"policy {policy.name!r} (allowed: {', '.join(profile.encryption)})")
    if problems:
        # 742 only when encryption is all that is wrong; a method not allowed is 649
        code = NO_PERMISSION if bad_auth else ENCRYPTION_REFUSED
        return Decision(False, policy.name, code, f"{granted}; refused: {'; '.join(problems)}",
                        profile)
    return Decision(True, policy.name, None, f"{granted}; granted", profile,
                    request.static_address or profile.static_address)


# -- what the profile means for each tunnel ------------------------------------------------------
def mppe_bits_for(levels: Sequence[str]) -> tuple[tuple[int, ...], bool]:
    """MPPE key lengths (strongest first, as CCPPolicy.allowed_bits) and whether encryption is
    required, for a profile's levels: Basic 40, Strong 56, Strongest 128 bits; "none" among
    them makes encryption optional; only "none" gives ((), False): no MPPE. Empty (any): every
    length, optional."""
    _check_values("encryption levels", levels, LEVELS)
    if not levels:
        return (128, 56, 40), False
    bits = tuple(sorted((MPPE_BITS[v] for v in set(levels) - {"none"}), reverse=True))
    return bits, "none" not in levels


def esp_cipher_levels(cipher: str) -> tuple[str, ...]:
    """The levels an L2TP/IPsec ESP cipher counts as, from the stack's own level → cipher table
    (tunnels/stacks/l2tp_ipsec.py): Basic and Strong = DES, Strongest = 3DES; AES, our
    extension, counts as Strongest."""
    from tunnels.stacks.l2tp_ipsec import esp_ciphers_for  # heavy (IKE); only when asked

    levels = tuple(v for v in LEVELS[1:] if cipher in esp_ciphers_for(v))
    if not levels and cipher in esp_ciphers_for("aes"):
        levels = ("strongest",)
    if not levels:
        raise PolicyError(f"ESP cipher {cipher!r}: expected one of "
                          f"{', '.join(esp_ciphers_for(('basic', 'strongest', 'aes')))}")
    return levels


__all__ = ["DEFAULT_POLICIES", "DEFAULT_POLICY_NAME", "ENCRYPTION_REFUSED", "LEVELS",
           "NO_PERMISSION", "Conditions", "ConnectionRequest", "Decision", "Policy",
           "PolicyError", "Profile", "TimeWindow", "esp_cipher_levels", "evaluate",
           "mppe_bits_for"]
