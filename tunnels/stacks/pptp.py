"""PPTP sessions wired layer to layer, still without I/O: control ↔ call ↔ GRE ↔ PPP ↔ IP.

Roles: the client is the PNS (sends SCCRQ and Outgoing-Call-Request, as Windows, pptp-linux
and the Ixia in tests/data/pptp do), the server the PAC (answers SCCRP/OCRP on TCP 1723).

API (all times are the caller's clock in seconds; nothing here reads a clock or a socket)
- `PPTPServer(ppp_config_for, host_name="vpnlab", max_calls=0, echo_interval=60.0,
  gre_timeout=15.0, random=os.urandom)`: `ppp_config_for(call_id, peer_addr) -> PPPConfig |
  str | None` gives each call its PPP settings (e.g. an address from the daemon's pool); a
  string clears the call with that reason in the CDN, None as "no address left".
  `max_calls` > 0 refuses further OCRQs with Busy / No-Resource.
  Inputs: `connection_made(conn_id, peer_addr, now)`, `receive_control(conn_id, data, now)`
  (TCP bytes in any chunking), `connection_lost(conn_id, now)`. Shutdown:
  `begin_shutdown(reason, now)` (LCP Terminate-Request on every open call, sessions.py),
  `shutdown_finished(now)`, `shutdown_report()`, then `stop_all(reason, now)` (StopCCRQ,
  which clears the calls: no Call-Disconnect-Notify for those LCP ended).
- `PPTPClient(ppp_config, server, host_name="vpnlab-client", echo_interval=60.0,
  gre_timeout=15.0, random=os.urandom)`: `start(now)` sends SCCRQ (its one control connection
  is conn_id 0), then OCRQ when connected; `hang_up(now, reason)` closes PPP, then
  CCRQ → CDN → StopCCRQ → StopCCRP; `reason` says why the client went down; `call_id` ours.
- Both: `receive_gre(src_addr, packet, now)` (the IP payload of a protocol-47 packet; demux by
  the key's Call ID, which is ours, with one dict lookup; a packet from another source than
  the control connection's peer is dropped and counted), `send_datagram(ip_packet, now)` (an
  IPv4 packet from the TUN device, routed by destination address to its session; the client's
  one session takes everything), `get_timer() -> float | None` (the one next deadline, from a
  heap: O(log n), never a scan) and `handle_timer(now)` (only the due connections/sessions).
- Outputs, drained by the caller after every input: `control_to_send() -> [(conn_id, bytes)]`,
  `connections_to_close() -> [conn_id]` (close that TCP connection after writing its bytes),
  `gre_to_send() -> [(dst_addr, bytes)]` (send from the address the control connection
  reached), `datagrams_to_tun() -> [bytes]`, `next_event() -> StackEvent | None`:
  `SessionUp(conn_id, call_id, peer, username, local_address, peer_address, dns, nbns)`,
  `SessionDown(conn_id, call_id, reason)`, `ControlClosed(conn_id, reason)`,
  `SessionEvent(conn_id, call_id, ppp_event)`.
- Status: `status()` (JSON-able: sessions with call IDs, peer, PPP status and GRE counters;
  connections with FSM state and peer vendor; stack counters), `sessions` (dict by our Call
  ID), `connections` (dict by conn_id; `.control` is the `ControlConnection`).
- Failure reasons by name: `NO_GRE_REASON` when the call is up but no GRE arrives within
  `gre_timeout` (GRE filtered, or a NAT without the PPTP helper); echo timeouts say
  "no answer to the control connection's Echo-Request within Ns".
"""

from __future__ import annotations

import os
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from tunnels.errors import RemoteProtocolError
from tunnels.gre.header import GREPacket, decode_data
from tunnels.gre.session import GRESession
from tunnels.ppp.config import PPPConfig
from tunnels.ppp.engine import PPPEngine
from tunnels.ppp.fsm import State
from tunnels.stacks.deadlines import DeadlineHeap
from tunnels.pptp.control import ControlConnection, ControlEvent
from tunnels.pptp.messages import ControlStream, StopReason
from tunnels.stacks.sessions import (  # the stacks' events, defined once for both
    ControlClosed,
    SessionDown,
    SessionEvent,
    SessionTable,
    SessionUp,
    StackEvent,
)

