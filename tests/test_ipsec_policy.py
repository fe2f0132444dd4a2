"""The L2TP/IPsec host policy: L2TP only inside SAs, cleartext UDP 1701 dropped and counted, two
clients behind one NAT (both from 500/4500) kept apart, UDP 4500 demultiplexing, selectors,
drops as named counters, and SA lifetimes through one timer."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP
from scapy.layers.ipsec import ESP
from scapy.layers.ipsec import SecurityAssociation as ScapySA

from tunnels.errors import LocalProtocolError
from tunnels.ipsec.esp import encapsulate
from tunnels.ipsec.natt import ike_with_marker, keepalive
from tunnels.ipsec.policy import (Dropped, IkePacket, L2tpDatagram, NoSecurityAssociation,
                                  RekeyDue, SAEnded, Transmit, TransportPolicy)
from tunnels.ipsec.sa import SecurityAssociation

SERVER, NAT = "198.51.100.1", "203.0.113.9"
CLIENTS = {"a": ("10.0.0.5", 40001), "b": ("10.0.0.6", 40002)}  # private address, NAT port
_spis = itertools.count(0x1000)


def sa(src: str, dst: str, encap=None, **kw) -> SecurityAssociation:
    n = next(_spis)
    return SecurityAssociation.from_keys(n, "3des-cbc", bytes([n & 0xFF]) * 24, "hmac-sha1-96",
                                         bytes([n >> 8]) * 20, src, dst, encap=encap, **kw)


def fixed_iv(n: int) -> bytes:
    return bytes(n)


def twin(original: SecurityAssociation, src: str, dst: str, encap) -> SecurityAssociation:
    """The same SA as the other end sees it (keys and SPI equal, addresses after NAT)."""
    return SecurityAssociation.from_keys(original.spi, original.cipher, original.enc_key,
                                         original.integrity, original.auth_key, src, dst,
                                         encap=encap)


@pytest.fixture
def nat_lab():
    """A server and two clients behind one NAT; the NAT maps each client's 4500 to a port."""
    server = TransportPolicy(iv_source=fixed_iv)
    clients = {}
    for name, (private, port) in CLIENTS.items():
        client = TransportPolicy(iv_source=fixed_iv)
        up = sa(private, SERVER, (4500, 4500))  # client -> server, as the client keys it
        down = sa(SERVER, NAT, (4500, port))  # server -> client, as the server keys it
        client.add_pair(twin(down, SERVER, private, (4500, 4500)), up)
        server.add_pair(twin(up, NAT, SERVER, (port, 4500)), down)
        clients[name] = client
    return server, clients


def via_nat(name: str, tx: Transmit) -> tuple[tuple[str, int], str, bytes]:
    assert tx.kind == "udp4500" and tx.dst == SERVER and (tx.src_port, tx.dst_port) == (4500,
                                                                                       4500)
    return (NAT, CLIENTS[name][1]), "udp4500", tx.payload


def test_two_clients_behind_one_nat_stay_apart(nat_lab):
    server, clients = nat_lab
    peers = {}
    for name, client in clients.items():
        tx = client.outbound((SERVER, 4500), 1701, 1701, f"SCCRQ from {name}".encode(), 0.0)
        event = server.inbound(*via_nat(name, tx), 0.0)
        assert isinstance(event, L2tpDatagram) and event.payload == f"SCCRQ from {name}".encode()
        assert (event.src_port, event.dst_port) == (1701, 1701)
        peers[name] = event.peer
    assert peers == {"a": (NAT, 40001), "b": (NAT, 40002)}
    for name, client in clients.items():
        tx = server.outbound(peers[name], 1701, 1701, f"SCCRP to {name}".encode(), 0.0)
        assert (tx.kind, tx.dst, tx.src_port, tx.dst_port) == ("udp4500", NAT, 4500,
                                                              CLIENTS[name][1])
        event = client.inbound((SERVER, 4500), "udp4500", tx.payload, 0.0)
        assert event.payload == f"SCCRP to {name}".encode()
        other = clients["b" if name == "a" else "a"]
        assert other.inbound((SERVER, 4500), "udp4500", tx.payload, 0.0).reason == "unknown_spi"
    assert server.counters["l2tp_in"] == 2


