"""An ESP SA with a byte lifetime is rekeyed before it runs out (RFC 4301 §4.4.2.1; the
issue's "SA lifetimes in seconds and bytes with rekey before expiry"): the client, as the
Quick Mode initiator, starts the successor at the soft limit; data goes on over the new SA."""

from __future__ import annotations

from test_stack_l2tp_ipsec import (CLIENT_PUBLIC, IPsecDown, IPsecUp, Net, connect, icmp_echo,
                                   ike, make_client, make_server, ping_both_ways)


def test_byte_lifetime_soft_limit_rekeys_the_child_sa():
    cfg = ike(lifetime_phase2_kb=4)  # 4 KiB: a few pings reach the soft limit (90%)
    net = connect(Net(make_server(cfg), [make_client(CLIENT_PUBLIC, cfg)]))
    first = net.of(0, IPsecUp)[0]
    assert net.clients[0].children[first.spi_in].outbound.lifetime_bytes == 4096
    up = net.up(0)[0]
    for _ in range(40):  # ~40 x 120 bytes each way: past 3.6 KiB
        net.clients[0].send_datagram(icmp_echo(up.local_address, up.peer_address,
                                               b"x" * 80), net.now)
        net.run(0.2)
        net.server.datagrams_to_tun()
    net.run(5)
    ups, downs = net.of(0, IPsecUp), net.of(0, IPsecDown)
    assert len(ups) >= 2 and ups[1].spi_in != first.spi_in
    assert any(d.spi_in == first.spi_in for d in downs)
    assert net.clients[0].counters.get("rekeys_by_lifetime", 0) >= 1
    ping_both_ways(net)  # the session is untouched and rides the new SA
