"""MPPE: RFC 3079 key vectors, cipher pairs with loss, engines with CCP, and Windows traffic."""

from __future__ import annotations

import json
import random as _random
from pathlib import Path

import pytest
from scapy.layers.inet import IP
from scapy.utils import rdpcap

from tests.test_ppp_engine import client, connect, server
from tunnels.errors import RemoteProtocolError
from tunnels.gre.header import GREPacket
from tunnels.mppe import keys
from tunnels.mppe.cipher import MPPEDecryptor, MPPEEncryptor
from tunnels.ppp import events as ev
from tunnels.ppp.auth import mscrypto
from tunnels.ppp.auth.base import AuthMethod, MPPEMaterial
from tunnels.ppp.auth.chap import ChapPacket
from tunnels.ppp.config import EncryptionLevel
from tunnels.ppp.engine import split_frame

DATA = Path(__file__).parent / "data"
VECTORS = json.loads((DATA / "rfc3079_mppe_keys.json").read_text())


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


@pytest.mark.parametrize("bits, section, key, test", [
    (40, "mschapv2_3_5_1_40bit", "SendSessionKey40", "rc4_SendSessionKey40_test_message"),
    (56, "mschapv2_3_5_2_56bit", "SendSessionKey56", "rc4_test_message_computed"),
    (128, "mschapv2_3_5_3_128bit", "SendSessionKey128", "rc4_SendSessionKey128_test_message"),
])
def test_rfc3079_mschapv2_keys(bits, section, key, test):
    iv = VECTORS["mschapv2_initial_values_3_5"]
    assert keys.master_key_v2(h(iv["PasswordHash"]), h(iv["NT_Response"])) == h(iv["MasterKey"])
    material = MPPEMaterial(2, h(iv["PasswordHash"]), nt_response=h(iv["NT_Response"]))
    send, receive = keys.derive_start_keys(material, bits, is_server=True)
    session = keys.initial_session_key(send, bits)
    assert session == h(VECTORS[section][key])
    assert keys.rc4(session, b"test message") == h(VECTORS[section][test])
    client_receive = keys.derive_start_keys(material, bits, is_server=False)[1]
    assert client_receive == send  # the server's send key is the client's receive key


def test_rfc3079_mschapv1_keys():
    lm = mscrypto.lm_password_hash("clientPass")
    assert lm == h(VECTORS["mschapv1_2_5_1_40bit"]["PasswordHash"])
    v = VECTORS["mschapv1_2_5_3_128bit"]
    material = MPPEMaterial(1, mscrypto.nt_password_hash("clientPass"),
                            challenge=h(v["Challenge"]), lm_password_hash=lm)
    start, _ = keys.derive_start_keys(material, 128, True)
    assert start == h(v["InitialSessionKey_correct"])  # RFC erratum: "ac c1", not "ac ca"
    assert keys.initial_session_key(start, 128) == h(v["CurrentSessionKey_step5"])
    for bits, section, step in ((40, "mschapv1_2_5_1_40bit", "SessionKey_step4_40bit"),
                                (56, "mschapv1_2_5_2_56bit", "SessionKey_step4_56bit")):
        start, _ = keys.derive_start_keys(material, bits, True)
        assert keys.initial_session_key(start, bits) == h(VECTORS[section][step])


def test_server_key_change_chain_matches_the_collection():
    chain = VECTORS["derived_not_published"]["server_send_session_key128_chain"]
    start = h(VECTORS["mschapv2_3_5_3_128bit"]["SendStartKey128"])
    key = keys.initial_session_key(start, 128)
    for expected in chain:
        assert key == h(expected)
        key = keys.next_session_key(start, key, 128)


KEY = bytes(range(16))


@pytest.mark.parametrize("bits", [40, 56, 128])
@pytest.mark.parametrize("stateless", [True, False], ids=["stateless", "stateful"])
def test_cipher_pair_in_order_through_wraps(bits, stateless):
    enc, dec = MPPEEncryptor(KEY, bits, stateless), MPPEDecryptor(KEY, bits, stateless)
    for i in range(5000):  # past the 256-packet flag and the 4096 count wrap
        data = b"\x00\x21" + i.to_bytes(4, "big") * 5
        packet = enc.encrypt(data)
        assert packet[2:] != data[:len(packet) - 2]
        assert dec.decrypt(packet) == data
    assert enc.key_changes == dec.key_changes


