"""EAP relayed to RADIUS (RFC 3579) without a network: the server's EAP authenticator passing
the peer's Responses and the verifier's Requests through (byte for byte, Identifiers matched,
the last Request retransmitted as it was), `access.py`'s Access-Request (EAP-Message split at
253 octets, State echoed, no CHAP-Password) and its mapping of Access-Challenge/Accept/Reject,
malformed and oversized EAP-Messages refused by name, the admission passing challenges
through, and `[authentication] eap`."""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Callable

import pytest

from tunnels.addresses import StaticPool
from tunnels.admission import Admission, Call
from tunnels.config.fields import ConfigError
from tunnels.config.server import ServerConfig
from tunnels.policy import DEFAULT_POLICIES
from tunnels.ppp.auth.base import (
    AuthMethod,
    Credentials,
    LocalAccounts,
    Verdict,
    relays_eap,
)
from tunnels.ppp.auth.eap import (
    RELAY_MAX,
    EapAuthenticator,
    EapCode,
    EapPacket,
    EapPeer,
    EapType,
)
from tunnels.radius.access import CHALLENGED, access_request, verdict_from
from tunnels.radius.attributes import Attr
from tunnels.radius.client import RadiusClient
from tunnels.radius.msvsa import MS
from tunnels.radius.packet import Code, Packet
from tests.test_radius_access import NAS, PASSWORD, SECRET, SERVER, USER, counter_random, reply

class Md5Server:
    """The RADIUS server's side of EAP-MD5 (what FreeRADIUS's eap module does), in terms of
    EAP packets: Identity -> MD5 Request + State; MD5 Response -> Success or Failure."""

    def __init__(self, password: str = PASSWORD):
        self.password = password
        self.challenge = bytes(range(0x30, 0x40))
        self.state = b"state-1-" + bytes(8)
        self.seen: list[tuple[bytes, bytes]] = []  # (EAP packet, State) as received
        self.sent: list[bytes] = []

    def answer(self, eap: bytes, state: bytes) -> tuple[Code, bytes, bytes]:
        """(RADIUS code, EAP packet, State) for one relayed Response."""
        self.seen.append((eap, state))
        packet = EapPacket.decode(eap)
        if packet.type == EapType.IDENTITY:
            out = EapPacket(EapCode.REQUEST, (packet.identifier + 1) & 0xFF,
                            EapType.MD5_CHALLENGE, bytes((16,)) + self.challenge).encode()
            self.sent.append(out)
            return Code.ACCESS_CHALLENGE, out, self.state
        assert state == self.state, "State not echoed"
        want = hashlib.md5(bytes((packet.identifier,)) + self.password.encode()
                           + self.challenge).digest()
        ok = packet.data[0] == 16 and packet.data[1:17] == want
        out = EapPacket(EapCode.SUCCESS if ok else EapCode.FAILURE, packet.identifier).encode()
        self.sent.append(out)
        return (Code.ACCESS_ACCEPT if ok else Code.ACCESS_REJECT), out, b""


class RelayVerifier:
    """A verifier that relays EAP to an in-memory server: at once (`later=False`) or through
    `pending` (the runtime's later answer)."""

    relays_eap = True

    def __init__(self, server: Md5Server, later: bool = False):
        self.server, self.later = server, later
        self.asked: list[Credentials] = []
        self.pending: list[Verdict] = []

    def verify(self, credentials: Credentials) -> Verdict | None:
        self.asked.append(credentials)
        code, eap, state = self.server.answer(credentials.eap_message, credentials.state)
        verdict = (Verdict.challenged(eap, state) if code is Code.ACCESS_CHALLENGE else
                   Verdict(True, eap_message=eap) if code is Code.ACCESS_ACCEPT else
                   Verdict(False, 691, "RADIUS Access-Reject", eap_message=eap))
        if self.later:
            self.pending.append(verdict)
            return None
        return verdict


