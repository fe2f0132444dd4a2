"""Sessions: many PPTP sessions against one server (vpnlab load); being written.

    python -m bench sessions [--json FILE]
"""

from __future__ import annotations

import argparse
from typing import Any


def add_arguments(p: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> dict[str, Any]:
    return {"rows": []}


def table(result: dict[str, Any]) -> str:
    return "sessions: not built yet"
