"""After the SAs are up: Informational delete and notify, dead-peer detection (RFC 3706),
NAT keepalives (RFC 3948 §2.3), rekeying of both phases; all on the virtual clock."""

from __future__ import annotations

import pytest

from tests.test_ike_pairs import Net, assert_keys_agree, cfg
from tunnels.ipsec.ike import (
    ChildSADeleted,
    ChildSAEstablished,
    IKEClosed,
    IKEFailed,
    NATKeepaliveDue,
    Phase1Established,
)
from tunnels.ipsec.ike import payloads as pl
from tunnels.ipsec.ike.constants import NotifyType


def up(**kw) -> Net:
    nat = kw.pop("nat", False)
    net = Net(cfg(**kw), nat=nat)
    net.run(until=5)
    assert net.children()[0]
    return net


def of(events, cls):
    return [e for e in events if isinstance(e, cls)]


def test_delete_from_the_client_removes_both_ends():
    net = up()
    net.clients[0].delete(net.now)
    net.transfer()
    (ci,), (cr,) = net.children()
    assert of(net.client_events[0], ChildSADeleted)[0].spi_in == ci.spi_in
    deleted = of(net.server_events, ChildSADeleted)
    assert deleted and deleted[0].spi_in == cr.spi_in and "peer deleted" in deleted[0].reason
    assert of(net.server_events, IKEClosed)[0].reason == "the peer deleted the ISAKMP SA"
    assert net.server.sessions == [] and net.clients[0].closed


def test_delete_from_the_server():
    net = up()
    net.server.sessions[0].delete(net.now)
    net.transfer()
    assert of(net.client_events[0], ChildSADeleted)
    assert of(net.client_events[0], IKEClosed)
    assert net.server.sessions == []  # the dispatcher let go of the closed session
    assert of(net.server_events, IKEClosed)[0].reason == "deleted locally"


def test_dpd_probes_when_idle_and_the_peer_answers():
    net = up(dpd_interval=30)
    net.run(until=100)
    assert not of(net.client_events[0], IKEClosed)
    # R-U-THERE went both ways and were acknowledged (the server probes too: both sent DPD VID)
    assert net.clients[0].counters["received"] > 4
    assert net.clients[0]._dpd_misses == 0


def test_peer_declared_dead_after_n_misses():
    net = up(dpd_interval=10, dpd_max_failures=3)
    start = net.now
    net.drop = lambda i, d: True  # the server vanishes
    net.run(until=start + 200)
    closed = of(net.client_events[0], IKEClosed)
    assert len(closed) == 1 and "peer dead" in closed[0].reason
    assert "3 R-U-THERE" in closed[0].reason
    assert of(net.client_events[0], ChildSADeleted)[0].reason == closed[0].reason
    assert "silent for 40s" in closed[0].reason  # probes at +10, +20, +30; dead at +40
    server_closed = of(net.server_events, IKEClosed)
    assert "silent for 60s" in server_closed[0].reason  # the responder waits 1.5 x as long


def test_r_u_there_is_answered_with_ack_and_sequence():
    net = up(dpd_interval=0)  # nobody probes by itself
    client = net.clients[0]
    sa = client._current()
    client._send_info(sa, [pl.N(NotifyType.R_U_THERE, 1, sa.icookie + sa.rcookie,
                                (1234).to_bytes(4, "big"))])
    (dst, sport, rut), = client.datagrams_to_send()
    net.server.receive_datagram(rut, ("10.0.0.2", 500), net.now)
    (_, _, ack), = net.server.datagrams_to_send()
    header, body = pl.decode_header(ack)
    from tunnels.ipsec.ike.phase2 import open_informational
    msg = open_informational(sa, header, body)
    n = msg.first(pl.N)
    assert n.notify_type == NotifyType.R_U_THERE_ACK and n.data == (1234).to_bytes(4, "big")
    assert n.spi == sa.icookie + sa.rcookie


def test_nat_keepalive_timer_only_behind_nat():
    net = up(nat=True, dpd_interval=0)
    net.run(until=net.now + 61)
    keepalives = of(net.client_events[0], NATKeepaliveDue)
    assert len(keepalives) == 3
    assert keepalives[0].dst == ("192.0.2.1", 4500) and keepalives[0].src_port == 4500
    assert not of(net.server_events, NATKeepaliveDue)  # the server is not behind the NAT


