"""Link presets: configured vs measured rate, RTT and loss (bench/link_presets.py's figures).

    python -m bench links [--pings 400] [PRESET ...] [--json FILE]

The measurement stays in bench/link_presets.py, which still runs on its own as before.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from bench import link_presets


def add_arguments(p: argparse.ArgumentParser) -> None:
    from testbed.shaping import PRESETS

    p.add_argument("--pings", type=int, default=400)
    p.add_argument("presets", nargs="*", default=list(PRESETS))


def run(args: argparse.Namespace) -> dict[str, Any]:
    rows = []
    for name in args.presets:
        t0 = time.monotonic()
        rows.append(link_presets.measure(name, args.pings))
        rows[-1]["seconds"] = round(time.monotonic() - t0, 1)
    return {"pings": args.pings, "rows": rows}


def table(result: dict[str, Any]) -> str:
    return link_presets.format_rows(result["rows"])
