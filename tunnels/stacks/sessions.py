"""What the PPTP and L2TP stacks share around their calls (each `Session` has a `ppp` engine
and an `up` flag): routing a TUN datagram to its call by destination address, a verifier's
later answer, the server hanging a call up, and the public address lookup the server's TUN
fan-out uses, and the address index both keep. Each stack supplies `sessions`,
`by_address`, `_by_packed`, `_pump(session, now)`, `_default_session()` and `counters`."""

from __future__ import annotations

import ipaddress
from typing import Any

from tunnels.ppp.auth.base import Verdict


class SessionTable:
    sessions: dict[int, Any]
    by_address: dict[str, Any]
    _by_packed: dict[bytes, Any]
    counters: dict[str, int]

    def _pump(self, s: Any, now: float) -> None:
        raise NotImplementedError

    def _default_session(self) -> Any:
        return None

    def _address_up(self, s: Any, address: str) -> None:
        """IPCP gave the call its address: TUN datagrams for it now reach this session."""
        s.up, s.address = True, address
        self.by_address[address] = s
        self._by_packed[ipaddress.IPv4Address(address).packed] = s

    def _address_down(self, s: Any) -> None:
        if s.address is not None and self.by_address.get(s.address) is s:
            del self.by_address[s.address]
            self._by_packed.pop(ipaddress.IPv4Address(s.address).packed, None)

    def send_datagram(self, packet: bytes, now: float) -> None:
        """An IPv4 packet from the TUN device, routed to the session owning its destination."""
        if len(packet) < 20:
            return
        session = self._by_packed.get(packet[16:20]) or self._default_session()
        if session is None or not session.up:
            self.counters["tun_no_session"] += 1
            return
        self._send_on(session, packet, now)

    def _send_on(self, s: Any, packet: bytes, now: float) -> None:
        """One datagram into a session that is up; a stack may carry it without the pump."""
        s.ppp.send_datagram(packet, now)
        self._pump(s, now)

    def complete_authentication(self, call_id: int, verdict: Verdict, now: float) -> bool:
        """A verifier's later answer (RADIUS) for one call; False when the call is gone."""
        s = self.sessions.get(call_id)
        if s is None:
            return False
        s.ppp.complete_authentication(verdict, now)
        self._pump(s, now)
        return True

    def disconnect(self, call_id: int, reason: str, now: float) -> bool:
        """The server hangs one call up (LCP Terminate, then the call is cleared)."""
        s = self.sessions.get(call_id)
        if s is None:
            return False
        s.ppp.close(now, reason)
        self._pump(s, now)
        return True

    @property
    def by_packed_address(self) -> dict[bytes, Any]:
        """Sessions up, by the client's tunnel address (4 octets): the TUN fan-out's lookup."""
        return self._by_packed
