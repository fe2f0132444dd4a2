"""vpnlab load's sans-I/O part: many PPTP clients behind one stack interface, paired in memory
with our PPTP server; the echo packets checked with scapy."""

from __future__ import annotations

import random as _random

from scapy.layers.inet import ICMP, IP

from tunnels.icmp import echo_request, is_echo_reply
from tunnels.load import LoadClient, ManyClients
from tunnels.ppp.auth.base import Account, AuthMethod, LocalAccounts
from tunnels.ppp.config import EncryptionLevel, PPPConfig
from tunnels.stacks.pptp import PPTPServer, SessionUp

CLIENT_IP, SERVER_IP = "198.51.100.2", "203.0.113.2"
USERS = LocalAccounts({"alice": Account("s3cret")})
MSCHAPV2 = (AuthMethod.MSCHAPV2,)


def rng(seed):
    r = _random.Random(seed)
    return lambda n: r.randbytes(n)


def test_echo_request_has_valid_checksums_in_scapy():
    packet = echo_request("10.64.0.2", "10.64.0.1", 70000)
    ip = IP(packet)
    assert ip[ICMP].type == 8 and ip[ICMP].id == 70000 & 0xFFFF
    rebuilt = IP(packet)
    del rebuilt.chksum, rebuilt[ICMP].chksum
    assert bytes(IP(bytes(rebuilt))) == packet


def _reply(request: bytes) -> bytes:
    ip = IP(request)
    return bytes(IP(src=ip.dst, dst=ip.src) / ICMP(type=0, id=ip[ICMP].id, seq=ip[ICMP].seq) /
                 bytes(ip[ICMP].payload))


def test_many_sessions_come_up_and_each_gets_its_own_echo_reply():
    pool = iter(range(2, 250))
    server = PPTPServer(lambda call_id, peer: PPPConfig(
        True, MSCHAPV2, verifier=USERS, encryption=EncryptionLevel.STRONGEST,
        local_address="10.64.0.1", peer_address=f"10.64.0.{next(pool)}"), random=rng(1))
    stack = ManyClients()
    config = PPPConfig(False, MSCHAPV2, username="alice", password="s3cret",
                       encryption=EncryptionLevel.STRONGEST, echo_interval=0)
    n = 6
    for i in range(n):
        client = LoadClient(config, SERVER_IP, random=rng(10 + i))
        client.assigned_call_id = i + 1
        server.connection_made(i, CLIENT_IP, 0.0)
        stack.add(i, client)
        client.start(0.0)
    up, replies = {}, {}
    for _ in range(400):
        moved = False
        for i, data in stack.control_to_send():
            server.receive_control(i, data, 0.0)
            moved = True
        for i, data in server.control_to_send():
            stack.receive_control(i, data, 0.0)
            moved = True
        for _dst, data in stack.gre_to_send():
            server.receive_gre(CLIENT_IP, data, 0.0)
            moved = True
        for _dst, data in server.gre_to_send():
            stack.receive_gre(SERVER_IP, data, 0.0)
            moved = True
        for packet in server.datagrams_to_tun():  # the server's kernel answers the echo
            server.send_datagram(_reply(packet), 0.0)
            moved = True
        while (item := stack.next_event()) is not None:
            i, event = item
            if isinstance(event, SessionUp):
                up[i] = event.local_address
                stack.send_datagram(i, event.call_id, echo_request(
                    event.local_address, event.peer_address, i), 0.0)
                moved = True
        for i, packet in stack.replies():
            replies[i] = is_echo_reply(packet, i)
        while server.next_event() is not None:
            pass
        if not moved:
            break
    assert sorted(up) == list(range(n)) and len(set(up.values())) == n
    assert replies == {i: True for i in range(n)}
    assert stack.counters["gre_unknown_call"] == 0
    assert stack.get_timer() is not None  # the sessions' timers are armed in the heap
