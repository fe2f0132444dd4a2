"""L2TP/IPsec client and server stacks paired in memory, with a virtual clock and an optional
NAPT between them: IKE, then L2TP inside ESP (or ESP-in-UDP with NAT-T), PPP with MS-CHAP v2
and MPPE, data both ways. Every datagram on the public side of the wire is recorded; scapy
(an oracle here only) decrypts the ESP with the exported keys to the UDP 1701 L2TP inside.
"""

from __future__ import annotations

import ast
import random as _random
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP
from scapy.layers.ipsec import ESP
from scapy.layers.ipsec import SecurityAssociation as ScapySA
from scapy.layers.l2tp import L2TP
from scapy.packet import Raw

from tests.test_ike_certs import pki  # noqa: F401 - the fixture
from tests.virtual_clock import VirtualClockNet
from tunnels.ipsec.ike import IKEConfig
from tunnels.l2tp.control import TunnelConfig
from tunnels.ppp.auth.base import Account, AuthMethod, LocalAccounts
from tunnels.ppp.config import EncryptionLevel, PPPConfig
from tunnels.stacks.l2tp_ipsec import (
    NAT_WITHOUT_NAT_T,
    IKEEstablished,
    IPsecDown,
    IPsecFailed,
    IPsecUp,
    L2TPIPsecClient,
    L2TPIPsecServer,
    esp_ciphers_for,
    ike_config_for,
)
from tunnels.stacks.pptp import ControlClosed, SessionDown, SessionUp

USERS = LocalAccounts({"alice": Account("s3cret"), "bob": Account("hunter2")})
SERVER = "203.0.113.2"
NAT_PUBLIC = "198.51.100.1"
CLIENT_PUBLIC = "198.51.100.7"  # a client with its own public address (no NAT)


def rng(seed):
    return _random.Random(seed).randbytes


def ike(level="strongest", **kw):
    kw.setdefault("dh_groups", (2,))  # group 14 costs CPU; IKE's own tests cover it
    kw.setdefault("dpd_interval", 0)
    return ike_config_for(level, b"shared secret", **kw)


def make_server(ike_config=None, encryption=EncryptionLevel.STRONGEST):
    pool = iter(range(2, 250))

    def config(session_id, peer):
        return PPPConfig(True, (AuthMethod.MSCHAPV2,), verifier=USERS,
                         local_address="10.10.100.1", peer_address=f"10.10.100.{next(pool)}",
                         encryption=encryption)
    return L2TPIPsecServer(config, TunnelConfig(host_name="lns"), ike_config or ike(),
                           SERVER, random=rng(1))


def make_client(local, ike_config=None, user="alice", password="s3cret", seed=2,
                encryption=EncryptionLevel.STRONGEST):
    cfg = PPPConfig(False, (AuthMethod.MSCHAPV2,), username=user, password=password,
                    encryption=encryption)
    return L2TPIPsecClient(cfg, SERVER, TunnelConfig(host_name="lac"), ike_config or ike(),
                           local, random=rng(seed))


