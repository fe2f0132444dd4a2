"""The engine against what real peers send (a Windows client's option set), against itself
(loop-back), over the auth x encryption matrix, and its frames decoded by scapy as the oracle."""

from __future__ import annotations

import ipaddress

import pytest
from scapy.layers.ppp import (
    PPP,
    PPP_CHAP_ChallengeResponse,
    PPP_IPCP,
    PPP_LCP_Configure,
    PPP_LCP_Echo,
    PPP_LCP_Protocol_Reject,
    PPP_PAP_Request,
    PPP_PAP_Response,
)

from tests.test_ppp_engine import Pair, client, connect, server
from tunnels.ppp import events as ev
from tunnels.ppp.auth.base import AuthMethod
from tunnels.ppp.config import EncryptionLevel
from tunnels.ppp.engine import PPPEngine
from tunnels.ppp.fsm import State
from tunnels.ppp.framing import build_frame, split_frame
from tunnels.ppp.packets import Code, ControlPacket, Option, decode_options, encode_options

LCP, IPCP = 0xC021, 0x8021


def lcp_request(ident: int, *options: str) -> bytes:
    data = encode_options([Option(int(o[:2], 16), bytes.fromhex(o[4:])) for o in options])
    return build_frame(LCP, ControlPacket(Code.CONFIGURE_REQUEST, ident, data).encode())


def answers(engine: PPPEngine, protocol: int) -> list[ControlPacket]:
    out = []
    for frame in engine.frames_to_send():
        proto, info = split_frame(frame)
        if proto == protocol:
            out.append(ControlPacket.decode(info))
    return out


# A Windows 2000/7 client's LCP request: MRU 1400, magic, PFC, ACFC, Callback (CBCP, 6).
WINDOWS_LCP = ("0104 0578", "0506 1e2d3c4b", "0702", "0802", "0d03 06")


def windows_client_up_to_network(s: PPPEngine) -> None:
    """Drive a PAP server through LCP and PAP as a Windows client would."""
    s.open(0.0)
    ours = answers(s, LCP)[0]
    s.receive_frame(lcp_request(1, *WINDOWS_LCP), 0.0)
    reject = answers(s, LCP)[0]
    assert reject.code == Code.CONFIGURE_REJECT
    assert decode_options(reject.data) == [Option(13, b"\x06")]  # only Callback
    s.receive_frame(lcp_request(2, *WINDOWS_LCP[:4]), 0.0)
    assert answers(s, LCP)[0].code == Code.CONFIGURE_ACK
    s.receive_frame(build_frame(LCP, ControlPacket(Code.CONFIGURE_ACK, ours.identifier,
                                                   ours.data).encode()), 0.0)
    assert s.lcp.state is State.OPENED
    pap = bytes.fromhex("01010011") + b"\x05alice\x06s3cret"
    s.receive_frame(build_frame(0xC023, pap), 0.0)
    s.frames_to_send()
    assert s.phase.value == "network"


def test_windows_option_set_is_answered_as_a_server_should():
    s = server((AuthMethod.PAP,), echo_interval=0)
    windows_client_up_to_network(s)
    # RFC 1570 Identification and Time-Remaining, and a Discard-Request: tolerated in silence
    for code in (Code.IDENTIFICATION, Code.TIME_REMAINING, Code.DISCARD_REQUEST):
        s.receive_frame(build_frame(LCP, ControlPacket(code, 9, b"\x1e\x2d\x3c\x4bMSRASV5")
                                    .encode()), 0.0)
        assert s.frames_to_send() == []
    # IPV6CP, IPXCP, NBFCP: Protocol-Reject, the link stays up
    for proto in (0x8057, 0x802B, 0x803F):
        s.receive_frame(build_frame(proto, bytes.fromhex("0101000e010a0000000000000001")), 0.0)
        reject = answers(s, LCP)[0]
        assert reject.code == Code.PROTOCOL_REJECT and reject.data[:2] == proto.to_bytes(2, "big")
    # IPCP: VJ compression rejected first, then 0.0.0.0 and 129-132 naked with what we assign
    ipcp = ("0206 002d0f01", "0306 00000000", "8106 00000000", "8206 00000000",
            "8306 00000000", "8406 00000000")

    def ipcp_request(ident: int, opts: tuple[str, ...]) -> bytes:
        data = encode_options([Option(int(o[:2], 16), bytes.fromhex(o[4:])) for o in opts])
        return build_frame(IPCP, ControlPacket(Code.CONFIGURE_REQUEST, ident, data).encode())

    s.receive_frame(ipcp_request(1, ipcp), 0.0)
    reply = [p for p in answers(s, IPCP) if p.code != Code.CONFIGURE_REQUEST][0]
    assert reply.code == Code.CONFIGURE_REJECT
    rejected = {o.type for o in decode_options(reply.data)}
    assert rejected == {2, 131, 132}  # VJ; no secondary DNS/NBNS configured
    s.receive_frame(ipcp_request(2, ipcp[1:4]), 0.0)
    nak = answers(s, IPCP)[0]
    assert nak.code == Code.CONFIGURE_NAK
    assert {o.type: str(ipaddress.IPv4Address(o.data)) for o in decode_options(nak.data)} == {
        3: "10.10.100.2", 129: "10.10.0.53", 130: "10.10.0.54"}
    s.receive_frame(ipcp_request(3, ("0306 0a0a6402", "8106 0a0a0035", "8206 0a0a0036")), 0.0)
    assert answers(s, IPCP)[0].code == Code.CONFIGURE_ACK
    assert s.lcp.state is State.OPENED


