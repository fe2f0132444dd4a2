"""The data paths without I/O: microseconds per packet through our stacks, and a profile.

    .venv/bin/python -m bench datapath [--packets 20000] [--size 1400] [--only ROW] [--profile]

A client and a server stack are paired in memory and brought up (MS-CHAP v2, an address):
PPTP with MPPE-128 stateless, stateful, or none (tunnels/stacks/pptp.py), L2TP without MPPE
(tunnels/stacks/l2tp.py), and L2TP/IPsec with ESP 3DES or AES-128-CBC and HMAC-SHA1-96 in
transport mode (tunnels/stacks/l2tp_ipsec.py; IKE with PSK, MODP group 2 to save set-up time).
One direction's IP packets then go client.send_datagram → GRE or UDP (or ESP) → the server's
receive → datagrams_to_tun, exactly the calls the pump makes per packet, with no socket, TUN
or event loop. This is the stacks' share of the per-packet cost, free of syscall and
scheduler noise: the figure each data-path optimisation quotes before and after. `--profile`
prints cProfile's top functions for each row measured.
"""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import random
import time
from collections.abc import Callable
from typing import Any

from tunnels.l2tp.control import TunnelConfig
from tunnels.ppp.auth.base import Account, AuthMethod, LocalAccounts
from tunnels.ppp.config import EncryptionLevel, PPPConfig
from tunnels.stacks.l2tp import L2TPClient, L2TPServer
from tunnels.stacks.pptp import PPTPClient, PPTPServer, SessionUp

CLIENT, SERVER = "198.51.100.2", "203.0.113.2"
PPTP_MODES = {"mppe128-stateless": (EncryptionLevel.STRONGEST, True),
              "mppe128-stateful": (EncryptionLevel.STRONGEST, False),
              "none": (EncryptionLevel.NONE, True)}
IPSEC_CIPHERS = {"l2tp/ipsec 3des": "3des-cbc", "l2tp/ipsec aes-128": "aes-cbc-128"}
Step = Callable[[bytes, float], list[bytes]]  # one packet client -> server: what reached TUN


def _rng(seed: int) -> Any:
    r = random.Random(seed)
    return lambda n: r.randbytes(n)


def pair(encryption: EncryptionLevel, stateless: bool) -> tuple[PPTPClient, PPTPServer]:
    """A client and a server with their session up (driven to quiescence in memory)."""
    users = LocalAccounts({"alice": Account("s3cret")})
    auth = (AuthMethod.MSCHAPV2,)
    server = PPTPServer(lambda call_id, peer: PPPConfig(
        True, auth, verifier=users, encryption=encryption, mppe_stateless=stateless,
        echo_interval=0, local_address="10.10.100.1", peer_address="10.10.100.2"),
        random=_rng(1))
    client = PPTPClient(PPPConfig(False, auth, username="alice", password="s3cret",
                                  encryption=encryption, mppe_stateless=stateless,
                                  echo_interval=0), SERVER, random=_rng(2))
    server.connection_made(0, CLIENT, 0.0)
    client.start(0.0)
    for _ in range(200):
        moved = False
        for _, data in client.control_to_send():
            server.receive_control(0, data, 0.0)
            moved = True
        for _, data in server.control_to_send():
            client.receive_control(0, data, 0.0)
            moved = True
        for _, data in client.gre_to_send():
            server.receive_gre(CLIENT, data, 0.0)
            moved = True
        for _, data in server.gre_to_send():
            client.receive_gre(SERVER, data, 0.0)
            moved = True
        if not moved:
            break
    events = []
    while (e := client.next_event()) is not None:
        events.append(e)
    if not any(isinstance(e, SessionUp) for e in events):
        raise RuntimeError("the in-memory session did not come up")
    server.datagrams_to_tun()
    while server.next_event() is not None:
        pass
    return client, server


