"""The SoftEther cells of `interop`: our L2TP/IPsec client against SoftEther VPN Server 5.01
(Debian's softether-vpnserver), a userspace L2TP/IPsec server run directly in a namespace.

    ours -- isp -- peer (a host: vpnserver in a private mount namespace, its state in the run
                         directory; configured with vpncmd: a user, IPsec with L2TP and the PSK,
                         SecureNAT for DHCP, and a local bridge to a TAP with an address, so the
                         namespace reaches the tunnel's subnet and can ping and connect back)

SoftEther answers IKE with ID_IPV4_ADDR 0.0.0.0 and always puts ESP in UDP 4500 (recipe).
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from testbed.lab import Lab
from testbed.model import LabSpec, LinkSpec, NodeKind, NodeSpec, Route
from testbed.scenario import CheckResult

PEER = "softether"
TAP_ADDRESS = "192.168.30.2"  # on SoftEther's hub, beside SecureNAT's 192.168.30.1 and DHCP
HUB_NET = "192.168.30.0/24"
VPNCMD = ["vpncmd", "localhost:5555", "/SERVER"]

_START = r"""
S=$1
mount -t tmpfs none /var/lib; mount -t tmpfs none /var/log; mount -t tmpfs none /run
mkdir -p /var/lib/softether /var/log/softether /run/softether
mount --bind $S/lib /var/lib/softether; mount --bind $S/log /var/log/softether
echo starting
exec /usr/libexec/softether/vpnserver/vpnserver execsvc
"""
# then vpncmd (a TCP client of port 5555; its own log under a private /var/log)
_CONFIGURE = r"""
set -e
PSK=$1; USER=$2; PASS=$3
mount -t tmpfs none /var/log; mkdir -p /var/log/softether
for i in $(seq 200); do ss -Hltn 'sport = :5555' | grep -q LISTEN && break; sleep 0.05; done
v() { vpncmd localhost:5555 /SERVER "$@" > /dev/null; }
v /CMD IPsecEnable /L2TP:yes /L2TPRAW:no /ETHERIP:no /PSK:$PSK /DEFAULTHUB:DEFAULT
v /HUB:DEFAULT /CMD UserCreate $USER /GROUP:none /REALNAME:none /NOTE:none
v /HUB:DEFAULT /CMD UserPasswordSet $USER /PASSWORD:$PASS
v /HUB:DEFAULT /CMD SecureNatEnable
v /CMD BridgeCreate DEFAULT /DEVICE:lab /TAP:yes
for i in $(seq 100); do ip link show tap_lab > /dev/null 2>&1 && break; sleep 0.05; done
ip addr add 192.168.30.2/24 dev tap_lab; ip link set tap_lab up
"""


def build(params: Mapping[str, str], ours_net: str, peer_net: str) -> LabSpec:
    nodes = (
        NodeSpec("ours", routes=(Route("default", f"{ours_net}.1"),),
                 description="our L2TP/IPsec client (vpnlab connect)"),
        NodeSpec("isp", NodeKind.ROUTER, description="ISP core router (the Internet)"),
        NodeSpec("peer", routes=(Route("default", f"{peer_net}.1"),),
                 description="SoftEther VPN Server (vpnserver) in this namespace"),
    )
    links = (LinkSpec("ours", "isp", f"{ours_net}.2/24", f"{ours_net}.1/24"),
             LinkSpec("peer", "isp", f"{peer_net}.2/24", f"{peer_net}.1/24"))
    return LabSpec("interop", nodes, links, "interop: ours against SoftEther vpnserver")


def start_server(lab: Lab, psk: str, user: str, password: str) -> None:
    assert lab.run_dir is not None
    state = lab.run_dir / "softether"
    for sub in ("lib", "log"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    peer = lab.node("peer")
    # `vpnserver execsvc` forks a worker that outlives a signalled parent: both run in a
    # PID namespace of their own, which ends with unshare (the daemon's process)
    peer.start_daemon("vpnserver", ["unshare", "-m", "-p", "--fork", "--kill-child",
                                    "--propagation", "private", "sh", "-c", _START, "sh",
                                    str(state)], ready=r"starting", timeout=20)
    peer.run(["unshare", "-m", "--propagation", "private", "sh", "-c", _CONFIGURE, "sh", psk,
              user, password], timeout=60, check=True)


def sessions(lab: Lab) -> list[str]:
    """SoftEther's L2TP sessions on the hub (vpncmd SessionList, CSV)."""
    out = lab.node("peer").run(["unshare", "-m", "sh", "-c",
                                "mount -t tmpfs none /var/log; mkdir -p /var/log/softether; "
                                "exec vpncmd localhost:5555 /SERVER /HUB:DEFAULT /CSV "
                                "/CMD SessionList"], timeout=20)
    return [line.split(",")[0] for line in out.stdout.splitlines() if "L2TP" in line]


