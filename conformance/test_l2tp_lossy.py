"""L2TP's control channel over a bad Internet path (issue 5): 10% loss and reordering.

`remote-access` with protocol=l2tp and the client's link to its ISP shaped with 20 ms one way,
10% loss per direction and 25% of frames reordered (sent ahead of the delay, netem's meaning),
with a fresh seed per run (printed; VPNLAB_SEED=N repeats a run's link choices). RFC 2661 §5.8's
reliable delivery must still bring the tunnel and the session up, carry a ping, and take them
down again: a CDN (from whichever end's PPP ends first) and the client's StopCCN, both
acknowledged, and the client exiting 0. The
retransmissions are reported: from the server's JSON status (`stacks.l2tp.tunnels[*].channel`,
while the tunnel exists: it is forgotten once closed), from the client's status counters, and
counted on the wire from both ends' captures (tshark: a control message whose Ns its sender had
already sent on that tunnel). All of them go to the test output and to JUnit XML as properties.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from conformance.plugin import start_scenario
from testbed import pcap
from topologies.remote_access import FILESERVER, check_tunnels, status

pytestmark = pytest.mark.netns

LOSS, REORDER = "10", "25"
STOPCCN, CDN = 4, 14  # RFC 2661 §3.2 message types


def _control_messages(path: Path) -> list[dict]:
    """The L2TP control messages (ZLBs included) of a capture, decoded by tshark, in order."""
    rows = pcap.tshark_fields(path, ["ip.src", "l2tp.tunnel", "l2tp.Ns", "l2tp.Nr",
                                     "l2tp.avp.message_type"], "l2tp.type == 1")
    return [{"src": r[0], "tunnel": int(r[1]), "ns": int(r[2]), "nr": int(r[3]),
             "type": int(r[4].split(",")[0]) if r[4] else None} for r in rows]


def _retransmissions(messages: list[dict], sender: str) -> int:
    """Non-ZLB messages from `sender` repeating an (tunnel, Ns) it already sent (§5.8: a
    retransmission carries the same Ns). A ZLB's Ns is the next one, not a message's."""
    seen = Counter((m["tunnel"], m["ns"]) for m in messages
                   if m["src"] == sender and m["type"] is not None)
    return sum(n - 1 for n in seen.values())


def _acknowledged(messages: list[dict], sender: str, message_type: int) -> bool | None:
    """None if `sender` never sent `message_type`; else whether a message of its peer (in the
    capture at the sender's end, past the lossy link) carries an Nr beyond its Ns (§5.8)."""
    sent = [m for m in messages if m["src"] == sender and m["type"] == message_type]
    if not sent:
        return None
    return any(m["src"] != sender and m["nr"] > sent[0]["ns"] for m in messages)


def _wait_for_server_session(lab, timeout: float = 30.0) -> None:
    """The two ends open IPCP apart: a lost Configure-Ack costs the server a restart timer
    (3 s) or more after the client is up, longer than the scenario check's own wait."""
    address = status(lab, "client").get("local_address")
    deadline = time.monotonic() + timeout
    while address and time.monotonic() < deadline:
        if any(s.get("address") == address for s in status(lab, "vpnsrv").get("sessions", [])):
            return
        time.sleep(0.2)


def _closed(tunnels: list[dict]) -> bool:
    return all(t["state"] in ("closing", "closed") and t["sessions"] == 0 for t in tunnels)


def _server_tunnels(lab) -> list[dict]:
    return status(lab, "vpnsrv").get("stacks", {}).get("l2tp", {}).get("tunnels", [])


def _up_and_ping(lab, report: dict) -> None:
    """Tunnel and session up at both ends, then a ping through the tunnel."""
    _wait_for_server_session(lab)
    failed = [f"{r.name}: {r.detail}" for r in check_tunnels(lab, lab.params) if not r.passed]
    assert not failed, failed
    report["bringup_seconds"] = status(lab, "client").get("bringup_seconds")
    # three replies within 20 s: a lost CCP or IPCP Configure-Ack renegotiates that layer
    # (RFC 1661: RCR in Opened), and the data stops for a restart timer or two
    ping = lab.node("client").run(["ping", "-c", "3", "-w", "20", "-i", "0.3", "-n", "-q",
                                   FILESERVER], timeout=40)
    assert ping.ok, f"no ping through the tunnel: {ping.stdout} {ping.stderr}"
    report["ping"] = ping.stdout.strip().splitlines()[-2]
    tunnels = _server_tunnels(lab)
    assert len(tunnels) == 1, tunnels
    report["server_channel_while_up"] = tunnels[0]["channel"]
    report["server_retransmitted_setup"] = tunnels[0]["channel"]["retransmitted"]


def _hang_up(lab, report: dict) -> int:
    """SIGTERM to the client: PPP Terminate, CDN, StopCCN, and it waits for their ack. The
    wait is longer than Daemon.stop's 5 s, since PPP's Terminate may be lost too."""
    daemon = lab.node("client").daemons["vpnclient"]
    hang_up = time.monotonic()
    daemon.send_signal(signal.SIGTERM)
    code = daemon.wait(30)
    report["hang_up_seconds"] = round(time.monotonic() - hang_up, 1)
    report["client_exit"] = code
    report["client_counters"] = status(lab, "client").get("counters", {})
    # the server acks the StopCCN and lingers in `closing` for one retransmission cycle
    # (§5.7: a lost ack means the StopCCN comes again), its counters intact
    deadline = time.monotonic() + 10
    while not _closed(_server_tunnels(lab)) and time.monotonic() < deadline:
        time.sleep(0.2)
    after = _server_tunnels(lab)
    report["server_tunnels_after"] = [(t["state"], t["sessions"]) for t in after]
    if after:
        report["server_channel_end"] = after[0]["channel"]
        report["server_retransmitted"] = after[0]["channel"]["retransmitted"]
    report["link"] = lab.link("client", "isp").stats()
    return code


def _wire_report(report: dict, client_pcap: Path, server_pcap: Path, client: str,
                 server: str) -> dict:
    """Retransmissions and acknowledgements counted from the captures (tshark)."""
    at_client, at_server = _control_messages(client_pcap), _control_messages(server_pcap)
    report["client_retransmitted_wire"] = _retransmissions(at_client, client)
    report["server_retransmitted_wire"] = _retransmissions(at_server, server)
    report["control_messages_at_client"] = len(at_client)
    report["control_messages_at_server"] = len(at_server)
    # the CDN comes from whichever end's PPP ends first: the client's after the server's
    # Terminate-Ack, or the server's after the client's Terminate-Request
    cdn = {"client": _acknowledged(at_client, client, CDN),
           "server": _acknowledged(at_server, server, CDN)}
    report["cdn_sent_by"] = [end for end, acked in cdn.items() if acked is not None]
    report["stopccn_acked"] = _acknowledged(at_client, client, STOPCCN)
    # The two CDNs may cross, and the client's StopCCN follows its own CDN at once: when the
    # server's CDN was lost, the client's acknowledged StopCCN ends the tunnel with every
    # session in it (RFC 2661 §5.7, §6.4), so that CDN is settled without an ack of its own.
    settled = {end: acked or (end == "server" and bool(report["stopccn_acked"]))
               for end, acked in cdn.items() if acked is not None}
    report["cdn_settled_by_stopccn"] = [end for end, acked in cdn.items()
                                        if acked is False and settled.get(end)]
    report["cdn_acked"] = bool(settled) and all(settled.values())
    return cdn


def test_l2tp_setup_and_teardown_survive_loss_and_reordering(record_property):
    seed = int(os.environ.get("VPNLAB_SEED") or random.randrange(2**31))
    started = time.monotonic()
    report: dict[str, object] = {"seed": seed, "loss_pct": LOSS, "reorder_pct": REORDER}
    try:
        with start_scenario("remote-access", protocol="l2tp", isp_loss=LOSS,
                            isp_reorder=REORDER, isp_seed=str(seed)) as lab:
            report["setup_seconds"] = round(time.monotonic() - started, 1)
            report["run_dir"] = str(lab.run_dir)
            _up_and_ping(lab, report)
            code = _hang_up(lab, report)
            ends = (lab.capture_path("client", "isp"), lab.capture_path("vpnsrv", "isp"),
                    lab.address("client", "isp"), lab.address("vpnsrv", "isp"))
        cdn = _wire_report(report, *ends)  # the captures are complete once the lab is down
        assert code == 0, f"client exited {code} after the hang-up"
        assert report["cdn_acked"], f"no CDN, or not acknowledged: {cdn}"
        assert report["stopccn_acked"], "the client's StopCCN was never acknowledged"
        assert all(state in ("closing", "closed") and sessions == 0
                   for state, sessions in report["server_tunnels_after"]), \
            "the server's tunnel is still open"
    finally:
        report["run_seconds"] = round(time.monotonic() - started, 1)
        for key, value in report.items():
            record_property(key, value)
        print("\nL2TP over 10% loss + 25% reordering:")
        for key, value in report.items():
            print(f"  {key}: {value}")
