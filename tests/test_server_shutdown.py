"""The server stops the PPP way (RFC 1661 §5.5): LCP Terminate-Request on every open call, the
Terminate-Acks end the calls, then the tunnels' control teardown (PPTP StopCCRQ, L2TP StopCCN),
which clears them at the client; a peer that never acks holds the stop up no longer than the
bound.

In memory: our stacks paired with a virtual clock (the stacks decide), and the server's
asyncio shutdown over an in-memory pump (the runtime only waits, in real time, bounded).
"""

from __future__ import annotations

import asyncio
import json
import tomllib

import pytest

from tests import test_stack_l2tp as l2tp
from tests import test_stack_l2tp_ipsec as l2tp_ipsec
from tests import test_stack_pptp as pptp
from tests.virtual_clock import VirtualClockNet
from tunnels.config import ServerConfig
from tunnels.gre.header import GREPacket
from tunnels.l2tp.avp import AVPType, ResultCode
from tunnels.l2tp.messages import DataPacket, decode_packet
from tunnels.ppp.fsm import State
from tunnels.ppp.packets import Code
from tunnels.pptp import messages as m
from tunnels.server import SHUTDOWN_REASON, VPNServer
from tunnels.stacks.pptp import ControlClosed, SessionDown, SessionUp
from tunnels.stacks.sessions import SHUTDOWN_GRACE

LCP = b"\xc0\x21"
# what our PPTP client reports of the server's StopCCRQ (reason 3, RFC 2637 §2.3)
SHUTDOWN_SEEN = "peer stopped the control connection (reason 3: the peer is shutting down)"


class PPTPPair(VirtualClockNet):
    """PPTP clients at 198.51.100.(2+i) and a server over TCP (closes delivered) and GRE;
    `silent` drops everything the clients send (a peer that never answers)."""

    def __init__(self, server, clients):
        self.server, self.clients, self.now = server, clients, 0.0
        self.wire: list[tuple[str, str, bytes]] = []
        self.events: dict[int, list] = {i: [] for i in range(len(clients))}
        self.server_events: list = []
        self.silent = False
        self.closed: set[int] = set()
        for i in range(len(clients)):
            server.connection_made(i, self.addr(i), 0.0)

    @staticmethod
    def addr(i):
        return f"198.51.100.{2 + i}"

    def step(self):
        moved = False
        for i, c in enumerate(self.clients):
            for _, data in c.control_to_send():
                moved = True
                self.wire.append(("tcp", "c2s", data))
                if not self.silent and i not in self.closed:
                    self.server.receive_control(i, data, self.now)
            for _, data in c.gre_to_send():
                moved = True
                self.wire.append(("gre", "c2s", data))
                if not self.silent:
                    self.server.receive_gre(self.addr(i), data, self.now)
            for _ in c.connections_to_close():
                moved = self._tcp_closed(i) or moved
            while (e := c.next_event()) is not None:
                self.events[i].append(e)
        for conn_id, data in self.server.control_to_send():
            moved = True
            self.wire.append(("tcp", "s2c", data))
            if conn_id not in self.closed:
                self.clients[conn_id].receive_control(0, data, self.now)
        for dst, data in self.server.gre_to_send():
            moved = True
            self.wire.append(("gre", "s2c", data))
            self.clients[int(dst.rsplit(".", 1)[1]) - 2].receive_gre(pptp.SERVER_IP, data,
                                                                     self.now)
        for conn_id in self.server.connections_to_close():
            moved = self._tcp_closed(conn_id) or moved
        self.drain_server_events()
        return moved

    def drain_server_events(self):
        while (e := self.server.next_event()) is not None:
            self.server_events.append(e)

    def _tcp_closed(self, i):
        if i in self.closed:
            return False
        self.closed.add(i)
        self.server.connection_lost(i, self.now)
        self.clients[i].connection_lost(0, self.now)
        return True

    def lcp(self, direction, since=0):
        """(code, data) of every LCP packet in GRE that way."""
        out = []
        for kind, d, data in self.wire[since:]:
            if kind == "gre" and d == direction:
                frame = GREPacket.decode(data).payload
                if frame[2:4] == LCP:
                    out.append((frame[4], frame[8:]))
        return out

    def control(self, direction, since=0):
        return [m.decode(data).TYPE for kind, d, data in self.wire[since:]
                if kind == "tcp" and d == direction]


