"""Two PPP engines over an in-memory pipe with a virtual clock: LCP, auth, IPCP, data."""

from __future__ import annotations

import itertools
import random as _random

import pytest

from tunnels.ppp import events as ev
from tunnels.ppp.auth.base import Account, AuthMethod, DialIn, LocalAccounts
from tunnels.ppp.config import PPPConfig
from tunnels.ppp.engine import PPPEngine, build_frame
from tunnels.ppp.fsm import State

USERS = LocalAccounts({"alice": Account("s3cret"), "bob": Account("pw", DialIn.DENY)})


def rng(seed: int):
    r = _random.Random(seed)
    return lambda n: bytes(r.getrandbits(8) for _ in range(n))


def server(methods=(AuthMethod.MSCHAPV2,), **kw) -> PPPEngine:
    cfg = PPPConfig(True, methods, verifier=USERS, local_address="10.10.100.1",
                    peer_address="10.10.100.2", dns=("10.10.0.53",), nbns=("10.10.0.54",), **kw)
    return PPPEngine(cfg, random=rng(1))


def client(methods=(AuthMethod.MSCHAPV2,), user="alice", password="s3cret", **kw) -> PPPEngine:
    return PPPEngine(PPPConfig(False, methods, username=user, password=password, **kw),
                     random=rng(2))


class Pair:
    """Two engines, a pipe between them, a float clock; `drop` filters frames."""

    def __init__(self, a: PPPEngine, b: PPPEngine):
        self.a, self.b, self.now = a, b, 0.0
        self.events = {"a": [], "b": []}
        self.drop = lambda side, frame: False

    def run(self, until: float = 60.0) -> None:
        for _ in range(10_000):
            moved = False
            for side, src, dst in (("a", self.a, self.b), ("b", self.b, self.a)):
                for frame in src.frames_to_send():
                    moved = True
                    if not self.drop(side, frame):
                        dst.receive_frame(frame, self.now)
            for side, eng in (("a", self.a), ("b", self.b)):
                while (e := eng.next_event()) is not None:
                    self.events[side].append(e)
            if moved:
                continue
            timers = [t for t in (self.a.get_timer(), self.b.get_timer()) if t is not None]
            if not timers or min(timers) > until:
                return
            self.now = max(self.now, min(timers))
            self.a.handle_timer(self.now)
            self.b.handle_timer(self.now)
        raise AssertionError("no quiescence")

    def of(self, side: str, kind: type) -> list:
        return [e for e in self.events[side] if isinstance(e, kind)]


def connect(s: PPPEngine, c: PPPEngine, until: float = 5.0) -> Pair:
    pair = Pair(s, c)
    s.open(0.0)
    c.open(0.0)
    pair.run(until)
    return pair


@pytest.mark.parametrize("method", list(AuthMethod), ids=lambda m: m.value)
def test_link_comes_up_and_carries_datagrams(method):
    s, c = server((method,)), client((method,))
    pair = connect(s, c)
    assert pair.of("a", ev.Authenticated) == [ev.Authenticated("alice", method.value)]
    opened = pair.of("b", ev.NetworkOpened)
    assert opened == [ev.NetworkOpened("10.10.100.2", "10.10.100.1", ("10.10.0.53",),
                                       ("10.10.0.54",))]
    assert s.ipcp.state is State.OPENED and c.ipcp.state is State.OPENED
    ip = bytes.fromhex("4500001c000000004001") + b"\0" * 18
    assert c.send_datagram(ip, pair.now)
    pair.run(pair.now + 1)
    assert pair.of("a", ev.DatagramReceived) == [ev.DatagramReceived(ip)]


def test_server_moves_to_a_method_the_client_naks_for():
    s = server((AuthMethod.MSCHAPV2, AuthMethod.CHAP))
    c = client((AuthMethod.CHAP,))
    pair = connect(s, c)
    assert pair.of("a", ev.Authenticated) == [ev.Authenticated("alice", "chap")]


def test_no_common_method_terminates_with_a_reason():
    s, c = server((AuthMethod.MSCHAPV2,)), client((AuthMethod.PAP,))
    pair = connect(s, c, until=60)
    reasons = [e.reason for e in pair.of("a", ev.LinkTerminated)]
    assert reasons and "no authentication method" in reasons[0]


@pytest.mark.parametrize("method", [AuthMethod.PAP, AuthMethod.CHAP, AuthMethod.MSCHAPV2,
                                    AuthMethod.EAP_MD5], ids=lambda m: m.value)
