"""The malformed-input invariant: any bytes into `receive_datagram`, in any state, give
events or counted drops, never another exception (style rule 9). Random bytes rarely carry
our cookies, so most examples corrupt the real messages of an exchange in flight."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.test_ike_pairs import SERVER, Net, cfg
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
)

KNOWN = (ChildSADeleted, ChildSAEstablished, ChildSAFailed, IKEClosed, IKEFailed,
         NATKeepaliveDue, NotifyReceived, Phase1Established)
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


@FAST
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