def pptp_pair(n=2):
    net = PPTPPair(pptp.make_server(), [pptp.make_client(seed=2 + i) for i in range(n)])
    for c in net.clients:
        c.start(0.0)
    net.run(10, stop=lambda: all(any(isinstance(e, SessionUp) for e in net.events[i])
                                 for i in range(n)))
    return net


def index(wire_items, wanted):
    return next(n for n, item in enumerate(wire_items) if item == wanted)


# -- PPTP --------------------------------------------------------------------------------------
def test_pptp_shutdown_terminates_each_open_call_by_lcp_then_stops_the_control():
    net = pptp_pair(2)
    clients_ppp = [next(iter(c.sessions.values())).ppp for c in net.clients]
    mark = len(net.wire)
    assert net.server.begin_shutdown(SHUTDOWN_REASON, net.now) == 2
    assert not net.server.shutdown_finished(net.now)
    net.run(SHUTDOWN_GRACE, stop=lambda: net.server.shutdown_finished(net.now))
    assert net.now < net.server.shutdown_deadline  # ended by the acks, not the bound
    assert net.server.shutdown_report() == {"lcp_terminated": 2, "acked": 2, "unanswered": 0}
    requests = [d for code, d in net.lcp("s2c", mark) if code == Code.TERMINATE_REQUEST]
    assert requests == [SHUTDOWN_REASON.encode()] * 2
    assert [c for c, _ in net.lcp("c2s", mark)] == [Code.TERMINATE_ACK] * 2
    for ppp in clients_ppp:
        assert ppp.lcp.terminate_reason == f"peer sent Terminate-Request: {SHUTDOWN_REASON}"
    downs = [e for e in net.server_events if isinstance(e, SessionDown)]
    assert [e.reason for e in downs] == [SHUTDOWN_REASON] * 2
    assert net.control("s2c", mark) == net.control("c2s", mark) == []  # no CDN of its own
    net.server.stop_all(SHUTDOWN_REASON, net.now)  # then the runtime's control teardown
    net.run(5)
    # RFC 2637 §2.3: the StopCCRQ (reason 3, local shutdown) clears the calls
    T = m.ControlMessageType
    assert net.control("s2c", mark) == [T.StopCCRQ] * 2
    assert net.control("c2s", mark) == [T.StopCCRP] * 2
    for i in range(2):
        down = [e for e in net.events[i] if isinstance(e, SessionDown)]
        assert len(down) == 1 and down[0].reason == SHUTDOWN_SEEN
        assert any(isinstance(e, ControlClosed) for e in net.events[i])
    assert not net.server.sessions and net.closed == {0, 1}


def test_pptp_control_teardown_comes_after_the_terminate_ack():
    net = pptp_pair(1)
    mark = len(net.wire)
    net.server.begin_shutdown(SHUTDOWN_REASON, net.now)
    net.run(SHUTDOWN_GRACE, stop=lambda: net.server.shutdown_finished(net.now))
    net.server.stop_all(SHUTDOWN_REASON, net.now)
    net.run(5)
    order = [("lcp-request" if d == "s2c" else "lcp-ack") if k == "gre" else
             m.decode(data).TYPE.name for k, d, data in net.wire[mark:]
             if k == "tcp" or GREPacket.decode(data).payload[2:4] == LCP]
    assert order == ["lcp-request", "lcp-ack", "StopCCRQ", "StopCCRP"]


