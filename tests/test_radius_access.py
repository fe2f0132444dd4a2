"""RADIUS as the PPP verifier, without a network: every method's Access-Request read by scapy's
RADIUS layer (attributes, Microsoft VSAs, User-Password hidden, Message-Authenticator valid),
and the Verdict for crafted replies: MS-CHAP v2's S= and MPPE keys, MS-CHAP v1's keys for every
length equal to what RFC 3079 derives from the password, reply items, MS-CHAP-Error codes,
Access-Challenge and no answer."""

from __future__ import annotations

import ast
import hashlib
import ipaddress
from pathlib import Path

import pytest

from tunnels.errors import LocalProtocolError
from tunnels.mppe.keys import derive_start_keys
from tunnels.ppp.auth import mscrypto
from tunnels.ppp.auth.base import Account, AuthMethod, Credentials, LocalAccounts
from tunnels.ppp.auth.chap import MSCHAPv1Response, MSCHAPv2Response
from tunnels.ppp.auth.verify import v1_material
from tunnels.radius.access import (
    CHALLENGED,
    NO_LM_KEY,
    NO_SUCCESS,
    NasInfo,
    access_request,
    groups_from,
    mppe_start_keys,
    verdict_from,
)
from tunnels.radius.attributes import Attr, Attributes, TunnelType
from tunnels.radius.client import NO_ANSWER, RadiusClient, RequestFailed
from tunnels.radius.msvsa import (
    MS,
    EncryptionPolicy,
    EncryptionTypes,
    IdentString,
    MPPEKeysV1,
    MSCHAP2Response,
    MSCHAPResponse,
)
from tunnels.radius.packet import Code, Packet

SECRET = b"vpnlab-secret"
SERVER = ("10.0.0.5", 1812)
USER, PASSWORD = "bob", "hello"
NAS = NasInfo("vpnlab", "192.0.2.1", 7, TunnelType.PPTP, "198.51.100.20", "192.0.2.1")
ACH16 = bytes(range(0x10, 0x20))
PCH16 = bytes(range(0x40, 0x50))
CH8 = bytes(range(0xA0, 0xA8))


def counter_random():
    state = [0]

    def random(n: int) -> bytes:
        state[0] += 1
        return bytes((state[0] * 13 + i) % 256 for i in range(n))
    return random


def credentials(method: AuthMethod, password: str = PASSWORD, username: str = USER,
                ) -> Credentials:
    if method is AuthMethod.PAP:
        return Credentials(method, username, password=password.encode())
    if method in (AuthMethod.CHAP, AuthMethod.EAP_MD5):
        response = hashlib.md5(bytes([5]) + password.encode() + ACH16).digest()
        return Credentials(method, username, 5, ACH16, response)
    if method is AuthMethod.MSCHAP:
        nt = mscrypto.nt_challenge_response_v1(CH8, password)
        return Credentials(method, username, 6, CH8, MSCHAPv1Response(bytes(24), nt).encode())
    nt = mscrypto.generate_nt_response(ACH16, PCH16, username, password)
    return Credentials(method, username, 9, ACH16, MSCHAPv2Response(PCH16, nt).encode())


def sent(creds: Credentials) -> tuple[RadiusClient, bytes]:
    client = RadiusClient([(*SERVER, SECRET)], random=counter_random())
    client.authenticate(access_request(creds, NAS), 0.0)
    [(dest, datagram)] = client.datagrams_to_send()
    assert dest == SERVER
    return client, datagram


def reply(client: RadiusClient, datagram: bytes, code: Code, attrs) -> object:
    request = Packet.decode(datagram, SECRET)
    items = [(Attr.MESSAGE_AUTHENTICATOR, b""), *attrs]
    raw = Packet(code, request.identifier, Attributes(items)).encode(
        SECRET, request.authenticator, random=lambda n: b"\x85" * n)
    client.receive_datagram(SERVER, raw, 0.1)
    event = client.next_event()
    assert event is not None, client.counters
    return event


# Access-Request, read by scapy ----------------------------------------------------------------

