"""L2TP LAC and LNS stacks paired in memory: tunnel, sessions, reliable delivery, PPP, data.

Datagrams go through a `Net` with a virtual clock, optional loss and reordering; nothing sleeps.
"""

from __future__ import annotations

import random as _random

import pytest

from tests.virtual_clock import VirtualClockNet
from tunnels.l2tp.avp import AVP, AVPType, ResultCode
from tunnels.l2tp.control import CallMode, TunnelConfig
from tunnels.l2tp.messages import ControlMessage, ControlPacket, DataPacket, MessageType
from tunnels.l2tp.messages import decode_packet
from tunnels.ppp.auth.base import Account, AuthMethod, LocalAccounts
from tunnels.ppp.config import EncryptionLevel, PPPConfig
from tunnels.stacks.l2tp import NO_REPLY_REASON, L2TPClient, L2TPServer
from tunnels.stacks.pptp import ControlClosed, SessionDown, SessionUp

USERS = LocalAccounts({"alice": Account("s3cret")})
SERVER = ("203.0.113.2", 1701)


def rng(seed):
    r = _random.Random(seed)
    return lambda n: bytes(r.getrandbits(8) for _ in range(n))


def make_server(tunnel=None, max_sessions=0, method=AuthMethod.MSCHAPV2,
                encryption=EncryptionLevel.NONE):
    pool = iter(range(2, 250))

    def config(session_id, peer):
        return PPPConfig(True, (method,), verifier=USERS, local_address="10.10.100.1",
                         peer_address=f"10.10.100.{next(pool)}", dns=("10.10.0.53",),
                         encryption=encryption)
    return L2TPServer(config, tunnel or TunnelConfig(host_name="lns"),
                      max_sessions=max_sessions, random=rng(1))


def make_client(tunnel=None, password="s3cret", method=AuthMethod.MSCHAPV2, seed=2,
                encryption=EncryptionLevel.NONE):
    cfg = PPPConfig(False, (method,), username="alice", password=password,
                    encryption=encryption)
    return L2TPClient(cfg, SERVER[0], tunnel or TunnelConfig(host_name="lac"),
                      random=rng(seed))


class Net(VirtualClockNet):
    """Clients at 198.51.100.(2+i):1701 (or another source port) and one server."""

    def __init__(self, server, clients, loss=0.0, reorder=0.0, seed=7, ports=None):
        self.server, self.clients, self.now = server, clients, 0.0
        self.ports = ports or [1701] * len(clients)
        self.loss, self.reorder = loss, reorder
        self.r = _random.Random(seed)
        self.wire: list[tuple[str, bytes]] = []
        self.events = {i: [] for i in range(len(clients))}
        self.server_events = []
        self.cut = False
        self.dropped = 0

    def addr(self, i):
        return (f"198.51.100.{2 + i}", self.ports[i])

    def _deliver(self, batch):
        if self.reorder and len(batch) > 1 and self.r.random() < self.reorder:
            self.r.shuffle(batch)
        for fn, src, data in batch:
            if self.cut or (self.loss and self.r.random() < self.loss):
                self.dropped += 1
                continue
            fn(src, data, self.now)

    def step(self):
        moved = False
        batch = []
        for i, c in enumerate(self.clients):
            for dst, data in c.datagrams_to_send():
                assert dst == SERVER
                moved = True
                self.wire.append(("c2s", data))
                batch.append((self.server.receive_datagram, self.addr(i), data))
            while (e := c.next_event()) is not None:
                self.events[i].append(e)
        for dst, data in self.server.datagrams_to_send():
            moved = True
            self.wire.append(("s2c", data))
            i = int(dst[0].rsplit(".", 1)[1]) - 2
            assert dst == self.addr(i)
            batch.append((self.clients[i].receive_datagram, SERVER, data))
        while (e := self.server.next_event()) is not None:
            self.server_events.append(e)
        self._deliver(batch)
        return moved or bool(batch)


    def ups(self, i):
        return [e for e in self.events[i] if isinstance(e, SessionUp)]


def control_messages(net, direction=None, secret=None):
    out = []
    for d, data in net.wire:
        if direction and d != direction:
            continue
        p = decode_packet(data)
        if isinstance(p, ControlPacket):
            msg = ControlMessage.decode(p.payload, secret) if p.payload else None
            out.append((d, p, msg))
    return out


def names(net, direction=None, secret=None):
    return [m.message_type.name if m else "ZLB"
            for _, _, m in control_messages(net, direction, secret)]