def test_pptp_peer_that_never_acks_is_cut_off_at_the_bound():
    net = pptp_pair(2)
    net.silent = True
    start = net.now
    net.server.begin_shutdown(SHUTDOWN_REASON, start)
    net.run(SHUTDOWN_GRACE * 0.99)
    assert not net.server.shutdown_finished(net.now)
    assert net.server.shutdown_finished(start + SHUTDOWN_GRACE)
    assert net.server.shutdown_report() == {"lcp_terminated": 2, "acked": 0, "unanswered": 2}
    mark = len(net.wire)
    net.now = start + SHUTDOWN_GRACE
    net.server.stop_all(SHUTDOWN_REASON, net.now)  # today's teardown for what is left
    net.step()
    assert net.control("s2c", mark) == [m.ControlMessageType.StopCCRQ] * 2
    stop = m.decode(next(data for k, d, data in net.wire[mark:] if k == "tcp"))
    assert stop.reason == m.StopReason.STOP_LOCAL_SHUTDOWN
    for i in range(2):  # the process exits: its TCP connections close
        net._tcp_closed(i)
    net.drain_server_events()
    assert {e.reason for e in net.server_events if isinstance(e, SessionDown)} == \
        {SHUTDOWN_REASON}
    assert not net.server.sessions


def test_pptp_calls_not_yet_open_get_only_the_control_teardown():
    net = PPTPPair(pptp.make_server(), [pptp.make_client()])
    net.clients[0].start(0.0)
    net.run(10, stop=lambda: bool(net.server.sessions))  # the call placed, LCP not open
    s = next(iter(net.server.sessions.values()))
    assert s.ppp.lcp.state is not State.OPENED
    assert net.server.begin_shutdown(SHUTDOWN_REASON, net.now) == 0
    assert net.server.shutdown_finished(net.now)
    assert s.ppp.lcp.state is not State.CLOSING  # no Terminate-Request for it


# -- L2TP and L2TP/IPsec -----------------------------------------------------------------------
def test_l2tp_shutdown_terminates_by_lcp_then_stopccn_result_6():
    server = l2tp.make_server()
    clients = [l2tp.make_client(seed=s) for s in (2, 3)]
    net = l2tp.Net(server, clients)
    for c in clients:
        c.start(0.0)
    net.run(10, stop=lambda: net.ups(0) and net.ups(1))
    clients_ppp = [next(iter(c.sessions.values())).ppp for c in clients]
    mark = len(net.wire)
    assert server.begin_shutdown(SHUTDOWN_REASON, net.now) == 2
    net.run(SHUTDOWN_GRACE, stop=lambda: server.shutdown_finished(net.now))
    assert server.shutdown_report() == {"lcp_terminated": 2, "acked": 2, "unanswered": 0}
    server.stop_all(SHUTDOWN_REASON, net.now)
    net.run(5)
    frames = [(d, p.payload) for d, data in net.wire[mark:]
              if isinstance(p := decode_packet(data), DataPacket) and p.payload[2:4] == LCP]
    assert [f[4] for d, f in frames if d == "s2c"] == [Code.TERMINATE_REQUEST] * 2
    assert [f[4] for d, f in frames if d == "c2s"] == [Code.TERMINATE_ACK] * 2
    for ppp in clients_ppp:
        assert ppp.lcp.terminate_reason == f"peer sent Terminate-Request: {SHUTDOWN_REASON}"
    net.wire = net.wire[mark:]
    # RFC 2661 §6.4: the StopCCN clears the calls, no CDN (a CDN would make our LAC send
    # a StopCCN of its own, crossing the server's: see L2TPServer._ended_by_shutdown)
    assert [n for n in l2tp.names(net, "s2c") if n != "ZLB"] == ["StopCCN"] * 2
    assert [n for n in l2tp.names(net, "c2s") if n != "ZLB"] == []
    stops = [msg for _, _, msg in l2tp.control_messages(net, "s2c") if msg]
    assert {ResultCode.decode(s.get(AVPType.RESULT_CODE).value).result for s in stops} == {6}
    for i in (0, 1):
        down = [e for e in net.events[i] if isinstance(e, SessionDown)]
        assert len(down) == 1 and "SHUTTING_DOWN" in down[0].reason, down
        assert any(isinstance(e, ControlClosed) for e in net.events[i])
        # its ack is all it owed; it keeps the tunnel to re-ack a re-sent StopCCN (§5.7)
        assert clients[i].lingering and not clients[i].done