def pptp_step(client: PPTPClient, server: PPTPServer) -> tuple[Step, float]:
    def step(packet: bytes, now: float) -> list[bytes]:
        client.send_datagram(packet, now)
        for _dst, gre in client.gre_to_send():
            server.receive_gre(CLIENT, gre, now)
        out = server.datagrams_to_tun()
        server.gre_to_send()  # acks the server owes go out here, as the pump's flush does
        while server.next_event() is not None:
            pass
        return out
    return step, 1.0


def _users_config(session_id: int, peer: str) -> PPPConfig:
    return PPPConfig(True, (AuthMethod.MSCHAPV2,), verifier=LocalAccounts(
        {"alice": Account("s3cret")}), encryption=EncryptionLevel.NONE, echo_interval=0,
        local_address="10.10.100.1", peer_address="10.10.100.2")


def _client_ppp() -> PPPConfig:
    return PPPConfig(False, (AuthMethod.MSCHAPV2,), username="alice", password="s3cret",
                     encryption=EncryptionLevel.NONE, echo_interval=0)


def _bring_up(client: Any, server: Any, c2s: Callable[[Any], Any],
              s2c: Callable[[Any], Any]) -> float:
    """Move datagrams and fire timers on a virtual clock until the client's session is up;
    the clock's time then (the data path runs on it, so no timer falls due meanwhile)."""
    now, up = 0.0, False
    client.start(now)
    for _ in range(5000):
        moved = False
        for dst, data in client.datagrams_to_send():
            server.receive_datagram(c2s(dst), data, now)
            moved = True
        for dst, data in server.datagrams_to_send():
            client.receive_datagram(s2c(dst), data, now)
            moved = True
        while (e := client.next_event()) is not None:
            up = up or isinstance(e, SessionUp)
        while server.next_event() is not None:
            pass
        if up and not moved:
            server.datagrams_to_tun()
            return now
        if not moved:
            timers = [t for t in (client.get_timer(), server.get_timer()) if t is not None]
            if not timers:
                break
            now = max(now, min(timers))
            client.handle_timer(now)
            server.handle_timer(now)
    raise RuntimeError("the in-memory L2TP session did not come up")


def _udp_step(client: Any, server: Any, src: Callable[[Any], Any]) -> Step:
    def step(packet: bytes, now: float) -> list[bytes]:
        client.send_datagram(packet, now)
        for dst, data in client.datagrams_to_send():
            server.receive_datagram(src(dst), data, now)
        out = server.datagrams_to_tun()
        server.datagrams_to_send()
        while server.next_event() is not None:
            pass
        return out
    return step


def l2tp_step() -> tuple[Step, float]:
    """L2TP over UDP 1701, PPP without MPPE (what `remote-access` protocol=l2tp runs)."""
    server = L2TPServer(_users_config, TunnelConfig(host_name="lns"), random=os.urandom)
    client = L2TPClient(_client_ppp(), SERVER, TunnelConfig(host_name="lac"),
                        random=os.urandom)
    now = _bring_up(client, server, lambda dst: (CLIENT, 1701), lambda dst: (SERVER, 1701))
    return _udp_step(client, server, lambda dst: (CLIENT, 1701)), now + 0.001


def l2tp_ipsec_step(cipher: str) -> tuple[Step, float]:
    """L2TP inside ESP transport mode (raw IP protocol 50, no NAT), keys from IKEv1 PSK; the
    IVs from os.urandom as in the daemons."""
    from tunnels.stacks.l2tp_ipsec import L2TPIPsecClient, L2TPIPsecServer, ike_config_for

    ike = ike_config_for("strongest", b"bench psk", esp_ciphers=(cipher,),
                         esp_integrity=("hmac-sha1-96",), dh_groups=(2,), dpd_interval=0)
    server = L2TPIPsecServer(_users_config, TunnelConfig(host_name="lns"), ike, SERVER,
                             random=os.urandom)
    client = L2TPIPsecClient(_client_ppp(), SERVER, TunnelConfig(host_name="lac"), ike,
                             CLIENT, random=os.urandom)

    def c2s(dst: tuple[str, str, int, int]) -> tuple[str, str, int, int]:
        return (dst[0], CLIENT, dst[3], dst[2])  # (kind, source, its port, our port)

    def s2c(dst: tuple[str, str, int, int]) -> tuple[str, str, int, int]:
        return (dst[0], SERVER, dst[3], dst[2])

    now = _bring_up(client, server, c2s, s2c)
    return _udp_step(client, server, c2s), now + 0.001


