"""What the PPTP and L2TP stacks share around their calls (each `Session` has a `ppp` engine
and an `up` flag): their events, a call's PPP output and events after each input (`_pump`),
routing a TUN datagram to its call by destination address, a verifier's later answer, the
server hanging a call up, the public address lookup the server's TUN fan-out uses, the
address index both keep, and the server's shutdown of every call's PPP link. Each stack
supplies `sessions`, `by_address`, `_by_packed`, `_send_frame`, `_call_ids`, `_peer_name`,
`_reschedule`, `_end_session`, `_default_session()`, `_events`, `_tun_out` and `counters`."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from tunnels.ppp import events as pev
from tunnels.ppp.auth.base import Verdict
from tunnels.ppp.fsm import State

DATA_PROTOCOLS = (b"\x00\xfd", b"\x00\x21")  # PPP protocol fields of MPPE and IP frames


# The stacks' events (PPTP: conn_id is the control connection, call_id our Call ID; L2TP: the
# tunnel ID and the session ID)
@dataclass(frozen=True, slots=True)
class SessionUp:
    conn_id: int
    call_id: int
    peer: str
    username: str
    local_address: str
    peer_address: str
    dns: tuple[str, ...]
    nbns: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SessionDown:
    conn_id: int
    call_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class ControlClosed:
    conn_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class SessionEvent:
    """A PPP event of one session, for logs and status."""

    conn_id: int
    call_id: int
    event: pev.PPPEvent


StackEvent = SessionUp | SessionDown | ControlClosed | SessionEvent


# How long a stopping server waits for the Terminate-Acks of its calls, in all. One round
# trip is enough for a peer that is there; RFC 1661 §4.6's Restart timer (3 s) is the time
# to retransmit a lost Terminate-Request, and a shutdown does not retransmit: a call still
# unanswered then gets the tunnel's control teardown (PPTP StopCCRQ, L2TP StopCCN), which
# ends it at the peer anyway. 1 s keeps the stop well inside a supervisor's SIGKILL delay
# (testbed Daemon.stop: 5 s).
SHUTDOWN_GRACE = 1.0


class SessionTable:
    sessions: dict[int, Any]
    by_address: dict[str, Any]
    _by_packed: dict[bytes, Any]
    counters: dict[str, int]
    # begin_shutdown replaces both with dicts of its own; this empty one is never mutated
    _terminating: dict[int, Any] = {}
    _pending: dict[int, Any] = {}

    _events: Any  # deque[StackEvent]
    _tun_out: Any  # deque[bytes]

    def _send_frame(self, s: Any, frame: bytes) -> None:
        """One PPP frame of the call into its tunnel (GRE, an L2TP data message)."""
        raise NotImplementedError

    def _call_ids(self, s: Any) -> tuple[int, int]:
        """(conn_id or tunnel ID, call_id or session ID: the key of `sessions`)."""
        raise NotImplementedError

    def _peer_name(self, s: Any) -> str:
        """The call's peer as SessionUp names it (built only then, not per packet)."""
        raise NotImplementedError

    def _reschedule(self, s: Any, moved: bool) -> None:
        """The call's deadline after `_pump`; `moved`: PPP did more than carry datagrams."""
        raise NotImplementedError

    def _end_session(self, s: Any, reason: str, now: float, notify_peer: bool) -> None:
        raise NotImplementedError

    def _pump(self, s: Any, now: float) -> None:
        """After any input to a call's PPP engine: its frames into the tunnel, a received
        datagram to the TUN queue, other events to the stack's (NetworkOpened also as
        SessionUp, its address indexed; LinkTerminated ends the call), then the call's
        deadline. Carrying datagrams arms no PPP timer, so then `moved` stays False and the
        stack may keep the deadline (per packet O(1), PPP's timers not scanned)."""
        moved = False
        ppp, send = s.ppp, self._send_frame
        for frame in ppp.frames_to_send():
            if frame[2:4] not in DATA_PROTOCOLS:
                moved = True
            send(s, frame)
        while (event := ppp.next_event()) is not None:
            if type(event) is pev.DatagramReceived:
                self._tun_out.append(event.packet)
                continue
            moved = True
            outer, call = self._call_ids(s)
            self._events.append(SessionEvent(outer, call, event))
            if isinstance(event, pev.NetworkOpened):
                self._address_up(s, event.peer_address)
                self._events.append(SessionUp(outer, call, self._peer_name(s), ppp.username,
                                              event.local_address, event.peer_address,
                                              event.dns, event.nbns))
            elif isinstance(event, pev.LinkTerminated):
                self._end_session(s, event.reason, now, notify_peer=True)
                return
        if self.sessions.get(self._call_ids(s)[1]) is s:
            self._reschedule(s, moved)

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

    # -- shutdown ------------------------------------------------------------------------------
    shutdown_deadline: float | None = None  # set by begin_shutdown

    def begin_shutdown(self, reason: str, now: float, grace: float = SHUTDOWN_GRACE) -> int:
        """The server stops: RFC 1661 §5.5 Terminate-Request (the automaton's Close event) on
        every call whose LCP is open; its Terminate-Ack ends the call (SessionDown). Calls
        whose link is not open yet are left to the tunnel's control teardown. The caller
        waits until `shutdown_finished`, then tears the control connections down (stop_all),
        which clears the calls at the peer. Returns how many calls were closed."""
        self.shutdown_deadline = now + grace
        self._terminating = {cid: s for cid, s in self.sessions.items()
                             if s.ppp.lcp.state is State.OPENED}
        self._pending = dict(self._terminating)  # shutdown_finished prunes it
        for s in self._terminating.values():
            s.ppp.close(now, reason)
            self._pump(s, now)
        return len(self._terminating)

    def _ended_by_shutdown(self, key: int, s: Any) -> bool:
        """A call whose PPP the shutdown closed gets no call-clearing message of its own:
        the control teardown that follows clears it (RFC 2637 §2.3, StopCCRQ: "all active
        user calls are implicitly cleared"; RFC 2661 §6.4, StopCCN: "all active sessions are
        implicitly cleared (without sending any explicit call control messages)"). A CDN
        would make a client that hangs its tunnel up after its last call
        (ours, Windows) send its own StopCCRQ/StopCCN, crossing ours; over L2TP that
        StopCCN wants an ack a stopping server no longer sends (its ZLB waits 100 ms), and
        the client would retransmit it into the void for its stop grace."""
        return self._terminating.get(key) is s

    def shutdown_finished(self, now: float) -> bool:
        """Every call closed by begin_shutdown has ended, or its deadline has passed (a peer
        that never acks cannot hold the stop up)."""
        if self.shutdown_deadline is None or now >= self.shutdown_deadline:
            return True
        pending = self._pending  # ended calls leave it once: O(calls) over the whole wait
        while pending:
            cid, s = next(iter(pending.items()))
            if self.sessions.get(cid) is s:
                return False
            del pending[cid]
        return True

    def shutdown_report(self) -> dict[str, int]:
        """Calls closed by LCP, how many of those acked (RFC 1661 §4.1 RTA in Closing: LCP
        Closed; a carrier cleared first leaves it Initial), how many had not ended."""
        terminating = self._terminating
        ended = [s for cid, s in terminating.items() if self.sessions.get(cid) is not s]
        return {"lcp_terminated": len(terminating),
                "acked": sum(1 for s in ended if s.ppp.lcp.state is State.CLOSED),
                "unanswered": len(terminating) - len(ended)}

    @property
    def by_packed_address(self) -> dict[bytes, Any]:
        """Sessions up, by the client's tunnel address (4 octets): the TUN fan-out's lookup."""
        return self._by_packed
