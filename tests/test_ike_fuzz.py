"""The malformed-input invariant: any bytes into `receive_datagram`, in any state, give
events or counted drops, never another exception (style rule 9). Random bytes rarely carry
our cookies, so most examples corrupt the real messages of an exchange in flight."""

from __future__ import annotations

import functools
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.test_ike_pairs import SERVER, Net, cfg
from tests.test_ike_quick_mode import CLIENT, established
from tunnels.ipsec.ike import payloads as pl
from tunnels.ipsec.ike.phase2 import QuickMode
from tunnels.ipsec.ike import IKEResponder, IKESession
from tunnels.ipsec.ike.events import (
    ChildSADeleted,
    ChildSAEstablished,
    ChildSAFailed,
    IKEClosed,
    IKEFailed,
    NATKeepaliveDue,
    NotifyReceived,
    Phase1Established,
    RemoteAddressChanged,
)

KNOWN = (ChildSADeleted, ChildSAEstablished, ChildSAFailed, IKEClosed, IKEFailed,
         NATKeepaliveDue, NotifyReceived, Phase1Established, RemoteAddressChanged)
FAST = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


def _established() -> Net:
    net = Net(cfg(), nat=True)
    net.run(until=5)
    return net


@FAST
@given(st.lists(st.binary(max_size=200), max_size=5))
def test_random_datagrams_in_every_role(datagrams):
    responder = IKEResponder(cfg(), SERVER)
    initiator = IKESession(cfg(), "initiator", ("10.0.0.2", 500), SERVER)
    initiator.start(0.0)
    initiator.datagrams_to_send()
    for data in datagrams:
        responder.receive_datagram(data, ("10.0.0.2", 500), 1.0)
        initiator.receive_datagram(data, SERVER, 1.0)
        # with our cookies in front, the bytes reach the Main Mode handlers
        cookie_data = initiator.icookies()[0] + data[8:] if len(data) > 8 else data
        initiator.receive_datagram(cookie_data, SERVER, 1.0)
    assert initiator.counters["received"] == 2 * len(datagrams)
    while (e := initiator.next_event()) is not None:
        assert isinstance(e, KNOWN)


def _mutate(data: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    b = bytearray(data)
    for pos, val in edits:
        b[pos % len(b)] ^= val or 1
    if cut is not None:
        b = b[: cut % (len(b) + 1)]
    return bytes(b)


@FAST
@given(st.integers(0, 11), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)),
                                    max_size=4),
       st.none() | st.integers(0, 10_000), st.booleans())
def test_corrupted_messages_of_a_real_exchange(index, edits, cut, nat):
    """Message `index` of MM1..QM3 + DPD is delivered corrupted before the original."""
    net = Net(cfg(dpd_interval=2), nat=nat)
    real_deliver = net._deliver
    seen = {"n": 0}

    def deliver(direction, src, dst, data):
        if seen["n"] == index:
            real_deliver(direction, src, dst, _mutate(data, edits, cut))
        seen["n"] += 1
        real_deliver(direction, src, dst, data)
    net._deliver = deliver
    net.run(until=10)
    for events in (*net.client_events, net.server_events):
        assert all(isinstance(e, KNOWN) for e in events)


@FAST
@given(st.binary(min_size=0, max_size=120), st.integers(0, 255), st.integers(0, 255),
       st.integers(0, 2**32 - 1))
