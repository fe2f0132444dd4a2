"""Real RADIUS traffic decoded by our codec (tests/data/radius, copied from ../shared/captures
with the secrets their MANIFEST, README-radius.md and VERIFY file give): every request and reply
decodes, every Response Authenticator and Message-Authenticator verifies, hidden passwords
come out as the README says, and the MS-MPPE keys of JRadius' capture decrypt to the keys
VERIFY_radius_mschapv2.json states. UDP payloads are read with scapy; RADIUS is ours."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scapy.all import UDP, rdpcap

from tunnels.radius.attributes import Attr
from tunnels.radius.msvsa import MS, IdentString, MSCHAP2Response
from tunnels.radius.packet import BadMessageAuthenticator, Code, Packet

DATA = Path(__file__).parent / "data" / "radius"
SERVER_PORTS = {1812, 1813, 1645, 1646}


def exchanges(name: str) -> list[tuple[int, bytes, int | None, bytes | None]]:
    """(frame, request, reply frame, reply) in capture order, paired by client port and
    Identifier (retransmissions pair with the reply too)."""
    requests: dict[tuple[int, int], list] = {}
    out: list = []
    for frame, pkt in enumerate(rdpcap(str(DATA / name)), 1):
        if UDP not in pkt:
            continue
        data = bytes(pkt[UDP].payload)
        if pkt[UDP].dport in SERVER_PORTS and data[0] in (1, 4):
            entry = [frame, data, None, None]
            requests[(pkt[UDP].sport, data[1])] = entry
            out.append(entry)
        elif pkt[UDP].sport in SERVER_PORTS and (pkt[UDP].dport, data[1]) in requests:
            entry = requests[(pkt[UDP].dport, data[1])]
            entry[2:] = [frame, data]
    return [tuple(e) for e in out]


def verify_all(name: str, secret: bytes, frames: range | None = None,
               ) -> list[tuple[Packet, Packet | None]]:
    decoded = []
    for frame, request, _, reply in exchanges(name):
        if frames is not None and frame not in frames:
            continue
        req = Packet.decode(request, secret)
        rep = None if reply is None else Packet.decode(reply, secret, req.authenticator)
        decoded.append((req, rep))
    return decoded


def test_freeradius_localhost_capture_secret_testing123() -> None:
    """radius-sample-4 (Wireshark's radius_localhost): EAP-MD5 bad/good, PAP good, CHAP good,
    PAP bad; every Access-Request carries a Message-Authenticator that verifies."""
    pairs = verify_all("radius-sample-4.pcapng", b"testing123", range(1, 15))
    assert [Code(r.code).name for _, r in pairs] == [
        "ACCESS_CHALLENGE", "ACCESS_REJECT", "ACCESS_CHALLENGE", "ACCESS_ACCEPT",
        "ACCESS_ACCEPT", "ACCESS_ACCEPT", "ACCESS_REJECT"]
    assert all(q.has_message_authenticator for q, _ in pairs)
    passwords = [q.attributes.get(Attr.USER_PASSWORD) for q, _ in pairs]
    assert passwords == [b"bad", b"bad", b"testing", b"testing", b"testing", None, b"bad_password"]
    assert pairs[5][0].attributes.get(Attr.CHAP_PASSWORD).ident == 168
    assert str(pairs[4][1].attributes.get(Attr.FRAMED_IP_ADDRESS)) == "172.16.3.33"


def test_wrong_secret_frames_and_their_retransmissions() -> None:
    """Frames 15-17: the client's secret is bad_secret, the server's testing123: our check with
    testing123 fails on the Message-Authenticator, with bad_secret it verifies; the three are one
    request retransmitted (same Identifier and authenticator, same bytes)."""
    wrong = [x for x in exchanges("radius-sample-4.pcapng") if 15 <= x[0] <= 17]
    assert len({request for _, request, _, _ in wrong}) == 1
    with pytest.raises(BadMessageAuthenticator):
        Packet.decode(wrong[0][1], b"testing123")
    redone = Packet.decode(wrong[0][1], b"bad_secret")
    assert redone.attributes.get(Attr.USER_PASSWORD) == b"testing"
    (q, r), = verify_all("radius-sample-4.pcapng", b"bad_secret", range(18, 19))
    assert r is not None and r.code == Code.ACCESS_ACCEPT


def test_weberblog_capture_pap_chap_mschap_v1_v2_and_peap() -> None:
    pairs = verify_all("radius-sample-5.pcap", b"iNJ72r0uPXP5qhAX")
    assert all(r is not None for _, r in pairs) and len(pairs) == 36
    assert {q.attributes.get(Attr.USER_PASSWORD) for q, _ in pairs} >= {b"ThisIsThePassword"}
    v1 = [r for q, r in pairs if MS.MS_CHAP_RESPONSE in q.attributes]
    assert v1 and all(r.attributes.get(MS.MS_CHAP_MPPE_KEYS).nt_key == v1[0].attributes.get(
        MS.MS_CHAP_MPPE_KEYS).nt_key for r in v1)  # same password, same NT-hash-derived key
    v2 = [(q, r) for q, r in pairs if MS.MS_CHAP2_RESPONSE in q.attributes]
    success = v2[0][1].attributes.get(MS.MS_CHAP2_SUCCESS)
    assert isinstance(success, IdentString) and success.message.startswith("S=")
    assert success.ident == v2[0][0].attributes.get(MS.MS_CHAP2_RESPONSE).ident
    peap_keys = [r.attributes.get(MS.MS_MPPE_SEND_KEY) for _, r in pairs
                 if r.code == Code.ACCESS_ACCEPT and Attr.EAP_MESSAGE in r.attributes]
    assert peap_keys and all(len(k) == 32 for k in peap_keys)  # EAP MSK halves


def test_jradius_mschapv2_mppe_keys_decrypt_to_the_verified_keys() -> None:
    verify = json.loads((DATA / "VERIFY_radius_mschapv2.json").read_text())
    (request, accept), = verify_all("radius-mschapv2.pcapng", b"testing123")
    assert request.attributes.get(Attr.USER_NAME) == verify["User_Name"]
    assert request.attributes.get(MS.MS_CHAP_CHALLENGE).hex() == verify["MS_CHAP_Challenge"]
    response = request.attributes.get(MS.MS_CHAP2_RESPONSE)
    assert isinstance(response, MSCHAP2Response)
    raw = bytes.fromhex(verify["MS_CHAP2_Response"])
    assert (response.ident, response.peer_challenge, response.nt_response) == (
        raw[0], raw[2:18], raw[26:])
    assert accept is not None and accept.has_message_authenticator
    assert accept.attributes.get(MS.MS_CHAP2_SUCCESS).message == verify["MS_CHAP2_Success"]
    assert accept.attributes.get(MS.MS_MPPE_SEND_KEY).hex() == verify["MS-MPPE-Send-Key"]["key"]
    assert accept.attributes.get(MS.MS_MPPE_RECV_KEY).hex() == verify["MS-MPPE-Recv-Key"]["key"]


def test_jradius_pap() -> None:
    (request, accept), = verify_all("radius-pap.pcapng", b"testing123")
    assert request.attributes.get(Attr.USER_NAME) == "omnine"
    assert request.attributes.get(Attr.USER_PASSWORD) == b"Change+1t"
    assert accept is not None and accept.code == Code.ACCESS_ACCEPT


def test_accounting_capture_start_interim_stop_secret_true() -> None:
    pairs = verify_all("radius-sample-1.pcapng", b"true")
    kinds = [q.attributes.get(Attr.ACCT_STATUS_TYPE).name for q, _ in pairs]
    assert kinds == ["START", "INTERIM_UPDATE", "STOP", "START"]
    assert all(r is not None and r.code == Code.ACCOUNTING_RESPONSE for _, r in pairs)
    stop = pairs[2][0].attributes
    assert (stop.get(Attr.ACCT_INPUT_OCTETS), stop.get(Attr.ACCT_OUTPUT_OCTETS)) == (46712, 326901)
    assert stop.get(Attr.ACCT_TERMINATE_CAUSE).name == "USER_REQUEST"


def test_packetlife_capture_secret_unknown_so_its_message_authenticators_do_not_verify() -> None:
    """packetlife/RADIUS.cap gives no shared secret (its README names only the supplicant's
    password): our decoder refuses its EAP Access-Requests rather than trusting them."""
    found = exchanges("RADIUS.cap")
    assert len(found) == 2
    for _, request, _, _ in found:
        with pytest.raises(BadMessageAuthenticator):
            Packet.decode(request, b"testing123")
