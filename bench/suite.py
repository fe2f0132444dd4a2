"""Suite: wall time of the conformance suite with `pytest -n 2`, and its ten slowest cases.

    python -m bench suite [--workers 2] [--path conformance] [--json FILE]

Runs `python -m pytest PATH -n WORKERS --durations=10` in the project (the pytest plugin puts
itself in the sandbox as root) and reads pytest's own summary: outcome counts, pytest's
elapsed time, the ten slowest phases (setup, call or teardown of one case). Goal (issue 8):
the whole suite within 10 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from typing import Any

from bench.common import PROJECT, format_table

_DURATION = re.compile(r"^([\d.]+)s (setup|call|teardown)\s+(\S+)", re.M)
# -ra's short summary: "FAILED conformance/x.py::case[id] - AssertionError: ..." (or ERROR)
_FAILED = re.compile(r"^(?:FAILED|ERROR) (\S+)", re.M)
# "75 passed, 4 skipped in 244.91s (0:04:04)", with or without -q's "=" decorations
_SUMMARY = re.compile(r"^=* ?(\d+ (?:passed|failed|error|skipped|xfailed|xpassed|deselected|"
                      r"warnings?)[\w, ]*) in ([\d.]+)s", re.M)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", default="2", help="pytest -n")
    p.add_argument("--path", action="append", default=[], help="default: conformance")
    p.add_argument("--timeout", type=float, default=1800.0)


def run(args: argparse.Namespace) -> dict[str, Any]:
    paths = args.path or ["conformance"]
    argv = [sys.executable, "-m", "pytest", *paths, "-n", args.workers, "--durations=10",
            "-q", "-p", "no:cacheprovider"]
    t0 = time.monotonic()
    done = subprocess.run(argv, cwd=PROJECT, capture_output=True, text=True,
                          timeout=args.timeout)
    wall = time.monotonic() - t0
    out = done.stdout
    summary = _SUMMARY.findall(out)
    slowest = [{"seconds": float(s), "phase": ph, "case": case}
               for s, ph, case in _DURATION.findall(out)][:10]
    return {"argv": argv[1:], "exit_status": done.returncode, "wall_seconds": round(wall, 1),
            "pytest_seconds": float(summary[-1][1]) if summary else None,
            "outcome": summary[-1][0] if summary else out[-500:], "slowest": slowest,
            "failed": _FAILED.findall(out), "goal_seconds": 600}


def table(result: dict[str, Any]) -> str:
    head = (f"pytest {' '.join(result['argv'][2:])}: {result['outcome']}; wall "
            f"{result['wall_seconds']} s (pytest: {result['pytest_seconds']} s; goal <= "
            f"{result['goal_seconds']} s), exit {result['exit_status']}")
    rows = [[f"{r['seconds']:.2f}", r["phase"], r["case"]] for r in result["slowest"]]
    failed = "".join(f"\nfailed: {case}" for case in result.get("failed", []))
    return head + failed + "\n" + format_table(["seconds", "phase", "case (ten slowest)"], rows)
