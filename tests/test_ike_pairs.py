"""IKEv1 initiator and responder paired in memory, with a virtual clock and an optional NAT
between them: Main Mode + Quick Mode for every proposal combination, NAT-T, loss,
duplicates, wrong PSK, no common proposal, and both ends agreeing on the keys."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunnels.ipsec.ike import (
    ChildSAEstablished,
    ChildSAFailed,
    IKEConfig,
    IKEFailed,
    IKEResponder,
    IKESession,
    Phase1Established,
)
from tunnels.ipsec.ike import constants as ikc
from tunnels.ipsec.ike import crypto
from tunnels.ipsec.ike import payloads as pl

SERVER = ("192.0.2.1", 500)
CLIENT_ADDR = "10.0.0.2"
NAT_PUBLIC = "203.0.113.5"


def seeded(seed: int) -> Callable[[int], bytes]:
    return random.Random(seed).randbytes


class Net:
    """Clients (initiators) and one IKEResponder; `nat=True` puts a NAPT in front of the
    clients that maps each private (address, port) to a port of NAT_PUBLIC. `drop(i, dgram)`
    decides loss by datagram number; `log` keeps every datagram as (src, dst, bytes)."""

    def __init__(self, cfg_i: IKEConfig, cfg_r: IKEConfig | None = None, nat: bool = False,
                 clients: int = 1, seed: int = 1, start: bool = True):
        self.now = 0.0
        self.nat = nat
        self.server = IKEResponder(cfg_r or cfg_i, SERVER, random=seeded(seed * 1000))
        self.clients = [IKESession(cfg_i, "initiator", (f"10.0.0.{2 + k}", 500), SERVER,
                                   random=seeded(seed + k)) for k in range(clients)]
        self._map: dict[tuple[str, int], tuple[str, int]] = {}
        self.drop: Callable[[int, tuple], bool] = lambda i, d: False
        self.duplicate: Callable[[int, tuple], bool] = lambda i, d: False
        self.log: list[tuple[tuple[str, int], tuple[str, int], bytes]] = []
        self.count = 0
        self.client_events: list[list] = [[] for _ in range(clients)]
        self.server_events: list = []
        if start:
            for c in self.clients:
                c.start(self.now)

    def _outside(self, private: tuple[str, int]) -> tuple[str, int]:
        if not self.nat:
            return private
        if private not in self._map:
            self._map[private] = (NAT_PUBLIC, 30000 + len(self._map))
        return self._map[private]

    def _inside(self, public: tuple[str, int]) -> tuple[str, int] | None:
        if not self.nat:
            return public
        for k, v in self._map.items():
            if v == public:
                return k
        return None

    def transfer(self) -> int:
        moved = 0
        for _ in range(200):
            batch = []
            for k, c in enumerate(self.clients):
                for dst, sport, data in c.datagrams_to_send():
                    batch.append(("up", k, (c.local[0], sport), dst, data))
            for dst, sport, data in self.server.datagrams_to_send():
                batch.append(("down", None, (SERVER[0], sport), dst, data))
            if not batch:
                break
            for direction, _k, src, dst, data in batch:
                self.count += 1
                dgram = (direction, src, dst, data)
                if self.drop(self.count, dgram):
                    continue
                copies = 2 if self.duplicate(self.count, dgram) else 1
                for _ in range(copies):
                    self._deliver(direction, src, dst, data)
                moved += 1
        self._drain_events()
        return moved

    def _deliver(self, direction, src, dst, data) -> None:
        if direction == "up":
            outside = self._outside(src)
            self.log.append((outside, dst, data))
            self.server.receive_datagram(data, outside, self.now)
        else:
            inside = self._inside(dst)
            self.log.append((src, dst, data))
            if inside is None:
                return
            for c in self.clients:
                if c.local[0] == inside[0]:
                    c.receive_datagram(data, src, self.now)
        self._drain_events()

    def _drain_events(self) -> None:
        for k, c in enumerate(self.clients):
            while (e := c.next_event()) is not None:
                self.client_events[k].append(e)
        while (pair := self.server.next_event()) is not None:
            self.server_events.append(pair[1])

    def run(self, until: float = 120.0) -> None:
        """Move datagrams; when none move, advance the clock to the next timer."""
        self.transfer()
        for _ in range(1000):
            timers = [t for t in [c.get_timer() for c in self.clients]
                      + [self.server.get_timer()] if t is not None]
            if not timers or min(timers) > until:
                break
            self.now = max(self.now, min(timers))
            for c in self.clients:
                t = c.get_timer()
                if t is not None and t <= self.now:
                    c.handle_timer(self.now)
            self.server.handle_timer(self.now)
            self.transfer()

    def children(self, k: int = 0) -> tuple[list[ChildSAEstablished], list[ChildSAEstablished]]:
        ci = [e for e in self.client_events[k] if isinstance(e, ChildSAEstablished)]
        cr = [e for e in self.server_events if isinstance(e, ChildSAEstablished)]
        return ci, cr


def cfg(**kw) -> IKEConfig:
    kw.setdefault("psk", b"secret")
    kw.setdefault("dh_groups", (2,))  # group 14 costs CPU: only where it is the point
    return IKEConfig(**kw)


def assert_keys_agree(i: ChildSAEstablished, r: ChildSAEstablished) -> None:
    assert i.spi_out == r.spi_in and i.spi_in == r.spi_out
    assert i.enc_key_out == r.enc_key_in and i.enc_key_in == r.enc_key_out
    assert i.auth_key_out == r.auth_key_in and i.auth_key_in == r.auth_key_out
    assert i.enc_key_in != i.enc_key_out
    assert (i.cipher, i.integrity, i.encapsulation) == (r.cipher, r.integrity, r.encapsulation)


def test_main_and_quick_mode_default_group14():
    net = Net(IKEConfig(psk=b"secret"))
    net.run(until=10)
    ci, cr = net.children()
    assert len(ci) == len(cr) == 1
    assert_keys_agree(ci[0], cr[0])
    p1 = [e for e in net.client_events[0] if isinstance(e, Phase1Established)][0]
    assert (p1.cipher, p1.hash, p1.group) == ("aes-cbc-256", "sha1", 14)
    assert ci[0].cipher == "aes-cbc-256" and ci[0].integrity == "hmac-sha1-96"
    assert ci[0].encapsulation == "transport"
    assert ci[0].local == (CLIENT_ADDR, 500) and ci[0].remote == SERVER
    assert len(ci[0].enc_key_in) == 32 and len(ci[0].auth_key_in) == 20


P1_COMBOS = list(itertools.product(("3des-cbc", "aes-cbc-128", "aes-cbc-256"), ("sha1", "md5")))


@pytest.mark.parametrize("cipher,hash_", P1_COMBOS)
def test_every_phase1_proposal(cipher, hash_):
    net = Net(cfg(ike_ciphers=(cipher,), ike_hashes=(hash_,)),
              cfg(ike_ciphers=("aes-cbc-256", "aes-cbc-128", "3des-cbc"),
                  ike_hashes=("md5", "sha1")))
    net.run(until=10)
    p1 = [e for e in net.client_events[0] if isinstance(e, Phase1Established)]
    assert (p1[0].cipher, p1[0].hash) == (cipher, hash_)
    ci, cr = net.children()
    assert_keys_agree(ci[0], cr[0])


ESP_COMBOS = list(itertools.product(("3des-cbc", "des-cbc", "aes-cbc-128", "aes-cbc-256"),
                                    ("hmac-sha1-96", "hmac-md5-96")))
KEY_BYTES = {"3des-cbc": 24, "des-cbc": 8, "aes-cbc-128": 16, "aes-cbc-256": 32}


@pytest.mark.parametrize("cipher,integrity", ESP_COMBOS)
def test_every_esp_proposal(cipher, integrity):
    net = Net(cfg(esp_ciphers=(cipher,), esp_integrity=(integrity,)),
              cfg(esp_ciphers=("aes-cbc-256", "aes-cbc-128", "3des-cbc", "des-cbc")))
    net.run(until=10)
    ci, cr = net.children()
    assert (ci[0].cipher, ci[0].integrity) == (cipher, integrity)
    assert len(ci[0].enc_key_in) == KEY_BYTES[cipher]
    assert len(ci[0].auth_key_in) == (20 if integrity == "hmac-sha1-96" else 16)
    assert_keys_agree(ci[0], cr[0])


def test_nat_detected_both_float_to_4500_udp_transport():
    net = Net(cfg(), nat=True)
    net.run(until=10)
    ci, cr = net.children()
    assert_keys_agree(ci[0], cr[0])
    assert ci[0].encapsulation == cr[0].encapsulation == "udp-transport"
    assert ci[0].remote == ("192.0.2.1", 4500) and ci[0].local == (CLIENT_ADDR, 4500)
    assert cr[0].remote[0] == NAT_PUBLIC and cr[0].remote[1] != 4500  # the NAT's port
    p1c = [e for e in net.client_events[0] if isinstance(e, Phase1Established)][0]
    p1s = [e for e in net.server_events if isinstance(e, Phase1Established)][0]
    assert p1c.local_behind_nat and not p1c.remote_behind_nat
    assert p1s.remote_behind_nat and not p1s.local_behind_nat
    # MM1-MM4 on 500, MM5 on: 4500 both ways (RFC 3947 §4)
    server_ports = [dst[1] if dst[0] == SERVER[0] else src[1] for src, dst, _ in net.log]
    assert server_ports[:4] == [500] * 4 and set(server_ports[4:]) == {4500}
    nat_ports = [src[1] if dst[0] == SERVER[0] else dst[1] for src, dst, _ in net.log]
    assert len(set(nat_ports[:4])) == 1 and len(set(nat_ports[4:])) == 1
    assert nat_ports[0] != nat_ports[4]  # the client's 500 and 4500 mappings


def test_no_nat_no_float_even_with_nat_t():
    net = Net(cfg())
    net.run(until=10)
    assert all(src[1] == 500 and dst[1] == 500 for src, dst, _ in net.log)


def test_nat_t_off_through_nat_gives_plain_transport():
    """Without NAT-T, nothing detects the NAT: the SA is plain transport mode, which ESP
    through a NAPT cannot deliver (the documented failure the stack must name)."""
    net = Net(cfg(nat_t=False), nat=True)
    net.run(until=10)
    ci, _ = net.children()
    assert ci[0].encapsulation == "transport"


def test_mm1_offers_every_nat_t_version_and_dpd():
    net = Net(cfg())
    (_, _, mm1), = net.clients[0].datagrams_to_send()
    vids = [v.data for v in pl.decode_plain(mm1).find(pl.VID)]
    assert vids == [ikc.VID_DPD, ikc.VID_RFC3947, ikc.VID_NAT_T_DRAFT_02N,
                    ikc.VID_NAT_T_DRAFT_02, ikc.VID_NAT_T_DRAFT_03]


@pytest.mark.parametrize("version", ["draft-02n", "draft-02", "draft-03"])
def test_draft_nat_t_peer(version):
    """A responder that knows only a draft (like Windows XP SP2 or old racoon) answers with
    its VID: NAT-D goes as payload 130 and the mode is 61444."""
    net = Net(cfg(), cfg(nat_t_versions=(version,)), nat=True)
    net.run(until=10)
    ci, cr = net.children()
    assert ci and ci[0].encapsulation == "udp-transport"
    assert_keys_agree(ci[0], cr[0])
    mm2 = pl.decode_plain(net.log[1][2])
    assert ikc.NAT_T_VIDS[version] in [v.data for v in mm2.find(pl.VID)]
    assert ikc.VID_RFC3947 not in [v.data for v in mm2.find(pl.VID)]
    assert any(pl.PayloadType.NAT_D_DRAFT in _types(d) for _, _, d in net.log)


def _types(data: bytes) -> list[int]:
    header, _ = pl.decode_header(data)
    if header.flags & 1:
        return []
    return [p.TYPE for p in pl.decode_plain(data).payloads]


def test_two_clients_behind_one_nat_are_kept_apart():
    net = Net(cfg(), nat=True, clients=2, seed=7)
    net.run(until=10)
    a, _ = net.children(0)
    b, _ = net.children(1)
    assert len(a) == len(b) == 1
    servers = [e for e in net.server_events if isinstance(e, ChildSAEstablished)]
    assert len(servers) == 2 and len(net.server.sessions) == 2
    by_spi = {e.spi_in: e for e in servers}
    assert_keys_agree(a[0], by_spi[a[0].spi_out])
    assert_keys_agree(b[0], by_spi[b[0].spi_out])
    assert by_spi[a[0].spi_out].remote != by_spi[b[0].spi_out].remote


@pytest.mark.parametrize("lost", range(1, 10))
def test_each_lost_message_is_recovered(lost):
    """Datagram n of MM1..MM6, QM1..QM3 lost once: retransmission (or the repeat the peer's
    retransmission triggers) completes the exchange."""
    net = Net(cfg())
    net.drop = lambda i, d: i == lost
    net.run(until=60)
    ci, cr = net.children()
    assert len(ci) == len(cr) == 1
    assert_keys_agree(ci[0], cr[0])
    assert net.clients[0].counters["retransmits"] + net.server.sessions[0].counters[
        "retransmits"] >= 1


def test_random_loss_30_percent():
    rng = random.Random(5)
    net = Net(cfg(retransmit_tries=8))
    net.drop = lambda i, d: rng.random() < 0.3
    net.run(until=600)
    ci, cr = net.children()
    assert len(ci) == len(cr) == 1
    assert_keys_agree(ci[0], cr[0])


def test_duplicates_are_answered_not_reprocessed():
    net = Net(cfg())
    net.duplicate = lambda i, d: True
    net.run(until=10)
    ci, cr = net.children()
    assert len(ci) == len(cr) == 1
    assert_keys_agree(ci[0], cr[0])
    assert net.server.sessions[0].counters["duplicates"] >= 4
    assert net.clients[0].counters["duplicates"] >= 3


def test_no_answer_at_all_is_a_named_failure():
    net = Net(cfg(retransmit_tries=3))
    net.drop = lambda i, d: d[0] == "up"
    net.run(until=600)
    fails = [e for e in net.client_events[0] if isinstance(e, IKEFailed)]
    assert len(fails) == 1
    assert "no answer to Main Mode message 1 after 3 retransmissions" in fails[0].reason
    assert net.clients[0].closed and net.clients[0].get_timer() is None


def test_wrong_psk():
    net = Net(cfg(psk=b"client-key"), cfg(psk=b"server-key"))
    net.run(until=60)
    fails = [e for e in net.client_events[0] if isinstance(e, IKEFailed)]
    assert len(fails) == 1 and fails[0].notify == "INVALID_HASH_INFORMATION"
    assert "pre-shared keys differ" in fails[0].reason
    sfails = [e for e in net.server_events if isinstance(e, IKEFailed)]
    assert sfails and sfails[0].notify == "INVALID_HASH_INFORMATION"
    assert not net.children()[0] and not net.children()[1]
    assert net.server.sessions == [] and net.clients[0].closed


def test_no_common_phase1_proposal():
    net = Net(cfg(ike_ciphers=("3des-cbc",)), cfg(ike_ciphers=("aes-cbc-256",)))
    net.run(until=60)
    fails = [e for e in net.client_events[0] if isinstance(e, IKEFailed)]
    assert len(fails) == 1 and fails[0].notify == "NO_PROPOSAL_CHOSEN"
    assert "none of our phase-1 proposals" in fails[0].reason
    assert net.server.sessions == []


def test_no_common_dh_group():
    net = Net(cfg(dh_groups=(2,)), cfg(dh_groups=(14,)))
    net.run(until=60)
    assert [e.notify for e in net.client_events[0] if isinstance(e, IKEFailed)] == [
        "NO_PROPOSAL_CHOSEN"]


def test_group1_only_when_allowed():
    net = Net(cfg(dh_groups=(1,), allow_group1=True), cfg(dh_groups=(2,)))
    net.run(until=60)
    assert [e.notify for e in net.client_events[0] if isinstance(e, IKEFailed)] == [
        "NO_PROPOSAL_CHOSEN"]
    net = Net(cfg(dh_groups=(1,), allow_group1=True))
    net.run(until=60)
    p1 = [e for e in net.client_events[0] if isinstance(e, Phase1Established)]
    assert p1[0].group == 1


def test_no_common_esp_proposal():
    net = Net(cfg(esp_ciphers=("3des-cbc",)), cfg(esp_ciphers=("aes-cbc-128",)))
    net.run(until=60)
    assert [e for e in net.client_events[0] if isinstance(e, Phase1Established)]
    fails = [e for e in net.client_events[0] if isinstance(e, ChildSAFailed)]
    assert len(fails) == 1 and fails[0].notify == "NO_PROPOSAL_CHOSEN"
    assert not net.children()[0] and not net.children()[1]


def test_pfs_both_ends():
    net = Net(cfg(pfs_group=2), cfg(pfs_group=2))
    net.run(until=10)
    ci, cr = net.children()
    assert_keys_agree(ci[0], cr[0])


def _unpadded_keys(monkeypatch) -> None:
    """Every DH key a public value with a leading zero octet, sent without it, as SoftEther
    sends OpenSSL's BN_bn2bin bytes (RFC 2409 §5 says MUST pad)."""
    generate = crypto.DHKeyPair.generate.__func__

    def short(cls, group, random):
        while (pair := generate(cls, group, random)).public[0] != 0:
            pass
        return cls(group, pair.private, pair.public.lstrip(b"\0"))
    monkeypatch.setattr(crypto.DHKeyPair, "generate", classmethod(short))


