"""The L2TP/IPsec data path's common case (tunnels/stacks/l2tp_ipsec_data.py) against the
general path it shortcuts: two identical worlds (same seeds, so the same keys and IVs), one
with the data path, one forced through the layers, fed the same datagrams, give the same
bytes on the wire and to the TUN device, the same status (every counter: stack, L2TP, PPP,
policy, SA) and the same replay windows and sequence numbers; the packets the general path
drops (replayed, forged, dummy, another protocol, a bad UDP or L2TP header, another peer,
sequenced L2TP) are dropped and counted alike."""

from __future__ import annotations

import pytest

from test_stack_l2tp_ipsec import (CLIENT_PUBLIC, Net, connect, icmp_echo, make_client,
                                   make_server)
from tests.accel import require_compiled
from tunnels.ipsec import crypto
from tunnels.ipsec.esp import encapsulate, encapsulate_udp
from tunnels.ipsec.ipv4 import address_sum
from tunnels.ppp.config import EncryptionLevel

NONE = EncryptionLevel.NONE


def force_general(stack):
    """The stack's data path with the common case switched off (what it was before)."""
    def send(ip_packet, now):
        stack._now = max(stack._now, now)
        stack._send_general(ip_packet, now)

    def receive(src, data, now):
        stack._now = max(stack._now, now)
        stack.counters["received"] += 1
        stack._receive_general(src, data, now)

    stack.send_datagram = send
    stack.receive_datagram = stack.receive_gre = receive


def world(general, nat=False, encryption=NONE):
    client_address = "10.0.0.2" if nat else CLIENT_PUBLIC
    net = Net(make_server(encryption=encryption),
              [make_client(client_address, encryption=encryption)], nat=nat)
    if general:
        force_general(net.server)
        force_general(net.clients[0])
    return connect(net)


def snapshot(net):
    """Everything the two paths must agree on."""
    def sas(stack):
        return [(sa.spi, sa.seq, sa.window.highest, sa.window._bits, sa.counters.as_dict())
                for c in stack.children.values() for sa in (c.inbound, c.outbound)]
    return {"wire": list(net.wire), "server": net.server.status(),
            "client": net.clients[0].status(), "sas": (sas(net.server), sas(net.clients[0])),
            "tun": (net.server.datagrams_to_tun(), net.clients[0].datagrams_to_tun()),
            "routes": (dict(net.server._routes), dict(net.clients[0]._routes))}


def traffic(net):
    """Datagrams both ways: sizes from 20 octets to a full 1400, IPv6 and runts (dropped by
    PPP or the session table), each hop run to quiet."""
    up = net.up(0)[0]
    client, server = net.clients[0], net.server
    for size in (0, 1, 7, 100, 1372, 1400):
        payload = bytes(range(256)) * 6
        client.send_datagram(icmp_echo(up.local_address, up.peer_address, payload[:size]),
                             net.now)
        net.step()
        server.send_datagram(icmp_echo(up.peer_address, up.local_address, payload[:size]),
                             net.now)
        net.run(0.1)
    client.send_datagram(b"\x60" + bytes(59), net.now)  # IPv6: not for PPP's IPCP
    client.send_datagram(b"\x45" * 10, net.now)  # a runt: no session
    server.send_datagram(icmp_echo(up.peer_address, "10.99.0.9"), net.now)  # no such client
    net.run(0.5)


@pytest.mark.parametrize("nat", [False, True])
@pytest.mark.parametrize("encryption", [NONE, EncryptionLevel.STRONGEST])
def test_same_bytes_and_counters_as_the_general_path(nat, encryption):
    fast, general = world(False, nat, encryption), world(True, nat, encryption)
    assert snapshot(fast) == snapshot(general)
    traffic(fast)
    traffic(general)
    a, b = snapshot(fast), snapshot(general)
    assert a == b
    assert a["server"]["ipsec"]["counters"]["esp_out"] >= 6  # data did flow


