"""A running lab: nodes in namespaces, links, NAT, filters, captures, daemons, faults.

`Lab(spec)` is a context manager. Bring-up is a list of named steps (so a person sees which one
failed); every resource is recorded as it is made and torn down in reverse in `finally`. The lab
runs inside the sandbox (`testbed.sandbox`), so even a SIGKILLed runner leaves nothing behind:
the kernel frees the namespaces. Shaped links get a hidden link namespace between their ends
(design.md: never shape on a sender's own egress).
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from testbed import shaping
from testbed.backend_mininet import MininetNetwork, PlannedLink
from testbed.errors import TestbedError
from testbed.model import RULESETS, Direction, LabSpec, LinkSpec, NodeKind, NodeSpec
from testbed.process import Daemon, Ready, Result, in_namespace, run
from testbed.refpeer import RefPeer
from testbed.sandbox import prepare_sandbox, require_sandbox

STATE_DIR = Path(os.environ.get("VPNLAB_STATE_DIR", "/run/vpnlab/labs"))
RUNS_DIR = Path(os.environ.get("VPNLAB_RUNS_DIR", "/var/tmp/vpnlab"))
_counter = itertools.count()
_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def _b36(n: int, width: int) -> str:
    out = ""
    for _ in range(width):
        n, d = divmod(n, 36)
        out = _B36[d] + out
    return out


def say(message: str) -> None:
    """Progress for a person, on stderr (stdout is for reports and JSON)."""
    if os.environ.get("VPNLAB_QUIET") != "1":
        print(f"vpnlab: {message}", file=sys.stderr, flush=True)


class Node:
    """One node of a running lab: commands and daemons in its namespaces."""

    def __init__(self, lab: Lab, spec: NodeSpec, pid: int):
        self.lab = lab
        self.spec = spec
        self.name = spec.name
        self.pid = pid
        self.daemons: dict[str, Daemon] = {}

    def run(self, argv: list[str], timeout: float = 30.0, check: bool = False,
            input: str | None = None) -> Result:
        return run(self.name, self.pid, argv, timeout=timeout, check=check, input=input)

    def python(self, module: str, *args: str, timeout: float = 30.0, check: bool = False) -> Result:
        return self.run([sys.executable, "-m", module, *args], timeout=timeout, check=check)

    def start_daemon(self, name: str, argv: list[str], ready: Ready = None,
                     timeout: float = 15.0, env: dict[str, str] | None = None) -> Daemon:
        if name in self.daemons and self.daemons[name].running():
            raise TestbedError(f"{self.name}: a daemon named {name!r} is already running")
        log = self.lab.run_dir / "logs" / f"{self.name}-{name}.log"
        daemon = Daemon(self.name, name, self.pid, argv, log, env=env)
        self.daemons[name] = daemon
        daemon.wait_ready(ready, timeout)
        return daemon

    def kill_daemon(self, name: str, sig: int = signal.SIGKILL) -> None:
        """A fault: the daemon dies without its own cleanup."""
        self.daemons[name].send_signal(sig)

    def popen(self, argv: list[str], **kwargs: object) -> subprocess.Popen:
        return subprocess.Popen(in_namespace(self.pid, argv), **kwargs)  # type: ignore[arg-type]

    def address(self, peer: str | None = None) -> str:
        return self.lab.spec.address(self.name, peer)

    @property
    def peer(self) -> RefPeer:
        """A refpeer node's user-mode Linux instance (commands inside, logs, power-off)."""
        try:
            return self.lab.peers[self.name]
        except KeyError:
            raise TestbedError(f"{self.name} is not a reference peer") from None

    def interface(self, peer: str) -> str:
        return self.lab.spec.interface(self.name, peer)