def test_ke_without_leading_zeros_is_accepted_and_counted(monkeypatch):
    _unpadded_keys(monkeypatch)
    net = Net(cfg(pfs_group=2), cfg(pfs_group=2))
    net.run(until=10)
    ci, cr = net.children()
    assert_keys_agree(ci[0], cr[0])  # the HASHes and the IV took the KE data as sent
    plain = [pl.decode_plain(d) for _s, _d, d in net.log if not d[19] & 1]  # MM1-MM4
    kes = [len(ke.data) for m in plain for ke in m.find(pl.KE)]
    assert len(kes) == 2 and all(n < crypto.group_size(2) for n in kes), kes
    p1s = [e for e in net.client_events[0] + net.server_events
           if isinstance(e, Phase1Established)]
    assert len(p1s) == 2 and all(e.peer_ke_unpadded for e in p1s)
    # phase 1 and the Quick Mode's PFS KE, at each end
    assert net.clients[0].counters["ke_unpadded"] == 2
    assert net.server.sessions[0].counters["ke_unpadded"] == 2


def test_padded_ke_is_not_flagged():
    net = Net(cfg(pfs_group=2), cfg(pfs_group=2))
    net.run(until=10)
    p1 = [e for e in net.client_events[0] if isinstance(e, Phase1Established)][0]
    assert not p1.peer_ke_unpadded and net.clients[0].counters["ke_unpadded"] == 0