class Net(VirtualClockNet):
    """Clients and one server. With `nat=True` the clients sit at 10.0.0.(2+i) behind a NAPT
    with the public address NAT_PUBLIC that maps each private (address, UDP port) to a port
    of its own and drops ESP (IP protocol 50 has no port to map); otherwise client i is at
    198.51.100.(7+i). `wire` keeps what crossed the public side: (direction, kind, src,
    sport, dst, dport, bytes)."""

    def __init__(self, server, clients, nat=False, loss=0.0, seed=5):
        self.server, self.clients, self.nat = server, clients, nat
        self.loss, self.r, self.lost = loss, _random.Random(seed), 0
        self.now = 0.0
        self.wire: list[tuple] = []
        self.nat_map: dict[tuple[str, int], int] = {}
        self.nat_dropped_esp = 0
        self.events = {i: [] for i in range(len(clients))}
        self.server_events: list = []
        self.tamper = None  # fn(direction, kind, data) -> data

    def public(self, private, port):
        if not self.nat:
            return private, port
        if (private, port) not in self.nat_map:
            self.nat_map[(private, port)] = 40000 + len(self.nat_map)
        return NAT_PUBLIC, self.nat_map[(private, port)]

    def private(self, address, port):
        if not self.nat:
            return next((i for i, c in enumerate(self.clients) if c.local_address == address),
                        None), port
        for (priv, pport), pub in self.nat_map.items():
            if pub == port:
                return next(i for i, c in enumerate(self.clients) if c.local_address == priv), \
                    pport
        return None, None

    def step(self):
        batch = []
        for i, c in enumerate(self.clients):
            for (kind, dst, dport, sport), data in c.datagrams_to_send():
                assert dst == SERVER
                if kind == "esp" and self.nat:
                    self.nat_dropped_esp += 1
                    continue
                src, psport = self.public(c.local_address, sport)
                if self.tamper:
                    data = self.tamper("c2s", kind, data)
                self.wire.append(("c2s", kind, src, psport, dst, dport, data))
                batch.append((self.server, (kind, src, psport, dport), data))
            while (e := c.next_event()) is not None:
                self.events[i].append(e)
        for (kind, dst, dport, sport), data in self.server.datagrams_to_send():
            if kind == "esp" and self.nat and dst == NAT_PUBLIC:
                self.nat_dropped_esp += 1
                continue
            if self.tamper:
                data = self.tamper("s2c", kind, data)
            self.wire.append(("s2c", kind, SERVER, sport, dst, dport, data))
            i, pport = self.private(dst, dport)
            if i is not None:
                batch.append((self.clients[i], (kind, SERVER, sport, pport), data))
        while (e := self.server.next_event()) is not None:
            self.server_events.append(e)
        for stack, src, data in batch:
            if self.loss and self.r.random() < self.loss:
                self.lost += 1
                continue
            stack.receive_datagram(src, data, self.now)
        return bool(batch)


    def of(self, i, cls):
        for k, c in enumerate(self.clients):
            while (e := c.next_event()) is not None:
                self.events[k].append(e)
        while (e := self.server.next_event()) is not None:
            self.server_events.append(e)
        events = self.server_events if i is None else self.events[i]
        return [e for e in events if isinstance(e, cls)]

    def up(self, i=0):
        return self.of(i, SessionUp)


def connect(net, until=30):
    for c in net.clients:
        c.start(net.now)
    net.run(until, stop=lambda: all(net.up(i) for i in range(len(net.clients))))
    return net


def icmp_echo(src, dst, payload=b"ping"):
    body = b"\x08\x00\x00\x00\x00\x01\x00\x01" + payload
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), 1, 0, 64, 1, 0,
                         bytes(map(int, src.split("."))), bytes(map(int, dst.split("."))))
    return header + body


def ping_both_ways(net, i=0):
    client = net.clients[i]
    up = net.up(i)[0]
    out = icmp_echo(up.local_address, up.peer_address)
    client.send_datagram(out, net.now)
    net.run(1)
    assert out in net.server.datagrams_to_tun()
    back = icmp_echo(up.peer_address, up.local_address, b"pong")
    net.server.send_datagram(back, net.now)
    net.run(1)
    assert client.datagrams_to_tun() == [back]


def assert_nothing_in_clear(net):
    """Only ESP, IKE (500) and ESP-in-UDP/IKE (4500) on the wire: no UDP 1701 in clear."""
    for direction, kind, _src, sport, _dst, dport, _data in net.wire:
        ours = dport if direction == "c2s" else sport  # the server's port
        assert kind == "esp" or (kind == "udp" and ours in (500, 4500)), (direction, kind)
        assert 1701 not in (sport, dport)


def scapy_sa(sa):
    return ScapySA(ESP, **sa.keys_for_export().scapy_kwargs())


