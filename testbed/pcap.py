"""Reading captures with the independent decoders: scapy and tshark.

Captures are written packet by packet (`tcpdump -U`), so a check can read one while the lab
runs; `wait_for` polls until a predicate holds on the decoded packets, or a deadline passes.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from testbed.errors import MissingTool


def read(path: Path) -> list[Any]:
    """All packets of a pcap as scapy packets (empty if nothing was written yet)."""
    from scapy.error import Scapy_Exception
    from scapy.utils import rdpcap

    try:
        return list(rdpcap(str(path)))
    except (Scapy_Exception, EOFError, FileNotFoundError):
        return []


def wait_for(path: Path, predicate: Callable[[list[Any]], bool], timeout: float = 2.0) -> list[Any]:
    """Poll the capture until `predicate(packets)` holds; return the packets either way."""
    deadline = time.monotonic() + timeout
    while True:
        packets = read(path)
        if predicate(packets) or time.monotonic() > deadline:
            return packets
        time.sleep(0.05)


def tshark_json(path: Path, display_filter: str = "", options: tuple[str, ...] = ()) -> list[dict]:
    """tshark's JSON dissection (`-T json`) of the capture, filtered."""
    argv = ["tshark", "-r", str(path), "-T", "json", *options]
    if display_filter:
        argv += ["-Y", display_filter]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise MissingTool("tshark", "apt-get install tshark") from None
    if done.returncode != 0:
        raise RuntimeError(f"tshark failed on {path}: {done.stderr.strip()}")
    return json.loads(done.stdout or "[]")


# For checks of the tunnel's own framing (PPP in GRE): the tunnelled datagrams' UDP and TCP are
# left undissected, or a probe whose random source port some dissector claims (54328 is
# Elasticsearch's) is "malformed" in a capture whose every tunnel frame is right
TUNNEL_FRAMING_ONLY = ("--disable-protocol", "udp", "--disable-protocol", "tcp")


def tshark_fields(path: Path, fields: list[str], display_filter: str = "",
                  options: list[str] | tuple[str, ...] = ()) -> list[list[str]]:
    """One row per packet, `fields` tab-separated; `options`: e.g. `-o l2tp.shared_secret:S`."""
    argv = ["tshark", "-r", str(path), *options, "-T", "fields", "-E", "separator=\t"]
    for f in fields:
        argv += ["-e", f]
    if display_filter:
        argv += ["-Y", display_filter]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"tshark failed on {path}: {done.stderr.strip()}")
    return [line.split("\t") for line in done.stdout.splitlines()]
