"""The vpnlab pytest plugin: sandboxed runs, scenario labs as fixtures, captures on failure.

Registered through the `pytest11` entry point, so it works in the user's own suites too.
- As root, the whole pytest run (xdist workers included) re-executes itself inside vpnlab's
  sandbox: a SIGKILLed run leaves nothing behind. Set VPNLAB_NO_SANDBOX=1 to opt out (netns
  cases then skip, saying why).
- Cases marked `netns` need root and namespaces; without them they skip with the reason.
- `start_scenario(name, **params)` brings a scenario up (use it in a fixture of the scope you
  want); the lab's run directory is removed after passing tests and kept, and named in the
  report, when a test that used it failed.
- At the end of the session the plugin fails the run if a lab left a process or a state file.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed import sandbox

_labs_by_item: dict[str, list] = {}
_failed_run_dirs: set[str] = set()
_all_run_dirs: set[str] = set()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "netns: needs root and network namespaces")


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> int | None:
    """Re-run this pytest command inside a sandbox when we are root and not in one yet."""
    if (os.geteuid() == 0 and not sandbox.in_sandbox() and not _is_worker(config)
            and os.environ.get("VPNLAB_NO_SANDBOX") != "1"
            and not config.option.collectonly and not config.option.help
            and not config.option.version):
        return sandbox.reexec_in_sandbox()
    return None


def netns_skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root and network namespaces (run pytest as root)"
    if not sandbox.in_sandbox():
        return "needs vpnlab's sandbox (VPNLAB_NO_SANDBOX=1 is set)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = netns_skip_reason()
    if reason is None:
        return
    for item in items:
        if item.get_closest_marker("netns"):
            item.add_marker(pytest.mark.skip(reason=reason))


@contextlib.contextmanager
def start_scenario(name: str, **params: str) -> Iterator:
    """A scenario's lab, up with its services started, for a fixture to yield."""
    from testbed.lab import Lab
    from topologies import SCENARIOS

    os.environ.setdefault("VPNLAB_QUIET", "1")
    scenario = SCENARIOS[name]
    resolved = scenario.resolve(params)
    lab = Lab(scenario.build(resolved))
    _all_run_dirs.add(str(lab.run_dir))
    with lab:
        scenario.start(lab, resolved)
        lab.params = resolved  # type: ignore[attr-defined]
        yield lab


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        from testbed.lab import Lab

        funcargs = getattr(item, "funcargs", {})
        for value in funcargs.values():
            if isinstance(value, Lab):
                _failed_run_dirs.add(str(value.run_dir))
                report.sections.append(("vpnlab captures",
                                        f"lab {value.lab_id}: pcaps kept in "
                                        f"{value.run_dir}/captures, logs in {value.run_dir}/logs"))


def _leftover_processes() -> list[str]:
    """Processes of this sandbox other than us: something a lab did not stop."""
    me, out = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in (1, me):
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        if cmd:
            out.append(f"{entry.name}: {cmd[:120]}")
    return out


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    for run_dir in _all_run_dirs - _failed_run_dirs:
        shutil.rmtree(run_dir, ignore_errors=True)
    if _is_worker(session.config) or not sandbox.in_sandbox() or os.getpid() != 1:
        return
    from testbed.lab import STATE_DIR

    problems = _leftover_processes()
    mine = os.environ.get("VPNLAB_SUPERVISOR_PID", "-")
    for path in STATE_DIR.glob("*.json"):
        with contextlib.suppress(OSError, ValueError):
            if str(json.loads(path.read_text()).get("supervisor_pid")) == mine:
                problems.append(f"state file {path} (lab not torn down)")
    if problems:
        session.config.stash.setdefault(_LEAKS, problems)  # type: ignore[arg-type]
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


_LEAKS = pytest.StashKey[list]()


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # type: ignore[no-untyped-def]
    leaks = config.stash.get(_LEAKS, None)
    if leaks:
        terminalreporter.section("vpnlab: resources left behind", red=True)
        for line in leaks:
            terminalreporter.write_line(line)
