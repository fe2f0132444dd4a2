"""Sandbox bookkeeping without root: process identity for `vpnlab down/clean`, unshare argv."""

from __future__ import annotations

import os
import subprocess
import time

from testbed import sandbox


def test_process_start_identifies_living_processes_only():
    assert sandbox.process_start(os.getpid()).isdigit()
    child = subprocess.Popen(["true"])
    deadline = time.monotonic() + 5
    while sandbox.process_start(child.pid) and time.monotonic() < deadline:
        time.sleep(0.01)  # exited but not reaped: a zombie counts as dead
    assert sandbox.process_start(child.pid) == ""
    child.wait()
    assert sandbox.process_start(child.pid) == ""


def test_sandbox_argv_unshares_everything_and_kills_children():
    argv = sandbox.sandbox_argv(["python", "-m", "testbed.cli", "run", "internet"])
    assert argv[0] == "unshare"
    for flag in ("--net", "--pid", "--mount", "--fork", "--mount-proc", "--kill-child=SIGKILL"):
        assert flag in argv
    assert argv[-5:] == ["python", "-m", "testbed.cli", "run", "internet"]


def test_outside_the_sandbox_a_lab_refuses_to_start(monkeypatch):
    import pytest

    from testbed.errors import NotInSandbox
    from testbed.lab import Lab
    from topologies import SCENARIOS

    monkeypatch.delenv(sandbox.SANDBOX_ENV, raising=False)
    scenario = SCENARIOS["internet"]
    lab = Lab(scenario.build(scenario.resolve({})))
    with pytest.raises(NotInSandbox, match="sandbox"):
        lab.start()


def test_labs_of_two_sandboxes_never_share_a_run_directory(monkeypatch):
    """Lab ids repeat across sandboxes (same PIDs inside each): two runs at once must not
    write each other's status files and captures."""
    from testbed.lab import Lab
    from topologies import SCENARIOS

    scenario = SCENARIOS["internet"]
    spec = scenario.build(scenario.resolve({}))
    dirs, states = set(), set()
    for supervisor in ("4242", "4343"):
        monkeypatch.setenv("VPNLAB_SUPERVISOR_PID", supervisor)
        lab = Lab(spec)
        assert lab.run_dir is not None and lab.run_dir.name.endswith(f"-{supervisor}")
        dirs.add(lab.run_dir)
        states.add(lab.state_file)
    assert len(dirs) == 2 and len(states) == 2
