"""The server side: one `IKESession` per ISAKMP peer, found by the initiator cookie.

Two Windows clients behind one NAT both send from UDP 500 and 4500; the NAT gives them
different public ports but the same address, and a server that keys peers by address alone
mixes them up. Cookies (RFC 2408 §2.5.3) are what the protocol gives to tell them apart; a
new Main Mode from the very (address, port) of an established session is that peer's phase-1
rekey and joins its session, so the IPsec SAs stay with the peer they belong to.
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Callable

from tunnels.ipsec.ike.config import IKEConfig
from tunnels.ipsec.ike.constants import HEADER_LENGTH, ExchangeType
from tunnels.ipsec.ike.events import ChildSADeleted, Event, Phase1Established
from tunnels.ipsec.ike.phase1 import ZERO_COOKIE
from tunnels.ipsec.ike.session import Address, Datagram, IKESession, _check_address


class IKEResponder:
    def __init__(self, config: IKEConfig, local: Address,
                 random: Callable[[int], bytes] = secrets.token_bytes, max_sessions: int = 1024):
        _check_address("local", local)
        self.config, self.local, self.random = config, local, random
        self.max_sessions = max_sessions
        self.sessions: list[IKESession] = []
        self._by_icookie: dict[bytes, IKESession] = {}
        self._spis: set[int] = set()
        self._events: deque[tuple[IKESession, Event]] = deque()
        self._closed_out: list[Datagram] = []  # the last words of sessions already removed
        self.counters = {"received": 0, "dropped": 0, "sessions": 0}

    def receive_datagram(self, data: bytes, src: Address, now: float) -> None:
        self.counters["received"] += 1
        session = self._route(bytes(data), src)
        if session is None:
            self.counters["dropped"] += 1
            return
        session.receive_datagram(data, src, now)
        self._collect(session)

    def _route(self, data: bytes, src: Address) -> IKESession | None:
        if len(data) < HEADER_LENGTH:
            return None
        icookie, rcookie, exchange = data[:8], data[8:16], data[18]
        session = self._by_icookie.get(icookie)
        if session is not None:
            return session
        if rcookie != ZERO_COOKIE or exchange not in (ExchangeType.IDENTITY_PROTECTION,
                                                      ExchangeType.AGGRESSIVE):
            return None
        session = next((s for s in self.sessions if s.remote == src and s.established), None)
        if session is None:
            if len(self.sessions) >= self.max_sessions:
                return None
            session = IKESession(self.config, "responder", self.local, src, self.random,
                                 self._allocate_spi)
            self.sessions.append(session)
            self.counters["sessions"] += 1
        return session

    def _allocate_spi(self) -> int:
        """Inbound SPIs unique over all peers: ESP finds its SA by SPI alone (RFC 4303 §2.1)."""
        while True:
            spi = int.from_bytes(self.random(4), "big")
            if spi >= 256 and spi not in self._spis:
                self._spis.add(spi)
                return spi

    def _collect(self, session: IKESession) -> None:
        for icookie in session.icookies():
            self._by_icookie[icookie] = session
        while (event := session.next_event()) is not None:
            self._events.append((session, event))
            if isinstance(event, ChildSADeleted):
                self._spis.discard(event.spi_in)
            elif isinstance(event, Phase1Established) and event.initial_contact:
                self._initial_contact(session, event.peer_id)
        if session.closed:
            self._closed_out += session.datagrams_to_send()
            self.sessions = [s for s in self.sessions if s is not session]
            self._by_icookie = {k: v for k, v in self._by_icookie.items() if v is not session}

    def _initial_contact(self, session: IKESession, peer_id: str) -> None:
        """The peer restarted: its old sessions (same identity, same public address) hold
        SAs it no longer has. Two clients behind one NAT differ in identity, so they stay."""
        for old in [s for s in self.sessions if s is not session and s.peer_id == peer_id
                    and s.remote[0] == session.remote[0]]:
            old.forget(f"replaced by a new connection of {peer_id} (INITIAL-CONTACT)")
            self._collect(old)

    def status(self) -> list[dict]:
        return [s.status() for s in self.sessions]

    def datagrams_to_send(self) -> list[Datagram]:
        for session in [s for s in self.sessions if s.closed]:
            self._collect(session)  # closed by an API call (delete, forget) on the session
        return [d for s in self.sessions for d in s.datagrams_to_send()] + self._drain_closed()

    def _drain_closed(self) -> list[Datagram]:
        out, self._closed_out = self._closed_out, []
        return out

    def next_event(self) -> tuple[IKESession, Event] | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        times = [t for s in self.sessions if (t := s.get_timer()) is not None]
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        for session in list(self.sessions):
            timer = session.get_timer()
            if timer is not None and now >= timer:
                session.handle_timer(now)
                self._collect(session)
