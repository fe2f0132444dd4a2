"""The sans-I/O RadiusClient against in-memory servers on a virtual clock: replies matched by
(server, Identifier, authenticators), retransmission with the same bytes, fail-over, the
"no answer" failure, and every bad reply dropped and counted, never raised."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunnels.errors import LocalProtocolError
from tunnels.radius.attributes import AcctStatusType, Attr, Attributes
from tunnels.radius.client import (
    NO_ANSWER,
    AccessAccepted,
    AccessChallenged,
    AccessRejected,
    AccountingAcknowledged,
    RadiusClient,
    RequestFailed,
)
from tunnels.radius.msvsa import MS, IdentString, mppe_keys, mschap_error_code
from tunnels.radius.packet import Code, Packet

A, B = ("10.0.0.1", 1812), ("10.0.0.2", 1812)
SECRETS = {A: b"alpha", B: b"bravo", ("10.0.0.1", 1813): b"alpha", ("10.0.0.2", 1813): b"bravo"}
PAP = [(Attr.USER_NAME, "bob"), (Attr.USER_PASSWORD, "pw"), (Attr.NAS_IDENTIFIER, "vpn")]


def counter_random():
    state = [0]

    def random(n: int) -> bytes:
        state[0] += 1
        return bytes((state[0] * 7 + i) % 256 for i in range(n))
    return random


def client(**kw) -> RadiusClient:
    return RadiusClient([(*A, b"alpha"), (*B, b"bravo")], random=counter_random(), **kw)


def answer(dest, datagram: bytes, code: Code = Code.ACCESS_ACCEPT, attrs=(), ma: bool = True,
           secret: bytes | None = None) -> bytes:
    """What a server at `dest` replies."""
    secret = secret or SECRETS[tuple(dest)]
    request = Packet.decode(datagram, secret)
    items = ([(Attr.MESSAGE_AUTHENTICATOR, b"")] if ma else []) + list(attrs)
    return Packet(code, request.identifier, Attributes(items)).encode(
        secret, request.authenticator, random=lambda n: b"\x81" * n)


def events(c: RadiusClient) -> list:
    out = []
    while (e := c.next_event()) is not None:
        out.append(e)
    return out


def test_access_accept_with_attributes_and_mppe_keys() -> None:
    c = client()
    rid = c.authenticate(PAP, now=0.0)
    (dest, datagram), = c.datagrams_to_send()
    sent = Packet.decode(datagram, b"alpha")
    assert dest == A and list(sent.attributes)[0][0] == Attr.MESSAGE_AUTHENTICATOR  # first
    assert sent.attributes.get(Attr.USER_PASSWORD) == b"pw"
    reply = answer(dest, datagram, attrs=[
        (Attr.FRAMED_IP_ADDRESS, ipaddress.IPv4Address("10.9.0.5")), (Attr.SESSION_TIMEOUT, 60),
        (Attr.CLASS, b"c1"), (MS.MS_MPPE_SEND_KEY, b"s" * 16), (MS.MS_MPPE_RECV_KEY, b"r" * 16)])
    c.receive_datagram(A, reply, now=0.1)
    (event,) = events(c)
    assert isinstance(event, AccessAccepted) and event.request_id == rid and event.server == A
    assert str(event.attributes.get(Attr.FRAMED_IP_ADDRESS)) == "10.9.0.5"
    assert mppe_keys(event.attributes) == (b"s" * 16, b"r" * 16)
    assert c.get_timer() is None


@pytest.mark.parametrize("code, kind", [(Code.ACCESS_REJECT, AccessRejected),
                                        (Code.ACCESS_CHALLENGE, AccessChallenged)])
def test_reject_and_challenge(code: Code, kind: type) -> None:
    c = client()
    c.authenticate(PAP, 0.0)
    (dest, datagram), = c.datagrams_to_send()
    attrs = [(MS.MS_CHAP_ERROR, IdentString(1, "E=691 R=0 V=3"))] if code == Code.ACCESS_REJECT \
        else [(Attr.STATE, b"st")]
    c.receive_datagram(dest, answer(dest, datagram, code, attrs), 0.1)
    (event,) = events(c)
    assert isinstance(event, kind)
    if kind is AccessRejected:
        assert mschap_error_code(event.attributes) == 691


def test_retransmission_keeps_the_bytes_then_fails_over_then_fails() -> None:
    c = client(timeout=3.0, retries=3)
    rid = c.authenticate(PAP, 0.0)
    first = c.datagrams_to_send()
    now, sent = 0.0, list(first)
    while (deadline := c.get_timer()) is not None:
        now = deadline
        c.handle_timer(now)
        sent += c.datagrams_to_send()
    to_a = [d for dest, d in sent if dest == A]
    to_b = [d for dest, d in sent if dest == B]
    assert len(to_a) == 3 and len(set(to_a)) == 1  # same Identifier, authenticator, bytes
    assert len(to_b) == 3 and len(set(to_b)) == 1
    assert Packet.decode(to_b[0], b"bravo").attributes.get(Attr.USER_PASSWORD) == b"pw"
    assert now == pytest.approx(18.0)
    (event,) = events(c)
    assert event == RequestFailed(rid, NO_ANSWER, (A, B))
    assert c.counters["retransmissions"] == 4 and c.counters["fail_overs"] == 1


def test_answer_from_the_second_server_makes_it_current() -> None:
    c = client(timeout=1.0, retries=1)
    c.authenticate(PAP, 0.0)
    c.datagrams_to_send()
    c.handle_timer(1.0)
    (dest, datagram), = c.datagrams_to_send()
    assert dest == B
    c.receive_datagram(B, answer(B, datagram), 1.2)
    assert isinstance(events(c)[0], AccessAccepted)
    c.authenticate(PAP, 2.0)
    assert c.datagrams_to_send()[0][0] == B


EAP = [(Attr.USER_NAME, "bob"), (Attr.EAP_MESSAGE, b"\x02\x01\x00\x08\x01bob"),
       (Attr.NAS_IDENTIFIER, "vpn")]


def test_a_request_with_a_challenges_state_goes_to_the_challenger_only() -> None:
    """B challenged; A then became current (it answered another request); the next round
    of B's conversation still goes to B, and when B is silent it fails, never to A."""
    c = client(timeout=1.0, retries=1)
    c.authenticate(EAP, 0.0)
    c.datagrams_to_send()
    c.handle_timer(1.0)  # A is silent: fail-over to B
    (dest, datagram), = c.datagrams_to_send()
    assert dest == B
    c.receive_datagram(B, answer(B, datagram, Code.ACCESS_CHALLENGE, [(Attr.STATE, b"s1")]),
                       1.1)
    assert isinstance(events(c)[0], AccessChallenged)
    c.authenticate(PAP, 1.5)  # someone else's request: B is silent now, A answers it
    c.datagrams_to_send()
    c.handle_timer(2.5)
    (dest, datagram), = c.datagrams_to_send()
    assert dest == A
    c.receive_datagram(A, answer(A, datagram), 2.6)
    assert isinstance(events(c)[0], AccessAccepted)  # A is current again
    c.authenticate([*EAP, (Attr.STATE, b"s1")], 3.0)
    (dest, _), = c.datagrams_to_send()
    assert dest == B
    c.handle_timer(4.0)
    assert c.datagrams_to_send() == []
    (failed,) = events(c)
    assert isinstance(failed, RequestFailed) and failed.servers_tried == (B,)
    c.authenticate(PAP, 5.0)  # a new conversation goes to the current server
    assert c.datagrams_to_send()[0][0] == A


