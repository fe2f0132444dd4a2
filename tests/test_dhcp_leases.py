"""DHCPAddressSource against a scripted in-memory DHCP server on a virtual clock: blocks leased
one identity per address, retransmission with back-off and giving up, NAK while acquiring and
while renewing, renewal at T1 and rebinding at T2, expiry of an address in use, release of the
unused surplus and on shutdown, exhaustion (take() is None, counted), and any bytes at all
counted, never raised."""

from __future__ import annotations

import ast
import ipaddress
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunnels.dhcp.leases import (
    BROADCAST,
    AcquireFailed,
    AddressLeased,
    AddressLost,
    AddressReleased,
    AddressRenewed,
    DHCPAddressSource,
)
from tunnels.dhcp.messages import BROADCAST_FLAG, ZERO, DHCPMessage, MessageType, Op, Opt
from tunnels.errors import LocalProtocolError

MAC = bytes.fromhex("020000000a01")
SERVER = "10.0.0.1"
M = MessageType


def counter_random():
    state = [0]

    def random(n: int) -> bytes:
        state[0] += 1
        return state[0].to_bytes(n, "big")
    return random


class FakeServer:
    """Offers the lowest free address of `size` from 10.0.0.100; ACKs a REQUEST for an address
    it offered or leased to that client id; forgets on RELEASE. `nak_renewals`, `silent`."""

    def __init__(self, size: int = 30, lease: int = 3600, t1: int | None = None,
                 t2: int | None = None):
        self.pool = [str(ipaddress.IPv4Address("10.0.0.100") + i) for i in range(size)]
        self.lease, self.t1, self.t2 = lease, t1, t2
        self.leases: dict[bytes, str] = {}
        self.offered: dict[bytes, str] = {}
        self.received: list[tuple[tuple[str, int], DHCPMessage]] = []
        self.silent = False
        self.nak_renewals = False
        self.nak_requests = 0

    def _free(self) -> str | None:
        taken = set(self.leases.values()) | set(self.offered.values())
        return next((a for a in self.pool if a not in taken), None)

    def answer(self, dst: tuple[str, int], data: bytes) -> bytes | None:
        request = DHCPMessage.decode(data)
        self.received.append((dst, request))
        if self.silent:
            return None
        cid = request.client_id
        assert cid is not None
        if request.message_type is M.DHCPRELEASE:
            if self.leases.get(cid) == request.ciaddr:
                del self.leases[cid]
            return None
        if request.message_type is M.DHCPDISCOVER:
            address = self.leases.get(cid) or self.offered.get(cid) or self._free()
            if address is None:
                return None  # dnsmasq: "no address available", no answer
            self.offered[cid] = address
            return self._reply(request, M.DHCPOFFER, address)
        wanted = request.requested_address or request.ciaddr
        renewal = request.server_id is None
        if (self.nak_requests and not renewal) or (self.nak_renewals and renewal) or wanted \
                not in (self.leases.get(cid), self.offered.get(cid)):
            self.nak_requests = max(self.nak_requests - 1, 0)
            self.offered.pop(cid, None)
            return self._reply(request, M.DHCPNAK, ZERO, {Opt.MESSAGE: "wrong address"})
        self.offered.pop(cid, None)
        self.leases[cid] = wanted
        return self._reply(request, M.DHCPACK, wanted)

    def _reply(self, request: DHCPMessage, kind: MessageType, address: str,
               extra: dict | None = None) -> bytes:
        options: dict = {Opt.SERVER_ID: SERVER}
        if kind is not M.DHCPNAK:
            options.update({Opt.LEASE_TIME: self.lease, Opt.SUBNET_MASK: "255.255.255.0"})
            if self.t1 is not None:
                options[Opt.RENEWAL_TIME] = self.t1
            if self.t2 is not None:
                options[Opt.REBINDING_TIME] = self.t2
        options[Opt.CLIENT_ID] = request.client_id  # RFC 6842
        options.update(extra or {})
        return DHCPMessage(Op.BOOTREPLY, kind, request.xid, request.chaddr, yiaddr=address,
                           flags=request.flags, options=options).encode()