def test_l2tp_client_acks_the_stopccn_then_lingers_until_done():
    """RFC 2661 §5.7: the receiver of a StopCCN MUST send a ZLB ACK and keep the state to
    accept the StopCCN's retransmissions. Our client's runtime exits when `done`: the ZLB
    (ack_delay, 100 ms) goes out, then the client lingers (`TunnelConfig.linger`)."""
    server = l2tp.make_server()
    client = l2tp.make_client(l2tp.TunnelConfig(host_name="lac", linger=5.0))
    net = l2tp.Net(server, [client])
    client.start(0.0)
    net.run(10, stop=lambda: net.ups(0))
    mark = len(net.wire)
    server.stop_all(SHUTDOWN_REASON, net.now)
    closed = lambda: any(isinstance(e, ControlClosed) for e in net.events[0])  # noqa: E731
    net.run(0.05, stop=closed)
    assert closed() and not client.done
    stopped = net.now
    net.run(1.0)
    assert client.lingering and not client.done
    net.wire = net.wire[mark:]
    assert l2tp.names(net, "c2s") == ["ZLB"]
    net.run(10, stop=lambda: client.done)
    assert client.done and not client.lingering and 4.9 < net.now - stopped < 5.2


def test_l2tp_peer_that_never_acks_is_cut_off_at_the_bound():
    server = l2tp.make_server()
    net = l2tp.Net(server, [l2tp.make_client()])
    net.clients[0].start(0.0)
    net.run(10, stop=lambda: net.ups(0))
    net.cut = True
    start = net.now
    server.begin_shutdown(SHUTDOWN_REASON, start)
    net.run(SHUTDOWN_GRACE * 0.99)
    assert not server.shutdown_finished(net.now)
    assert server.shutdown_finished(start + SHUTDOWN_GRACE)
    assert server.shutdown_report() == {"lcp_terminated": 1, "acked": 0, "unanswered": 1}
    server.stop_all(SHUTDOWN_REASON, start + SHUTDOWN_GRACE)
    assert not server.sessions


def test_l2tp_ipsec_shutdown_terminates_by_lcp_inside_esp():
    net = l2tp_ipsec.connect(l2tp_ipsec.Net(l2tp_ipsec.make_server(),
                                            [l2tp_ipsec.make_client(l2tp_ipsec.CLIENT_PUBLIC)]))
    client = net.clients[0]
    client_ppp = next(iter(client.sessions.values())).ppp
    assert net.server.begin_shutdown(SHUTDOWN_REASON, net.now) == 1
    assert net.server.shutdown_deadline == net.now + SHUTDOWN_GRACE
    net.run(SHUTDOWN_GRACE, stop=lambda: net.server.shutdown_finished(net.now))
    assert net.server.shutdown_report() == {"lcp_terminated": 1, "acked": 1, "unanswered": 0}
    assert client_ppp.lcp.terminate_reason == f"peer sent Terminate-Request: {SHUTDOWN_REASON}"
    assert [e.reason for e in net.of(None, SessionDown)] == [SHUTDOWN_REASON]
    net.server.stop_all(SHUTDOWN_REASON, net.now)
    net.run(30, stop=lambda: client.done)
    assert client.done and net.of(0, ControlClosed)
    assert "SHUTTING_DOWN" in net.of(0, SessionDown)[0].reason
    assert not client.children and not net.server.children


# -- the runtime: VPNServer's shutdown over an in-memory pump ----------------------------------
CONFIG = """
[server]
listen = "203.0.113.2"
pool = "10.10.100.0/24"
auth = ["mschapv2"]
encryption = "none"

[accounting]
provider = "local"
log = "{log}"

[users.alice]
password = "s3cret"
"""


class MemoryPump:
    """What the server's shutdown asks of a pump (feed, flush, now, on_event), over a
    PPTPPair: flush hands the stack's events to the server, and its packets reach the
    clients on a later turn of the loop, as through a socket."""

    def __init__(self, loop, net, on_event):
        self.loop, self.net, self.on_event = loop, net, on_event
        self.forwarded = 0

    def now(self):
        return self.loop.time()

    def feed(self, what, fn, *args):
        fn(*args)

    def flush(self):
        self.forward()
        self.loop.call_soon(self._wire)

    def _wire(self):
        self.net.now = self.loop.time()
        while self.net.step():
            pass
        self.forward()

    def forward(self):
        self.net.drain_server_events()
        while self.forwarded < len(self.net.server_events):
            self.forwarded += 1
            self.on_event(self.net.server_events[self.forwarded - 1])