def disconnect(lab: Lab, session: str) -> bool:
    return lab.node("peer").run(["unshare", "-m", "sh", "-c",
                                 "mount -t tmpfs none /var/log; mkdir -p /var/log/softether; "
                                 "exec vpncmd localhost:5555 /SERVER /HUB:DEFAULT /CMD "
                                 f"SessionDisconnect {session}"], timeout=20).ok


def _wait(predicate, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    from topologies.interop import _wait  # interop imports this module first

    return _wait(predicate, timeout)


def start(lab: Lab, params: Mapping[str, str], start_ours, psk: str, user: str,  # type: ignore[no-untyped-def]
          password: str) -> None:
    t0 = time.monotonic()
    start_server(lab, psk, user, password)
    lab.figures = {"server_ready_s": round(time.monotonic() - t0, 2)}  # type: ignore[attr-defined]
    start_ours(lab, params)


def checks(lab: Lab, params: Mapping[str, str]) -> list[CheckResult]:
    from topologies import interop, interop_ipsec

    st = interop.status(lab)
    mine = st.get("local_address", "")
    out = [CheckResult("our side: tunnel up", st.get("state") == "up",
                       f"state {st.get('state')}: {st.get('reason') or mine}"),
           CheckResult("SoftEther: one L2TP session on hub DEFAULT",
                       _wait(lambda: len(sessions(lab)) == 1, 5), f"{sessions(lab)}")]
    if not all(r.passed for r in out):
        return out
    out.append(CheckResult("negotiated auth is mschapv2", st.get("auth") == params["auth"],
                           f"got {st.get('auth')}"))
    ipsec, ike = interop_ipsec.our_sa(st)
    cipher = interop_ipsec.CIPHERS[params["cipher"] or "aes"][2]
    out.append(CheckResult(f"our ESP SA: {cipher}, udp-transport (SoftEther always uses UDP "
                           "4500)", ipsec.get("cipher") == cipher and
                           ipsec.get("encapsulation") == "udp-transport",
                           f"IKE {ike.get('cipher')}/{ike.get('hash')} group {ike.get('group')}"
                           f"; ESP {ipsec.get('cipher')} {ipsec.get('encapsulation')}"))
    ping = lab.node("ours").run(["ping", "-c", "3", "-i", "0.2", "-W", "2", "-n", "-q",
                                 TAP_ADDRESS], timeout=15)
    back = lab.node("peer").run(["ping", "-c", "3", "-i", "0.2", "-W", "2", "-n", "-q", mine],
                                timeout=15)
    out += [CheckResult(f"ping through the tunnel: ours -> SoftEther's hub {TAP_ADDRESS}",
                        ping.ok, interop._last(ping)),
            CheckResult(f"ping through the tunnel: SoftEther's hub -> ours {mine}", back.ok,
                        interop._last(back)),
            interop.transfer(lab, mine, run=lab.node("peer").run)]
    out += interop_ipsec.wire(lab, params, TAP_ADDRESS)
    out += hang_ups(lab, params)
    # SoftEther's KE lacks its leading zero octets once in 256 keys (RFC 2409 §5 says pad);
    # ours accepts it (1 when the last dial met one, else 0)
    lab.figures["softether_ke_unpadded"] = sum(  # type: ignore[attr-defined]
        1 for e in interop._events(lab)
        if e["event"] == "ike-established" and e.get("peer_ke_unpadded"))
    out.append(CheckResult("figures", True, ", ".join(f"{k} {v}" for k, v in
                                                      lab.figures.items())))  # type: ignore[attr-defined]
    return out


def hang_ups(lab: Lab, params: Mapping[str, str]) -> list[CheckResult]:
    from topologies import interop

    ours = lab.node("ours")
    rc = ours.daemons["vpnclient"].stop()
    first = CheckResult("we hang up: SoftEther ends the L2TP session",
                        rc == 0 and _wait(lambda: not sessions(lab), 15),
                        f"our client exited {rc}; sessions {sessions(lab)}")
    interop.start_ours(lab, params)
    up = interop.status(lab).get("state") == "up" and _wait(lambda: bool(sessions(lab)), 10)
    listed = sessions(lab)
    disconnect(lab, listed[0]) if listed else None
    daemon = ours.daemons["vpnclient"]
    gone = _wait(lambda: not daemon.running(), 20)
    no_tun = not ours.run(["ip", "link", "show", "vpn0"]).ok
    events = interop._events(lab)
    reason = next((e.get("reason") for e in reversed(events) if e["event"] == "tunnel-down"),
                  None)
    # SoftEther follows its CDN with a StopCCN of its own: we re-ack it for --stop-linger
    lingered = [e["seconds"] for e in events if e["event"] == "stop-linger"]
    second = CheckResult("SoftEther disconnects the session: our client notices, exits, removes "
                         "vpn0", up and gone and no_tun,
                         f"re-dialled {up}, exited {daemon.returncode}, reason {reason!r}, "
                         f"lingered {lingered[0] if lingered else 0} s for SoftEther's StopCCN")
    return [first, second]