def exchange(source: DHCPAddressSource, server: FakeServer, now: float,
             drop=lambda dst, data: False) -> int:
    """Deliver everything both ways until quiet (bounded); returns datagrams sent."""
    sent = 0
    for _ in range(100):
        out = source.datagrams_to_send()
        if not out:
            return sent
        sent += len(out)
        for dst, data in out:
            if drop(dst, data):
                continue
            reply = server.answer(dst, data)
            if reply is not None:
                source.receive_datagram((SERVER, 67), reply, now)
    raise AssertionError("no end to the exchange")


def events(source: DHCPAddressSource) -> list:
    out = []
    while (event := source.next_event()) is not None:
        out.append(event)
    return out


def run_timers(source: DHCPAddressSource, server: FakeServer, until: float) -> float:
    """Fire the timer (exchanging after each) until the next deadline is past `until`."""
    now = 0.0
    for _ in range(1000):
        timer = source.get_timer()
        if timer is None or timer > until:
            return now
        now = max(now, timer)
        source.handle_timer(now)
        exchange(source, server, now)
    raise AssertionError("timer never settles")


def source(**kw) -> DHCPAddressSource:
    kw.setdefault("random", counter_random())
    kw.setdefault("low_water", 0)  # no automatic block unless a test is about it
    return DHCPAddressSource(MAC, "vpnsrv", **kw)


def test_a_block_is_leased_one_identity_per_address():
    s, server = source(block=10, parallel=10), FakeServer()
    s.acquire(10, 0.0)
    out = s.datagrams_to_send()
    assert len(out) == 10 and {dst for dst, _ in out} == {BROADCAST}
    discovers = [DHCPMessage.decode(data) for _, data in out]
    assert all(d.message_type is M.DHCPDISCOVER and d.broadcast and d.chaddr == MAC
               for d in discovers)
    assert [d.client_id for d in discovers] == [b"\0vpnsrv-%d" % n for n in range(1, 11)]
    assert len({d.xid for d in discovers}) == 10
    for dst, data in out:
        s.receive_datagram((SERVER, 67), server.answer(dst, data), 0.0)
    exchange(s, server, 0.0)
    leased = events(s)
    assert all(isinstance(e, AddressLeased) for e in leased) and len(leased) == 10
    assert sorted(e.address for e in leased) == sorted(server.pool[:10])
    assert {e.server_id for e in leased} == {SERVER} and leased[0].expires == 3600
    requests = [m for _, m in server.received if m.message_type is M.DHCPREQUEST]
    assert all(r.server_id == SERVER and r.requested_address and r.flags == BROADCAST_FLAG
               for r in requests)
    assert s.free_count() == 10 and s.counters["offers"] == 10 and s.counters["acks"] == 10
    assert server.leases == {e.client_id: e.address for e in leased}


def test_identities_are_started_one_at_a_time_by_default():
    s, server = source(), FakeServer()
    s.acquire(3, 0.0)
    first = s.datagrams_to_send()
    assert len(first) == 1 and s.acquiring_count() == 3
    s.receive_datagram((SERVER, 67), server.answer(*first[0]), 0.0)
    [(dst, request)] = s.datagrams_to_send()  # the REQUEST; the next DISCOVER waits
    s.receive_datagram((SERVER, 67), server.answer(dst, request), 0.0)
    [(_, discover)] = s.datagrams_to_send()
    assert DHCPMessage.decode(discover).client_id == b"\0vpnsrv-2"


def test_take_and_give_back_then_exhaustion_returns_none():
    s, server = source(block=3, low_water=0), FakeServer(size=3)
    s.acquire(3, 0.0)
    exchange(s, server, 0.0)
    taken = [s.take() for _ in range(3)]
    assert sorted(taken) == sorted(server.pool) and s.in_use() == sorted(taken)
    assert s.take() is None and s.counters["take_failed"] == 1
    s.give_back(taken[1])
    assert s.take() == taken[1]
    s.give_back("192.0.2.9")  # not ours: counted, nothing else
    assert s.counters["give_back_unknown"] == 1


