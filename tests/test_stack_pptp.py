"""PPTP client and server stacks paired in memory: control, call, GRE, PPP, datagrams."""

from __future__ import annotations

import random as _random

import pytest
from scapy.layers.pptp import PPTP

from tunnels.gre.header import GREPacket
from tunnels.ppp.auth.base import Account, AuthMethod, LocalAccounts
from tunnels.ppp.config import EncryptionLevel, PPPConfig
from tunnels.pptp import messages as m
from tunnels.stacks.pptp import (
    NO_GRE_REASON,
    ControlClosed,
    PPTPClient,
    PPTPServer,
    SessionDown,
    SessionUp,
)

USERS = LocalAccounts({"alice": Account("s3cret")})
CLIENT_IP, SERVER_IP = "198.51.100.2", "203.0.113.2"


def rng(seed):
    r = _random.Random(seed)
    return lambda n: bytes(r.getrandbits(8) for _ in range(n))


def make_server(max_calls=0, method=AuthMethod.MSCHAPV2):
    pool = iter(range(2, 250))

    def config(call_id, peer):
        return PPPConfig(True, (method,), verifier=USERS, local_address="10.10.100.1",
                         peer_address=f"10.10.100.{next(pool)}", dns=("10.10.0.53",))
    return PPTPServer(config, max_calls=max_calls, random=rng(1))


def make_client(password="s3cret", method=AuthMethod.MSCHAPV2, seed=2, src=CLIENT_IP):
    cfg = PPPConfig(False, (method,), username="alice", password=password)
    return PPTPClient(cfg, SERVER_IP, random=rng(seed))


class Net:
    def __init__(self, server, clients):
        self.server, self.clients, self.now = server, clients, 0.0
        self.wire: list[tuple[str, str, bytes]] = []  # (kind, direction, bytes) for oracles
        self.events = {i: [] for i in range(len(clients))}
        self.server_events = []
        self.drop_gre = False
        for i, _ in enumerate(clients):
            server.connection_made(i, f"198.51.100.{2 + i}", 0.0)

    def run(self, until=30.0):
        for _ in range(20000):
            moved = False
            for i, c in enumerate(self.clients):
                for _, data in c.control_to_send():
                    moved = True
                    self.wire.append(("tcp", "c2s", data))
                    self.server.receive_control(i, data, self.now)
                for _, data in c.gre_to_send():
                    moved = True
                    self.wire.append(("gre", "c2s", data))
                    if not self.drop_gre:
                        self.server.receive_gre(f"198.51.100.{2 + i}", data, self.now)
                while (e := c.next_event()) is not None:
                    self.events[i].append(e)
            for conn_id, data in self.server.control_to_send():
                moved = True
                self.wire.append(("tcp", "s2c", data))
                self.clients[conn_id].receive_control(0, data, self.now)
            for dst, data in self.server.gre_to_send():
                moved = True
                self.wire.append(("gre", "s2c", data))
                i = int(dst.rsplit(".", 1)[1]) - 2
                if not self.drop_gre:
                    self.clients[i].receive_gre(SERVER_IP, data, self.now)
            while (e := self.server.next_event()) is not None:
                self.server_events.append(e)
            if moved:
                continue
            timers = [t for t in [self.server.get_timer()] + [c.get_timer() for c in
                      self.clients] if t is not None]
            if not timers or min(timers) > until:
                return
            self.now = max(self.now, min(timers))
            self.server.handle_timer(self.now)
            for c in self.clients:
                c.handle_timer(self.now)
        raise AssertionError("no quiescence")


def up(net, until=5.0):
    for c in net.clients:
        c.start(0.0)
    net.run(until)


def test_session_comes_up_and_carries_ip_both_ways():
    net = Net(make_server(), [make_client()])
    up(net)
    ups = [e for e in net.events[0] if isinstance(e, SessionUp)]
    assert ups and ups[0].local_address == "10.10.100.2" and ups[0].peer_address == "10.10.100.1"
    assert ups[0].dns == ("10.10.0.53",)
    client = net.clients[0]
    packet = bytes.fromhex("450000200000000040110000") + bytes([10, 10, 100, 2, 10, 10, 0, 20])
    client.send_datagram(packet + b"x" * 12, net.now)
    net.run(net.now + 1)
    assert net.server.datagrams_to_tun() == [packet + b"x" * 12]
    reply = packet[:12] + bytes([10, 10, 0, 20, 10, 10, 100, 2]) + b"y" * 12
    net.server.send_datagram(reply, net.now)
    net.run(net.now + 1)
    assert client.datagrams_to_tun() == [reply]


