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
