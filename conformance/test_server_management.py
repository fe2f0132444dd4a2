"""Managing the VPN server (issue 9): authentication provider (local accounts, RADIUS against
a real FreeRADIUS) x method x remote access policy outcome; timeouts from the profile and the
Access-Accept; IPCP's addresses and name servers; accounting records against what the tunnel
carried; DHCP-obtained addresses (dnsmasq's leases); ports and pool limits; `vpnlab status`.
RADIUS on the wire, fail-over included, is conformance/test_radius_wire.py.

Each case runs the `managed-server` scenario (topologies/managed.py), whose checks compare
what happened with what the chapter's policies say should happen.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from conformance.plugin import start_scenario
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
    ("erin-pap-default-policy", dict(user="erin", auth="pap", encryption="none",
                                     policies="default")),
    ("erin-chap-default-policy", dict(user="erin", auth="chap", encryption="none",
                                      policies="default")),
    ("erin-eap-md5-default-policy", dict(user="erin", auth="eap-md5", encryption="none",
                                         policies="default")),
    ("carol-l2tp-ipsec-dialin-denied", dict(user="carol", protocol="l2tp-ipsec")),
    ("alice-l2tp-ipsec-bad-password", dict(user="alice", protocol="l2tp-ipsec",
                                           password="not-her-password")),
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
    ("alice-l2tp-ipsec-bad-password", dict(user="alice", protocol="l2tp-ipsec",
                                           password="not-her-password")),
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


@pytest.mark.parametrize("timeout, reason, cause", [
    ("radius_session_timeout", "session timeout", "Session-Timeout"),
    ("radius_idle_timeout", "idle timeout", "Idle-Timeout"),
], ids=["session-timeout", "idle-timeout"])
def test_timeouts_from_the_access_accept_end_the_call(timeout, reason, cause):
    """RFC 2865 §5.27/§5.28: the Access-Accept's Session-Timeout and Idle-Timeout are applied
    (shorter than the profile's 900 s idle timeout), and the Stop names the cause (RFC 2866
    §5.10)."""
    with start_scenario("managed-server", provider="radius", accounting="radius", user="alice",
                        **{timeout: "3"}) as lab:
        _all_pass(lab)
        down = _wait_server_event(lab, "session-down", 20)
        assert reason in down["reason"], down
        stop = _freeradius_stop(lab)
        from testbed.freeradius import values

        assert values(stop, "Acct-Terminate-Cause")[0] == cause, stop
        assert 2 <= int(values(stop, "Acct-Session-Time")[0]) <= 10, stop


def _freeradius_stop(lab, timeout: float = 5.0) -> dict:
    """FreeRADIUS's detail records, once one is the Stop; that Stop."""
    from testbed.freeradius import values

    deadline = time.monotonic() + timeout
    while True:
        records = lab.freeradius.detail_records()
        stops = [r for r in records if values(r, "Acct-Status-Type")[0] == "Stop"]
        if stops:
            return stops[-1]
        if time.monotonic() > deadline:
            raise AssertionError(f"no Stop in FreeRADIUS's detail files within {timeout}s: "
                                 f"{[values(r, 'Acct-Status-Type') for r in records]}")
        time.sleep(0.2)


# -- accounting ----------------------------------------------------------------------------

def _traffic_and_hang_up(lab, count=5, size=200):
    res = lab.node("client").run(["ping", "-c", str(count), "-i", "0.2", "-s", str(size), "-n",
                                  "-q", managed.INFRA], timeout=20)
    assert res.ok, res.stdout + res.stderr
    assert lab.node("client").daemons["vpnclient"].stop() == 0
    _wait_server_event(lab, "session-down", 10)
    return count * (size + 28)  # ICMP echo datagrams each way (IP 20 + ICMP 8 + data)


PROTOCOLS = pytest.mark.parametrize("protocol", ["pptp", "l2tp-ipsec"])
PINGS, PING_SIZE = 5, 200


