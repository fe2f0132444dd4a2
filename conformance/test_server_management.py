"""Managing the VPN server (issue 9): authentication provider (local accounts, RADIUS against
a real FreeRADIUS) x method x remote access policy outcome; RADIUS on the wire (scapy and
tshark); accounting records against what the tunnel carried; DHCP-obtained addresses
(dnsmasq's leases); ports and pool limits; `vpnlab status`.

Each case runs the `managed-server` scenario (topologies/managed.py), whose checks compare
what happened with what the chapter's policies say should happen.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import sys
import time

import pytest

from conformance.plugin import start_scenario
from testbed import pcap
from topologies import managed
from topologies import remote_access as ra

pytestmark = pytest.mark.netns

POLICY_CASES = [
    # (id, params): what `managed.expected` says decides the outcome
    ("alice-mschapv2", dict(user="alice")),
    ("alice-mschap", dict(user="alice", auth="mschap")),
    ("alice-chap-not-in-profile", dict(user="alice", auth="chap", encryption="none")),
    ("alice-pap-not-in-profile", dict(user="alice", auth="pap", encryption="none")),
    ("alice-bad-password", dict(user="alice", password="not-her-password")),
    ("carol-dialin-denied", dict(user="carol")),
    ("dave-contractor-in-hours", dict(user="dave")),
    ("erin-no-policy-matches", dict(user="erin")),
    ("frank-static-address", dict(user="frank")),
    ("bob-l2tp-ipsec-3des", dict(user="bob", protocol="l2tp-ipsec")),
    ("alice-l2tp-ipsec-des-refused-742", dict(user="alice", protocol="l2tp-ipsec",
                                              cipher="des-cbc")),
    ("default-policy-refuses-policy-accounts", dict(user="alice", policies="default")),
    ("default-policy-admits-allow-accounts", dict(user="erin", policies="default")),
]
RADIUS_CASES = [
    ("alice-mschapv2", dict(user="alice")),
    ("alice-mschap", dict(user="alice", auth="mschap")),
    ("alice-chap-default-policy", dict(user="alice", auth="chap", encryption="none",
                                       policies="default")),
    ("alice-pap-default-policy", dict(user="alice", auth="pap", encryption="none",
                                      policies="default")),
    ("alice-eap-md5-default-policy", dict(user="alice", auth="eap-md5", encryption="none",
                                          policies="default")),
    ("alice-bad-password", dict(user="alice", password="not-her-password")),
    ("carol-no-group-from-radius", dict(user="carol")),
    ("frank-framed-ip-address", dict(user="frank")),
    ("bob-l2tp-ipsec", dict(user="bob", protocol="l2tp-ipsec")),
    ("fail-over-to-the-second-server", dict(user="alice", radius_failover="yes")),
]


def _all_pass(lab) -> None:
    results = managed.checks(lab, lab.params)
    failed = [f"{r.name}: {r.detail}" for r in results if not r.passed]
    assert not failed, failed


@pytest.mark.parametrize("params", [p for _, p in POLICY_CASES],
                         ids=[i for i, _ in POLICY_CASES])
def test_local_accounts_and_policies(params):
    with start_scenario("managed-server", **params) as lab:
        _all_pass(lab)


@pytest.mark.parametrize("params", [p for _, p in RADIUS_CASES],
                         ids=[i for i, _ in RADIUS_CASES])
def test_radius_provider_and_policies(params):
    with start_scenario("managed-server", provider="radius", **params) as lab:
        _all_pass(lab)


def test_contractors_out_of_hours_are_refused():
    """Day-And-Time-Restrictions: a window that does not contain now (the hour twelve hours
    away) makes the contractors' policy not match, so no policy does: 649."""
    hour = (time.localtime().tm_hour + 12) % 24
    window = f"Mon-Sun {hour:02d}:00-{hour:02d}:59"
    with start_scenario("managed-server", user="dave", contractor_hours=window) as lab:
        assert managed.expected(lab.params)[:2] == (False, 649)
        _all_pass(lab)
        refused = ra.status(lab, "vpnsrv")["refused"]
        assert any("Day-And-Time" in json.dumps(r) or "time" in json.dumps(r).lower()
                   for r in refused), refused