def icmp_echo(src, dst):
    import struct
    payload = b"\x08\x00\x00\x00\x00\x01\x00\x01ping"
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0, 64, 1, 0,
                         bytes(map(int, src.split("."))), bytes(map(int, dst.split("."))))
    return header + payload


@pytest.mark.parametrize("method", list(AuthMethod))
@pytest.mark.parametrize("mode", list(CallMode))
def test_session_comes_up_and_carries_datagrams(method, mode):
    server = make_server(method=method)
    client = make_client(TunnelConfig(host_name="lac", call_mode=mode), method=method)
    net = Net(server, [client])
    client.start(0.0)
    net.run(10, stop=lambda: net.ups(0))
    up = net.ups(0)[0]
    assert up.local_address == "10.10.100.2" and up.peer_address == "10.10.100.1"
    expected = (["SCCRQ", "SCCCN", "ICRQ", "ICCN"] if mode is CallMode.INCOMING
                else ["SCCRQ", "SCCCN", "OCRQ"])
    assert [n for n in names(net, "c2s") if n != "ZLB"][:len(expected)] == expected
    client.send_datagram(icmp_echo("10.10.100.2", "10.10.100.1"), net.now)
    net.run(1)
    assert server.datagrams_to_tun() == [icmp_echo("10.10.100.2", "10.10.100.1")]
    server.send_datagram(icmp_echo("10.10.100.1", "10.10.100.2"), net.now)
    net.run(1)
    assert client.datagrams_to_tun() == [icmp_echo("10.10.100.1", "10.10.100.2")]


def test_mppe_over_l2tp_needs_no_change_to_ppp():
    server = make_server(encryption=EncryptionLevel.STRONGEST)
    client = make_client(encryption=EncryptionLevel.STRONGEST)
    net = Net(server, [client])
    client.start(0.0)
    net.run(10, stop=lambda: net.ups(0))
    session = next(iter(client.sessions.values()))
    assert session.ppp.status()["encryption"] == "mppe-128 stateless"


def test_hang_up_sends_cdn_then_stopccn_and_both_ends_forget():
    server, client = make_server(), make_client()
    net = Net(server, [client])
    client.start(0.0)
    net.run(10, stop=lambda: net.ups(0))
    client.hang_up(net.now)
    net.run(5, stop=lambda: client.done)
    assert client.done
    sent = [n for n in names(net, "c2s") if n != "ZLB"]
    assert sent[-2:] == ["CDN", "StopCCN"]
    assert any(isinstance(e, SessionDown) for e in net.server_events)
    assert any(isinstance(e, ControlClosed) for e in net.server_events)
    assert not server.sessions
    net.run(40)  # §5.7: the state lingers one retransmission cycle, then goes
    assert not server.tunnels and not client.tunnels


def test_server_shutdown_stops_every_tunnel_with_result_6():
    server = make_server()
    clients = [make_client(seed=s) for s in (2, 3)]
    net = Net(server, clients)
    for c in clients:
        c.start(0.0)
    net.run(10, stop=lambda: net.ups(0) and net.ups(1))
    server.stop_all("server shutting down", net.now)
    net.run(3)
    stops = [m for _, _, m in control_messages(net, "s2c") if m and
             m.message_type == MessageType.StopCCN]
    assert len(stops) == 2
    assert {ResultCode.decode(m.get(AVPType.RESULT_CODE).value).result for m in stops} == {6}
    for i in (0, 1):
        assert any(isinstance(e, ControlClosed) for e in net.events[i])


def test_the_servers_stopccn_is_acked_again_while_the_client_lingers():
    """RFC 2661 §5.7: the receiver of a StopCCN acks it and keeps enough state to accept
    its retransmissions "over at least a full retransmission cycle". Our first ZLB is lost:
    the server sends the StopCCN again (same Ns) and the lingering client acks it again; the
    client is done only when its linger is over (its own StopCCN would not linger)."""
    server = make_server()
    client = make_client(TunnelConfig(host_name="lac", linger=10.0))
    net = Net(server, [client])
    client.start(0.0)
    net.run(10, stop=lambda: net.ups(0))
    lost, deliver = [], net._deliver

    def first_zlb_to_the_server_lost(batch):
        kept = []
        for fn, src, data in batch:
            packet = decode_packet(data)
            if not lost and fn == server.receive_datagram and \
                    isinstance(packet, ControlPacket) and not packet.payload:
                lost.append(packet)
                continue
            kept.append((fn, src, data))
        deliver(kept)
    net._deliver = first_zlb_to_the_server_lost
    mark = len(net.wire)
    server.stop_all("administrator", net.now)
    net.run(0.5)
    assert lost and client.lingering and not client.done
    net.run(3)
    wire = net.wire[mark:]
    stops = [decode_packet(d) for way, d in wire if way == "s2c"]
    assert [ControlMessage.decode(p.payload).message_type for p in stops] == \
        [MessageType.StopCCN] * 2 and stops[0].ns == stops[1].ns  # the StopCCN, again
    zlbs = [decode_packet(d) for way, d in wire if way == "c2s"]
    assert len(zlbs) == 2 and all(not z.payload for z in zlbs)
    assert zlbs[1].nr == (stops[1].ns + 1) & 0xFFFF
    [entry] = server.tunnels.values()
    assert entry.tunnel.channel.idle()  # the second ZLB reached it
    assert client.lingering and not client.done
    net.run(10)
    assert client.done and not client.lingering and not client.tunnels
    assert [n for n in names(net, "c2s")][-2:] == ["ZLB", "ZLB"]  # nothing of ours but acks