def scapy_attributes(datagram: bytes) -> tuple[dict, dict]:
    from scapy.layers.radius import Radius, RadiusAttr_Message_Authenticator

    pkt = Radius(datagram)
    assert (pkt.code, pkt.len) == (1, len(datagram))
    mac = bytes(pkt[RadiusAttr_Message_Authenticator].value)
    assert RadiusAttr_Message_Authenticator.compute_message_authenticator(
        Radius(datagram), datagram[4:20], SECRET) == mac
    plain = {a.type: a.value for a in pkt.attributes if a.type != 26}
    vendor = {(a.vendor_id, a.vendor_type): bytes(a.value) for a in pkt.attributes
              if a.type == 26}
    return plain, vendor


def check_nas(plain: dict) -> None:
    assert plain[4] == "192.0.2.1" and bytes(plain[32]) == b"vpnlab"
    assert plain[5] == 7 and plain[61] == 5 and plain[6] == 2 and plain[7] == 1
    assert bytes(plain[64]) == b"\0\0\0\x01" and bytes(plain[65]) == b"\0\0\0\x01"
    assert bytes(plain[66]) == b"198.51.100.20" and bytes(plain[31]) == b"198.51.100.20"
    assert bytes(plain[30]) == b"192.0.2.1" and bytes(plain[67]) == b"192.0.2.1"
    assert bytes(plain[1]) == USER.encode()


def test_pap_request_hides_the_password() -> None:
    _, datagram = sent(credentials(AuthMethod.PAP))
    plain, vendor = scapy_attributes(datagram)
    check_nas(plain)
    assert not vendor and 3 not in plain
    hidden = bytes(plain[2])
    assert len(hidden) == 16 and PASSWORD.encode() not in datagram
    pad = hashlib.md5(SECRET + datagram[4:20]).digest()
    assert bytes(a ^ b for a, b in zip(hidden, pad, strict=True)).rstrip(b"\0") == b"hello"


@pytest.mark.parametrize("method", [AuthMethod.CHAP, AuthMethod.EAP_MD5])
def test_chap_and_eap_md5_requests_carry_chap_password_and_challenge(method) -> None:
    creds = credentials(method)
    _, datagram = sent(creds)
    plain, vendor = scapy_attributes(datagram)
    check_nas(plain)
    assert bytes(plain[3]) == bytes([5]) + creds.response and bytes(plain[60]) == ACH16
    assert 2 not in plain and not vendor
    # what a RADIUS server checks (RFC 2865 §5.3): MD5(ident ‖ password ‖ challenge)
    assert hashlib.md5(bytes(plain[3])[:1] + b"hello" + bytes(plain[60])).digest() == \
        bytes(plain[3])[1:]


def test_mschap_v1_request_rfc2548_2_1() -> None:
    creds = credentials(AuthMethod.MSCHAP)
    _, datagram = sent(creds)
    plain, vendor = scapy_attributes(datagram)
    check_nas(plain)
    assert vendor[(311, 11)] == CH8
    value = vendor[(311, 1)]
    nt = mscrypto.nt_challenge_response_v1(CH8, PASSWORD)
    assert value == bytes([6, 1]) + bytes(24) + nt  # Ident, Flags (use NT), LM, NT
    decoded = Packet.decode(datagram, SECRET).attributes.get(MS.MS_CHAP_RESPONSE)
    assert decoded == MSCHAPResponse(6, bytes(24), nt, 1)


def test_mschap_v2_request_rfc2548_2_3_2() -> None:
    creds = credentials(AuthMethod.MSCHAPV2)
    _, datagram = sent(creds)
    plain, vendor = scapy_attributes(datagram)
    check_nas(plain)
    nt = mscrypto.generate_nt_response(ACH16, PCH16, USER, PASSWORD)
    assert vendor[(311, 11)] == ACH16
    assert vendor[(311, 25)] == bytes([9, 0]) + PCH16 + bytes(8) + nt
    decoded = Packet.decode(datagram, SECRET).attributes.get(MS.MS_CHAP2_RESPONSE)
    assert decoded == MSCHAP2Response(9, PCH16, nt, 0)


