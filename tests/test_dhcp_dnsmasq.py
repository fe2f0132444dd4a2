"""Our DHCP address pool against a real dnsmasq (Debian's 2.90), in two network namespaces this
test creates (`unshare --net`, a veth pair; see tests/test_runtime_netns.py): dnsmasq serves a
range of 8 addresses on one end, our runtime (UDP 68 bound to the other end) leases a block of
5. dnsmasq's lease file is the oracle: our addresses, MAC and client ids are in it; released
ones leave it; the same identities get the same addresses again; the unused surplus is
released on its own; asking for more than the range gives a counted failure and `take()` None,
within seconds."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from testbed.dnsmasq import DNSMASQ, start_dnsmasq
from tests.test_runtime_netns import Namespace, join

pytestmark = pytest.mark.netns
FIRST, LAST = "10.77.0.100", "10.77.0.107"
RANGE = {f"10.77.0.{n}" for n in range(100, 108)}


def _skip_reason() -> str | None:
    if not Path(DNSMASQ).exists():
        return f"dnsmasq is not installed (Debian package dnsmasq-base): {DNSMASQ} missing"
    if shutil.which("unshare") is None or shutil.which("mnexec") is None:
        return "unshare (util-linux) or mnexec (mininet) missing"
    try:
        subprocess.run(["unshare", "--net", "true"], check=True, capture_output=True, timeout=10)
    except (subprocess.CalledProcessError, OSError) as exc:
        return f"cannot create a network namespace (needs root): {exc}"
    return None


@pytest.fixture
def dhcp_lab(tmp_path: Path):
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    server_ns = vpn_ns = server = None
    try:
        server_ns, vpn_ns = Namespace(), Namespace()
        join(server_ns, vpn_ns, ["10.77.0.1/24"], ["10.77.0.2/24"])
        server = start_dnsmasq(SimpleNamespace(name="dhcp", pid=server_ns.pid), "va0", FIRST,
                               LAST, run_dir=tmp_path, lease_time="1h")
        yield server, vpn_ns
    finally:
        if server is not None:
            server.stop()
        for ns in (vpn_ns, server_ns):
            if ns is not None:
                ns.close()


DRIVER = """
import asyncio, json, time
from testbed.dnsmasq import parse_leases
from tunnels.runtime.dhcp import DHCPAddressPool, DHCPUnavailable, interface_mac

LEASES = %(leases)r
FAST = dict(timeout=0.5, max_timeout=1.0, tries=3)

def leases(expect, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            got = parse_leases(open(LEASES).read())
        except FileNotFoundError:
            got = []
        if len(got) == expect or time.monotonic() > deadline:
            return [[l.address, l.mac, l.hostname, (l.client_id or b"").hex()] for l in got]
        time.sleep(0.02)

async def main():
    loop = asyncio.get_running_loop()
    out = {"mac": interface_mac("vb0").hex(":")}
    pool = DHCPAddressPool.open(loop, "vb0", "vpnsrv", block=5, low_water=0, **FAST)
    t0 = time.monotonic()
    await pool.ready(5, timeout=10)
    out["block_seconds"] = time.monotonic() - t0
    out["taken"] = [pool.take() for _ in range(5)]
    out["sixth"] = pool.take()
    out["leased"] = leases(5)
    out["first_counters"] = dict(pool.source.counters)
    for address in out["taken"]:
        pool.give_back(address)
    pool.close()  # DHCPRELEASE for all five
    out["after_release"] = leases(0)
    # the same identities again; only 2 may stay unused (block 2 + low water 0)
    pool = DHCPAddressPool.open(loop, "vb0", "vpnsrv", block=2, low_water=0,
                                release_after=0.3, **FAST)
    await pool.ready(5, timeout=10)
    out["again"] = sorted(pool.source.status()["free"])
    await asyncio.sleep(0.8)
    out["after_surplus_release"] = leases(2)
    out["kept"] = pool.source.status()["free"]
    # a second VPN server asks for more than the range has left (6)
    other = DHCPAddressPool.open(loop, "vb0", "vpnsrv2", block=10, low_water=0, **FAST)
    t0 = time.monotonic()
    try:
        await other.ready(10, timeout=10)
        out["exhaustion"] = "ready"
    except DHCPUnavailable as exc:
        out["exhaustion"] = str(exc)
    out["exhaustion_seconds"] = time.monotonic() - t0
    out["takes"] = [other.take() for _ in range(7)]
    out["counters"] = dict(other.source.counters)
    out["full"] = leases(8)
    other.close()
    pool.close()
    out["end"] = leases(0)
    print(json.dumps(out))

asyncio.run(main())
"""


def test_dnsmasq_leases_our_block_and_forgets_released_addresses(dhcp_lab):
    server, vpn_ns = dhcp_lab
    out = vpn_ns.python(DRIVER % {"leases": str(server.lease_file)}, timeout=40)
    mac = out["mac"]
    taken = set(out["taken"])
    assert len(taken) == 5 and taken <= RANGE and out["sixth"] is None, out
    assert out["block_seconds"] < 3, out
    # dnsmasq's own record: our MAC, one client id per address, hostname = identity
    recorded = {row[0]: row for row in out["leased"]}
    assert set(recorded) == taken
    for _, row_mac, hostname, client_id in recorded.values():
        assert row_mac == mac and bytes.fromhex(client_id) == b"\0" + hostname.encode()
    assert sorted(row[2] for row in recorded.values()) == [f"vpnsrv-{n}" for n in range(1, 6)]
    assert out["first_counters"]["acks"] == 5 and out["first_counters"]["take_failed"] == 1
    assert out["after_release"] == []  # dnsmasq deleted every released lease
    assert set(out["again"]) == taken  # the same identities got the same addresses
    assert len(out["after_surplus_release"]) == 2
    assert {row[0] for row in out["after_surplus_release"]} == set(out["kept"])
    # exhaustion: 6 of the 10 asked for; the 7th identity got no offer (dnsmasq stays
    # silent), gave up after its tries, and the 3 queued behind it with it: no hang
    assert out["exhaustion"] == ("the DHCP server reached on vb0 (255.255.255.255:67) leased "
                                 "6 of 10 addresses every acquisition was given up; last: no "
                                 "DHCPOFFER after 3 transmissions to 255.255.255.255:67")
    assert out["exhaustion_seconds"] < 6
    counters = out["counters"]
    assert counters["acquire_failed"] == 4 and counters["acks"] == 6, counters
    assert counters["take_failed"] == 1 and counters["retransmissions"] == 2
    assert sum(a is not None for a in out["takes"]) == 6 and out["takes"][-1] is None
    assert {row[0] for row in out["full"]} == RANGE
    assert {row[2] for row in out["full"]} == {"vpnsrv-4", "vpnsrv-5"} | {
        f"vpnsrv2-{n}" for n in range(1, 7)}
    assert out["end"] == [] and server.running()
    assert "DHCPRELEASE(va0)" in server.log()