def run(auth: EapAuthenticator, peer: EapPeer, verifier: RelayVerifier | None = None,
        drop: Callable[[bytes], bool] = lambda info: False, rounds: int = 20,
        ) -> list[tuple[str, bytes]]:
    """The two over an in-memory link (bounded); returns every packet as (sender, octets)."""
    wire: list[tuple[str, bytes]] = []
    now = 0.0
    auth.start(now)
    for _ in range(rounds):
        moved = False
        for info in auth.packets_to_send():
            wire.append(("server", info))
            moved = True
            if not drop(info):
                peer.receive(info, now)
        for info in peer.packets_to_send():
            wire.append(("peer", info))
            moved = True
            auth.receive(info, now)
        if verifier is not None and verifier.pending:
            auth.conclude(verifier.pending.pop(0), now)
            moved = True
        if auth.outcome is not None and peer.outcome is not None:
            break
        if not moved:
            now = auth.get_timer() or now
            auth.handle_timer(now)
    return wire


@pytest.mark.parametrize("later", [False, True], ids=["at-once", "later"])
def test_the_conversation_is_relayed_byte_for_byte(later):
    server = Md5Server()
    verifier = RelayVerifier(server, later)
    auth, peer = EapAuthenticator(verifier, counter_random()), EapPeer(USER, PASSWORD)
    wire = run(auth, peer, verifier)
    assert auth.outcome is not None and auth.outcome.success, auth.outcome
    assert peer.outcome is not None and peer.outcome.success
    assert auth.outcome.username == USER and auth.outcome.method is AuthMethod.EAP_MD5
    peer_sent = [info for who, info in wire if who == "peer"]
    server_sent = [info for who, info in wire if who == "server"]
    # every Response went to the verifier as it was sent, the first without State
    assert [c.eap_message for c in verifier.asked] == peer_sent
    assert [c.state for c in verifier.asked] == [b"", server.state]
    assert all(c.username == USER for c in verifier.asked)
    # the verifier's Request and Success reached the peer unchanged, after our Identity
    assert server_sent[0] == EapPacket(EapCode.REQUEST, server_sent[0][1],
                                       EapType.IDENTITY).encode()
    assert server_sent[1:] == server.sent
    # RFC 3748 §4.1: each Response carries the Identifier of the Request it answers
    assert [p[1] for p in peer_sent] == [p[1] for p in server_sent[:2]]


def test_a_wrong_password_gets_the_servers_failure_and_691():
    server = Md5Server(password="other")
    auth, peer = EapAuthenticator(RelayVerifier(server), counter_random()), EapPeer(USER,
                                                                                     PASSWORD)
    wire = run(auth, peer)
    assert auth.outcome is not None and not auth.outcome.success
    assert auth.outcome.error_code == 691
    assert wire[-1] == ("server", server.sent[-1]) and server.sent[-1][0] == EapCode.FAILURE
    assert peer.outcome is not None and peer.outcome.error_code == 691


def test_the_relayed_request_is_retransmitted_as_it_was():
    server = Md5Server()
    dropped: list[bytes] = []

    def drop_first_md5(info: bytes) -> bool:
        if info[0] == EapCode.REQUEST and info[4] == EapType.MD5_CHALLENGE and not dropped:
            dropped.append(info)
            return True
        return False

    auth, peer = EapAuthenticator(RelayVerifier(server), counter_random()), EapPeer(USER,
                                                                                     PASSWORD)
    wire = run(auth, peer, drop=drop_first_md5)
    assert auth.outcome is not None and auth.outcome.success
    requests = [info for who, info in wire if who == "server" and info[4:5] == b"\x04"]
    assert requests == [server.sent[0], server.sent[0]]  # the same octets, twice


def test_a_response_with_another_identifier_is_not_relayed():
    server = Md5Server()
    verifier = RelayVerifier(server)
    auth = EapAuthenticator(verifier, counter_random())
    auth.start(0.0)
    [identity_request] = auth.packets_to_send()
    ident = identity_request[1]
    auth.receive(EapPacket(EapCode.RESPONSE, ident, EapType.IDENTITY, b"bob").encode(), 0.0)
    [md5_request] = auth.packets_to_send()
    assert md5_request == server.sent[0]
    stale = EapPacket(EapCode.RESPONSE, ident, EapType.MD5_CHALLENGE, bytes(17)).encode()
    auth.receive(stale, 0.1)  # answers the Identity Request, not the outstanding one
    assert len(verifier.asked) == 1 and auth.outcome is None