def test_l2tp_and_nas_identifier_only() -> None:
    nas = NasInfo("vpnlab", None, 42, TunnelType.L2TP, "203.0.113.9", "192.0.2.1")
    attrs = access_request(credentials(AuthMethod.PAP), nas)
    assert attrs.get(Attr.TUNNEL_TYPE) == TunnelType.L2TP and attrs.get(Attr.NAS_PORT) == 42
    assert Attr.NAS_IP_ADDRESS not in attrs
    with pytest.raises(LocalProtocolError, match="NAS-Identifier or NAS-IP-Address"):
        NasInfo(None, None, 1, TunnelType.PPTP, "a", "b")


def test_empty_pap_password_is_our_callers_error() -> None:
    with pytest.raises(LocalProtocolError, match="empty password"):
        access_request(credentials(AuthMethod.PAP, password=""), NAS)


# Verdicts -------------------------------------------------------------------------------------

def v2_accept(creds: Credentials, password: str = PASSWORD, ident: int | None = None,
              message: str | None = None) -> list:
    response = MSCHAPv2Response.decode(creds.response)
    s = mscrypto.generate_authenticator_response(password, response.nt_response, PCH16,
                                                 ACH16, USER)
    local = LocalAccounts({USER: Account(password)}).verify(creds)
    send, recv = derive_start_keys(local.mppe_material, 128, is_server=True)
    return [(MS.MS_CHAP2_SUCCESS, IdentString(creds.identifier if ident is None else ident,
                                              message or s)),
            (MS.MS_MPPE_SEND_KEY, send), (MS.MS_MPPE_RECV_KEY, recv),
            (MS.MS_MPPE_ENCRYPTION_POLICY, EncryptionPolicy.ALLOWED),
            (MS.MS_MPPE_ENCRYPTION_TYPES, int(EncryptionTypes.RC4_40 | EncryptionTypes.RC4_128))]


def test_mschap_v2_accept_gives_s_and_keys_equal_to_the_local_verifier() -> None:
    creds = credentials(AuthMethod.MSCHAPV2)
    client, datagram = sent(creds)
    verdict = verdict_from(reply(client, datagram, Code.ACCESS_ACCEPT, v2_accept(creds)), creds)
    local = LocalAccounts({USER: Account(PASSWORD)}).verify(creds)
    assert verdict.success and verdict.authenticator_response == local.authenticator_response
    assert verdict.authenticator_response.startswith("S=") and \
        len(verdict.authenticator_response) == 42
    for bits in (40, 56, 128):  # the salted keys decrypted, then cut to the negotiated length
        assert mppe_start_keys(verdict, bits) == derive_start_keys(local.mppe_material, bits,
                                                                   is_server=True), bits
    assert verdict.mppe_material is None
    assert verdict.authorization.encryption == ("none", "basic", "strongest")


def test_mschap_v2_success_s_is_upper_case_and_m_is_dropped() -> None:
    creds = credentials(AuthMethod.MSCHAPV2)
    client, datagram = sent(creds)
    attrs = v2_accept(creds)
    s = attrs[0][1].message
    lower = "S=" + s[2:].lower() + " M=welcome"
    attrs[0] = (MS.MS_CHAP2_SUCCESS, IdentString(creds.identifier, lower))
    verdict = verdict_from(reply(client, datagram, Code.ACCESS_ACCEPT, attrs), creds)
    assert verdict.authenticator_response == s


@pytest.mark.parametrize("variant", ["missing", "other ident", "no S="])
def test_mschap_v2_accept_without_a_proper_success_is_a_refusal(variant: str) -> None:
    creds = credentials(AuthMethod.MSCHAPV2)
    client, datagram = sent(creds)
    attrs = v2_accept(creds)
    if variant == "missing":
        attrs = attrs[1:]
    elif variant == "other ident":
        attrs[0] = (MS.MS_CHAP2_SUCCESS, IdentString(creds.identifier + 1, attrs[0][1].message))
    else:
        attrs[0] = (MS.MS_CHAP2_SUCCESS, IdentString(creds.identifier, "welcome"))
    verdict = verdict_from(reply(client, datagram, Code.ACCESS_ACCEPT, attrs), creds)
    assert not verdict.success and verdict.error_code == 691
    assert verdict.mppe_keys is None
    if variant == "missing":
        assert verdict.message == NO_SUCCESS
    else:
        assert "MS-CHAP2-Success" in verdict.message


