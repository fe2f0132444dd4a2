"""The one module that imports Mininet: namespaces, veth pairs and Linux bridges.

Mininet gives each node a shell in its own network namespace and creates veth pairs directly
inside the nodes' namespaces, so interfaces can be called eth0, eth1... in every node. Switches
are Linux bridges with no controller (no Open vSwitch on these kernels); they live in the
sandbox's network namespace, never in the root one. Mininet assigns nothing we did not ask for:
no automatic IPs, MACs or ARP entries. Everything else (addresses, routes, NAT, filters) is
configured by the lab with argv commands whose exit codes are checked.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from testbed.errors import MissingTool, TestbedError

try:
    from mininet.log import setLogLevel
    from mininet.net import Mininet
    from mininet.node import Host
    from mininet.nodelib import LinuxBridge
except ImportError:  # pragma: no cover - reported by `vpnlab doctor` and Lab.start
    Mininet = None


@dataclass(frozen=True, slots=True)
class PlannedLink:
    a: str
    b: str
    a_intf: str
    b_intf: str


class MininetNetwork:
    """Hosts and bridges of one lab; `pid(name)` gives the namespace holder for commands."""

    def __init__(self, hosts: list[str], switches: dict[str, str], links: list[PlannedLink]):
        if Mininet is None:
            raise MissingTool("Mininet's Python library", "apt-get install mininet")
        setLogLevel("error")
        self._switch_names = switches  # lab name -> bridge name
        self._port_count = {bridge: sum(name in (link.a, link.b) for link in links)
                            for name, bridge in switches.items()}
        self._net = Mininet(topo=None, build=False, controller=None, switch=LinuxBridge,
                            autoSetMacs=False, autoStaticArp=False, waitConnected=False)
        for name in hosts:
            self._net.addHost(name, cls=Host, ip=None, inNamespace=True)
        for bridge in switches.values():
            self._net.addSwitch(bridge, cls=LinuxBridge, stp=False)
        for link in links:
            self._net.addLink(self._lookup(link.a), self._lookup(link.b),
                              intfName1=link.a_intf, intfName2=link.b_intf)

    def _lookup(self, name: str) -> str:
        return self._switch_names.get(name, name)

    def start(self) -> None:
        self._net.build()
        self._net.start()

    def pid(self, name: str) -> int:
        return int(self._net[name].pid)

    def bridges(self) -> list[str]:
        return list(self._switch_names.values())

    def wait_bridges_forwarding(self, timeout: float = 10.0) -> None:
        """Readiness, not a sleep: every bridge port must reach the forwarding state."""
        deadline = time.monotonic() + timeout
        pending: list[str] = []
        while time.monotonic() < deadline:
            pending = []
            for bridge in self._switch_names.values():
                ports = list(Path(f"/sys/class/net/{bridge}/brif").iterdir())
                if len(ports) != self._port_count[bridge]:
                    pending.append(f"{bridge} has {len(ports)} of {self._port_count[bridge]} ports")
                for port in ports:
                    state = (port / "state").read_text().strip()
                    if state != "3":  # BR_STATE_FORWARDING
                        pending.append(f"{bridge}/{port.name}")
            if not pending:
                return
            time.sleep(0.02)
        raise TestbedError(f"bridge ports not forwarding after {timeout}s: {', '.join(pending)}")

    def stop(self) -> None:
        self._net.stop()


def interactive_cli(lab: object) -> None:
    """Mininet's CLI on the lab's network, plus vpnlab's commands (links, captures)."""
    from mininet.cli import CLI

    net = lab._net._net  # type: ignore[attr-defined]
    setLogLevel("output")  # the CLI prints through Mininet's log at this level

    class LabCLI(CLI):
        prompt = "vpnlab> "

        def do_linkdown(self, line: str) -> None:
            """linkdown A B: take the link between nodes A and B down (a fault)."""
            a, b = line.split()
            lab.link(a, b).down()  # type: ignore[attr-defined]

        def do_linkup(self, line: str) -> None:
            """linkup A B: bring the link between nodes A and B back up."""
            a, b = line.split()
            lab.link(a, b).up()  # type: ignore[attr-defined]

        def do_captures(self, line: str) -> None:
            """captures: list the pcap files of this lab."""
            for (node, iface), path in lab.captures.items():  # type: ignore[attr-defined]
                print(f"{node}/{iface}: {path}")

    LabCLI(net)