@pytest.mark.parametrize("raw,why", [
    (b"\x01\x05\x00\x09\x04", "an EAP Length of 9 in 5 octets"),
    (b"\x01\x05\x00\x05\x04xx", "an EAP Length of 5 in 7 octets"),
    (EapPacket(EapCode.SUCCESS, 5).encode(), "EAP code 3 (expected REQUEST)"),
    (b"\x07\x05\x00\x04", "EAP code 7"),
    (b"\x01\x05\x00\x04", "an EAP Request without a Type"),
    (EapPacket(EapCode.REQUEST, 5, 4, bytes(RELAY_MAX)).encode(),
     "1405 octets, more than the 1400 we relay"),
])
def test_a_challenge_that_cannot_be_relayed_ends_in_failure(raw, why):
    auth = EapAuthenticator(RelayVerifier(Md5Server(), later=True), counter_random())
    auth.start(0.0)
    ident = auth.packets_to_send()[0][1]
    auth.receive(EapPacket(EapCode.RESPONSE, ident, EapType.IDENTITY, b"bob").encode(), 0.0)
    auth.conclude(Verdict.challenged(raw, b"s"), 0.1)
    assert auth.outcome is not None and not auth.outcome.success
    assert why in auth.outcome.message and auth.outcome.error_code == 691
    assert auth.packets_to_send() == [EapPacket(EapCode.FAILURE, ident).encode()]


def test_a_final_verdict_without_eap_gets_one_built_with_the_responses_identifier():
    auth = EapAuthenticator(RelayVerifier(Md5Server(), later=True), counter_random())
    auth.start(0.0)
    ident = auth.packets_to_send()[0][1]
    auth.receive(EapPacket(EapCode.RESPONSE, ident, EapType.IDENTITY, b"bob").encode(), 0.0)
    # a Success of another Identifier is not relayed either (RFC 3748 §4.2)
    auth.conclude(Verdict(True, eap_message=EapPacket(EapCode.SUCCESS, ident ^ 1).encode()),
                  0.1)
    assert auth.packets_to_send() == [EapPacket(EapCode.SUCCESS, ident).encode()]
    assert auth.outcome is not None and auth.outcome.success


def test_the_local_store_still_runs_eap_md5_itself():
    from tunnels.ppp.auth.base import Account

    store = LocalAccounts({USER: Account(PASSWORD)})
    assert not relays_eap(store)
    auth, peer = EapAuthenticator(store, counter_random()), EapPeer(USER, PASSWORD)
    wire = run(auth, peer)
    assert auth.outcome is not None and auth.outcome.success
    md5 = [info for who, info in wire if who == "server" and info[4:5] == b"\x04"]
    assert md5 and md5[0].endswith(b"vpnlab")  # our own Request, our name in it


# access.py: the Access-Request ------------------------------------------------------------

def sent(creds: Credentials) -> tuple[RadiusClient, bytes, Packet]:
    client = RadiusClient([(*SERVER, SECRET)], random=counter_random())
    client.authenticate(access_request(creds, NAS), 0.0)
    [(dest, datagram)] = client.datagrams_to_send()
    return client, datagram, Packet.decode(datagram, SECRET)


def eap_credentials(eap: bytes, state: bytes = b"") -> Credentials:
    return Credentials(AuthMethod.EAP_MD5, USER, eap[1], eap_message=eap, state=state)


