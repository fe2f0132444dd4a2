"""Throughput through one tunnel, with the plain veth path and a minimal relay as baselines.

    python -m bench throughput [--seconds 4] [--repeat 2] [--udp-rate 50M] [--json FILE]

For each protocol row (table PROTOCOLS: adding a protocol is one entry), the `remote-access`
scenario comes up without captures; in that same lab, turn by turn and `--repeat` times:
- veth: iperf3 TCP from the client to the server's carrier address (the kernel's path through
  the ISP router: the tunnel's own underlay);
- relay: the same through bench/relay.py on both ends (TUN <-> UDP in Python, structured as our
  pump: the ceiling of a Python data path);
- the tunnel: iperf3 from the client to the server's tunnel address, answered by the server's
  kernel through its TUN device;
then iperf3 UDP at a fixed rate through relay and tunnel for loss. Each tunnel figure is also
a ratio to the relay measured in the same lab minutes apart (the machine may be shared: ratios
are steadier than absolute figures). CPU: user+system seconds of each daemon (client and
server, or the two relays) from /proc/PID/stat around each transfer, per GB moved; "CPU x
relay" is the relay's CPU per GB over the tunnel's, the throughput ratio's counterpart that a
loaded machine disturbs least.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

from bench.common import PROJECT, Variant, cpu_seconds, format_table, spread

PROTOCOLS = [
    Variant("pptp mppe-128 stateless", {"protocol": "pptp", "auth": "mschapv2",
                                        "encryption": "strongest", "mppe": "stateless"}),
    Variant("pptp mppe-128 stateful", {"protocol": "pptp", "auth": "mschapv2",
                                       "encryption": "strongest", "mppe": "stateful"}),
    Variant("pptp no encryption", {"protocol": "pptp", "auth": "mschapv2", "encryption": "none"}),
    Variant("l2tp", {"protocol": "l2tp", "auth": "mschapv2", "encryption": "none"}),
    # ESP integrity: HMAC-SHA1-96, the first of our IKE proposals (tunnels/ipsec/ike/config.py)
    Variant("l2tp/ipsec 3des", {"protocol": "l2tp-ipsec", "auth": "mschapv2",
                                "encryption": "none", "cipher": "3des-cbc"}),
    Variant("l2tp/ipsec aes-128", {"protocol": "l2tp-ipsec", "auth": "mschapv2",
                                   "encryption": "none", "cipher": "aes-cbc-128"}),
]
GOAL_RATIO = {"pptp mppe-128 stateless": 0.6, "pptp mppe-128 stateful": 0.6,
              "l2tp/ipsec aes-128": 0.5}
RELAY_NET = ("10.99.0.1", "10.99.0.2")  # the relay's TUN link: client end, server end


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seconds", type=float, default=4.0, help="per iperf3 TCP run")
    p.add_argument("--repeat", type=int, default=2, help="turns per lab (median reported)")
    p.add_argument("--udp-rate", default="50M", help="iperf3 -b for the UDP loss runs")
    p.add_argument("--only", action="append", default=[], metavar="ROW",
                   help="measure only rows whose name contains this (repeat)")
    p.add_argument("--profile", action="store_true",
                   help="sample both daemons with py-spy during one extra tunnel transfer "
                        "(needs py-spy: pip install py-spy, a development tool only)")


def _iperf(node: Any, target: str, argv: list[str], timeout: float) -> dict[str, Any]:
    """iperf3's summary; tried up to three times, a second apart: on a loaded machine the
    server may still be closing the previous test ("the server is busy")."""
    for _ in range(3):
        res = node.run(["iperf3", "-c", target, "-J", *argv], timeout=timeout)
        try:
            data = json.loads(res.stdout)
        except ValueError:
            data = {"error": (res.stderr or res.stdout).strip()[-300:]}
        if "error" not in data:
            return data["end"]
        time.sleep(1.0)
    return {"error": data["error"]}


def transfer(lab: Any, target: str, seconds: float, pids: dict[str, int]) -> dict[str, Any]:
    """One iperf3 TCP run client → target: Mbit/s received and each daemon's CPU per GB."""
    before = {n: cpu_seconds(p) for n, p in pids.items()}
    end = _iperf(lab.node("client"), target, ["-t", str(seconds)], seconds + 30)
    if "error" in end:
        return end
    cpu = {n: cpu_seconds(p) - before[n] for n, p in pids.items()}
    moved = end["sum_received"]["bytes"]
    gb = moved / 1e9
    return {"mbit_s": round(end["sum_received"]["bits_per_second"] / 1e6, 1), "bytes": moved,
            "retransmits": end["sum_sent"].get("retransmits"),
            "cpu_s": {n: round(c, 3) for n, c in cpu.items()},
            "cpu_s_per_gb": {n: round(c / gb, 2) for n, c in cpu.items()} if gb else {},
            "cpu_s_per_gb_total": round(sum(cpu.values()) / gb, 2) if gb else None}


def udp_loss(lab: Any, target: str, rate: str) -> dict[str, Any]:
    end = _iperf(lab.node("client"), target, ["-u", "-b", rate, "-l", "1300", "-t", "3"], 40)
    if "error" in end:
        return end
    s = end["sum"]
    return {"rate": rate, "lost_pct": round(s.get("lost_percent", 0.0), 3),
            "jitter_ms": round(s.get("jitter_ms", 0.0), 3)}