def test_control_messages_decode_in_scapy_with_matching_call_ids():
    net = Net(make_server(), [make_client()])
    up(net)
    tcp = [(d, data) for kind, d, data in net.wire if kind == "tcp"]
    decoded = [(d, PPTP(data)) for d, data in tcp]
    assert all(p.magic_cookie == 0x1A2B3C4D for _, p in decoded)
    types = [p.ctrl_msg_type for _, p in decoded]
    assert types[:4] == [1, 2, 7, 8]  # SCCRQ, SCCRP, OCRQ, OCRP
    ocrp = decoded[3][1]
    server_call_id, client_call_id = ocrp.call_id, ocrp.peer_call_id
    gre = [(d, GREPacket.decode(data)) for kind, d, data in net.wire if kind == "gre"]
    assert {g.call_id for d, g in gre if d == "c2s"} == {server_call_id}
    assert {g.call_id for d, g in gre if d == "s2c"} == {client_call_id}


def test_gre_sequence_increases_by_one_and_acks_never_run_ahead():
    net = Net(make_server(), [make_client()])
    up(net)
    for direction in ("c2s", "s2c"):
        sent = [GREPacket.decode(d) for k, dd, d in net.wire if k == "gre" and dd == direction]
        seqs = [g.sequence for g in sent if g.sequence is not None]
        assert seqs == list(range(len(seqs)))
    received_max = {"c2s": -1, "s2c": -1}
    for kind, direction, data in net.wire:
        if kind != "gre":
            continue
        g = GREPacket.decode(data)
        if g.sequence is not None:
            received_max[direction] = max(received_max[direction], g.sequence)
        other = "s2c" if direction == "c2s" else "c2s"
        if g.ack is not None:
            assert g.ack <= received_max[other]


def test_wrong_password_clears_call_and_control_connection():
    net = Net(make_server(), [make_client(password="bad")])
    up(net, until=30)
    downs = [e for e in net.events[0] if isinstance(e, SessionDown)]
    assert downs and "691" in downs[0].reason
    assert any(isinstance(e, ControlClosed) for e in net.events[0])
    assert not net.server.sessions


def test_no_gre_is_diagnosed_by_name():
    net = Net(make_server(), [make_client()])
    net.drop_gre = True
    up(net, until=40)
    downs = [e for e in net.events[0] if isinstance(e, SessionDown)]
    assert downs and downs[0].reason == NO_GRE_REASON


def test_two_clients_get_their_own_calls_and_addresses():
    net = Net(make_server(), [make_client(seed=2), make_client(seed=3)])
    up(net)
    addresses = {e.local_address for i in (0, 1) for e in net.events[i] if isinstance(e, SessionUp)}
    assert addresses == {"10.10.100.2", "10.10.100.3"}
    assert len(net.server.sessions) == 2


def test_max_calls_refuses_the_second_client_busy():
    net = Net(make_server(max_calls=1), [make_client(seed=2), make_client(seed=3)])
    up(net)
    assert len(net.server.sessions) == 1
    ocrps = [m.decode(d) for k, dd, d in net.wire if k == "tcp" and dd == "s2c"
             and m.decode(d).TYPE == m.ControlMessageType.OCRP]
    assert sorted(o.result_code for o in ocrps) == [m.CallResult.CONNECTED, m.CallResult.BUSY]


def test_unsupported_version_and_second_sccrq_get_rfc_answers():
    server = make_server()
    server.connection_made(7, "198.51.100.9", 0)
    bad = m.StartControlConnectionRequest(protocol_version=0x0200).encode()
    server.receive_control(7, bad, 0)
    reply = m.decode(server.control_to_send()[0][1])
    assert reply.result_code == m.StartResult.BAD_PROTOCOL_VERSION
    assert 7 in server.connections_to_close()
    server.connection_made(8, "198.51.100.9", 0)
    server.receive_control(8, m.StartControlConnectionRequest().encode(), 0)
    server.receive_control(8, m.StartControlConnectionRequest().encode(), 0)
    replies = [m.decode(d) for _, d in server.control_to_send()]
    assert [r.result_code for r in replies] == [1, m.StartResult.ALREADY_EXISTS]


def test_malformed_length_stops_the_connection_and_others_keep_working():
    net = Net(make_server(), [make_client()])
    up(net)
    server = net.server
    server.connection_made(9, "198.51.100.50", net.now)
    server.receive_control(9, b"\x00\x05" + b"\x00" * 30, net.now)
    out = [m.decode(d) for cid, d in server.control_to_send() if cid == 9]
    assert out and out[0].TYPE == m.ControlMessageType.StopCCRQ
    assert 9 in server.connections_to_close()
    assert len(server.sessions) == 1  # the first client's session is untouched


