"""Remote access policies (tunnels/policy.py) as Windows 2000 RRAS evaluates them: the first
matching policy, the account's dial-in permission, then the profile; refusals carry the Windows
error the client shows (649, 742) and a reason that names the policy.

The time is a fixed datetime: Tuesday 1 December 2026 and Saturday 5 December 2026.
"""

from __future__ import annotations

import ast
from datetime import datetime
from pathlib import Path

import pytest

from tunnels.errors import LocalProtocolError
from tunnels.policy import (
    DEFAULT_POLICIES,
    DEFAULT_POLICY_NAME,
    ENCRYPTION_REFUSED,
    NO_PERMISSION,
    Conditions,
    ConnectionRequest,
    Policy,
    PolicyError,
    Profile,
    TimeWindow,
    esp_cipher_levels,
    evaluate,
    mppe_bits_for,
)
from tunnels.ppp.auth.base import AuthMethod, Authorization, DialIn

TUESDAY_10 = datetime(2026, 12, 1, 10, 0)
TUESDAY_20 = datetime(2026, 12, 1, 20, 0)
SATURDAY_10 = datetime(2026, 12, 5, 10, 0)

ALLOW, DENY, POLICY = DialIn.ALLOW, DialIn.DENY, DialIn.POLICY


def request(dialin: DialIn = POLICY, tunnel: str = "pptp", groups: tuple[str, ...] = ("VPN Users",),
            when: datetime = TUESDAY_10, method: AuthMethod = AuthMethod.MSCHAPV2,
            **kwargs) -> ConnectionRequest:
    return ConnectionRequest("alice", groups, dialin, tunnel, when, method, **kwargs)


WORK_HOURS = Policy("VPN users at work", Conditions(
    nas_port_type=("virtual",), tunnel_type=("pptp", "l2tp"), groups=("VPN Users",),
    days_and_times=("Mon-Fri 08:00-18:00",)), "grant")


# -- dial-in permission × policy permission (the chapter's table) -------------------------------
@pytest.mark.parametrize("dialin, permission, granted", [
    (ALLOW, "grant", True),
    (ALLOW, "deny", True),  # Allow access overrides the policy's permission
    (DENY, "grant", False),
    (DENY, "deny", False),
    (POLICY, "grant", True),
    (POLICY, "deny", False),
])
def test_dialin_and_policy_permission(dialin, permission, granted):
    policy = Policy("Only policy", permission=permission)
    decision = evaluate([policy], request(dialin))
    assert decision.granted is granted and decision.policy == "Only policy"
    assert decision.error_code == (None if granted else NO_PERMISSION)
    assert "policy 'Only policy' matched" in decision.reason


def test_reasons_say_which_permission_decided():
    deny = Policy("Deny all", permission="deny")
    allowed = evaluate([deny], request(ALLOW)).reason
    assert "Allow access" in allowed and "the policy's deny is not consulted" in allowed
    denied = evaluate([deny], request(POLICY)).reason
    assert "refused: the policy denies remote access permission" in denied
    assert "Control access through Remote Access Policy" in denied
    account = evaluate([Policy("Grant all", permission="grant")], request(DENY)).reason
    assert "refused: dial-in permission of alice is Deny access" in account
    assert "policy 'Grant all' matched" in account


# -- conditions ---------------------------------------------------------------------------------
@pytest.mark.parametrize("dialin", [ALLOW, POLICY])
@pytest.mark.parametrize("req, matched, why", [
    (request(), True, ""),
    (request(tunnel="l2tp", encryption="strongest"), True, ""),
    (request(when=TUESDAY_20), False, "Day-And-Time-Restrictions: Tue 20:00 is outside "
                                      "Mon-Fri 08:00-18:00"),
    (request(when=SATURDAY_10), False, "Sat 10:00 is outside"),
    (request(groups=("Staff",)), False, "Windows-Groups: alice is not in VPN Users (member "
                                        "of Staff)"),
    (request(groups=()), False, "(member of no group)"),
    (request(nas_port_type="async"), False, "NAS-Port-Type is async, the policy wants virtual"),
], ids=["all-match", "l2tp", "evening", "weekend", "other-group", "no-group", "async-port"])
def test_conditions_all_must_match(dialin, req, matched, why):
    req = ConnectionRequest(req.username, req.groups, dialin, req.tunnel_type, req.when,
                            req.auth_method, req.nas_port_type, req.encryption)
    decision = evaluate([WORK_HOURS], req)
    assert decision.granted is matched
    if not matched:  # no policy matched: refused even with dial-in Allow (Windows 2000)
        assert decision.error_code == NO_PERMISSION and decision.policy is None
        assert decision.reason.startswith("no remote access policy matched ('VPN users at "
                                          "work': ")
        assert why in decision.reason