def rows() -> dict[str, Callable[[], tuple[Step, float]]]:
    """Every row: a fresh client/server pair up, as its per-packet step and its clock."""
    table: dict[str, Callable[[], tuple[Step, float]]] = {
        name: (lambda level=level, stateless=stateless: pptp_step(*pair(level, stateless)))
        for name, (level, stateless) in PPTP_MODES.items()}
    table["l2tp"] = l2tp_step
    for name, cipher in IPSEC_CIPHERS.items():
        table[name] = lambda cipher=cipher: l2tp_ipsec_step(cipher)
    return table


def ip_packet(size: int) -> bytes:
    header = bytes.fromhex("45000000000040004011 0000 0a0a6402 0a0a6401".replace(" ", ""))
    header = header[:2] + size.to_bytes(2, "big") + header[4:]
    return header + bytes(size - 20)


def run_direction(step: Step, now: float, packets: int, size: int) -> float:
    """CPU seconds (of this process: time spent waiting for a core on a shared machine does
    not count) for `packets` packets client → server, one pump iteration's calls each."""
    packet = ip_packet(size)
    t0 = time.process_time()
    for _ in range(packets):
        if not step(packet, now):
            raise RuntimeError("a packet was lost in memory")
    return time.process_time() - t0


def measure(packets: int, size: int, repeat: int = 3,
            only: list[str] | None = None) -> dict[str, Any]:
    """Best of `repeat` per row, the rows' runs interleaved (a burst of load on a shared
    machine then touches every row alike)."""
    chosen = {n: make for n, make in rows().items() if not only or any(o in n for o in only)}
    best: dict[str, float] = {}
    for _ in range(repeat):
        for name, make in chosen.items():
            took = run_direction(*make(), packets, size)
            best[name] = min(best.get(name, took), took)
    return {"packets": packets, "size": size, "repeat": repeat, "rows": {
        name: {"us_per_packet": round(t / packets * 1e6, 2),
               "mbit_s_one_core": round(packets * size * 8 / t / 1e6, 1)}
        for name, t in best.items()}}


def profile(packets: int, size: int, row: str = "mppe128-stateless") -> str:
    step, now = rows()[row]()
    prof = cProfile.Profile()
    prof.enable()
    run_direction(step, now, packets, size)
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(18)
    return out.getvalue()


def _rows_table(result: dict[str, Any]) -> str:
    lines = [f"data path in memory, {result['packets']} packets of {result['size']} octets "
             f"one way (best of {result['repeat']}; CPU time of the stack only, no syscalls)",
             f"{'row':<20} {'us/packet':>10} {'Mbit/s on one core':>19}"]
    for name, r in result["rows"].items():
        lines.append(f"{name:<20} {r['us_per_packet']:>10.2f} {r['mbit_s_one_core']:>19.1f}")
    return "\n".join(lines)


def add_arguments(p: Any) -> None:
    p.add_argument("--packets", type=int, default=20000)
    p.add_argument("--size", type=int, default=1400, help="IP packet size in octets")
    p.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    p.add_argument("--only", action="append", default=[], metavar="ROW",
                   help="measure only rows whose name contains this (repeat)")
    p.add_argument("--profile", action="store_true", help="print cProfile's top functions")


def run(args: Any) -> dict[str, Any]:
    result = measure(args.packets, args.size, args.repeat, args.only)
    if args.profile:
        result["profile"] = {m: profile(args.packets, args.size, m) for m in result["rows"]}
    return result


def table(result: dict[str, Any]) -> str:
    text = _rows_table(result)
    for mode, prof in result.get("profile", {}).items():
        text += f"\n\ncProfile, {mode}:\n{prof}"
    return text
