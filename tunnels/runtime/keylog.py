"""ESP key log: what SSLKEYLOGFILE is to TLS, for L2TP/IPsec captures.

With `keylog` set, each installed ESP SA pair is appended as two JSON lines (one per
direction) so an independent decoder can decrypt a capture: scapy's `SecurityAssociation`
(`scapy_*` fields) or tshark's `esp_sa` table (`tshark_uat`). Off by default: the file holds
live keys; the conformance suite and a person debugging interop turn it on.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def log_child_keys(path: Path | None, stack: Any, event: Any) -> None:
    """Append the SA pair `event` (an IPsecUp) names, if the stack still holds it."""
    if path is None:
        return
    child = getattr(stack, "children", {}).get(event.spi_in)
    if child is None:
        return
    lines = []
    for direction, sa in (("in", child.inbound), ("out", child.outbound)):
        x = sa.keys_for_export()
        lines.append(json.dumps({
            "direction": direction, "peer": event.peer, "spi": x.spi, "src": x.src,
            "dst": x.dst, "encap": list(x.encap) if x.encap else None,
            "cipher": event.cipher, "integrity": event.integrity,
            "enc_key": x.enc_key.hex(), "auth_key": x.auth_key.hex(),
            "scapy_crypt_algo": x.scapy_crypt_algo, "scapy_auth_algo": x.scapy_auth_algo,
            "tshark_uat": x.tshark_uat()}))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a") as f:
        f.write("\n".join(lines) + "\n")
