"""Accounting (RFC 2866), sans-I/O: the `Accountant` turns a session's life (start, interim
updates, stop) into records for the configured providers and gives them back to the runtime:
"local" as JSON-line records (`take_records()`; the runtime appends `json_line(r)` to its log)
and "radius" as Accounting-Request attribute sets (`take_requests()`, for
`RadiusClient.account`).

Times: every `now` is the runtime's clock (the one its timers use); `wall_offset` turns it into
Unix time for Event-Timestamp and the records' time (the runtime passes
`time.time() - loop.time()`). Interim updates come from the Accountant's own timer when
`interim_interval` > 0 (`get_timer`/`handle_timer`), with counters from the `counters`
callback given at construction (None: the session is gone, no record).
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tunnels.errors import LocalProtocolError
from tunnels.radius.access import NasInfo, nas_attributes
from tunnels.radius.attributes import (
    AcctAuthentic,
    AcctStatusType,
    AcctTerminateCause,
    Attr,
    Attributes,
    Key,
    TunnelType,
)

PROVIDERS = ("local", "radius")
_U32 = 1 << 32


@dataclass(frozen=True, slots=True)
class Counters:
    """Traffic of a session as the server counts it: input = from the client (RFC 2866
    §5.3/§5.5: received from the port), output = sent to it."""

    input_octets: int = 0
    output_octets: int = 0
    input_packets: int = 0
    output_packets: int = 0


@dataclass(frozen=True, slots=True)
class AccountingSession:
    session_id: str  # Acct-Session-Id: unique per server run (SessionIds)
    username: str
    tunnel_type: TunnelType
    call_id: int  # NAS-Port
    client_endpoint: str  # the client's public address
    server_endpoint: str  # the address the client reached
    framed_address: str | None  # the address PPP gave the client
    auth_method: str  # AuthMethod value: "mschapv2"...
    class_: tuple[bytes, ...] = ()  # Access-Accept's Class values, echoed (RFC 2865 §5.25)
    authentic: AcctAuthentic = AcctAuthentic.LOCAL


class SessionIds:
    """Acct-Session-Ids unique per server run (RFC 2866 §5.5): the run's start time in hex and
    a counter, "674C2A10-000001"."""

    def __init__(self, run_start: float):
        self.prefix = f"{int(run_start) & 0xFFFFFFFF:08X}"
        self.count = 0

    def next(self) -> str:
        self.count += 1
        return f"{self.prefix}-{self.count:06X}"


# Terminate causes ---------------------------------------------------------------------------

# Our stacks' and the server's reasons (free text) -> RFC 2866 §5.10; first match wins.
_CAUSES: tuple[tuple[str, AcctTerminateCause], ...] = (
    # the peer's own words first: a LAC's CDN "result 3 (ADMINISTRATIVE): user hung up" is
    # the user's request, not an administrator's reset of our port
    (r"user hung up|user request|^peer stopped", AcctTerminateCause.USER_REQUEST),
    (r"idle", AcctTerminateCause.IDLE_TIMEOUT),
    (r"session[ -]?time", AcctTerminateCause.SESSION_TIMEOUT),
    (r"admin", AcctTerminateCause.ADMIN_RESET),
    (r"shut(ting)? ?down|server stop|reboot", AcctTerminateCause.ADMIN_REBOOT),
    (r"user|hung up|hang ?up|terminate-request|call-clear|clear(ed)? the call|"
     r"peer (stopped|closed|hung)|"
     r"stop-?ccn|cdn|disconnect", AcctTerminateCause.USER_REQUEST),
    (r"echo|lost|carrier|no gre|tcp connection closed|hello|retransmi|unreachable|"
     r"dead peer|dpd|timed? ?out", AcctTerminateCause.LOST_CARRIER),
    (r"ipcp|encryption|mppe|ccp", AcctTerminateCause.SERVICE_UNAVAILABLE),
    (r"error|exception|failed", AcctTerminateCause.NAS_ERROR),
)


def terminate_cause(reason: str | AcctTerminateCause) -> AcctTerminateCause:
    """The Acct-Terminate-Cause for a reason our server gives (NAS Request when none fits)."""
    if isinstance(reason, AcctTerminateCause):
        return reason
    text = reason.casefold()
    for pattern, cause in _CAUSES:
        if re.search(pattern, text):
            return cause
    return AcctTerminateCause.NAS_REQUEST


# The Accountant -----------------------------------------------------------------------------

@dataclass(slots=True)
class _Live:
    session: AccountingSession
    started: float
    next_interim: float | None
    last: Counters = field(default_factory=Counters)


class Accountant:
    """Records per provider for each session event; `counters(session_id)` is asked at each
    interim deadline."""

    def __init__(self, providers: Sequence[str], counters: Callable[[str], Counters | None],
                 nas_identifier: str | None = None, nas_ip_address: str | None = None,
                 interim_interval: float = 0.0, wall_offset: float = 0.0):
        unknown = set(providers) - set(PROVIDERS)
        if unknown:
            raise LocalProtocolError(f"accounting providers {sorted(unknown)}: expected "
                                     f"{' and/or '.join(PROVIDERS)}", None)
        if "radius" in providers and not (nas_identifier or nas_ip_address):
            raise LocalProtocolError("RADIUS accounting needs a NAS-Identifier or "
                                     "NAS-IP-Address", None)
        if interim_interval < 0:
            raise LocalProtocolError("interim_interval must be >= 0", None)
        self.providers = tuple(providers)
        self.counters = counters
        self.nas_identifier, self.nas_ip_address = nas_identifier, nas_ip_address
        self.interim_interval = interim_interval
        self.wall_offset = wall_offset
        self._live: dict[str, _Live] = {}
        self._records: list[dict[str, Any]] = []
        self._requests: list[Attributes] = []

    # API -------------------------------------------------------------------------------------

    def start(self, session: AccountingSession, now: float) -> None:
        if session.session_id in self._live:
            raise LocalProtocolError(f"accounting session {session.session_id} already "
                                     "started", None)
        interval = self.interim_interval
        self._live[session.session_id] = _Live(session, now, now + interval if interval else None)
        self._emit(AcctStatusType.START, self._live[session.session_id], None, None, now)

    def interim(self, session_id: str, counters: Counters, now: float) -> None:
        live = self._live.get(session_id)
        if live is None:
            return  # stopped already: nothing to update
        live.last = counters
        self._emit(AcctStatusType.INTERIM_UPDATE, live, counters, None, now)

    def stop(self, session_id: str, counters: Counters, cause: str | AcctTerminateCause,
             now: float) -> None:
        live = self._live.pop(session_id, None)
        if live is None:
            return  # never started (authentication failed) or stopped twice
        self._emit(AcctStatusType.STOP, live, counters, terminate_cause(cause), now)

    def active(self) -> list[str]:
        return list(self._live)

    def take_records(self) -> list[dict[str, Any]]:
        out, self._records = self._records, []
        return out

    def take_requests(self) -> list[Attributes]:
        out, self._requests = self._requests, []
        return out

    def get_timer(self) -> float | None:
        return min((lv.next_interim for lv in self._live.values()
                    if lv.next_interim is not None), default=None)

    def handle_timer(self, now: float) -> None:
        for session_id, live in list(self._live.items()):
            if live.next_interim is None or live.next_interim > now:
                continue
            # the next deadline on the session's own grid, skipping any missed ones
            missed = int((now - live.next_interim) // self.interim_interval) + 1
            live.next_interim += missed * self.interim_interval
            counters = self.counters(session_id)
            if counters is not None:
                self.interim(session_id, counters, now)

    # records ---------------------------------------------------------------------------------

    def _emit(self, status: AcctStatusType, live: _Live, counters: Counters | None,
              cause: AcctTerminateCause | None, now: float) -> None:
        if "local" in self.providers:
            self._records.append(self._record(status, live, counters, cause, now))
        if "radius" in self.providers:
            self._requests.append(self._attributes(status, live, counters, cause, now))

    def _record(self, status: AcctStatusType, live: _Live, counters: Counters | None,
                cause: AcctTerminateCause | None, now: float) -> dict[str, Any]:
        s = live.session
        wall = now + self.wall_offset
        record: dict[str, Any] = {
            "event": _EVENT_NAMES[status],
            "time": round(wall, 3),
            "timestamp": datetime.fromtimestamp(wall, UTC).isoformat(timespec="seconds"),
            "session_id": s.session_id, "username": s.username,
            "tunnel_type": s.tunnel_type.name.lower(), "call_id": s.call_id,
            "client_endpoint": s.client_endpoint, "server_endpoint": s.server_endpoint,
            "framed_address": s.framed_address, "auth_method": s.auth_method,
            "authentic": s.authentic.name.lower(), "class": [c.hex() for c in s.class_],
        }
        if counters is not None:
            record.update(session_time=round(now - live.started, 3), input_octets=
                          counters.input_octets, output_octets=counters.output_octets,
                          input_packets=counters.input_packets,
                          output_packets=counters.output_packets)
        if cause is not None:
            record.update(terminate_cause=cause.name.lower().replace("_", "-"))
        return record

    def _attributes(self, status: AcctStatusType, live: _Live, counters: Counters | None,
                    cause: AcctTerminateCause | None, now: float) -> Attributes:
        s = live.session
        nas = NasInfo(self.nas_identifier, self.nas_ip_address, s.call_id, s.tunnel_type,
                      s.client_endpoint, s.server_endpoint)
        items: list[tuple[Key, Any]] = [
            (Attr.ACCT_STATUS_TYPE, status),  # RFC 2866 §5.1
            (Attr.ACCT_SESSION_ID, s.session_id),  # §5.5
            (Attr.ACCT_AUTHENTIC, s.authentic),  # §5.6
            (Attr.USER_NAME, s.username),
            *nas_attributes(nas),
        ]
        if s.framed_address:
            items.append((Attr.FRAMED_IP_ADDRESS, ipaddress.IPv4Address(s.framed_address)))
        items += [(Attr.CLASS, c) for c in s.class_]  # RFC 2865 §5.25: echoed unmodified
        if counters is not None:
            items += counter_attributes(counters)
            items.append((Attr.ACCT_SESSION_TIME, max(0, int(now - live.started))))  # §5.7
        if cause is not None:
            items.append((Attr.ACCT_TERMINATE_CAUSE, cause))  # §5.10
        # §5.2: built when the event happens, so no delay yet (the client retransmits the
        # same bytes, RFC 5080 §2.2.1, so the value cannot grow on retransmission)
        items += [(Attr.ACCT_DELAY_TIME, 0),
                  (Attr.EVENT_TIMESTAMP, int(now + self.wall_offset) & 0xFFFFFFFF)]
        return Attributes(items)


_EVENT_NAMES = {AcctStatusType.START: "start", AcctStatusType.INTERIM_UPDATE: "interim",
                AcctStatusType.STOP: "stop"}


def counter_attributes(c: Counters) -> list[tuple[Key, Any]]:
    """RFC 2866 §5.3-§5.8 and RFC 2869 §5.1/§5.2: octets modulo 2^32 with the Gigawords (how
    many times they wrapped) when they did; packets have no Gigawords and stop at 2^32 - 1."""
    items: list[tuple[Key, Any]] = []
    for octets, key, giga in ((c.input_octets, Attr.ACCT_INPUT_OCTETS,
                               Attr.ACCT_INPUT_GIGAWORDS),
                              (c.output_octets, Attr.ACCT_OUTPUT_OCTETS,
                               Attr.ACCT_OUTPUT_GIGAWORDS)):
        items.append((key, octets % _U32))
        if octets >= _U32:
            items.append((giga, (octets >> 32) & 0xFFFFFFFF))
    items += [(Attr.ACCT_INPUT_PACKETS, min(c.input_packets, _U32 - 1)),
              (Attr.ACCT_OUTPUT_PACKETS, min(c.output_packets, _U32 - 1))]
    return items


def json_line(record: dict[str, Any]) -> str:
    """One record as the line the runtime appends to the accounting log."""
    return json.dumps(record, sort_keys=False) + "\n"
