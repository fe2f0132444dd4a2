"""The L2TP/IPsec sockets against the real kernel, in two network namespaces these tests
create (the helpers of test_runtime_netns.py): raw ESP (IP protocol 50), IKE on UDP 500,
IKE behind the non-ESP marker and ESP-in-UDP on 4500 (RFC 3948) and clear L2TP on 1701, each
sent from one namespace and received through the one epoll descriptor in the other; errors
are counted and never close a socket."""

from __future__ import annotations

import pytest

from tests.test_runtime_netns import join, namespaces  # noqa: F401 - the fixture

pytestmark = pytest.mark.netns

A, B = "10.200.0.1", "10.200.0.2"

RECEIVER = """
    import json, select, sys
    from tunnels.runtime.ipsec_sockets import MultiSocket
    s = MultiSocket("10.200.0.2", l2tp_port=True)
    print(json.dumps({"ready": True}), flush=True)
    got = []
    while len(got) < 5:
        if not select.select([s.fileno()], [], [], 10)[0]:
            break
        while (item := s.receive()) is not None:
            got.append([list(item[0]), item[1].hex()])
    # answer each UDP datagram from the socket it came to, and the ESP as ESP
    for (kind, src, port, local), data in got:
        s.send((kind, src, port, local), bytes.fromhex(data)[::-1])
    print(json.dumps({"got": got, "status": s.status()}), flush=True)
    s.close()
"""

SENDER = """
    import json, select, time
    from tunnels.runtime.ipsec_sockets import MultiSocket
    s = MultiSocket("10.200.0.1", l2tp_port=True)
    sends = [(("esp", "10.200.0.2", 0, 0), bytes.fromhex("0000123400000001") + b"esp"),
             (("udp", "10.200.0.2", 500, 500), b"ike on 500"),
             (("udp", "10.200.0.2", 4500, 4500), b"\\0\\0\\0\\0" + b"ike on 4500"),
             (("udp", "10.200.0.2", 4500, 4500), bytes.fromhex("0000abcd00000001") + b"e"),
             (("udp", "10.200.0.2", 1701, 1701), b"clear l2tp")]
    for dst, data in sends:
        s.send(dst, data)
    s.send(("udp", "192.0.2.99", 500, 500), b"nowhere")  # no route: counted, not fatal
    s.send(("udp", "10.200.0.2", 500, 12345), b"no such local port")
    back = []
    deadline = time.monotonic() + 10
    while len(back) < 5 and time.monotonic() < deadline:
        select.select([s.fileno()], [], [], 1)
        while (item := s.receive()) is not None:
            back.append([list(item[0]), item[1].hex()])
    print(json.dumps({"back": back, "status": s.status()}), flush=True)
    s.close()
"""


def test_each_kind_crosses_between_namespaces_through_one_epoll_fd(namespaces):  # noqa: F811
    a, b = namespaces(), namespaces()
    join(a, b, [f"{A}/24"], [f"{B}/24"])
    import json
    import sys
    import textwrap
    receiver = b.popen([sys.executable, "-u", "-c", textwrap.dedent(RECEIVER)])
    try:
        receiver.wait_line('"ready"')
        sent = a.python(SENDER)
        receiver.proc.wait(15)
    finally:
        receiver.stop()
    result = json.loads(receiver.lines[-1])
    assert all(src == A for (_k, src, _p, _l), _d in result["got"])
    got = {(kind, local): bytes.fromhex(data) for (kind, _s, _p, local), data in result["got"]}
    assert got[("esp", 0)] == bytes.fromhex("0000123400000001") + b"esp"  # IP header gone
    assert got[("udp", 500)] == b"ike on 500" and got[("udp", 1701)] == b"clear l2tp"
    kinds = sorted((k, local, port) for (k, _s, port, local), _d in result["got"])
    assert kinds == [("esp", 0, 0), ("udp", 500, 500), ("udp", 1701, 1701),
                     ("udp", 4500, 4500), ("udp", 4500, 4500)]
    payloads_4500 = {bytes.fromhex(d) for (k, _s, _p, local), d in result["got"] if local == 4500}
    assert payloads_4500 == {b"\0\0\0\0ike on 4500", bytes.fromhex("0000abcd00000001") + b"e"}
    # the answers came back, each from the port it was sent to
    back = sorted((tuple(t), bytes.fromhex(d)) for t, d in sent["back"])
    assert [t for t, _ in back] == [("esp", B, 0, 0), ("udp", B, 500, 500),
                                    ("udp", B, 1701, 1701), ("udp", B, 4500, 4500),
                                    ("udp", B, 4500, 4500)]
    assert (("udp", B, 500, 500), b"ike on 500"[::-1]) in back
    status = sent["status"]
    assert status["udp500"]["send_errors"] == 1 and status["udp500"]["last_error"]
    assert status["udp500"]["sent"] == 1 and status["no_socket"] == 1
    assert status["esp"]["received"] == 1 and status["udp4500"]["received"] == 2
    assert result["status"]["esp"]["bad_ip_header"] == 0


