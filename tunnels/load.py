"""`vpnlab load`: many PPTP sessions against one server from one process (issue 8).

Filled in by the load generator; this module only registers the subcommand for now.
"""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("load", help="open many PPTP sessions against a server (load test)")
    p.add_argument("--server", required=True, help="the VPN server's address")
    p.add_argument("--sessions", type=int, default=100, metavar="N")
    p.add_argument("--rate", type=float, default=100.0, metavar="R",
                   help="new sessions per second")
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--json", action="store_true", help="the report as one JSON object")
    p.set_defaults(func=cmd_load)


def cmd_load(args: argparse.Namespace) -> int:
    print("vpnlab load: not implemented yet", file=sys.stderr)
    return 2