def decrypt_client_esp(net, i=0):
    """Every client-to-server ESP packet decrypted by scapy with the client's exported
    outbound keys: the inner packets."""
    client = net.clients[i]
    oracles = {c.outbound.spi: (scapy_sa(c.outbound), c.outbound) for c in
               client.children.values()}
    inner = []
    for direction, kind, _src, _sport, _dst, dport, data in net.wire:
        if direction != "c2s" or (kind == "udp" and (data[:4] == b"\0\0\0\0" or
                                                      len(data) == 1)):
            continue
        if kind == "udp" and dport == 500:
            continue
        spi = int.from_bytes(data[:4], "big")
        if spi not in oracles:
            continue
        oracle, sa = oracles[spi]
        # ESP-in-UDP carries the same ESP bytes as IP protocol 50 (RFC 3948 §2.1)
        packet = IP(src=sa.src, dst=sa.dst, proto=50) / Raw(data)
        inner.append(oracle.decrypt(IP(bytes(packet))))
    return inner


# -- sessions --------------------------------------------------------------------------------
CIPHERS = [("strongest", "3des-cbc"), ("basic", "des-cbc"), ("strong", "des-cbc"),
           ("aes-128", "aes-cbc-128"), ("aes-256", "aes-cbc-256")]


@pytest.mark.parametrize("integrity", ["hmac-sha1-96", "hmac-md5-96"])
@pytest.mark.parametrize("level,cipher", CIPHERS)
def test_session_up_inside_esp_with_each_cipher(level, cipher, integrity):
    cfg = ike(level, esp_integrity=(integrity,))
    net = connect(Net(make_server(cfg), [make_client(CLIENT_PUBLIC, cfg)]))
    assert net.up(0), net.clients[0].reason
    (client_up,) = net.of(0, IPsecUp)
    (server_up,) = net.of(None, IPsecUp)
    assert (client_up.cipher, client_up.integrity, client_up.encapsulation) == \
        (cipher, integrity, "transport")
    assert client_up.spi_out == server_up.spi_in and client_up.spi_in == server_up.spi_out
    assert server_up.peer == f"{CLIENT_PUBLIC}:500"
    session = next(iter(net.clients[0].sessions.values()))
    assert session.ppp.status()["encryption"] == "mppe-128 stateless"
    assert session.ppp.username == "alice"
    ping_both_ways(net)
    assert_nothing_in_clear(net)
    assert {k for _, k, *_ in net.wire} == {"esp", "udp"}
    # IKE strictly before ESP: the L2TP client starts when the SA is installed
    first_esp = next(n for n, w in enumerate(net.wire) if w[1] == "esp")
    assert all(w[1] == "udp" for w in net.wire[:first_esp])
    status = net.server.status()
    assert status["ipsec"]["sas"][0]["cipher"] == cipher
    assert status["ipsec"]["cleartext_l2tp_dropped"] == 0


def test_scapy_decrypts_the_esp_to_udp_1701_l2tp():
    net = connect(Net(make_server(), [make_client(CLIENT_PUBLIC)]))
    inner = decrypt_client_esp(net)
    assert len(inner) >= 4
    for packet in inner:
        assert packet[UDP].sport == 1701 and packet[UDP].dport == 1701
        assert packet.haslayer(L2TP)
    raw = bytes(inner[0][UDP].payload)
    assert raw[0] & 0x80  # T bit: a control message
    # the SCCRQ: the Message Type AVP (M bit, length 8, attribute 0) with value 1
    assert raw[12:20] == b"\x80\x08\x00\x00\x00\x00\x00\x01"


def test_tshark_recognises_the_decrypted_l2tp(tmp_path):
    import shutil
    import subprocess

    from scapy.utils import wrpcap
    if shutil.which("tshark") is None:
        pytest.skip("tshark not installed")
    net = connect(Net(make_server(), [make_client(CLIENT_PUBLIC)]))
    inner = decrypt_client_esp(net)[:4]
    pcap = tmp_path / "inner.pcap"
    wrpcap(str(pcap), [IP(bytes(p)) for p in inner], linktype=228)  # LINKTYPE_IPV4
    out = subprocess.run(["tshark", "-r", str(pcap), "-T", "fields", "-e", "l2tp.avp.type",
                          "-e", "_ws.malformed", "-e", "_ws.expert"], capture_output=True,
                         text=True, timeout=60, check=True).stdout.splitlines()
    assert out and out[0].split("\t")[0].startswith("0")  # Message Type AVP first
    assert not any(line.split("\t")[1:] != ["", ""] for line in out if "\t" in line)