def test_compressed_frames_are_accepted_once_acfc_and_pfc_are_on():
    s, c = server(), client()
    pair = connect(s, c)
    ip = bytes.fromhex("4500001c000000004001") + bytes(18)
    s.receive_frame(build_frame(0x0021, ip, acfc=True, pfc=True), pair.now)
    assert build_frame(0x0021, ip, acfc=True, pfc=True)[:1] == b"\x21"
    events = []
    while (e := s.next_event()) is not None:
        events.append(e)
    assert ev.DatagramReceived(ip) in events
    assert build_frame(LCP, b"x", acfc=True, pfc=True)[:4] == b"\xff\x03\xc0\x21"


def test_echo_request_is_answered_with_our_magic_and_the_data():
    s, c = server(), client()
    pair = connect(s, c)
    s.receive_frame(build_frame(LCP, ControlPacket(Code.ECHO_REQUEST, 5, b"\x11\x22\x33\x44ping")
                                .encode()), pair.now)
    reply = answers(s, LCP)[0]
    assert reply.code == Code.ECHO_REPLY and reply.identifier == 5
    assert reply.data == s.lcp_policy.magic.to_bytes(4, "big") + b"ping"


def test_silent_peer_ends_after_max_configure_with_the_reason():
    s = server(max_configure=3, restart_timer=2.0)
    pair = Pair(s, client())
    pair.drop = lambda side, frame: True
    s.open(0.0)
    pair.run(60)
    reasons = [e.reason for e in pair.of("a", ev.LinkTerminated)]
    assert reasons and "Max-Configure" in reasons[0] and pair.now == 6.0


@pytest.mark.parametrize("make", [server, client], ids=["authenticator", "peer"])
def test_looped_back_link_is_detected(make):
    s = make()
    s.open(0.0)
    now, events = 0.0, []
    for _ in range(200):
        frames = s.frames_to_send()
        if not frames:
            timer = s.get_timer()
            if timer is None or timer > 60:
                break
            now = timer
            s.handle_timer(now)
            continue
        for frame in frames:
            s.receive_frame(frame, now)
    while (e := s.next_event()) is not None:
        events.append(e)
    reasons = [e.reason for e in events if isinstance(e, ev.LinkTerminated)]
    assert reasons and "looped back" in reasons[0]


MS_METHODS = (AuthMethod.MSCHAP, AuthMethod.MSCHAPV2)
LEVELS = (EncryptionLevel.NONE, EncryptionLevel.BASIC, EncryptionLevel.STRONG,
          EncryptionLevel.STRONGEST)
MATRIX = [(m, lv, sl) for m in AuthMethod for lv in LEVELS
          for sl in ((True,) if lv is EncryptionLevel.NONE else (True, False))]


@pytest.mark.parametrize("method, level, stateless", MATRIX,
                         ids=[f"{m.value}-{lv.value}-{'stateless' if sl else 'stateful'}"
                              for m, lv, sl in MATRIX])
