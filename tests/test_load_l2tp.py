"""vpnlab load's L2TP side without I/O: several tunnels of several calls each (LoadLAC stacks
behind ManyClients, demultiplexed by our Tunnel ID) paired in memory with our L2TP server;
each session's echo reply is told apart by its identifier."""

from __future__ import annotations

import random as _random
import struct

from scapy.layers.inet import ICMP, IP

from tunnels.icmp import echo_reply_ident, echo_request
from tunnels.l2tp.control import TunnelConfig
from tunnels.load import LoadLAC, ManyClients, l2tp_tunnel_id
from tunnels.ppp.auth.base import Account, AuthMethod, LocalAccounts
from tunnels.ppp.config import EncryptionLevel, PPPConfig
from tunnels.stacks.l2tp import L2TPServer
from tunnels.stacks.pptp import ControlClosed, SessionDown, SessionUp

CLIENT, SERVER = ("198.51.100.2", 40000), ("203.0.113.2", 1701)
USERS = LocalAccounts({"alice": Account("s3cret")})
MSCHAPV2 = (AuthMethod.MSCHAPV2,)


def rng(seed):
    return _random.Random(seed).randbytes


def _server(encryption=EncryptionLevel.NONE):
    pool = iter(range(2, 250))
    return L2TPServer(lambda sid, peer: PPPConfig(
        True, MSCHAPV2, verifier=USERS, encryption=encryption, local_address="10.64.0.1",
        peer_address=f"10.64.0.{next(pool)}"), TunnelConfig(host_name="lns"), random=rng(1))


def _reply(request: bytes) -> bytes:
    ip = IP(request)
    return bytes(IP(src=ip.dst, dst=ip.src) / ICMP(type=0, id=ip[ICMP].id, seq=ip[ICMP].seq) /
                 bytes(ip[ICMP].payload))


class Pair:
    """ManyClients of `tunnels` LoadLACs with `per_tunnel` calls each, against one server;
    every session pings when up; `step()` moves everything once (bounded loops)."""

    def __init__(self, tunnels, per_tunnel, encryption=EncryptionLevel.NONE):
        self.server, self.stack = _server(encryption), ManyClients(
            key_of=l2tp_tunnel_id, unknown="l2tp_unknown_tunnel")
        self.up, self.replies, self.down, self.calls = {}, {}, [], {}
        config = PPPConfig(False, MSCHAPV2, username="alice", password="s3cret",
                           encryption=encryption, echo_interval=0)
        for t in range(tunnels):
            lac = LoadLAC(config, SERVER[0], TunnelConfig(host_name="load"), random=rng(10 + t))
            lac.assigned_tunnel_id = 100 + t
            self.stack.add(t, lac, key=100 + t)
            lac.start(0.0)
            self.calls[(t, lac.session_id)] = t * per_tunnel
            for k in range(1, per_tunnel):  # queued until the tunnel is up
                self.calls[(t, self.stack.place_call(t, 0.0))] = t * per_tunnel + k

    def step(self, now):
        moved = False
        for _dst, data in self.stack.gre_to_send():
            self.server.receive_datagram(CLIENT, data, now)
            moved = True
        for dst, data in self.server.datagrams_to_send():
            assert dst == CLIENT
            self.stack.receive_gre(SERVER, data, now)
            moved = True
        for packet in self.server.datagrams_to_tun():  # the server's kernel answers
            self.server.send_datagram(_reply(packet), now)
            moved = True
        while (item := self.stack.next_event()) is not None:
            t, event = item
            if isinstance(event, SessionUp):
                probe = self.calls[(t, event.call_id)]
                self.up[probe] = event.local_address
                self.stack.send_datagram(t, event.call_id, echo_request(
                    event.local_address, event.peer_address, probe), now)
                moved = True
            elif isinstance(event, SessionDown | ControlClosed):
                self.down.append((t, event))
        for t, packet in self.stack.replies():
            self.replies[echo_reply_ident(packet)] = t
        while self.server.next_event() is not None:
            pass
        return moved

    def run(self, now=0.0, until=60.0):
        for _ in range(2000):
            if self.step(now):
                continue
            timers = [x for x in (self.stack.get_timer(), self.server.get_timer()) if x]
            if not timers or min(timers) > until:
                return now
            now = max(now, min(timers))
            self.stack.handle_timer(now)
            self.server.handle_timer(now)
        raise AssertionError("did not settle")


def test_tunnel_id_is_read_with_and_without_the_length_field():
    # RFC 2661 §3.1 by hand: T, L, S and version 2; then a data message with no Length
    control = struct.pack("!HHHHHH", 0xC802, 12, 7, 0, 0, 0)
    assert l2tp_tunnel_id(control) == 7
    data = struct.pack("!HHH", 0x0002, 9, 3) + b"\xff\x03"
    assert l2tp_tunnel_id(data) == 9
    assert l2tp_tunnel_id(b"\x00\x02") is None


