"""Sessions: many PPTP or L2TP sessions against one server process, with `vpnlab load`.

    python -m bench sessions [--counts 100,1000,max] [--rate 500] [--sessions-per-tunnel 50]
                             [--only ROW] [--json FILE]

The `remote-access` lab (direct client) comes up without captures; our server runs on vpnsrv
with a /16 pool, no port limit beyond the count, LCP echo every 30 s, the row's protocol and
encryption, and `--status` as in the scenarios; `vpnlab load` on the client node opens N
sessions (MS-CHAP v2, an address, one echo through each tunnel; PPTP with MPPE-128
stateless, each its own TCP control connection; L2TP without MPPE, `--sessions-per-tunnel`
calls in each tunnel, all tunnels from one UDP socket) at `--rate` per second. Measured from
outside the server: its RSS before the first session and at its peak (VmHWM) with all N up,
so memory per session = (peak - idle) / N (an upper bound: transient buffers count), and its
CPU seconds over the run per session. From the generator: setups per second, setup latency,
failures by reason. "max" tries counts of 2000, 5000 and then 10000 (the issue's goal) until
one fails or takes longer than `--budget` seconds. Rows per protocol (PROTOCOLS); rows the
scenario refuses print "not built yet". Goals (issue 8): 10,000 sessions, >= 500 setups/s,
<= 32 KiB per session.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from bench.common import NOT_BUILT, PROJECT, Variant, cpu_seconds, format_table, rss_kib

PROTOCOLS = [
    Variant("pptp mppe-128 stateless", {"protocol": "pptp", "auth": "mschapv2",
                                        "encryption": "strongest", "mppe": "stateless"}),
    Variant("l2tp", {"protocol": "l2tp", "auth": "mschapv2", "encryption": "none"}),
]
USER, PASSWORD = "alice", "Pa55w0rd!"
MAX_STEPS = (2000, 5000, 10000)
GOALS = {"sessions": 10000, "setups_per_second": 500, "kib_per_session": 32}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--counts", default="100,1000,max",
                   help="comma-separated session counts; 'max' steps up to 10000")
    p.add_argument("--rate", type=float, default=1000.0, help="setups per second asked")
    p.add_argument("--window", type=int, default=1024,
                   help="vpnlab load --window: sessions negotiating at once")
    p.add_argument("--profile", action="store_true",
                   help="sample the server with py-spy during each count (development tool)")
    p.add_argument("--budget", type=float, default=150.0,
                   help="seconds one count may take before 'max' stops stepping up")
    p.add_argument("--sessions-per-tunnel", type=int, default=50,
                   help="L2TP rows: calls per tunnel")
    p.add_argument("--only", action="append", default=[], metavar="ROW",
                   help="measure only rows whose name contains this (repeat)")


def _server_config(listen: str, count: int, variant: Variant) -> str:
    params = variant.params
    return "\n".join([
        "[server]", f'listen = "{listen}"', 'name = "vpnsrv"', 'pool = "10.64.0.0/16"',
        'auth = ["mschapv2"]', f'encryption = "{params.get("encryption", "strongest")}"',
        f'mppe = "{params.get("mppe", "stateless")}"',
        f'protocols = ["{params.get("protocol", "pptp")}"]',
        "echo_interval = 30", f"max_ports = {count + 16}", "control_echo = 60", "",
        f"[users.{USER}]", f'password = "{PASSWORD}"', ""])


def _load_args(variant: Variant, per_tunnel: int) -> list[str]:
    """`vpnlab load` options of a row: its protocol, MPPE or not, L2TP calls per tunnel."""
    params = variant.params
    args = ["--protocol", params.get("protocol", "pptp"),
            "--encryption", params.get("encryption", "strongest"),
            "--mppe", params.get("mppe", "stateless")]
    if params.get("protocol") == "l2tp":
        args += ["--sessions-per-tunnel", str(per_tunnel)]
    return args


def _vm(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def measure(lab: Any, count: int, rate: float, profile: bool = False, window: int = 256,
            variant: Variant = PROTOCOLS[0], per_tunnel: int = 50) -> dict[str, Any]:
    assert lab.run_dir is not None
    listen = lab.address("vpnsrv", "isp")
    config = lab.run_dir / f"vpnsrv-load-{count}.toml"
    config.write_text(_server_config(listen, count, variant))
    server = lab.node("vpnsrv").start_daemon(
        f"vpnserver-{count}",
        [sys.executable, "-m", "testbed.cli", "server", "--config", str(config), "--json",
         "--status", str(lab.run_dir / f"vpnsrv-load-{count}-status.json")],
        ready=r'"event": "listening"', timeout=15, env={"PYTHONPATH": str(PROJECT)})
    try:
        time.sleep(0.3)  # let the freshly started server settle before the idle figure
        idle_kib, cpu0 = rss_kib(server.pid), cpu_seconds(server.pid)
        t0 = time.monotonic()
        argv = [sys.executable, "-m", "testbed.cli", "load", "--server", listen, "--sessions",
                str(count), "--rate", str(rate), "--user", USER, "--password", PASSWORD,
                "--hold", "2", "--timeout", "400", "--window", str(window), "--json",
                *_load_args(variant, per_tunnel)]
        prof: dict[str, Any] = {}
        if profile:
            from bench.profiling import spy

            box: list[Any] = []
            prof = spy({"server": server.pid}, count / rate + 3,
                       lambda: box.append(lab.node("client").run(argv, timeout=600)))
            res = box[0]
        else:
            res = lab.node("client").run(argv, timeout=600)
        wall = time.monotonic() - t0
        peak_kib, cpu = _vm(server.pid, "VmHWM"), cpu_seconds(server.pid) - cpu0
        try:
            report = json.loads(res.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return {"sessions": count, "error": (res.stderr or res.stdout)[-400:],
                    "wall_seconds": round(wall, 1)}
    finally:
        server.stop(timeout=30)
    report.pop("pump", None)
    if prof:
        print(prof["server"]["summary"], file=sys.stderr)
        report["profile"] = prof
    return {**report, "wall_seconds": round(wall, 1), "server_idle_rss_kib": idle_kib,
            "server_peak_rss_kib": peak_kib,
            "server_kib_per_session": round((peak_kib - idle_kib) / count, 1),
            "server_cpu_seconds": round(cpu, 2),
            "server_cpu_ms_per_session": round(1000 * cpu / count, 2)}


def _counts(spec: str) -> list[int | str]:
    return [c if c == "max" else int(c) for c in spec.split(",") if c]


def skip_reason(variant: Variant) -> str | None:
    """Why a row cannot run: the scenario refuses it, or `vpnlab load` cannot speak it."""
    from tunnels import load

    why = variant.unavailable()
    protocol = variant.params.get("protocol", "pptp")
    if not why and protocol not in load.PROTOCOLS:
        why = f"{NOT_BUILT} (vpnlab load speaks {', '.join(load.PROTOCOLS)}, not {protocol})"
    return why


def run(args: argparse.Namespace) -> dict[str, Any]:
    from bench.common import scenario_lab

    rows: list[dict[str, Any]] = []
    for variant in PROTOCOLS:
        if args.only and not any(o in variant.name for o in args.only):
            continue
        why = skip_reason(variant)
        if why:
            rows.append({"name": variant.name, "skipped": why})
            continue
        # the scenario's own client and server are not needed: only its nodes and links
        with scenario_lab(variant, start=False) as lab:
            for count in _counts(args.counts):
                steps = list(MAX_STEPS) if count == "max" else [count]
                for n in steps:
                    row = {"name": variant.name, **measure(
                        lab, int(n), args.rate, args.profile, args.window, variant,
                        args.sessions_per_tunnel)}
                    rows.append(row)
                    print(f"  {variant.name} x{n}: {row}", file=sys.stderr, flush=True)
                    if count == "max" and (row.get("failed", 1) or
                                           row["wall_seconds"] > args.budget):
                        break
    return {"rate": args.rate, "window": args.window,
            "sessions_per_tunnel": args.sessions_per_tunnel, "goals": GOALS, "rows": rows}


def table(result: dict[str, Any]) -> str:
    headers = ["server", "sessions", "tunnels", "up", "pinged", "failed", "setups/s",
               "setup s (med/p95)",
               "KiB/session", "server CPU ms/session", "server peak RSS MiB", "wall s"]
    rows: list[list[Any]] = []
    for r in result["rows"]:
        if "skipped" in r:
            rows.append([r["name"], r["skipped"].split(" (")[0]])
            continue
        if "error" in r:
            rows.append([r["name"], r["sessions"], f"error: {r['error'][-120:]}"])
            continue
        rows.append([r["name"], r["sessions"], r.get("tunnels", r["sessions"]), r["up"],
                     r["pinged"], r["failed"],
                     r["setups_per_second"],
                     f"{r['setup_seconds_median']}/{r['setup_seconds_p95']}",
                     r["server_kib_per_session"], r["server_cpu_ms_per_session"],
                     round(r["server_peak_rss_kib"] / 1024, 1), r["wall_seconds"]])
    g = result["goals"]
    note = (f"vpnlab load at {result['rate']:g} setups/s asked, at most "
            f"{result.get('window', 256)} negotiating at once; goals: {g['sessions']} sessions, "
            f">= {g['setups_per_second']} setups/s, <= {g['kib_per_session']} KiB/session")
    reasons = [f"  {r['sessions']}: {r['failure_reasons']}" for r in result["rows"]
               if r.get("failure_reasons")]
    return note + "\n" + format_table(headers, rows) + (
        "\nfailures by reason:\n" + "\n".join(reasons) if reasons else "")