def test_ke_longer_than_the_prime_is_invalid_key_information(monkeypatch):
    generate = crypto.DHKeyPair.generate.__func__

    def long(cls, group, random):
        pair = generate(cls, group, random)
        return cls(group, pair.private, b"\0" + pair.public)
    monkeypatch.setattr(crypto.DHKeyPair, "generate", classmethod(long))
    net = Net(cfg())
    net.run(until=60)
    fails = [e for e in net.server_events if isinstance(e, IKEFailed)]
    assert fails and "KE of 129 bytes for group 2 (expected 128)" in fails[0].reason
    assert not net.children()[0]


def test_pfs_required_by_responder_refused_without():
    net = Net(cfg(), cfg(pfs_group=2))
    net.run(until=60)
    assert [e.notify for e in net.client_events[0] if isinstance(e, ChildSAFailed)] == [
        "NO_PROPOSAL_CHOSEN"]


def test_responder_lifetime_lowers_the_initiators():
    net = Net(cfg(lifetime_phase2=3600), cfg(lifetime_phase2=1200))
    net.run(until=10)
    ci, cr = net.children()
    assert ci[0].lifetime_seconds == cr[0].lifetime_seconds == 1200


def test_lifetime_kilobytes():
    net = Net(cfg(lifetime_phase2_kb=250000))
    net.run(until=10)
    ci, cr = net.children()
    assert ci[0].lifetime_bytes == cr[0].lifetime_bytes == 250000 * 1024