# -- policy: replay, tampering, clear L2TP -------------------------------------------------------
def test_replayed_esp_is_dropped_and_counted():
    net = connect(Net(make_server(), [make_client(CLIENT_PUBLIC)]))
    esp = [w for w in net.wire if w[0] == "c2s" and w[1] == "esp"]
    before = len(net.server.sessions), net.server.status()["ipsec"]["replayed"]
    for _, kind, src, sport, _dst, dport, data in esp[:3]:
        net.server.receive_datagram((kind, src, sport, dport), data, net.now)
    assert net.server.status()["ipsec"]["replayed"] == before[1] + 3
    assert len(net.server.sessions) == before[0]
    ping_both_ways(net)  # the session goes on


def test_tampered_esp_fails_authentication_and_is_dropped():
    net = connect(Net(make_server(), [make_client(CLIENT_PUBLIC)]))
    up = net.up(0)[0]
    net.tamper = lambda d, kind, data: (data[:20] + bytes([data[20] ^ 1]) + data[21:]
                                        if d == "c2s" and kind == "esp" else data)
    net.clients[0].send_datagram(icmp_echo(up.local_address, up.peer_address), net.now)
    net.run(0.5)
    net.tamper = None
    assert net.server.datagrams_to_tun() == []
    status = net.server.status()["ipsec"]
    assert status["auth_failures"] >= 1
    assert status["sas"][0]["in"]["auth_failures"] >= 1


def test_plain_l2tp_to_the_server_is_dropped_and_counted():
    server = make_server()
    sccrq = bytes.fromhex("c802001400000000000000008008000000000001")
    server.receive_datagram(("udp", CLIENT_PUBLIC, 1701, 1701), sccrq, 0.0)
    assert server.datagrams_to_send() == []
    assert server.status()["ipsec"]["cleartext_l2tp_dropped"] == 1
    assert not server.tunnels


def test_l2tp_without_an_sa_is_never_sent_in_clear():
    client = make_client(CLIENT_PUBLIC)
    client.start(0.0)
    (dst, data), = client.datagrams_to_send()
    assert dst == ("udp", SERVER, 500, 500) and data[:8] != b"\0" * 8  # MM1, nothing else
    assert not client.tunnels  # L2TP waits for the SA


# -- NAT ------------------------------------------------------------------------------------------
def test_through_nat_with_nat_t_floats_to_4500_and_encapsulates_esp():
    net = connect(Net(make_server(), [make_client("10.0.0.2")], nat=True))
    assert net.up(0), net.clients[0].reason
    (up,) = net.of(0, IPsecUp)
    assert up.encapsulation == "udp-transport"
    assert net.of(0, IKEEstablished)[0].nat
    kinds = {(w[1], w[5] if w[0] == "c2s" else w[3]) for w in net.wire}
    assert kinds == {("udp", 500), ("udp", 4500)}  # no raw ESP, no UDP 1701
    assert net.nat_dropped_esp == 0
    ping_both_ways(net)
    assert_nothing_in_clear(net)
    # the ESP inside UDP 4500 (no non-ESP marker) decrypts to UDP 1701 L2TP
    inner = decrypt_client_esp(net)
    assert inner and all(p[UDP].dport == 1701 and p.haslayer(L2TP) for p in inner)
    # IKE on 4500 carries the non-ESP marker
    ike_4500 = [w for w in net.wire if w[5] == 4500 and w[6][:4] == b"\0\0\0\0"]
    assert ike_4500


