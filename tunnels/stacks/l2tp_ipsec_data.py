"""The L2TP/IPsec data path in one method each way, still without I/O.

Why: through the layers (policy -> esp -> L2TP stack -> session -> PPP and back), a 1400-octet
packet cost about 30 Python calls each way, several tuples and a dataclass, for what is, in
the common case, one table lookup and a few header fields. `DataPath.send_datagram` goes TUN
datagram -> PPP frame (the engine's `seal_datagram`) -> L2TP data header -> ESP seal ->
(transport, bytes); `DataPath.receive_datagram` goes ESP open -> UDP and L2TP data headers ->
PPP (`receive_data`) -> the TUN queue, each with what a packet needs hoisted into a per-SA or
per-session route built once.

The common case only: IKE quiet, an SA with the compiled context (`sa.fast`), transport mode
(ESP or ESP-in-UDP on 4500), an L2TP session up without sequencing, nothing else queued.
Everything else takes the general path (`_receive_general`, `_send_general` of the stack),
and so does every packet the general path would drop: the checks made here before any side
effect are the general path's own (esp.open_esp's order: size, lifetime, window, then the
ICV; the window moves only after the ICV held), so a fallback counts exactly what the general
path counts. The counters that move are the general path's, one by one (tests/
test_l2tp_ipsec_fastpath.py pairs the two paths: same bytes, counters, windows).

Routes are rebuilt when the policy's SA table changes (`TransportPolicy.version`), when an
L2TP route changes (`_set_route`), and when the client learns its server's SA peer.
"""

from __future__ import annotations

import struct
from typing import Any

from tunnels.ipsec.esp import NO_NEXT_HEADER
from tunnels.ipsec.ipv4 import PROTO_UDP
from tunnels.ipsec.natt import NAT_T_PORT
from tunnels.ipsec.policy import L2tpDatagram, TransportPolicy
from tunnels.ipsec.replay import MAX_SEQ
from tunnels.l2tp.messages import VERSION

_ESP = struct.Struct("!II")  # SPI, sequence number
_UDP_L2TP = struct.Struct("!HHHHHHH")  # UDP sport, dport, length, checksum; L2TP flags, IDs
_L2TP_DATA = struct.Struct("!HHH")  # flags (no Length, no Ns), Tunnel ID, Session ID
_MARKER = b"\0\0\0\0"  # RFC 3948 §2.2's non-ESP marker: IKE on 4500, never ESP


class _OutRoute:
    """What sending on one session needs, found once: its SA, the ESP seal and UDP ports,
    the L2TP data header and the transport tuple."""

    __slots__ = ("session", "sa", "seal", "header", "sport", "dport", "addresses",
                 "transport", "block", "iv_source")

    def __init__(self, session: Any, sa: Any, header: bytes, sport: int, dport: int,
                 addresses: int, iv_source: Any):
        self.session, self.sa, self.header = session, sa, header
        self.seal = sa.fast.seal_udp
        self.sport, self.dport, self.addresses = sport, dport, addresses
        encap = sa.encap
        self.transport = (("esp", sa.dst, 0, 0) if encap is None
                          else ("udp", sa.dst, encap[1], encap[0]))
        self.block = sa.enc.block_size
        self.iv_source = iv_source  # None: esp.py's draw (the compiled pool)


class _InRoute:
    """What receiving on one inbound SA needs: the SA, the transport it must come from, its
    sizes, and the L2TP address and route of the last UDP source port seen."""

    __slots__ = ("sa", "open", "src", "peer", "block", "icv", "sport", "address", "route")

    def __init__(self, sa: Any, src: tuple[str, str, int, int], peer: tuple[str, int | None]):
        self.sa, self.open, self.src, self.peer = sa, sa.fast.open, src, peer
        self.block, self.icv = sa.enc.block_size, sa.auth.icv_size
        self.sport = -1  # no L2TP address yet
        self.address: Any = None
        self.route: Any = None