def test_echo_keepalive_times_out_when_the_path_is_cut():
    cfg = PPPConfig(False, (AuthMethod.MSCHAPV2,), username="alice", password="s3cret",
                    echo_interval=0)
    client = PPTPClient(cfg, SERVER_IP, echo_interval=5, random=rng(2))
    net = Net(make_server(), [client])
    up(net)
    net.server.connections.clear()  # the server vanishes: nothing answers any more
    net.run(net.now + 30)
    closed = [e for e in net.events[0] if isinstance(e, ControlClosed)]
    assert closed and "Echo-Request" in closed[0].reason


@pytest.mark.parametrize("n", range(0, 40, 3))
def test_random_bytes_never_raise(n):
    server = make_server()
    server.connection_made(1, "198.51.100.9", 0)
    r = _random.Random(n)
    for _ in range(50):
        blob = bytes(r.getrandbits(8) for _ in range(n))
        server.receive_control(1, blob, 0)
        server.receive_gre("198.51.100.9", blob, 0)
    assert server.counters["gre_in"] == 50


def brute_force_deadline(stack):
    deadlines = [c.control.get_timer() for c in stack.connections.values()]
    for s in stack.sessions.values():
        deadlines += [s.ppp.get_timer(), s.gre.get_timer(), stack._gre_deadline(s)]
    valid = [d for d in deadlines if d is not None]
    return min(valid) if valid else None


def test_timer_heap_agrees_with_every_sessions_deadline():
    net = Net(make_server(), [make_client(seed=s) for s in (2, 3, 4)])
    for c in net.clients:
        c.start(0.0)
    for until in (0.05, 0.5, 1.0, 3.0, 10.0, 70.0):
        net.run(until)
        for stack in [net.server, *net.clients]:
            assert stack.get_timer() == brute_force_deadline(stack)


def test_user_hang_up_clears_call_then_control_connection():
    net = Net(make_server(), [make_client()])
    up(net)
    net.clients[0].hang_up(net.now)
    net.run(net.now + 10)
    types = [m.decode(d).TYPE for k, _, d in net.wire if k == "tcp"]
    T = m.ControlMessageType
    assert types[-4:] == [T.CCRQ, T.CDN, T.StopCCRQ, T.StopCCRP]
    assert not net.server.sessions and not net.clients[0].sessions
    assert [e.reason for e in net.events[0] if isinstance(e, SessionDown)] == ["user hung up"]
    assert any(isinstance(e, SessionDown) for e in net.server_events)


def ip_packet(src: bytes, dst: bytes, n: int) -> bytes:
    return bytes.fromhex("450000200000000040110000") + src + dst + n.to_bytes(12, "big")


def test_data_phase_loss_duplication_and_reordering_deliver_in_order_once():
    """After bring-up, GRE through a link that drops every 4th packet, duplicates every 5th
    and swaps neighbours: IP datagrams arrive at most once and in order (RFC 2637 §4.3)."""
    net = Net(make_server(), [make_client()])
    up(net)
    client, server = net.clients[0], net.server
    net.run(net.now + 1)
    c_ip, s_ip = bytes([10, 10, 100, 2]), bytes([10, 10, 0, 20])
    for n in range(60):
        client.send_datagram(ip_packet(c_ip, s_ip, n), net.now)
    sent = [data for _, data in client.gre_to_send()]
    assert len(sent) == 60
    link = []
    for k, data in enumerate(sent):
        if k % 4 == 3:
            continue  # lost
        link.append(data)
        if k % 5 == 0:
            link.append(data)  # duplicated
    for k in range(0, len(link) - 1, 7):
        link[k], link[k + 1] = link[k + 1], link[k]  # reordered
    for data in link:
        server.receive_gre(CLIENT_IP, data, net.now)
    got = [int.from_bytes(p[20:32], "big") for p in server.datagrams_to_tun()]
    assert got == sorted(set(got)) and 30 <= len(got) < 60
    counters = next(iter(server.sessions.values())).gre.counters
    assert counters["duplicates"] > 0 and counters["out_of_order"] > 0
    net.run(net.now + 1)  # the server owes an ack: an ack-only packet, never ahead
    acks = [GREPacket.decode(d) for k, dd, d in net.wire if k == "gre" and dd == "s2c"]
    assert acks[-1].sequence is None and acks[-1].ack == max(
        GREPacket.decode(d).sequence for d in link)