def _start_relays(lab: Any) -> dict[str, int]:
    env = {"PYTHONPATH": str(PROJECT)}
    ends = (("client", lab.address("client", "isp"), lab.address("vpnsrv", "isp"), RELAY_NET),
            ("vpnsrv", lab.address("vpnsrv", "isp"), lab.address("client", "isp"),
             RELAY_NET[::-1]))
    pids = {}
    for node, local, remote, (addr, peer) in ends:
        d = lab.node(node).start_daemon(
            "relay", [sys.executable, "-m", "bench.relay", "--local", local, "--remote", remote,
                      "--address", addr, "--peer", peer], ready="relay ready", env=env)
        pids[f"{node} relay"] = d.pid
    return pids


def _tunnel_target(lab: Any) -> str:
    from topologies import remote_access

    return remote_access.status(lab, "client")["peer_address"]


def measure_variant(variant: Variant, args: argparse.Namespace) -> dict[str, Any]:
    from bench.common import scenario_lab

    row: dict[str, Any] = {"name": variant.name, "params": dict(variant.params), "turns": []}
    with scenario_lab(variant) as lab:
        vpn = {"client daemon": lab.node("client").daemons["vpnclient"].pid,
               "server daemon": lab.node("vpnsrv").daemons["vpnserver"].pid}
        lab.node("vpnsrv").start_daemon("iperf3", ["iperf3", "-s", "--forceflush"],
                                        ready="listening")
        relay = _start_relays(lab)
        target = _tunnel_target(lab)
        veth_target = lab.address("vpnsrv", "isp")
        for _ in range(args.repeat):
            turn = {"relay": transfer(lab, RELAY_NET[1], args.seconds, relay),
                    "tunnel": transfer(lab, target, args.seconds, vpn),
                    "veth": transfer(lab, veth_target, args.seconds, {})}
            if "mbit_s" in turn["relay"] and "mbit_s" in turn["tunnel"]:
                turn["ratio_to_relay"] = round(turn["tunnel"]["mbit_s"] /
                                               turn["relay"]["mbit_s"], 3)
            row["turns"].append(turn)
        row["udp"] = {"relay": udp_loss(lab, RELAY_NET[1], args.udp_rate),
                      "tunnel": udp_loss(lab, target, args.udp_rate)}
        if args.profile:
            row["profile"] = profile_transfer(lab, target, args.seconds, vpn)
    return row


def profile_transfer(lab: Any, target: str, seconds: float,
                     pids: dict[str, int]) -> dict[str, Any]:
    """py-spy samples (non-blocking, native frames off) of each daemon during one transfer:
    the share of samples per innermost Python function, and per module of the stack."""
    from bench.profiling import spy

    return spy(pids, seconds, lambda: transfer(lab, target, seconds, {}))


def summarize(row: dict[str, Any]) -> dict[str, Any]:
    def med(kind: str, key: str) -> float | None:
        vals = [t[kind][key] for t in row["turns"] if t[kind].get(key) is not None]
        return round(statistics.median(vals), 2) if vals else None

    ratios = [t["ratio_to_relay"] for t in row["turns"] if "ratio_to_relay" in t]
    return {"tunnel_mbit_s": med("tunnel", "mbit_s"), "relay_mbit_s": med("relay", "mbit_s"),
            "veth_mbit_s": med("veth", "mbit_s"), "ratio_to_relay": spread(ratios),
            "tunnel_cpu_s_per_gb": med("tunnel", "cpu_s_per_gb_total"),
            "relay_cpu_s_per_gb": med("relay", "cpu_s_per_gb_total"),
            "goal_ratio": GOAL_RATIO.get(row["name"]),
            # CPU per byte, relay over tunnel: the same ratio free of how long the daemons
            # waited for a core on a shared machine
            "cpu_ratio_to_relay": _ratio(med("relay", "cpu_s_per_gb_total"),
                                         med("tunnel", "cpu_s_per_gb_total"))}


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def run(args: argparse.Namespace) -> dict[str, Any]:
    rows = []
    for variant in PROTOCOLS:
        if args.only and not any(o in variant.name for o in args.only):
            continue
        why = variant.unavailable()
        if why:
            rows.append({"name": variant.name, "params": dict(variant.params), "skipped": why})
            continue
        row = measure_variant(variant, args)
        row["summary"] = summarize(row)
        rows.append(row)
        print(f"  measured {variant.name}: {row['summary']}", file=sys.stderr, flush=True)
    return {"seconds": args.seconds, "repeat": args.repeat, "udp_rate": args.udp_rate,
            "rows": rows}


def table(result: dict[str, Any]) -> str:
    headers = ["tunnel", "Mbit/s", "relay", "veth", "x relay", "(min-max)", "goal",
               "CPU s/GB", "relay CPU s/GB", "CPU x relay", f"UDP {result['udp_rate']} loss %",
               "relay loss %"]
    rows: list[list[Any]] = []
    for r in result["rows"]:
        if "skipped" in r:
            rows.append([r["name"], r["skipped"].split(" (")[0]])
            continue
        s, udp = r["summary"], r["udp"]
        ratio = s["ratio_to_relay"]
        rows.append([r["name"], s["tunnel_mbit_s"], s["relay_mbit_s"], s["veth_mbit_s"],
                     ratio.get("median"), f"{ratio.get('min')}-{ratio.get('max')}",
                     s["goal_ratio"], s["tunnel_cpu_s_per_gb"], s["relay_cpu_s_per_gb"],
                     s.get("cpu_ratio_to_relay"), udp["tunnel"].get("lost_pct"),
                     udp["relay"].get("lost_pct")])
    note = (f"iperf3 TCP client -> server, {result['seconds']} s x {result['repeat']} turns per "
            "lab, medians; relay and veth measured in the same lab as each tunnel; CPU: both "
            "daemons (or both relays), user+system")
    text = note + "\n" + format_table(headers, rows)
    for r in result["rows"]:
        for proc, prof in r.get("profile", {}).items():
            text += f"\n\n{r['name']}: {proc}, py-spy " + prof["summary"]
    return text
