"""CCP's MPPE option (RFC 3078 §2) judged by encryption level, and CCP's Reset codes."""

from __future__ import annotations

import pytest

from tests.test_ppp_engine import client, connect, server
from tunnels.mppe.options import MPPE_C, MPPE_H, MPPE_L, MPPE_M, MPPE_S, encode_bits
from tunnels.ppp.ccp import CCPPolicy
from tunnels.ppp.config import EncryptionLevel
from tunnels.ppp.framing import build_frame, split_frame
from tunnels.ppp.packets import Code, ControlPacket, Option


def mppe(bits: int) -> list[Option]:
    return [Option(18, encode_bits(bits))]


@pytest.mark.parametrize("allowed, stateless, offered, verdict, answer", [
    # a Windows client offering every length, stateless, and MPPC: nak to our one choice
    ((128,), True, MPPE_H | MPPE_S | MPPE_M | MPPE_L | MPPE_C, Code.CONFIGURE_NAK,
     MPPE_H | MPPE_S),
    ((128, 56, 40), True, MPPE_H | MPPE_M | MPPE_L, Code.CONFIGURE_NAK, MPPE_H | MPPE_M),
    ((40,), False, MPPE_L, Code.CONFIGURE_ACK, MPPE_L),
    ((56,), False, MPPE_H | MPPE_M, Code.CONFIGURE_NAK, MPPE_M),  # we want stateful
])
def test_judging_the_peers_offer(allowed, stateless, offered, verdict, answer):
    v = CCPPolicy(allowed, stateless).judge(mppe(offered))
    assert v.code is verdict and v.options == mppe(answer)


def test_other_compression_options_are_rejected():
    deflate, mppc_alone = Option(26, b"\x78\x00"), Option(18, b"\x00\x00\x00\x01")
    v = CCPPolicy((128,)).judge([deflate, Option(18, encode_bits(MPPE_S | MPPE_H))])
    assert v.code is Code.CONFIGURE_REJECT and v.options == [deflate]
    assert CCPPolicy((128,)).judge([Option(18, b"\x01")]).code is Code.CONFIGURE_REJECT
    assert CCPPolicy((128,)).judge([mppc_alone]).code is Code.CONFIGURE_NAK


def test_we_never_offer_mppc_and_follow_a_nak_within_policy():
    p = CCPPolicy((128, 56, 40), stateless=True)
    assert p.request() == mppe(MPPE_H | MPPE_S)
    p.naked(mppe(MPPE_H | MPPE_L))
    assert p.request() == mppe(MPPE_H | MPPE_L) and not p.failure
    strict = CCPPolicy((128,), stateless=True)
    strict.naked(mppe(MPPE_H | MPPE_L))
    assert "policy allows" in strict.failure
    strict.rejected(mppe(MPPE_H | MPPE_S))
    assert strict.failure == "the peer rejected MPPE"


def test_reset_request_is_acked_with_its_identifier():
    s = server(encryption=EncryptionLevel.STRONGEST, mppe_stateless=False)
    c = client(encryption=EncryptionLevel.STRONGEST, mppe_stateless=False)
    pair = connect(s, c)
    s.receive_frame(build_frame(0x80FD, ControlPacket(Code.RESET_REQUEST, 77).encode()),
                    pair.now)
    protocol, info = split_frame(s.frames_to_send()[0])
    assert protocol == 0x80FD and ControlPacket.decode(info) == ControlPacket(Code.RESET_ACK, 77)


def test_ccp_is_protocol_rejected_when_encryption_is_off():
    s, c = server(), client()
    pair = connect(s, c)
    s.receive_frame(build_frame(0x80FD, ControlPacket(1, 1, b"\x12\x06\x01\x00\x00\x40")
                                .encode()), pair.now)
    protocol, info = split_frame(s.frames_to_send()[0])
    reject = ControlPacket.decode(info)
    assert protocol == 0xC021 and reject.code == Code.PROTOCOL_REJECT
    assert reject.data[:2] == b"\x80\xfd"