def test_echo_keepalive_answered_keeps_the_connection():
    client = PPTPClient(PPPConfig(False, (AuthMethod.MSCHAPV2,), username="alice",
                                  password="s3cret", echo_interval=0),
                        SERVER_IP, echo_interval=5, random=rng(2))
    net = Net(make_server(), [client])
    up(net)
    net.run(net.now + 60)
    types = [m.decode(d).TYPE for k, _, d in net.wire if k == "tcp"]
    assert types.count(m.ControlMessageType.ECHORQ) >= 5
    assert types.count(m.ControlMessageType.ECHORP) == types.count(m.ControlMessageType.ECHORQ)
    assert not [e for e in net.events[0] if isinstance(e, ControlClosed)]


def test_a_call_cleared_in_the_same_read_as_its_reply_leaves_no_session():
    """OCRP and CDN in one TCP segment (a server that refuses right after answering): the
    client ends with the server's reason, no exception, no session."""
    server = PPTPServer(lambda cid, peer: "all 1 PPTP ports are in use", random=rng(1))
    client = make_client(seed=5)
    server.connection_made(0, CLIENT_IP, 0.0)
    client.start(0.0)
    for _ in range(10):  # each direction's bytes in one read, as one TCP segment would be
        upstream = b"".join(d for _, d in client.control_to_send())
        if upstream:
            server.receive_control(0, upstream, 0.0)
        downstream = b"".join(d for _, d in server.control_to_send())
        if downstream:
            client.receive_control(0, downstream, 0.0)
    assert "ports are in use" in client.reason and not client.sessions


@pytest.mark.parametrize("level, stateless", [
    (EncryptionLevel.STRONGEST, True), (EncryptionLevel.STRONGEST, False),
    (EncryptionLevel.NONE, True)], ids=["mppe-stateless", "mppe-stateful", "none"])
def test_data_path_counts_every_datagram_and_never_misses_a_deadline(level, stateless):
    """The data path skips the pump (stacks/pptp.py _send_on, receive_gre): the counters
    accounting reads still move per datagram, acks still piggyback, and the timer heap is
    never later than the sessions' own earliest deadline."""
    def config(call_id, peer):
        return PPPConfig(True, (AuthMethod.MSCHAPV2,), verifier=USERS, encryption=level,
                         mppe_stateless=stateless, local_address="10.10.100.1",
                         peer_address="10.10.100.2")
    server = PPTPServer(config, random=rng(1))
    client = PPTPClient(PPPConfig(False, (AuthMethod.MSCHAPV2,), username="alice",
                                  password="s3cret", encryption=level,
                                  mppe_stateless=stateless), SERVER_IP, random=rng(2))
    net = Net(server, [client])
    up(net)
    s, c = next(iter(server.sessions.values())), client.sessions[client.call_id]
    assert (s.ppp.encryptor is not None) == (level is EncryptionLevel.STRONGEST)
    before = dict(s.ppp.counters), dict(c.ppp.counters), dict(s.gre.counters)
    c_ip, s_ip = bytes([10, 10, 100, 2]), bytes([10, 10, 0, 20])
    for n in range(300):
        client.send_datagram(ip_packet(c_ip, s_ip, n), net.now)
        for _, data in client.gre_to_send():
            server.receive_gre(CLIENT_IP, data, net.now)
        if n % 3 == 0:  # a reply now and then carries the server's ack
            server.send_datagram(ip_packet(s_ip, c_ip, n), net.now)
            replies = server.gre_to_send()
            assert GREPacket.decode(replies[0][1]).ack == s.gre.last_received
            client.receive_gre(SERVER_IP, replies[0][1], net.now)
        for stack in (server, client):
            due = brute_force_deadline(stack)
            assert due is None or stack.get_timer() <= due
        net.now += 0.01
    assert len(server.datagrams_to_tun()) == 300 and len(client.datagrams_to_tun()) == 100
    s_ppp, c_ppp, s_gre = before
    moved = {k: s.ppp.counters[k] - s_ppp[k] for k in ("ip_in", "frames_in", "ip_out")}
    assert moved == {"ip_in": 300, "frames_in": 300, "ip_out": 100}
    assert s.ppp.counters["ip_in_octets"] - s_ppp["ip_in_octets"] == 300 * 32
    assert c.ppp.counters["ip_out_octets"] - c_ppp["ip_out_octets"] == 300 * 32
    assert s.gre.counters["received"] - s_gre["received"] == 300
    assert s.gre.counters["sent"] - s_gre["sent"] == 100
    net.run(net.now + 1)  # timers still fire: the owed ack goes out alone
    assert s.gre.last_acked_by_us == s.gre.last_received
