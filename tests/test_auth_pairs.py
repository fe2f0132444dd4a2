"""Authenticator and peer of every method paired in memory with a virtual clock.

`Link` moves information fields between the two `AuthExchange`s, advances a float clock to the
next deadline and can drop or rewrite packets; nothing sleeps and nothing touches a socket.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import count

import pytest

from tunnels.errors import LocalProtocolError
from tunnels.ppp.auth import (
    Account,
    AuthExchange,
    AuthMethod,
    Credentials,
    DialIn,
    LocalAccounts,
    WindowsError_,
    make_authenticator,
    make_peer,
)
from tunnels.ppp.auth import eap
from tunnels.ppp.auth.base import PPP_CHAP, PPP_EAP, PPP_PAP
from tunnels.ppp.auth.chap import ChapCode, ChapPacket, parse_failure
from tunnels.ppp.auth.eap import EapCode, EapPacket, EapType

ACCOUNTS = LocalAccounts({
    "alice": Account("correct horse"),
    "bob": Account("hunter2", DialIn.DENY),
})
ALL = list(AuthMethod)
MS = (AuthMethod.MSCHAP, AuthMethod.MSCHAPV2)


def counter_random() -> Callable[[int], bytes]:
    """Deterministic 'randomness' so failures reproduce."""
    c = count(1)
    return lambda n: bytes(next(c) & 0xFF for _ in range(n))


# (direction, packet) -> replacement packet, or None to drop it
Tamper = Callable[[str, bytes], "bytes | None"]


@dataclass
class Link:
    auth: AuthExchange
    peer: AuthExchange
    tamper: Tamper = lambda direction, packet: packet
    now: float = 0.0
    log: list[tuple[float, str, bytes]] = field(default_factory=list)

    def start(self) -> Link:
        self.auth.start(self.now)
        self.peer.start(self.now)
        return self

    def transfer(self) -> bool:
        moved = False
        for direction, src, dst in (("a>p", self.auth, self.peer), ("p>a", self.peer, self.auth)):
            for packet in src.packets_to_send():
                moved = True
                self.log.append((self.now, direction, packet))
                delivered = self.tamper(direction, packet)
                if delivered is not None:
                    dst.receive(delivered, self.now)
        return moved

    def run(self, until: float) -> Link:
        for _ in range(10_000):  # bounded: a livelock fails the test instead of hanging it
            while self.transfer():
                pass
            timers = [t for t in (self.auth.get_timer(), self.peer.get_timer()) if t is not None]
            if not timers or min(timers) > until:
                return self
            self.now = max(self.now, min(timers))
            self.auth.handle_timer(self.now)
            self.peer.handle_timer(self.now)
        raise AssertionError("exchange did not settle")

    def sent(self, direction: str) -> list[bytes]:
        return [p for _, d, p in self.log if d == direction]


def pair(method: AuthMethod, user: str = "alice", password: str = "correct horse",
         tamper: Tamper | None = None, **kw: float) -> Link:
    a = make_authenticator(method, ACCOUNTS, "vpnlab-rras", counter_random(), **kw)
    p = make_peer(method, user, password, counter_random())
    link = Link(a, p) if tamper is None else Link(a, p, tamper)
    return link.start()


def test_factories_cover_every_method_with_the_right_protocol():
    want = {AuthMethod.PAP: PPP_PAP, AuthMethod.CHAP: PPP_CHAP, AuthMethod.MSCHAP: PPP_CHAP,
            AuthMethod.MSCHAPV2: PPP_CHAP, AuthMethod.EAP_MD5: PPP_EAP}
    for method in ALL:
        assert make_authenticator(method, ACCOUNTS, "n").protocol == want[method]
        assert make_peer(method, "u", "p").protocol == want[method]


@pytest.mark.parametrize("method", ALL, ids=lambda m: m.value)
def test_success(method):
    link = pair(method).run(until=60)
    a, p = link.auth.outcome, link.peer.outcome
    assert a is not None and p is not None
    assert a.success and p.success, (a, p)
    assert a.username == "alice" and p.username == "alice"
    assert a.method is method and p.method is method
    if method in MS:
        assert a.mppe_material is not None and a.mppe_material == p.mppe_material
        assert a.mppe_material.version == (1 if method is AuthMethod.MSCHAP else 2)
    else:
        assert a.mppe_material is None and p.mppe_material is None
    assert link.auth.get_timer() is None and link.peer.get_timer() is None


@pytest.mark.parametrize("method", ALL, ids=lambda m: m.value)
@pytest.mark.parametrize("user, password, code", [
    ("alice", "wrong", WindowsError_.AUTHENTICATION_FAILURE),
    ("mallory", "correct horse", WindowsError_.AUTHENTICATION_FAILURE),
    ("bob", "hunter2", WindowsError_.NO_DIALIN_PERMISSION),
], ids=["wrong-password", "unknown-user", "dialin-denied"])
def test_failures_carry_windows_error_codes(method, user, password, code):
    link = pair(method, user, password).run(until=60)
    a, p = link.auth.outcome, link.peer.outcome
    assert a is not None and not a.success and a.error_code == code
    assert p is not None and not p.success
    assert a.mppe_material is None and p.mppe_material is None
    if method is AuthMethod.EAP_MD5:  # RFC 3748 §4.2: an EAP Failure carries no reason
        assert p.error_code == WindowsError_.AUTHENTICATION_FAILURE
    elif method is not AuthMethod.CHAP:  # CHAP-MD5's Failure text is free-form (RFC 1994 §4.4)
        assert p.error_code == code


def test_mschapv2_failure_message_format_and_parse():
    link = pair(AuthMethod.MSCHAPV2, "alice", "wrong").run(until=60)
    failure = ChapPacket.decode(link.sent("a>p")[-1])
    assert failure.code == ChapCode.FAILURE
    text = failure.name.decode()
    assert re.fullmatch(r"E=691 R=0 C=[0-9A-F]{32} V=3 M=.+", text), text
    assert parse_failure(failure.name) == (691, text.split("M=", 1)[1])
    assert link.peer.outcome.message == text.split("M=", 1)[1]


def test_mschapv1_failure_message_and_response_layout():
    link = pair(AuthMethod.MSCHAP, "bob", "hunter2").run(until=60)
    response = ChapPacket.decode(link.sent("p>a")[0])
    assert len(response.value) == 49 and response.value[:24] == bytes(24)  # LM zero
    assert response.value[48] == 1  # use the NT response (RFC 2433 §5)
    text = ChapPacket.decode(link.sent("a>p")[-1]).name.decode()
    assert re.fullmatch(r"E=649 R=0 V=2 M=.+", text), text


def test_mschapv2_success_carries_the_authenticator_response():
    link = pair(AuthMethod.MSCHAPV2).run(until=60)
    success = ChapPacket.decode(link.sent("a>p")[-1])
    assert success.code == ChapCode.SUCCESS
    assert re.fullmatch(rb"S=[0-9A-F]{40} M=.*", success.name)
    response = ChapPacket.decode(link.sent("p>a")[0])
    assert len(response.value) == 49 and response.value[16:24] == bytes(8)
    assert response.value[48] == 0  # flags (RFC 2759 §4)
    assert response.name == b"alice"


def test_peer_rejects_a_wrong_authenticator_response():
    """RFC 2759 §5: a server that cannot produce S= does not know the password."""

    def forge(direction: str, packet: bytes) -> bytes:
        chap = ChapPacket.decode(packet)
        if direction == "a>p" and chap.code == ChapCode.SUCCESS:
            s = chap.name[2:42]
            bad = bytes(s[:-1]) + (b"0" if s[-1:] != b"0" else b"1")
            forged = b"S=" + bad + chap.name[42:]
            return ChapPacket(chap.code, chap.identifier, b"", forged).encode()
        return packet

    link = pair(AuthMethod.MSCHAPV2, tamper=forge).run(until=60)
    assert link.auth.outcome.success  # the server believes it is done...
    p = link.peer.outcome
    assert p is not None and not p.success and "authenticator response" in p.message
    assert p.mppe_material is None  # ...but the client must not bring the link up


def test_peer_accepts_lower_case_hex_in_s():
    def lower(direction: str, packet: bytes) -> bytes:
        chap = ChapPacket.decode(packet)
        if direction == "a>p" and chap.code == ChapCode.SUCCESS:
            lowered = b"S=" + chap.name[2:42].lower() + chap.name[42:]
            return ChapPacket(chap.code, chap.identifier, b"", lowered).encode()
        return packet

    assert pair(AuthMethod.MSCHAPV2, tamper=lower).run(until=60).peer.outcome.success


def drop_first(direction_wanted: str) -> Tamper:
    state = {"dropped": False}

    def tamper(direction: str, packet: bytes) -> bytes | None:
        if direction == direction_wanted and not state["dropped"]:
            state["dropped"] = True
            return None
        return packet

    return tamper


@pytest.mark.parametrize("method", ALL, ids=lambda m: m.value)
def test_lost_first_packet_is_retransmitted_on_the_restart_timer(method):
    # PAP: the peer speaks first (RFC 1334 §2.2); the others: the authenticator's challenge.
    direction = "p>a" if method is AuthMethod.PAP else "a>p"
    link = pair(method, tamper=drop_first(direction)).run(until=60)
    assert link.auth.outcome.success and link.peer.outcome.success
    first, second = link.sent(direction)[:2]
    assert first == second  # same identifier, same challenge: a retransmission
    assert 3.0 <= link.now < 10


@pytest.mark.parametrize("method", [m for m in ALL if m is not AuthMethod.PAP],
                         ids=lambda m: m.value)
def test_silent_peer_gives_up_after_max_tries(method):
    link = pair(method, tamper=lambda d, p: None if d == "a>p" else p).run(until=1000)
    assert link.auth.outcome is not None and not link.auth.outcome.success
    requests = [p for p in link.sent("a>p") if p[0] == 1]  # Challenge / EAP Request
    assert len(requests) == 10 and link.auth.get_timer() is None


def test_pap_authenticator_times_out_without_a_request():
    link = pair(AuthMethod.PAP, tamper=lambda d, p: None if d == "p>a" else p).run(until=1000)
    assert not link.auth.outcome.success and not link.peer.outcome.success


def test_pap_repeated_request_gets_the_same_answer():
    """RFC 1334 §2.2: the Ack may be lost; the repeated request must be answered again."""
    link = pair(AuthMethod.PAP, tamper=drop_first("a>p")).run(until=60)
    acks = link.sent("a>p")
    assert len(acks) == 2 and acks[0] == acks[1]
    assert link.peer.outcome.success


@pytest.mark.parametrize("method", [AuthMethod.CHAP, AuthMethod.MSCHAP, AuthMethod.MSCHAPV2],
                         ids=lambda m: m.value)
def test_chap_rechallenge(method):
    """RFC 1994 §2: challenges may repeat during the Network phase; success stays success
    while the answers are right, and the first wrong one fails the link."""
    link = pair(method, rechallenge=120).run(until=1000)
    challenges = [ChapPacket.decode(p) for p in link.sent("a>p")
                  if ChapPacket.decode(p).code == ChapCode.CHALLENGE]
    assert len(challenges) == 9  # at 0, 120, ..., 960
    assert len({c.identifier for c in challenges}) == 9  # a new identifier each time
    assert len({c.value for c in challenges}) == 9  # and a fresh challenge value
    assert link.auth.outcome.success and link.peer.outcome.success
    link.peer.password = "changed"  # e.g. the account's password was reset meanwhile
    link.run(until=1200)
    assert not link.auth.outcome.success
    assert link.auth.outcome.error_code == WindowsError_.AUTHENTICATION_FAILURE
    assert link.auth.get_timer() is None  # no more challenges after a failure


def test_no_rechallenge_by_default():
    link = pair(AuthMethod.CHAP).run(until=10_000)
    assert len(link.sent("a>p")) == 2  # Challenge, Success


def test_stale_response_is_silently_discarded():
    link = pair(AuthMethod.CHAP).run(until=60)
    stale = ChapPacket.decode(link.sent("p>a")[0])
    link.auth.receive(ChapPacket(ChapCode.RESPONSE, (stale.identifier + 1) & 0xFF, stale.value,
                                 stale.name).encode(), link.now)
    assert link.auth.packets_to_send() == [] and link.auth.outcome.success


# -- EAP -----------------------------------------------------------------------------------

def test_eap_flow_is_identity_then_md5_then_success():
    link = pair(AuthMethod.EAP_MD5).run(until=60)
    flow = [(EapPacket.decode(p).code, EapPacket.decode(p).type)
            for _, _, p in sorted(link.log, key=lambda e: e[0])]
    assert flow == [(EapCode.REQUEST, EapType.IDENTITY), (EapCode.RESPONSE, EapType.IDENTITY),
                    (EapCode.REQUEST, EapType.MD5_CHALLENGE),
                    (EapCode.RESPONSE, EapType.MD5_CHALLENGE), (EapCode.SUCCESS, None)]


def test_eap_peer_naks_an_unknown_type_with_the_types_it_knows():
    peer = make_peer(AuthMethod.EAP_MD5, "alice", "pw")
    peer.receive(EapPacket(EapCode.REQUEST, 7, 13, b"\x20").encode(), 0.0)  # EAP-TLS start
    (nak,) = map(EapPacket.decode, peer.packets_to_send())
    assert (nak.code, nak.identifier, nak.type) == (EapCode.RESPONSE, 7, EapType.NAK)
    assert EapType.MD5_CHALLENGE in nak.data


def test_eap_authenticator_fails_on_nak():
    link = pair(AuthMethod.EAP_MD5)

    def nak_md5(direction: str, packet: bytes) -> bytes:
        p = EapPacket.decode(packet)
        if direction == "p>a" and p.type == EapType.MD5_CHALLENGE:
            return EapPacket(EapCode.RESPONSE, p.identifier, EapType.NAK, b"\x0d").encode()
        return packet

    link.tamper = nak_md5
    link.run(until=60)
    assert not link.auth.outcome.success and not link.peer.outcome.success


def test_eap_notification_is_acknowledged():
    peer = make_peer(AuthMethod.EAP_MD5, "alice", "pw")
    peer.receive(EapPacket(EapCode.REQUEST, 3, EapType.NOTIFICATION, b"hello").encode(), 0.0)
    (answer,) = map(EapPacket.decode, peer.packets_to_send())
    assert (answer.code, answer.identifier, answer.type) == (EapCode.RESPONSE, 3,
                                                              EapType.NOTIFICATION)


class ToyGTC:
    """A stand-in second EAP method (type 6, GTC-like) proving the plug-in interface."""

    type = 6

    def request(self, random):
        return b"Password: "

    def credentials(self, identity, identifier, request, response):
        # a generic token card: the response is the password, checked as PAP's is
        return Credentials(AuthMethod.PAP, identity, identifier, password=response)

    def answer(self, identifier, request, username, password):
        return password.encode()


def test_eap_methods_plug_in(monkeypatch):
    monkeypatch.setitem(eap.METHODS, ToyGTC.type, ToyGTC())
    a = eap.EapAuthenticator(ACCOUNTS, counter_random(), method=ToyGTC.type)
    link = Link(a, make_peer(AuthMethod.EAP_MD5, "alice", "correct horse")).start().run(60)
    assert link.auth.outcome.success and link.peer.outcome.success
    assert EapPacket.decode(link.sent("p>a")[1]).type == ToyGTC.type


def test_unknown_method_is_a_local_error():
    class Fake:
        value = "nope"

    with pytest.raises(LocalProtocolError):
        make_authenticator(Fake(), ACCOUNTS, "n")  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        make_peer(Fake(), "u", "p")  # type: ignore[arg-type]


def test_eap_nak_moves_to_the_next_method_the_peer_asks_for(monkeypatch):
    monkeypatch.setitem(eap.METHODS, ToyGTC.type, ToyGTC())
    a = eap.EapAuthenticator(ACCOUNTS, counter_random(),
                             method=(ToyGTC.type, EapType.MD5_CHALLENGE))

    def peer_without_gtc(direction: str, packet: bytes) -> bytes:
        p = EapPacket.decode(packet)
        if direction == "p>a" and p.type == ToyGTC.type:  # as if the peer lacked type 6
            return EapPacket(EapCode.RESPONSE, p.identifier, EapType.NAK,
                             bytes([EapType.MD5_CHALLENGE])).encode()
        return packet

    link = Link(a, make_peer(AuthMethod.EAP_MD5, "alice", "correct horse"), peer_without_gtc)
    link.start().run(60)
    assert link.auth.outcome.success and link.peer.outcome.success
    types = [EapPacket.decode(p).type for p in link.sent("a>p")]
    assert types == [EapType.IDENTITY, ToyGTC.type, EapType.MD5_CHALLENGE, None]


@pytest.mark.parametrize("method", [AuthMethod.CHAP, AuthMethod.MSCHAP, AuthMethod.MSCHAPV2],
                         ids=lambda m: m.value)
def test_domain_prefixed_user_name(method):
    """Windows sends "DOMAIN\\user"; the local account is "user" (RFC 2759 §8.2 hashes the
    bare name, so the NT-Response still checks)."""
    link = pair(method, "CORP\\alice").run(until=60)
    assert link.auth.outcome.success and link.peer.outcome.success
    assert link.auth.outcome.username == "CORP\\alice"


@pytest.mark.parametrize("method", [m for m in ALL if m is not AuthMethod.PAP and
                                    m is not AuthMethod.EAP_MD5], ids=lambda m: m.value)
def test_repeated_challenge_before_the_answer_gets_the_same_response(method):
    """A slow server's restart timer repeats the challenge while the first response is in
    flight: the peer answers the same (a fresh MS-CHAP v2 peer challenge would make the
    Success for the first response fail the authenticator-response check; seen under load
    with `vpnlab load`)."""
    a = make_authenticator(method, ACCOUNTS, "vpnlab-rras", counter_random())
    p = make_peer(method, "alice", "correct horse", counter_random())
    a.start(0.0)
    challenge = a.packets_to_send()
    p.receive(challenge[0], 0.0)
    first = p.packets_to_send()
    a.handle_timer(a.get_timer())  # no response arrived in time: the same challenge again
    again = a.packets_to_send()
    assert again == challenge
    p.receive(again[0], 3.0)
    assert p.packets_to_send() == first
    a.receive(first[0], 3.1)
    for packet in a.packets_to_send():
        p.receive(packet, 3.1)
    assert a.outcome.success and p.outcome.success