def test_data_takes_the_common_case_and_ike_still_works_beside_it():
    # the common case needs the compiled ESP context (without it, every packet takes the
    # general path, which the pairs above then compare with itself)
    require_compiled(crypto.ACCEL, "tunnels/ipsec/_fastesp.c", "tunnels.ipsec._fastesp")
    net = world(False)
    calls = []
    for stack in (net.server, net.clients[0]):
        for name in ("_send_general", "_receive_general"):
            real = getattr(stack, name)
            setattr(stack, name, lambda *a, _real=real, _n=name: (calls.append(_n),
                                                                  _real(*a))[1])
    up = net.up(0)[0]
    for _ in range(5):
        net.clients[0].send_datagram(icmp_echo(up.local_address, up.peer_address), net.now)
        net.server.send_datagram(icmp_echo(up.peer_address, up.local_address), net.now)
        net.run(0.1)
    assert calls == []
    assert len(net.server.datagrams_to_tun()) == len(net.clients[0].datagrams_to_tun()) == 5


def _client_sa(net):
    (child,) = net.clients[0].children.values()
    return child.outbound


def crafted(net):
    """ESP the client's outbound SA seals by hand (the same IVs in both worlds), each a case
    the general path drops or hands on differently; the sequence numbers they take."""
    up = net.up(0)[0]
    sa = _client_sa(net)
    sums = address_sum(sa.src_packed, sa.dst_packed)
    iv = bytes(range(16))[: sa.enc.block_size]
    ip = icmp_echo(up.local_address, up.peer_address, b"crafted")
    frame = b"\xff\x03\x00\x21" + ip
    (session,) = net.clients[0].sessions.values()
    tid, sid = session.tunnel.peer_tunnel_id, session.control.peer_session_id
    ids = tid.to_bytes(2, "big") + sid.to_bytes(2, "big")
    seal = lambda payload, sport=1701, dport=1701: encapsulate_udp(  # noqa: E731
        sa, sport, dport, payload, sums, iv)
    cases = {
        "ok": seal(b"\x00\x02" + ids + frame),
        "ns": seal(b"\x08\x02" + ids + b"\x00\x05\x00\x00" + frame),  # sequenced data
        "length": seal(b"\x40\x02" + (6 + 2 + len(frame)).to_bytes(2, "big") + ids + frame),
        "unknown_session": seal(b"\x00\x02" + tid.to_bytes(2, "big") + b"\x12\x34" + frame),
        "unknown_tunnel": seal(b"\x00\x02\x43\x21" + sid.to_bytes(2, "big") + frame),
        "short_l2tp": seal(b"\x00\x02\x00"),
        "empty_udp": seal(b""),
        "wrong_port": seal(b"\x00\x02" + ids + frame, dport=1702),
        "lcp": seal(b"\x00\x02" + ids + b"\xff\x03\xc0\x21\x09\x07\x00\x08\x00\x00\x00\x00"),
        "dummy": encapsulate(sa, 59, b"filler", iv),
        "tcp": encapsulate(sa, 6, bytes(20), iv),
        "later": seal(b"\x00\x02" + ids + frame),
        "earlier": seal(b"\x00\x02" + ids + frame),
        "forged_first": seal(b"\x00\x02" + ids + frame),
    }
    return cases


def deliver(net, cases):
    kind, port, local = ("udp", 40001, 4500) if net.nat else ("esp", 0, 0)
    src_address = "198.51.100.1" if net.nat else CLIENT_PUBLIC
    if net.nat:  # the NAT's mapping of the client's 4500
        port = next(pub for (_priv, pport), pub in net.nat_map.items() if pport == 4500)
    src = (kind, src_address, port, local)
    server = net.server
    order = ["ok", "ok", "ns", "length", "unknown_session", "unknown_tunnel", "short_l2tp",
             "empty_udp", "wrong_port", "lcp", "dummy", "tcp", "earlier", "later", "earlier"]
    for name in order[:-3]:
        server.receive_datagram(src, cases[name], net.now)
    server.receive_datagram(src, cases["later"], net.now)  # out of order inside the window
    server.receive_datagram(src, cases["earlier"], net.now)
    server.receive_datagram(src, cases["earlier"], net.now)  # now a replay
    forged = bytearray(cases["forged_first"])
    forged[-1] ^= 1
    server.receive_datagram(src, bytes(forged), net.now)  # the window does not move...
    server.receive_datagram(src, cases["forged_first"], net.now)  # ...so this one passes
    server.receive_datagram(src, cases["ok"][:-5], net.now)  # not whole blocks
    server.receive_datagram(src, cases["ok"][:7], net.now)
    other = (kind, "192.0.2.77", port, local)  # the SPI from another peer
    server.receive_datagram(other, cases["ok"], net.now)
    server.receive_datagram(src, b"\x00\x00\x12\x34" + cases["ok"][4:], net.now)  # no SPI
    net.run(1)


