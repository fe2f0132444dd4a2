"""With MPPE required, IPCP waits for CCP (as pppd does), yet answers a peer that does not.

Found against pppd in the interop matrix: pppd starts IPCP only once CCP is up and answers an
earlier IPCP Configure-Request with Terminate-Ack, so our early request cost a 3 s restart
timeout in both directions (client and server).
"""

from __future__ import annotations

import pytest

from tunnels.ppp import events as ev
from tunnels.ppp.auth.base import AuthMethod
from tunnels.ppp.config import EncryptionLevel
from tunnels.ppp.engine import build_frame, split_frame
from tunnels.ppp.fsm import State

from tests.test_ppp_engine import Pair, client, server

IPCP, CCP = 0x8021, 0x80FD
STRONGEST = {"encryption": EncryptionLevel.STRONGEST}


class Recorder(Pair):
    """Pair that logs (side, protocol, code) of every control frame in wire order."""

    def __init__(self, a, b):  # type: ignore[no-untyped-def]
        super().__init__(a, b)
        self.wire: list[tuple[str, int, int]] = []

        def log(side: str, frame: bytes) -> bool:
            protocol, info = split_frame(frame)
            if protocol in (IPCP, CCP):
                self.wire.append((side, protocol, info[0]))
            return False

        self.drop = log


@pytest.mark.parametrize("side", ["a", "b"], ids=["server", "client"])
def test_no_ipcp_request_before_ccp_is_open_when_mppe_is_required(side):
    pair = Recorder(server(**STRONGEST), client(**STRONGEST))
    pair.a.open(0.0)
    pair.b.open(0.0)
    pair.run(5.0)
    mine = [(p, code) for s, p, code in pair.wire if s == side]
    first_ipcp = mine.index((IPCP, 1))
    # our CCP Configure-Request and the Configure-Ack we sent for the peer's come first
    assert (CCP, 1) in mine[:first_ipcp] and (CCP, 2) in mine[:first_ipcp]
    assert pair.of("a", ev.NetworkOpened) and pair.of("b", ev.NetworkOpened)
    assert pair.now < 1.0  # no restart timeout on the way


def test_an_early_ipcp_request_from_the_peer_is_answered_not_terminate_acked():
    """A peer that sends IPCP before CCP is up (Windows does) gets an answer to it."""
    request = bytes([1, 7, 0, 10, 3, 6, 0, 0, 0, 0])  # Configure-Request, IP-Address 0.0.0.0
    fresh = server(**STRONGEST)
    other = client(**STRONGEST)
    probe = Pair(fresh, other)
    probe.drop = lambda side, frame: split_frame(frame)[0] in (IPCP, CCP)  # CCP never opens
    fresh.open(0.0)
    other.open(0.0)
    probe.run(0.5)
    assert fresh.ipcp.state is State.CLOSED  # held: CCP is not open yet
    fresh.receive_frame(build_frame(IPCP, request), probe.now)
    answers = [split_frame(f) for f in fresh.frames_to_send()]
    codes = [info[0] for protocol, info in answers if protocol == IPCP]
    assert 6 not in codes and 3 in codes  # a Nak with the address to use, no Terminate-Ack


def test_without_required_encryption_ipcp_starts_at_once():
    pair = Recorder(server((AuthMethod.MSCHAPV2,)), client((AuthMethod.MSCHAPV2,)))
    pair.a.open(0.0)
    pair.b.open(0.0)
    pair.run(5.0)
    assert pair.of("b", ev.NetworkOpened)
    assert (("a", IPCP, 1) in pair.wire) and not [w for w in pair.wire if w[1] == CCP]
