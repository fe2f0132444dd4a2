"""What the compiled-path tests share: whether this machine runs the extension it should."""

from __future__ import annotations

import os
from types import ModuleType

import pytest


def require_compiled(module: ModuleType | None, source: str, name: str) -> None:
    """Skip under VPNLAB_NO_ACCEL=1; otherwise fail, saying how to build it, when the
    extension `name` (from `source`) did not build: CI and the README's set-up have gcc,
    python3-dev and libssl-dev, so a missing build is a broken set-up, not a skip."""
    if os.environ.get("VPNLAB_NO_ACCEL") == "1":
        pytest.skip("VPNLAB_NO_ACCEL=1: the pure-Python path was asked for")
    assert module is not None, (
        f"{source} did not build: run `VPNLAB_EXT={name} .venv/bin/python setup.py "
        f"build_ext --inplace` (needs gcc, python3-dev, libssl-dev)")
