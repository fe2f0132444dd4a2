"""`vpnlab`: bring scenarios up, check them, tear them down; probe the machine; clean up.

`run` and `up` re-execute themselves inside the sandbox (testbed.sandbox), so whatever happens
to this process the kernel removes the lab. Progress goes to stderr, reports to stdout, and
`run` exits 0 exactly when every check passed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

from testbed import sandbox
from testbed.errors import TestbedError
from testbed.scenario import CheckResult, parse_param_args


def _scenarios() -> dict:
    from topologies import SCENARIOS

    return SCENARIOS


def _supervise(argv: list[str]) -> int:
    """Outside the sandbox: run the same command inside one."""
    return sandbox.run_in_sandbox([sys.executable, "-m", "testbed.cli", *argv])


def cmd_list(args: argparse.Namespace) -> int:
    for name, scenario in _scenarios().items():
        print(f"{name}: {scenario.description}")
        for pname, p in scenario.params.items():
            choices = f" ({'|'.join(p.choices)})" if p.choices else ""
            print(f"    --param {pname}={p.default}{choices}  {p.help}")
    return 0


def _lookup(name: str):
    scenarios = _scenarios()
    if name not in scenarios:
        raise TestbedError(f"no scenario {name!r}: expected one of {', '.join(scenarios)}")
    return scenarios[name]


def _print_report(name: str, params: dict, results: list[CheckResult], lab, as_json: bool,
                  elapsed: float) -> None:
    passed = sum(r.passed for r in results)
    if as_json:
        print(json.dumps({"scenario": name, "params": params, "lab": lab.lab_id,
                          "run_dir": str(lab.run_dir), "passed": passed == len(results),
                          "checks": [r.as_dict() for r in results],
                          "elapsed_s": round(elapsed, 2)}, indent=1))
        return
    print(f"scenario {name} ({', '.join(f'{k}={v}' for k, v in params.items())})")
    for r in results:
        print(f"  [{'PASS' if r.passed else 'FAIL'}] {r.name}: {r.detail}")
    print(f"{passed}/{len(results)} checks passed in {elapsed:.1f}s; captures in "
          f"{lab.run_dir}/captures")


def cmd_run(args: argparse.Namespace) -> int:
    from testbed.lab import Lab, say

    scenario = _lookup(args.name)
    params = scenario.resolve(parse_param_args(args.param))
    spec = scenario.build(params)
    t0 = time.monotonic()
    with Lab(spec) as lab:
        say(f"starting {args.name} services")
        scenario.start(lab, params)
        say("running checks")
        results = scenario.checks(lab, params)
        _print_report(args.name, params, results, lab, args.json, time.monotonic() - t0)
    say("lab torn down")
    return 0 if results and all(r.passed for r in results) else 1


def cmd_up(args: argparse.Namespace) -> int:
    from testbed.lab import Lab, say

    scenario = _lookup(args.name)
    params = scenario.resolve(parse_param_args(args.param))
    stop = {"now": False}

    def request_stop(signum: int, _frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, request_stop)
    with Lab(scenario.build(params)) as lab:
        scenario.start(lab, params)
        print(json.dumps({"lab": lab.lab_id, "run_dir": str(lab.run_dir),
                          "nodes": {n: {"pid": node.pid} for n, node in lab.nodes.items()}}),
              flush=True)
        if args.no_cli:
            say(f"lab {lab.lab_id} is up; `vpnlab down` stops it")
            while not stop["now"]:
                signal.pause() if hasattr(signal, "pause") else time.sleep(1)
        else:
            from testbed.backend_mininet import interactive_cli

            interactive_cli(lab)
    say("lab torn down")
    return 0


def _states() -> list[tuple[Path, dict]]:
    from testbed.lab import STATE_DIR

    out = []
    for path in sorted(STATE_DIR.glob("*.json")):
        try:
            out.append((path, json.loads(path.read_text())))
        except (OSError, ValueError):
            out.append((path, {}))
    return out


def _alive(state: dict) -> bool:
    pid = int(state.get("supervisor_pid") or 0)
    return pid > 0 and sandbox.process_start(pid) == state.get("supervisor_start") != ""


def cmd_down(args: argparse.Namespace) -> int:
    found = 0
    for _path, state in _states():
        if args.name and args.name not in (state.get("lab"), state.get("scenario")):
            continue
        if _alive(state):
            os.kill(int(state["supervisor_pid"]), signal.SIGTERM)
            print(f"stopping lab {state['lab']} (runner pid {state['supervisor_pid']})")
            found += 1
    if not found:
        print("no running lab" + (f" matching {args.name!r}" if args.name else ""))
    return 0


def cmd_clean(args: argparse.Namespace) -> int:
    """Remove what dead labs left: only files of our own state directory. The namespaces,
    links and processes of a lab die with its sandbox, even after SIGKILL."""
    removed = 0
    for path, state in _states():
        if not _alive(state):
            path.unlink(missing_ok=True)
            print(f"removed state of dead lab {state.get('lab', path.stem)}")
            removed += 1
    print(f"clean: {removed} leftover(s) removed")
    return 0


def cmd_capture(args: argparse.Namespace) -> int:
    states = [s for _, s in _states() if not args.name or args.name in (s.get("lab"),
                                                                        s.get("scenario"))]
    if not states:
        from testbed.lab import RUNS_DIR

        print(f"no running lab; captures of finished runs are under {RUNS_DIR}")
        return 0
    for state in states:
        print(f"{state.get('lab')}: {state.get('run_dir')}/captures")
        for key, path in state.get("captures", {}).items():
            print(f"  {key}: {path}")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from testbed.doctor import report

    rows = report()
    width = max(len(r[0]) for r in rows)
    for name, ok, detail in rows:
        print(f"{'ok ' if ok else 'no '} {name:<{width}}  {detail}")
    return 0


def cmd_interop(args: argparse.Namespace) -> int:
    from testbed import refpeer_matrix

    if args.list:
        return refpeer_matrix.list_cells()
    return refpeer_matrix.run_matrix(args.only, args.jobs, args.json)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vpnlab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="bring a scenario up, check it, print a report, tear down")
    p.add_argument("name")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_run, sandboxed=True)
    p = sub.add_parser("up", help="bring a scenario up and keep it running")
    p.add_argument("name")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--no-cli", action="store_true", help="no interactive CLI; run until `down`")
    p.set_defaults(func=cmd_up, sandboxed=True)
    sub.add_parser("list", help="scenarios and their parameters").set_defaults(func=cmd_list)
    p = sub.add_parser("down", help="stop running labs")
    p.add_argument("name", nargs="?")
    p.set_defaults(func=cmd_down)
    sub.add_parser("clean", help="remove leftovers of dead labs").set_defaults(func=cmd_clean)
    p = sub.add_parser("capture", help="where the captures are")
    p.add_argument("name", nargs="?")
    p.set_defaults(func=cmd_capture)
    sub.add_parser("doctor", help="probe kernel and tools").set_defaults(func=cmd_doctor)
    p = sub.add_parser("interop", help="run the interop matrix against real peers in UML")
    p.add_argument("--json", metavar="FILE", help="write every cell's result here")
    p.add_argument("--only", metavar="PATTERN", help="cells whose id matches (glob or part)")
    p.add_argument("--jobs", type=int, default=2, help="cells at a time (default 2)")
    p.add_argument("--list", action="store_true", help="list the cells and exit")
    p.set_defaults(func=cmd_interop, sandboxed=True)
    try:
        from tunnels import cli as tunnels_cli
    except ImportError:
        tunnels_cli = None  # the VPN endpoints' commands are optional in a partial install
    if tunnels_cli is not None and hasattr(tunnels_cli, "register"):
        tunnels_cli.register(sub)
    return parser


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "sandboxed", False) and not sandbox.in_sandbox():
            return _supervise(argv)
        if sandbox.in_sandbox():
            # PID 1 of the sandbox ignores signals it has no handler for: make SIGTERM stop us.
            signal.signal(signal.SIGTERM, _interrupt)
        return int(args.func(args) or 0)
    except TestbedError as exc:
        print(f"vpnlab: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vpnlab: interrupted; lab torn down", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
