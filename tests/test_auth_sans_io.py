"""The auth and MPPE cores are sans-I/O: no sockets, clocks, threads or subprocesses."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "tunnels"
FILES = sorted([*ROOT.joinpath("ppp", "auth").glob("*.py"), *ROOT.joinpath("mppe").glob("*.py")])
FORBIDDEN = {"socket", "asyncio", "time", "subprocess", "threading", "select", "selectors"}


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_io_imports(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        for name in names:
            assert name.split(".")[0] not in FORBIDDEN, f"{path.name} imports {name}"
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id == "os":
                assert node.attr == "urandom", f"{path.name} uses os.{node.attr}"
