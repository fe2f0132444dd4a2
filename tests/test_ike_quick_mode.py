"""Quick Mode requests built by hand against our responder (RFC 2409 §5.5): what a real
initiator may offer and what we accept, choose or refuse, and with which Notify."""

from __future__ import annotations

import random

from tests.test_ike_pairs import Net, cfg
from tunnels.ipsec.ike import ChildSAFailed
from tunnels.ipsec.ike import payloads as pl
from tunnels.ipsec.ike.constants import EncapsulationMode, IDType, NotifyType
from tunnels.ipsec.ike.phase2 import ESPOffer, QuickMode, esp_transform, open_informational
from tunnels.ipsec.ike.config import ESPProposal

CLIENT = ("10.0.0.2", 500)
AES = ESPProposal("aes-cbc-128", "hmac-sha1-96")


def _esp(number: int, mode: int = EncapsulationMode.TRANSPORT, spi: bytes = b"\0\0\x10\0",
         proposal: ESPProposal = AES) -> pl.Proposal:
    return pl.Proposal(number, 3, spi, (esp_transform(1, ESPOffer(proposal, mode, 3600, None,
                                                                   None)),))


def _ids(port: int = 1701, protocol: int = 17) -> list[object]:
    return [pl.ID(IDType.ID_IPV4_ADDR, bytes([10, 0, 0, 2]), protocol, port),
            pl.ID(IDType.ID_IPV4_ADDR, bytes([192, 0, 2, 1]), protocol, port)]


def request(net: Net, proposals: tuple[pl.Proposal, ...], ids: list[object] | None = None,
            corrupt_hash: bool = False) -> tuple[QuickMode, list]:
    client = net.clients[0]
    sa = client._current()
    qm = QuickMode(sa, client.config, True, 0x1234567, lambda: 0x1000, random.Random(2).randbytes)
    qm._ni = b"n" * 32
    body = [pl.SA(proposals), pl.NONCE(qm._ni), *(_ids() if ids is None else ids)]
    payloads = qm._with_hash(lambda rest: qm._mid() + rest, body)
    if corrupt_hash:
        payloads[0] = pl.HASH(b"\0" * 20)
    net.server.receive_datagram(qm._send(payloads), CLIENT, net.now)
    return qm, net.server.datagrams_to_send()


def established() -> Net:
    net = Net(cfg(esp_ciphers=("aes-cbc-128",), esp_integrity=("hmac-sha1-96",)))
    net.run(until=5)
    net.server_events.clear()
    while net.server.next_event():
        pass
    return net


def _notify(net: Net, answer) -> int:
    (_, _, data), = answer
    header, body = pl.decode_header(data)
    return open_informational(net.clients[0]._current(), header, body).first(pl.N).notify_type


def test_bundle_skipped_esp_only_chosen():
    net = established()
    ah = pl.Proposal(1, 2, b"\0\0\x20\0", (pl.Transform(1, 3, ()),))
    qm, answer = request(net, (ah, _esp(1), _esp(2)))
    (_, _, qm2), = answer
    header, body = pl.decode_header(qm2)
    qm.handle(header, body)
    assert qm.result is not None and qm.result.cipher == "aes-cbc-128"
    assert net.server.next_event() is None  # the responder waits for QM3


def test_only_a_bundle_is_no_proposal_chosen():
    net = established()
    ah = pl.Proposal(1, 2, b"\0\0\x20\0", (pl.Transform(1, 3, ()),))
    _, answer = request(net, (ah, _esp(1)))
    assert _notify(net, answer) == NotifyType.NO_PROPOSAL_CHOSEN


def test_tunnel_mode_refused():
    net = established()
    _, answer = request(net, (_esp(1, EncapsulationMode.TUNNEL),))
    assert _notify(net, answer) == NotifyType.NO_PROPOSAL_CHOSEN
    assert isinstance(net.server.next_event()[1], ChildSAFailed)


def test_udp_encapsulated_mode_without_nat_refused():
    net = established()
    _, answer = request(net, (_esp(1, EncapsulationMode.UDP_ENCAPSULATED_TRANSPORT),))
    assert _notify(net, answer) == NotifyType.NO_PROPOSAL_CHOSEN


def test_server_port_any_accepted_and_echoed():
    net = established()
    ids = [_ids()[0], pl.ID(IDType.ID_IPV4_ADDR, bytes([192, 0, 2, 1]), 17, 0)]
    qm, answer = request(net, (_esp(1),), ids)
    (_, _, qm2), = answer
    header, body = pl.decode_header(qm2)
    msg, _ = qm.sa.unseal(header, body, qm.iv)
    assert msg.find(pl.ID) == ids


