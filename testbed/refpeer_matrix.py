"""`vpnlab interop`: the interop matrix (topologies/interop.py's MATRIX) outside pytest.

Every cell is one `interop` lab: brought up, its checks run, torn down. A cell passes when
every check passed, fails with the first check that did not (or the error that stopped the
lab), or is not applicable with the reason. Cells run in parallel processes (`--jobs`), each
lab with its own names (labs are tagged by PID). Exit status 0 exactly when every applicable
cell that was selected passed.
"""

from __future__ import annotations

import fnmatch
import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from testbed.errors import TestbedError


def run_cell(params: dict[str, str]) -> dict[str, Any]:
    """One cell in this process: its lab up, checks, down."""
    from testbed.lab import Lab
    from topologies import interop

    os.environ["VPNLAB_QUIET"] = "1"
    t0 = time.monotonic()
    lab: Lab | None = None
    try:
        resolved = interop.SCENARIO.resolve(params)
        with Lab(interop.build(resolved)) as lab:
            interop.start(lab, resolved)
            results = interop.checks(lab, resolved)
    except (TestbedError, OSError) as exc:
        return {"result": "fail", "detail": f"lab: {exc}"[:400], "checks": [],
                "seconds": round(time.monotonic() - t0, 1), "figures": {},
                "run_dir": str(lab.run_dir) if lab else None}
    bad = [r for r in results if not r.passed]
    return {"result": "fail" if bad or not results else "pass",
            "detail": f"{bad[0].name}: {bad[0].detail}" if bad else "",
            "checks": [r.as_dict() for r in results], "figures": getattr(lab, "figures", {}),
            "seconds": round(time.monotonic() - t0, 1), "run_dir": str(lab.run_dir)}


def select(pattern: str | None) -> list:  # type: ignore[type-arg]
    from topologies.interop import MATRIX

    if not pattern:
        return list(MATRIX)
    glob = pattern if any(c in pattern for c in "*?[") else f"*{pattern}*"
    return [c for c in MATRIX if fnmatch.fnmatch(c.id, glob)]


def _figures(row: dict[str, Any]) -> str:
    f = row.get("figures") or {}
    parts = [f"boot {f['boot_s']} s" if "boot_s" in f else "",
             f"tunnel up {f['tunnel_up_s']} s" if "tunnel_up_s" in f else "",
             f"UML {f['peer_memory_mb']} MB" if "peer_memory_mb" in f else ""]
    return ", ".join(p for p in parts if p)


def run_matrix(pattern: str | None, jobs: int, json_path: str | None) -> int:
    cells = select(pattern)
    if not cells:
        raise TestbedError(f"--only {pattern!r}: no cell matches (see `vpnlab interop --list`)")
    t0 = time.monotonic()
    rows: dict[str, dict[str, Any]] = {}
    todo = [c for c in cells if not c.not_applicable]
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=max(1, jobs), mp_context=ctx) as pool:
        futures = {c.id: pool.submit(run_cell, c.params) for c in todo}
        for cell in cells:
            if cell.not_applicable:
                rows[cell.id] = {"result": "n/a", "detail": cell.not_applicable}
            else:
                rows[cell.id] = futures[cell.id].result()
            _print_row(cell.id, rows[cell.id])
    wall = time.monotonic() - t0
    counts = {k: sum(r["result"] == k for r in rows.values()) for k in ("pass", "fail", "n/a")}
    print(f"{counts['pass']} passed, {counts['fail']} failed, {counts['n/a']} not applicable "
          f"in {wall:.1f}s ({jobs} at a time)")
    if json_path:
        report = {"passed": counts["fail"] == 0, "wall_s": round(wall, 1), "jobs": jobs,
                  "counts": counts,
                  "cells": [{"id": c.id, **c.params, **rows[c.id]} for c in cells]}
        Path(json_path).write_text(json.dumps(report, indent=1))
    return 0 if counts["fail"] == 0 else 1


def _print_row(ident: str, row: dict[str, Any]) -> None:
    label = {"pass": "PASS", "fail": "FAIL", "n/a": "N/A "}[row["result"]]
    secs = f"{row['seconds']:5.1f}s" if "seconds" in row else "      "
    detail = _figures(row) if row["result"] == "pass" else row["detail"]
    print(f"  [{label}] {ident:<38} {secs}  {detail}", flush=True)


def list_cells() -> int:
    for cell in select(None):
        print(f"{cell.id:<40} {'n/a: ' + cell.not_applicable if cell.not_applicable else ''}")
    return 0
