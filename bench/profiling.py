"""Where a daemon's time goes under load: py-spy samples read into self-time shares.

py-spy (PyPI, a development tool: never a dependency of vpnlab itself) samples a running
process from outside without changing it; `--nonblocking` does not pause it, so the transfer
measured is the one profiled. Raw output is one line per distinct stack, "frame;frame;... N".
"""

from __future__ import annotations

import collections
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _py_spy() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


def spy(pids: dict[str, int], seconds: float, during: Callable[[], Any],
        top: int = 14) -> dict[str, Any]:
    exe = _py_spy()
    if exe is None:
        return {"-": {"summary": "not run: py-spy is not installed (pip install py-spy)"}}
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        procs = {}
        for name, pid in pids.items():
            path = Path(tmp) / f"{pid}.txt"
            procs[name] = (path, subprocess.Popen(
                [exe, "record", "-p", str(pid), "-d", str(max(1, int(seconds))), "-r", "250",
                 "-f", "raw", "-o", str(path), "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        during()
        for name, (path, proc) in procs.items():
            _, err = proc.communicate(timeout=seconds + 30)
            out[name] = summarize(path.read_text() if path.exists() else "", top,
                                  err.decode(errors="replace")[-200:])
    return out


def summarize(raw: str, top: int, err: str = "") -> dict[str, Any]:
    leaf: collections.Counter[str] = collections.Counter()
    module: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        leaf[_short(frames[-1])] += n
        for m in {_module(f) for f in frames}:
            module[m] += n
    if not total:
        return {"samples": 0, "summary": f"no samples ({err.strip()})"}
    share = {k: round(100 * v / total, 1) for k, v in leaf.most_common(top)}
    inclusive = {k: round(100 * v / total, 1) for k, v in module.most_common(top)}
    lines = [f"{total} samples; self time by function:"]
    lines += [f"  {v:5.1f}%  {k}" for k, v in share.items()]
    lines.append("  inclusive by module:")
    lines += [f"  {v:5.1f}%  {k}" for k, v in inclusive.items()]
    return {"samples": total, "self": share, "inclusive_by_module": inclusive,
            "summary": "\n".join(lines)}


def _short(frame: str) -> str:
    """'func (path/to/file.py:12)' -> 'func (file.py:12)'."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit('/', 1)[-1]}" if where else name


def _module(frame: str) -> str:
    where = frame.partition(" (")[2]
    path = where.rsplit(":", 1)[0]
    parts = path.split("/")
    for anchor in ("tunnels", "asyncio", "cryptography"):
        if anchor in parts:
            i = parts.index(anchor)
            return "/".join(parts[i:])
    return parts[-1] if parts else frame
