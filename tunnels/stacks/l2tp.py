"""L2TP sessions wired layer to layer, still without I/O: UDP ↔ tunnel ↔ session ↔ PPP ↔ IP.

Roles: the client is the LAC (sends SCCRQ, then places its call with ICRQ by default or OCRQ
when `call_mode` says so, as the chapter's Table 9.6 has it), the server the LNS on UDP 1701.
The PPP engine is the one PPTP uses, unchanged: L2TP data messages carry the same PPP frames
(address and control field included) that GRE does.

API (times are the caller's clock in seconds; nothing here reads a clock or a socket)
- `L2TPServer(ppp_config_for, tunnel_config, max_sessions=0, random=os.urandom)`:
  `ppp_config_for(session_id, peer_addr) -> PPPConfig | str | None` (a string refuses the
  call with a CDN saying why; None: the pool is empty). Shutdown: `begin_shutdown(reason,
  now)` (LCP Terminate-Request on every open call), until `shutdown_finished(now)`, then
  `stop_all(reason, now)` (StopCCN result 6, which clears the calls: no CDN).
- `L2TPClient(ppp_config, server, tunnel_config, server_port=1701, random=os.urandom)`:
  `start(now)` sends SCCRQ and queues the call; `hang_up(now, reason)` closes PPP, then CDN,
  then StopCCN; `done` is True once the StopCCN is acknowledged (or the channel gave up).
- Both: `receive_datagram(src, data, now)` (`src` = (address, port) of a UDP 1701 datagram),
  `send_datagram(ip_packet, now)` (from the TUN device; routed by destination address),
  `datagrams_to_send() -> [((address, port), bytes)]`, `datagrams_to_tun()`, `next_event()`
  (sessions.py's `SessionUp`, `SessionDown`, `ControlClosed`, `SessionEvent`, with
  conn_id = our Tunnel ID and call_id = our Session ID, unique in the whole stack),
  `get_timer()` / `handle_timer(now)` (one deadline heap: only what is due is touched),
  `status()`, `sessions` (by Session ID) and `tunnels` (by Tunnel ID).
- The pump's names: `receive_gre` = `receive_datagram`, `gre_to_send` = `datagrams_to_send`,
  and `control_to_send()` / `connections_to_close()` are empty (there is no TCP).

Demultiplexing is by dict only: control packets by our Tunnel ID (Tunnel ID 0: an SCCRQ, or
its retransmission, found by (peer address, port, the peer's Assigned Tunnel ID)); data by
(Tunnel ID, Session ID). A packet for a tunnel we do not have is answered once, statelessly,
with StopCCN result 2 / error 1 ("no control connection exists yet", §4.4.2) and counted.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from tunnels.errors import RemoteProtocolError
from tunnels.l2tp.avp import AVP, AVPType, GeneralError, ResultCode, StopCCNResult
from tunnels.l2tp.control import CallMode, Session, Tunnel, TunnelConfig, TunnelEvent
from tunnels.l2tp.messages import ControlMessage, ControlPacket, DataPacket, MessageType
from tunnels.l2tp.messages import decode_data, decode_packet, encode_data
from tunnels.ppp.config import PPPConfig
from tunnels.ppp.engine import PPPEngine
from tunnels.stacks.deadlines import DeadlineHeap
from tunnels.stacks.sessions import ControlClosed, SessionDown, SessionTable

Address = tuple[str, int]
DataFields = tuple[int, int, "int | None", bytes]  # Tunnel ID, Session ID, Ns, PPP frame
L2TP_PORT = 1701
NO_REPLY_REASON = ("no answer from the L2TP server on UDP 1701: is UDP 1701 filtered, or "
                   "does the server expect IPsec (L2TP/IPsec) first?")


@dataclass
class L2TPSession:
    """One PPP session carried by a tunnel."""

    tunnel: Tunnel
    control: Session
    peer: Address
    ppp: PPPEngine
    started: float
    up: bool = False
    address: str | None = None
    reason: str = ""

    @property
    def session_id(self) -> int:
        return self.control.session_id

    def status(self) -> dict:
        c = self.control
        return {"tunnel_id": self.tunnel.tunnel_id, "session_id": c.session_id,
                "peer_tunnel_id": self.tunnel.peer_tunnel_id,
                "peer_session_id": c.peer_session_id, "peer": list(self.peer),
                "mode": c.mode.value, "sequencing": c.sequencing, "up": self.up,
                "ppp": self.ppp.status(), "data": dict(c.counters)}


@dataclass
class _TunnelEntry:
    tunnel: Tunnel
    peer: Address
    key: tuple[str, int, int] | None = None  # (address, port, peer's Assigned Tunnel ID)


class _Stack(SessionTable):
    def __init__(self, tunnel_config: TunnelConfig, random: Callable[[int], bytes]):
        self.tunnel_config = tunnel_config
        self.random = random
        self.tunnels: dict[int, _TunnelEntry] = {}
        self.sessions: dict[int, L2TPSession] = {}  # by our Session ID (unique stack-wide)
        self.by_address: dict[str, L2TPSession] = {}
        self._by_packed: dict[bytes, L2TPSession] = {}
        self._by_peer: dict[tuple[str, int, int], int] = {}  # SCCRQ retransmissions
        self._session_ids: set[int] = set()  # allocated, up or not
        self._early: dict[int, list[tuple[Address, DataFields]]] = {}  # see _hold_early
        self._out: list[tuple[Address, bytes]] = []
        self._tun_out: list[bytes] = []
        self._events: deque = deque()
        self._deadlines = DeadlineHeap()
        self.counters = {"datagrams_in": 0, "malformed": 0, "unknown_tunnel": 0,
                         "unknown_session": 0, "wrong_source": 0, "data_in": 0,
                         "data_out": 0, "tun_no_session": 0, "data_out_of_order": 0,
                         "control_in": 0, "data_held_early": 0}

    # -- outputs -------------------------------------------------------------------------------
    def datagrams_to_send(self) -> list[tuple[Address, bytes]]:
        out, self._out = self._out, []
        return out

    gre_to_send = datagrams_to_send  # the pump's name for "packets to the peer"

    def control_to_send(self) -> list:
        return []

    def connections_to_close(self) -> list:
        return []

    def datagrams_to_tun(self) -> list[bytes]:
        out, self._tun_out = self._tun_out, []
        return out

    def next_event(self):
        return self._events.popleft() if self._events else None

    # -- inputs --------------------------------------------------------------------------------
    def receive_datagram(self, src: Address, data: bytes, now: float) -> bool:
        """One UDP 1701 payload. True when only data moved (a datagram for the TUN device,
        or a drop counted): no output, no event, no timer; a carrier (the L2TP/IPsec stack)
        may then skip its own drain."""
        self.counters["datagrams_in"] += 1
        fields = decode_data(data)  # the data path's common headers, in one struct call
        if fields is not None:
            return self._receive_data(src, fields, now)
        try:
            packet = decode_packet(data)
        except RemoteProtocolError:
            self.counters["malformed"] += 1
            return True
        if isinstance(packet, DataPacket):
            return self._receive_data(
                src, (packet.tunnel_id, packet.session_id, packet.ns, packet.payload), now)
        self._receive_control(src, packet, now)
        return False

    def _receive_control(self, src: Address, packet: ControlPacket, now: float) -> None:
        self.counters["control_in"] += 1
        entry = self.tunnels.get(packet.tunnel_id) if packet.tunnel_id else \
            self._sccrq_tunnel(src, packet, now)
        if entry is None:
            if packet.tunnel_id:
                self._no_such_tunnel(src, packet)
            return
        if src[0] != entry.peer[0]:
            self.counters["wrong_source"] += 1
            return
        entry.tunnel.receive_control(packet, now)
        self._after_tunnel(entry, now)

    receive_gre = receive_datagram


    def get_timer(self) -> float | None:
        return self._deadlines.next()

    def handle_timer(self, now: float) -> None:
        for kind, ident in self._deadlines.due(now):
            if kind == "t":
                entry = self.tunnels.get(ident)
                if entry is not None:
                    entry.tunnel.handle_timer(now)
                    self._after_tunnel(entry, now)
                continue
            session = self.sessions.get(ident)
            if session is not None:
                session.ppp.handle_timer(now)
                self._pump(session, now)

    def status(self) -> dict:
        return {"tunnels": [e.tunnel.status() | {"peer": list(e.peer)}
                            for e in self.tunnels.values()],
                "sessions": [s.status() for s in self.sessions.values()],
                "counters": dict(self.counters)}

    # -- internals -------------------------------------------------------------------------------
    def _default_session(self) -> L2TPSession | None:
        return None

    def _sccrq_tunnel(self, src: Address, packet: ControlPacket,
                      now: float) -> _TunnelEntry | None:
        return None

    def _no_such_tunnel(self, src: Address, packet: ControlPacket) -> None:
        """§4.4.2 error 1, answered once and statelessly; a ZLB or a StopCCN is not answered."""
        self.counters["unknown_tunnel"] += 1
        if packet.is_zlb:
            return
        try:
            message = ControlMessage.decode(packet.payload, self.tunnel_config.secret)
        except RemoteProtocolError:
            return
        if message.message_type == MessageType.StopCCN:
            return
        peer_tid = message.get(AVPType.ASSIGNED_TUNNEL_ID)
        stop = ControlMessage(MessageType.StopCCN, (
            AVP.u16(AVPType.ASSIGNED_TUNNEL_ID, 0),
            AVP.raw(AVPType.RESULT_CODE, ResultCode(
                StopCCNResult.GENERAL_ERROR, GeneralError.NO_CONTROL_CONNECTION,
                f"no tunnel {packet.tunnel_id} here").encode()))).encode()
        reply = ControlPacket(peer_tid.as_u16() if peer_tid else 0, 0, 0,
                              (packet.ns + 1) & 0xFFFF, stop)
        self._out.append((src, reply.encode()))

    def _allocate_tunnel_id(self) -> int:
        while True:
            tid = int.from_bytes(self.random(2), "big")
            if tid and tid not in self.tunnels:
                return tid

    def _allocate_session_id(self) -> int:
        """A Session ID unique in the whole stack (calls not yet up included), so events and
        status can name a session by it alone."""
        while True:
            sid = int.from_bytes(self.random(2), "big")
            if sid and sid not in self._session_ids:
                self._session_ids.add(sid)
                return sid

    def _schedule(self, key: tuple[str, int], deadline: float | None) -> None:
        self._deadlines.schedule(key, deadline)

    def _after_tunnel(self, entry: _TunnelEntry, now: float) -> None:
        tunnel = entry.tunnel
        while True:  # an event may make the tunnel send (tunnel-up -> ICRQ, ppp down -> CDN)
            for data in tunnel.packets_to_send(now):
                self._out.append((entry.peer, data))
            events = tunnel.events()
            if not events:
                break
            for event in events:
                self._on_tunnel_event(entry, event, now)
        if tunnel.closed:
            self._forget_tunnel(entry)
        else:
            self._schedule(("t", tunnel.tunnel_id), tunnel.get_timer())

    def _forget_tunnel(self, entry: _TunnelEntry) -> None:
        tid = entry.tunnel.tunnel_id
        if self.tunnels.get(tid) is entry:
            del self.tunnels[tid]
        if entry.key is not None and self._by_peer.get(entry.key) == tid:
            del self._by_peer[entry.key]
        self._schedule(("t", tid), None)

    def _on_tunnel_event(self, entry: _TunnelEntry, event: TunnelEvent, now: float) -> None:
        if event.kind == "session-up" and event.session_id is not None:
            self._start_session(entry, event.session_id, now)
        elif event.kind == "session-down" and event.session_id is not None:
            self._session_ids.discard(event.session_id)
            self._early.pop(event.session_id, None)
            session = self.sessions.get(event.session_id)
            if session is not None:
                self._end_session(session, event.reason, now, notify_peer=False)
        elif event.kind == "tunnel-down":
            reason = self._after_tunnel_down(entry, event.reason)
            self._events.append(ControlClosed(entry.tunnel.tunnel_id, reason))
        elif event.kind == "tunnel-up":
            self._on_tunnel_up(entry, now)

    def _on_tunnel_up(self, entry: _TunnelEntry, now: float) -> None:
        pass

    def _after_tunnel_down(self, entry: _TunnelEntry, reason: str) -> str:
        return reason

    def _ppp_config(self, entry: _TunnelEntry, session_id: int) -> PPPConfig | str | None:
        raise NotImplementedError

    def _start_session(self, entry: _TunnelEntry, session_id: int, now: float) -> None:
        control = entry.tunnel.sessions.get(session_id)
        if control is None:
            return
        config = self._ppp_config(entry, session_id)
        if not isinstance(config, PPPConfig):  # refused: the reason, or None (no address)
            entry.tunnel.close_session(session_id, config or "no address left in the pool",
                                       now, 4)
            return
        session = L2TPSession(entry.tunnel, control, entry.peer,
                              PPPEngine(config, random=self.random), now)
        self.sessions[session_id] = session
        session.ppp.open(now)
        self._pump(session, now)
        for src, fields in self._early.pop(session_id, []):
            self._receive_data(src, fields, now)

    def _hold_early(self, src: Address, fields: DataFields) -> bool:
        """Data for a session whose ICCN (or OCCN) has not been delivered yet: the peer's PPP
        starts when it sends ICCN, and the ICCN may wait behind the control channel's window
        or be lost. A few frames are kept and replayed when the session comes up (as PPTP
        holds GRE that overtakes its Outgoing-Call-Reply), not lost to a 3 s LCP restart."""
        tunnel_id, session_id = fields[0], fields[1]
        entry = self.tunnels.get(tunnel_id)
        control = entry.tunnel.sessions.get(session_id) if entry else None
        if control is None or src[0] != entry.peer[0]:  # type: ignore[union-attr]
            return False
        held = self._early.setdefault(session_id, [])
        if len(held) < 8:
            held.append((src, fields))
            self.counters["data_held_early"] += 1
        return True

    def _receive_data(self, src: Address, fields: DataFields, now: float) -> bool:
        """A data message; True when only data moved (see receive_datagram)."""
        self.counters["data_in"] += 1
        tunnel_id, session_id, ns, frame = fields
        session = self.sessions.get(session_id)
        if session is None or session.tunnel.tunnel_id != tunnel_id:
            if not self._hold_early(src, fields):
                self.counters["unknown_session"] += 1
            return True
        if src[0] != session.peer[0]:
            self.counters["wrong_source"] += 1
            return True
        control = session.control
        if ns is not None:
            # §5.4 data sequencing: an older Ns is out of order and dropped (as GRE's "newest
            # wins"); the peer sends sequence numbers, so we do too from now on.
            if control.data_nr and (control.data_nr - ns) & 0xFFFF < 0x8000 and \
                    ns != control.data_nr:
                control.counters["data_out_of_order"] += 1
                self.counters["data_out_of_order"] += 1
                return True
            control.data_nr = (ns + 1) & 0xFFFF
            control.sequencing = True
        control.counters["data_in"] += 1
        datagram = session.ppp.receive_data(frame, now)
        if datagram is not None:  # an IP frame in order: no event, no frame, no PPP timer
            self._tun_out.append(datagram)
            return True
        self._pump(session, now)
        return False

    def _send_on(self, s: L2TPSession, packet: bytes, now: float) -> None:
        """A TUN datagram straight into a data message: sealing it queues no other frame
        nor event and moves no PPP timer, so neither the pump nor a reschedule is needed."""
        frame = s.ppp.seal_datagram(packet)
        if frame is not None:
            self._out.append((s.peer, self._data_message(s, frame)))

    def _data_message(self, s: L2TPSession, frame: bytes) -> bytes:
        """A data message for the peer's session, with Ns when sequencing is on (§5.4)."""
        control = s.control
        control.counters["data_out"] += 1
        if not control.sequencing:
            return encode_data(s.tunnel.peer_tunnel_id, control.peer_session_id, frame)
        ns = control.data_ns
        control.data_ns = (ns + 1) & 0xFFFF
        return encode_data(s.tunnel.peer_tunnel_id, control.peer_session_id, frame, ns)

    def _send_frame(self, s: L2TPSession, frame: bytes) -> None:
        self._out.append((s.peer, self._data_message(s, frame)))

    def _call_ids(self, s: L2TPSession) -> tuple[int, int]:
        return s.tunnel.tunnel_id, s.session_id

    def _peer_name(self, s: L2TPSession) -> str:
        return f"{s.peer[0]}:{s.peer[1]}"

    def _reschedule(self, s: L2TPSession, moved: bool) -> None:
        """PPP's timers only (L2TP data has no ack timer of its own), recomputed when PPP
        did more than carry datagrams (SessionTable._pump); a deadline that moved later
        costs one early no-op handle_timer."""
        key = ("s", s.session_id)
        if moved or self._deadlines.get(key) is None:
            self._schedule(key, s.ppp.get_timer())

    def _end_session(self, s: L2TPSession, reason: str, now: float, notify_peer: bool) -> None:
        if self.sessions.pop(s.session_id, None) is None:
            return
        self._schedule(("s", s.session_id), None)
        s.reason = reason
        self._address_down(s)
        if s.ppp.phase.value != "dead":
            s.ppp.lower_layer_down(now, reason)
            for frame in s.ppp.frames_to_send():
                self._out.append((s.peer, encode_data(s.tunnel.peer_tunnel_id,
                                                      s.control.peer_session_id, frame)))
        self._events.append(SessionDown(s.tunnel.tunnel_id, s.session_id, reason))
        entry = self.tunnels.get(s.tunnel.tunnel_id)
        if entry is not None:
            if notify_peer and not self._ended_by_shutdown(s.session_id, s):
                entry.tunnel.close_session(s.session_id, reason, now)
            self._after_session_end(entry, reason, now)
            self._after_tunnel(entry, now)

    def _after_session_end(self, entry: _TunnelEntry, reason: str, now: float) -> None:
        pass