DRIVER = """
    import asyncio, json
    from tunnels.l2tp.control import TunnelConfig
    from tunnels.ppp.auth.base import Account, AuthMethod, LocalAccounts
    from tunnels.ppp.config import EncryptionLevel, PPPConfig
    from tunnels.runtime.ipsec_sockets import MultiSocket
    from tunnels.runtime.pump import StackPump
    from tunnels.stacks.l2tp_ipsec import L2TPIPsecClient, L2TPIPsecServer, ike_config_for
    from tunnels.stacks.pptp import SessionUp

    ROLE, LOCAL, SERVER, CLIENTS = {role!r}, {local!r}, {server!r}, {clients!r}
    ike = ike_config_for("strongest", b"shared secret", dh_groups=(2,), dpd_interval=0,
                         nat_t={nat_t!r})
    level = EncryptionLevel.STRONGEST
    users = LocalAccounts({{"alice": Account("s3cret")}})
    pool = iter(range(2, 100))

    def ppp_for(sid, peer):
        return PPPConfig(True, (AuthMethod.MSCHAPV2,), verifier=users,
                         local_address="10.10.100.1", peer_address=f"10.10.100.{{next(pool)}}",
                         encryption=level)

    def ping(src, dst):
        return (bytes.fromhex("4500001c000100004001") + bytes(2) + bytes(map(int, src.split(".")))
                + bytes(map(int, dst.split("."))) + bytes(8))

    async def main():
        loop = asyncio.get_running_loop()
        sock = MultiSocket(LOCAL, l2tp_port=ROLE == "server")
        if ROLE == "server":
            stack = L2TPIPsecServer(ppp_for, TunnelConfig(), ike, LOCAL)
        else:
            stack = L2TPIPsecClient(PPPConfig(False, (AuthMethod.MSCHAPV2,), username="alice",
                                              password="s3cret", encryption=level),
                                    SERVER, TunnelConfig(), ike, LOCAL)
        events, ups, tun, finished = [], [], [], loop.create_future()
        to_tun = stack.datagrams_to_tun

        def send(pkt):
            pump.feed("send", stack.send_datagram, pkt, loop.time())
            pump.flush()

        def record():  # the pump has no TUN device here: keep what it would write
            out = to_tun()
            tun.extend(out)
            for pkt in out:
                if ROLE == "server":  # echo it, addresses swapped
                    loop.call_soon(send, ping(".".join(map(str, pkt[16:20])),
                                              ".".join(map(str, pkt[12:16]))))
            return out
        stack.datagrams_to_tun = record

        def client_ping(pkt):  # until an answer came; then hang up
            if tun:
                pump.feed("hang_up", stack.hang_up, loop.time())
                pump.flush()
                return
            send(pkt)
            loop.call_later(0.2, client_ping, pkt)

        def on_event(e):
            events.append(type(e).__name__)
            if type(e).__name__ == "IPsecUp":
                ups.append([e.peer, e.encapsulation])
            if isinstance(e, SessionUp) and ROLE == "client":
                loop.call_soon(client_ping, ping(e.local_address, e.peer_address))
            if ROLE == "client" and getattr(stack, "done", False) and not finished.done():
                finished.set_result(None)
            if ROLE == "server" and (events.count("IPsecDown") >= CLIENTS or (
                    not ike.nat_t and "IPsecFailed" in events)) and not finished.done():
                finished.set_result(None)
        pump = StackPump(loop, stack, sock, on_event)
        print(json.dumps({{"ready": True}}), flush=True)
        if ROLE == "client":
            stack.start(loop.time())
            pump.flush()
        try:
            await asyncio.wait_for(finished, 25)
        except TimeoutError:
            pass
        pump.flush()
        print(json.dumps({{"events": events, "ups": ups, "tun": len(tun),
                          "reason": getattr(stack, "reason", ""),
                          "sockets": sock.status(),
                          "pump": pump.counters, "status": stack.status()["ipsec"]}}),
              flush=True)
        pump.close()
        sock.close()
    asyncio.run(main())
"""


def driver(role: str, local: str, server: str, clients: int = 1,
           nat_t: bool = True) -> list[str]:
    import sys
    import textwrap
    return [sys.executable, "-u", "-c", textwrap.dedent(DRIVER.format(
        role=role, local=local, server=server, clients=clients, nat_t=nat_t))]


def run(server_ns, server: str, clients: list, nat_t: bool = True) -> tuple[list, dict]:
    """The server driver in `server_ns`, then one client driver per (namespace, address);
    their final JSON lines (clients', server's). Every process is stopped in `finally`."""
    daemon = server_ns.popen(driver("server", server, server, len(clients), nat_t))
    started = []
    try:
        daemon.wait_line('"ready"')
        started = [ns.popen(driver("client", addr, server, nat_t=nat_t)) for ns, addr in clients]
        results = [c.wait_line('"events"', timeout=40) for c in started]
        return results, daemon.wait_line('"events"', timeout=40)
    finally:
        for process in (*started, daemon):
            process.stop()