def test_auth_by_encryption_matrix(method, level, stateless):
    s = server((method,), encryption=level, mppe_stateless=stateless)
    c = client((method,), encryption=level, mppe_stateless=stateless)
    pair = connect(s, c, until=30)
    if level is not EncryptionLevel.NONE and method not in MS_METHODS:
        # MPPE keys come from MS-CHAP only: required encryption cannot be met, never clear
        reasons = [e.reason for e in pair.of("a", ev.LinkTerminated)]
        assert reasons and "MS-CHAP" in reasons[0]
        assert not pair.of("b", ev.DatagramReceived)
        return
    seen: list[bytes] = []
    pair.drop = lambda side, frame: seen.append(frame) or False
    ip = bytes.fromhex("4500001c00000000400100000a0a64020a0a6401") + b"payload!"
    assert c.send_datagram(ip, pair.now) and s.send_datagram(ip, pair.now)
    pair.run(pair.now + 1)
    assert pair.of("a", ev.DatagramReceived) == [ev.DatagramReceived(ip)]
    assert pair.of("b", ev.DatagramReceived) == [ev.DatagramReceived(ip)]
    negotiated = pair.of("b", ev.EncryptionNegotiated)
    if level is EncryptionLevel.NONE:
        assert not negotiated and all(f[2:4] == b"\x00\x21" for f in seen)
    else:
        assert negotiated == [ev.EncryptionNegotiated(level.key_bits, stateless)]
        assert all(f[2:4] == b"\x00\xfd" and b"payload!" not in f for f in seen)
    assert s.status()["encryption"] == (None if level is EncryptionLevel.NONE else
                                        f"mppe-{level.key_bits} "
                                        f"{'stateless' if stateless else 'stateful'}")


def session_frames(method: AuthMethod) -> list[bytes]:
    s, c = server((method,)), client((method,))
    pair = Pair(s, c)
    frames: list[bytes] = []
    pair.drop = lambda side, frame: frames.append(frame) or False
    s.open(0.0)
    c.open(0.0)
    pair.run(5)
    return frames


@pytest.mark.parametrize("method", [AuthMethod.PAP, AuthMethod.CHAP, AuthMethod.MSCHAPV2],
                         ids=lambda m: m.value)
def test_scapy_decodes_every_frame_of_a_session(method):
    frames = session_frames(method)
    protocols = set()
    for frame in frames:
        protocol, info = split_frame(frame)
        pkt = PPP(frame[2:])
        assert pkt.proto == protocol
        protocols.add(protocol)
        if protocol in (LCP, IPCP):
            ours = ControlPacket.decode(info)
            layer = pkt.payload
            assert (layer.code, layer.id) == (ours.code, ours.identifier)
            assert layer.len == 4 + len(ours.data)
            if ours.code == Code.CONFIGURE_REQUEST and protocol == LCP:
                assert isinstance(layer, PPP_LCP_Configure)
                types = [o.type for o in decode_options(ours.data)]
                assert [o.type for o in layer.options] == types
            if protocol == IPCP:
                assert isinstance(layer, PPP_IPCP)
    assert {LCP, IPCP, method.protocol} <= protocols
    pap_or_chap = [PPP(f[2:]) for f in frames if split_frame(f)[0] == method.protocol]
    if method is AuthMethod.PAP:
        request = next(p for p in pap_or_chap if PPP_PAP_Request in p)
        assert request[PPP_PAP_Request].username == b"alice"
        assert request[PPP_PAP_Request].password == b"s3cret"
        assert any(PPP_PAP_Response in p and p[PPP_PAP_Response].code == 2 for p in pap_or_chap)
    else:
        challenge = next(p for p in pap_or_chap if p.payload.code == 1)
        response = next(p for p in pap_or_chap if p.payload.code == 2)
        assert isinstance(response.payload, PPP_CHAP_ChallengeResponse)
        assert response.payload.optional_name == b"alice"
        assert response.payload.id == challenge.payload.id
        assert any(p.payload.code == 3 for p in pap_or_chap)  # Success


def test_scapy_decodes_protocol_reject_and_echo():
    s, c = server(), client()
    pair = connect(s, c)
    s.receive_frame(build_frame(0x8057, bytes.fromhex("01010004")), pair.now)
    s.receive_frame(build_frame(LCP, ControlPacket(Code.ECHO_REQUEST, 4, b"\0\0\0\0").encode()),
                    pair.now)
    reject, echo = (PPP(f[2:]) for f in s.frames_to_send())
    assert reject[PPP_LCP_Protocol_Reject].rejected_protocol == 0x8057
    assert echo[PPP_LCP_Echo].code == 10 and echo[PPP_LCP_Echo].id == 4
    assert echo[PPP_LCP_Echo].magic_number == s.lcp_policy.magic


