"""Link presets: configured vs measured rate, RTT and loss, on this machine, in one run.

    sudo .venv/bin/python bench/link_presets.py [--pings 500] [--json]
    .venv/bin/python -m bench links [--json FILE]      # the same, in the bench framework

Each preset shapes the home NAT's link of the `internet` scenario; the client measures toward
the Internet host: TCP goodput with iperf3 (download: server → client, i.e. B→A of the access
link whose A end is the subscriber, so `rate_b_to_a`; the first 2 s of slow start omitted),
RTT and loss with ping. The unshaped `ethernet` row is the baseline
of the same run. Goals (issue 2): rate within 5%, RTT within 5 ms, loss within 1 point.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from testbed import sandbox  # noqa: E402
from testbed.shaping import PRESETS  # noqa: E402


def measure(name: str, pings: int) -> dict:
    from conformance.plugin import start_scenario

    shape = PRESETS[name]
    row: dict = {"preset": name, "configured": shape.describe()}
    with start_scenario("internet", link=name) as lab:
        client, www = lab.node("client"), lab.node("www")
        server = www.start_daemon("iperf3", ["iperf3", "-s", "-1", "--forceflush"],
                                    ready="listening")
        seconds = "10" if (shape.rate_bps or 10**9) < 200_000 else "5"
        res = client.run(["iperf3", "-c", lab.address("www"), "-R", "-O", "2", "-t", seconds,
                          "-J"],
                         timeout=60)
        server.stop()
        if res.ok:
            data = json.loads(res.stdout)
            goodput = data["end"]["sum_received"]["bits_per_second"]
            # TCP payload 1448 bytes per 1514-byte Ethernet frame: the rate the wire clocked
            row["rate_bps"] = round(goodput * 1514 / 1448)
        interval = "0.01" if shape.delay_ms < 50 else "0.05"
        res = client.run(["ping", "-c", str(pings), "-i", interval, "-W", "2", "-q", "-n",
                          lab.address("www")], timeout=pings * 0.1 + 30)
        loss = re.search(r"([\d.]+)% packet loss", res.stdout)
        rtt = re.search(r"= ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms", res.stdout)
        row["loss_pct"] = float(loss.group(1)) if loss else None
        if rtt:
            row["rtt_ms"], row["rtt_sd_ms"] = float(rtt.group(2)), float(rtt.group(4))
        if lab._link_nodes:  # the wire's own counts: one-way loss per direction, drops
            with contextlib.suppress(Exception):
                stats = lab.link("homenat", "isp").stats()
                row["wire"] = {k: stats[k] for k in ("ab", "ba")}
    # a 98-byte ping frame is clocked out at the rate in each direction, as netem's rate does
    want_rtt = 2 * shape.delay_ms + sum(98 * 8 * 1000 / r for r in (shape.rate_bps,
                                        shape.rate_b_to_a) if r)
    row["configured_rtt_ms"] = want_rtt
    # a ping is lost when either its request or its reply is: 1 - (1 - p)^2 per round trip
    row["configured_loss_pct"] = 100 * (1 - (1 - shape.loss_pct / 100) ** 2)
    row["configured_rate_bps"] = shape.rate_b_to_a
    row["goals_met"] = _goals_met(row)
    return row


def _goals_met(row: dict) -> bool:
    """Issue 2's goals: rate within 5%, RTT within 5 ms, loss within 1 point."""
    want, got = row["configured_rate_bps"], row.get("rate_bps")
    rate_ok = want is None or (got is not None and abs(got / want - 1) <= 0.05)
    rtt_ok = abs(row.get("rtt_ms", 1e9) - row["configured_rtt_ms"]) <= 5
    loss = row.get("loss_pct")
    loss_ok = loss is not None and abs(loss - row["configured_loss_pct"]) <= 1
    return rate_ok and rtt_ok and loss_ok


def format_rows(rows: list[dict]) -> str:
    """The table `main` and `python -m bench links` print."""
    out = [f"{'preset':<10} {'rate want':>10} {'rate got':>10} {'ratio':>6} {'RTT want':>8} "
           f"{'RTT got':>12} {'loss want':>9} {'loss got':>8} {'goals':>5}  (rate: B→A, "
           "TCP goodput scaled to Ethernet frames; RTT/loss: ping, round trip)"]
    for r in rows:
        want = r["configured_rate_bps"]
        got = r.get("rate_bps")
        ratio = f"{got / want:.3f}" if want and got else "-"
        out.append(f"{r['preset']:<10} {want or '-':>10} {got or '-':>10} {ratio:>6} "
                   f"{r['configured_rtt_ms']:>8.2f} "
                   f"{r.get('rtt_ms', 0):>7.2f}±{r.get('rtt_sd_ms', 0):<4.2f} "
                   f"{r['configured_loss_pct']:>9.2f} {r.get('loss_pct')!s:>8} "
                   f"{'ok' if r['goals_met'] else 'MISS':>5}")
    return "\n".join(out)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--pings", type=int, default=400)
    p.add_argument("--json", action="store_true")
    p.add_argument("presets", nargs="*", default=list(PRESETS))
    args = p.parse_args()
    if not sandbox.in_sandbox():
        return sandbox.reexec_in_sandbox()
    # PID 1 of the sandbox ignores signals without a handler: SIGTERM must still stop us,
    # through the labs' `finally` teardown.
    signal.signal(signal.SIGTERM, _interrupt)
    os.environ["VPNLAB_QUIET"] = "1"
    rows = []
    for name in args.presets:
        t0 = time.monotonic()
        rows.append(measure(name, args.pings))
        rows[-1]["seconds"] = round(time.monotonic() - t0, 1)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(format_rows(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