def test_the_access_request_splits_eap_message_at_253_and_echoes_state():
    big = EapPacket(EapCode.RESPONSE, 9, 254, bytes(range(256)) * 2 + b"tail").encode()
    _, datagram, request = sent(eap_credentials(big, b"the-state"))
    parts = request.attributes.get_all(Attr.EAP_MESSAGE)
    assert [len(p) for p in parts] == [253, 253, len(big) - 506]
    assert b"".join(parts) == big
    assert request.attributes.get(Attr.STATE) == b"the-state"
    assert request.attributes.get(Attr.USER_NAME) == USER
    assert request.attributes.get(Attr.FRAMED_MTU) == RELAY_MAX
    assert request.attributes.get(Attr.NAS_PORT_TYPE) is not None
    assert Attr.CHAP_PASSWORD not in request.attributes
    assert Attr.USER_PASSWORD not in request.attributes
    assert request.has_message_authenticator  # verified by decode
    # the EAP-Messages are consecutive (RFC 3579 §3.1: in order)
    types = [t for t, _ in request.attributes]
    first = types.index(Attr.EAP_MESSAGE)
    assert types[first:first + 3] == [Attr.EAP_MESSAGE] * 3
    # scapy reads the same packet
    from scapy.layers.radius import Radius

    pkt = Radius(datagram)
    assert b"".join(bytes(a.value) for a in pkt.attributes if a.type == 79) == big


def test_the_first_request_has_no_state():
    identity = EapPacket(EapCode.RESPONSE, 3, EapType.IDENTITY, b"bob").encode()
    _, _, request = sent(eap_credentials(identity))
    assert Attr.STATE not in request.attributes
    assert request.attributes.get_all(Attr.EAP_MESSAGE) == [identity]


def test_md5_as_chap_credentials_still_go_as_chap_password():
    creds = Credentials(AuthMethod.EAP_MD5, USER, 5, bytes(16), bytes(16))
    _, _, request = sent(creds)
    assert Attr.CHAP_PASSWORD in request.attributes
    assert Attr.EAP_MESSAGE not in request.attributes


# access.py: the replies -------------------------------------------------------------------

def split(eap: bytes) -> list[tuple[Attr, bytes]]:
    return [(Attr.EAP_MESSAGE, eap[i:i + 253]) for i in range(0, len(eap), 253)]


IDENTITY = EapPacket(EapCode.RESPONSE, 3, EapType.IDENTITY, b"bob").encode()
MD5_REQUEST = EapPacket(EapCode.REQUEST, 4, EapType.MD5_CHALLENGE, b"\x10" + bytes(16)).encode()


def test_challenge_accept_and_reject_map_to_challenge_success_and_refusal():
    creds = eap_credentials(IDENTITY)
    client, datagram, _ = sent(creds)
    verdict = verdict_from(reply(client, datagram, Code.ACCESS_CHALLENGE,
                                 [*split(MD5_REQUEST), (Attr.STATE, b"st")]), creds)
    assert verdict.challenge is not None and not verdict.success
    assert (verdict.challenge.eap_message, verdict.challenge.state) == (MD5_REQUEST, b"st")

    success = EapPacket(EapCode.SUCCESS, 4).encode()
    response = eap_credentials(EapPacket(EapCode.RESPONSE, 4, 4, bytes(17)).encode(), b"st")
    client, datagram, _ = sent(response)
    keys = [(MS.MS_MPPE_SEND_KEY, b"s" * 16), (MS.MS_MPPE_RECV_KEY, b"r" * 16)]
    verdict = verdict_from(reply(client, datagram, Code.ACCESS_ACCEPT,
                                 [*split(success), *keys, (Attr.SESSION_TIMEOUT, 60)]),
                           response)
    assert verdict.success and verdict.challenge is None and verdict.eap_message == success
    assert verdict.mppe_keys == (b"s" * 16, b"r" * 16)  # as after MS-CHAP v2
    assert verdict.authorization.session_timeout == 60.0

    failure = EapPacket(EapCode.FAILURE, 4).encode()
    client, datagram, _ = sent(response)
    verdict = verdict_from(reply(client, datagram, Code.ACCESS_REJECT,
                                 [*split(failure), (Attr.REPLY_MESSAGE, "no")]), response)
    assert not verdict.success and verdict.error_code == 691 and verdict.message == "no"
    assert verdict.eap_message == failure and verdict.challenge is None
    # an Accept without EAP-Message still grants (the authenticator builds the Success)
    client, datagram, _ = sent(response)
    verdict = verdict_from(reply(client, datagram, Code.ACCESS_ACCEPT, []), response)
    assert verdict.success and verdict.eap_message == b""