def test_chap_rechallenge_keeps_the_link_while_the_password_holds():
    from tunnels.ppp.auth.base import Account, LocalAccounts
    from tunnels.ppp.config import PPPConfig

    accounts = {"alice": Account("s3cret")}
    cfg = PPPConfig(True, (AuthMethod.CHAP,), verifier=LocalAccounts(accounts),
                    local_address="10.10.100.1", peer_address="10.10.100.2",
                    chap_rechallenge=30.0, echo_interval=0)
    s = PPPEngine(cfg, random=lambda n: bytes(range(1, n + 1)))
    c = client((AuthMethod.CHAP,), echo_interval=0)
    pair = connect(s, c)
    pair.run(100)  # three re-challenges, all answered
    assert s.lcp.state is State.OPENED and not pair.of("a", ev.LinkTerminated)
    accounts["alice"] = Account("changed")  # the account changes under a running session
    pair.run(140)
    failed = pair.of("a", ev.AuthenticationFailed)
    assert failed and failed[0].username == "alice"
    reasons = [e.reason for e in pair.of("a", ev.LinkTerminated)]
    assert reasons and "authentication failed" in reasons[0]


def test_async_link_asks_for_accm_and_records_the_peers_framing():
    s = server(accm=0)
    s.open(0.0)
    request = answers(s, LCP)[0]
    assert Option(2, bytes(4)) in decode_options(request.data)
    s.receive_frame(lcp_request(1, *WINDOWS_LCP[:4], "0206 000a0000"), 0.0)
    status = s.status()
    assert (status["peer_accm"], status["peer_pfc"], status["peer_acfc"]) == (0xA0000, True, True)
    assert status["mru"] == 1400 and status["lcp"] == "ACK_SENT" and status["ccp"] is None


def test_silent_authenticator_times_the_peer_out():
    s, c = server((AuthMethod.CHAP,)), client((AuthMethod.CHAP,), auth_timeout=20.0)
    pair = Pair(s, c)
    pair.drop = lambda side, frame: side == "a" and frame[2:4] == b"\xc2\x23"
    s.open(0.0)
    c.open(0.0)
    pair.run(60)
    reasons = [e.reason for e in pair.of("b", ev.LinkTerminated)]
    assert reasons and "did not complete within 20s" in reasons[0]
    assert pair.of("a", ev.LinkTerminated)


def test_lcp_renegotiation_runs_authentication_again():
    s, c = server(echo_interval=0), client(echo_interval=0)
    pair = connect(s, c)
    assert s.status()["auth_method"] == "mschapv2"
    s.lcp.send_code(Code.CONFIGURE_REQUEST, encode_options(s.lcp_policy.request()))
    c.receive_frame(s.frames_to_send()[0], pair.now)  # the client sees a new LCP request
    pair.run(pair.now + 20)
    phases = [e.phase.value for e in pair.of("b", ev.PhaseChanged)]
    assert phases[-3:] == ["establish", "authenticate", "network"]
    assert len(pair.of("a", ev.Authenticated)) == 2 and len(pair.of("b", ev.NetworkOpened)) == 2
    ip = bytes.fromhex("4500001c000000004001") + bytes(18)
    assert c.send_datagram(ip, pair.now)


@pytest.mark.parametrize("method", list(AuthMethod), ids=lambda m: m.value)
def test_lost_authentication_success_is_recovered(method):
    """RFC 1994 §4.2 / RFC 1334 §2.2: the authenticator answers a repeated Response or
    Authenticate-Request again, so a lost Success costs one retransmission, not the link."""
    s, c = server((method,), echo_interval=0), client((method,), echo_interval=0)
    pair = Pair(s, c)
    lost = {"done": False}
    success_code = {AuthMethod.PAP: 2, AuthMethod.EAP_MD5: 3}.get(method, 3)

    def drop_success(side, frame):
        if side == "a" and not lost["done"] and frame[2:4] == method.protocol.to_bytes(2, "big") \
                and frame[4] == success_code:
            lost["done"] = True
            return True
        return False

    pair.drop = drop_success
    s.open(0.0)
    c.open(0.0)
    pair.run(60)
    assert lost["done"] and pair.of("b", ev.NetworkOpened)