def test_one_clients_esp_from_the_other_clients_mapping_is_dropped(nat_lab):
    server, clients = nat_lab
    tx = clients["a"].outbound((SERVER, 4500), 1701, 1701, b"x", 0.0)
    event = server.inbound((NAT, 40002), "udp4500", tx.payload, 0.0)
    assert event == Dropped("peer_mismatch", event.detail)
    assert server.counters["peer_mismatch"] == 1


def test_cleartext_l2tp_is_dropped_and_counted_when_protection_is_required():
    server = TransportPolicy()
    assert server.inbound(("192.0.2.50", 1701), "udp1701", b"\xc8\x02", 0.0).reason == \
        "cleartext_l2tp_dropped"
    assert server.counters["cleartext_l2tp_dropped"] == 1
    with pytest.raises(NoSecurityAssociation):
        server.outbound(("192.0.2.50", None), 1701, 1701, b"\xc8\x02", 0.0)
    assert server.counters["no_outbound_sa"] == 1
    open_policy = TransportPolicy(require_protection=False)
    event = open_policy.inbound(("192.0.2.50", 1701), "udp1701", b"\xc8\x02", 0.0)
    assert event == L2tpDatagram(("192.0.2.50", 1701), 1701, 1701, b"\xc8\x02", None)
    tx = open_policy.outbound(("192.0.2.50", None), 1701, 1701, b"\xc8\x02", 0.0)
    assert tx == Transmit("udp1701", "192.0.2.50", 1701, 1701, b"\xc8\x02")


def test_plain_esp_without_nat_and_the_oracle_checks_the_inner_udp():
    client, server = TransportPolicy(), TransportPolicy()
    up, down = sa("192.0.2.10", SERVER), sa(SERVER, "192.0.2.10")
    client.add_pair(down, up)
    server.add_pair(twin(up, "192.0.2.10", SERVER, None), twin(down, SERVER, "192.0.2.10", None))
    tx = client.outbound((SERVER, None), 1701, 1701, b"hello", 0.0)
    assert (tx.kind, tx.dst, tx.src_port, tx.dst_port) == ("esp", SERVER, None, None)
    event = server.inbound(("192.0.2.10", 1701), "esp", tx.payload, 0.0)  # port ignored
    assert event.peer == ("192.0.2.10", None) and event.payload == b"hello"
    keys = up.keys_for_export()
    wire = IP(src="192.0.2.10", dst=SERVER, proto=50) / ESP(bytes(tx.payload))
    inner = ScapySA(ESP, **keys.scapy_kwargs()).decrypt(IP(bytes(wire)))
    checksum = inner[UDP].chksum
    del inner[UDP].chksum
    assert IP(bytes(inner))[UDP].chksum == checksum and bytes(inner[UDP].payload) == b"hello"


def test_udp_4500_demultiplexing_and_named_drops(nat_lab):
    server, clients = nat_lab
    a = (NAT, 40001)
    assert server.inbound(a, "udp4500", keepalive(), 0.0) == Dropped("nat_keepalive")
    assert server.inbound(a, "udp4500", ike_with_marker(b"I" * 28), 0.0) == IkePacket(a,
                                                                                       b"I" * 28)
    assert server.inbound(a, "udp4500", b"\x01\x02", 0.0).reason == "malformed"
    assert server.inbound(a, "udp4500", b"\x00\x00\x99\x99" + bytes(60), 0.0).reason == \
        "unknown_spi"
    assert server.inbound((NAT, None), "esp", b"\x00\x01", 0.0).reason == "malformed"
    tx = clients["a"].outbound((SERVER, 4500), 1701, 1701, b"once", 0.0)
    assert isinstance(server.inbound(a, "udp4500", tx.payload, 0.0), L2tpDatagram)
    assert server.inbound(a, "udp4500", tx.payload, 0.0).reason == "replayed"
    tx = clients["a"].outbound((SERVER, 4500), 1701, 1701, b"tampered", 0.0)
    forged = tx.payload[:-1] + bytes([tx.payload[-1] ^ 0x40])
    assert server.inbound(a, "udp4500", forged, 0.0).reason == "auth_failures"
    assert {k: server.counters[k] for k in ("nat_keepalive", "malformed", "unknown_spi",
                                            "replayed", "auth_failures")} == {
        "nat_keepalive": 1, "malformed": 2, "unknown_spi": 1, "replayed": 1, "auth_failures": 1}
    with pytest.raises(LocalProtocolError):
        server.inbound(a, "gre", b"", 0.0)