def test_several_tunnels_of_several_calls_each_get_their_own_echo_replies():
    pair = Pair(tunnels=3, per_tunnel=4)
    pair.run(until=5.0)
    assert sorted(pair.up) == list(range(12)) and len(set(pair.up.values())) == 12
    # every reply came out of the stack (tunnel) of the session its identifier names
    assert pair.replies == {i: i // 4 for i in range(12)}
    assert len(pair.server.tunnels) == 3 and len(pair.server.sessions) == 12
    assert pair.stack.counters["l2tp_unknown_tunnel"] == 0 and not pair.down


def test_mppe_sessions_in_one_tunnel():
    pair = Pair(tunnels=1, per_tunnel=3, encryption=EncryptionLevel.STRONGEST)
    pair.run(until=5.0)
    assert pair.replies == {0: 0, 1: 0, 2: 0}


def test_hang_up_closes_every_call_then_the_tunnel():
    pair = Pair(tunnels=2, per_tunnel=3)
    now = pair.run(until=5.0)
    for t in list(pair.stack.clients):
        pair.stack.hang_up(t, now)
    pair.run(now, until=now + 20.0)
    assert not pair.server.sessions
    downs = [e for _, e in pair.down if isinstance(e, SessionDown)]
    assert len(downs) == 6
    assert sorted(t for t, e in pair.down if isinstance(e, ControlClosed)) == [0, 1]
    assert all(lac.done for lac in pair.stack.clients.values())


def test_no_call_is_placed_on_a_closed_tunnel():
    pair = Pair(tunnels=1, per_tunnel=1)
    now = pair.run(until=5.0)
    pair.stack.hang_up(0, now)
    pair.run(now, until=now + 20.0)
    assert pair.stack.place_call(0, now) == 0


class MemoryPump:
    """The StackPump surface LoadGenerator uses, wired to an in-memory L2TP server on a
    virtual clock (no socket, no real timer). `flush` only queues what the generator sends;
    `run` delivers it round by round, so calls placed one after another overlap as on a
    wire."""

    def __init__(self, gen, server):
        self.gen, self.server, self.t = gen, server, 0.0
        self.writers, self.counters, self.most_placing = {}, {}, 0
        self.wire = []

    def now(self):
        return self.t

    def feed(self, what, fn, *args):
        fn(*args)

    def flush(self):
        stack = self.gen.stack
        self.wire += stack.gre_to_send()
        while (item := stack.next_event()) is not None:
            self.gen.on_event(item)
        for index, packet in stack.replies():
            self.gen._reply(index, packet)
        self.wire += stack.gre_to_send()  # what the events made the stack send
        self.most_placing = max([self.most_placing, *self.gen._placing.values()])

    def _round(self):
        server, wire, self.wire = self.server, self.wire, []
        for _dst, data in wire:
            server.receive_datagram(CLIENT, data, self.t)
        for packet in server.datagrams_to_tun():
            server.send_datagram(_reply(packet), self.t)
        replies = server.datagrams_to_send()
        while server.next_event() is not None:
            pass
        for _dst, data in replies:
            self.gen.stack.receive_gre(SERVER, data, self.t)
        self.flush()
        return bool(wire or replies)

    def run(self, until):
        for _ in range(5000):
            if self._round():
                continue
            timers = [x for x in (self.gen.stack.get_timer(), self.server.get_timer()) if x]
            if not timers or min(timers) > until:
                return
            self.t = max(self.t, min(timers))
            self.gen.stack.handle_timer(self.t)
            self.server.handle_timer(self.t)
            self.flush()
        raise AssertionError("did not settle")


def _generate(sessions, per_tunnel):
    import asyncio

    from tunnels.load import LoadGenerator

    async def main():
        gen = LoadGenerator(SERVER[0], sessions, 1e9, "alice", "s3cret", window=sessions,
                            encryption=EncryptionLevel.NONE, protocol="l2tp",
                            sessions_per_tunnel=per_tunnel)
        server = _server()
        gen.gre, gen.pump = object(), MemoryPump(gen, server)  # no socket is opened
        for index in range(sessions):  # every session's turn at once, as a high --rate gives
            gen._negotiating += 1
            await gen._open_l2tp(index)
        gen.pump.run(until=10.0)
        return gen, server

    return asyncio.run(main())


def test_generator_sets_up_at_most_calls_in_flight_per_tunnel_and_all_get_echoes():
    from tunnels.load import CALLS_IN_FLIGHT

    gen, server = _generate(sessions=45, per_tunnel=20)
    assert len(gen.stack.clients) == 3  # 20 + 20 + 5 calls
    assert all(p.pinged is not None and not p.failure for p in gen.probes.values())
    assert gen.pump.most_placing == CALLS_IN_FLIGHT
    assert server.counters["unknown_session"] == 0 and len(server.sessions) == 45


def test_without_the_limit_the_lns_holds_lcp_that_overtakes_its_iccn(monkeypatch):
    """17 calls placed at once in one tunnel exceed the LNS's window of 16 messages; each
    call's LCP Configure-Request overtakes its ICCN. The LNS holds it until the ICCN comes
    (it used to drop it and cost every call a 3 s LCP restart; CALLS_IN_FLIGHT was the
    generator's way around that)."""
    import tunnels.load

    monkeypatch.setattr(tunnels.load, "CALLS_IN_FLIGHT", 17)
    gen, server = _generate(sessions=17, per_tunnel=17)
    assert server.counters["unknown_session"] == 0
    assert server.counters["data_held_early"] >= 1
    assert all(p.pinged is not None for p in gen.probes.values())
