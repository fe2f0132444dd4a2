"""The PPTP data path without I/O: microseconds per packet through our stacks, and a profile.

    .venv/bin/python -m bench datapath [--packets 20000] [--size 1400] [--profile]

A PPTPClient and a PPTPServer are paired in memory (MS-CHAP v2, then MPPE-128 stateless,
stateful, or none); one direction's IP packets go client.send_datagram → GRE → server
.receive_gre → datagrams_to_tun, exactly the calls the pump makes per packet, with no socket,
TUN or event loop. This is the stacks' share of the per-packet cost, free of syscall and
scheduler noise: the figure each data-path optimisation quotes before and after. `--profile`
prints cProfile's top functions for the encrypted stateless case.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import random
import time
from typing import Any

from tunnels.ppp.auth.base import Account, AuthMethod, LocalAccounts
from tunnels.ppp.config import EncryptionLevel, PPPConfig
from tunnels.stacks.pptp import PPTPClient, PPTPServer, SessionUp

CLIENT, SERVER = "198.51.100.2", "203.0.113.2"
MODES = {"mppe128-stateless": (EncryptionLevel.STRONGEST, True),
         "mppe128-stateful": (EncryptionLevel.STRONGEST, False),
         "none": (EncryptionLevel.NONE, True)}


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


def ip_packet(size: int) -> bytes:
    header = bytes.fromhex("45000000000040004011 0000 0a0a6402 0a0a6401".replace(" ", ""))
    header = header[:2] + size.to_bytes(2, "big") + header[4:]
    return header + bytes(size - 20)


def run_direction(client: PPTPClient, server: PPTPServer, packets: int, size: int) -> float:
    """CPU seconds (of this process: time spent waiting for a core on a shared machine does
    not count) for `packets` packets client → server, one pump iteration's calls each."""
    packet = ip_packet(size)
    t0 = time.process_time()
    now = 1.0
    for _ in range(packets):
        client.send_datagram(packet, now)
        for _dst, gre in client.gre_to_send():
            server.receive_gre(CLIENT, gre, now)
        out = server.datagrams_to_tun()
        if not out:
            raise RuntimeError("a packet was lost in memory")
        server.gre_to_send()  # acks the server owes go out here, as the pump's flush does
        while server.next_event() is not None:
            pass
    return time.process_time() - t0


def measure(packets: int, size: int, repeat: int = 3) -> dict[str, Any]:
    rows = {}
    for name, (level, stateless) in MODES.items():
        best = min(run_direction(*pair(level, stateless), packets, size)
                   for _ in range(repeat))
        rows[name] = {"us_per_packet": round(best / packets * 1e6, 2),
                      "mbit_s_one_core": round(packets * size * 8 / best / 1e6, 1)}
    return {"packets": packets, "size": size, "repeat": repeat, "rows": rows}


def profile(packets: int, size: int, mode: str = "mppe128-stateless") -> str:
    client, server = pair(*MODES[mode])
    prof = cProfile.Profile()
    prof.enable()
    run_direction(client, server, packets, size)
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(18)
    return out.getvalue()


def _rows_table(result: dict[str, Any]) -> str:
    lines = [f"PPTP data path in memory, {result['packets']} packets of {result['size']} octets "
             f"one way (best of {result['repeat']}; CPU time of the stack only, no syscalls)",
             f"{'mode':<20} {'us/packet':>10} {'Mbit/s on one core':>19}"]
    for name, r in result["rows"].items():
        lines.append(f"{name:<20} {r['us_per_packet']:>10.2f} {r['mbit_s_one_core']:>19.1f}")
    return "\n".join(lines)


def add_arguments(p: Any) -> None:
    p.add_argument("--packets", type=int, default=20000)
    p.add_argument("--size", type=int, default=1400, help="IP packet size in octets")
    p.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    p.add_argument("--profile", action="store_true", help="print cProfile's top functions")


def run(args: Any) -> dict[str, Any]:
    result = measure(args.packets, args.size, args.repeat)
    if args.profile:
        result["profile"] = {m: profile(args.packets, args.size, m) for m in MODES}
    return result


def table(result: dict[str, Any]) -> str:
    text = _rows_table(result)
    for mode, prof in result.get("profile", {}).items():
        text += f"\n\ncProfile, {mode}:\n{prof}"
    return text
