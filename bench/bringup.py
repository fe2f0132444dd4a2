"""Bring-up: wall time from nothing to the first ping through the tunnel, by phase.

    python -m bench bringup [--repeat 5] [--json FILE]

For each row of PROTOCOLS (one entry per protocol; rows the scenario refuses print "not built
yet"), `--repeat` times: the `remote-access` lab is built from nothing (Mininet namespaces,
links, addresses, captures, readiness: as `vpnlab run` does), our server started, our client
started, then the intranet file server pinged through the tunnel until it answers. Phases come
from the daemons' own JSON lines (their `time` stamps and the client's `bringup_seconds`), not
from polling:
- lab: Lab.start() (Mininet and the testbed);
- server ready: lab up → the server's "listening" line;
- client start: server ready → the client's "connecting" line (process and import time);
- tunnel up: "connecting" → "tunnel-up" (TCP, PPTP control, LCP, MS-CHAP v2, CCP/MPPE, IPCP,
  TUN device and routes; the client's bringup_seconds);
- first ping: tunnel-up → the first echo reply from the file server;
- pair: lab up → first ping (our server and client: what the goal is about);
then median and spread (min-max) of each. Goal (issue 8): <= 1.5 s for our own pair. The
scenario's pre-tunnel reachability check (a 1 s ping that must fail) is not run here.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from bench.common import Variant, format_table, spread

PROTOCOLS = [
    Variant("pptp mppe-128 stateless", {"protocol": "pptp", "auth": "mschapv2",
                                        "encryption": "strongest", "mppe": "stateless"}),
    Variant("l2tp mppe-128", {"protocol": "l2tp", "auth": "mschapv2", "encryption": "strongest"}),
    Variant("l2tp/ipsec 3des", {"protocol": "l2tp-ipsec", "auth": "mschapv2",
                                "encryption": "none", "cipher": "3des-cbc"}),
    Variant("l2tp/ipsec aes-128", {"protocol": "l2tp-ipsec", "auth": "mschapv2",
                                   "encryption": "none", "cipher": "aes-cbc-128"}),
    # against real peers in user-mode Linux (topologies/interop.py): the lab phase includes
    # the peer's boot; "tunnel up" counts from our client's start (pptpd) or from pppd's dial
    # (pptp-linux to our server); the client start is inside it
    Variant("pptp: ours -> pptpd (UML)", {"peer": "pptpd", "auth": "mschapv2",
                                          "encryption": "strongest"}, scenario="interop"),
    Variant("pptp: pptp-linux (UML) -> ours", {"peer": "pptp-linux", "auth": "mschapv2",
                                               "encryption": "strongest"}, scenario="interop"),
]
PHASES = ("lab", "server_ready", "client_start", "tunnel_up", "first_ping", "pair", "total")
GOAL_SECONDS = 1.5


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--repeat", type=int, default=5)


def _event_time(daemon: Any, event: str) -> float | None:
    for line in daemon.output().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") == event:
            return float(record["time"])
    return None


def once(variant: Variant) -> dict[str, Any]:
    from testbed.lab import Lab
    from topologies import SCENARIOS, remote_access

    scenario = SCENARIOS[variant.scenario]
    params = scenario.resolve(variant.params)
    spec = scenario.build(params)
    t0 = time.time()
    lab = Lab(spec)
    try:
        lab.start()
        t_lab = time.time()
        assert lab.run_dir is not None
        listen = lab.address("vpnsrv", "isp")
        config = lab.run_dir / "vpnsrv.toml"
        config.write_text(remote_access.server_config(params, listen))
        server = lab.node("vpnsrv").start_daemon(
            "vpnserver", remote_access._cli("server", "--config", str(config), "--json"),
            ready=r'"event": "listening"', timeout=15)
        remote_access.connect(lab, "client", params)
        client = lab.node("client").daemons["vpnclient"]
        t_up = _event_time(client, "tunnel-up")
        if t_up is None:
            return {"error": client.output()[-300:]}
        client_node = lab.node("client")
        while not client_node.run(["ping", "-c1", "-W1", "-n", remote_access.FILESERVER]).ok:
            if time.time() - t0 > 60:
                return {"error": "no ping answer through the tunnel within 60 s"}
        t_ping = time.time()
        t_listen = _event_time(server, "listening") or t_lab
        t_connecting = _event_time(client, "connecting") or t_listen
        times = {"lab": t_lab - t0, "server_ready": t_listen - t_lab,
                 "client_start": t_connecting - t_listen, "tunnel_up": t_up - t_connecting,
                 "first_ping": t_ping - t_up, "pair": t_ping - t_lab, "total": t_ping - t0}
    finally:
        t_stop = time.time()
        lab.stop()
        teardown = time.time() - t_stop
    return {**{k: round(v, 3) for k, v in times.items()}, "teardown": round(teardown, 3)}


def once_with_peer(variant: Variant) -> dict[str, Any]:
    """The same phases against a reference peer; `boot` is the UML's own boot time."""
    from testbed.lab import Lab
    from topologies import SCENARIOS, interop

    scenario = SCENARIOS[variant.scenario]
    params = scenario.resolve(variant.params)
    t0 = time.time()
    lab = Lab(scenario.build(params))
    try:
        lab.start()
        t_lab = time.time()
        peer = lab.node("peer").peer  # type: ignore[attr-defined]
        lab.figures = {}  # type: ignore[attr-defined]
        ours_dial = params["peer"] in interop.OUR_CLIENT
        interop.start_ours(lab, params)  # our client up, or our server listening
        t_ours = time.time()
        if not ours_dial:
            dialled = peer.dial(timeout=40)
            if not dialled.ok:
                return {"error": (dialled.stdout + dialled.stderr)[-300:]}
        t_up = time.time()
        if ours_dial:
            def pinged() -> bool:
                return lab.node("ours").run(["ping", "-c1", "-W1", "-n",
                                             interop.PPTPD_LOCAL]).ok
        else:
            def pinged() -> bool:
                return peer.run(["ping", "-c1", "-W1", "-n", interop.SERVER_TUNNEL]).ok
        while not pinged():
            if time.time() - t0 > 90:
                return {"error": "no ping answer through the tunnel within 90 s"}
        t_ping = time.time()
        times = {"lab": t_lab - t0, "server_ready": 0.0 if ours_dial else t_ours - t_lab,
                 "client_start": 0.0, "tunnel_up": t_up - (t_lab if ours_dial else t_ours),
                 "first_ping": t_ping - t_up, "pair": t_ping - t_lab, "total": t_ping - t0,
                 "boot": peer.boot_seconds or 0.0}
    finally:
        t_stop = time.time()
        lab.stop()
        teardown = time.time() - t_stop
    return {**{k: round(v, 3) for k, v in times.items()}, "teardown": round(teardown, 3)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    rows = []
    for variant in PROTOCOLS:
        why = variant.unavailable()
        if why:
            rows.append({"name": variant.name, "skipped": why})
            continue
        measure = once_with_peer if variant.scenario == "interop" else once
        runs = [measure(variant) for _ in range(args.repeat)]
        good = [r for r in runs if "error" not in r]
        rows.append({"name": variant.name, "runs": runs, "failures": len(runs) - len(good),
                     "phases": {p: spread([r[p] for r in good]) for p in (*PHASES, "teardown")}})
    return {"repeat": args.repeat, "goal_seconds": GOAL_SECONDS, "rows": rows}


def table(result: dict[str, Any]) -> str:
    headers = ["tunnel", *[f"{p} s" for p in PHASES], "teardown s", "fails"]
    rows: list[list[Any]] = []
    for r in result["rows"]:
        if "skipped" in r:
            rows.append([r["name"], r["skipped"].split(" (")[0]])
            continue
        cells = [r["name"]]
        for p in (*PHASES, "teardown"):
            s = r["phases"][p]
            cells.append(f"{s['median']:.2f} ({s['min']:.2f}-{s['max']:.2f})" if s["n"] else "-")
        rows.append([*cells, r["failures"]])
    note = (f"median (min-max) of {result['repeat']} bring-ups from nothing; goal: pair (server "
            f"ready + client start + tunnel up + first ping) <= {result['goal_seconds']} s")
    return note + "\n" + format_table(headers, rows)
