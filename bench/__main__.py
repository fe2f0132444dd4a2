"""`python -m bench {throughput,sessions,bringup,suite,links,datapath} [--json FILE]`.

Each benchmark prints a table; `--json FILE` writes the same figures, with their baselines and
ratios, the date and the machine's load. Those needing namespaces re-run themselves as root
inside vpnlab's sandbox (nothing touches the root network namespace).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

from bench.common import enter_sandbox, machine

# name: (module, needs the sandbox)
BENCHMARKS = {"throughput": ("bench.throughput", True), "sessions": ("bench.sessions", True),
              "bringup": ("bench.bringup", True), "suite": ("bench.suite", False),
              "links": ("bench.links", True), "datapath": ("bench.datapath", False)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="benchmark", required=True)
    modules = {}
    for name, (module_name, _) in BENCHMARKS.items():
        module = importlib.import_module(module_name)
        modules[name] = module
        sp = sub.add_parser(name, help=(module.__doc__ or "").split("\n")[0])
        sp.add_argument("--json", metavar="FILE", help="write the figures as JSON here")
        module.add_arguments(sp)
    args = p.parse_args(argv)
    if BENCHMARKS[args.benchmark][1]:
        code = enter_sandbox()
        if code is not None:
            return code
    module = modules[args.benchmark]
    started = time.time()
    result = module.run(args)
    print(module.table(result))
    if args.json:
        record = {"benchmark": args.benchmark, "date": time.strftime(
            "%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)), "wall_seconds": round(
            time.time() - started, 1), "machine": machine(), "result": result}
        Path(args.json).write_text(json.dumps(record, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