def test_low_water_acquires_another_block_and_exhaustion_fails_counted():
    s, server = source(block=4, low_water=2, timeout=1, max_timeout=2, tries=3), \
        FakeServer(size=6)
    s.acquire(4, 0.0)
    exchange(s, server, 0.0)
    events(s)
    assert s.take() and s.take()
    assert s.get_timer() == 0.0  # the policy runs at the next timer, with the real time
    s.take()  # free 1 < low water 2: one more block of 4 (the server has only 2 left)
    s.handle_timer(5.0)
    exchange(s, server, 5.0)
    assert s.free_count() == 3 and s.acquiring_count() == 2
    run_timers(s, server, until=100)
    failed = [e for e in events(s) if isinstance(e, AcquireFailed)]
    assert len(failed) == 2 and "no DHCPOFFER after 3 transmissions" in failed[0].reason
    assert failed[0].reason == failed[1].reason  # the queued one gave up with the first
    assert s.counters["acquire_failed"] == 2 and s.acquiring_count() == 0
    assert [s.take() for _ in range(4)][-1] is None and s.counters["take_failed"] == 1


def test_retransmission_backs_off_and_gives_up_then_the_refill_waits():
    s, server = source(low_water=1), FakeServer()
    server.silent = True
    s.acquire(1, 0.0)
    sent_at = []
    now = 0.0
    while (timer := s.get_timer()) is not None and timer < 100:
        if s.datagrams_to_send():
            sent_at.append(now)
        now = timer
        s.handle_timer(now)
    assert sent_at == [0, 4, 12, 28]  # waits of 4, 8, 16 and a last 16 s
    assert now == 44 and s.counters["retransmissions"] == 3
    [failed] = events(s)
    assert isinstance(failed, AcquireFailed) and failed.client_id == b"\0vpnsrv-1"
    assert failed.reason == "no DHCPOFFER after 4 transmissions to 255.255.255.255:67"
    assert s.get_timer() == 44 + 60 and s.acquiring_count() == 0  # retry_after, then a block
    s.handle_timer(104)
    assert s.acquiring_count() == 10 and len(s.datagrams_to_send()) == 1  # parallel=1


def test_lost_offer_and_lost_ack_are_retransmitted_with_the_same_xid():
    s, server = source(), FakeServer()
    s.acquire(1, 0.0)
    exchange(s, server, 0.0, drop=lambda dst, data: True)  # the DISCOVER is lost
    s.handle_timer(4.0)
    first = [True]

    def drop_first_request(dst, data):
        if DHCPMessage.decode(data).message_type is M.DHCPREQUEST and first[0]:
            first[0] = False
            return True
        return False
    exchange(s, server, 4.0, drop_first_request)
    assert not events(s)
    s.handle_timer(4.0 + 4)
    exchange(s, server, 8.0)
    [leased] = events(s)
    xids = {m.xid for _, m in server.received}
    assert isinstance(leased, AddressLeased) and len(xids) == 1
    assert s.counters["retransmissions"] == 2 and [m.secs for _, m in server.received] == [4, 8]


def test_nak_to_the_request_starts_that_identity_again():
    s, server = source(), FakeServer()
    server.nak_requests = 1
    s.acquire(1, 0.0)
    exchange(s, server, 0.0)
    [leased] = events(s)
    kinds = [m.message_type for _, m in server.received]
    assert kinds == [M.DHCPDISCOVER, M.DHCPREQUEST, M.DHCPDISCOVER, M.DHCPREQUEST]
    assert isinstance(leased, AddressLeased) and s.counters["naks"] == 1


def test_naks_without_end_give_up():
    s, server = source(tries=3), FakeServer()
    server.nak_requests = 99
    s.acquire(1, 0.0)
    exchange(s, server, 0.0)
    [failed] = events(s)
    assert isinstance(failed, AcquireFailed)
    assert failed.reason == ("DHCPNAK to the REQUEST for 10.0.0.100 3 times from 10.0.0.1: "
                             "wrong address")


