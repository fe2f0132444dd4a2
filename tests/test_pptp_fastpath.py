"""The PPTP data path's common case (tunnels/stacks/pptp.py: send_datagram, receive_gre)
against the general path it shortcuts: two identical worlds (same seeds, so the same keys),
one with the fast path, one forced through the layers, fed the same datagrams and the same
crafted packets, give the same bytes on the wire and to the TUN device, the same counters
(stack, GRE, PPP, MPPE), the same GRE sequence/ack state and the same timer heap. Unusual
packets (out of order, duplicate, ack-only, wrong source, unknown call, padded, LCP/CCP
frames, MPPE gaps and bad flags, CCP Reset-Request) take the general path and are counted
alike."""

from __future__ import annotations

import pytest

from test_stack_pptp import USERS, Net, rng, up
from tunnels.gre.header import GREPacket
from tunnels.ppp.auth.base import AuthMethod
from tunnels.ppp.config import EncryptionLevel, PPPConfig
from tunnels.stacks.pptp import PPTPClient, PPTPServer
from tunnels.stacks.sessions import SessionTable

NONE, MPPE = EncryptionLevel.NONE, EncryptionLevel.STRONGEST
CLIENT = "198.51.100.2"


def make_pair(encryption, stateless):
    def config(call_id, peer):
        return PPPConfig(True, (AuthMethod.MSCHAPV2,), verifier=USERS,
                         local_address="10.10.100.1", peer_address="10.10.100.2",
                         encryption=encryption, mppe_stateless=stateless)
    server = PPTPServer(config, random=rng(1))
    client = PPTPClient(PPPConfig(False, (AuthMethod.MSCHAPV2,), username="alice",
                                  password="s3cret", encryption=encryption,
                                  mppe_stateless=stateless), "203.0.113.2", random=rng(2))
    return server, client


def force_general(stack):
    """The stack with the common case switched off (what it was before)."""
    stack.send_datagram = lambda packet, now: SessionTable.send_datagram(stack, packet, now)
    stack.receive_gre = stack._receive_gre


def world(general, encryption, stateless):
    server, client = make_pair(encryption, stateless)
    if general:
        force_general(server)
        force_general(client)
    net = Net(server, [client])
    up(net)
    return net


def ip(src, dst, payload):
    total = 20 + len(payload)
    return (bytes([0x45, 0, total >> 8, total & 0xFF]) + bytes(4) + bytes([64, 17, 0, 0])
            + bytes(map(int, src.split("."))) + bytes(map(int, dst.split("."))) + payload)


def snapshot(net):
    """Everything the two paths must agree on."""
    def stack_state(stack):
        sessions = [(s.call_id, s.last_gre, s.up, vars(s.gre).copy(), dict(s.ppp.counters),
                     s.ppp._now if hasattr(s.ppp, "_now") else None,
                     None if s.ppp.decryptor is None else
                     (dict(s.ppp.decryptor.counters), s.ppp.decryptor.count,
                      s.ppp.decryptor.discarding, dict(s.ppp.decryptor._skipped)),
                     None if s.ppp.encryptor is None else
                     (s.ppp.encryptor.count, s.ppp.encryptor.keys.flush_next))
                    for s in stack.sessions.values()]
        return (stack.status(), dict(stack.counters), sessions,
                dict(stack._deadlines._deadline), stack.get_timer())
    server, client = net.server, net.clients[0]
    return {"wire": list(net.wire), "server": stack_state(server),
            "client": stack_state(client),
            "tun": (server.datagrams_to_tun(), client.datagrams_to_tun())}


def gre_to_server(net, packet, src=CLIENT):
    net.wire.append(("gre", "inject", packet))
    net.server.receive_gre(src, packet, net.now)
    net.run(net.now + 0.05)


def client_frame(net, frame):
    """A PPP frame the client's GRE session sends with its next sequence number."""
    s = net.clients[0].sessions[net.clients[0].call_id]
    return s.gre.encapsulate(frame)