def test_late_answer_from_the_first_server_after_fail_over_is_dropped() -> None:
    c = client(timeout=1.0, retries=1)
    c.authenticate(PAP, 0.0)
    (_, to_a), = c.datagrams_to_send()
    c.handle_timer(1.0)
    c.datagrams_to_send()
    c.receive_datagram(A, answer(A, to_a), 1.5)
    assert events(c) == [] and c.counters["unmatched"] == 1


@pytest.mark.parametrize("fault, counter", [
    ("no-ma", "missing_message_authenticator"), ("bad-ma", "bad_message_authenticator"),
    ("wrong-secret", "bad_authenticator"), ("bad-auth", "bad_authenticator"),
    ("other-source", "unmatched"), ("wrong-id", "unmatched"), ("short", "malformed"),
    ("accounting-code", "malformed")])
def test_bad_replies_are_dropped_and_counted_and_the_request_stays(fault: str,
                                                                   counter: str) -> None:
    c = client()
    c.authenticate(PAP, 0.0)
    (dest, datagram), = c.datagrams_to_send()
    src, reply = dest, answer(dest, datagram)
    if fault == "no-ma":
        reply = answer(dest, datagram, ma=False)
    elif fault == "bad-ma":
        reply = bytearray(reply)
        reply[24] ^= 1  # inside the Message-Authenticator value
        reply = bytes(reply)
        reply = _reauth(reply, datagram[4:20], b"alpha")
    elif fault == "wrong-secret":
        reply = answer(dest, datagram, secret=b"alpha")  # valid for alpha...
        reply = _reauth(reply, datagram[4:20], b"alpha")
        c.servers[0] = type(c.servers[0])(A[0], A[1], b"other")  # ...but the client holds another
    elif fault == "bad-auth":
        reply = reply[:4] + b"\0" * 16 + reply[20:]
    elif fault == "other-source":
        src = ("10.0.0.9", 1812)
    elif fault == "wrong-id":
        reply = reply[:1] + bytes([(reply[1] + 1) % 256]) + reply[2:]
    elif fault == "short":
        reply = reply[:10]
    elif fault == "accounting-code":
        reply = answer(dest, datagram, Code.ACCOUNTING_RESPONSE)
    c.receive_datagram(src, reply, 0.1)
    assert events(c) == [] and c.counters[counter] == 1
    assert c.get_timer() == 3.0  # still pending: a good answer is still taken
    if fault != "wrong-secret":
        c.receive_datagram(dest, answer(dest, datagram), 0.2)
        assert isinstance(events(c)[0], AccessAccepted)