def test_renewal_at_t1_unicast_then_rebinding_at_t2_broadcast():
    s, server = source(block=1, low_water=0), FakeServer(lease=1000)
    s.acquire(1, 0.0)
    exchange(s, server, 0.0)
    events(s)
    assert s.get_timer() == 500  # T1 = 0.5 lease (RFC 2131 §4.4.5)
    s.handle_timer(500)
    [(dst, data)] = s.datagrams_to_send()
    renewal = DHCPMessage.decode(data)
    assert dst == (SERVER, 67) and renewal.message_type is M.DHCPREQUEST
    assert renewal.server_id is None and renewal.requested_address == "10.0.0.100"
    assert renewal.ciaddr == ZERO and renewal.broadcast  # INIT-REBOOT form: ACK broadcast
    s.receive_datagram((SERVER, 67), server.answer(dst, data), 500)
    [renewed] = events(s)
    assert renewed == AddressRenewed("10.0.0.100", 1500, False) and s.get_timer() == 1000
    # the server stops answering: retransmit at half the time to T2, then rebind at T2
    server.silent = True
    sent = []
    now = 1000.0
    while now < 1375:
        s.handle_timer(now)
        sent += [(now, dst) for dst, _ in s.datagrams_to_send()]
        now = s.get_timer()
    # §4.4.5: half the time left to T2, at least 60 s
    assert sent == [(1000, (SERVER, 67)), (1187.5, (SERVER, 67)), (1281.25, (SERVER, 67)),
                    (1341.25, (SERVER, 67))]
    server.silent = False
    s.handle_timer(now)
    [(dst, data)] = s.datagrams_to_send()
    s.receive_datagram((SERVER, 67), server.answer(dst, data), now)
    [rebound] = events(s)
    assert dst == BROADCAST and rebound.rebound
    assert s.counters["rebinds"] == 1 and s.counters["renewals"] == 2


def test_rfc_renewing_form_carries_ciaddr():
    s, server = source(renew_with_ciaddr=True), FakeServer(t1=100, t2=200)
    s.acquire(1, 0.0)
    exchange(s, server, 0.0)
    assert s.get_timer() == 100  # the server's T1 (option 58)
    s.handle_timer(100)
    [(dst, data)] = s.datagrams_to_send()
    renewal = DHCPMessage.decode(data)
    assert renewal.ciaddr == "10.0.0.100" and not renewal.broadcast
    assert renewal.requested_address is None and dst == (SERVER, 67)


def test_nak_to_the_renewal_drops_the_address_and_an_expired_one_in_use_is_reported():
    s, server = source(block=2, low_water=0), FakeServer(lease=1000)
    s.acquire(2, 0.0)
    exchange(s, server, 0.0)
    events(s)
    used = s.take()
    server.nak_renewals = True
    s.handle_timer(500)
    dsts = s.datagrams_to_send()
    s.receive_datagram((SERVER, 67), server.answer(*dsts[0]), 500)
    server.silent = True  # the second identity's renewal goes unanswered
    s.receive_datagram((SERVER, 67), b"\x02" + bytes(10), 500)
    run_timers(s, server, until=2000)
    lost = events(s)
    assert all(isinstance(e, AddressLost) for e in lost) and len(lost) == 2
    by_address = {e.address: e for e in lost}
    nak, expired = (lost if "NAK" in lost[0].reason else lost[::-1])
    assert nak.reason == "DHCPNAK to the renewal from 10.0.0.1: wrong address"
    assert expired.reason.startswith("the lease expired") and by_address[used].in_use
    assert s.counters["expired"] == 1 and s.counters["malformed_dropped"] == 1
    assert s.free_count() == 0 and s.take() is None


def test_unused_surplus_is_released_after_release_after_and_all_on_shutdown():
    s, server = source(block=2, low_water=1, release_after=60), FakeServer(lease=10_000)
    s.acquire(6, 0.0)
    exchange(s, server, 0.0)
    events(s)
    taken = [s.take() for _ in range(6)]
    for address in taken[:5]:
        s.give_back(address, now=10.0)
    s.handle_timer(10.0)
    assert s.get_timer() == 70.0 and not s.datagrams_to_send()  # 5 free, 3 kept
    s.handle_timer(70.0)
    releases = [DHCPMessage.decode(data) for dst, data in s.datagrams_to_send()
                if dst == (SERVER, 67)]
    assert [r.message_type for r in releases] == [M.DHCPRELEASE] * 2
    assert all(r.server_id == SERVER and r.ciaddr in taken and not r.broadcast
               for r in releases)
    gone = events(s)
    assert {e.reason for e in gone} == {"unused"} and len(gone) == 2
    for release in releases:
        server.answer((SERVER, 67), release.encode())
    assert len(server.leases) == 4 and s.free_count() == 3
    s.release_all(80.0)
    exchange(s, server, 80.0)
    assert server.leases == {} and s.get_timer() is None
    assert {type(e) for e in events(s)} == {AddressReleased}