def test_tunnel_type_condition():
    l2tp_only = Policy("L2TP only", Conditions(tunnel_type=("l2tp",)), "grant")
    decision = evaluate([l2tp_only], request(ALLOW, tunnel="pptp"))
    assert not decision.granted and decision.error_code == NO_PERMISSION
    assert "'L2TP only': Tunnel-Type is PPTP, the policy wants L2TP" in decision.reason


def test_every_policy_that_did_not_match_is_named():
    policies = [Policy("Weekend", Conditions(days_and_times=("Sat,Sun 00:00-24:00",)), "grant"),
                Policy("L2TP", Conditions(tunnel_type=("l2tp",)), "grant")]
    reason = evaluate(policies, request()).reason
    assert "'Weekend': Day-And-Time-Restrictions: Tue 10:00 is outside Sat,Sun 00:00-24:00" \
        in reason
    assert "; 'L2TP': Tunnel-Type is PPTP, the policy wants L2TP" in reason


def test_first_matching_policy_wins():
    contractors = Policy("Contractors never", Conditions(groups=("Contractors",)), "deny")
    everyone = Policy("Everyone", permission="grant")
    req = request(groups=("VPN Users", "Contractors"))
    assert evaluate([contractors, everyone], req).policy == "Contractors never"
    assert not evaluate([contractors, everyone], req).granted
    assert evaluate([everyone, contractors], req).granted
    # a policy that does not match is skipped, not a refusal
    decision = evaluate([contractors, everyone], request())
    assert decision.granted and decision.policy == "Everyone"


@pytest.mark.parametrize("groups", [("vpn users",), ("CORP\\VPN Users",), ("x", "VPN USERS")])
def test_groups_compare_like_windows(groups):
    assert evaluate([WORK_HOURS], request(groups=groups)).granted


def test_a_condition_with_several_values_is_any_of_them():
    policy = Policy("Two groups", Conditions(groups=("Sales", "VPN Users")), "grant")
    assert evaluate([policy], request(groups=("Sales",))).granted
    assert evaluate([policy], request(groups=("VPN Users",))).granted


# -- the Windows 2000 default policy ------------------------------------------------------------
@pytest.mark.parametrize("dialin, granted", [(ALLOW, True), (POLICY, False), (DENY, False)])
def test_default_policy(dialin, granted):
    assert [p.name for p in DEFAULT_POLICIES] == [DEFAULT_POLICY_NAME]
    assert DEFAULT_POLICY_NAME == "Allow access if dial-in permission is enabled"
    decision = evaluate(DEFAULT_POLICIES, request(dialin, groups=()))
    assert decision.granted is granted and decision.policy == DEFAULT_POLICY_NAME
    assert decision.error_code == (None if granted else NO_PERMISSION)
    assert f"policy '{DEFAULT_POLICY_NAME}' matched (any connection)" in decision.reason


def test_without_any_policy_nobody_gets_in():
    decision = evaluate([], request(ALLOW))
    assert not decision.granted and decision.error_code == NO_PERMISSION
    assert decision.reason == "no remote access policy matched (there are no remote access " \
                              "policies)"


# -- the profile --------------------------------------------------------------------------------
def with_profile(**kwargs) -> Policy:
    return Policy("Strict", permission="grant", profile=Profile(**kwargs))


@pytest.mark.parametrize("profile, req, code, why", [
    (dict(auth=(AuthMethod.MSCHAPV2,)), request(method=AuthMethod.MSCHAP), NO_PERMISSION,
     "authentication mschap is not allowed by the profile of policy 'Strict' (allowed: "
     "mschapv2)"),
    (dict(encryption=("strongest",)), request(tunnel="l2tp", encryption=("basic", "strong")),
     ENCRYPTION_REFUSED, "encryption basic or strong is not allowed by the profile of policy "
                         "'Strict' (allowed: strongest)"),
    (dict(encryption=("none",)), request(tunnel="l2tp", encryption="strongest"),
     ENCRYPTION_REFUSED, "encryption strongest is not allowed"),
    # PAP gives no MPPE keys (RFC 3079): over PPTP it can only be unencrypted, known now
    (dict(encryption=("strong", "strongest")), request(method=AuthMethod.PAP),
     ENCRYPTION_REFUSED, "encryption none is not allowed"),
    # both wrong: the method decides (742 only when encryption is all that is wrong)
    (dict(auth=(AuthMethod.MSCHAPV2,), encryption=("strongest",)),
     request(tunnel="l2tp", method=AuthMethod.PAP, encryption="basic"), NO_PERMISSION,
     "authentication pap is not allowed"),
], ids=["auth", "esp-des", "esp-with-none-only", "pap-over-pptp", "auth-and-encryption"])
def test_profile_refusals(profile, req, code, why):
    decision = evaluate([with_profile(**profile)], req)
    assert not decision.granted and decision.error_code == code and decision.policy == "Strict"
    assert why in decision.reason and "policy 'Strict' matched" in decision.reason