def test_child_rekeyed_before_lifetime_and_old_deleted():
    net = up(lifetime_phase2=600, dpd_interval=0)
    net.run(until=600 * 0.9 + 1)
    ci, cr = net.children()
    assert len(ci) == len(cr) == 2
    assert_keys_agree(ci[1], cr[1])
    assert ci[1].spi_in != ci[0].spi_in
    gone = of(net.server_events, ChildSADeleted)
    assert [(g.spi_in, g.reason) for g in gone] == [(cr[0].spi_in, "the peer deleted the SA")]
    assert of(net.client_events[0], ChildSADeleted)[0].reason == "rekeyed"
    net.run(until=2000)
    assert len(net.children()[0]) >= 3  # and again, each time before the end


def test_child_expires_if_rekey_fails():
    net = up(lifetime_phase2=600, dpd_interval=0, retransmit_tries=2)
    net.drop = lambda i, d: True
    net.run(until=601)
    reasons = [e.reason for e in of(net.client_events[0], ChildSADeleted)]
    assert reasons == ["lifetime expired"]


def test_phase1_rekeyed_children_survive():
    net = up(lifetime_phase1=1000, lifetime_phase2=5000, dpd_interval=0)
    (first,), _ = net.children()
    net.run(until=1000 * 0.9 + 1)
    p1 = of(net.client_events[0], Phase1Established)
    assert len(p1) == 2 and p1[0].icookie != p1[1].icookie
    assert len(net.server.sessions) == 1  # the rekey joined the peer's session
    server = net.server.sessions[0]
    assert server.status()["isakmp_sas"] == 1 and net.clients[0].status()["isakmp_sas"] == 1
    assert not of(net.client_events[0], ChildSADeleted)
    # the child is rekeyed later through the new ISAKMP SA
    net.run(until=5000 * 0.9 + 1)
    ci, cr = net.children()
    assert len(ci) == 2 and ci[1].spi_in != first.spi_in
    assert_keys_agree(ci[1], cr[1])


def test_phase1_rekey_behind_nat_stays_on_4500():
    net = up(nat=True, lifetime_phase1=1000, dpd_interval=0)
    n = len(net.log)
    net.run(until=1000 * 0.9 + 1)
    assert len(of(net.client_events[0], Phase1Established)) == 2
    server_ports = {dst[1] if dst[0] == "192.0.2.1" else src[1] for src, dst, _ in net.log[n:]}
    assert server_ports == {4500}
    assert len(net.server.sessions) == 1


def test_status_names_state_and_counters():
    net = up()
    s = net.clients[0].status()
    assert s["phase1"] == "established" and s["child_sas"][0]["cipher"] == "aes-cbc-256"
    assert s["counters"]["sent"] >= 4
    assert isinstance(of(net.client_events[0], ChildSAEstablished)[0].lifetime_seconds, int)


def test_initial_contact_replaces_a_restarted_clients_old_session():
    from tunnels.ipsec.ike import IKESession
    from tests.test_ike_pairs import SERVER, seeded
    net = up(nat=True, dpd_interval=0)
    old_spi = net.children()[1][0].spi_in
    # the client reboots: a new session from the same address, INITIAL-CONTACT in its MM5
    net.clients[0] = IKESession(net.clients[0].config, "initiator", ("10.0.0.2", 500), SERVER,
                                random=seeded(99))
    net.clients[0].start(net.now)
    net.run(until=net.now + 5)
    p1 = of(net.server_events, Phase1Established)
    assert len(p1) == 2 and p1[1].initial_contact
    gone = of(net.server_events, ChildSADeleted)
    assert [(g.spi_in, "INITIAL-CONTACT" in g.reason) for g in gone] == [(old_spi, True)]
    assert len(net.server.sessions) == 1


def test_nat_without_nat_t_is_named_at_the_server():
    net = Net(cfg(nat_t=False), nat=True)
    net.run(until=5)
    p1s = of(net.server_events, Phase1Established)[0]
    assert p1s.nat_without_nat_t and not p1s.remote_behind_nat
    plain = Net(cfg(nat_t=False))
    plain.run(until=5)
    assert not of(plain.server_events, Phase1Established)[0].nat_without_nat_t