def test_released_identities_are_reused_lowest_first():
    """So a server that keys on the client id (dnsmasq does) gives the same addresses back:
    tests/test_dhcp_dnsmasq.py shows it."""
    s, server = source(block=3, low_water=0), FakeServer()
    s.acquire(3, 0.0)
    exchange(s, server, 0.0)
    events(s)
    s.release_all(1.0)
    exchange(s, server, 1.0)
    s.acquire(2, 2.0)
    exchange(s, server, 2.0)
    again = [e for e in events(s) if isinstance(e, AddressLeased)]
    assert [e.client_id for e in again] == [b"\0vpnsrv-1", b"\0vpnsrv-2"]
    s.acquire(2, 3.0)
    exchange(s, server, 3.0)
    assert [e.client_id for e in events(s)] == [b"\0vpnsrv-3", b"\0vpnsrv-4"]


def test_the_server_address_is_reserved_and_never_handed_out():
    s, server = source(block=2, low_water=0, reserve_server_address=True), FakeServer()
    s.acquire(2, 0.0)
    s.acquire(0, 0.0)  # nothing more: one is already on its way for the server
    assert s.acquiring_count() == 3  # one more for the server itself
    exchange(s, server, 0.0)
    leased = events(s)
    assert [e.for_server for e in leased] == [True, False, False]  # the first bound
    assert s.server_address == next(e.address for e in leased if e.for_server)
    handed = {s.take(), s.take()}
    assert s.server_address not in handed and s.take() is None


def test_replies_for_others_are_counted_not_taken():
    s, server = source(), FakeServer()
    s.acquire(1, 0.0)
    [(dst, data)] = s.datagrams_to_send()
    offer = DHCPMessage.decode(server.answer(dst, data))
    other_mac = DHCPMessage(offer.op, offer.message_type, offer.xid, b"\x02" * 6,
                            yiaddr=offer.yiaddr, options=offer.options).encode()
    other_xid = DHCPMessage(offer.op, offer.message_type, offer.xid + 1, MAC,
                            yiaddr=offer.yiaddr, options=offer.options).encode()
    no_server_id = DHCPMessage(offer.op, offer.message_type, offer.xid, MAC,
                               yiaddr=offer.yiaddr, options={}).encode()
    ack_now = DHCPMessage(offer.op, M.DHCPACK, offer.xid, MAC, yiaddr=offer.yiaddr,
                          options={**offer.options}).encode()
    for bad in (other_mac, other_xid):
        s.receive_datagram((SERVER, 67), bad, 0.0)
    s.receive_datagram((SERVER, 67), no_server_id, 0.0)
    s.receive_datagram((SERVER, 67), ack_now, 0.0)  # ACK while selecting
    assert s.counters["unmatched"] == 2 and s.counters["invalid_reply"] == 1
    assert s.counters["out_of_state"] == 1 and not s.datagrams_to_send()
    s.receive_datagram((SERVER, 67), offer.encode(), 0.0)
    assert len(s.datagrams_to_send()) == 1  # the real offer is still taken


def test_bad_configuration_is_refused():
    with pytest.raises(LocalProtocolError):
        DHCPAddressSource(b"", "x")
    with pytest.raises(LocalProtocolError):
        DHCPAddressSource(MAC, "x", block=0)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=400), max_size=8))
def test_any_bytes_are_counted_never_raised(datagrams):
    s = source()
    s.acquire(2, 0.0)
    [(_, data)] = s.datagrams_to_send()[:1]
    xid = DHCPMessage.decode(data).xid.to_bytes(4, "big")
    for raw in datagrams:
        s.receive_datagram((SERVER, 67), raw, 1.0)
        if len(raw) > 8:  # also with our xid, to reach past the matching
            s.receive_datagram((SERVER, 67), raw[:4] + xid + raw[8:], 1.0)
    assert sum(s.counters.values()) >= len(datagrams)


def test_the_core_does_no_io():
    source_file = Path(__file__).resolve().parents[1] / "tunnels" / "dhcp" / "leases.py"
    modules = {alias.name.split(".")[0] for node in ast.walk(ast.parse(source_file.read_text()))
               if isinstance(node, ast.Import) for alias in node.names}
    modules |= {node.module.split(".")[0] for node in ast.walk(ast.parse(
        source_file.read_text())) if isinstance(node, ast.ImportFrom) and node.module}
    assert not modules & {"socket", "asyncio", "time", "subprocess", "select"}