def test_two_clients_behind_one_nat_from_500_and_4500_stay_apart():
    clients = [make_client("10.0.0.2", seed=2),
               make_client("10.0.0.3", user="bob", password="hunter2", seed=3)]
    net = connect(Net(make_server(), clients, nat=True))
    assert net.up(0) and net.up(1), [c.reason for c in clients]
    # both used 500 and 4500 as their own ports: only the NAT's ports differ
    assert {port for (_, port) in net.nat_map} == {500, 4500}
    assert len(set(net.nat_map.values())) == 4
    server_ups = net.of(None, IPsecUp)
    assert len(server_ups) == 2 and len({u.peer for u in server_ups}) == 2
    assert len({u.spi_in for u in server_ups}) == 2
    assert len(net.server.tunnels) == 2 and len(net.server.sessions) == 2
    users = sorted(s.ppp.username for s in net.server.sessions.values())
    assert users == ["alice", "bob"]
    peers = {tuple(s.peer) for s in net.server.sessions.values()}
    assert len(peers) == 2 and {p[0] for p in peers} == {NAT_PUBLIC}
    for i in (0, 1):
        ping_both_ways(net, i)
    assert_nothing_in_clear(net)
    # each client hangs up; the other's session stays
    clients[0].hang_up(net.now)
    net.run(30, stop=lambda: clients[0].done)
    assert clients[0].done and len(net.server.sessions) == 1
    ping_both_ways(net, 1)


def test_nat_without_nat_t_fails_with_the_named_reason():
    cfg = ike(nat_t=False)
    net = Net(make_server(cfg), [make_client("10.0.0.2", cfg)], nat=True)
    net.clients[0].start(0.0)
    net.run(60, stop=lambda: net.clients[0].done)
    client = net.clients[0]
    assert client.done and not net.up(0)
    assert client.reason.startswith(NAT_WITHOUT_NAT_T)
    (failed,) = net.of(0, IPsecFailed)
    assert "NAT-T (RFC 3947)" in failed.reason
    assert net.of(None, IPsecFailed)[0].reason == NAT_WITHOUT_NAT_T
    assert net.server.status()["ipsec"]["counters"]["nat_without_nat_t_refused"] == 1
    assert not client.tunnels and not net.server.tunnels


def test_esp_filtered_gives_a_named_reason_from_no_answer():
    """A path that drops IP protocol 50 (no NAT): IKE works, L2TP's SCCRQ inside ESP gets
    no answer, and the reason says where to look."""
    net = Net(make_server(), [make_client(CLIENT_PUBLIC)])
    step = net.step

    def no_esp():
        for c in net.clients:
            c._out = [o for o in c._out if o[0][0] != "esp"]
        return step()
    net.step = no_esp
    net.clients[0].start(0.0)
    net.run(120, stop=lambda: net.clients[0].done)
    client = net.clients[0]
    assert client.done and "ESP (IP protocol 50)" in client.reason
    closed = net.of(0, ControlClosed)
    assert closed and "inside the IPsec SA" in closed[-1].reason


# -- teardown and failures ----------------------------------------------------------------------
def test_hang_up_tears_down_l2tp_then_deletes_the_sas():
    net = connect(Net(make_server(), [make_client(CLIENT_PUBLIC)]))
    client = net.clients[0]
    mark = len(net.wire)
    client.hang_up(net.now)
    net.run(30, stop=lambda: client.done)
    assert client.done and client.reason == "user hung up"
    after = net.wire[mark:]
    kinds = [w[1] for w in after if w[0] == "c2s"]
    # CDN and StopCCN inside ESP first, then the IKE Informational Deletes (UDP 500)
    assert "esp" in kinds and kinds[-1] == "udp"
    last_esp = max(n for n, w in enumerate(after) if w[0] == "c2s" and w[1] == "esp")
    deletes = [n for n, w in enumerate(after) if w[0] == "c2s" and w[1] == "udp"
               and w[6][18] == 5]  # exchange type 5: Informational
    assert len(deletes) == 2 and min(deletes) > last_esp
    assert net.of(0, IPsecDown) and net.of(None, IPsecDown)
    assert net.of(None, SessionDown)
    assert not client.children and not net.server.children
    assert not net.server.policy.inbound_sas and not net.server.policy.outbound_sas


