"""`vpnlab status`: the server's active connections, read from its JSON status file (the
server rewrites it atomically every second and on each event; see tunnels/server.py).

One row per connection, as the chapter's Routing and Remote Access console lists remote access
clients: user, tunnel type, the client's public and tunnel addresses, authentication method,
encryption, bytes each way, duration, and the remote access policy that let it in.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

STALE_AFTER = 5.0  # seconds: the server rewrites its status file every second while it runs

COLUMNS = (("user", "USER"), ("tunnel_type", "TUNNEL"), ("peer", "CLIENT"),
           ("address", "ADDRESS"), ("auth", "AUTH"), ("encryption", "ENCRYPTION"),
           ("bytes_in", "IN"), ("bytes_out", "OUT"), ("duration", "TIME"), ("policy", "POLICY"))


def connections(status: dict[str, Any], now: float | None = None) -> list[dict[str, Any]]:
    now = time.time() if now is None else now
    rows = []
    for s in status.get("sessions", []):
        started = s.get("started")
        rows.append({
            "user": s.get("user"), "protocol": s.get("protocol"),
            "tunnel_type": s.get("tunnel_type") or s.get("protocol"), "peer": s.get("peer"),
            "address": s.get("address"), "auth": s.get("auth"),
            "encryption": s.get("encryption") or (f"esp {s['esp_cipher']}"
                                                   if s.get("esp_cipher") else "none"),
            "bytes_in": s.get("bytes_in", 0), "bytes_out": s.get("bytes_out", 0),
            "packets_in": s.get("packets_in", 0), "packets_out": s.get("packets_out", 0),
            "duration": round(now - started, 1) if started else None,
            "policy": s.get("policy"), "call_id": s.get("call_id")})
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    cells = [[h for _, h in COLUMNS]] + [
        [_text(key, row.get(key)) for key, _ in COLUMNS] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(COLUMNS))]
    lines = ("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells)
    return "\n".join(lines)


def _text(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key == "duration":
        seconds = int(value)
        return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
    return str(value)


def main(path: str, as_json: bool) -> int:
    file = Path(path)
    try:
        status = json.loads(file.read_text())
    except OSError as exc:
        print(f"vpnlab status: cannot read {file}: {exc.strerror or exc} (the server's "
              f"--status file)", file=sys.stderr)
        return 2
    except json.JSONDecodeError as exc:
        print(f"vpnlab status: {file}: not a status file (JSON: {exc})", file=sys.stderr)
        return 2
    if status.get("role") != "server":
        print(f"vpnlab status: {file}: a {status.get('role', 'unknown')} status file, "
              f"expected the server's", file=sys.stderr)
        return 2
    rows = connections(status)
    age = max(0.0, time.time() - file.stat().st_mtime)
    stale = age > STALE_AFTER
    if stale:
        print(f"vpnlab status: {file} was last written {age:.0f} s ago (a running server "
              f"rewrites it every second): the server has stopped or hangs, and the "
              f"connections below are what it last reported", file=sys.stderr)
    if as_json:
        print(json.dumps({"connections": rows, "totals": status.get("totals", {}),
                          "ports": status.get("ports"), "addresses": status.get("addresses"),
                          "age_seconds": round(age, 1), "stale": stale}, indent=1))
    else:
        print(table(rows) if rows else "no active connections")
        totals = status.get("totals", {})
        print(f"{len(rows)} active; {totals.get('calls_up', 0)} up and "
              f"{totals.get('calls_down', 0)} down since start; "
              f"{totals.get('auth_failures', 0)} refused at authentication")
    return 0