def test_no_ids_means_the_phase1_addresses():
    net = established()
    qm, answer = request(net, (_esp(1),), ids=[])
    (_, _, qm2), = answer
    header, body = pl.decode_header(qm2)
    qm.handle(header, body)
    assert qm.result is not None


def test_other_traffic_selectors_refused():
    net = established()
    _, answer = request(net, (_esp(1),), _ids(port=500))
    assert _notify(net, answer) == NotifyType.INVALID_ID_INFORMATION
    _, answer = request(net, (_esp(1),), _ids(protocol=6))
    assert _notify(net, answer) == NotifyType.INVALID_ID_INFORMATION


def test_bad_hash_is_dropped_silently():
    """RFC 2409 §5.5: an unauthenticated Quick Mode is not answered (anyone could send it)."""
    net = established()
    _, answer = request(net, (_esp(1),), corrupt_hash=True)
    assert answer == []
    assert net.server.sessions[0].counters["dropped"] == 1
    assert net.server.next_event() is None


def test_pfs_group_we_do_not_have_is_no_proposal_chosen():
    """A PFS group outside dh_groups (here MODP 1536, group 5) is not a transform we can do."""
    net = established()
    offer = ESPOffer(AES, EncapsulationMode.TRANSPORT, 3600, None, 5)
    proposal = pl.Proposal(1, 3, b"\0\0\x10\0", (esp_transform(1, offer),))
    _, answer = request(net, (proposal,))
    assert _notify(net, answer) == NotifyType.NO_PROPOSAL_CHOSEN


def test_pfs_offer_accepted_by_a_responder_without_pfs_config():
    net = established()
    offer = ESPOffer(AES, EncapsulationMode.TRANSPORT, 3600, None, 2)
    proposal = pl.Proposal(1, 3, b"\0\0\x10\0", (esp_transform(1, offer),))
    from tunnels.ipsec.ike import crypto as c
    dh = c.DHKeyPair.generate(2, random.Random(4).randbytes)
    client = net.clients[0]
    sa = client._current()
    qm = QuickMode(sa, client.config, True, 0x7654321, lambda: 0x1000,
                   random.Random(2).randbytes)
    qm._ni, qm._dh = b"n" * 32, dh
    body = [pl.SA((proposal,)), pl.NONCE(qm._ni), pl.KE(dh.public), *_ids()]
    net.server.receive_datagram(qm._send(qm._with_hash(lambda rest: qm._mid() + rest, body)),
                                CLIENT, net.now)
    (_, _, qm2), = net.server.datagrams_to_send()
    header, body_ = pl.decode_header(qm2)
    msg, _ = sa.unseal(header, body_, qm.iv)
    assert msg.first(pl.KE) is not None and len(msg.first(pl.KE).data) == 128


def test_initiator_refuses_other_ids_in_the_answer(monkeypatch):
    """A responder answering for other traffic selectors than ours (here another server
    address) gets INVALID_ID_INFORMATION and no SA."""
    def narrow(self, ids):
        if ids:
            ids[1] = pl.ID(IDType.ID_IPV4_ADDR, bytes([192, 0, 2, 99]), 17, 1701)
    monkeypatch.setattr(QuickMode, "_check_ids", narrow)
    net = Net(cfg())
    net.run(until=10)
    fails = [e for e in net.client_events[0] if isinstance(e, ChildSAFailed)]
    assert fails and fails[0].notify == "INVALID_ID_INFORMATION"
    assert not net.children()[0]


def test_initiator_behind_a_nat_accepts_its_translated_address_in_the_answer(monkeypatch):
    """strongSwan, a transport-mode responder, answers a client behind a NAT with the NAT's
    outside address in IDci (its 'changing received traffic selectors ... due to NAT'):
    the same type, protocol and port, so the SA is set up; another port still is not."""
    from tunnels.ipsec.ike.phase1 import packed

    def translated(port):
        def answer(self, ids):
            if ids:
                ids[0] = pl.ID(IDType.ID_IPV4_ADDR, packed(self.sa.remote[0]), 17, port)
        return answer

    monkeypatch.setattr(QuickMode, "_check_ids", translated(1701))
    net = Net(cfg(), nat=True)
    net.run(until=10)
    assert net.children()[0]
    assert not [e for e in net.client_events[0] if isinstance(e, ChildSAFailed)]
    monkeypatch.setattr(QuickMode, "_check_ids", translated(0))
    net = Net(cfg(), nat=True)
    net.run(until=10)
    fails = [e for e in net.client_events[0] if isinstance(e, ChildSAFailed)]
    assert fails and fails[0].notify == "INVALID_ID_INFORMATION" and not net.children()[0]