def test_a_challenge_for_a_non_eap_method_is_still_refused():
    creds = Credentials(AuthMethod.PAP, USER, password=b"x")
    client, datagram, _ = sent(creds)
    verdict = verdict_from(reply(client, datagram, Code.ACCESS_CHALLENGE,
                                 [(Attr.STATE, b"s")]), creds)
    assert not verdict.success and verdict.message == CHALLENGED and verdict.challenge is None


@pytest.mark.parametrize("code,eap,why", [
    (Code.ACCESS_CHALLENGE, b"", "an Access-Challenge without EAP-Message"),
    (Code.ACCESS_CHALLENGE, MD5_REQUEST[:-3], "an EAP Length of 22 in 19 octets"),
    (Code.ACCESS_CHALLENGE, MD5_REQUEST + b"xx", "an EAP Length of 22 in 24 octets"),
    (Code.ACCESS_CHALLENGE, b"\x01\x02", "an EAP Length of 0 in 2 octets"),
    (Code.ACCESS_CHALLENGE, EapPacket(EapCode.REQUEST, 1, 4, bytes(RELAY_MAX)).encode(),
     "more than the 1400 we relay"),
    (Code.ACCESS_CHALLENGE, EapPacket(EapCode.SUCCESS, 1).encode(),
     "EAP code 3 in an AccessChallenged (expected REQUEST)"),
    (Code.ACCESS_CHALLENGE, b"\x01\x01\x00\x04", "an EAP Request without a Type"),
    (Code.ACCESS_CHALLENGE, b"\x09\x01\x00\x04", "EAP code 9"),
    (Code.ACCESS_ACCEPT, EapPacket(EapCode.FAILURE, 1).encode(),
     "EAP code 4 in an AccessAccepted (expected SUCCESS)"),
    (Code.ACCESS_ACCEPT, b"\x03\x01\x00\x05\x00", "an EAP Success of 5 octets"),
    (Code.ACCESS_REJECT, EapPacket(EapCode.SUCCESS, 1).encode(),
     "EAP code 3 in an AccessRejected (expected FAILURE)"),
])
def test_malformed_eap_messages_refuse_the_call_by_name(code, eap, why):
    creds = eap_credentials(IDENTITY)
    client, datagram, _ = sent(creds)
    verdict = verdict_from(reply(client, datagram, code, split(eap)), creds)
    assert not verdict.success and verdict.challenge is None and verdict.error_code == 691
    assert verdict.message.startswith("RADIUS EAP-Message unusable: ") and why in \
        verdict.message, verdict.message


class ChainVerifier:
    """access_request -> RadiusClient -> a RADIUS server (our Packet codec, EAP-MD5 as
    FreeRADIUS runs it) -> verdict_from, answered later."""

    relays_eap = True

    def __init__(self, md5: Md5Server):
        self.md5 = md5
        self.client = RadiusClient([(*SERVER, SECRET)], random=counter_random())
        self.requests: list[Packet] = []
        self.pending: list[Verdict] = []

    def verify(self, creds: Credentials) -> None:
        self.client.authenticate(access_request(creds, NAS), 0.0)
        [(_, datagram)] = self.client.datagrams_to_send()
        request = Packet.decode(datagram, SECRET)
        self.requests.append(request)
        eap = b"".join(request.attributes.get_all(Attr.EAP_MESSAGE))
        code, out, state = self.md5.answer(eap, request.attributes.get(Attr.STATE, b""))
        attrs = [*split(out)] + ([(Attr.STATE, state)] if state else [])
        self.pending.append(verdict_from(reply(self.client, datagram, code, attrs), creds))


@pytest.mark.parametrize("password,granted", [(PASSWORD, True), ("wrong", False)])
def test_the_whole_chain_over_an_in_memory_radius_server(password, granted):
    md5 = Md5Server(password)
    verifier = ChainVerifier(md5)
    auth, peer = EapAuthenticator(verifier, counter_random()), EapPeer(USER, PASSWORD)
    run(auth, peer, verifier)  # type: ignore[arg-type]
    assert auth.outcome is not None and auth.outcome.success is granted
    assert peer.outcome is not None and peer.outcome.success is granted
    assert [r.attributes.get(Attr.STATE) for r in verifier.requests] == [None, md5.state]
    assert all(r.attributes.get(Attr.USER_NAME) == USER for r in verifier.requests)