class DataPath:
    """Mixed into the L2TP/IPsec stacks (tunnels/stacks/l2tp_ipsec.py), which supply what is
    declared here and the general paths."""

    policy: TransportPolicy
    l2tp: Any
    counters: dict[str, int]
    _out: list
    _routes: dict
    _now: float
    _ike_dirty: bool

    def _fast_init(self) -> None:
        self._fast_out: dict[int, _OutRoute] = {}  # by our Session ID
        self._fast_in: dict[int, _InRoute] = {}  # by inbound SPI
        self._fast_version = -1

    def _fast_reset(self) -> None:
        self._fast_out.clear()
        self._fast_in.clear()
        self._fast_version = self.policy.version

    def _set_route(self, address: Any, route: Any) -> None:
        """Where L2TP for `address` goes (the SA peer and its UDP port); routes built on the
        old one are dropped."""
        if self._routes.get(address) != route:
            self._routes[address] = route
            self._fast_out.clear()

    # -- TUN -> wire ---------------------------------------------------------------------------
    def send_datagram(self, ip_packet: bytes, now: float) -> None:
        """A TUN datagram through its session's SA at once (the general path when not the
        common case: see the module docstring)."""
        if now > self._now:
            self._now = now
        l2tp = self.l2tp
        if self._ike_dirty or len(ip_packet) < 20 or l2tp._out:
            return self._send_general(ip_packet, now)
        s = l2tp._by_packed.get(ip_packet[16:20]) or l2tp._default_session()
        if s is None or not s.up:
            return self._send_general(ip_packet, now)
        policy = self.policy
        if policy.version != self._fast_version:
            self._fast_reset()
        control = s.control
        route = self._fast_out.get(control.session_id)
        if route is None or route.session is not s:
            route = self._out_route(s)
            if route is None:
                return self._send_general(ip_packet, now)
        sa = route.sa
        seq = sa.seq
        counters = sa.counters
        # esp._begin's refusals (byte or time lifetime, sequence space): the general path
        # counts them
        if (control.sequencing or seq >= MAX_SEQ or now >= sa.created + sa.lifetime_seconds
                or 0 < sa.lifetime_bytes <= counters.bytes):
            return self._send_general(ip_packet, now)
        frame = s.ppp.seal_datagram(ip_packet)
        if frame is None:
            return None  # dropped and counted by PPP, as on the general path
        control.counters["data_out"] += 1
        iv = None
        if route.iv_source is not None:
            iv = route.iv_source(route.block)
            if len(iv) != route.block:  # esp._begin's LocalProtocolError, as _flush_l2tp
                self.counters["l2tp_no_sa"] += 1
                return None
        sa.seq = seq = seq + 1
        # the L2TP header is sealed in front of the frame (seal_udp's prefix: no concatenation)
        esp = route.seal(sa.spi, seq, iv, route.sport, route.dport, route.addresses, frame,
                         route.header)
        counters.packets += 1
        counters.bytes += 14 + len(frame)  # the UDP datagram: 8 + the 6-octet L2TP header
        policy.counters["l2tp_out"] += 1
        self.counters["esp_out"] += 1
        self._out.append((route.transport, esp))
        return None

    def _out_route(self, s: Any) -> _OutRoute | None:
        """The route of session `s`, or None when it is not the common case or there is no
        SA: the general path then decides and counts."""
        policy = self.policy
        route: _OutRoute | None = None
        via = self._routes.get(s.peer) or self._default_route(s.peer)
        sa = policy.outbound_sas.get(via[0]) if via is not None else None
        if sa is not None and sa.fast is not None and via is not None:
            iv_source = None if policy._iv_drawn_by_esp else policy._iv
            route = _OutRoute(s, sa, _L2TP_DATA.pack(VERSION, s.tunnel.peer_tunnel_id,
                                                     s.control.peer_session_id),
                              policy.l2tp_port, via[1], policy._address_sums[via[0]],
                              iv_source)
            if len(self._fast_out) > 2 * len(self.l2tp.sessions) + 8:
                self._fast_out.clear()  # routes of sessions gone
            self._fast_out[s.control.session_id] = route
        return route

    # -- wire -> TUN ---------------------------------------------------------------------------
    def receive_datagram(self, src: tuple[str, str, int, int], data: bytes,
                         now: float) -> None:
        """ESP (raw or on 4500) of an L2TP data message opened and handed to PPP at once (the
        general path when not the common case: see the module docstring)."""
        if now > self._now:
            self._now = now
        self.counters["received"] += 1
        if (self._ike_dirty or len(data) < 8
                or not (src[0] == "esp" or src[3] == NAT_T_PORT and data[:4] != _MARKER)):
            return self._receive_general(src, data, now)
        policy = self.policy
        if policy.version != self._fast_version:
            self._fast_reset()
        spi, seq = _ESP.unpack_from(data)
        route = self._fast_in.get(spi) or self._in_route(spi)
        if route is None:
            return self._receive_general(src, data, now)
        sa = route.sa
        counters = sa.counters
        body = len(data) - route.icv - 8
        window = sa.window
        # esp.open_esp's checks before the ICV: a packet failing one goes the general way
        if (src != route.src or body < 2 * route.block or body % route.block
                or now >= sa.created + sa.lifetime_seconds
                or 0 < sa.lifetime_bytes <= counters.bytes or sa.seq >= MAX_SEQ
                or (seq <= window.highest and not window.check(seq))):
            return self._receive_general(src, data, now)
        opened = route.open(data)  # ICV, decryption, padding; no side effect
        if type(opened) is int:
            return self._receive_general(src, data, now)  # counts the failure
        next_header, plain = opened
        # only now does the window move: the ICV held (RFC 4303 §3.4.3); the common case of
        # ReplayWindow.update (the next packet in order) inline
        shift = seq - window.highest
        if 0 < shift < window.size:
            window._bits = ((window._bits << shift) | 1) & window._mask
            window.highest = seq
        else:
            window.update(seq)
        if next_header != PROTO_UDP:
            return self._receive_rare(route, next_header, plain, now)
        size = len(plain)
        counters.packets += 1
        counters.bytes += size
        if size < 14:
            return self._receive_opened(route, next_header, plain, now)
        sport, dport, length, _, flags, tunnel_id, session_id = _UDP_L2TP.unpack_from(plain)
        if not 14 <= length <= size or dport != policy.l2tp_port:
            return self._receive_opened(route, next_header, plain, now)
        policy.counters["l2tp_in"] += 1
        if sport != route.sport:
            self._in_address(route, sport)
        address, routes = route.address, self._routes
        if routes.get(address) is not route.route:
            self._set_route(address, route.route)
            routes[address] = route.route  # this very tuple, so the next packet's `is` holds
        l2tp = self.l2tp
        session = l2tp.sessions.get(session_id)
        if (flags != VERSION or session is None or session.tunnel.tunnel_id != tunnel_id
                or address[0] != session.peer[0]):
            # sequenced, with Length or Offset, control, or no session of ours: the L2TP
            # stack's own decoding and counting
            if not l2tp.receive_datagram(address, plain[8:length], now) or self._ike_dirty:
                self._drain(now)
            return None
        l2tp_counters = l2tp.counters
        l2tp_counters["datagrams_in"] += 1
        l2tp_counters["data_in"] += 1
        session.control.counters["data_in"] += 1
        datagram = session.ppp.receive_data(plain[14:length], now)
        if datagram is not None:
            l2tp._tun_out.append(datagram)
            return None
        l2tp._pump(session, now)  # not an IP datagram in order: PPP may have answered
        self._drain(now)
        return None

    receive_gre = receive_datagram

    def _in_route(self, spi: int) -> _InRoute | None:
        """The route of inbound SPI `spi`, or None when there is no such SA or it has no
        compiled context."""
        sa = self.policy.inbound_sas.get(spi)
        route = None
        if sa is not None and sa.fast is not None:
            encap = sa.encap
            src = ("esp", sa.src, 0, 0) if encap is None else ("udp", sa.src, encap[0],
                                                              NAT_T_PORT)
            route = _InRoute(sa, src, (sa.src, encap[0] if encap else None))
            self._fast_in[spi] = route
        return route

    def _in_address(self, route: _InRoute, sport: int) -> None:
        datagram = L2tpDatagram(route.peer, sport, self.policy.l2tp_port, b"", route.sa.spi)
        route.sport, route.address = sport, self._l2tp_address(datagram)
        route.route = (route.peer, sport)

    def _receive_rare(self, route: _InRoute, next_header: int, plain: bytes,
                      now: float) -> None:
        """Authentic, the window moved, not UDP: open_esp's drop of a dummy packet (§2.6),
        or counted on the SA and refused by the policy (another protocol in an L2TP SA)."""
        sa = route.sa
        if next_header == NO_NEXT_HEADER:
            sa.counters.dummy += 1
            self.policy.counters["dummy"] += 1
            return None
        sa.counters.packets += 1
        sa.counters.bytes += len(plain)
        return self._receive_opened(route, next_header, plain, now)

    def _receive_opened(self, route: _InRoute, next_header: int, plain: bytes,
                        now: float) -> None:
        """ESP opened and counted, its payload not an L2TP data message in UDP 1701: the
        policy's checks of the UDP header, then the general handling."""
        event = self.policy._l2tp(route.peer, route.sa, next_header, plain, 0, len(plain))
        if not self._inbound(event, now) or self._ike_dirty:
            self._drain(now)
        return None

    # -- supplied by the stack -----------------------------------------------------------------
    def _send_general(self, ip_packet: bytes, now: float) -> None:
        raise NotImplementedError

    def _receive_general(self, src: tuple[str, str, int, int], data: bytes,
                         now: float) -> None:
        raise NotImplementedError

    def _default_route(self, dst: Any) -> Any:
        raise NotImplementedError

    def _l2tp_address(self, datagram: L2tpDatagram) -> Any:
        raise NotImplementedError

    def _inbound(self, event: Any, now: float) -> bool:
        raise NotImplementedError

    def _drain(self, now: float) -> None:
        raise NotImplementedError