def test_wrong_password_fails_with_691(method):
    s, c = server((method,)), client((method,), password="wrong")
    pair = connect(s, c, until=30)
    failed = pair.of("b", ev.AuthenticationFailed)
    assert failed and (method is AuthMethod.CHAP or failed[0].error_code == 691)
    assert pair.of("a", ev.LinkTerminated) and pair.of("b", ev.LinkTerminated)
    assert not pair.of("b", ev.NetworkOpened)


def test_no_dialin_permission_is_649():
    s, c = server(), client(user="bob", password="pw")
    pair = connect(s, c, until=30)
    assert pair.of("b", ev.AuthenticationFailed)[0].error_code == 649


def test_peer_rejects_a_server_that_does_not_know_the_password():
    """MS-CHAP v2 is mutual: a forged Success (wrong S=) must fail the client."""
    s, c = server(), client()
    pair = Pair(s, c)

    def forge(side, frame):
        if side == "a" and frame[2:4] == b"\xc2\x23" and frame[4] == 3:
            c.receive_frame(frame[:8] + b"S=" + b"0" * 40 + frame[50:], pair.now)
            return True
        return False

    pair.drop = forge
    s.open(0)
    c.open(0)
    pair.run(30)
    failed = pair.of("b", ev.AuthenticationFailed)
    assert failed and "authenticator response" in failed[0].message


def test_lost_configure_request_recovered_by_restart_timer():
    s, c = server(), client()
    pair = Pair(s, c)
    first = {"dropped": False}

    def drop_first(side, frame):
        if not first["dropped"] and frame[2:4] == b"\xc0\x21":
            first["dropped"] = True
            return True
        return False

    pair.drop = drop_first
    s.open(0)
    c.open(0)
    pair.run(10)
    assert pair.of("b", ev.NetworkOpened) and pair.now >= 3.0  # one restart interval


def test_echo_timeout_terminates_both_reporting_why():
    s, c = server(echo_interval=5, echo_failures=2), client(echo_interval=5, echo_failures=2)
    pair = connect(s, c)
    pair.drop = lambda side, frame: True  # the path is cut
    pair.run(60)
    for side in "ab":
        reasons = [e.reason for e in pair.of(side, ev.LinkTerminated)]
        assert reasons and "LCP Echo-Request" in reasons[0]


def test_unknown_protocols_get_protocol_reject_and_link_stays_up():
    s, c = server(), client()
    pair = connect(s, c)
    for proto in (0x802B, 0x803F, 0x8057):  # IPXCP, NBFCP, IPV6CP from a Windows client
        s.receive_frame(build_frame(proto, b"\x01\x01\x00\x04"), pair.now)
        out = s.frames_to_send()
        assert out[0][2:4] == b"\xc0\x21" and out[0][4] == 8  # LCP Protocol-Reject
        assert out[0][8:10] == proto.to_bytes(2, "big")
    assert s.lcp.state is State.OPENED and s.counters["protocol_rejects_sent"] == 3


def test_unknown_lcp_code_gets_code_reject():
    s, c = server(), client()
    pair = connect(s, c)
    s.receive_frame(build_frame(0xC021, b"\x63\x07\x00\x04"), pair.now)
    out = s.frames_to_send()
    assert out[0][4] == 7 and out[0][8:12] == b"\x63\x07\x00\x04"


def test_callback_option_is_rejected_like_a_windows_server_does():
    s = server()
    s.open(0)
    s.frames_to_send()
    request = bytes.fromhex("0101000d") + bytes.fromhex("0506deadbeef") + bytes.fromhex("0d0306")
    s.receive_frame(build_frame(0xC021, request), 0)
    reject = s.frames_to_send()[0]
    assert reject[4] == 4 and reject[8:] == bytes.fromhex("0d0306")


def test_close_sends_terminate_and_both_report():
    s, c = server(), client()
    pair = connect(s, c)
    c.close(pair.now, "user hung up")
    pair.run(pair.now + 10)
    assert [e.reason for e in pair.of("b", ev.LinkTerminated)] == ["user hung up"]
    assert "Terminate-Request" in pair.of("a", ev.LinkTerminated)[0].reason


def test_any_bytes_never_raise():
    s, c = server(), client()
    pair = connect(s, c)
    r = _random.Random(7)
    for n in itertools.chain(range(12), [40, 200]):
        for _ in range(200):
            s.receive_frame(bytes(r.getrandbits(8) for _ in range(n)), pair.now)
            s.frames_to_send()
    assert s.counters["discarded"] > 0
