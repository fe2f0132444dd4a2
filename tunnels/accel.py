"""The one switch for the compiled data-path extensions (tunnels/mppe/_fastmppe.c,
tunnels/ipsec/_fastesp.c; setup.py builds them when gcc, python3-dev and libssl-dev are there).

`load(name)` is the extension module, or None when it was not built or VPNLAB_NO_ACCEL=1 was
set when the caller imported: the caller then keeps its pure-Python path, which gives the same
bytes (the tests pair the two). Read once at import, so a process runs one path throughout.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType


def load(name: str) -> ModuleType | None:
    if os.environ.get("VPNLAB_NO_ACCEL") == "1":
        return None
    try:
        return importlib.import_module(name)
    except ImportError:
        return None