def test_the_session_timeout_of_the_profile_ends_the_call():
    with start_scenario("managed-server", user="dave", session_timeout="3") as lab:
        _all_pass(lab)
        down = _wait_server_event(lab, "session-down", 15)
        assert "session timeout" in down["reason"]
        deadline = time.monotonic() + 10  # the client hears the Terminate-Request a moment later
        while ra.status(lab, "client").get("state") == "up" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ra.status(lab, "client").get("state") in ("down", "reconnecting")


def test_the_idle_timeout_of_the_profile_ends_an_idle_call():
    with start_scenario("managed-server", user="alice", idle_timeout="2") as lab:
        _all_pass(lab)
        down = _wait_server_event(lab, "session-down", 15)
        assert "idle timeout" in down["reason"]


# -- RADIUS on the wire ----------------------------------------------------------------------

def _radius_packets(lab):
    from scapy.layers.radius import Radius

    path = lab.capture_path("vpnsrv", "fileserver")
    packets = pcap.wait_for(path, lambda ps: sum(1 for p in ps if p.haslayer(Radius)) >= 2,
                            timeout=3.0)
    return [p for p in packets if p.haslayer(Radius)]


def _attrs(radius, type_):
    return [a for a in radius.attributes if a.type == type_]


def _vsas(radius, vendor_type):
    out = []
    for a in _attrs(radius, 26):
        if getattr(a, "vendor_id", None) == 311 and a.vendor_type == vendor_type:
            out.append(bytes(a.value))
    return out


def _message_authenticator_ok(raw: bytes, request_authenticator: bytes | None) -> bool:
    """RFC 3579 §3.2, computed here: HMAC-MD5 over the packet with the attribute zeroed (and
    the request's authenticator in a reply)."""
    i, found = 20, None
    while i + 2 <= len(raw):
        t, ln = raw[i], raw[i + 1]
        if t == 80 and ln == 18:
            found = i
        i += max(ln, 2)
    if found is None:
        return False
    zeroed = raw[:found + 2] + bytes(16) + raw[found + 18:]
    if request_authenticator is not None:
        zeroed = zeroed[:4] + request_authenticator + zeroed[20:]
    want = hmac.new(managed.RADIUS_SECRET.encode(), zeroed, hashlib.md5).digest()
    return hmac.compare_digest(want, raw[found + 2:found + 18])


def _salt_decrypt(value: bytes, request_authenticator: bytes) -> bytes:
    """RFC 2548 §2.4.2, written out here (not our codec): b1 = MD5(S + R + A), ..."""
    salt, cipher = value[:2], value[2:]
    secret = managed.RADIUS_SECRET.encode()
    out, prev = b"", request_authenticator + salt
    for i in range(0, len(cipher), 16):
        b = hashlib.md5(secret + prev).digest()
        block = cipher[i:i + 16]
        out += bytes(x ^ y for x, y in zip(block, b[:len(block)], strict=True))
        prev = block
    return out[1:1 + out[0]]