def test_traffic_selector_is_udp_1701_only():
    server = TransportPolicy()
    up = sa("192.0.2.10", SERVER)
    server.add_inbound(twin(up, "192.0.2.10", SERVER, None))
    peer = ("192.0.2.10", None)
    tcp = encapsulate(up, 6, bytes(20), bytes(8))
    assert server.inbound(peer, "esp", tcp, 0.0).reason == "selector_mismatch"
    dns = encapsulate(up, 17, b"\x04\x00\x00\x35\x00\x0c\x00\x00abcd", bytes(8))
    assert server.inbound(peer, "esp", dns, 0.0).reason == "selector_mismatch"
    short = encapsulate(up, 17, b"\x06\xa5\x06\xa5\x00\x40\x00\x00", bytes(8))
    assert server.inbound(peer, "esp", short, 0.0).reason == "malformed"  # UDP length 64 > 8


def test_lifetimes_soft_once_then_hard_removes_and_rekey_replaces():
    policy = TransportPolicy(iv_source=fixed_iv)
    old_in = sa("192.0.2.10", SERVER, lifetime_seconds=100, created=0.0)
    old_out = sa(SERVER, "192.0.2.10", lifetime_seconds=100, created=0.0)
    policy.add_pair(old_in, old_out)
    assert policy.get_timer(0.0) == 90.0 and policy.handle_timer(50.0) == []
    events = policy.handle_timer(90.0)
    assert set(events) == {RekeyDue("in", old_in.spi, ("192.0.2.10", None)),
                           RekeyDue("out", old_out.spi, ("192.0.2.10", None))}
    assert policy.handle_timer(95.0) == [] and policy.get_timer(95.0) == 100.0
    new_in = sa("192.0.2.10", SERVER, created=95.0)
    new_out = sa(SERVER, "192.0.2.10", created=95.0)
    policy.add_pair(new_in, new_out)  # the outbound SA is replaced, the old inbound one stays
    assert policy.outbound(("192.0.2.10", None), 1701, 1701, b"x", 96.0).payload[:4] == \
        new_out.spi.to_bytes(4, "big")
    late = encapsulate(twin(old_in, "192.0.2.10", SERVER, None), 17,
                       b"\x06\xa5\x06\xa5\x00\x09\x00\x00z", bytes(8))
    assert policy.inbound(("192.0.2.10", None), "esp", late, 97.0).payload == b"z"
    assert policy.handle_timer(100.0) == [SAEnded("in", old_in.spi, ("192.0.2.10", None))]
    assert set(policy.inbound_sas) == {new_in.spi}
    with pytest.raises(LocalProtocolError):
        policy.add_inbound(new_in)
    new_out.seq = 0xFFFFFFFF  # IKE did not rekey in time: the caller hears it, it is counted
    with pytest.raises(LocalProtocolError):
        policy.outbound(("192.0.2.10", None), 1701, 1701, b"x", 98.0)
    assert policy.counters["outbound_sa_expired"] == 1
    assert set(policy.handle_timer(95.0 + 3240)) == {  # the successor's own soft lifetime
        RekeyDue("in", new_in.spi, ("192.0.2.10", None)),
        SAEnded("out", new_out.spi, ("192.0.2.10", None))}  # its sequence space is used up


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["esp", "udp4500", "udp1701"]), st.binary(max_size=120),
       st.sampled_from([(NAT, 40001), (NAT, 40002), (NAT, None), ("192.0.2.99", 4500)]))
def test_any_bytes_inbound_give_an_event_never_an_exception(kind, data, src):
    server = TransportPolicy()
    for _, port in CLIENTS.values():
        server.add_inbound(sa(NAT, SERVER, (port, 4500)))
    spi = next(iter(server.inbound_sas)).to_bytes(4, "big")
    for payload in (data, spi + data):
        assert isinstance(server.inbound(src, kind, payload, 0.0),
                          L2tpDatagram | IkePacket | Dropped)