@pytest.mark.parametrize("profile, req", [
    (dict(auth=(AuthMethod.MSCHAPV2, AuthMethod.MSCHAP)), request(method=AuthMethod.MSCHAP)),
    (dict(encryption=("strongest",)), request()),  # MPPE is negotiated after this
    (dict(encryption=("none", "strong")), request(method=AuthMethod.CHAP)),
    (dict(encryption=("basic",)), request(tunnel="l2tp", encryption=esp_cipher_levels("des-cbc"))),
    (dict(encryption=("strongest",)), request(tunnel="l2tp",
                                              encryption=esp_cipher_levels("aes-cbc-256"))),
    (dict(), request(method=AuthMethod.PAP)),
], ids=["auth-listed", "mppe-later", "none-allowed", "des-is-basic", "aes-is-strongest", "any"])
def test_profile_accepts(profile, req):
    assert evaluate([with_profile(**profile)], req).granted


def test_a_profile_refusal_does_not_try_the_next_policy():
    """Windows 2000 stops at the first matching policy, even when its profile refuses."""
    strict = with_profile(auth=(AuthMethod.MSCHAPV2,))
    lenient = Policy("Lenient", permission="grant")
    decision = evaluate([strict, lenient], request(ALLOW, method=AuthMethod.PAP))
    assert not decision.granted and decision.policy == "Strict"


def test_authorization_of_a_granted_connection():
    policy = with_profile(encryption=("strong", "strongest"), session_timeout=3600,
                          idle_timeout=600, static_address="10.10.100.60")
    decision = evaluate([policy], request())
    auth = decision.authorization()
    assert auth == Authorization(peer_address="10.10.100.60", encryption=("strong", "strongest"),
                                 session_timeout=3600, idle_timeout=600, policy="Strict",
                                 detail=decision.reason)
    assert auth.detail.endswith("granted") and "policy 'Strict' matched" in auth.detail
    # the account's own static address (its Dial-in tab) wins over the profile's
    mine = evaluate([policy], request(static_address="10.10.100.50")).authorization()
    assert mine.peer_address == "10.10.100.50"
    # an empty profile leaves the server's settings in force
    assert evaluate(DEFAULT_POLICIES, request(ALLOW)).authorization() == Authorization(
        policy=DEFAULT_POLICY_NAME, detail=evaluate(DEFAULT_POLICIES, request(ALLOW)).reason)


def test_a_refused_decision_has_no_authorization():
    decision = evaluate(DEFAULT_POLICIES, request(DENY))
    with pytest.raises(LocalProtocolError, match="649"):
        decision.authorization()


def test_separate_policies_per_tunnel_type():
    pptp = Policy("PPTP", Conditions(tunnel_type=("pptp",)), "grant",
                  Profile(auth=(AuthMethod.MSCHAPV2,), encryption=("strongest",),
                          session_timeout=3600))
    l2tp = Policy("L2TP/IPsec", Conditions(tunnel_type=("l2tp",)), "grant",
                  Profile(encryption=("strong", "strongest"), idle_timeout=600))
    over_pptp = evaluate([pptp, l2tp], request())
    assert over_pptp.policy == "PPTP"
    assert over_pptp.authorization().encryption == ("strongest",)
    assert over_pptp.authorization().session_timeout == 3600
    assert over_pptp.authorization().idle_timeout is None
    over_l2tp = evaluate([pptp, l2tp], request(tunnel="l2tp", method=AuthMethod.PAP,
                                               encryption=esp_cipher_levels("3des-cbc")))
    assert over_l2tp.policy == "L2TP/IPsec" and over_l2tp.granted
    assert over_l2tp.authorization().idle_timeout == 600
    # PAP is fine for L2TP/IPsec (ESP encrypts) but not under the PPTP policy
    refused = evaluate([pptp, l2tp], request(method=AuthMethod.PAP))
    assert refused.error_code == NO_PERMISSION and "policy 'PPTP'" in refused.reason