class L2TPServer(_Stack):
    """The LNS: many tunnels, many sessions per tunnel, one UDP 1701 socket."""

    def __init__(self, ppp_config_for: Callable[[int, str], PPPConfig | str | None],
                 tunnel_config: TunnelConfig | None = None, max_sessions: int = 0,
                 random: Callable[[int], bytes] = os.urandom):
        super().__init__(tunnel_config or TunnelConfig(), random)
        self.ppp_config_for = ppp_config_for
        self.max_sessions = max_sessions
        self.counters["sessions_refused_full"] = 0

    def _sccrq_tunnel(self, src: Address, packet: ControlPacket,
                      now: float) -> _TunnelEntry | None:
        """Tunnel ID 0: a new SCCRQ, or the retransmission of one we already answered."""
        if packet.is_zlb:
            self.counters["unknown_tunnel"] += 1
            return None
        try:
            message = ControlMessage.decode(packet.payload, self.tunnel_config.secret)
            assigned = message.get(AVPType.ASSIGNED_TUNNEL_ID)
        except RemoteProtocolError:
            message, assigned = None, None
        if message is None or message.message_type != MessageType.SCCRQ or assigned is None:
            self._no_such_tunnel(src, packet)
            return None
        try:
            key = (src[0], src[1], assigned.as_u16())
        except RemoteProtocolError:
            self.counters["malformed"] += 1
            return None
        known = self._by_peer.get(key)
        if known is not None and known in self.tunnels:
            return self.tunnels[known]  # its channel sees a duplicate Ns and re-acks
        tunnel = Tunnel(self.tunnel_config, self._allocate_tunnel_id(), initiator=False,
                        allocate_session_id=self._session_id_for_new_call,
                        random=self.random)
        entry = _TunnelEntry(tunnel, src, key)
        self.tunnels[tunnel.tunnel_id] = entry
        self._by_peer[key] = tunnel.tunnel_id
        return entry

    def _session_id_for_new_call(self) -> int:
        if self.max_sessions and len(self._session_ids) >= self.max_sessions:
            self.counters["sessions_refused_full"] += 1
            return 0  # the tunnel answers CDN result 4 (no facilities, temporary)
        return self._allocate_session_id()

    def _ppp_config(self, entry: _TunnelEntry, session_id: int) -> PPPConfig | str | None:
        return self.ppp_config_for(session_id, entry.peer[0])

    def stop_all(self, reason: str, now: float) -> None:
        """Shutdown, after begin_shutdown's LCP Terminate: StopCCN result 6 ("requester is
        being shut down") on every tunnel; the sessions still up go with it."""
        for entry in list(self.tunnels.values()):
            entry.tunnel.stop(reason, now, StopCCNResult.SHUTTING_DOWN)
            self._after_tunnel(entry, now)