def test_mschap_v1_accept_keys_for_every_length_equal_rfc3079_from_the_password() -> None:
    creds = credentials(AuthMethod.MSCHAP)
    client, datagram = sent(creds)
    # RFC 2548 §2.4.1 with the LM hash known: LM key = LmPasswordHash[:8],
    # NT key = NtPasswordHashHash
    keys = MPPEKeysV1(mscrypto.lm_password_hash(PASSWORD)[:8],
                      mscrypto.hash_nt_password_hash(mscrypto.nt_password_hash(PASSWORD)))
    event = reply(client, datagram, Code.ACCESS_ACCEPT, [(MS.MS_CHAP_MPPE_KEYS, keys)])
    verdict = verdict_from(event, creds)
    assert verdict.success and verdict.authenticator_response == ""
    local = v1_material(PASSWORD, CH8)
    for bits in (40, 56, 128):
        assert mppe_start_keys(verdict, bits) == derive_start_keys(local, bits, True), bits
    # and what the engine would do with the material alone for 40/56 bits
    assert derive_start_keys(verdict.mppe_material, 40, True) == derive_start_keys(local, 40,
                                                                                   True)
    assert verdict.mppe_keys == derive_start_keys(local, 128, True)


def test_mschap_v1_all_zero_lm_key_leaves_only_128_bits() -> None:
    """FreeRADIUS 3.x always sends eight zeros as the LM key."""
    creds = credentials(AuthMethod.MSCHAP)
    client, datagram = sent(creds)
    keys = MPPEKeysV1(bytes(8), mscrypto.hash_nt_password_hash(
        mscrypto.nt_password_hash(PASSWORD)))
    verdict = verdict_from(reply(client, datagram, Code.ACCESS_ACCEPT,
                                 [(MS.MS_CHAP_MPPE_KEYS, keys)]), creds)
    assert verdict.success
    assert mppe_start_keys(verdict, 128) == derive_start_keys(v1_material(PASSWORD, CH8), 128,
                                                              True)
    for bits in (40, 56):
        with pytest.raises(LocalProtocolError) as failure:
            mppe_start_keys(verdict, bits)
        assert str(failure.value).startswith(NO_LM_KEY.format(bits=bits))


def test_accept_without_keys_gives_no_mppe() -> None:
    creds = credentials(AuthMethod.MSCHAP)
    client, datagram = sent(creds)
    verdict = verdict_from(reply(client, datagram, Code.ACCESS_ACCEPT, []), creds)
    assert verdict.success and verdict.mppe_keys is None and verdict.mppe_material is None
    with pytest.raises(LocalProtocolError, match="no 128-bit MPPE keys"):
        mppe_start_keys(verdict, 128)


@pytest.mark.parametrize("method", [AuthMethod.PAP, AuthMethod.CHAP, AuthMethod.EAP_MD5])
def test_accept_with_reply_items_gives_the_authorization(method) -> None:
    creds = credentials(method)
    client, datagram = sent(creds)
    event = reply(client, datagram, Code.ACCESS_ACCEPT, [
        (Attr.FRAMED_IP_ADDRESS, ipaddress.IPv4Address("10.9.0.7")),
        (Attr.SESSION_TIMEOUT, 3600), (Attr.IDLE_TIMEOUT, 600),
        (Attr.CLASS, b"gold"), (Attr.CLASS, b"\x00\x01binary"),
        (Attr.FILTER_ID, "vpn-users"), (Attr.FILTER_ID, "engineers"),
        (Attr.REPLY_MESSAGE, "Welcome, "), (Attr.REPLY_MESSAGE, "bob")])
    verdict = verdict_from(event, creds)
    auth = verdict.authorization
    assert verdict.success and verdict.mppe_keys is None and verdict.message == "Welcome, bob"
    assert (auth.peer_address, auth.session_timeout, auth.idle_timeout) == ("10.9.0.7", 3600.0,
                                                                            600.0)
    assert auth.class_ == (b"gold", b"\x00\x01binary") and auth.encryption is None
    assert "10.0.0.5:1812" in auth.detail
    assert groups_from(event) == ("vpn-users", "engineers")
    assert groups_from(event.attributes) == groups_from(event)