def test_two_tunnels_and_several_sessions_per_tunnel():
    server = make_server()
    clients = [make_client(seed=s) for s in (2, 3, 4)]
    net = Net(server, clients)
    for c in clients:
        c.start(0.0)
    net.run(10, stop=lambda: all(net.ups(i) for i in range(3)))
    assert len(server.tunnels) == 3 and len(server.sessions) == 3
    # a second call in the first client's tunnel (a LAC with two dial-in users)
    entry = next(iter(clients[0].tunnels.values()))
    entry.tunnel.place_call(net.now)
    clients[0]._after_tunnel(entry, net.now)
    net.run(5, stop=lambda: len(server.sessions) == 4)
    assert len(server.sessions) == 4
    tids = {s.tunnel.tunnel_id for s in server.sessions.values()}
    assert len(tids) == 3


@pytest.mark.parametrize("loss", [0.1, 0.3])
def test_setup_and_teardown_complete_under_loss_and_reordering(loss):
    server, client = make_server(), make_client()
    net = Net(server, [client], loss=loss, reorder=0.3, seed=11)
    client.start(0.0)
    net.run(120, stop=lambda: net.ups(0))
    assert net.ups(0), f"no session under {loss:.0%} loss"
    assert net.dropped > 0
    client.hang_up(net.now)
    net.run(120, stop=lambda: client.done and not server.sessions)
    assert client.done and not server.sessions


def test_lost_control_messages_are_retransmitted_identically():
    server, client = make_server(), make_client()
    net = Net(server, [client])
    lost = []
    deliver = net._deliver

    def drop_first_of_each(batch):  # every control message is lost once
        kept = []
        for item in batch:
            p = decode_packet(item[2])
            if isinstance(p, ControlPacket) and p.payload and (p.ns, item[0]) not in lost:
                lost.append((p.ns, item[0]))
                continue
            kept.append(item)
        deliver(kept)
    net._deliver = drop_first_of_each
    client.start(0.0)
    net.run(60, stop=lambda: net.ups(0))
    assert net.ups(0)
    channels = [e.tunnel.channel for e in [*server.tunnels.values(), *client.tunnels.values()]]
    assert all(c.counters["retransmitted"] > 0 for c in channels)
    sent = {}
    for _, raw in net.wire:
        p = decode_packet(raw)
        if isinstance(p, ControlPacket) and p.payload:
            sent.setdefault((p.tunnel_id, p.ns), set()).add(p.payload)
    assert all(len(payloads) == 1 for payloads in sent.values())  # same Ns, same message


def test_tunnel_secret_authenticates_both_ways_and_hides_avps():
    t = TunnelConfig(host_name="lac", secret=b"tunnelpw", hide_avps=True)
    server = make_server(TunnelConfig(host_name="lns", secret=b"tunnelpw", hide_avps=True))
    client = make_client(t)
    net = Net(server, [client])
    client.start(0.0)
    net.run(10, stop=lambda: net.ups(0))
    assert net.ups(0)
    msgs = control_messages(net, secret=b"tunnelpw")
    sccrq = next(m for _, _, m in msgs if m and m.message_type == MessageType.SCCRQ)
    sccrp = next(m for _, _, m in msgs if m and m.message_type == MessageType.SCCRP)
    assert sccrq.has(AVPType.CHALLENGE) and sccrp.has(AVPType.CHALLENGE_RESPONSE)
    assert sccrp.has(AVPType.CHALLENGE)
    scccn = next(m for _, _, m in msgs if m and m.message_type == MessageType.SCCCN)
    assert scccn.has(AVPType.CHALLENGE_RESPONSE)
    icrq = next(m for _, _, m in msgs if m and m.message_type == MessageType.ICRQ)
    assert icrq.get(AVPType.ASSIGNED_SESSION_ID).hidden


