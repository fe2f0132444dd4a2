"""`vpnlab load`: many PPTP or L2TP sessions against one server from one process.

    vpnlab load --server ADDR --sessions N --rate R --user U --password P [--json]
                [--protocol pptp|l2tp] [--sessions-per-tunnel K] [--encryption strongest|none]

PPTP: each session is a real PPTP client (tunnels/stacks/pptp.py): its own TCP control
connection (SCCRQ, OCRQ), MS-CHAP v2, MPPE-128 (stateless unless --mppe stateful; none with
--encryption none), IPCP for an address. All sessions share one raw GRE socket, demultiplexed
by our Call ID, which is unique per session here (the server tells our calls apart by it too).

L2TP: sessions are grouped `--sessions-per-tunnel` to a tunnel, as a LAC concentrating dial-in
users does (RFC 2661 §3): the first session of a tunnel starts it (SCCRQ, then its ICRQ), the
others are placed on it with `Tunnel.place_call` when their turn comes (queued until the
tunnel is up). Each tunnel is one `L2TPClient` stack (tunnels/stacks/l2tp.py); all tunnels
share one UDP socket, demultiplexed by our Tunnel ID, unique per tunnel here (the server keys
a new tunnel by our address, port and Assigned Tunnel ID). Each session then does MS-CHAP v2
and IPCP in its own PPP (MPPE-128 too unless --encryption none).

Then, either way, one ICMP echo request through each session to the server's tunnel address,
which the server's kernel answers through its TUN device; the echo reply coming back (its
identifier names the session) is the session's proof of a working data path. One pump
(tunnels/runtime/pump.py) drives every stack. No TUN device and no route is created on this
side: the generator holds no kernel state but its sockets.

Sessions open at `--rate` per second (at most `--window` still negotiating at once), are held
`--hold` seconds once all are up (steady state, for the server's memory), then hung up
cleanly. The report: sessions up, pinged and failed (by reason), setups per second, setup
latency (median, 95th percentile), the generator's own CPU and peak memory. A server's memory
and CPU per session are read by whoever runs the server (bench/sessions.py does, from /proc).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import heapq
import json
import resource
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from collections.abc import Callable

from tunnels.icmp import echo_reply_ident, echo_request
from tunnels.l2tp.control import TunnelConfig, TunnelState
from tunnels.ppp.auth.base import AuthMethod
from tunnels.ppp.config import EncryptionLevel, PPPConfig
from tunnels.runtime.pump import StackPump
from tunnels.runtime.rawgre import GRESocket
from tunnels.runtime.udp import UDPSocket, local_address_toward
from tunnels.stacks.l2tp import L2TP_PORT, L2TPClient
from tunnels.stacks.pptp import ControlClosed, PPTPClient, SessionDown, SessionUp

PROTOCOLS = ("pptp", "l2tp")  # what the generator speaks
PING_TIMEOUT = 5.0  # seconds from tunnel-up to the echo reply
PING_INTERVAL = 0.5
# L2TP calls being set up at once in one tunnel. Each costs two control messages (ICRQ, ICCN)
# in the peer's receive window (ours and our server's is 16): with more, an ICCN waits behind
# the window while the call's first LCP Configure-Request (data, not windowed) goes out, the
# LNS drops it (no session before ICCN) and LCP waits out its 3 s restart timer.
CALLS_IN_FLIGHT = 8


class LoadClient(PPTPClient):
    """A PPTP client whose Call ID is given (unique among the generator's sessions), not
    drawn at random: the shared GRE socket demultiplexes by it."""

    assigned_call_id = 1

    def _on_connected(self, conn_id: int, conn: Any, now: float) -> None:
        self.call_id = self.assigned_call_id
        conn.control.place_call(self.call_id)

    def send_datagram_on(self, call_id: int, packet: bytes, now: float) -> None:
        self.send_datagram(packet, now)  # one call per client


class LoadLAC(L2TPClient):
    """An L2TP client (a LAC) whose Tunnel ID is given (unique among the generator's tunnels:
    the shared UDP socket demultiplexes by it) and which carries several calls. Its sessions
    all have the server's tunnel address as their peer, so a datagram names its session."""

    assigned_tunnel_id = 1

    def _allocate_tunnel_id(self) -> int:
        return self.assigned_tunnel_id

    def place_extra_call(self, now: float) -> int:
        """One more call in this tunnel (ICRQ now, or once the tunnel is up); 0 when the
        tunnel is closing or gone."""
        entry = self.tunnels.get(self.tunnel_id)
        if entry is None or entry.tunnel.state in (TunnelState.CLOSING, TunnelState.CLOSED):
            return 0
        session_id = entry.tunnel.place_call(now)
        self._after_tunnel(entry, now)
        return session_id

    def send_datagram_on(self, call_id: int, packet: bytes, now: float) -> None:
        session = self.sessions.get(call_id)
        if session is not None and session.up:
            session.ppp.send_datagram(packet, now)
            self._pump(session, now)

    def hang_up(self, now: float, reason: str = "user hung up") -> None:
        """Every call closes (PPP, then CDN); the last one's end sends StopCCN."""
        sessions = list(self.sessions.values())
        if not sessions:
            super().hang_up(now, reason)
            return
        self.reason = self.reason or reason
        for session in sessions:
            session.ppp.close(now, reason)
            self._pump(session, now)


def pptp_call_id(packet: bytes) -> int | None:
    """The Call ID of an enhanced GRE packet (RFC 2637 §4.1), our demultiplexing key."""
    return int.from_bytes(packet[6:8], "big") if len(packet) >= 8 else None


def l2tp_tunnel_id(packet: bytes) -> int | None:
    """The Tunnel ID of an L2TP packet (RFC 2661 §3.1: after the Length when L is set)."""
    at = 4 if len(packet) >= 2 and packet[0] & 0x40 else 2
    return int.from_bytes(packet[at:at + 2], "big") if len(packet) >= at + 4 else None


@dataclass
class Probe:
    """One session's progress, times on the loop's clock."""

    index: int
    started: float
    connected: float | None = None
    up: float | None = None
    call: tuple[int, int] = (-1, 0)  # (stack index, call ID) once the call is placed
    pinged: float | None = None
    address: str = ""
    failure: str = ""


@dataclass
class ManyClients:
    """Many client stacks (PPTPClient, or L2TPClient: one per tunnel) behind the one stack
    interface the pump drives (inputs, drained outputs, one timer). conn_id is the stack's
    index; packets go to the stack whose key (`key_of`: our GRE Call ID, or our L2TP Tunnel
    ID) they carry. Only the stacks an input touched are drained, and timers sit in a heap,
    so per-input work does not grow with the number of sessions."""

    clients: dict[int, Any] = field(default_factory=dict)
    by_key: dict[int, int] = field(default_factory=dict)
    key_of: Callable[[bytes], int | None] = pptp_call_id
    unknown: str = "gre_unknown_call"  # the counter of packets for no stack of ours
    _touched: set[int] = field(default_factory=set)
    _deadline: dict[int, float] = field(default_factory=dict)
    _heap: list[tuple[float, int]] = field(default_factory=list)
    _events: collections.deque = field(default_factory=collections.deque)
    _replies: list[tuple[int, bytes]] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)

    def add(self, index: int, client: Any, key: int | None = None) -> None:
        self.clients[index] = client
        self.by_key[client.assigned_call_id if key is None else key] = index
        self._touched.add(index)

    def remove(self, index: int) -> None:
        client = self.clients.pop(index, None)
        if client is not None:
            for key in [k for k, i in self.by_key.items() if i == index]:
                del self.by_key[key]
            self._deadline.pop(index, None)

    # -- inputs ----------------------------------------------------------------------------
    def receive_control(self, index: int, data: bytes, now: float) -> None:
        client = self.clients.get(index)
        if client is not None:
            self._touched.add(index)
            client.receive_control(0, data, now)

    def connection_lost(self, index: int, now: float) -> None:
        client = self.clients.get(index)
        if client is not None:
            self._touched.add(index)
            client.connection_lost(0, now)

    def receive_gre(self, src: Any, packet: bytes, now: float) -> None:
        """A GRE packet (`src` an address) or a UDP datagram (`src` (address, port))."""
        key = self.key_of(packet)
        index = self.by_key.get(key) if key is not None else None
        client = self.clients.get(index) if index is not None else None
        if client is None:
            self.counters[self.unknown] = self.counters.get(self.unknown, 0) + 1
            return
        self._touched.add(index)  # type: ignore[arg-type]
        client.receive_gre(src, packet, now)

    def send_datagram(self, index: int, call_id: int, packet: bytes, now: float) -> None:
        client = self.clients.get(index)
        if client is not None:
            self._touched.add(index)
            client.send_datagram_on(call_id, packet, now)

    def place_call(self, index: int, now: float) -> int:
        """One more L2TP call in stack `index`'s tunnel (0: that tunnel is closing or gone)."""
        client = self.clients.get(index)
        if client is None:
            return 0
        self._touched.add(index)
        return client.place_extra_call(now)  # type: ignore[no-any-return]

    def hang_up(self, index: int, now: float) -> None:
        client = self.clients.get(index)
        if client is not None:
            self._touched.add(index)
            client.hang_up(now, "load test over")

    def get_timer(self) -> float | None:
        self._collect()
        heap = self._heap
        while heap and self._deadline.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def handle_timer(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, index = heapq.heappop(heap)
            if self._deadline.get(index) == deadline:
                del self._deadline[index]
                client = self.clients.get(index)
                if client is not None:
                    self._touched.add(index)
                    client.handle_timer(now)

    # -- outputs (the pump drains them after every input) ------------------------------------
    def _collect(self) -> None:
        """Move the touched sessions' outputs and events into ours; re-arm their timers."""
        if not self._touched:
            return
        touched, self._touched = self._touched, set()
        for index in touched:
            client = self.clients.get(index)
            if client is None:
                continue
            for _, data in client.control_to_send():
                self._control.append((index, data))
            for _ in client.connections_to_close():
                self._close.append(index)
            self._gre.extend(client.gre_to_send())
            for packet in client.datagrams_to_tun():
                self._replies.append((index, packet))
            while (event := client.next_event()) is not None:
                self._events.append((index, event))
            deadline = client.get_timer()
            if deadline is None:
                self._deadline.pop(index, None)
            elif self._deadline.get(index) != deadline:
                self._deadline[index] = deadline
                heapq.heappush(self._heap, (deadline, index))

    def __post_init__(self) -> None:
        self._control: list[tuple[int, bytes]] = []
        self._close: list[int] = []
        self._gre: list[tuple[Any, bytes]] = []
        self.counters.setdefault(self.unknown, 0)

    def control_to_send(self) -> list[tuple[int, bytes]]:
        self._collect()
        out, self._control = self._control, []
        return out

    def connections_to_close(self) -> list[int]:
        self._collect()
        out, self._close = self._close, []
        return out

    def gre_to_send(self) -> list[tuple[Any, bytes]]:
        self._collect()
        out, self._gre = self._gre, []
        return out

    def datagrams_to_tun(self) -> list[bytes]:
        return []  # no TUN here: echo replies are taken by replies()

    def replies(self) -> list[tuple[int, bytes]]:
        self._collect()
        out, self._replies = self._replies, []
        return out

    def next_event(self) -> tuple[int, Any] | None:
        self._collect()
        return self._events.popleft() if self._events else None


class _Control(asyncio.Protocol):
    """One session's TCP control connection, fed straight into the pump (no task each)."""

    def __init__(self, gen: LoadGenerator, index: int):
        self.gen, self.index = gen, index

    def data_received(self, data: bytes) -> None:
        pump = self.gen.pump
        assert pump is not None
        pump.feed("receive_control", self.gen.stack.receive_control, self.index, data,
                  pump.now())
        self.gen.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        pump = self.gen.pump
        if pump is None:
            return
        pump.writers.pop(self.index, None)
        pump.feed("connection_lost", self.gen.stack.connection_lost, self.index, pump.now())
        self.gen.flush()


class LoadGenerator:
    def __init__(self, server: str, sessions: int, rate: float, user: str, password: str,
                 window: int = 256, hold: float = 2.0, stateless: bool = True,
                 encryption: EncryptionLevel = EncryptionLevel.STRONGEST,
                 timeout: float = 120.0, progress: bool = False, protocol: str = "pptp",
                 sessions_per_tunnel: int = 1):
        if protocol not in PROTOCOLS:
            raise ValueError(f"--protocol {protocol}: expected {', '.join(PROTOCOLS)}")
        if not 0 < sessions <= 65535:
            raise ValueError("--sessions: 1 to 65535 (one Call ID, or echo identifier, each)")
        if not 0 < sessions_per_tunnel <= 65535:
            raise ValueError("--sessions-per-tunnel: 1 to 65535")
        self.server, self.n, self.rate = server, sessions, rate
        self.window, self.hold, self.timeout, self.progress = window, hold, timeout, progress
        self.protocol, self.per_tunnel = protocol, sessions_per_tunnel
        self.ppp = PPPConfig(False, (AuthMethod.MSCHAPV2,), username=user, password=password,
                             encryption=encryption, mppe_stateless=stateless, echo_interval=0)
        self.stack = ManyClients() if protocol == "pptp" else \
            ManyClients(key_of=l2tp_tunnel_id, unknown="l2tp_unknown_tunnel")
        self.probes: dict[int, Probe] = {}
        self._by_call: dict[tuple[int, int], int] = {}  # (stack index, call ID) -> probe
        self._placing: collections.Counter[int] = collections.Counter()  # tunnel -> calls
        self._waiting: dict[int, collections.deque[int]] = {}  # tunnel -> sessions to place
        self.pump: StackPump | None = None
        self.gre: GRESocket | UDPSocket | None = None
        self._negotiating = 0
        self._settled_count = 0
        self._slot = asyncio.Event()
        self._done = asyncio.Event()
        self._flush_soon = False
        self.reasons: collections.Counter[str] = collections.Counter()

    # -- pump glue -----------------------------------------------------------------------------
    def flush(self) -> None:
        assert self.pump is not None
        self.pump.flush()
        for index, packet in self.stack.replies():
            self._reply(index, packet)
        if self._flush_soon:  # events queued more output (pings, hang-ups): send it now
            self._flush_soon = False
            self.pump.flush()

    def _probes_of(self, index: int, event: Any) -> list[Probe]:
        """The sessions an event of stack `index` is about: PPTP's stack is one session; an
        L2TP stack is a tunnel, whose ControlClosed is about every session in it."""
        if self.protocol == "pptp":
            probe = self.probes.get(index)
            return [probe] if probe is not None else []
        if isinstance(event, ControlClosed):
            first = index * self.per_tunnel
            return [self.probes[i] for i in range(first, first + self.per_tunnel)
                    if i in self.probes]
        probe_index = self._by_call.get((index, getattr(event, "call_id", -1)))
        return [self.probes[probe_index]] if probe_index is not None else []

    def on_event(self, item: tuple[int, Any]) -> None:
        index, event = item
        now = self.pump.now() if self.pump else 0.0
        for probe in self._probes_of(index, event):
            placing = probe.call[0] >= 0 and probe.up is None and not probe.failure
            if isinstance(event, SessionUp) and probe.up is None:
                probe.up, probe.address = now, event.local_address
                ping = echo_request(event.local_address, event.peer_address, probe.index)
                self._ping(probe.index, ping)
                asyncio.get_running_loop().call_later(PING_TIMEOUT, self._ping_timeout,
                                                      probe.index)
            elif isinstance(event, (SessionDown, ControlClosed)) and not probe.failure \
                    and probe.pinged is None:
                self._fail(probe, event.reason)
            if self.protocol == "l2tp" and placing and (probe.up is not None or probe.failure):
                self._call_settled(index)

    def _ping(self, index: int, packet: bytes, from_timer: bool = False) -> None:
        """The echo request, again every PING_INTERVAL until answered, as ping does: the
        server opens IPCP a round trip after us and drops what comes before."""
        probe = self.probes.get(index)
        if probe is None or probe.pinged is not None or probe.failure or self.pump is None:
            return
        self.stack.send_datagram(probe.call[0], probe.call[1], packet, self.pump.now())
        if from_timer:
            self.flush()
        else:
            self._flush_soon = True  # called from an event, inside the pump's flush
        asyncio.get_running_loop().call_later(PING_INTERVAL, self._ping, index, packet, True)

    def _reply(self, index: int, packet: bytes) -> None:
        """An IP packet out of stack `index`: the echo reply of the session its identifier
        names, if that session is in this stack."""
        ident = echo_reply_ident(packet)
        probe = self.probes.get(ident) if ident is not None else None
        if probe is not None and probe.pinged is None and probe.call[0] == index:
            assert self.pump is not None
            probe.pinged = self.pump.now()
            self._settled()

    def _ping_timeout(self, index: int) -> None:
        probe = self.probes[index]
        if probe.pinged is None and not probe.failure:
            self._fail(probe, f"no echo reply through the tunnel within {PING_TIMEOUT:g}s")

    def _fail(self, probe: Probe, reason: str) -> None:
        probe.failure = reason
        self.reasons[reason] += 1
        self._settled()

    def _settled(self) -> None:
        """One session more is pinged or failed (each settles once)."""
        self._negotiating -= 1
        self._slot.set()
        self._settled_count += 1
        done = self._settled_count
        if self.progress and done % 500 == 0:
            print(f"vpnlab load: {done}/{self.n} settled", file=sys.stderr, flush=True)
        if done == self.n:
            self._done.set()

    # -- sessions ------------------------------------------------------------------------------
    async def _open(self, index: int) -> None:
        loop = asyncio.get_running_loop()
        probe = self.probes[index] = Probe(index, loop.time())
        try:
            transport, _ = await asyncio.wait_for(loop.create_connection(
                lambda: _Control(self, index), self.server, 1723), 10.0)
        except (OSError, asyncio.TimeoutError) as exc:
            self._fail(probe, f"cannot reach {self.server}:1723: {exc or 'timed out'}")
            return
        if self.gre is None:
            self._start_pump(GRESocket(transport.get_extra_info("sockname")[0],
                                       rcvbuf=16 << 20))
        assert self.pump is not None
        probe.connected = loop.time()
        client = LoadClient(self.ppp, self.server, host_name="vpnlab-load",
                            echo_interval=3600.0, gre_timeout=15.0)
        client.assigned_call_id = index + 1
        probe.call = (index, index + 1)
        self.stack.add(index, client)
        self.pump.writers[index] = transport  # type: ignore[assignment]
        self.pump.feed("start", client.start, self.pump.now())
        self.flush()

    async def _open_l2tp(self, index: int) -> None:
        """Session `index`: the first of its tunnel starts the tunnel (SCCRQ and this call),
        the others are one more call in it."""
        loop = asyncio.get_running_loop()
        probe = self.probes[index] = Probe(index, loop.time())
        if self.gre is None:
            try:
                self._start_pump(UDPSocket(local_address_toward(self.server), port=0,
                                           rcvbuf=16 << 20))
            except OSError as exc:
                self._fail(probe, f"cannot open a UDP socket toward {self.server}: {exc}")
                return
        assert self.pump is not None
        tunnel, now = index // self.per_tunnel, self.pump.now()
        if index % self.per_tunnel == 0:
            lac = LoadLAC(self.ppp, self.server, TunnelConfig(
                host_name="vpnlab-load", hello_interval=3600.0), L2TP_PORT)
            lac.assigned_tunnel_id = tunnel + 1
            self.stack.add(tunnel, lac, key=tunnel + 1)
            self.pump.feed("start", lac.start, now)
            self._placed(probe, tunnel, lac.session_id)
        elif self._placing[tunnel] >= CALLS_IN_FLIGHT:
            self._waiting.setdefault(tunnel, collections.deque()).append(index)
            return
        else:
            self._placed(probe, tunnel, self.stack.place_call(tunnel, now))
        self.flush()

    def _placed(self, probe: Probe, tunnel: int, call_id: int) -> None:
        if not call_id:
            self._fail(probe, "the tunnel closed before this call could be placed")
            return
        assert self.pump is not None
        probe.connected, probe.call = self.pump.now(), (tunnel, call_id)
        self._by_call[(tunnel, call_id)] = probe.index
        self._placing[tunnel] += 1

    def _call_settled(self, tunnel: int) -> None:
        """A call of `tunnel` is up or failed: the next one waiting is placed (from an
        event, inside the pump's flush: its output goes in the flush that follows)."""
        self._placing[tunnel] -= 1
        waiting = self._waiting.get(tunnel)
        while waiting:
            probe = self.probes[waiting.popleft()]
            if not probe.failure:  # a closed tunnel failed it already
                assert self.pump is not None
                self._placed(probe, tunnel, self.stack.place_call(tunnel, self.pump.now()))
                self._flush_soon = True
                return

    def _start_pump(self, sock: GRESocket | UDPSocket) -> None:
        loop = asyncio.get_running_loop()
        self.gre = sock
        self.pump = StackPump(loop, self.stack, sock, self.on_event, self._internal_error)

    def _internal_error(self, detail: str) -> None:
        print(f"vpnlab load: internal error (counted, going on): {detail}", file=sys.stderr)

    async def run(self) -> dict[str, Any]:
        if self.protocol == "pptp":
            _raise_fd_limit(self.n + 64)
        opener = self._open if self.protocol == "pptp" else self._open_l2tp
        loop = asyncio.get_running_loop()
        cpu0, t0 = time.process_time(), loop.time()
        tasks = set()
        for index in range(self.n):
            while self._negotiating >= self.window:
                self._slot.clear()
                await self._slot.wait()
            delay = t0 + index / self.rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self._negotiating += 1
            task = asyncio.create_task(opener(index))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        try:
            await asyncio.wait_for(self._done.wait(), self.timeout)
        except asyncio.TimeoutError:
            for probe in self.probes.values():
                if probe.pinged is None and not probe.failure:
                    probe.failure = "not settled before the load test's timeout"
                    self.reasons[probe.failure] += 1
        settled = loop.time()
        await asyncio.sleep(self.hold)  # steady state: every session up, nothing moving
        report = self.report(t0, settled, time.process_time() - cpu0)
        await self._hang_up_all()
        return report

    async def _hang_up_all(self) -> None:
        if self.pump is None:
            return
        for index in list(self.stack.clients):
            self.pump.feed("hang_up", self.stack.hang_up, index, self.pump.now())
        self.flush()
        await asyncio.sleep(min(3.0, 0.5 + self.n / 2000))
        for writer in list(self.pump.writers.values()):
            writer.close()
        await asyncio.sleep(0.05)
        self.pump.close()
        assert self.gre is not None
        self.gre.close()

    def report(self, t0: float, settled: float, cpu: float) -> dict[str, Any]:
        probes = list(self.probes.values())
        up = [p for p in probes if p.up is not None]
        pinged = [p for p in probes if p.pinged is not None]
        setup = sorted(p.up - p.started for p in up)  # type: ignore[operator]
        last_up = max((p.up for p in up), default=t0)  # type: ignore[type-var]
        span = max(last_up - t0, 1e-9)  # type: ignore[operator]
        return {
            "server": self.server, "protocol": self.protocol, "sessions": self.n,
            "tunnels": len(self.stack.clients) if self.protocol == "l2tp" else self.n,
            "rate_asked": self.rate,
            "up": len(up), "pinged": len(pinged), "failed": len(probes) - len(pinged),
            "failure_reasons": dict(self.reasons.most_common(8)),
            "setups_per_second": round(len(up) / span, 1),
            "setup_seconds_median": round(setup[len(setup) // 2], 4) if setup else None,
            "setup_seconds_p95": round(setup[int(len(setup) * 0.95)], 4) if setup else None,
            "wall_seconds_to_settle": round(settled - t0, 2),
            "generator_cpu_seconds": round(cpu, 2),
            "generator_peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            **self.stack.counters,
            "pump": dict(self.pump.counters) if self.pump else {},
        }


def _raise_fd_limit(need: int) -> None:
    """One TCP connection per session: lift the soft descriptor limit up to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(need, soft)), hard))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("load", help="open many PPTP or L2TP sessions against a server "
                                    "(load test)")
    p.add_argument("--server", required=True, help="the VPN server's address")
    p.add_argument("--sessions", type=int, default=100, metavar="N")
    p.add_argument("--rate", type=float, default=100.0, metavar="R",
                   help="new sessions per second")
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--protocol", default="pptp", choices=list(PROTOCOLS))
    p.add_argument("--sessions-per-tunnel", type=int, default=1, metavar="K",
                   help="L2TP: calls per tunnel (tunnels = sessions / K, rounded up)")
    p.add_argument("--encryption", default="strongest", choices=["strongest", "none"],
                   help="MPPE-128, or none (the server must agree)")
    p.add_argument("--mppe", default="stateless", choices=["stateless", "stateful"])
    p.add_argument("--window", type=int, default=256,
                   help="at most this many sessions negotiating at once")
    p.add_argument("--hold", type=float, default=2.0,
                   help="seconds to hold every session up before hanging up")
    p.add_argument("--timeout", type=float, default=300.0,
                   help="seconds for all sessions to settle")
    p.add_argument("--progress", action="store_true", help="progress lines on stderr")
    p.add_argument("--json", action="store_true", help="the report as one JSON object")
    p.set_defaults(func=cmd_load)


def cmd_load(args: argparse.Namespace) -> int:
    async def main() -> dict[str, Any]:
        gen = LoadGenerator(args.server, args.sessions, args.rate, args.user, args.password,
                            window=args.window, hold=args.hold,
                            stateless=args.mppe == "stateless", timeout=args.timeout,
                            progress=args.progress, protocol=args.protocol,
                            sessions_per_tunnel=args.sessions_per_tunnel,
                            encryption=EncryptionLevel(args.encryption))
        return await gen.run()

    try:
        report = asyncio.run(main())
    except (ValueError, OSError) as exc:
        print(f"vpnlab load: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report), flush=True)
    else:
        for key, value in report.items():
            print(f"{key}: {value}")
    return 0 if report["failed"] == 0 else 1