@pytest.mark.parametrize("address", ["255.255.255.254", "255.255.255.255"])
def test_framed_ip_address_meaning_the_nas_chooses(address: str) -> None:
    creds = credentials(AuthMethod.PAP)
    client, datagram = sent(creds)
    event = reply(client, datagram, Code.ACCESS_ACCEPT,
                  [(Attr.FRAMED_IP_ADDRESS, ipaddress.IPv4Address(address))])
    assert verdict_from(event, creds).authorization.peer_address is None


def test_encryption_required_leaves_none_out() -> None:
    creds = credentials(AuthMethod.MSCHAPV2)
    client, datagram = sent(creds)
    attrs = v2_accept(creds)[:3] + [
        (MS.MS_MPPE_ENCRYPTION_POLICY, EncryptionPolicy.REQUIRED),
        (MS.MS_MPPE_ENCRYPTION_TYPES, int(EncryptionTypes.RC4_128 | EncryptionTypes.RC4_56))]
    verdict = verdict_from(reply(client, datagram, Code.ACCESS_ACCEPT, attrs), creds)
    assert verdict.authorization.encryption == ("strong", "strongest")


@pytest.mark.parametrize("error, code", [("E=691 R=0 C=00112233445566778899AABBCCDDEEFF V=3",
                                          691),
                                         ("E=649 R=0 V=3 M=no dial-in", 649),
                                         ("E=648 R=0 V=2", 648), ("garbage", 691)])
def test_reject_takes_the_code_from_ms_chap_error(error: str, code: int) -> None:
    creds = credentials(AuthMethod.MSCHAPV2, password="wrong")
    client, datagram = sent(creds)
    event = reply(client, datagram, Code.ACCESS_REJECT,
                  [(MS.MS_CHAP_ERROR, IdentString(creds.identifier, error))])
    verdict = verdict_from(event, creds)
    assert not verdict.success and verdict.error_code == code
    assert verdict.message == ("no dial-in" if code == 649 else
                               "garbage" if error == "garbage" else "RADIUS Access-Reject")


def test_reject_without_ms_chap_error_is_691_with_the_reply_message() -> None:
    creds = credentials(AuthMethod.PAP, password="wrong")
    client, datagram = sent(creds)
    event = reply(client, datagram, Code.ACCESS_REJECT,
                  [(Attr.REPLY_MESSAGE, "account locked")])
    verdict = verdict_from(event, creds)
    assert (verdict.success, verdict.error_code, verdict.message) == (False, 691,
                                                                      "account locked")


def test_challenge_is_a_refusal_saying_we_do_not_proxy_it() -> None:
    creds = credentials(AuthMethod.PAP)
    client, datagram = sent(creds)
    event = reply(client, datagram, Code.ACCESS_CHALLENGE, [(Attr.STATE, b"x")])
    verdict = verdict_from(event, creds)
    assert (verdict.success, verdict.error_code, verdict.message) == (False, 691, CHALLENGED)


def test_no_answer_is_691_naming_the_servers() -> None:
    creds = credentials(AuthMethod.PAP)
    client = RadiusClient([("10.0.0.5", 1812, SECRET), ("10.0.0.6", 1812, SECRET)],
                          timeout=1.0, retries=1, random=counter_random())
    client.authenticate(access_request(creds, NAS), 0.0)
    now = 0.0
    while (event := client.next_event()) is None:
        now += 1.0
        client.handle_timer(now)
    assert isinstance(event, RequestFailed)
    verdict = verdict_from(event, creds)
    assert (verdict.success, verdict.error_code) == (False, 691)
    assert verdict.message == f"{NO_ANSWER} (tried 10.0.0.5:1812, 10.0.0.6:1812)"


def test_the_new_modules_do_no_io() -> None:
    root = Path(__file__).parents[1] / "tunnels"
    for path in (root / "radius" / "access.py", root / "accounting.py"):
        tree = ast.parse(path.read_text())
        names = {a.name.split(".")[0] for n in ast.walk(tree)
                 if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
        names |= {n.module.split(".")[0] for n in ast.walk(tree)
                  if isinstance(n, ast.ImportFrom) and n.module}
        assert not names & {"socket", "asyncio", "time", "subprocess", "select", "threading",
                            "os"}, path