def test_l2tp_ipsec_stacks_over_the_real_sockets(namespaces):  # noqa: F811
    """Client and server stacks in two namespaces, on the unchanged pump over MultiSocket:
    IKE on 500, L2TP inside raw ESP, PPP up, one datagram each way, hang-up, IKE Delete."""
    a, b = namespaces(), namespaces()
    join(a, b, [f"{A}/24"], [f"{B}/24"])
    (client_result,), server_result = run(b, B, [(a, A)])
    for result in (client_result, server_result):
        events = result["events"]
        assert "IPsecUp" in events and "SessionUp" in events and "IPsecDown" in events
        assert events.index("IPsecUp") < events.index("SessionUp")
        assert result["tun"] == 1
    sockets = client_result["sockets"]
    assert sockets["esp"]["sent"] >= 4 and sockets["esp"]["received"] >= 4
    assert sockets["udp500"]["sent"] >= 5 and "udp1701" not in sockets  # the client: none
    assert server_result["sockets"]["udp1701"]["received"] == 0
    assert client_result["pump"]["stack_errors"] == server_result["pump"]["stack_errors"] == 0


def link(a, b, names: tuple[str, str], addrs: tuple[str, str]) -> None:
    """A veth pair names[0] (in a) -- names[1] (in b), made inside a."""
    a.run(["ip", "link", "add", names[0], "type", "veth", "peer", "name", names[1], "netns",
           str(b.pid)])
    for ns, dev, addr in ((a, names[0], addrs[0]), (b, names[1], addrs[1])):
        ns.run(["ip", "addr", "add", addr, "dev", dev])
        ns.run(["ip", "link", "set", dev, "up"])


def behind_nat(namespaces, clients: int):  # noqa: F811
    """Clients at 10.0.(k+1).2 behind an iptables MASQUERADE router (192.0.2.1) in front of
    a server namespace at 192.0.2.2: (client namespaces, server namespace)."""
    nat, srv = namespaces(), namespaces()
    inside = []
    for k in range(1, clients + 1):
        ns = namespaces()
        link(ns, nat, ("eth0", f"lan{k}"), (f"10.0.{k}.2/24", f"10.0.{k}.1/24"))
        ns.run(["ip", "route", "add", "default", "via", f"10.0.{k}.1"])
        inside.append(ns)
    link(nat, srv, ("wan0", "eth0"), ("192.0.2.1/24", "192.0.2.2/24"))
    nat.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"])
    nat.run(["iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "wan0", "-j", "MASQUERADE"])
    return inside, srv


def test_nat_without_nat_t_through_a_linux_nat_is_refused_with_the_reason(
        namespaces):  # noqa: F811
    """NAT-T off at both ends behind MASQUERADE (which would pass one client's ESP): the
    server sees the rewritten address in Main Mode and refuses; the client names NAT-T as
    the reason and never sends ESP."""
    from tunnels.stacks.l2tp_ipsec import NAT_WITHOUT_NAT_T
    (c1,), srv = behind_nat(namespaces, 1)
    (result,), server_result = run(srv, "192.0.2.2", [(c1, "10.0.1.2")], nat_t=False)
    assert "IPsecFailed" in result["events"] and "SessionUp" not in result["events"]
    assert result["reason"].startswith(NAT_WITHOUT_NAT_T)
    assert result["sockets"]["esp"]["sent"] == 0
    assert server_result["status"]["counters"]["nat_without_nat_t_refused"] == 1


def test_two_clients_behind_a_linux_nat_from_500_and_4500(namespaces):  # noqa: F811
    """Two clients, both from UDP 500/4500, behind iptables MASQUERADE: NAT-T floats both to
    4500, ESP goes in UDP, and the server keeps them apart (two SAs, two sessions)."""
    (c1, c2), srv = behind_nat(namespaces, 2)
    results, server_result = run(srv, "192.0.2.2", [(c1, "10.0.1.2"), (c2, "10.0.2.2")])
    for result in results:
        assert "SessionUp" in result["events"] and result["tun"] >= 1, result
        assert [encap for _, encap in result["ups"]] == ["udp-transport"]
        assert result["sockets"]["esp"]["sent"] == 0  # all ESP inside UDP 4500
        assert result["sockets"]["udp4500"]["sent"] >= 4
    peers = [peer for peer, _ in server_result["ups"]]
    assert len(peers) == 2 and len(set(peers)) == 2
    assert {p.split(":")[0] for p in peers} == {"192.0.2.1"}  # one public address
    assert server_result["events"].count("SessionUp") == 2
    assert server_result["events"].count("IPsecDown") == 2
    assert server_result["tun"] >= 2
    assert server_result["status"]["counters"]["nat_without_nat_t_refused"] == 0