@dataclass
class LinkHandle:
    """A link at run time, for faults: down/up/flap and shape changes."""

    lab: Lab
    spec: LinkSpec
    link_node: str | None  # the hidden link namespace, when shaped

    def _ends(self) -> list[tuple[Node, str]]:
        a, b = self.lab.node(self.spec.a), self.lab.node(self.spec.b)
        ends = []
        for node, peer in ((a, self.spec.b), (b, self.spec.a)):
            if node.spec.kind is not NodeKind.SWITCH:
                ends.append((node, node.interface(peer)))
        return ends

    def set_state(self, up: bool) -> None:
        for node, iface in self._ends():
            node.run(["ip", "link", "set", iface, "up" if up else "down"], check=True)

    def down(self) -> None:
        self.set_state(False)

    def up(self) -> None:
        self.set_state(True)

    def flap(self, down_for: float = 1.0) -> None:
        self.down()
        time.sleep(down_for)
        self.up()

    def cut(self, cut: bool = True) -> None:
        """Drop everything silently, carrier still up (a failure somewhere in the Internet, not
        an unplugged cable): what keepalives exist to notice."""
        if self.link_node is None or self.link_node not in self.lab._wires:
            raise TestbedError(f"link {self.spec.label}: cut() needs a shaped link (the wire)")
        from testbed.wire import send_wire_control

        send_wire_control(str(self.lab.run_dir / f"{self.link_node}.ctl"), down=cut)

    def restore(self) -> None:
        self.cut(False)

    def stats(self) -> dict:
        """The wire's counters per direction (forwarded, lost, overflow, queued)."""
        if self.link_node is None or self.link_node not in self.lab._wires:
            raise TestbedError(f"link {self.spec.label}: no wire on this link")
        from testbed.wire import send_wire_control

        return send_wire_control(str(self.lab.run_dir / f"{self.link_node}.ctl"))

    def set_shape(self, shape: shaping.LinkShape) -> None:
        if self.link_node is None:
            raise TestbedError(f"link {self.spec.label} was built unshaped; give it a shape "
                               "(even `ethernet`) in the spec to change it at run time")
        self.lab._apply_shape(self.link_node, shape)


@dataclass
class _Capture:
    node: str
    iface: str
    path: Path
    proc: subprocess.Popen