def test_stateless_survives_loss_and_drops_late_packets():
    enc, dec = MPPEEncryptor(KEY, 128, True), MPPEDecryptor(KEY, 128, True)
    packets = [enc.encrypt(b"\x00\x21" + bytes([i]) * 20) for i in range(50)]
    r = _random.Random(1)
    delivered = [i for i in range(50) if r.random() > 0.3]
    for i in delivered:
        assert dec.decrypt(packets[i]) == b"\x00\x21" + bytes([i]) * 20
    with pytest.raises(RemoteProtocolError):
        dec.decrypt(packets[delivered[0]])  # late / replayed
    assert dec.counters["lost"] == 50 - len(delivered) - (49 - delivered[-1])


def test_stateful_loss_asks_for_a_reset_and_resynchronises():
    enc, dec = MPPEEncryptor(KEY, 128, False), MPPEDecryptor(KEY, 128, False)
    assert dec.decrypt(enc.encrypt(b"\x00\x21a")) == b"\x00\x21a"
    enc.encrypt(b"\x00\x21lost")
    with pytest.raises(RemoteProtocolError) as info:
        dec.decrypt(enc.encrypt(b"\x00\x21b"))
    assert info.value.wire_answer.kind == "ccp-reset-request"
    with pytest.raises(RemoteProtocolError):
        dec.decrypt(enc.encrypt(b"\x00\x21c"))  # still discarding: not flushed
    enc.reset()  # the Reset-Request arrived
    for _ in range(300):  # across a flag packet
        assert dec.decrypt(enc.encrypt(b"\x00\x21d")) == b"\x00\x21d"


def _material_from_capture(path, password):
    """MS-CHAPv2 Challenge and Response from a capture; NT-Response checked on the way."""
    challenge = response = None
    for p in rdpcap(str(path)):
        if IP not in p or p[IP].proto != 47:
            continue
        gre = GREPacket.decode(bytes(p[IP])[p[IP].ihl * 4:p[IP].len])
        if not gre.payload:
            continue
        protocol, info = split_frame(gre.payload)
        if protocol == 0xC223:
            chap = ChapPacket.decode(info)
            if chap.code == 1:
                challenge = chap.value
            elif chap.code == 2:
                response = chap
    assert challenge and response
    user = response.name.decode()
    peer_challenge, nt = response.value[:16], response.value[24:48]
    assert mscrypto.generate_nt_response(challenge, peer_challenge, user, password) == nt
    return MPPEMaterial(2, mscrypto.nt_password_hash(password), nt_response=nt)


@pytest.mark.parametrize("capture, password", [
    ("lulu-password-pptp.pcap", "password"),
])
def test_windows_client_traffic_decrypts(capture, password):
    """Windows 7 → pptpd: our keys and our stateless MPPE decrypt the client's data frames."""
    path = DATA / "pptp" / capture
    material = _material_from_capture(path, password)
    _, server_receive = keys.derive_start_keys(material, 128, is_server=True)
    dec = MPPEDecryptor(server_receive, 128, True)
    client_ip = None
    decrypted = 0
    for p in rdpcap(str(path)):
        if IP not in p or p[IP].proto != 47:
            continue
        gre = GREPacket.decode(bytes(p[IP])[p[IP].ihl * 4:p[IP].len])
        if not gre.payload:
            continue
        protocol, info = split_frame(gre.payload)
        if protocol == 0xC223 and client_ip is None and ChapPacket.decode(info).code == 2:
            client_ip = p[IP].src
        if protocol == 0x00FD and p[IP].src == client_ip:
            plain = dec.decrypt(info)
            assert plain[:2] == b"\x00\x21" and plain[2] >> 4 == 4  # IPv4 inside
            decrypted += 1
    assert decrypted >= 6