# the admission ---------------------------------------------------------------------------

class FakeRadius:
    def __init__(self):
        self.asked = []

    def submit(self, call, credentials, answer):
        self.asked.append((call, credentials, answer))


def admission(eap: str = "relay", radius=None):
    pool = StaticPool(ipaddress.IPv4Network("10.10.100.0/24"))
    done: list = []
    a = Admission(LocalAccounts(), DEFAULT_POLICIES, pool,
                  lambda call, v: done.append((call, v)), radius=radius, eap=eap)
    return a, done


def test_the_admission_passes_challenges_through_and_decides_on_the_accept():
    radius = FakeRadius()
    a, done = admission(radius=radius)
    call = Call("pptp", 7, "198.51.100.2")
    verifier = a.verifier_for(call)
    assert relays_eap(verifier)
    assert verifier.verify(eap_credentials(IDENTITY)) is None
    radius.asked[-1][2](Verdict.challenged(MD5_REQUEST, b"st"), ())
    [(_, challenge)] = done
    assert challenge.challenge is not None and call.key not in a.decisions
    assert a.counters["radius_challenges"] == 1 and a.counters["radius_pending"] == 0
    assert a.counters["refused_credentials"] == 0
    verifier.verify(eap_credentials(EapPacket(EapCode.RESPONSE, 4, 4, bytes(17)).encode(),
                                    b"st"))
    radius.asked[-1][2](Verdict(True, eap_message=EapPacket(EapCode.SUCCESS, 4).encode()), ())
    final = done[-1][1]
    assert final.success and final.authorization.peer_address is None
    assert final.eap_message == EapPacket(EapCode.SUCCESS, 4).encode()
    assert a.decisions[call.key]["granted"] and a.decisions[call.key]["method"] == "eap-md5"
    assert a.counters["granted"] == 1


def test_relaying_needs_radius_and_the_relay_setting():
    assert not relays_eap(admission(radius=None)[0].verifier_for(Call("pptp", 1, "x")))
    assert not relays_eap(admission("md5-as-chap", FakeRadius())[0].verifier_for(
        Call("pptp", 1, "x")))


# [authentication] eap ----------------------------------------------------------------------

RADIUS = """
[server]
listen = "203.0.113.2"
pool = "10.10.100.0/24"
auth = ["eap-md5"]

[authentication]
provider = "{provider}"
{eap}
{servers}
"""
SERVERS = '[[authentication.radius]]\naddress = "10.10.0.3"\nsecret = "radsecret"\n'


def load(tmp_path, provider: str = "radius", eap: str = "", servers: str = SERVERS):
    path = tmp_path / "server.toml"
    path.write_text(RADIUS.format(provider=provider, eap=eap, servers=servers))
    return ServerConfig.load(path)


def test_eap_setting_defaults_to_relay_with_radius(tmp_path):
    assert load(tmp_path).authentication.eap == "relay"
    assert load(tmp_path, eap='eap = "md5-as-chap"').authentication.eap == "md5-as-chap"
    assert load(tmp_path, eap='eap = "relay"').authentication.eap == "relay"


@pytest.mark.parametrize("eap", ["relay", "md5-as-chap"])
def test_the_server_hands_the_eap_setting_to_its_admission(tmp_path, eap):
    from tunnels.server import VPNServer

    server = VPNServer(load(tmp_path, eap=f'eap = "{eap}"'))
    assert server.admission.eap == eap


@pytest.mark.parametrize("provider,eap,servers,message", [
    ("radius", 'eap = "peap"', SERVERS,
     "authentication.eap: got 'peap'; expected one of relay, md5-as-chap (line 9)"),
    ("local", 'eap = "relay"', "",
     "authentication.eap: got 'relay'; expected no eap with provider = \"local\""),
])
def test_eap_setting_errors_name_file_key_and_expectation(tmp_path, provider, eap, servers,
                                                          message):
    with pytest.raises(ConfigError) as info:
        load(tmp_path, provider, eap, servers)
    assert str(tmp_path / "server.toml") in str(info.value)
    assert message in str(info.value), str(info.value)
