"""`vpnlab doctor`: what this machine can do, each answer with a one-line reason."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from testbed import shaping


def _try(argv: list[str]) -> tuple[bool, str]:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, str(exc)
    return done.returncode == 0, (done.stderr or done.stdout).strip().splitlines()[-1:] and \
        (done.stderr or done.stdout).strip().splitlines()[-1] or ""


def _tool(name: str, package: str) -> tuple[str, bool, str]:
    path = shutil.which(name)
    return (name, path is not None, path or f"not found: apt-get install {package}")


def report() -> list[tuple[str, bool, str]]:
    rows = [("root", os.geteuid() == 0, "needed for namespaces" if os.geteuid() else "yes")]
    for name, package in (("unshare", "util-linux"), ("mnexec", "mininet"), ("ip", "iproute2"),
                          ("iptables", "iptables"), ("tcpdump", "tcpdump"),
                          ("tshark", "tshark"), ("ethtool", "ethtool"), ("iperf3", "iperf3")):
        rows.append(_tool(name, package))
    try:
        import mininet.net  # noqa: F401

        rows.append(("mininet (python)", True, "importable"))
    except ImportError:
        rows.append(("mininet (python)", False, "apt-get install mininet (python3 module)"))
    netem = shaping.probe_netem()
    rows.append(("link shaping", True, shaping.shaping_method()))
    rows.append(("netem", netem, "available" if netem else "kernel has no sch_netem: delay, "
                 "jitter and loss come from the userspace wire"))
    ok, why = _try(["unshare", "-n", "sh", "-c",
                    "iptables -t raw -A PREROUTING -p tcp --dport 1723 -j CT --helper pptp"])
    rows.append(("PPTP conntrack helper", ok, "CT --helper pptp accepted" if ok else why))
    ok, why = _try(["unshare", "-n", "sh", "-c", "ip tuntap add dev t0 mode tun"])
    rows.append(("TUN devices", ok and Path("/dev/net/tun").exists(),
                 "/dev/net/tun usable" if ok else why))
    for feature, argv in (("kernel PPP", ["test", "-e", "/dev/ppp"]),
                          ("kernel L2TP", ["unshare", "-n", "ip", "l2tp", "show", "tunnel"]),
                          ("kernel ESP (xfrm)", ["unshare", "-n", "ip", "xfrm", "state",
                                                 "add", "src", "1.1.1.1", "dst", "1.1.1.2",
                                                 "proto", "esp", "spi", "1", "enc", "cbc(aes)",
                                                 "0x" + "00" * 16])):
        ok, why = _try(argv)
        rows.append((feature, ok, "present" if ok else "missing: our userspace endpoints are used"))
    uml = shutil.which("linux.uml")
    rows.append(("user-mode Linux (reference peers)", uml is not None,
                 uml or "not installed: apt-get install user-mode-linux (issue: real peers)"))
    return rows