def _subset(items):
    return st.lists(st.sampled_from(items), min_size=1, max_size=len(items), unique=True).map(
        tuple)


_SIDES = st.tuples(_subset(("3des-cbc", "aes-cbc-128", "aes-cbc-256")), _subset(("sha1", "md5")),
                   _subset((1, 2)), _subset(("3des-cbc", "des-cbc", "aes-cbc-128", "aes-cbc-256")),
                   _subset(("hmac-sha1-96", "hmac-md5-96")))


def _conf(side) -> IKEConfig:
    return cfg(ike_ciphers=side[0], ike_hashes=side[1], dh_groups=side[2], allow_group1=True,
               esp_ciphers=side[3], esp_integrity=side[4])


@settings(max_examples=40, deadline=None)
@given(_SIDES, _SIDES)
def test_negotiation_picks_the_initiators_first_common_choice(a, b):
    """Any two configurations: the initiator's first transform the responder also has wins
    (RFC 2408 §4.2), in both phases; no common one gives NO_PROPOSAL_CHOSEN."""
    net = Net(_conf(a), _conf(b))
    net.run(until=60)
    common = [p for p in _conf(a).ike_proposals() if p in _conf(b).ike_proposals()]
    p1 = [e for e in net.client_events[0] if isinstance(e, Phase1Established)]
    if not common:
        assert not p1 and [e.notify for e in net.client_events[0]
                           if isinstance(e, IKEFailed)] == ["NO_PROPOSAL_CHOSEN"]
        return
    assert (p1[0].cipher, p1[0].hash, p1[0].group) == (
        common[0].cipher, common[0].hash, common[0].group)
    esp_common = [p for p in _conf(a).esp_proposals() if p in _conf(b).esp_proposals()]
    ci, cr = net.children()
    if not esp_common:
        assert not ci and [e.notify for e in net.client_events[0]
                           if isinstance(e, ChildSAFailed)] == ["NO_PROPOSAL_CHOSEN"]
        return
    assert (ci[0].cipher, ci[0].integrity) == (esp_common[0].cipher, esp_common[0].integrity)
    assert_keys_agree(ci[0], cr[0])
