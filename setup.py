"""Build of the compiled data path (the project's metadata is in pyproject.toml).

Two small C extensions carry the per-packet cryptography of the data path in one call each:
`tunnels/mppe/_fastmppe.c` (stateless/stateful MPPE key changes and RC4, RFC 3078) and
`tunnels/ipsec/_fastesp.c` (ESP seal/open: CBC cipher, HMAC-SHA1/256-96, the UDP checksum),
both over the system's libcrypto. They are optional: without a C compiler, Python headers or
libssl-dev the build skips them and the same code runs on the pure-Python path (the tests pair
the two byte for byte). ci/setup.sh installs gcc, python3-dev and libssl-dev, so CI and the
README's set-up build them.
"""

import os
from pathlib import Path

from setuptools import Extension, setup

_SOURCES = {
    "tunnels.mppe._fastmppe": "tunnels/mppe/_fastmppe.c",
    "tunnels.ipsec._fastesp": "tunnels/ipsec/_fastesp.c",
}

# VPNLAB_EXT=tunnels.mppe._fastmppe builds that one only (work on one while the other is
# being edited)
_ONLY = os.environ.get("VPNLAB_EXT")

setup(ext_modules=[
    Extension(name, [source], libraries=["crypto"], optional=True,
              extra_compile_args=["-O2", "-Wall", "-Wno-deprecated-declarations"])
    for name, source in _SOURCES.items()
    if Path(source).exists() and (_ONLY is None or _ONLY == name)
])
