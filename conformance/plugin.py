"""The vpnlab pytest plugin: sandboxed runs, scenario labs as fixtures, captures on failure.

Registered through the `pytest11` entry point, so it works in the user's own suites too.
- As root, the whole pytest run (xdist workers included) re-executes itself inside vpnlab's
  sandbox: a SIGKILLed run leaves nothing behind. Set VPNLAB_NO_SANDBOX=1 to opt out (netns
  cases then skip, saying why).
- Cases marked `netns` need root and namespaces; without them they skip with the reason.
- `start_scenario(name, **params)` brings a scenario up (use it in a fixture of the scope you
  want); or mark a test/module `@pytest.mark.scenario("internet", firewall="pptp")` and take
  the `scenario_lab` fixture (one lab per module and parameter set); or `lab_factory(name,
  **params)` for labs torn down at the end of the test. `captures` decodes pcaps with scapy
  and tshark. A failing test's pcaps and logs are copied to results/<test>/ and named in the
  report; run directories of passing runs are removed.
- The supervisor compares the root namespace's interfaces before and after the run.
- At the end of the session the plugin fails the run if a lab left a process or a state file.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed import sandbox

_labs_by_item: dict[str, list] = {}
_live_labs: list = []
_current_item: list[str] = [""]
_failed_run_dirs: set[str] = set()
_all_run_dirs: set[str] = set()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "netns: needs root and network namespaces")
    config.addinivalue_line("markers", "scenario(name, **params): the lab `scenario_lab` gives")


def results_dir(config: pytest.Config) -> Path:
    return Path(os.environ.get("VPNLAB_RESULTS_DIR", str(config.rootpath / "results")))


def _root_links() -> set[str]:
    """Interface names of the namespace we are in (the root one, for the supervisor)."""
    import subprocess

    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True,
                         timeout=10).stdout
    return {line.split(": ")[1].split("@")[0] for line in out.splitlines() if ": " in line}


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> int | None:
    """Re-run this pytest command inside a sandbox when we are root and not in one yet."""
    if (os.geteuid() == 0 and not sandbox.in_sandbox() and not _is_worker(config)
            and os.environ.get("VPNLAB_NO_SANDBOX") != "1"
            and not config.option.collectonly and not config.option.help
            and not config.option.version):
        before = _root_links()
        status = sandbox.reexec_in_sandbox()
        after = _root_links()
        if before != after:
            print(f"vpnlab: the root network namespace changed during the run: added "
                  f"{sorted(after - before)}, removed {sorted(before - after)}", file=sys.stderr)
            return status or int(pytest.ExitCode.TESTS_FAILED)
        return status
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
    _labs_by_item.setdefault(_current_item[0], []).append(lab)
    with lab:
        _live_labs.append(lab)
        try:
            scenario.start(lab, resolved)
            lab.params = resolved  # type: ignore[attr-defined]
            yield lab
        finally:
            _live_labs.remove(lab)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    _current_item[0] = item.nodeid


@pytest.fixture
def lab_factory() -> Iterator:
    """`lab_factory(name, **params)`: a scenario's lab, torn down when the test ends."""
    with contextlib.ExitStack() as stack:
        yield lambda name, **params: stack.enter_context(start_scenario(name, **params))


class _ScenarioCache:
    def __init__(self) -> None:
        self.stack = contextlib.ExitStack()
        self.labs: dict[tuple, object] = {}

    def get(self, name: str, params: dict[str, str]) -> object:
        key = (name, tuple(sorted(params.items())))
        if key not in self.labs:
            self.labs[key] = self.stack.enter_context(start_scenario(name, **params))
        return self.labs[key]


@pytest.fixture(scope="module")
def _vpnlab_module_labs() -> Iterator[_ScenarioCache]:
    cache = _ScenarioCache()
    with cache.stack:
        yield cache


@pytest.fixture
def scenario_lab(request: pytest.FixtureRequest, _vpnlab_module_labs: _ScenarioCache) -> object:
    """The lab of the nearest `@pytest.mark.scenario(name, **params)`, shared by the tests of
    a module that ask for the same scenario and parameters."""
    marker = request.node.get_closest_marker("scenario")
    if marker is None or not marker.args:
        raise pytest.UsageError(f"{request.node.nodeid}: scenario_lab needs "
                                "@pytest.mark.scenario(NAME, **params)")
    params = {k: str(v) for k, v in marker.kwargs.items()}
    return _vpnlab_module_labs.get(marker.args[0], params)


class Captures:
    """Decode a lab's pcaps with the independent decoders (never tunnels' own codecs)."""

    def path(self, lab, node: str, peer: str) -> Path:  # type: ignore[no-untyped-def]
        return lab.capture_path(node, peer)

    def scapy(self, lab, node: str, peer: str) -> list:  # type: ignore[no-untyped-def]
        from testbed import pcap

        return pcap.read(lab.capture_path(node, peer))

    def wait_for(self, lab, node: str, peer: str, predicate, timeout: float = 2.0) -> list:  # type: ignore[no-untyped-def]
        from testbed import pcap

        return pcap.wait_for(lab.capture_path(node, peer), predicate, timeout)

    def tshark_json(self, lab, node: str, peer: str, display_filter: str = "") -> list[dict]:  # type: ignore[no-untyped-def]
        from testbed import pcap

        return pcap.tshark_json(lab.capture_path(node, peer), display_filter)

    def tshark_fields(self, lab, node: str, peer: str, fields: list[str],  # type: ignore[no-untyped-def]
                      display_filter: str = "") -> list[list[str]]:
        from testbed import pcap

        return pcap.tshark_fields(lab.capture_path(node, peer), fields, display_filter)


@pytest.fixture(scope="session")
def captures() -> Captures:
    return Captures()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        from testbed.lab import Lab

        labs = [v for v in getattr(item, "funcargs", {}).values() if isinstance(v, Lab)]
        labs += _labs_by_item.get(item.nodeid, []) + _live_labs
        seen: set[str] = set()
        for lab in labs:
            if lab.lab_id in seen:
                continue
            seen.add(lab.lab_id)
            _failed_run_dirs.add(str(lab.run_dir))
            kept = _keep_results(item, lab)
            report.sections.append(("vpnlab captures",
                                    f"lab {lab.lab_id}: pcaps and logs kept in {kept} "
                                    f"(run dir {lab.run_dir})"))


def _keep_results(item: pytest.Item, lab) -> Path:  # type: ignore[no-untyped-def]
    """Copy the lab's captures and logs (as written so far: tcpdump -U) under results/."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in item.nodeid)
    dest = results_dir(item.config) / safe / lab.lab_id
    for sub in ("captures", "logs"):
        src = Path(lab.run_dir) / sub
        if src.is_dir():
            # regular files only: a UML's mconsole socket or a FIFO cannot be copied, and a
            # failing copy must never hide the case's own failure
            shutil.copytree(src, dest / sub, dirs_exist_ok=True, ignore=_special_files)
    return dest


def _special_files(directory: str, names: list[str]) -> set[str]:
    import stat

    skipped = set()
    for name in names:
        try:
            mode = os.lstat(os.path.join(directory, name)).st_mode
        except OSError:
            skipped.add(name)
            continue
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            skipped.add(name)
    return skipped


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
