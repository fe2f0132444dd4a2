"""A lab with a reference peer leaves no linux.uml process, TAP or namespace behind: after a
normal stop, and after its runner is SIGKILLed (the sandbox's PID namespace guarantees it)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conformance.plugin import start_scenario

pytestmark = pytest.mark.netns


def _procs() -> dict[int, tuple[int, str, str]]:
    """pid -> (parent, start time, command name) of every living process we can see."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] not in ("Z", "X"):
            out[int(entry.name)] = (int(fields[1]), fields[19], name)
    return out


def _below(root: int) -> set[tuple[int, str]]:
    table, found, frontier = _procs(), set(), {root}
    while frontier:
        children = {pid for pid, (ppid, _, _) in table.items() if ppid in frontier}
        found |= {(pid, table[pid][1]) for pid in children}
        frontier = children
    return found


def _alive(procs: set[tuple[int, str]]) -> set[tuple[int, str]]:
    table = _procs()
    return {(pid, start) for pid, start in procs if pid in table and table[pid][1] == start}


def _uml(procs: set[tuple[int, str]]) -> set[tuple[int, str]]:
    table = _procs()
    return {p for p in procs if p[0] in table and table[p[0]][2].startswith("linux")}


def _netns(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/ns/net")


def _anyone_in(netns: str) -> bool:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "ns" / "net") == netns:
                    return True
            except OSError:
                continue
    return False


def test_normal_stop_leaves_no_uml_tap_or_namespace():
    before = _below(os.getpid())
    with start_scenario("interop", auth="pap", encryption="none") as lab:
        peer = lab.node("peer")
        uml = _uml(_below(os.getpid()) - before)
        assert uml, "no linux.uml process while the lab runs"
        assert peer.run(["ip", "link", "show", "tap0"]).ok
        netns = _netns(peer.pid)
        assert peer.peer.run(["cat", "/proc/sys/kernel/hostname"]).stdout.strip() == "peer"
    assert _alive(uml) == set()
    assert not _anyone_in(netns), "the peer's namespace (and its TAP) is still held"
    assert _alive(_below(os.getpid()) - before) == set()


def test_sigkilled_runner_leaves_no_uml_tap_or_namespace():
    env = {k: v for k, v in os.environ.items() if k != "VPNLAB_SANDBOX"}
    up = subprocess.Popen([sys.executable, "-m", "testbed.cli", "up", "interop", "--no-cli",
                           "--param", "auth=pap", "--param", "encryption=none"],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    try:
        assert up.stdout is not None
        state = json.loads(up.stdout.readline())
        procs = _below(up.pid)
        uml = _uml(procs)
        assert uml, "no linux.uml process under the runner"
        assert "peer" in state["nodes"]
        # node PIDs are the inner sandbox's: the peer's namespace is its UML process's
        peer_ns = _netns(next(iter(uml))[0])
        os.kill(up.pid, signal.SIGKILL)
        up.wait(10)
        deadline = time.monotonic() + 15
        while (_alive(procs) or _anyone_in(peer_ns)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _alive(uml) == set(), "a linux.uml process survived its killed runner"
        assert _alive(procs) == set(), "processes of the killed lab survived"
        assert not _anyone_in(peer_ns), "the peer's namespace (and its TAP) survived"
    finally:
        if up.poll() is None:
            up.kill()
            up.wait(10)
    subprocess.run([sys.executable, "-m", "testbed.cli", "clean"], capture_output=True,
                   env=env, timeout=30)