@pytest.mark.parametrize("who", ["client", "server"])
def test_wrong_tunnel_secret_is_refused_with_result_4(who):
    secrets = {"client": (b"wrong", b"right"), "server": (b"right", b"wrong")}[who]
    server = make_server(TunnelConfig(host_name="lns", secret=secrets[1]))
    client = make_client(TunnelConfig(host_name="lac", secret=secrets[0]))
    net = Net(server, [client])
    client.start(0.0)
    net.run(10, stop=lambda: client.done)
    stops = [(d, m) for d, _, m in control_messages(net) if m and
             m.message_type == MessageType.StopCCN]
    assert stops
    assert ResultCode.decode(stops[0][1].get(AVPType.RESULT_CODE).value).result == 4
    closed = [e for e in net.events[0] if isinstance(e, ControlClosed)]
    assert closed and "tunnel" in closed[0].reason and not net.ups(0)


def test_no_answer_names_udp_1701():
    server, client = make_server(), make_client()
    net = Net(server, [client])
    net.cut = True
    client.start(0.0)
    net.run(60, stop=lambda: client.done)
    closed = [e for e in net.events[0] if isinstance(e, ControlClosed)]
    assert closed and closed[0].reason == NO_REPLY_REASON


def test_link_cut_tears_down_both_ends_by_hello():
    server = make_server(TunnelConfig(host_name="lns", hello_interval=5))
    client = make_client(TunnelConfig(host_name="lac", hello_interval=5))
    net = Net(server, [client])
    client.start(0.0)
    net.run(10, stop=lambda: net.ups(0))
    net.cut = True
    net.run(60)
    for events in (net.events[0], net.server_events):
        closed = [e for e in events if isinstance(e, ControlClosed)]
        assert closed and "control channel failed" in closed[0].reason
    assert not server.sessions and not client.sessions


def test_client_from_another_source_port_is_answered_there():
    server, client = make_server(), make_client()
    net = Net(server, [client], ports=[40123])
    client.start(0.0)
    net.run(10, stop=lambda: net.ups(0))
    assert net.ups(0)


def test_session_limit_refuses_with_cdn_result_4():
    server = make_server(max_sessions=1)
    clients = [make_client(seed=s) for s in (2, 3)]
    net = Net(server, clients)
    for c in clients:
        c.start(0.0)
    net.run(10)
    assert len(server.sessions) == 1
    cdns = [m for _, _, m in control_messages(net, "s2c") if m and
            m.message_type == MessageType.CDN]
    assert cdns and ResultCode.decode(cdns[0].get(AVPType.RESULT_CODE).value).result == 4


def _send_raw(net, server, i, ns, nr, tid, sid, msg):
    packet = ControlPacket(tid, sid, ns, nr, msg.encode()).encode()
    server.receive_datagram(net.addr(i), packet, net.now)
    return [decode_packet(d) for _, d in server.datagrams_to_send()]


def _sccrq(tid=7, version=0x0100, extra=()):
    return ControlMessage(MessageType.SCCRQ, (
        AVP.u16(AVPType.PROTOCOL_VERSION, version),
        AVP.u32(AVPType.FRAMING_CAPABILITIES, 3), AVP.string(AVPType.HOST_NAME, "probe"),
        AVP.u16(AVPType.ASSIGNED_TUNNEL_ID, tid), *extra))


def _stop_result(packets):
    for p in packets:
        if isinstance(p, ControlPacket) and p.payload:
            m = ControlMessage.decode(p.payload)
            if m.message_type == MessageType.StopCCN:
                return ResultCode.decode(m.get(AVPType.RESULT_CODE).value)
    return None


def test_wrong_protocol_version_gets_stopccn_result_5():
    server = make_server()
    net = Net(server, [make_client()])
    rc = _stop_result(_send_raw(net, server, 0, 0, 0, 0, 0, _sccrq(version=0x0200)))
    assert rc is not None and rc.result == 5


