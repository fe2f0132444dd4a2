"""A verifier that answers later (RADIUS) and what a verdict authorizes: the address, the
encryption allowed, session and idle timeouts, MPPE keys given by the verifier."""

from __future__ import annotations

import pytest

from tests.test_ppp_engine import USERS, client, connect, rng
from tunnels.mppe.keys import derive_start_keys
from tunnels.ppp import events as ev
from tunnels.ppp.auth.base import Authorization, AuthMethod, Credentials, Verdict
from tunnels.ppp.config import EncryptionLevel, PPPConfig
from tunnels.ppp.engine import PPPEngine
from tunnels.ppp.fsm import State

IP = bytes.fromhex("4500001c0001000040010000" "0a0a6402" "0a0a0035") + bytes(8)


class Deferred:
    """Keeps the credentials; the test answers when it likes, as a RADIUS round trip would."""

    def __init__(self, then=USERS.verify):
        self.asked: list[Credentials] = []
        self.then = then

    def verify(self, credentials: Credentials):
        self.asked.append(credentials)
        return None

    def answer(self, engine: PPPEngine, now: float, **change) -> None:
        verdict = self.then(self.asked[-1])
        fields = {f: getattr(verdict, f) for f in verdict.__slots__}
        engine.complete_authentication(Verdict(**{**fields, **change}), now)


class Granting:
    """Local verification plus a fixed authorization (what a policy profile would set)."""

    def __init__(self, authorization: Authorization):
        self.authorization = authorization

    def verify(self, credentials: Credentials) -> Verdict:
        v = USERS.verify(credentials)
        return Verdict(v.success, v.error_code, v.message, v.authenticator_response,
                       v.mppe_material, v.mppe_keys, self.authorization)


def server(verifier, methods=(AuthMethod.MSCHAPV2,), **kw) -> PPPEngine:
    cfg = PPPConfig(True, methods, verifier=verifier, local_address="10.10.100.1",
                    peer_address="10.10.100.2", **kw)
    return PPPEngine(cfg, random=rng(1))


@pytest.mark.parametrize("method", list(AuthMethod), ids=lambda m: m.value)
def test_a_later_verdict_completes_the_link(method):
    verifier = Deferred()
    s, c = server(verifier, (method,)), client((method,))
    pair = connect(s, c)
    assert s.phase.value == "authenticate" and len(verifier.asked) == 1
    assert verifier.asked[0].method is method and verifier.asked[0].username == "alice"
    assert s.frames_to_send() == []  # nothing answers the peer before the verifier does
    verifier.answer(s, pair.now)
    pair.run(pair.now + 5)
    assert s.ipcp.state is State.OPENED and c.ipcp.state is State.OPENED
    assert pair.of("b", ev.Authenticated)  # the MS-CHAP v2 client checked the server's S=


def test_a_refusal_from_the_verifier_reaches_the_peer_with_its_code():
    verifier = Deferred()
    s, c = server(verifier), client()
    pair = connect(s, c)
    verifier.answer(s, pair.now, success=False, error_code=649, message="denied by policy P")
    pair.run(pair.now + 10)
    failed = pair.of("b", ev.AuthenticationFailed)
    assert failed and failed[0].error_code == 649 and "denied by policy P" in failed[0].message
    assert s.phase.value == "dead"


def test_a_verdict_for_a_link_no_longer_waiting_is_counted_not_applied():
    verifier = Deferred()
    s, c = server(verifier), client()
    pair = connect(s, c)
    s.close(pair.now, "gone")
    pair.run(pair.now + 10)
    verifier.answer(s, pair.now)
    assert s.counters["late_verdicts"] == 1 and s.phase.value == "dead"


def test_the_verifier_can_assign_the_address():
    s, c = server(Granting(Authorization(peer_address="10.10.100.77"))), client()
    connect(s, c)
    assert c.ipcp_policy.local is not None and str(c.ipcp_policy.local) == "10.10.100.77"


@pytest.mark.parametrize("levels,bits", [(("basic",), 40), (("strong",), 56),
                                         (("strongest",), 128), (("basic", "strongest"), 128),
                                         (("none",), None)])
def test_the_profile_decides_the_encryption(levels, bits):
    s = server(Granting(Authorization(encryption=levels)),
               encryption=EncryptionLevel.STRONGEST)
    c = client(encryption=EncryptionLevel.OPTIONAL)
    connect(s, c)
    assert c.ipcp.state is State.OPENED
    assert (s.encryptor.key_bits if s.encryptor else None) == bits


def test_mppe_keys_given_by_the_verifier_are_the_ones_used():
    """RADIUS gives MS-MPPE-Send/Recv-Key; a key that differs from the password's makes the
    client's decryption fail, the right one carries the datagram."""
    verifier = Deferred()
    s = server(verifier, encryption=EncryptionLevel.STRONGEST)
    c = client(encryption=EncryptionLevel.STRONGEST)
    pair = connect(s, c)
    v = USERS.verify(verifier.asked[-1])
    keys = derive_start_keys(v.mppe_material, 128, is_server=True)
    verifier.answer(s, pair.now, mppe_material=None, mppe_keys=keys)
    pair.run(pair.now + 5)
    assert s.send_datagram(IP, pair.now)
    pair.run(pair.now + 1)
    assert [e.packet for e in pair.of("b", ev.DatagramReceived)] == [IP]


def test_session_timeout_closes_the_link():
    s, c = server(Granting(Authorization(session_timeout=30))), client()
    pair = connect(s, c)
    assert s.ipcp.state is State.OPENED
    pair.run(29)
    assert s.ipcp.state is State.OPENED
    pair.run(40)
    assert s.phase.value == "dead" and "session timeout" in s.reason


def test_idle_timeout_spares_a_busy_link_and_closes_an_idle_one():
    s, c = server(Granting(Authorization(idle_timeout=20)),
                  echo_interval=5.0), client(echo_interval=5.0)
    pair = connect(s, c)
    for t in range(5, 60, 5):  # a datagram every 5 s: never idle (LCP echoes do not count)
        pair.run(float(t))
        assert c.send_datagram(IP, pair.now)
    assert s.ipcp.state is State.OPENED
    pair.run(pair.now + 19)
    assert s.ipcp.state is State.OPENED
    pair.run(pair.now + 10)
    assert s.phase.value == "dead" and "idle timeout" in s.reason


def test_pap_and_eap_also_wait_for_a_later_verdict():
    for method in (AuthMethod.PAP, AuthMethod.EAP_MD5):
        verifier = Deferred()
        s, c = server(verifier, (method,)), client((method,))
        pair = connect(s, c)
        assert verifier.asked and s.phase.value == "authenticate"
        assert s.frames_to_send() == []
        verifier.answer(s, pair.now)
        pair.run(pair.now + 5)
        assert c.ipcp.state is State.OPENED


@pytest.mark.parametrize("method", list(AuthMethod), ids=lambda m: m.value)
def test_a_long_refusal_reason_still_reaches_the_peer(method):
    """PAP's message has a one-octet length (RFC 1334 §2.2.2): a policy's long reason is cut,
    never an exception in the authenticator."""
    verifier = Deferred()
    s, c = server(verifier, (method,)), client((method,))
    pair = connect(s, c)
    verifier.answer(s, pair.now, success=False, error_code=649, message="policy " * 80)
    pair.run(pair.now + 10)
    failed = pair.of("b", ev.AuthenticationFailed)
    assert failed and s.phase.value == "dead"
    if method is not AuthMethod.EAP_MD5:  # EAP Failure carries no code (RFC 3748 §4.2)
        assert failed[0].error_code == 649