def test_radius_access_on_the_wire_with_mschapv2_and_mppe_keys():
    from scapy.layers.radius import Radius

    from tunnels.mppe.keys import asymmetric_start_key, master_key_v2
    from tunnels.ppp.auth import mscrypto

    with start_scenario("managed-server", provider="radius", user="alice") as lab:
        _all_pass(lab)
        packets = _radius_packets(lab)
        requests = [p for p in packets if p[Radius].code == 1]
        accepts = [p for p in packets if p[Radius].code == 2]
        assert len(requests) == 1 and len(accepts) == 1, [p[Radius].code for p in packets]
        req, acc = requests[0][Radius], accepts[0][Radius]
        assert bytes(_attrs(req, 1)[0].value) == b"alice"  # User-Name
        assert _attrs(req, 61)[0].value == 5  # NAS-Port-Type Virtual
        assert _attrs(req, 64) and _attrs(req, 65)  # Tunnel-Type, Tunnel-Medium-Type
        challenge = _vsas(req, 11)[0]  # MS-CHAP-Challenge
        response = _vsas(req, 25)[0]  # MS-CHAP2-Response: ident, flags, peer challenge, ...
        assert len(challenge) == 16 and len(response) == 50
        assert _message_authenticator_ok(bytes(req), None)
        assert _message_authenticator_ok(bytes(acc), bytes(req.authenticator))
        assert _vsas(acc, 26)  # MS-CHAP2-Success
        # MS-MPPE-Send-Key (vendor type 16) encrypts what the NAS sends (RFC 2548 §2.4.2)
        send = _salt_decrypt(_vsas(acc, 16)[0], bytes(req.authenticator))
        nt_response = response[26:50]
        master = master_key_v2(mscrypto.nt_password_hash(ra.PASSWORD), nt_response)
        assert send[:16] == asymmetric_start_key(master, 16, True, True)
        # and tshark reads every RADIUS frame without complaint
        path = lab.capture_path("vpnsrv", "fileserver")
        out = subprocess.run(["tshark", "-r", str(path), "-Y", "radius", "-T", "fields",
                              "-e", "radius.code", "-e", "_ws.malformed"],
                             capture_output=True, text=True, timeout=60).stdout.split()
        assert out.count("1") >= 1 and out.count("2") >= 1 and "1" not in out[2::2]


def test_radius_pap_password_is_hidden_on_the_wire():
    with start_scenario("managed-server", provider="radius", user="alice", auth="pap",
                        encryption="none", policies="default") as lab:
        _all_pass(lab)
        assert _radius_packets(lab)
        path = lab.capture_path("vpnsrv", "fileserver")
        assert ra.PASSWORD.encode() not in path.read_bytes()


# -- accounting ----------------------------------------------------------------------------

def _traffic_and_hang_up(lab, count=5, size=200):
    res = lab.node("client").run(["ping", "-c", str(count), "-i", "0.2", "-s", str(size), "-n",
                                  "-q", managed.INFRA], timeout=20)
    assert res.ok, res.stdout + res.stderr
    assert lab.node("client").daemons["vpnclient"].stop() == 0
    _wait_server_event(lab, "session-down", 10)
    return count * (size + 28)  # ICMP echo datagrams each way (IP 20 + ICMP 8 + data)


def test_local_accounting_records_one_start_and_one_stop_with_the_traffic():
    with start_scenario("managed-server", accounting="local", user="alice") as lab:
        _all_pass(lab)
        carried = _traffic_and_hang_up(lab)
        log = lab.run_dir / managed.ACCOUNTING_LOG
        records = [json.loads(line) for line in log.read_text().splitlines()]
        kinds = [r.get("event") or r.get("status") for r in records]
        assert len(records) == 2 and kinds[0].lower().startswith("start") and \
            kinds[1].lower().startswith("stop"), records
        stop = records[1]
        assert stop["session_id"] == records[0]["session_id"] and stop["username"] == "alice"
        for field in ("input_octets", "output_octets"):
            value = stop.get(field, stop.get("counters", {}).get(field))
            assert carried <= value <= carried + 2000, (field, value, carried)
        assert "user" in str(stop.get("terminate_cause", "")).lower()