@PROTOCOLS
def test_local_accounting_records_one_start_and_one_stop_with_the_traffic(protocol):
    with start_scenario("managed-server", accounting="local", user="alice",
                        protocol=protocol) as lab:
        _all_pass(lab)
        carried = _traffic_and_hang_up(lab, PINGS, PING_SIZE)
        log = lab.run_dir / managed.ACCOUNTING_LOG
        records = [json.loads(line) for line in log.read_text().splitlines()]
        assert [r["event"] for r in records] == ["start", "stop"], records
        start, stop = records
        assert stop["session_id"] == start["session_id"] and stop["username"] == "alice"
        assert stop["tunnel_type"] == ("pptp" if protocol == "pptp" else "l2tp")
        assert stop["framed_address"] == start["framed_address"] is not None
        for field in ("input_octets", "output_octets"):
            assert carried <= stop[field] <= carried + 2000, (field, stop[field], carried)
        for field in ("input_packets", "output_packets"):
            # the echoes, the checks' few probes
            assert PINGS <= stop[field] <= PINGS + 20, (field, stop[field])
        assert 0 < stop["session_time"] < 60
        assert stop["terminate_cause"] == "user-request", stop


@PROTOCOLS
def test_radius_accounting_start_interim_stop_in_freeradius_detail_files(protocol):
    with start_scenario("managed-server", provider="radius", accounting="radius",
                        interim="1", user="alice", protocol=protocol) as lab:
        _all_pass(lab)
        time.sleep(1.5)
        carried = _traffic_and_hang_up(lab, PINGS, PING_SIZE)
        from testbed.freeradius import values

        stop = _freeradius_stop(lab)
        records = lab.freeradius.detail_records()
        kinds = [values(r, "Acct-Status-Type")[0] for r in records]
        assert kinds[0] == "Start" and kinds[-1] == "Stop" and kinds.count("Start") == 1 \
            and kinds.count("Stop") == 1 and "Interim-Update" in kinds, kinds
        assert len({values(r, "Acct-Session-Id")[0] for r in records}) == 1
        # the Access-Accept's Class, echoed unchanged (RFC 2865 §5.25)
        classes = [v.strip('"').lower() for v in values(stop, "Class")]
        assert classes in (["vpnlab-alice"], ["0x" + b"vpnlab-alice".hex()]), classes
        tunnel = values(stop, "Tunnel-Type") or values(stop, "Tunnel-Type:0")
        assert tunnel == ["PPTP" if protocol == "pptp" else "L2TP"], stop
        for attr in ("Acct-Input-Octets", "Acct-Output-Octets"):
            assert carried <= int(values(stop, attr)[0]) <= carried + 2000, (attr, stop)
        for attr in ("Acct-Input-Packets", "Acct-Output-Packets"):
            assert PINGS <= int(values(stop, attr)[0]) <= PINGS + 20, (attr, stop)
        assert values(stop, "Acct-Terminate-Cause")[0] == "User-Request"


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
        # the server's own address and one block of dhcp_block (4) for callers, each under a
        # client identity of its own, as RRAS leases them
        assert len(leases) == 1 + 4 and len({lease["client_id"] for lease in leases}) == 5, \
            leases
        server = ra.status(lab, "vpnsrv")["addresses"]
        assert server["source"] == "dhcp" and server["server_address"] in \
            {lease["address"] for lease in leases}
        assert lab.node("client").daemons["vpnclient"].stop() == 0
        _wait_server_event(lab, "session-down", 10)
        ra.connect(lab, "client", managed._ra_params(lab.params), user="bob")
        again = ra.status(lab, "client")["local_address"]
        assert again == first  # the address went back to the server's free leases
        # stopping the server releases every lease it holds (DHCPRELEASE, RFC 2131 §4.4.6):
        # dnsmasq drops them from its lease file
        held = {lease["address"] for lease in managed.dhcp_leases(lab)}
        assert lab.node("vpnsrv").daemons["vpnserver"].stop() == 0
        deadline = time.monotonic() + 5
        while held & {lease["address"] for lease in managed.dhcp_leases(lab)} and \
                time.monotonic() < deadline:
            time.sleep(0.1)
        assert not held & {lease["address"] for lease in managed.dhcp_leases(lab)}, \
            (held, managed.dhcp_leases(lab))