MATRIX = [(a, lv, sl) for a in (AuthMethod.MSCHAP, AuthMethod.MSCHAPV2)
          for lv in (EncryptionLevel.BASIC, EncryptionLevel.STRONG, EncryptionLevel.STRONGEST)
          for sl in (True, False)]


@pytest.mark.parametrize("method, level, stateless", MATRIX,
                         ids=[f"{a.value}-{lv.value}-{'stateless' if s else 'stateful'}"
                              for a, lv, s in MATRIX])
def test_engines_negotiate_mppe_and_carry_only_ciphertext(method, level, stateless):
    s = server((method,), encryption=level, mppe_stateless=stateless)
    c = client((method,), encryption=level, mppe_stateless=stateless)
    pair = connect(s, c)
    assert pair.of("a", ev.EncryptionNegotiated) == [
        ev.EncryptionNegotiated(level.key_bits, stateless)]
    seen = []
    pair.drop = lambda side, frame: seen.append(frame) or False
    for i in range(300):
        packet = b"\x45" + bytes(19) + b"secret-%d" % i
        c.send_datagram(packet, pair.now)
        s.send_datagram(packet, pair.now)
    pair.run(pair.now + 1)
    assert len(pair.of("a", ev.DatagramReceived)) == 300
    assert len(pair.of("b", ev.DatagramReceived)) == 300
    assert not any(b"secret" in f for f in seen)
    assert {f[2:4] for f in seen if f[2:4] in (b"\x00\x21", b"\x00\xfd")} == {b"\x00\xfd"}


def test_stateful_loss_on_the_link_recovers_with_reset_request():
    s = server(encryption=EncryptionLevel.STRONGEST, mppe_stateless=False)
    c = client(encryption=EncryptionLevel.STRONGEST, mppe_stateless=False)
    pair = connect(s, c)
    dropped = {"n": 0}

    def drop_one_mppe(side, frame):
        if side == "b" and frame[2:4] == b"\x00\xfd" and dropped["n"] == 0:
            dropped["n"] = 1
            return True
        return False

    pair.drop = drop_one_mppe
    for i in range(20):
        c.send_datagram(b"\x45" + bytes(19) + bytes([i]), pair.now)
        pair.run(pair.now + 0.01)
    got = [e.packet[-1] for e in pair.of("a", ev.DatagramReceived)]
    assert 0 not in got and got[-1] == 19  # the lost one is gone; the rest flows again
    assert s.counters["ccp_resets_sent"] >= 1


def test_encryption_required_with_pap_terminates():
    s = server((AuthMethod.PAP,), encryption=EncryptionLevel.STRONGEST)
    c = client((AuthMethod.PAP,), encryption=EncryptionLevel.STRONGEST)
    pair = connect(s, c, until=30)
    reasons = [e.reason for e in pair.of("a", ev.LinkTerminated)]
    assert reasons and "MPPE needs MS-CHAP" in reasons[0]
    assert not pair.of("b", ev.NetworkOpened)


def test_server_requires_encryption_client_refuses():
    s = server(encryption=EncryptionLevel.STRONGEST)
    c = client(encryption=EncryptionLevel.NONE)
    pair = connect(s, c, until=60)
    reasons = [e.reason for e in pair.of("a", ev.LinkTerminated)]
    assert reasons and "encryption required" in reasons[0]
    assert not pair.of("a", ev.DatagramReceived)


def test_optional_encryption_falls_back_to_clear_with_a_peer_without_mppe():
    s = server(encryption=EncryptionLevel.OPTIONAL)
    c = client(encryption=EncryptionLevel.NONE)
    pair = connect(s, c, until=10)
    assert pair.of("a", ev.NetworkOpened) and not pair.of("a", ev.EncryptionNegotiated)


def test_key_length_mismatch_fails_with_reason():
    s = server(encryption=EncryptionLevel.STRONGEST)
    c = client(encryption=EncryptionLevel.BASIC)
    pair = connect(s, c, until=60)
    reasons = [e.reason for e in pair.of("a", ev.LinkTerminated)]
    assert reasons and "encryption required" in reasons[0]