__all__ = ["NO_GRE_REASON", "ControlClosed", "PPTPClient", "PPTPServer", "SessionDown",
           "SessionEvent", "SessionUp", "StackEvent"]

# The data path's GRE data packets (header.encode_data's shapes), with the PPP frame's
# address, control and protocol as one more 32-bit field on receive.
_GRE_FLAGS = 0x30  # K and S
_GRE_DATA = struct.Struct("!BBHHHI")
_GRE_DATA_ACK = struct.Struct("!BBHHHII")
_GRE_HEAD = struct.Struct("!BBHHHII")
_GRE_ACK_HEAD = struct.Struct("!BBHHHIII")
_PPP_MPPE, _PPP_IP = b"\xff\x03\x00\xfd", b"\xff\x03\x00\x21"
_PPP_MPPE_U32, _PPP_IP_U32 = 0xFF0300FD, 0xFF030021
_OPENED = State.OPENED
NO_GRE_REASON = ("control connection up, no GRE received: is GRE (IP protocol 47) filtered or "
                 "not translated by a NAT without the PPTP helper?")


@dataclass
class Session:
    conn_id: int
    call_id: int
    peer: str
    gre: GRESession
    ppp: PPPEngine
    started: float
    last_gre: float | None = None
    up: bool = False
    address: str | None = None
    reason: str = ""

    def status(self) -> dict:
        return {"conn_id": self.conn_id, "call_id": self.call_id,
                "peer_call_id": self.gre.peer_call_id, "peer": self.peer, "up": self.up,
                "ppp": self.ppp.status(), "gre": dict(self.gre.counters)}


@dataclass
class _Connection:
    control: ControlConnection
    stream: ControlStream
    peer: str