def run_server_stop(tmp_path, silent, n=2):
    """Calls up through a VPNServer's own PPTP stack; then its shutdown as `run` does it:
    the LCP wait, the control teardown, the Stops at close. What it logged, and the time."""
    log = tmp_path / "acct.jsonl"
    server = VPNServer(ServerConfig.from_mapping(tomllib.loads(CONFIG.format(log=log))),
                       json_lines=True)

    async def scenario():
        loop = asyncio.get_running_loop()
        assert server._open_accounting(loop) is None
        net = PPTPPair(server.stacks["pptp"], [pptp.make_client(seed=2 + i) for i in range(n)])
        for c in net.clients:
            c.start(0.0)
        net.run(10, stop=lambda: len(server.stacks["pptp"].sessions) == n and all(
            any(isinstance(e, SessionUp) for e in net.events[i]) for i in range(n)))
        pump = server.pumps["pptp"] = MemoryPump(loop, net, lambda e: server.on_event(e))
        pump.forward()
        assert len(server.sessions) == n
        net.silent = silent
        started = loop.time()
        await server._end_calls(loop)
        waited = loop.time() - started
        server._stop_everything()
        await asyncio.sleep(0.05)  # as run() does before it closes
        server._close_sockets()
        return waited, net

    waited, net = asyncio.run(scenario())
    stops = [r for line in log.read_text().splitlines()
             if (r := json.loads(line)).get("event") == "stop"]
    return waited, net, stops


def logged(capsys, event):
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    return [r for r in lines if r["event"] == event]


def test_server_waits_for_the_acks_then_tears_down_and_accounts_every_call(tmp_path, capsys):
    waited, net, stops = run_server_stop(tmp_path, silent=False)
    assert waited < SHUTDOWN_GRACE / 2  # woken by the acks' events, not the bound
    (event,) = logged(capsys, "calls-terminated")
    assert (event["lcp_terminated"], event["acked"], event["unanswered"]) == (2, 2, 0)
    assert event["protocols"]["pptp"]["acked"] == 2 and event["bound"] == SHUTDOWN_GRACE
    assert len(stops) == 2 and {s["terminate_cause"] for s in stops} == {"admin-reboot"}
    for i in range(2):  # the Terminate-Ack, then the StopCCRQ cleared the client's call
        assert [e.reason for e in net.events[i] if isinstance(e, SessionDown)] == \
            [SHUTDOWN_SEEN]
        assert any(isinstance(e, ControlClosed) for e in net.events[i])
    assert [c for c, _ in net.lcp("c2s")[-2:]] == [Code.TERMINATE_ACK] * 2


def test_server_stop_is_bounded_when_no_peer_acks(tmp_path, capsys):
    waited, net, stops = run_server_stop(tmp_path, silent=True)
    assert SHUTDOWN_GRACE - 0.05 <= waited < SHUTDOWN_GRACE + 0.5
    (event,) = logged(capsys, "calls-terminated")
    assert (event["lcp_terminated"], event["acked"], event["unanswered"]) == (2, 0, 2)
    # the calls went with the StopCCRQ, and each still got its Stop record
    assert net.control("s2c").count(m.ControlMessageType.StopCCRQ) == 2
    assert len(stops) == 2 and {s["terminate_cause"] for s in stops} == {"admin-reboot"}


@pytest.mark.parametrize("silent", [False, True])
def test_server_with_no_open_call_does_not_wait(tmp_path, capsys, silent):
    waited, _, stops = run_server_stop(tmp_path, silent=silent, n=0)
    assert waited < 0.1 and not stops
    (event,) = logged(capsys, "calls-terminated")
    assert event["lcp_terminated"] == 0
