"""Real peers' Main Mode openings (strongSwan, Cisco IOS, Openswan; tests/data/ike) fed to
our responder and initiator: their proposals are understood and chosen (or refused with the
right Notify), and their answers accepted by our initiator."""

from __future__ import annotations

import pytest

from tests.test_ike_codecs import isakmp_messages
from tunnels.ipsec.ike import IKEConfig, IKEFailed, IKEResponder, IKESession
from tunnels.ipsec.ike import constants as k
from tunnels.ipsec.ike import payloads as pl

PEER = ("198.51.100.7", 500)
LOCAL = ("192.0.2.1", 500)


def answer(config: IKEConfig, mm1: bytes) -> tuple[pl.Message, IKEResponder]:
    responder = IKEResponder(config, LOCAL)
    responder.receive_datagram(mm1, PEER, 0.0)
    (dst, sport, data), = responder.datagrams_to_send()
    assert dst == PEER and sport == 500
    return pl.decode_plain(data), responder


@pytest.mark.parametrize("capture,kw,chosen", [
    ("l2tp-ipsec.pcap", {}, ("aes-cbc-256", "sha1", 2)),  # strongSwan 5.9.8
    ("ipsec.cap", {}, ("3des-cbc", "sha1", 2)),  # strongSwan both ends
    ("ISAKMP_sa_setup.cap", {"dh_groups": (2, 1), "allow_group1": True},
     ("aes-cbc-128", "sha1", 1)),  # Cisco IOS
])
def test_responder_chooses_a_real_initiators_transform(capture, kw, chosen):
    mm1_bytes = isakmp_messages(capture)[0]
    mm1 = pl.decode_plain(mm1_bytes)
    mm2, responder = answer(IKEConfig(psk=b"x", **kw), mm1_bytes)
    assert mm2.header.exchange == k.ExchangeType.IDENTITY_PROTECTION
    assert mm2.header.icookie == mm1.header.icookie and mm2.header.rcookie != b"\0" * 8
    (proposal,) = mm2.first(pl.SA).proposals
    (transform,) = proposal.transforms
    assert transform in mm1.first(pl.SA).proposals[0].transforms  # returned unchanged
    session = responder.sessions[0]
    assert session.status()["proposal"] == chosen
    vids = [v.data for v in mm2.find(pl.VID)]
    assert k.VID_DPD in vids


def test_cisco_group1_refused_by_default():
    mm2, responder = answer(IKEConfig(psk=b"x"), isakmp_messages("ISAKMP_sa_setup.cap")[0])
    assert mm2.header.exchange == k.ExchangeType.INFORMATIONAL
    assert mm2.first(pl.N).notify_type == k.NotifyType.NO_PROPOSAL_CHOSEN
    assert mm2.header.rcookie == b"\0" * 8
    _, event = responder.next_event()
    assert isinstance(event, IKEFailed) and event.notify == "NO_PROPOSAL_CHOSEN"
    assert responder.sessions == []


def test_strongswan_nat_t_vids_select_rfc3947():
    mm2, _ = answer(IKEConfig(psk=b"x"), isakmp_messages("l2tp-ipsec.pcap")[0])
    assert [v.data for v in mm2.find(pl.VID)] == [k.VID_DPD, k.VID_RFC3947]


def test_openswan_rsa_signature_proposal_needs_rsa_sig():
    mm1 = isakmp_messages("ikev1-certs.pcap")[0]
    mm2, _ = answer(IKEConfig(psk=b"x", ike_hashes=("md5",)), mm1)
    assert mm2.first(pl.N).notify_type == k.NotifyType.NO_PROPOSAL_CHOSEN


def _replay_random(first: bytes):
    """A random source whose first 8 bytes are a captured initiator cookie."""
    import random
    rng = random.Random(1)
    state = {"first": True}

    def rnd(n: int) -> bytes:
        if state["first"] and n == 8:
            state["first"] = False
            return first
        return rng.randbytes(n)
    return rnd


def test_initiator_accepts_strongswans_answer():
    mm1, mm2 = (pl.decode_plain(m) for m in isakmp_messages("l2tp-ipsec.pcap")[:2])
    client = IKESession(IKEConfig(psk=b"x", dh_groups=(2,)), "initiator", ("10.200.4.10", 500),
                        ("10.200.4.20", 500), random=_replay_random(mm1.header.icookie))
    client.start(0.0)
    client.datagrams_to_send()
    client.receive_datagram(isakmp_messages("l2tp-ipsec.pcap")[1], ("10.200.4.20", 500), 0.1)
    (dst, sport, data), = client.datagrams_to_send()
    mm3 = pl.decode_plain(data)
    assert mm3.header.rcookie == mm2.header.rcookie
    assert [type(p).__name__ for p in mm3.payloads] == ["KE", "NONCE", "NAT_D", "NAT_D"]
    assert len(mm3.first(pl.KE).data) == 128
    assert client.status()["proposal"] == ("aes-cbc-256", "sha1", 2)
    assert client.status()["nat"]["mode"] == "rfc"