def _ipcp_from(lab, source: str) -> list:
    """The IPCP packets `source` sent inside PPTP's GRE, decoded by scapy (IPCP is never
    MPPE-encrypted: RFC 3078 encrypts protocol 0x0021 datagrams only)."""
    from scapy.layers.ppp import PPP, PPP_IPCP

    from conformance import pptp_wire

    out = []
    for src, raw in pptp_wire.gre(lab):
        payload = pptp_wire.gre_fields(raw)["payload"]
        if src == source and payload:
            frame = PPP(payload)
            if frame.haslayer(PPP_IPCP):
                out.append(frame[PPP_IPCP])
    return out


@pytest.mark.parametrize("params", [dict(user="frank"), dict(user="alice", addresses="dhcp")],
                         ids=["static-address-of-the-account", "dhcp-obtained"])
def test_ipcp_gives_the_address_and_the_name_servers_on_the_wire(params):
    """RFC 1332 §3.3 and RFC 1877: the server's Configure-Request names its own address (the
    virtual interface's), its Configure-Ack of the client's last request carries the address
    the client got (the account's static one, or one leased from dnsmasq), the DNS and the
    WINS servers of its configuration."""
    with start_scenario("managed-server", **params) as lab:
        _all_pass(lab)
        client = ra.status(lab, "client")
        addresses = ra.status(lab, "vpnsrv")["addresses"]
        if params["user"] == "frank":
            assert client["local_address"] == managed.STATIC_ADDRESS
        server_ip = lab.address("vpnsrv", "isp")
        sent = _ipcp_from(lab, server_ip)
        requests = [p for p in sent if p.code == 1]
        acks = [p for p in sent if p.code == 2]
        assert requests and acks, [p.code for p in sent]
        own = {o.type: o.data for o in requests[-1].options}
        assert own == {3: addresses["server_address"]}, own
        given = {o.type: o.data for o in acks[-1].options}
        assert given == {3: client["local_address"], 129: "10.10.0.53", 130: "10.10.0.54"}, \
            given


@pytest.mark.parametrize("protocol", ["pptp", "l2tp-ipsec"])
@pytest.mark.parametrize("extra, why", [(dict(ports="1"), "ports are in use"),
                                        (dict(pool="10.10.100.0/30"), "no address left")],
                         ids=["port-limit", "pool-exhausted"])
def test_an_exhausted_pool_and_the_port_limit_refuse_cleanly(protocol, extra, why):
    """The second caller (behind the same NAT) is refused with the reason in the CDN and the
    server's status, and the first one keeps its tunnel."""
    with start_scenario("managed-server", nat="pptp-helper", clients="2", protocol=protocol,
                        **extra) as lab:
        assert managed.second_refusal(lab.params) == why
        _all_pass(lab)


def test_ports_are_counted_per_tunnel_type():
    """With every PPTP port taken, an L2TP/IPsec caller still gets one of the L2TP ports."""
    with start_scenario("managed-server", nat="pptp-helper", clients="2", ports="1",
                        l2tp_ports="4", protocol2="l2tp-ipsec") as lab:
        assert managed.second_refusal(lab.params) is None
        _all_pass(lab)
        ports = ra.status(lab, "vpnsrv")["ports"]
        assert ports["pptp"]["in_use"] == 1 and ports["l2tp"]["in_use"] == 1, ports


@PROTOCOLS
def test_vpnlab_status_lists_the_connection(protocol):
    with start_scenario("managed-server", user="alice", protocol=protocol) as lab:
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
        if protocol == "pptp":
            assert row["tunnel_type"] == "pptp" and row["encryption"] == "mppe-128 stateless"
            assert row["policy"] == managed.PPTP_POLICY
        else:
            assert row["tunnel_type"] == "l2tp" and row["encryption"] == "esp 3des-cbc", row
            assert row["policy"] == managed.L2TP_POLICY
        assert row["user"] == "alice" and row["auth"] == "mschapv2" and row["bytes_in"] > 0
        assert row["bytes_out"] > 0 and row["duration"] >= 1 and row["peer"], row
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