def test_unknown_mandatory_avp_gets_stopccn_error_8_and_optional_is_ignored():
    server = make_server()
    net = Net(server, [make_client()])
    bad = _sccrq(extra=(AVP.raw(200, b"x", mandatory=True),))
    rc = _stop_result(_send_raw(net, server, 0, 0, 0, 0, 0, bad))
    assert rc is not None and (rc.result, rc.error) == (2, 8)
    ok = _sccrq(tid=8, extra=(AVP.raw(200, b"x", mandatory=False),))
    out = _send_raw(net, server, 0, 0, 0, 0, 0, ok)
    assert any(p.payload and ControlMessage.decode(p.payload).message_type ==
               MessageType.SCCRP for p in out)


def test_message_for_unknown_tunnel_gets_stopccn_error_1():
    server = make_server()
    net = Net(server, [make_client()])
    icrq = ControlMessage(MessageType.ICRQ, (AVP.u16(AVPType.ASSIGNED_SESSION_ID, 5),
                                             AVP.u32(AVPType.CALL_SERIAL_NUMBER, 1)))
    rc = _stop_result(_send_raw(net, server, 0, 3, 0, 4242, 0, icrq))
    assert rc is not None and (rc.result, rc.error) == (2, 1)
    assert server.counters["unknown_tunnel"] == 1


def test_retransmitted_sccrq_makes_no_second_tunnel_and_second_sccrq_gets_result_3():
    server = make_server()
    net = Net(server, [make_client()])
    first = _send_raw(net, server, 0, 0, 0, 0, 0, _sccrq())
    assert len(server.tunnels) == 1
    _send_raw(net, server, 0, 0, 0, 0, 0, _sccrq())  # the same Ns: a retransmission
    assert len(server.tunnels) == 1
    tid = next(iter(server.tunnels))
    scccn = ControlMessage(MessageType.SCCCN, ())
    _send_raw(net, server, 0, 1, 1, tid, 0, scccn)
    assert first
    rc = _stop_result(_send_raw(net, server, 0, 2, 1, tid, 0, _sccrq()))
    assert rc is not None and rc.result == 3


def test_garbage_never_raises():
    server = make_server()
    r = _random.Random(5)
    for _ in range(2000):
        data = bytes(r.getrandbits(8) for _ in range(r.randint(0, 60)))
        if r.random() < 0.5:
            data = b"\xc8\x02" + data
        server.receive_datagram(("198.51.100.9", 1701), data, 0.0)
        server.datagrams_to_send()
    assert server.counters["malformed"] > 0


def test_sequenced_data_drops_older_packets():
    server = make_server(TunnelConfig(host_name="lns", data_sequencing=True))
    client = make_client()
    net = Net(server, [client])
    client.start(0.0)
    net.run(10, stop=lambda: net.ups(0))
    s = next(iter(client.sessions.values()))
    assert s.control.sequencing  # the LNS sends Ns; the LAC mirrors it (§5.4)
    data = [d for d, raw in net.wire if isinstance(decode_packet(raw), DataPacket)]
    assert data


def test_no_second_hello_while_one_is_unacknowledged():
    server = make_server(TunnelConfig(host_name="lns", hello_interval=2))
    client = make_client(TunnelConfig(host_name="lac", hello_interval=2))
    net = Net(server, [client])
    client.start(0.0)
    net.run(10, stop=lambda: net.ups(0))
    net.cut = True
    net.run(40)
    for stack in (server, client):
        for entry in stack.tunnels.values():
            assert entry.tunnel.counters["hello_sent"] <= 1
    hellos = {(d, p.ns) for d, p, m in control_messages(net)
              if m and m.message_type == MessageType.HELLO}
    for direction in ("c2s", "s2c"):  # at most one Hello per end, retransmitted with its Ns
        assert len([d for d, _ in hellos if d == direction]) <= 1
    assert hellos  # and the silence was noticed by a Hello


def test_data_that_overtakes_iccn_is_held_and_replayed():
    """The LAC's PPP starts when it sends ICCN; if the ICCN waits (window) or is lost, its
    first LCP frames reach the LNS before the session is up: held, then replayed."""
    server, client = make_server(), make_client()
    net = Net(server, [client])
    deliver = net._deliver
    dropped = []

    def drop_first_iccn(batch):
        kept = []
        for item in batch:
            p = decode_packet(item[2])
            if isinstance(p, ControlPacket) and p.payload and not dropped and \
                    ControlMessage.decode(p.payload).message_type == MessageType.ICCN:
                dropped.append(p)
                continue
            kept.append(item)
        deliver(kept)
    net._deliver = drop_first_iccn
    client.start(0.0)
    net.run(10, stop=lambda: net.ups(0))
    assert dropped and net.ups(0)
    assert server.counters["data_held_early"] >= 1
    assert net.now < 3.0  # no LCP restart timer (3 s) was needed
