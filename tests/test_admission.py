"""The server's access decision without sockets: provider, policies, static addresses, the
pool; and `vpnlab status`'s table."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import time

import pytest

from tunnels.addresses import StaticPool
from tunnels import monitor
from tunnels.admission import Admission, Call
from tunnels.monitor import connections, table
from tunnels.policy import DEFAULT_POLICIES, Conditions, Policy, Profile
from tunnels.ppp.auth.base import (
    Account,
    Authorization,
    AuthMethod,
    Credentials,
    DialIn,
    LocalAccounts,
    Verdict,
)

PASSWORD = "s3cret"
ACCOUNTS = LocalAccounts({
    "alice": Account(PASSWORD, DialIn.POLICY, ("VPN_Users",)),
    "carol": Account(PASSWORD, DialIn.DENY, ("VPN_Users",)),
    "erin": Account(PASSWORD, DialIn.ALLOW),
    "frank": Account(PASSWORD, DialIn.POLICY, ("VPN_Users",), "10.10.100.50"),
})
POLICIES = (
    Policy("PPTP", Conditions(tunnel_type=("pptp",), groups=("VPN_Users",)), "grant",
           Profile(auth=(AuthMethod.PAP,), idle_timeout=600)),
    Policy("L2TP", Conditions(tunnel_type=("l2tp",), groups=("VPN_Users",)), "grant",
           Profile(encryption=("strongest",), session_timeout=3600)),
)
NOON = datetime.datetime(2026, 12, 1, 12, 0)
PPTP = Call("pptp", 7, "198.51.100.2")


def pap(user: str, password: str = PASSWORD) -> Credentials:
    return Credentials(AuthMethod.PAP, user, 1, password=password.encode())


def admission(policies=POLICIES, radius=None, completed=None):
    pool = StaticPool(ipaddress.IPv4Network("10.10.100.0/24"), reserved=["10.10.100.50"])
    done = completed if completed is not None else []
    a = Admission(ACCOUNTS, policies, pool, lambda call, v: done.append((call, v)),
                  radius=radius, clock=lambda: NOON)
    return a, pool


@pytest.mark.parametrize("user,password,granted,code", [
    ("alice", PASSWORD, True, None), ("alice", "wrong", False, 691),
    ("nobody", PASSWORD, False, 691),
    ("carol", PASSWORD, False, 649), ("erin", PASSWORD, False, 649)])
def test_local_provider_then_policies(user, password, granted, code):
    a, _ = admission()
    pool_pick = a.addresses.take(PPTP.key)
    verdict = a.verifier_for(PPTP).verify(pap(user, password))
    assert verdict.success is granted and verdict.error_code == code
    record = a.decisions[PPTP.key]
    assert record["granted"] is granted and record["user"] == user
    if granted:
        auth = verdict.authorization
        assert auth.policy == "PPTP" and auth.encryption is None  # the server's level
        assert auth.idle_timeout == 600 and auth.peer_address is None
        assert a.addresses.used[PPTP.key] == pool_pick


def test_a_static_address_replaces_the_pool_pick_and_goes_back_to_nobody():
    a, pool = admission()
    pick = pool.take(PPTP.key)
    verdict = a.verifier_for(PPTP).verify(pap("frank"))
    assert verdict.success and verdict.authorization.peer_address == "10.10.100.50"
    assert pool.used[PPTP.key] == "10.10.100.50" and pool.free[0] == pick
    pool.give_back(PPTP.key)
    assert "10.10.100.50" not in pool.free  # reserved for frank: take() never hands it out
    other = Call("pptp", 8, "198.51.100.3")
    pool.take(other.key)
    assert pool.claim(other.key, "10.10.100.50")  # free again for frank's next call
    second = Call("pptp", 9, "198.51.100.4")
    pool.take(second.key)
    verdict = a.verifier_for(second).verify(pap("frank"))
    assert not verdict.success and "not free" in verdict.message


def test_l2tp_ipsec_with_des_is_refused_742_and_inside_ipsec_ppp_gets_no_mppe():
    a, _ = admission()
    des = Call("l2tp-ipsec", 3, "198.51.100.2", esp_cipher="des-cbc")
    assert a.verifier_for(des).verify(pap("alice")).error_code == 742
    tdes = Call("l2tp-ipsec", 4, "198.51.100.2", esp_cipher="3des-cbc")
    verdict = a.verifier_for(tdes).verify(pap("alice"))
    assert verdict.success and verdict.authorization.encryption is None
    assert verdict.authorization.session_timeout == 3600 and verdict.authorization.policy == "L2TP"


class FakeRadius:
    def __init__(self):
        self.asked = []

    def submit(self, call, credentials, answer):
        self.asked.append((call, credentials, answer))


def test_radius_answers_later_and_its_groups_meet_the_policies():
    radius, done = FakeRadius(), []
    a, _ = admission(radius=radius, completed=done)
    assert a.verifier_for(PPTP).verify(pap("alice")) is None
    assert a.counters["radius_pending"] == 1 and not done
    call, credentials, answer = radius.asked[0]
    accept = Verdict(True, authorization=Authorization(session_timeout=120, class_=(b"c1",),
                                                       encryption=("none", "strongest")))
    answer(accept, ("VPN_Users",))
    [(done_call, verdict)] = done
    assert done_call == PPTP and verdict.success
    assert verdict.authorization.session_timeout == 120  # the shorter of RADIUS and profile
    assert verdict.authorization.class_ == (b"c1",)  # echoed in accounting
    assert verdict.authorization.encryption == ("none", "strongest")  # RADIUS's, as given
    # no group from RADIUS: no policy matches
    a.verifier_for(PPTP).verify(pap("alice"))
    radius.asked[-1][2](Verdict(True), ())
    assert done[-1][1].error_code == 649
    # a RADIUS refusal passes through with its code
    a.verifier_for(PPTP).verify(pap("alice"))
    radius.asked[-1][2](Verdict.refused(691, "RADIUS Access-Reject"), ())
    assert done[-1][1].error_code == 691 and a.counters["refused_credentials"] == 1


def test_radius_users_are_admitted_by_the_accept_under_the_default_policy():
    radius, done = FakeRadius(), []
    a, _ = admission(policies=DEFAULT_POLICIES, radius=radius, completed=done)
    a.verifier_for(PPTP).verify(pap("someone-only-radius-knows"))
    radius.asked[0][2](Verdict(True), ())
    assert done[0][1].success


def test_the_pool_is_exhausted_cleanly():
    pool = StaticPool(ipaddress.IPv4Network("10.10.100.0/30"))
    assert pool.server_address == "10.10.100.1"
    assert pool.take(("pptp", 1)) == "10.10.100.2"
    assert pool.take(("pptp", 2)) is None and pool.counters["exhausted"] == 1
    pool.give_back(("pptp", 1))
    assert pool.take(("pptp", 3)) == "10.10.100.2"


def test_status_rows_and_table():
    status = {"role": "server", "sessions": [
        {"user": "alice", "protocol": "pptp", "tunnel_type": "pptp", "peer": "198.51.100.2",
         "address": "10.10.100.2", "auth": "mschapv2", "encryption": "mppe-128 stateless",
         "bytes_in": 1200, "bytes_out": 800, "started": 1000.0, "policy": "PPTP"},
        {"user": "bob", "protocol": "l2tp-ipsec", "tunnel_type": "l2tp", "esp_cipher": "3des-cbc",
         "started": 1000.0}]}
    rows = connections(status, now=1065.0)
    assert rows[0]["duration"] == 65.0 and rows[1]["encryption"] == "esp 3des-cbc"
    text = table(rows)
    assert text.splitlines()[0].split()[:3] == ["USER", "TUNNEL", "CLIENT"]
    assert "0:01:05" in text and "mppe-128" in text


def test_status_of_a_server_that_stopped_writing_says_so(tmp_path, capsys):
    path = tmp_path / "vpnsrv-status.json"
    path.write_text(json.dumps({"role": "server", "sessions": [
        {"user": "alice", "tunnel_type": "pptp", "started": time.time() - 30}]}))
    assert monitor.main(str(path), as_json=True) == 0
    fresh = json.loads(capsys.readouterr().out)
    assert fresh["stale"] is False and len(fresh["connections"]) == 1
    os.utime(path, (time.time() - 60, time.time() - 60))
    assert monitor.main(str(path), as_json=True) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["stale"] is True and "last written 60 s ago" in out.err


def test_pap_over_pptp_against_a_profile_that_wants_encryption_is_742():
    """PAP gives no MPPE keys (RFC 3079), so the encryption is known: none."""
    strict = (Policy("PPTP", Conditions(tunnel_type=("pptp",)), "grant",
                     Profile(encryption=("strongest",))),)
    a, _ = admission(policies=strict)
    assert a.verifier_for(PPTP).verify(pap("alice")).error_code == 742
