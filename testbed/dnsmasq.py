"""A real dnsmasq as the intranet's DHCP server, inside a lab node or any namespace host.

DHCP only (`--port=0`: no DNS), in the foreground (`-k`) under `testbed.process.Daemon`
(stopped by PID, output in the run directory), authoritative, no ping before an offer, one
range on one interface, and every file in the run directory: the lease file, the DHCP log
(`--log-dhcp`), the PID file. Readiness is the log's "DHCP, IP range" line, written once the
DHCP socket is open. dnsmasq deletes a lease from the file when the client releases it.

    server = start_dnsmasq(lab.node("dhcp"), "eth0", "10.20.0.100", "10.20.0.107")
    server.leases()   # [Lease(expiry, mac, address, hostname, client_id), ...]
    server.stop()

`host` is a lab `Node` (the daemon joins its daemons, so the lab stops it too), or anything
with `name` and `pid` (a process whose network namespace dnsmasq joins) with `run_dir` given.
"""

from __future__ import annotations

import ipaddress
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from testbed.errors import MissingTool, TestbedError
from testbed.process import Daemon

DNSMASQ = "/usr/sbin/dnsmasq"
READY = "DHCP, IP range"


class Host(Protocol):
    name: str
    pid: int


@dataclass(frozen=True, slots=True)
class Lease:
    """One line of dnsmasq's lease file: `expiry mac address hostname client-id`."""

    expiry: int  # seconds since the epoch; 0 for an infinite lease
    mac: str
    address: str
    hostname: str | None  # dnsmasq writes "*" for none
    client_id: bytes | None  # "*" for none, else hex bytes joined by ":"


def parse_leases(text: str) -> list[Lease]:
    leases = []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields or fields[0] == "duid":  # the DHCPv6 server's DUID line
            continue
        if len(fields) != 5:
            raise TestbedError(f"dnsmasq lease file line {number}: {line!r}: expected "
                               "expiry, MAC, address, hostname, client id")
        expiry, mac, address, hostname, client_id = fields
        leases.append(Lease(int(expiry), mac, address, None if hostname == "*" else hostname,
                            None if client_id == "*" else bytes.fromhex(
                                client_id.replace(":", ""))))
    return leases


@dataclass
class DnsmasqDHCP:
    daemon: Daemon
    lease_file: Path
    log_file: Path
    pid_file: Path
    interface: str
    first: str
    last: str

    def leases(self) -> list[Lease]:
        try:
            return parse_leases(self.lease_file.read_text())
        except FileNotFoundError:
            return []

    def log(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""

    def wait_leases(self, predicate: Callable[[list[Lease]], bool],
                    timeout: float = 5.0) -> list[Lease]:
        """Wait until `predicate(leases)` holds (dnsmasq writes the file after its reply)."""
        deadline = time.monotonic() + timeout
        while True:
            leases = self.leases()
            if predicate(leases) or time.monotonic() > deadline:
                return leases
            time.sleep(0.02)

    def running(self) -> bool:
        return self.daemon.running()

    def stop(self) -> int | None:
        return self.daemon.stop()


def dnsmasq_argv(interface: str, first: str, last: str, run_dir: Path, name: str,
                 lease_time: str = "1h", netmask: str | None = None) -> list[str]:
    ipaddress.IPv4Address(first), ipaddress.IPv4Address(last)  # noqa: B018 - validation
    if len(interface) > 15:
        raise TestbedError(f"interface name {interface!r}: at most 15 characters")
    dhcp_range = ",".join([first, last, *([netmask] if netmask else []), lease_time])
    return [DNSMASQ, "--keep-in-foreground", "--port=0", "--no-ping", "--conf-file=/dev/null",
            "--bind-interfaces", f"--interface={interface}", "--except-interface=lo",
            f"--dhcp-range={dhcp_range}", "--dhcp-authoritative", "--log-dhcp",
            f"--dhcp-leasefile={run_dir / f'{name}.leases'}",
            f"--log-facility={run_dir / f'{name}.log'}",
            f"--pid-file={run_dir / f'{name}.pid'}", "--user=root", "--group=root"]


def start_dnsmasq(host: Host, interface: str, first: str, last: str, *,
                  run_dir: Path | None = None, lease_time: str = "1h",
                  netmask: str | None = None, name: str = "dnsmasq",
                  timeout: float = 10.0) -> DnsmasqDHCP:
    """Start dnsmasq's DHCP server on `interface` of `host` and wait until it serves."""
    if not Path(DNSMASQ).exists() and shutil.which("dnsmasq") is None:
        raise MissingTool("dnsmasq", "apt-get install dnsmasq-base")
    lab = getattr(host, "lab", None)
    if run_dir is None:
        if lab is None or lab.run_dir is None:
            raise TestbedError(f"{host.name}: no run directory for dnsmasq's files")
        run_dir = Path(lab.run_dir) / "dhcp"
    files = run_dir / f"{host.name}-{name}"
    files.mkdir(parents=True, exist_ok=True)
    argv = dnsmasq_argv(interface, first, last, files, name, lease_time, netmask)
    server = DnsmasqDHCP(Daemon(host.name, name, host.pid, argv, files / f"{name}.out"),
                         files / f"{name}.leases", files / f"{name}.log", files / f"{name}.pid",
                         interface, first, last)
    daemons = getattr(host, "daemons", None)
    if isinstance(daemons, dict):
        daemons[name] = server.daemon  # the lab stops it with the node's other daemons
    try:
        server.daemon.wait_ready(lambda _out: READY in server.log(), timeout)
    except TestbedError:
        server.stop()
        raise TestbedError(f"dnsmasq on {host.name} ({interface}) did not start: "
                           f"{server.daemon.output()[-800:]}{server.log()[-800:]}") from None
    return server