@dataclass
class Lab:
    spec: LabSpec
    run_dir: Path | None = None
    capture: bool = True
    lab_id: str = field(init=False)
    nodes: dict[str, Node] = field(init=False, default_factory=dict)
    links: dict[tuple[str, str], LinkHandle] = field(init=False, default_factory=dict)
    captures: dict[tuple[str, str], Path] = field(init=False, default_factory=dict)
    peers: dict[str, RefPeer] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        tag = _b36(os.getpid(), 3) + _b36(next(_counter), 1)
        self.lab_id = f"{self.spec.name}-{tag}"
        self._tag = tag
        # lab ids repeat across sandboxes (PIDs start at 1 in each): the supervisor's root-
        # namespace PID makes the state file and the run directory unique on the machine (two
        # runs at once shared a run directory, status files included, within the same second)
        supervisor = os.environ.get("VPNLAB_SUPERVISOR_PID", str(os.getpid()))
        if self.run_dir is None:
            self.run_dir = RUNS_DIR / (f"{self.lab_id}-{time.strftime('%Y%m%d-%H%M%S')}"
                                       f"-{supervisor}")
        self._net: MininetNetwork | None = None
        self._captures: list[_Capture] = []
        self._undo: list[tuple[str, Callable[[], None]]] = []
        self._wires: dict[str, Daemon] = {}
        self.state_file = STATE_DIR / f"{self.lab_id}-{supervisor}.json"

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> Lab:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        require_sandbox()
        assert self.run_dir is not None
        t0 = time.monotonic()
        try:
            self._step("preparing the sandbox", prepare_sandbox)
            self._step("creating namespaces, links and bridges", self._build)
            self._step("configuring addresses and routes", self._configure_addresses)
            self._step("configuring NAT and packet filters", self._configure_nat_and_filters)
            self._step("shaping links", self._configure_shapes)
            if self.capture:
                self._step("starting captures", self._start_captures)
            self._step("waiting for bridge ports to forward", self._net_ready)
            if any(n.kind is NodeKind.REFPEER for n in self.spec.nodes):
                self._step("booting reference peers", self._boot_peers)
            self._write_state()
        except BaseException:
            self.stop()
            raise
        say(f"lab {self.lab_id} up in {time.monotonic() - t0:.2f}s (run dir {self.run_dir})")

    def _step(self, name: str, fn: Callable[[], None]) -> None:
        say(name)
        try:
            fn()
        except TestbedError as exc:
            raise TestbedError(f"{name}: {exc}") from exc

    def stop(self) -> None:
        """Tear down in reverse; idempotent; never raises for a resource already gone."""
        errors = []
        for node in reversed(list(self.nodes.values())):
            for daemon in reversed(list(node.daemons.values())):
                daemon.stop()
        for wire in self._wires.values():
            wire.stop()
        self._wires.clear()
        self._stop_captures()
        while self._undo:
            what, undo = self._undo.pop()
            try:
                undo()
            except Exception as exc:  # noqa: BLE001 - teardown goes on; reported below
                errors.append(f"{what}: {exc}")
        self.state_file.unlink(missing_ok=True)
        if errors:
            say("teardown problems: " + "; ".join(errors))

    # -- bring-up steps ----------------------------------------------------------------------
    def _plan(self) -> tuple[list[str], dict[str, str], list[PlannedLink], dict[str, str]]:
        hosts = [n.name for n in self.spec.nodes if n.kind is not NodeKind.SWITCH]
        switches = {n.name: f"{self._tag}b{i}" for i, n in enumerate(
            s for s in self.spec.nodes if s.kind is NodeKind.SWITCH)}
        planned: list[PlannedLink] = []
        link_nodes: dict[str, str] = {}
        port = itertools.count()

        def end_name(node: str, peer: str) -> str:
            if node in switches:
                # Mininet's LinuxBridge enslaves only ports whose name contains its own
                return f"{switches[node]}-{next(port)}"
            return self.spec.interface(node, peer)

        for i, link in enumerate(self.spec.links):
            a_if, b_if = end_name(link.a, link.b), end_name(link.b, link.a)
            if shaping.needs_link_namespace(link.shape):
                hidden = f"{self._tag}l{i}"
                hosts.append(hidden)
                link_nodes[link.label] = hidden
                planned.append(PlannedLink(link.a, hidden, a_if, "la"))
                planned.append(PlannedLink(hidden, link.b, "lb", b_if))
            else:
                planned.append(PlannedLink(link.a, link.b, a_if, b_if))
        return hosts, switches, planned, link_nodes

    def _build(self) -> None:
        hosts, switches, planned, link_nodes = self._plan()
        self._link_nodes = link_nodes
        net = MininetNetwork(hosts, switches, planned)
        self._undo.append(("stopping Mininet", net.stop))
        self._net = net
        net.start()
        specs = {n.name: n for n in self.spec.nodes}
        for name in hosts:
            spec = specs.get(name) or NodeSpec(name="link", description="link namespace")
            self.nodes[name] = Node(self, spec, net.pid(name))
        for node in self.spec.nodes:
            if node.kind is NodeKind.SWITCH:
                self.nodes[node.name] = Node(self, node, os.getpid())
        for link in self.spec.links:
            handle = LinkHandle(self, link, link_nodes.get(link.label))
            self.links[(link.a, link.b)] = handle
            self.links[(link.b, link.a)] = handle

    def _configure_addresses(self) -> None:
        for node in self.spec.nodes:
            if node.kind in (NodeKind.SWITCH, NodeKind.REFPEER):
                continue  # a refpeer's address and routes are configured inside its UML
            n = self.nodes[node.name]
            n.run(["ip", "link", "set", "lo", "up"], check=True)
            for link in self.spec.links_of(node.name):
                peer = link.b if link.a == node.name else link.a
                iface = self.spec.interface(node.name, peer)
                cidr = link.a_address if link.a == node.name else link.b_address
                if cidr:
                    n.run(["ip", "addr", "add", cidr, "dev", iface], check=True)
                n.run(["ip", "link", "set", iface, "up"], check=True)
            forward = "1" if node.kind.forwards else "0"
            n.run(["sysctl", "-q", "-w", f"net.ipv4.ip_forward={forward}"], check=True)
            for route in node.routes:
                n.run(["ip", "route", "replace", route.destination, "via", route.via], check=True)

    def _configure_nat_and_filters(self) -> None:
        for node in self.spec.nodes:
            n = self.nodes.get(node.name)
            if node.kind is NodeKind.NAT_ROUTER and n is not None and node.nat_outside:
                out = self.spec.interface(node.name, node.nat_outside)
                n.run(["iptables", "-t", "nat", "-A", "POSTROUTING", "-o", out, "-j",
                       "MASQUERADE"], check=True)
                if node.pptp_helper:
                    # Automatic helper assignment is gone from the kernel: assign explicitly.
                    n.run(["iptables", "-t", "raw", "-A", "PREROUTING", "-p", "tcp", "--dport",
                           "1723", "-j", "CT", "--helper", "pptp"], check=True)
            if node.kind is NodeKind.FIREWALL and n is not None:
                for f in node.filters:
                    for argv in filter_commands(self.spec.interface(node.name, f.peer),
                                                f.direction, f.ruleset):
                        n.run(argv, check=True)

    def _configure_shapes(self) -> None:
        for link in self.spec.links:
            hidden = self._link_nodes.get(link.label)
            if hidden is None:
                continue
            n = self.nodes[hidden]
            for iface in ("la", "lb"):
                n.run(shaping.offload_off_argv(iface), check=False)
                n.run(["ip", "link", "set", iface, "up"], check=True)
            for node_name, peer in ((link.a, link.b), (link.b, link.a)):
                if self.spec.node(node_name).kind is not NodeKind.SWITCH:
                    self.nodes[node_name].run(
                        shaping.offload_off_argv(self.spec.interface(node_name, peer)))
            assert link.shape is not None
            self._apply_shape(hidden, link.shape)

    def _apply_shape(self, hidden: str, shape: shaping.LinkShape) -> None:
        """Rate with tbf and impairments with netem where the kernel has it, otherwise all in
        the userspace wire; the wire is restarted with the new shape (a brief outage)."""
        n = self.nodes[hidden]
        netem = shaping.probe_netem()
        control = str(self.run_dir / f"{hidden}.ctl")
        if hidden in self._wires and self._wires[hidden].running():
            from testbed.wire import send_wire_control

            send_wire_control(control, **shaping.wire_control(shape))  # every field
            return
        wire = shaping.wire_argv(shape, "la", "lb", control, netem)
        if wire is None:
            # netem (or no shaping): a bridge inside the link namespace and qdiscs on its egress
            if not n.run(["ip", "link", "show", "br0"]).ok:
                n.run(["ip", "link", "add", "br0", "type", "bridge", "forward_delay", "0"],
                      check=True)
                for iface in ("la", "lb"):
                    n.run(["ip", "link", "set", iface, "master", "br0"], check=True)
                n.run(["ip", "link", "set", "br0", "up"], check=True)
            for argv in shaping.tc_commands(shape, "la", "lb", netem):
                n.run(argv, check=True)
        else:
            self._wires[hidden] = n.start_daemon("wire", wire, ready=r"^ready$", timeout=10)

    def _start_captures(self) -> None:
        assert self.run_dir is not None
        cap_dir = self.run_dir / "captures"
        cap_dir.mkdir(parents=True, exist_ok=True)
        for node in self.spec.nodes:
            if node.kind is NodeKind.SWITCH:
                continue
            for peer in self.spec.neighbours(node.name):
                iface = self.spec.interface(node.name, peer)
                path = cap_dir / f"{node.name}-{iface}.pcap"
                self._start_capture(node.name, iface, path)

    def _start_capture(self, node: str, iface: str, path: Path) -> None:
        n = self.nodes[node]
        proc = n.popen(["tcpdump", "-i", iface, "-n", "-U", "--immediate-mode", "-Z", "root",
                        "-s", "0", "-w", str(path)], stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, start_new_session=True)
        self._captures.append(_Capture(node, iface, path, proc))
        self.captures[(node, iface)] = path
        assert proc.stderr is not None
        line = proc.stderr.readline().decode(errors="replace")  # "listening on ..." = ready
        if "listening on" not in line:
            raise TestbedError(f"tcpdump on {node}/{iface} failed: {line.strip()}")

    def _stop_captures(self) -> None:
        for cap in self._captures:
            if cap.proc.poll() is None:
                cap.proc.send_signal(signal.SIGINT)
        for cap in self._captures:
            try:
                cap.proc.wait(5)
            except subprocess.TimeoutExpired:
                cap.proc.kill()
                cap.proc.wait(5)
            if cap.proc.stderr:
                cap.proc.stderr.close()
        self._captures.clear()

    def _boot_peers(self) -> None:
        """Every reference peer boots at once; each is stopped (power-off, then by PID) in
        teardown, before its namespace goes."""
        assert self.run_dir is not None
        for node in self.spec.nodes:
            if node.kind is not NodeKind.REFPEER:
                continue
            assert node.peer is not None
            link = self.spec.links_of(node.name)[0]
            address = link.a_address if link.a == node.name else link.b_address
            peer = RefPeer(node.name, node.peer, self.nodes[node.name].pid,
                           self.run_dir / "logs" / f"{node.name}-uml", address,
                           [(r.destination, r.via) for r in node.routes])
            self._undo.append((f"stopping reference peer {node.name}", peer.stop))
            self.peers[node.name] = peer
            peer.start()
        for name, peer in self.peers.items():
            say(f"reference peer {name} ({peer.spec.software}) ready in "
                f"{peer.wait_ready():.2f}s")

    def _net_ready(self) -> None:
        assert self._net is not None
        self._net.wait_bridges_forwarding()

    def _write_state(self) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        state = {
            "lab": self.lab_id,
            "scenario": self.spec.name,
            "supervisor_pid": int(os.environ.get("VPNLAB_SUPERVISOR_PID", "0")),
            "supervisor_start": os.environ.get("VPNLAB_SUPERVISOR_START", ""),
            "run_dir": str(self.run_dir),
            "nodes": [n.name for n in self.spec.nodes],
            "captures": {f"{k[0]}/{k[1]}": str(v) for k, v in self.captures.items()},
            "peers": {name: str(peer.state) for name, peer in self.peers.items()},
            "started": time.time(),
        }
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        tmp.replace(self.state_file)

    # -- access ------------------------------------------------------------------------------
    def node(self, name: str) -> Node:
        try:
            return self.nodes[name]
        except KeyError:
            raise TestbedError(f"lab {self.lab_id} has no node {name!r}") from None

    def link(self, a: str, b: str) -> LinkHandle:
        try:
            return self.links[(a, b)]
        except KeyError:
            raise TestbedError(f"lab {self.lab_id} has no link {a}-{b}") from None

    def capture_path(self, node: str, peer: str) -> Path:
        return self.captures[(node, self.spec.interface(node, peer))]

    def address(self, node: str, peer: str | None = None) -> str:
        return self.spec.address(node, peer)


def filter_commands(iface: str, direction: Direction, ruleset: str) -> list[list[str]]:
    """iptables argv for one interface filter: listed protocols pass, the rest is dropped.

    Inbound filters match destination ports of packets arriving on the interface, outbound
    filters source ports of packets leaving it, as a router's interface packet filters do.
    """
    rules = RULESETS[ruleset]
    if rules is None:
        return []
    chain = f"vf-{iface}-{direction.value}"
    match_if = ["-i", iface] if direction is Direction.IN else ["-o", iface]
    port_opt = "--dport" if direction is Direction.IN else "--sport"
    argv = [["iptables", "-N", chain]]
    for proto, port in rules:
        rule = ["iptables", "-A", chain, "-p", proto]
        if port is not None:
            rule += [port_opt, str(port)]
        argv.append(rule + ["-j", "ACCEPT"])
    argv.append(["iptables", "-A", chain, "-j", "DROP"])
    hooks = ("FORWARD", "INPUT") if direction is Direction.IN else ("FORWARD", "OUTPUT")
    for hook in hooks:
        argv.append(["iptables", "-A", hook, *match_if, "-j", chain])
    return argv
