"""What the benchmarks share: the sandbox, labs without captures, /proc figures, tables.

Every benchmark that needs namespaces runs as root inside vpnlab's sandbox (testbed/sandbox.py:
private network and PID namespaces, so nothing reaches the root namespace and a killed run
leaves nothing behind); labs are torn down in `finally`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
NOT_BUILT = "not built yet"


@dataclass(frozen=True)
class Variant:
    """One row of a benchmark: a protocol set-up, as `remote-access` parameters. Adding a
    protocol to a benchmark is one entry in its table; a row whose parameters the scenario
    refuses (SpecError: not implemented yet) prints as "not built yet"."""

    name: str
    params: Mapping[str, str] = field(default_factory=dict)
    scenario: str = "remote-access"

    def unavailable(self) -> str | None:
        """None when the scenario accepts these parameters, else why not."""
        from testbed.errors import SpecError
        from topologies import SCENARIOS

        try:
            scenario = SCENARIOS[self.scenario]
            scenario.build(scenario.resolve(self.params))
        except SpecError as exc:
            return f"{NOT_BUILT} ({exc})"
        return None


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def enter_sandbox() -> int | None:
    """Outside the sandbox: run this command again inside it and return its status. Inside:
    None, with SIGTERM turned into KeyboardInterrupt so labs tear down in `finally` (PID 1 of
    the sandbox ignores signals it has no handler for)."""
    from testbed import sandbox

    if not sandbox.in_sandbox():
        return sandbox.reexec_in_sandbox()
    signal.signal(signal.SIGTERM, _interrupt)
    os.environ["VPNLAB_QUIET"] = "1"
    return None


@contextlib.contextmanager
def scenario_lab(variant: Variant, capture: bool = False, start: bool = True) -> Iterator[Any]:
    """The variant's scenario up with its daemons started (`start`); captures off by default
    (tcpdump writing every packet of a bulk transfer would be measured too)."""
    from testbed.lab import Lab
    from topologies import SCENARIOS

    scenario = SCENARIOS[variant.scenario]
    params = scenario.resolve(variant.params)
    lab = Lab(scenario.build(params), capture=capture)
    with lab:
        assert lab.run_dir is not None
        lab.run_dir.mkdir(parents=True, exist_ok=True)  # captures would have made it
        if start:
            scenario.start(lab, params)
        lab.params = params
        yield lab


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (/proc/PID/stat utime, stime)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, min, max (and n) of repeated measurements."""
    vals = [v for v in values if v == v]  # NaN out
    if not vals:
        return {"n": 0}
    return {"median": round(statistics.median(vals), 4), "min": round(min(vals), 4),
            "max": round(max(vals), 4), "n": len(vals)}


def machine() -> dict[str, Any]:
    """Figures are noisy on a shared machine: the load average goes with every result."""
    load = os.getloadavg()
    return {"cores": os.cpu_count(), "loadavg": [round(x, 2) for x in load],
            "kernel": os.uname().release}


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in r]
                                           for r in rows]
    widths = [max(len(r[i]) for r in cells if i < len(r)) for i in range(len(headers))]
    out = []
    for r in cells:
        if len(r) < len(headers):  # a row that is one message ("not built yet")
            out.append(f"{r[0]:<{widths[0]}}  " + "  ".join(r[1:]))
            continue
        out.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                             for i, (c, w) in enumerate(zip(r, widths, strict=True))))
    return "\n".join(out)