class _Stack(SessionTable):
    def __init__(self, random: Callable[[int], bytes], gre_timeout: float):
        self.random = random
        self.gre_timeout = gre_timeout
        self.connections: dict[int, _Connection] = {}
        self.sessions: dict[int, Session] = {}  # by our call ID
        self.by_address: dict[str, Session] = {}  # by the peer's tunnel address
        self._by_packed: dict[bytes, Session] = {}  # the same, keyed by the 4 address octets
        self._control_out: list[tuple[int, bytes]] = []
        self._close: list[int] = []
        self._gre_out: list[tuple[str, bytes]] = []
        self._tun_out: list[bytes] = []
        self._events: deque[StackEvent] = deque()
        self._early: dict[int, list[tuple[str, bytes]]] = {}
        # One deadline per control connection ("c", conn_id) and per session ("s", call_id),
        # kept in a heap with lazy deletion: get_timer() and handle_timer() touch only what
        # is due, never every session (the per-packet path stays O(1) in the session count).
        self._deadlines = DeadlineHeap()
        self.counters = {"gre_in": 0, "gre_unknown_call": 0, "gre_wrong_source": 0,
                         "gre_malformed": 0, "tun_no_session": 0}

    # -- outputs -------------------------------------------------------------------------------
    def control_to_send(self) -> list[tuple[int, bytes]]:
        out, self._control_out = self._control_out, []
        return out

    def connections_to_close(self) -> list[int]:
        out, self._close = self._close, []
        return out

    def gre_to_send(self) -> list[tuple[str, bytes]]:
        out, self._gre_out = self._gre_out, []
        return out

    def datagrams_to_tun(self) -> list[bytes]:
        out, self._tun_out = self._tun_out, []
        return out

    def next_event(self) -> StackEvent | None:
        return self._events.popleft() if self._events else None

    def drain_data(self) -> tuple[list[tuple[str, bytes]], list[bytes]] | None:
        """gre_to_send() and datagrams_to_tun() in one call when they are all that is queued
        (the pump's common wake-up, runtime/pump.py); None, taking nothing, when a control
        message, an event or a connection to close waits too."""
        if self._control_out or self._events or self._close:
            return None
        gre, self._gre_out = self._gre_out, []
        tun, self._tun_out = self._tun_out, []
        return gre, tun

    # -- inputs --------------------------------------------------------------------------------
    def receive_control(self, conn_id: int, data: bytes, now: float) -> None:
        conn = self.connections.get(conn_id)
        if conn is None:
            return
        conn.control.receive(data, conn.stream, now)
        self._after_control(conn_id, now)

    def connection_lost(self, conn_id: int, now: float) -> None:
        conn = self.connections.pop(conn_id, None)
        if conn is None:
            return
        conn.control._closed(conn.control.reason or "TCP connection closed by the peer")
        self._after_control(conn_id, now, conn)

    def send_datagram(self, packet: bytes, now: float) -> None:
        """SessionTable.send_datagram with the common case in one method: session up, IPv4,
        IPCP open, the peer's window not full or not enforced. GRE header, PPP framing and
        MPPE are built in one buffer (the MPPE state's encrypt takes them as its head);
        GRESession's fields and every counter move exactly as encapsulate() and
        seal_datagram() move them. Anything else goes the general way (_send_on), which
        counts it."""
        if len(packet) < 20:
            return
        s = self._by_packed.get(packet[16:20]) or self._default_session()
        if s is None or not s.up:
            self.counters["tun_no_session"] += 1
            return
        ppp, gre = s.ppp, s.gre
        seq, peer_acked, window = gre.next_seq, gre.last_acked_by_peer, gre.peer_window
        encryptor = ppp.encryptor
        full = window and (seq if peer_acked is None
                           else (seq - peer_acked - 1) & 0xFFFFFFFF) >= window
        if (packet[0] >> 4 != 4 or ppp.ipcp.state is not _OPENED
                or (full and gre.enforce_window)
                or (encryptor is None and (ccp := ppp.ccp_policy) is not None and ccp.required)):
            self._send_on(s, packet, now)
            return
        if full:  # sent anyway, as encapsulate() does without enforce_window
            gre.counters["window_exceeded"] += 1
        n = len(packet)
        length = n + 8 if encryptor is not None else n + 4  # PPP head (+ MPPE header, protocol)
        ack = gre.last_received
        if ack is None or ack == gre.last_acked_by_us:
            head = _GRE_DATA.pack(_GRE_FLAGS, 1, 0x880B, length, gre.peer_call_id, seq)
        else:  # the ack we owe rides along (encapsulate's piggybacking)
            gre.last_acked_by_us, gre.ack_deadline, gre.unacked_in = ack, None, 0
            head = _GRE_DATA_ACK.pack(_GRE_FLAGS, 0x81, 0x880B, length, gre.peer_call_id,
                                      seq, ack)
        gre.next_seq = (seq + 1) & 0xFFFFFFFF
        gre.counters["sent"] += 1
        counters = ppp.counters
        counters["ip_out"] += 1
        counters["ip_out_octets"] += n
        counters["frames_out"] += 1
        if encryptor is not None:
            out = encryptor.keys.encrypt(packet, b"\x00\x21", head + _PPP_MPPE)
        else:
            out = b"".join((head, _PPP_IP, packet))
        self._gre_out.append((s.peer, out))

    def receive_gre(self, src: str, packet: bytes, now: float) -> None:
        """The common case in one method: a data packet of a known call from its peer, in
        order, carrying an MPPE frame the decryptor takes in order (or an IP frame without
        MPPE), both LCP and IPCP open. GRESession's fields and every counter move as on the
        general path (_receive_gre), which takes every other packet and counts its drops."""
        n = len(packet)
        if n < 20 or packet[0] != _GRE_FLAGS:
            self._receive_gre(src, packet, now)
            return
        flags2 = packet[1]
        if flags2 == 0x81:
            _, _, protocol, length, call_id, seq, ack, ppp_head = _GRE_ACK_HEAD.unpack_from(packet)
            offset = 20
        elif flags2 == 1:
            _, _, protocol, length, call_id, seq, ppp_head = _GRE_HEAD.unpack_from(packet)
            ack, offset = None, 16
        else:
            self._receive_gre(src, packet, now)
            return
        session = self.sessions.get(call_id)
        if (protocol != 0x880B or n != offset - 4 + length or session is None
                or src != session.peer):
            self._receive_gre(src, packet, now)
            return
        gre, ppp = session.gre, session.ppp
        last = gre.last_received
        if ((last is not None and not 0 < (seq - last) & 0xFFFFFFFF < 0x80000000)
                or ppp.lcp.state is not _OPENED or ppp.ipcp.state is not _OPENED):
            self._receive_gre(src, packet, now)
            return
        decryptor = ppp.decryptor
        if decryptor is not None:
            if ppp_head != _PPP_MPPE_U32 or decryptor.discarding or decryptor._skipped:
                self._receive_gre(src, packet, now)
                return
            plain = decryptor.keys.decrypt_next(packet, offset)
            if plain is None:  # not the in-order case: nothing changed, the general way
                self._receive_gre(src, packet, now)
                return
            decryptor.counters["decrypted"] += 1
        elif ppp_head != _PPP_IP_U32 or ((ccp := ppp.ccp_policy) is not None and ccp.required):
            self._receive_gre(src, packet, now)
            return
        else:
            plain = None
        self.counters["gre_in"] += 1
        session.last_gre = now
        # GRESession.receive_data, from here on the in-order case
        if ack is not None:
            peer_acked = gre.last_acked_by_peer
            if peer_acked is None or 0 < (ack - peer_acked) & 0xFFFFFFFF < 0x80000000:
                gre.last_acked_by_peer = ack
        gre.last_received = seq
        gre.counters["received"] += 1
        gre.unacked_in = unacked = gre.unacked_in + 1
        deadline = gre.ack_deadline
        if unacked >= (gre.own_window // 2 or 1):
            gre.ack_deadline = now
        elif deadline is None:
            gre.ack_deadline = now + gre.ack_delay
        # PPPEngine.receive_data
        counters = ppp.counters
        counters["frames_in"] += 1
        ppp._now = now
        if plain is None:
            counters["ip_in"] += 1
            counters["ip_in_octets"] += n - offset
            self._tun_out.append(packet[offset:])
        elif plain[:2] == b"\x00\x21":
            counters["ip_in"] += 1
            counters["ip_in_octets"] += len(plain) - 2
            self._tun_out.append(plain[2:])
        else:
            counters["discarded"] += 1
            self._pump(session, now)
            return
        # _reschedule(session, False), which only an ack deadline set just now can move (an
        # unchanged one was seen by the reschedule of the packet that set it)
        if gre.ack_deadline != deadline:
            self._reschedule(session, False)

    def _receive_gre(self, src: str, packet: bytes, now: float) -> None:
        """Every GRE packet but the common case: decodes, demuxes, counts each drop."""
        self.counters["gre_in"] += 1
        fields = decode_data(packet)
        if fields is None:
            try:
                gre = GREPacket.decode(packet)
            except RemoteProtocolError:
                self.counters["gre_malformed"] += 1
                return
            fields = gre.call_id, gre.sequence, gre.ack, gre.payload
        call_id, seq, ack, payload = fields
        session = self.sessions.get(call_id)
        if session is None:
            if self._hold_early(call_id, src, packet):
                return
            self.counters["gre_unknown_call"] += 1
            return
        if src != session.peer:
            self.counters["gre_wrong_source"] += 1
            return
        session.last_gre = now
        frame = session.gre.receive_data(seq, ack, payload, now)
        if frame is not None:
            datagram = session.ppp.receive_data(frame, now)
            if datagram is not None:  # in order, nothing else happened: no pump needed
                self._tun_out.append(datagram)
                self._reschedule(session, False)
                return
        self._pump(session, now)

    def _send_on(self, s: Session, packet: bytes, now: float) -> None:
        """A datagram straight into GRE: sealing it queues no other frame nor event and moves
        no PPP timer, and a piggybacked ack only moves GRE's deadline later (the heap's early
        entry is a no-op), so neither the pump nor a reschedule is needed."""
        frame = s.ppp.seal_datagram(packet)
        if frame is not None:
            gre = s.gre.encapsulate(frame)
            if gre is not None:
                self._gre_out.append((s.peer, gre))

    def _default_session(self) -> Session | None:
        return None

    def _hold_early(self, call_id: int, src: str, packet: bytes) -> bool:
        """GRE for a call we placed whose reply has not arrived yet (GRE can overtake the
        TCP reply): kept and replayed when the call is up, rather than lost to a restart."""
        return False

    def get_timer(self) -> float | None:
        return self._deadlines.next()

    def _schedule(self, key: tuple[str, int], deadline: float | None) -> None:
        self._deadlines.schedule(key, deadline)

    @property
    def timer_moves(self) -> int:
        """Changes whenever the next deadline may have (the pump's one-call flush)."""
        return self._deadlines.moves

    def _session_deadline(self, s: Session) -> float | None:
        valid = [d for d in (s.ppp.get_timer(), s.gre.get_timer(), self._gre_deadline(s))
                 if d is not None]
        return min(valid) if valid else None

    def _gre_deadline(self, s: Session) -> float | None:
        return s.started + self.gre_timeout if s.last_gre is None and self.gre_timeout else None

    def handle_timer(self, now: float) -> None:
        for kind, ident in self._deadlines.due(now):
            if kind == "c":
                conn = self.connections.get(ident)
                if conn is not None:
                    conn.control.handle_timer(now)
                    self._after_control(ident, now)
                continue
            s = self.sessions.get(ident)
            if s is None:
                continue
            deadline = self._gre_deadline(s)
            if deadline is not None and now >= deadline:
                self._end_session(s, NO_GRE_REASON, now, notify_peer=True)
                continue
            s.ppp.handle_timer(now)
            ack = s.gre.handle_timer(now)
            if ack is not None:
                self._gre_out.append((s.peer, ack))
            self._pump(s, now)

    def status(self) -> dict:
        return {"sessions": [s.status() for s in self.sessions.values()],
                "connections": {cid: {"state": c.control.state.value, "peer": c.peer,
                                      "peer_vendor": c.control.peer_vendor,
                                      "calls": len(c.control.calls)}
                                for cid, c in self.connections.items()},
                "counters": dict(self.counters)}

    # -- internals -----------------------------------------------------------------------------
    def _after_control(self, conn_id: int, now: float, conn: _Connection | None = None) -> None:
        conn = conn or self.connections.get(conn_id)
        if conn is None:
            return
        self._drain_control(conn_id, conn, now)
        live = self.connections.get(conn_id) is conn
        self._schedule(("c", conn_id), conn.control.get_timer() if live else None)

    def _drain_control(self, conn_id: int, conn: _Connection, now: float) -> None:
        while True:  # an event may make the control connection send (SCCRP -> OCRQ)
            for data in conn.control.messages_to_send():
                self._control_out.append((conn_id, data))
            events = conn.control.events()
            if not events:
                return
            for event in events:
                self._on_control_event(conn_id, conn, event, now)

    def _on_control_event(self, conn_id: int, conn: _Connection, event: ControlEvent,
                          now: float) -> None:
        if event.kind == "call-established" and event.call_id is not None:
            self._start_session(conn_id, conn, event.call_id, now)
        elif event.kind == "call-cleared" and event.call_id is not None:
            session = self.sessions.get(event.call_id)
            if session is not None:
                self._end_session(session, event.reason, now, notify_peer=False)
            elif not conn.control.calls:
                self._after_last_call(conn_id, conn, event.reason)
        elif event.kind == "closed":
            self._events.append(ControlClosed(conn_id, event.reason))
            self._close.append(conn_id)
        elif event.kind == "connected":
            self._on_connected(conn_id, conn, now)

    def _on_connected(self, conn_id: int, conn: _Connection, now: float) -> None:
        pass

    def _ppp_config(self, conn: _Connection, call_id: int) -> PPPConfig | str | None:
        raise NotImplementedError

    def _start_session(self, conn_id: int, conn: _Connection, call_id: int, now: float) -> None:
        call = conn.control.calls.get(call_id)
        if call is None:  # cleared in the same read (OCRP and CDN in one segment): no session
            return
        config = self._ppp_config(conn, call_id)
        if not isinstance(config, PPPConfig):  # refused: the reason, or None (no address)
            conn.control.clear_call(call_id, config or "no address left in the pool", now)
            self._after_control(conn_id, now)
            return
        session = Session(conn_id, call_id, conn.peer,
                          GRESession(call.peer_call_id, call.peer_window),
                          PPPEngine(config, random=self.random), now)
        self.sessions[call_id] = session
        session.ppp.open(now)
        self._pump(session, now)
        for src, packet in self._early.pop(call_id, []):
            self.receive_gre(src, packet, now)

    def _send_frame(self, s: Session, frame: bytes) -> None:
        packet = s.gre.encapsulate(frame)
        if packet is not None:
            self._gre_out.append((s.peer, packet))

    def _call_ids(self, s: Session) -> tuple[int, int]:
        return s.conn_id, s.call_id

    def _peer_name(self, s: Session) -> str:
        return s.peer

    def _reschedule(self, s: Session, control: bool) -> None:
        """The session's deadline after an input. Carrying datagrams moves no PPP timer (they
        are armed only with a control packet or an event), so then only GRE's ack deadline can
        come earlier; one that moved later leaves an early heap entry, whose handle_timer is a
        no-op followed by a full recomputation. Per packet this is O(1) and skips PPP's six
        timers."""
        key = ("s", s.call_id)
        current = self._deadlines.get(key)
        if control or current is None:
            self._schedule(key, self._session_deadline(s))
            return
        ack = s.gre.get_timer()
        if ack is not None and ack < current:
            self._schedule(key, ack)

    def _end_session(self, s: Session, reason: str, now: float, notify_peer: bool) -> None:
        if self.sessions.pop(s.call_id, None) is None:
            return
        self._schedule(("s", s.call_id), None)
        s.reason = reason
        self._address_down(s)
        if s.ppp.phase.value != "dead":
            s.ppp.lower_layer_down(now, reason)
            for frame in s.ppp.frames_to_send():
                packet = s.gre.encapsulate(frame)
                if packet is not None:
                    self._gre_out.append((s.peer, packet))
        self._events.append(SessionDown(s.conn_id, s.call_id, reason))
        conn = self.connections.get(s.conn_id)
        if conn is not None:
            if notify_peer and not self._ended_by_shutdown(s.call_id, s):
                conn.control.clear_call(s.call_id, reason, now)
            self._after_session_end(s.conn_id, conn, reason)
            self._after_control(s.conn_id, now)

    def _after_session_end(self, conn_id: int, conn: _Connection, reason: str) -> None:
        pass

    def _after_last_call(self, conn_id: int, conn: _Connection, reason: str) -> None:
        """The last call is gone: cleared by the peer's CDN, or refused (busy) before it
        ever carried a session (§3.2.1)."""


class PPTPServer(_Stack):
    """The VPN server's PPTP side: many control connections, many calls, limits."""

    def __init__(self, ppp_config_for: Callable[[int, str], PPPConfig | str | None],
                 host_name: str = "vpnlab", max_calls: int = 0, echo_interval: float = 60.0,
                 gre_timeout: float = 15.0, random: Callable[[int], bytes] = os.urandom):
        super().__init__(random, gre_timeout)
        self.ppp_config_for = ppp_config_for
        self.host_name = host_name
        self.max_calls = max_calls
        self.echo_interval = echo_interval

    def connection_made(self, conn_id: int, peer: str, now: float) -> None:
        control = ControlConnection(is_pac=True, host_name=self.host_name,
                                    echo_interval=self.echo_interval,
                                    echo_timeout=self.echo_interval,
                                    allocate_call_id=self._allocate_call_id)
        self.connections[conn_id] = _Connection(control, ControlStream(), peer)

    def _allocate_call_id(self) -> int:
        if self.max_calls and len(self.sessions) >= self.max_calls:
            return 0
        while True:
            call_id = struct.unpack("!H", self.random(2))[0]
            if call_id and call_id not in self.sessions:
                return call_id

    def _ppp_config(self, conn: _Connection, call_id: int) -> PPPConfig | str | None:
        return self.ppp_config_for(call_id, conn.peer)

    def stop_connection(self, conn_id: int, reason: str, now: float) -> None:
        """Shutdown, after begin_shutdown's LCP Terminate: Stop-Control-Connection-Request
        (reason 3, local shutdown, §2.3); the calls still up go with it."""
        conn = self.connections.get(conn_id)
        if conn is not None:
            conn.control.stop(reason, StopReason.STOP_LOCAL_SHUTDOWN)
            self._after_control(conn_id, now)

    def stop_all(self, reason: str, now: float) -> None:
        for conn_id in list(self.connections):
            self.stop_connection(conn_id, reason, now)


@dataclass
class PPTPClient(_Stack):
    """A remote access client (or calling router): one control connection, one call."""

    ppp_config: PPPConfig
    server: str
    host_name: str = "vpnlab-client"
    echo_interval: float = 60.0
    gre_timeout: float = 15.0
    random: Callable[[int], bytes] = os.urandom
    reason: str = ""
    call_id: int = 0

    def __post_init__(self) -> None:
        _Stack.__init__(self, self.random, self.gre_timeout)

    def start(self, now: float) -> None:
        control = ControlConnection(is_pac=False, host_name=self.host_name,
                                    echo_interval=self.echo_interval,
                                    echo_timeout=self.echo_interval)
        self.connections[0] = _Connection(control, ControlStream(), self.server)
        control.start(now)
        self._after_control(0, now)

    def _on_connected(self, conn_id: int, conn: _Connection, now: float) -> None:
        self.call_id = struct.unpack("!H", self.random(2))[0] or 1
        conn.control.place_call(self.call_id)

    def _ppp_config(self, conn: _Connection, call_id: int) -> PPPConfig | str | None:
        return self.ppp_config

    def _default_session(self) -> Session | None:
        return self.sessions.get(self.call_id)

    def _hold_early(self, call_id: int, src: str, packet: bytes) -> bool:
        conn = self.connections.get(0)
        if call_id != self.call_id or src != self.server or conn is None or \
                call_id not in conn.control.calls:
            return False
        held = self._early.setdefault(call_id, [])
        if len(held) < 8:
            held.append((src, packet))
        return True

    def _after_session_end(self, conn_id: int, conn: _Connection, reason: str) -> None:
        """A client whose call ended hangs up the control connection too (StopCCRQ), after
        the server's Call-Disconnect-Notify when we sent a Call-Clear-Request, as Windows
        does: CCRQ, CDN, StopCCRQ, StopCCRP."""
        self.reason = self.reason or reason
        if not conn.control.calls:
            conn.control.stop(self.reason, StopReason.NONE)

    def _after_last_call(self, conn_id: int, conn: _Connection, reason: str) -> None:
        """A client with no call left hangs up the control connection, saying why."""
        self.reason = self.reason or reason
        conn.control.stop(self.reason, StopReason.NONE)

    def hang_up(self, now: float, reason: str = "user hung up") -> None:
        self.reason = self.reason or reason
        session = self.sessions.get(self.call_id)
        if session is not None:
            session.ppp.close(now, reason)
            self._pump(session, now)
        elif 0 in self.connections:
            self.connections[0].control.stop(reason)
            self._after_control(0, now)