def _reauth(reply: bytes, request_auth: bytes, secret: bytes) -> bytes:
    import hashlib
    return reply[:4] + hashlib.md5(reply[:4] + request_auth + reply[20:] + secret).digest() \
        + reply[20:]


def test_accounting_goes_to_port_1813_and_is_acknowledged() -> None:
    c = client()
    rid = c.account([(Attr.ACCT_STATUS_TYPE, AcctStatusType.START), (Attr.ACCT_SESSION_ID, "s1"),
                     (Attr.NAS_IDENTIFIER, "vpn"), (Attr.CLASS, b"c1")], 0.0)
    (dest, datagram), = c.datagrams_to_send()
    assert dest == ("10.0.0.1", 1813)
    request = Packet.decode(datagram, b"alpha")  # checks the RFC 2866 Request Authenticator
    assert request.attributes.get(Attr.CLASS) == b"c1"
    reply = Packet(Code.ACCOUNTING_RESPONSE, request.identifier).encode(b"alpha", datagram[4:20])
    c.receive_datagram(dest, reply, 0.1)  # FreeRADIUS sends none: not required on accounting
    assert events(c) == [AccountingAcknowledged(rid, Attributes(), dest)]


def test_requests_in_flight_get_distinct_identifiers() -> None:
    c = client()
    for _ in range(256):
        c.authenticate(PAP, 0.0)
    idents = {d[1] for _, d in c.datagrams_to_send()}
    assert len(idents) == 256
    with pytest.raises(LocalProtocolError):
        c.authenticate(PAP, 0.0)


@pytest.mark.parametrize("attrs", [
    [(Attr.USER_NAME, "bob"), (Attr.NAS_IDENTIFIER, "vpn")],
    [(Attr.USER_NAME, "bob"), (Attr.USER_PASSWORD, "pw")],
])
def test_access_request_missing_what_rfc2865_4_1_requires_is_our_error(attrs) -> None:
    with pytest.raises(LocalProtocolError):
        client().authenticate(attrs, 0.0)


@settings(max_examples=300)
@given(st.binary(max_size=120), st.booleans())
def test_any_datagram_is_counted_never_raised(data: bytes, keep_header: bool) -> None:
    c = client()
    c.authenticate(PAP, 0.0)
    (dest, datagram), = c.datagrams_to_send()
    if keep_header and len(data) >= 2:
        data = bytes([2, datagram[1]]) + data[2:]
    c.receive_datagram(dest, data, 0.1)
    assert events(c) == [] and sum(c.counters.values()) == 1


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["auth", "acct", "timer", "good", "bad", "dup"]),
                          st.floats(0, 5)), max_size=40))
def test_any_interleaving_ends_each_request_exactly_once(steps) -> None:
    """Hypothesis over (state, input): requests, timers, good, bad and duplicate replies in any
    order; nothing raises, each request ends in exactly one event, and then no timer is left."""
    c = client(timeout=1.0, retries=2)
    now, started, wire = 0.0, set(), []
    answered: list[tuple] = []
    for action, dt in steps:
        now += dt
        if action == "auth":
            started.add(c.authenticate(PAP, now))
        elif action == "acct":
            started.add(c.account([(Attr.ACCT_STATUS_TYPE, 1), (Attr.ACCT_SESSION_ID, "s")], now))
        elif action == "timer" and (t := c.get_timer()) is not None and t <= now:
            c.handle_timer(now)
        wire += c.datagrams_to_send()
        if action in ("good", "bad") and wire:
            dest, datagram = wire.pop(0)
            code = Code.ACCOUNTING_RESPONSE if datagram[0] == 4 else Code.ACCESS_ACCEPT
            reply = answer(dest, datagram, code)
            if action == "bad":
                reply = reply[:-1] + bytes([reply[-1] ^ 1])
            c.receive_datagram(dest, reply, now)
            answered.append((dest, reply))
        elif action == "dup" and answered:
            c.receive_datagram(*answered[0], now)
    while (t := c.get_timer()) is not None:
        c.handle_timer(t)
    ended = [e.request_id for e in events(c)]
    assert sorted(ended) == sorted(started)