def test_wrong_psk_is_a_named_failure_and_no_l2tp_at_all():
    server = make_server(ike_config_for("strongest", b"right", dh_groups=(2,)))
    client = make_client(CLIENT_PUBLIC, ike_config_for("strongest", b"wrong", dh_groups=(2,)))
    net = Net(server, [client])
    client.start(0.0)
    net.run(60, stop=lambda: client.done)
    assert client.done and not net.up(0)
    assert "pre-shared key" in client.reason
    assert net.of(0, IPsecFailed)
    assert all(w[1] == "udp" and 500 in (w[3], w[5]) for w in net.wire)
    assert not client.tunnels and not server.tunnels


def test_server_hang_up_reaches_the_client_and_it_deletes_the_sas():
    net = connect(Net(make_server(), [make_client(CLIENT_PUBLIC)]))
    net.server.stop_all("server shutting down", net.now)
    net.run(30, stop=lambda: net.clients[0].done)
    assert net.clients[0].done
    assert net.of(0, ControlClosed)
    assert not net.clients[0].children and not net.server.children


# -- configuration and the sans-I/O rule --------------------------------------------------------
def test_levels_map_as_the_chapter_policy_profile():
    assert esp_ciphers_for("basic") == esp_ciphers_for("strong") == ("des-cbc",)
    assert esp_ciphers_for(EncryptionLevel.STRONGEST) == ("3des-cbc",)
    assert esp_ciphers_for(["strong", "strongest"]) == ("3des-cbc", "des-cbc")
    assert esp_ciphers_for("aes") == ("aes-cbc-256", "aes-cbc-128")
    cfg = ike_config_for("strongest", "psk", nat_t=False)
    assert isinstance(cfg, IKEConfig) and cfg.psk == b"psk" and not cfg.nat_t
    with pytest.raises(ValueError, match="none"):
        esp_ciphers_for("none")


def test_the_stack_does_no_io():
    banned = {"socket", "time", "threading", "asyncio", "os.path", "subprocess", "select"}
    path = Path(__file__).parents[1] / "tunnels" / "stacks" / "l2tp_ipsec.py"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            assert not banned & {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.module not in banned


def test_certificates_instead_of_a_pre_shared_key(pki):  # noqa: F811
    """The chapter's default for Windows: Main Mode with RSA signatures, then the same L2TP."""

    def cert_ike(who):
        cert, key = pki[who]
        return ike_config_for("strongest", auth="rsa-sig", certificate=cert, private_key=key,
                              trusted_certificates=(pki["ca"],), dh_groups=(2,),
                              dpd_interval=0)
    net = connect(Net(make_server(cert_ike("server")),
                      [make_client(CLIENT_PUBLIC, cert_ike("client"))]))
    assert net.up(0), net.clients[0].reason
    (p1,) = net.of(None, IKEEstablished)
    assert p1.auth == "rsa-sig" and "client1" in p1.peer_id
    ping_both_ways(net)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from([("esp", 0, 0), ("udp", 500, 500), ("udp", 4500, 4500),
                        ("udp", 1701, 1701), ("udp", 9, 9)]), st.binary(max_size=300))
def test_any_bytes_on_any_transport_are_dropped_or_handled(transport, data):
    """Style rule 9: arbitrary datagrams give events, output or counted drops, never a raise;
    and never L2TP in clear."""
    server = _FUZZ_SERVER
    kind, port, local = transport
    server.receive_datagram((kind, CLIENT_PUBLIC, port, local), data, 1.0)
    for (out_kind, _dst, _port, out_local), _ in server.datagrams_to_send():
        assert out_kind == "udp" and out_local in (500, 4500)
    assert not server.tunnels


_FUZZ_SERVER = make_server()