def test_radius_accounting_start_interim_stop_in_freeradius_detail_files():
    with start_scenario("managed-server", provider="radius", accounting="radius",
                        interim="1", user="alice") as lab:
        _all_pass(lab)
        time.sleep(1.5)
        carried = _traffic_and_hang_up(lab)
        from testbed.freeradius import values

        server = _freeradius(lab)
        deadline = time.monotonic() + 5
        while True:
            records = server.detail_records()
            kinds = [values(r, "Acct-Status-Type")[0] for r in records]
            if "Stop" in kinds or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert kinds[0] == "Start" and kinds[-1] == "Stop" and kinds.count("Start") == 1 \
            and kinds.count("Stop") == 1 and "Interim-Update" in kinds, kinds
        ids = {values(r, "Acct-Session-Id")[0] for r in records}
        assert len(ids) == 1
        stop = records[-1]
        assert [v.strip('"') for v in values(stop, "Class")] and \
            "vpnlab-alice" in json.dumps(values(stop, "Class")) or \
            "0x76706e6c61622d616c696365" in json.dumps(values(stop, "Class")).lower()
        octets_in = int(values(stop, "Acct-Input-Octets")[0])
        assert carried <= octets_in <= carried + 2000
        assert values(stop, "Acct-Terminate-Cause")[0] == "User-Request"


def _freeradius(lab):
    return lab.freeradius  # the scenario's instance (topologies/managed.py)


# -- addresses -------------------------------------------------------------------------------

def test_dhcp_obtained_addresses_come_from_dnsmasq_and_are_reused():
    import ipaddress

    with start_scenario("managed-server", addresses="dhcp", user="alice") as lab:
        _all_pass(lab)
        first = ra.status(lab, "client")["local_address"]
        low, high = (ipaddress.IPv4Address(a) for a in managed.DHCP_RANGE)
        assert low <= ipaddress.IPv4Address(first) <= high
        leases = managed.dhcp_leases(lab)
        assert first in {lease["address"] for lease in leases}
        server = ra.status(lab, "vpnsrv")["addresses"]
        assert server["source"] == "dhcp" and server["server_address"] in \
            {lease["address"] for lease in leases}
        assert lab.node("client").daemons["vpnclient"].stop() == 0
        _wait_server_event(lab, "session-down", 10)
        ra.connect(lab, "client", managed._ra_params(lab.params), user="bob")
        again = ra.status(lab, "client")["local_address"]
        assert again == first  # the address went back to the server's free leases


def test_an_exhausted_pool_and_the_port_limit_refuse_cleanly():
    for extra, why in ((dict(ports="1"), "ports are in use"),
                       (dict(pool="10.10.100.0/30"), "no address left")):
        with start_scenario("managed-server", nat="pptp-helper", clients="2",
                            **extra) as lab:
            assert managed.second_refusal(lab.params) == why
            _all_pass(lab)


def test_vpnlab_status_lists_the_connection():
    with start_scenario("managed-server", user="alice") as lab:
        _all_pass(lab)
        lab.node("client").run(["ping", "-c", "2", "-n", "-q", managed.INFRA])
        status_file = lab.run_dir / "vpnsrv-status.json"
        time.sleep(1.2)  # the status file is rewritten every second
        out = subprocess.run([sys.executable, "-m", "testbed.cli", "status", str(status_file),
                              "--json"], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        rows = json.loads(out.stdout)["connections"]
        assert len(rows) == 1
        row = rows[0]
        assert row["user"] == "alice" and row["tunnel_type"] == "pptp"
        assert row["auth"] == "mschapv2" and row["encryption"] == "mppe-128 stateless"
        assert row["policy"] == managed.PPTP_POLICY and row["bytes_in"] > 0
        assert row["address"] == ra.status(lab, "client")["local_address"]
        table = subprocess.run([sys.executable, "-m", "testbed.cli", "status",
                                str(status_file)], capture_output=True, text=True, timeout=30)
        assert "alice" in table.stdout and "USER" in table.stdout


def _wait_server_event(lab, name: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    log = lab.run_dir / "logs" / "vpnsrv-vpnserver.log"
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if line.startswith("{") and json.loads(line).get("event") == name:
                return json.loads(line)
        time.sleep(0.1)
    raise AssertionError(f"no {name} event from the server within {timeout}s")
