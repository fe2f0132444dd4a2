"""A lab leaves nothing behind: normal stop, exception, and a SIGKILLed runner."""

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
from testbed.lab import STATE_DIR

pytestmark = pytest.mark.netns


def _links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True)
    return {line.split(": ")[1].split("@")[0] for line in out.stdout.splitlines()}


def _parents() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, start time), for every living process we can see."""
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":  # a zombie is dead; only its parent has not reaped it yet
                out[int(entry.name)] = (int(fields[1]), fields[19])
    return out


def _descendants(root: int) -> set[tuple[int, str]]:
    """Processes below `root` (other xdist workers' labs are not ours to judge)."""
    table = _parents()
    found, frontier = set(), {root}
    while frontier:
        children = {pid for pid, (ppid, _) in table.items() if ppid in frontier}
        found |= {(pid, table[pid][1]) for pid in children}
        frontier = children
    return found


def _alive(procs: set[tuple[int, str]]) -> set[tuple[int, str]]:
    table = _parents()
    return {(pid, start) for pid, start in procs if table.get(pid, (0, ""))[1] == start}


def _lab_links(lab_id: str) -> set[str]:
    tag = lab_id.rsplit("-", 1)[1]
    return {name for name in _links() if name.startswith(tag)}


def test_normal_stop_and_exception_leave_nothing():
    before = _descendants(os.getpid())
    with start_scenario("internet", link="isdn-128k", clients="2") as lab:
        assert _lab_links(lab.lab_id)  # bridges exist while the lab runs
        assert _descendants(os.getpid()) - before  # node shells, captures
        state = lab.state_file
        assert state.exists()
    assert not _lab_links(lab.lab_id)
    assert not state.exists()
    assert _alive(_descendants(os.getpid()) - before) == set()
    with pytest.raises(RuntimeError), start_scenario("internet") as lab:
        state = lab.state_file
        raise RuntimeError("a failing test")
    assert not _lab_links(lab.lab_id) and not state.exists()
    assert _alive(_descendants(os.getpid()) - before) == set()


def test_sigkilled_runner_then_clean_leaves_nothing():
    """`vpnlab up --no-cli` in a sandbox of its own, SIGKILLed: the kernel reaps the lab and
    `vpnlab clean` removes its state file."""
    env = {k: v for k, v in os.environ.items() if k != "VPNLAB_SANDBOX"}
    up = subprocess.Popen([sys.executable, "-m", "testbed.cli", "up", "internet", "--no-cli"],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    assert up.stdout is not None
    line = up.stdout.readline()
    lab_id = json.loads(line)["lab"]
    state = STATE_DIR / f"{lab_id}-{up.pid}.json"
    assert state.exists()
    lab_procs = _descendants(up.pid)
    assert len(lab_procs) > 5  # unshare, the runner, node shells, tcpdumps
    os.kill(up.pid, signal.SIGKILL)
    up.wait(10)
    deadline = time.monotonic() + 10
    while _alive(lab_procs) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _alive(lab_procs) == set(), "processes of the killed lab survived"
    assert state.exists()  # only a file can outlive a SIGKILL ...
    done = subprocess.run([sys.executable, "-m", "testbed.cli", "clean"], capture_output=True,
                          text=True, env=env, timeout=30)
    assert done.returncode == 0, done.stderr
    assert not state.exists()  # ... and clean removes it


def test_vpnlab_run_exit_status_reflects_checks():
    env = {k: v for k, v in os.environ.items() if k != "VPNLAB_SANDBOX"}
    ok = subprocess.run([sys.executable, "-m", "testbed.cli", "run", "internet", "--json"],
                        capture_output=True, text=True, env=env, timeout=120)
    assert ok.returncode == 0, ok.stderr[-2000:]
    report = json.loads(ok.stdout)
    assert report["passed"] and report["checks"]
    bad = subprocess.run([sys.executable, "-m", "testbed.cli", "run", "internet",
                          "--param", "firewall=nonsense"], capture_output=True, text=True,
                         env=env, timeout=60)
    assert bad.returncode == 2 and "expected one of" in bad.stderr