def traffic(net):
    client, server = net.clients[0], net.server
    cs = client.sessions[client.call_id]
    for size in (0, 1, 100, 1372, 1400):
        body = (bytes(range(256)) * 6)[:size]
        client.send_datagram(ip("10.10.100.2", "10.10.0.20", body), net.now)
        net.run(net.now + 0.01)
        server.send_datagram(ip("10.10.0.20", "10.10.100.2", body), net.now)
        net.run(net.now + 0.2)
    client.send_datagram(b"\x60" + bytes(59), net.now)  # IPv6: PPP drops and counts it
    client.send_datagram(b"\x45" * 10, net.now)  # a runt
    server.send_datagram(ip("10.10.0.20", "10.99.0.9", b"x"), net.now)  # no such session
    net.run(net.now + 0.2)
    # a one-way burst: more than the peer's window unacknowledged, acks delayed
    for i in range(80):
        client.send_datagram(ip("10.10.100.2", "10.10.0.20", bytes([i]) * 50), net.now)
    net.run(net.now + 0.5)

    # crafted packets, each through the server's receive_gre
    net.drop_gre = True  # the next client packet is held back: a gap, then a late one
    client.send_datagram(ip("10.10.100.2", "10.10.0.20", b"held"), net.now)
    net.run(net.now + 0.01)
    held = net.wire[-1][2]
    net.drop_gre = False
    client.send_datagram(ip("10.10.100.2", "10.10.0.20", b"after"), net.now)
    net.run(net.now + 0.01)
    after = net.wire[-1][2]
    gre_to_server(net, held)  # GRE out of order
    gre_to_server(net, after)  # duplicate
    gre_to_server(net, after, src="198.51.100.77")  # wrong source
    call_id = GREPacket.decode(after).call_id
    gre_to_server(net, GREPacket(call_id ^ 0x5A5A, b"\xff\x03\x00\x21x", 1000, None).encode())
    gre_to_server(net, GREPacket(call_id, b"", None, cs.gre.next_seq - 1).encode())  # ack only
    gre_to_server(net, GREPacket(call_id, b"", None, None).encode())  # neither
    gre_to_server(net, b"\x30\x01\x88")  # truncated
    # in order, but with trailing octets after the payload (link-layer padding)
    client.send_datagram(ip("10.10.100.2", "10.10.0.20", b"padded"), net.now)
    net.drop_gre = True
    net.run(net.now + 0.01)
    net.drop_gre = False
    gre_to_server(net, net.wire[-1][2] + b"\x00" * 6)
    # an LCP Echo-Request in order (a control frame on the data channel)
    gre_to_server(net, client_frame(net, b"\xff\x03\xc0\x21\x09\x07\x00\x08" + bytes(4)))
    # an unencrypted IP frame, and a frame of an unknown protocol, in order
    gre_to_server(net, client_frame(net, b"\xff\x03\x00\x21" + ip("10.10.100.2", "10.1.1.1",
                                                                  b"clear")))
    gre_to_server(net, client_frame(net, b"\xff\x03\x80\x57" + bytes(8)))
    if cs.ppp.encryptor is not None:
        # MPPE without the D bit / with a count far ahead (a gap) / compressed flag
        count = (cs.ppp.encryptor.count + 1) & 0xFFF
        gre_to_server(net, client_frame(net, b"\xff\x03\x00\xfd"
                                        + (0x8000 | count).to_bytes(2, "big") + bytes(20)))
        gre_to_server(net, client_frame(net, b"\xff\x03\x00\xfd"
                                        + (0x3000 | count).to_bytes(2, "big") + bytes(20)))
        skip = net.clients[0].sessions[net.clients[0].call_id].ppp.encryptor
        for _ in range(3):  # the client moves on three counts the server never sees
            skip.encrypt(b"\x45" + bytes(40), b"\x00\x21")
        for i in range(3):
            client.send_datagram(ip("10.10.100.2", "10.10.0.20", bytes([i]) * 30), net.now)
            net.run(net.now + 0.3)
        # a CCP Reset-Request from the client: the server's next packet is flushed
        cs.ppp.ccp.send_code(14)  # RFC 1962 §2.1 Reset-Request
        client._pump(cs, net.now)
        net.run(net.now + 0.1)
    for i in range(5):
        server.send_datagram(ip("10.10.0.20", "10.10.100.2", bytes([i]) * 60), net.now)
        client.send_datagram(ip("10.10.100.2", "10.10.0.20", bytes([i]) * 60), net.now)
        net.run(net.now + 0.3)
    net.run(net.now + 2.0)


CASES = [(NONE, True), (MPPE, True), (MPPE, False)]


@pytest.mark.parametrize(("encryption", "stateless"), CASES,
                         ids=["none", "mppe-stateless", "mppe-stateful"])
def test_fast_path_matches_general_path(encryption, stateless):
    fast, general = world(False, encryption, stateless), world(True, encryption, stateless)
    assert snapshot(fast) == snapshot(general)
    traffic(fast)
    traffic(general)
    a, b = snapshot(fast), snapshot(general)
    assert a["wire"] == b["wire"]
    assert a["tun"] == b["tun"]
    assert a["server"] == b["server"]
    assert a["client"] == b["client"]
    # the crafted packets did reach the counters they name
    counters = a["server"][1]
    gre = a["server"][2][0][3]["counters"]
    assert counters["gre_wrong_source"] == 1 and counters["gre_unknown_call"] == 1
    assert counters["gre_malformed"] >= 1
    assert gre["duplicates"] >= 1 and gre["out_of_order"] >= 1
    ppp = a["server"][2][0][4]
    assert ppp["ip_in"] > 80 and ppp["frames_in"] > ppp["ip_in"]
    if encryption is MPPE:
        assert ppp["mppe_errors"] >= 2 and ppp["unencrypted_dropped"] >= 1


@pytest.mark.parametrize(("encryption", "stateless"), CASES,
                         ids=["none", "mppe-stateless", "mppe-stateful"])
def test_common_case_takes_the_fast_path(encryption, stateless, monkeypatch):
    """In-order data both ways never reaches the general receive or send."""
    net = world(False, encryption, stateless)
    client, server = net.clients[0], net.server
    calls = []
    for stack in (client, server):
        general_rx, general_tx = stack._receive_gre, stack._send_on
        monkeypatch.setattr(stack, "_receive_gre",
                            lambda *a, f=general_rx: (calls.append("rx"), f(*a)))
        monkeypatch.setattr(stack, "_send_on", lambda *a, f=general_tx: (calls.append("tx"),
                                                                          f(*a)))
    for i in range(20):
        client.send_datagram(ip("10.10.100.2", "10.10.0.20", bytes([i]) * 1400), net.now)
        server.send_datagram(ip("10.10.0.20", "10.10.100.2", bytes([i]) * 1400), net.now)
        net.run(net.now + 0.001)
    assert len(server.datagrams_to_tun()) == 20 and len(client.datagrams_to_tun()) == 20
    assert calls.count("tx") == 0
    assert calls.count("rx") <= 2  # ack-only packets (the GRE delayed ack) are not data