# -- Day-And-Time-Restrictions ------------------------------------------------------------------
@pytest.mark.parametrize("entry, inside, outside", [
    ("Mon-Fri 08:00-18:00", [datetime(2026, 12, 1, 8, 0), datetime(2026, 12, 4, 17, 59)],
     [datetime(2026, 12, 1, 18, 0), datetime(2026, 12, 1, 7, 59), SATURDAY_10]),
    ("Sat,Sun 00:00-24:00", [datetime(2026, 12, 5, 0, 0), datetime(2026, 12, 6, 23, 59)],
     [datetime(2026, 12, 7, 0, 0)]),
    ("Fri-Mon 22:00-24:00", [datetime(2026, 12, 4, 23, 0), datetime(2026, 12, 7, 22, 30)],
     [datetime(2026, 12, 1, 23, 0)]),  # a range may wrap the week
    ("monday,Wed 08:00-12:00,13:00-17:00", [datetime(2026, 12, 2, 9, 0),
                                            datetime(2026, 11, 30, 16, 0)],
     [datetime(2026, 12, 2, 12, 30), datetime(2026, 12, 1, 9, 0)]),
])
def test_time_windows(entry, inside, outside):
    window = TimeWindow.parse(entry)
    assert all(window.contains(t) for t in inside)
    assert not any(window.contains(t) for t in outside)


@pytest.mark.parametrize("entry", ["Mon-Fri", "08:00-18:00", "Mon-Fri 18:00-08:00",
                                   "Funday 08:00-10:00", "Mon 08:00-25:00", "Mon 8-18",
                                   "Mon 08:00-08:00", "Mon-Fri 08:60-18:00"])
def test_bad_time_windows_are_refused_at_construction(entry):
    with pytest.raises(PolicyError, match=r"Conditions.days_and_times: .* expected days and "
                                          r"times like \"Mon-Fri 08:00-18:00\""):
        Conditions(days_and_times=(entry,))


# -- validation of policies, profiles and requests ---------------------------------------------
@pytest.mark.parametrize("make, message", [
    (lambda: Policy("p", permission="allow"), "permission 'allow': expected grant or deny"),
    (lambda: Policy(" "), "Policy.name: expected a non-empty name"),
    (lambda: Conditions(tunnel_type=("ipsec",)), "'ipsec': expected values among pptp, l2tp"),
    (lambda: Conditions(tunnel_type="pptp"), "expected a tuple of values, got the string"),
    (lambda: Conditions(nas_port_type=("vpn",)), "expected values among async, sync"),
    (lambda: Conditions(groups=("",)), "Conditions.groups: expected a tuple of group names"),
    (lambda: Profile(encryption=("medium",)), "'medium': expected values among none, basic"),
    (lambda: Profile(auth=("mschapv2",)), "Profile.auth: expected a tuple of AuthMethod"),
    (lambda: Profile(session_timeout=0), "Profile.session_timeout: expected seconds > 0"),
    (lambda: request(tunnel="l2tp-ipsec"), "'l2tp-ipsec': expected values among pptp, l2tp"),
    (lambda: request(encryption="aes"), "'aes': expected values among none, basic"),
], ids=["permission", "name", "tunnel-type", "tunnel-type-string", "nas-port-type", "group",
        "level", "auth-string", "timeout", "request-tunnel", "request-encryption"])
def test_invalid_values_are_refused(make, message):
    with pytest.raises(PolicyError, match=message.replace("(", r"\(")):
        make()


# -- what the profile means for each tunnel ---------------------------------------------------
@pytest.mark.parametrize("levels, bits, required", [
    ((), (128, 56, 40), False),
    (("none",), (), False),
    (("basic",), (40,), True),
    (("strong", "strongest"), (128, 56), True),
    (("none", "strongest"), (128,), False),
    (("strongest", "basic", "strong"), (128, 56, 40), True),
])
def test_mppe_bits_for(levels, bits, required):
    assert mppe_bits_for(levels) == (bits, required)


@pytest.mark.parametrize("cipher, levels", [
    ("des-cbc", ("basic", "strong")), ("3des-cbc", ("strongest",)),
    ("aes-cbc-128", ("strongest",)), ("aes-cbc-256", ("strongest",)),
])
def test_esp_cipher_levels(cipher, levels):
    assert esp_cipher_levels(cipher) == levels


def test_unknown_esp_cipher():
    with pytest.raises(PolicyError, match="ESP cipher 'rc4': expected one of"):
        esp_cipher_levels("rc4")


# -- sans-I/O -----------------------------------------------------------------------------------
def test_policy_module_reads_no_clock_and_does_no_io():
    path = Path(__file__).resolve().parent.parent / "tunnels" / "policy.py"
    tree = ast.parse(path.read_text())
    forbidden = {"socket", "asyncio", "time", "subprocess", "threading", "os", "select"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            assert not {a.name.split(".")[0] for a in node.names} & forbidden
        elif isinstance(node, ast.ImportFrom) and node.module:
            assert node.module.split(".")[0] not in forbidden
        elif isinstance(node, ast.Attribute):
            assert node.attr not in {"now", "today", "utcnow"}, "the time is an argument"