def test_a_moved_nat_mapping_is_followed_after_an_authenticated_ike_message():
    """The NAT gives the client's 4500 a new public port mid-session. ESP from it is dropped
    (`peer_mismatch`) until an authenticated IKE message (here DPD's R-U-THERE) comes from
    there; then the server's SAs and its L2TP route follow, and data flows both ways."""
    cfg = ike(dpd_interval=5)
    net = connect(Net(make_server(cfg), [make_client("10.0.0.2", cfg)], nat=True))
    ping_both_ways(net)
    old = net.nat_map[("10.0.0.2", 4500)]
    net.nat_map[("10.0.0.2", 4500)] = 45000
    up = net.up(0)[0]
    net.clients[0].send_datagram(icmp_echo(up.local_address, up.peer_address), net.now)
    net.run(0.5)
    assert net.server.datagrams_to_tun() == []
    assert net.server.status()["ipsec"]["policy"]["peer_mismatch"] == 1
    net.run(12)  # DPD from the new port
    assert net.server.counters["remote_address_changed"] == 1
    (sa,) = net.server.status()["ipsec"]["sas"]
    assert sa["peer"] == f"{NAT_PUBLIC}:45000" and old != 45000
    ping_both_ways(net)
    session = next(iter(net.server.sessions.values()))
    assert session.up


@pytest.mark.parametrize("nat", [False, True])
def test_quick_mode_rekey_swaps_the_sas_under_a_live_session(nat):
    """Phase 2 rekeyed before its lifetime: a second IPsecUp, the old pair deleted
    ("rekeyed"), L2TP Hellos and data carried by the new SAs, the session untouched."""
    cfg = ike(lifetime_phase2=120)
    local = "10.0.0.2" if nat else CLIENT_PUBLIC
    net = connect(Net(make_server(cfg), [make_client(local, cfg)], nat=nat))
    first = net.of(0, IPsecUp)[0]
    net.run(150)
    ups, downs = net.of(0, IPsecUp), net.of(0, IPsecDown)
    assert len(ups) == 2 and [d.reason for d in downs] == ["rekeyed"]
    assert downs[0].spi_in == first.spi_in and ups[1].spi_in != first.spi_in
    assert list(net.clients[0].children) == [ups[1].spi_in]
    assert len(net.server.children) == 1
    assert not net.of(0, SessionDown)
    keepalives = [w for w in net.wire if w[0] == "c2s" and w[6] == b"\xff"]
    if nat:  # RFC 3948 §2.3, every 20 s from the NATed end, on 4500, no marker
        assert len(keepalives) >= 6 and {w[5] for w in keepalives} == {4500}
        assert net.server.status()["ipsec"]["policy"]["nat_keepalive"] == len(keepalives)
    else:
        assert not keepalives
    ping_both_ways(net)
    (sa,) = net.server.status()["ipsec"]["sas"]
    assert sa["spi_in"] == f"{ups[1].spi_out:#010x}" and sa["in"]["packets"] >= 1


def test_esp_data_does_not_touch_ike_and_routes_go_with_the_last_sa():
    """The data path is O(1) in the number of peers: IKE's outputs (O(peers) at the
    responder) are not asked for an ESP packet. A peer's L2TP route goes with its last SA."""
    net = connect(Net(make_server(), [make_client("10.0.0.2")], nat=True))
    server = net.server

    def untouchable():
        raise AssertionError("IKE asked for output on the data path")
    ike_out, server.ike.datagrams_to_send = server.ike.datagrams_to_send, untouchable
    up = net.up(0)[0]
    for _ in range(3):
        net.clients[0].send_datagram(icmp_echo(up.local_address, up.peer_address), net.now)
        net.step()
        server.send_datagram(icmp_echo(up.peer_address, up.local_address), net.now)
        net.step()
    assert len(server.datagrams_to_tun()) == 3 and len(net.clients[0].datagrams_to_tun()) == 3
    server.ike.datagrams_to_send = ike_out
    assert server._routes
    net.clients[0].hang_up(net.now)
    net.run(30, stop=lambda: net.clients[0].done)
    net.run(1)
    assert not server.children and not server._routes