def test_retransmissions_back_off_exponentially():
    net = Net(cfg(retransmit_timeout=1.0, retransmit_backoff=2.0, retransmit_tries=4))
    client = net.clients[0]
    client.datagrams_to_send()
    sent_at = []
    now = 0.0
    while (t := client.get_timer()) is not None and t < 100:
        now = t
        client.handle_timer(now)
        if client.datagrams_to_send():
            sent_at.append(now)
    assert sent_at == [1.0, 3.0, 7.0, 15.0]  # 1, 2, 4, 8 s apart
    assert client.closed and "after 4 retransmissions" in client.reason


def test_initial_contact_from_the_address_of_the_old_session():
    """A restarted client whose first datagram comes from the old session's NAT mapping joins
    that session; INITIAL-CONTACT still clears what the session held before."""
    from tests.test_ike_pairs import SERVER, seeded
    from tunnels.ipsec.ike import IKESession
    net = up(dpd_interval=0)
    old_spi = net.children()[1][0].spi_in
    net.clients[0] = IKESession(net.clients[0].config, "initiator", ("10.0.0.2", 500), SERVER,
                                random=seeded(99))
    net.clients[0].start(net.now)
    net.run(until=net.now + 5)
    gone = of(net.server_events, ChildSADeleted)
    assert [(g.spi_in, "INITIAL-CONTACT" in g.reason) for g in gone] == [(old_spi, True)]
    server = net.server.sessions[0]
    assert len(net.server.sessions) == 1 and server.status()["isakmp_sas"] == 1
    assert len(server.status()["child_sas"]) == 1


def test_half_open_main_mode_is_dropped_by_the_responder():
    net = Net(cfg(half_open_timeout=30))
    net.drop = lambda i, d: i > 2  # MM1 and MM2 pass, then the initiator vanishes
    net.run(until=100)
    fails = of(net.server_events, IKEFailed)
    assert [f.reason for f in fails] == ["Main Mode not completed within 30s"]
    assert net.server.sessions == []


def test_nat_rebinding_is_followed_and_reported():
    from tests.test_ike_pairs import NAT_PUBLIC
    from tunnels.ipsec.ike import RemoteAddressChanged
    net = up(nat=True, dpd_interval=10)
    (_, cr) = net.children()
    old = cr[0].remote
    net._map[("10.0.0.2", 4500)] = (NAT_PUBLIC, 40000)  # the NAT forgot and remapped
    net.run(until=net.now + 15)  # the client's R-U-THERE comes from the new mapping
    moved = of(net.server_events, RemoteAddressChanged)
    assert moved == [RemoteAddressChanged(old, (NAT_PUBLIC, 40000))]
    assert net.server.sessions[0].remote == (NAT_PUBLIC, 40000)
    assert net.clients[0]._dpd_misses == 0  # the ACK reached the client at the new mapping


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_three_hours_of_rekeys_dpd_and_loss_behind_nat(seed):
    """Phase 1 every 20 min, phase 2 every 10 min, DPD, 10% loss both ways, a NAT: the peers
    never lose each other, hold one ESP SA pair at the end and agree on its keys."""
    import random
    rng = random.Random(seed)
    net = Net(cfg(lifetime_phase1=1200, lifetime_phase2=600, dpd_interval=30,
                  retransmit_tries=8), nat=True, seed=seed)
    net.drop = lambda i, d: rng.random() < 0.1
    net.run(until=3 * 3600)
    assert not of(net.client_events[0], IKEClosed) and not of(net.server_events, IKEClosed)
    ci, cr = net.children()
    live_c = {e.spi_in: e for e in ci}
    for gone in of(net.client_events[0], ChildSADeleted):
        live_c.pop(gone.spi_in, None)
    live_s = {e.spi_in: e for e in cr}
    for gone in of(net.server_events, ChildSADeleted):
        live_s.pop(gone.spi_in, None)
    assert len(live_c) == 1 and len(ci) >= 15
    (c,) = live_c.values()
    assert_keys_agree(c, live_s[c.spi_out])
    assert len(of(net.client_events[0], Phase1Established)) >= 8