def test_forged_messages_with_the_right_cookies_after_establishment(body, exchange, flags, mid):
    net = _established()
    client = net.clients[0]
    sa = client._current()
    from tunnels.ipsec.ike.payloads import Header
    data = Header(sa.icookie, sa.rcookie, body[0] if body else 0, exchange, flags,
                  mid).encode(len(body)) + body
    before = len(net.children()[0])
    client.receive_datagram(data, SERVER, net.now)
    net.server.receive_datagram(data, ("203.0.113.5", 30001), net.now)
    net.transfer()
    assert len(net.children()[0]) == before  # nothing unauthenticated made an SA
    assert client.established


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.randoms(use_true_random=False), st.booleans())
def test_a_recorded_exchange_replayed_in_any_order(rnd, nat):
    """Every datagram of a finished exchange, shuffled, into a fresh responder and a fresh
    initiator: whatever is out of state is dropped; no exception, at most one session."""
    net = Net(cfg(), nat=nat)
    net.run(until=5)
    ups = [(src, d) for src, dst, d in net.log if dst[0] == SERVER[0]]
    downs = [d for src, dst, d in net.log if src[0] == SERVER[0]]
    rnd.shuffle(ups)
    rnd.shuffle(downs)
    responder = IKEResponder(cfg(), SERVER)
    for src, data in ups:
        responder.receive_datagram(data, src, 1.0)
    assert len(responder.sessions) <= 1
    initiator = IKESession(cfg(), "initiator", ("10.0.0.2", 500), SERVER)
    initiator.start(0.0)
    for data in downs:
        initiator.receive_datagram(data, SERVER, 1.0)
    assert initiator.counters["dropped"] == len(downs)  # other cookies: all dropped
    while (pair := responder.next_event()) is not None:
        assert not isinstance(pair[1], ChildSAEstablished)


# -- well-formed but arbitrary content: authenticated where the exchange is protected ------

_attr = st.builds(pl.Attribute, st.integers(0, 20),
                  st.one_of(st.integers(0, 0xFFFF), st.integers(0, 2**40)),
                  st.sampled_from([0, 0, 4, 8]))
_transform = st.builds(pl.Transform, st.integers(0, 3), st.integers(0, 14),
                       st.lists(_attr, max_size=8).map(tuple))
_proposal = st.builds(pl.Proposal, st.integers(0, 3), st.integers(0, 5), st.binary(max_size=8),
                      st.lists(_transform, min_size=1, max_size=3).map(tuple))
_proposals = st.lists(_proposal, min_size=1, max_size=3).map(tuple)
_id = st.builds(pl.ID, st.integers(0, 12), st.binary(max_size=8), st.integers(0, 255),
                st.integers(0, 0xFFFF))


@FAST
@given(_proposals, st.lists(st.sampled_from([pl.VID(b"x" * 16), pl.KE(b"k" * 128),
                                             pl.NONCE(b"n" * 16)]), max_size=3))
def test_arbitrary_phase1_proposals(proposals, extra):
    responder = IKEResponder(cfg(dh_groups=(2, 1), allow_group1=True), SERVER)
    mm1 = pl.encode_plain(b"i" * 8, b"\0" * 8, 2, 0, [pl.SA(proposals), *extra])
    responder.receive_datagram(mm1, ("10.0.0.2", 500), 0.0)
    for _dst, _port, data in responder.datagrams_to_send():
        pl.decode_plain(data)  # whatever we answer parses
    while (pair := responder.next_event()) is not None:
        assert isinstance(pair[1], KNOWN)


@FAST
@given(_proposals, st.one_of(st.none(), st.lists(_id, max_size=3)),
       st.one_of(st.none(), st.binary(max_size=140)))
def test_arbitrary_quick_mode_requests_authenticated(proposals, ids, ke):
    net = _shared_net()  # one phase 1 for all examples; each request has its own M-ID
    _MID[0] += 1
    client = net.clients[0]
    sa = client._current()
    qm = QuickMode(sa, client.config, True, _MID[0], lambda: 0x1000,
                   random.Random(2).randbytes)
    qm._ni = b"n" * 32
    body = [pl.SA(proposals), pl.NONCE(qm._ni)]
    if ke is not None:
        body.append(pl.KE(ke))
    body += list(ids or [])
    data = qm._send(qm._with_hash(lambda rest: qm._mid() + rest, body))
    net.server.receive_datagram(data, CLIENT, net.now)
    net.server.datagrams_to_send()
    while (pair := net.server.next_event()) is not None:
        assert isinstance(pair[1], KNOWN)
    assert net.server.sessions  # one peer's odd request does not end its session


_MID = [0x5A5A0000]


@functools.cache
def _shared_net() -> Net:
    return established()