class L2TPClient(_Stack):
    """A LAC (remote access client or calling router): one tunnel, one session."""

    def __init__(self, ppp_config: PPPConfig, server: str,
                 tunnel_config: TunnelConfig | None = None, server_port: int = L2TP_PORT,
                 random: Callable[[int], bytes] = os.urandom):
        super().__init__(tunnel_config or TunnelConfig(), random)
        self.ppp_config = ppp_config
        self.server = (server, server_port)
        self.reason = ""
        self.session_id = 0
        self.tunnel_id = 0

    def start(self, now: float, mode: CallMode | None = None) -> None:
        tunnel = Tunnel(self.tunnel_config, self._allocate_tunnel_id(), initiator=True,
                        allocate_session_id=self._allocate_session_id, random=self.random)
        self.tunnel_id = tunnel.tunnel_id
        entry = _TunnelEntry(tunnel, self.server)
        self.tunnels[tunnel.tunnel_id] = entry
        tunnel.start(now)
        self.session_id = tunnel.place_call(now, mode)
        self._after_tunnel(entry, now)

    @property
    def done(self) -> bool:
        """The tunnel is gone, or closing with nothing left unacknowledged either way (ours
        acked by the peer, the peer's acked by our ZLB) and not `lingering`."""
        entry = self.tunnels.get(self.tunnel_id)
        if entry is None:
            return True
        t = entry.tunnel
        return t.state.value in ("closing", "closed") and (
            (t.channel.idle() and not t.channel.ack_owed() and not t.stopped_by_peer)
            or bool(t.channel.failed))

    @property
    def lingering(self) -> bool:
        """The peer's StopCCN is acked and the tunnel waits out its linger (RFC 2661 §5.7: the
        receiver "MUST ... maintain enough control connection state to properly accept StopCCN
        retransmissions over at least a full retransmission cycle", in case our ZLB was lost):
        nothing but the control channel is left, and a re-sent StopCCN is acked again."""
        entry = self.tunnels.get(self.tunnel_id)
        return entry is not None and entry.tunnel.stopped_by_peer and not self.done

    def _ppp_config(self, entry: _TunnelEntry, session_id: int) -> PPPConfig | str | None:
        return self.ppp_config

    def _default_session(self) -> L2TPSession | None:
        return self.sessions.get(self.session_id)

    def _after_session_end(self, entry: _TunnelEntry, reason: str, now: float) -> None:
        """A client whose call ended hangs up the tunnel too (StopCCN), as Windows does."""
        self.reason = self.reason or reason
        if not entry.tunnel.sessions:
            entry.tunnel.stop(self.reason, now)

    def _after_tunnel_down(self, entry: _TunnelEntry, reason: str) -> str:
        if entry.tunnel.channel.failed and entry.tunnel.peer_tunnel_id == 0:
            reason = NO_REPLY_REASON  # our SCCRQ was never acknowledged
        self.reason = self.reason or reason
        return self.reason

    def hang_up(self, now: float, reason: str = "user hung up") -> None:
        self.reason = self.reason or reason
        session = self.sessions.get(self.session_id)
        entry = self.tunnels.get(self.tunnel_id)
        if session is not None:
            session.ppp.close(now, reason)
            self._pump(session, now)
        elif entry is not None:
            entry.tunnel.stop(reason, now)
            self._after_tunnel(entry, now)