@pytest.mark.parametrize("nat", [False, True])
def test_what_the_general_path_drops_is_dropped_and_counted_alike(nat):
    fast, general = world(False, nat), world(True, nat)
    deliver(fast, crafted(fast))
    deliver(general, crafted(general))
    a, b = snapshot(fast), snapshot(general)
    assert a == b
    counters = a["server"]["ipsec"]
    sa_in = counters["sas"][0]["in"]
    assert sa_in["replayed"] >= 2 and sa_in["auth_failures"] == 1 and sa_in["dummy"] == 1
    assert sa_in["malformed"] == 1
    assert counters["policy"]["selector_mismatch"] == 2
    assert counters["policy"]["peer_mismatch"] == 1
    assert a["server"]["counters"]["unknown_session"] >= 1
    # the peer sent Ns: the server sequences its data from now on, the same both ways
    traffic(fast)
    traffic(general)
    assert snapshot(fast) == snapshot(general)


def test_a_rekey_moves_the_data_path_to_the_new_sa():
    fast, general = world(False), world(True)
    for net in (fast, general):
        traffic(net)
        spi_in = next(iter(net.clients[0].children))
        net.clients[0].ike.rekey_child(spi_in, net.now)
        net.clients[0]._ike_dirty = True
        net.clients[0]._drain(net.now)
        net.run(5)
        traffic(net)
    a, b = snapshot(fast), snapshot(general)
    assert a == b
    assert len({sa[0] for sa in a["sas"][0]}) >= 2


@pytest.mark.parametrize("cipher", ["aes-cbc-128", "3des-cbc"])
def test_seal_udp_with_a_prefix_is_sealing_the_concatenation(cipher):
    """_fastesp's seal_udp(..., payload, prefix), the data path's L2TP header in front of
    its PPP frame: the same packet as the concatenation, whatever the lengths (odd ones
    too: the UDP checksum is summed over the plaintext as laid out)."""
    require_compiled(crypto.ACCEL, "tunnels/ipsec/_fastesp.c", "tunnels.ipsec._fastesp")
    key = bytes(range(32))[: {"aes-cbc-128": 16, "3des-cbc": 24}[cipher]]
    ctx = crypto.ACCEL.Context(cipher, key, "hmac-sha1-96", bytes(20))
    iv = bytes(16)[: 16 if cipher.startswith("aes") else 8]
    data = bytes(range(256)) * 8
    for prefix_len in (0, 1, 6, 7):
        for size in (0, 1, 2, 15, 1400, 2000):
            prefix, payload = data[100 : 100 + prefix_len], data[:size]
            whole = ctx.seal_udp(0x1234, 7, iv, 1701, 1701, 0xBEEF, prefix + payload)
            assert ctx.seal_udp(0x1234, 7, iv, 1701, 1701, 0xBEEF, payload, prefix) == whole
            assert ctx.seal_udp(0x1234, 7, iv, 1701, 1701, 0xBEEF, prefix + payload,
                                None) == whole
    with pytest.raises(OverflowError):
        ctx.seal_udp(1, 1, iv, 1, 1, 0, bytes(0xFFF0), bytes(16))
    with pytest.raises(TypeError):
        ctx.seal_udp(1, 1, iv, 1, 1, 0, b"", b"", b"")
    with pytest.raises(TypeError):
        ctx.seal_udp(1, 1, iv, 1, 1, 0, b"", 5)