@pytest.mark.parametrize("nat", [False, True])
def test_setup_data_and_teardown_complete_under_loss(nat):
    """15% of datagrams lost both ways: IKE retransmits, L2TP retransmits inside ESP, PPP
    restarts; the session comes up, and hang-up still ends with the SAs deleted."""
    cfg = ike(retransmit_tries=8)
    local = "10.0.0.2" if nat else CLIENT_PUBLIC
    net = Net(make_server(cfg), [make_client(local, cfg)], nat=nat, loss=0.15, seed=3)
    connect(net, until=300)
    assert net.up(0), net.clients[0].reason
    assert net.lost > 0
    net.clients[0].hang_up(net.now)
    net.run(300, stop=lambda: net.clients[0].done)
    assert net.clients[0].done and not net.clients[0].children


def test_a_vanished_client_is_declared_dead_and_its_session_ends():
    """The client disappears (no hang-up): DPD declares it dead and its SAs go (IPsecDown);
    the session ends by its own keepalives (LCP echo, L2TP Hello): nothing lingers."""
    cfg = ike(dpd_interval=5)
    net = connect(Net(make_server(cfg), [make_client(CLIENT_PUBLIC, cfg)]))
    net.clients = []  # gone from the wire
    net.events = {}
    net.run(400, stop=lambda: not net.server.sessions and not net.server.children)
    assert not net.server.children and not net.server.sessions
    assert any("peer dead" in d.reason for d in net.of(None, IPsecDown))
    assert net.of(None, SessionDown)
    net.run(120)
    assert not net.server.tunnels and not net.server.ike.sessions


# The kernel's IPv6 Router Solicitation on the client's vpn0 (fe80::... -> ff02::2), as seen
# decrypted on the wire by conformance/test_ipsec_wire.py inside a PPP frame of protocol 0x0021
ROUTER_SOLICITATION = bytes.fromhex("6000000000083afffe80000000000000f3f4c813ab4e8f53ff02000000"
                                    "000000000000000000000002" "8500868c00000000")


def test_ipv6_from_the_tun_device_is_not_sent_as_ppp_ipv4():
    """Without IPV6CP (RFC 5072) only IPv4 goes into PPP, as protocol 0x0021 (RFC 1332): an
    IPv6 packet from the TUN device is dropped and counted, not sent labelled IPv4."""
    net = connect(Net(make_server(), [make_client(CLIENT_PUBLIC)]))
    net.clients[0].send_datagram(ROUTER_SOLICITATION, net.now)
    net.run(0.5)
    assert net.server.datagrams_to_tun() == []
    ppp = next(iter(net.clients[0].sessions.values())).ppp
    assert ppp.counters["not_ipv4_dropped"] == 1
    ping_both_ways(net)


def test_a_stopccn_is_re_acked_inside_the_sas_and_a_hang_up_then_deletes_them():
    """RFC 2661 §5.7 through IPsec: after the server's StopCCN the client lingers with its
    SAs up (a re-sent StopCCN would come, and be acked, inside them); hanging up meanwhile
    deletes the SAs at once, as a hang-up after L2TP does."""
    net = connect(Net(make_server(), [make_client(CLIENT_PUBLIC)]))
    client = net.clients[0]
    net.server.l2tp.stop_all("administrator", net.now)  # the LNS alone: the SAs stay
    net.run(1.0)
    assert client.lingering and not client.done and client.children
    mark = len(net.wire)
    client.hang_up(net.now)
    net.run(5, stop=lambda: client.done)
    assert client.done and not client.lingering and not client.children
    deletes = [w for w in net.wire[mark:] if w[0] == "c2s" and w[1] == "udp" and w[6][18] == 5]
    assert len(deletes) == 2  # ESP's SA pair and the ISAKMP SA (RFC 2408 §3.15)
