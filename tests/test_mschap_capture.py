"""Windows 7 → pptpd (john-samples captures, passwords known): scapy extracts the PPP frames
(the independent oracle), our codecs parse the CHAP fields, our MS-CHAP v2 reproduces the
NT-Response and the server's S=, our RFC 3079 keys match the recorded ones, and our MPPE
decryptor recovers IPv4 from the client's encrypted frames.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from scapy.layers.inet import IP
from scapy.layers.l2 import GRE_PPTP
from scapy.layers.ppp import PPP
from scapy.utils import rdpcap

from tunnels.mppe import keys
from tunnels.mppe.cipher import MPPEDecryptor
from tunnels.ppp.auth import mscrypto
from tunnels.ppp.auth.base import MPPEMaterial
from tunnels.ppp.auth.chap import ChapCode, ChapPacket

DATA = Path(__file__).parent / "data" / "pptp"
VERIFY = {v["capture"]: v for v in json.loads((DATA / "VERIFY_mschapv2_mppe.json").read_text())}


@dataclass(frozen=True)
class Frame:
    src: str
    protocol: int
    info: bytes


def ppp_frames(capture: str) -> list[Frame]:
    frames = []
    for packet in rdpcap(str(DATA / capture)):
        if GRE_PPTP in packet and PPP in packet:
            ppp = packet[PPP]
            frames.append(Frame(packet[IP].src, ppp.proto, bytes(ppp.payload)))
    return frames


def chap(frames: list[Frame], code: int) -> tuple[Frame, ChapPacket]:
    for f in frames:
        if f.protocol == 0xC223 and ChapPacket.decode(f.info).code == code:
            return f, ChapPacket.decode(f.info)
    raise AssertionError(f"no CHAP code {code}")


def h(text: str) -> bytes:
    return bytes.fromhex(text)


CAPTURES = sorted(VERIFY)


@pytest.mark.parametrize("capture", CAPTURES)
def test_mschapv2_exchange_is_reproduced(capture):
    v = VERIFY[capture]
    frames = ppp_frames(capture)
    _, challenge = chap(frames, ChapCode.CHALLENGE)
    response_frame, response = chap(frames, ChapCode.RESPONSE)
    _, success = chap(frames, ChapCode.SUCCESS)
    assert challenge.value == h(v["AuthenticatorChallenge"])
    assert response_frame.src == v["peer"]
    assert response.name.decode() == v["user"]
    peer_challenge, nt_response = response.value[:16], response.value[24:48]
    assert peer_challenge == h(v["PeerChallenge"]) and response.value[48] == v["Flags"]
    assert response.value[16:24] == bytes(8)  # reserved, zero (RFC 2759 §4)
    assert mscrypto.generate_nt_response(challenge.value, peer_challenge, v["user"],
                                         v["password"]) == nt_response
    s = mscrypto.generate_authenticator_response(v["password"], nt_response, peer_challenge,
                                                 challenge.value, v["user"])
    assert success.name.decode() == v["SuccessMessage"]
    assert success.name.decode().startswith(s + " M=")


def _material(capture: str) -> MPPEMaterial:
    v = VERIFY[capture]
    return MPPEMaterial(2, mscrypto.nt_password_hash(v["password"]),
                        nt_response=h(v["NT_Response"]))


@pytest.mark.parametrize("capture", CAPTURES)
def test_rfc3079_keys_match_the_recorded_ones(capture):
    v, material = VERIFY[capture], _material(capture)
    assert keys.master_key_v2(material.password_hash, material.nt_response) == h(v["MasterKey"])
    server_send, server_receive = keys.derive_start_keys(material, 128, is_server=True)
    client_send, client_receive = keys.derive_start_keys(material, 128, is_server=False)
    assert server_send == h(v["authenticator_MasterSendKey"]) == client_receive
    assert client_send == h(v["peer_MasterSendKey"]) == server_receive


@pytest.mark.parametrize("capture", CAPTURES)
def test_client_frames_decrypt_with_the_recorded_session_keys(capture):
    v = VERIFY[capture]
    _, server_receive = keys.derive_start_keys(_material(capture), 128, is_server=True)
    dec = MPPEDecryptor(server_receive, 128, stateless=True)  # Windows 7 offers H (stateless)
    encrypted = [f for f in ppp_frames(capture) if f.protocol == 0x00FD and f.src == v["peer"]]
    expected = v["mppe_first_packets_decrypted"]
    assert len(encrypted) >= len(expected)
    for frame, want in zip(encrypted, expected, strict=False):
        header = int.from_bytes(frame.info[:2], "big")
        assert header & 0x0FFF == want["coherency_count"]
        assert f"{header >> 12:04b}" == want["flags_ABCD"]
        plain = dec.decrypt(frame.info)
        assert dec.session_key == h(want["session_key"])
        assert plain.hex().startswith(want["plaintext_head"])
    for frame in encrypted[len(expected):]:
        plain = dec.decrypt(frame.info)
        assert plain[:2] == b"\x00\x21" and plain[2] >> 4 == 4
        IP(plain[2:])  # and scapy agrees it is an IPv4 packet
    assert dec.counters["late"] == 0


@pytest.mark.parametrize("capture", CAPTURES)
def test_the_other_directions_key_does_not_decrypt(capture):
    """Keys are per direction (RFC 3079 §3.3): the client's receive key is the server's send
    key, so it must not decrypt what the client sent. (These captures hold no server→client
    MPPE frames; that direction is covered by the pairs in test_mppe_cipher.py.)"""
    v = VERIFY[capture]
    _, client_receive = keys.derive_start_keys(_material(capture), 128, is_server=False)
    dec = MPPEDecryptor(client_receive, 128, stateless=True)
    encrypted = [f for f in ppp_frames(capture) if f.protocol == 0x00FD and f.src == v["peer"]]
    assert encrypted
    plains = [dec.decrypt(f.info) for f in encrypted]
    assert sum(p[:2] == b"\x00\x21" and p[2] >> 4 == 4 for p in plains) <= 1
