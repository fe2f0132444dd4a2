"""The VPN server's accounting runtime: the sans-I/O `Accountant` (tunnels/accounting.py) fed
with session starts and stops, its interim timer on the loop, its local records appended to
the log file ([accounting] log, one JSON line each, flushed at once) and its RADIUS
Accounting-Requests handed to the server's RADIUS link.

Counters are the PPP engine's datagram counters (octets and packets of IP datagrams each way,
without PPP, GRE, L2TP or ESP headers): what the tunnel carried for the user.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import IO, Any

from tunnels.accounting import Accountant, AccountingSession, Counters, SessionIds, json_line
from tunnels.radius.attributes import AcctAuthentic, TunnelType

Key = tuple[str, int]


def counters_of(ppp: Any) -> Counters:
    c = ppp.counters
    return Counters(c["ip_in_octets"], c["ip_out_octets"], c["ip_in"], c["ip_out"])


class AccountingLink:
    def __init__(self, loop: asyncio.AbstractEventLoop, config: Any, radius: Any = None):
        acct = config.accounting
        self.loop, self.config, self.radius = loop, config, radius
        self.authentic = AcctAuthentic.RADIUS if config.authentication.provider == "radius" \
            else AcctAuthentic.LOCAL
        self.ids = SessionIds(time.time())
        self.engines: dict[str, Any] = {}  # Acct-Session-Id -> the session's PPP engine
        self.by_key: dict[Key, str] = {}
        self.log: IO[str] | None = None
        if acct.provider == "local":
            path = Path(acct.log)
            path.parent.mkdir(parents=True, exist_ok=True)
            self.log = path.open("a", encoding="utf-8")
        self.accountant = Accountant(
            [acct.provider], self._counters,
            nas_identifier=radius.nas_identifier if radius else config.name,
            nas_ip_address=radius.nas_ip if radius else None,
            interim_interval=float(acct.interim_interval),
            wall_offset=time.time() - loop.time())
        self._timer: asyncio.TimerHandle | None = None
        self.counters = {"started": 0, "stopped": 0, "records_written": 0,
                         "requests_sent": 0}

    def started(self, key: Key, info: dict[str, Any], ppp: Any) -> str:
        session_id = self.ids.next()
        self.engines[session_id], self.by_key[key] = ppp, session_id
        self.accountant.start(AccountingSession(
            session_id=session_id, username=info.get("user") or "",
            tunnel_type=TunnelType.PPTP if info["tunnel_type"] == "pptp" else TunnelType.L2TP,
            call_id=int(info["call_id"]), client_endpoint=str(info["peer"]).rsplit(":", 1)[0],
            server_endpoint=self.config.listen, framed_address=info.get("address"),
            auth_method=info.get("auth") or "", class_=tuple(ppp.authorization.class_),
            authentic=self.authentic), self.loop.time())
        self.counters["started"] += 1
        self._flush()
        return session_id

    def stopped(self, key: Key, reason: str) -> None:
        session_id = self.by_key.pop(key, None)
        if session_id is None:
            return
        ppp = self.engines.pop(session_id)
        self.accountant.stop(session_id, counters_of(ppp), reason, self.loop.time())
        self.counters["stopped"] += 1
        self._flush()

    def _counters(self, session_id: str) -> Counters | None:
        ppp = self.engines.get(session_id)
        return counters_of(ppp) if ppp is not None else None

    def _flush(self) -> None:
        records = self.accountant.take_records()
        if records and self.log is not None:
            self.log.write("".join(json_line(r) for r in records))
            self.log.flush()
            self.counters["records_written"] += len(records)
        for attributes in self.accountant.take_requests():
            if self.radius is not None:
                self.radius.account(attributes)
                self.counters["requests_sent"] += 1
        self._arm()

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self.accountant.get_timer()
        if deadline is not None:
            self._timer = self.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.accountant.handle_timer(self.loop.time())
        self._flush()

    def status(self) -> dict[str, Any]:
        return {"provider": self.config.accounting.provider, **self.counters,
                "active": len(self.engines)}

    def close(self, reason: str = "server shutting down") -> None:
        """Stop records for whatever is still up (Admin-Reboot), then close the log."""
        for key in list(self.by_key):
            self.stopped(key, reason)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.log is not None:
            self.log.close()
            self.log = None
