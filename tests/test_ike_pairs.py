"""IKEv1 initiator and responder paired in memory, with a virtual clock and an optional NAT
between them: Main Mode + Quick Mode for every proposal combination, NAT-T, loss,
duplicates, wrong PSK, no common proposal, and both ends agreeing on the keys."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable

import pytest

from tunnels.ipsec.ike import (
    ChildSAEstablished,
    ChildSAFailed,
    IKEConfig,
    IKEFailed,
    IKEResponder,
    IKESession,
    Phase1Established,
)

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
            for direction, k, src, dst, data in batch:
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
              cfg(ike_ciphers=("aes-cbc-256", "aes-cbc-128", "3des-cbc"), ike_hashes=("md5", "sha1")))
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
