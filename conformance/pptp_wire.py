"""Helpers for the PPTP conformance cases: what went over the wire, decoded by scapy.

Never our own codecs (design.md principle 4): control messages through scapy's PPTP layer, GRE
headers by the RFC 2637 §4.1 layout written out here, PPP through tshark.
"""

from __future__ import annotations

import json
import struct
import time

from scapy.layers.inet import IP, TCP
from scapy.layers.pptp import PPTP

from testbed import pcap

MAGIC_COOKIE = 0x1A2B3C4D
# scapy's ctrl_msg_type numbers (RFC 2637 §2.1 order)
SCCRQ, SCCRP, STOPCCRQ, STOPCCRP, ECHORQ, ECHORP, OCRQ, OCRP = range(1, 9)
CCRQ, CDN, SLI = 12, 13, 15

# A well-formed Start-Control-Connection-Request, for hand-made negative cases
SCCRQ_HEX = ("009c00011a2b3c4d00010000" + "0100" + "0000" + "00000003" + "00000003" + "0000" +
             "0001" + "00" * 128)


def control(lab, node: str = "vpnsrv", peer: str = "isp") -> list[tuple[str, PPTP]]:
    """(source address, scapy PPTP message) for each message sent on TCP 1723, once: a
    kernel retransmission of a segment (seen on loaded machines) is not a second message."""
    out = []
    sent: dict[tuple, int] = {}  # per direction of a connection: where its data ends so far
    for p in pcap.read(lab.capture_path(node, peer)):
        if TCP in p and 1723 in (p[TCP].sport, p[TCP].dport):
            start = p[IP].ihl * 4 + p[TCP].dataofs * 4
            body = bytes(p[IP])[start:p[IP].len]
            flow = (p[IP].src, p[TCP].sport, p[IP].dst, p[TCP].dport)
            if p[TCP].flags & 0x02:  # SYN: a new connection, perhaps from the same port
                sent.pop(flow, None)
            seq, end = int(p[TCP].seq), sent.get(flow)
            if body:
                sent[flow] = max(end or 0, seq + len(body))
                if end is not None and seq < end:
                    body = body[end - seq:]  # already on the wire: only what is new counts
            while len(body) >= 12:  # a segment may carry several messages
                length = struct.unpack("!H", body[:2])[0]
                out.append((p[IP].src, PPTP(body[:max(length, 12)])))
                if length < 12:
                    break
                body = body[length:]
    return out


def gre(lab, node: str = "vpnsrv", peer: str = "isp") -> list[tuple[str, bytes]]:
    """(source address, GRE packet) for each IP protocol 47 packet."""
    return [(p[IP].src, bytes(p[IP])[p[IP].ihl * 4:p[IP].len])
            for p in pcap.read(lab.capture_path(node, peer)) if IP in p and p[IP].proto == 47]


def gre_fields(raw: bytes) -> dict:
    """RFC 2637 §4.1 enhanced GRE header, field by field."""
    flags1, flags2, proto, length, call_id = struct.unpack("!BBHHH", raw[:8])
    pos, seq, ack = 8, None, None
    if flags1 & 0x10:
        seq = struct.unpack("!I", raw[pos:pos + 4])[0]
        pos += 4
    if flags2 & 0x80:
        ack = struct.unpack("!I", raw[pos:pos + 4])[0]
        pos += 4
    return {"version": flags2 & 7, "proto": proto, "length": length, "call_id": call_id,
            "seq": seq, "ack": ack, "payload": raw[pos:], "key": bool(flags1 & 0x20),
            "C": bool(flags1 & 0x80), "R": bool(flags1 & 0x40), "s": bool(flags1 & 0x08),
            "recur": flags1 & 0x07, "flags": flags2 & 0x78}


def events(lab, node: str) -> list[dict]:
    """The daemon's JSON lines (its structured trace), never free-text logs."""
    daemon = lab.node(node).daemons["vpnserver" if node == "vpnsrv" else "vpnclient"]
    return [json.loads(line) for line in daemon.output().splitlines() if line.startswith("{")]


def wait_event(lab, node: str, name: str, timeout: float = 10.0, after: int = 0) -> dict:
    """The first event `name` among the node's events from index `after` on (a readiness
    wait on the daemon's own trace, not a sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [e for e in events(lab, node)[after:] if e["event"] == name]
        if found:
            return found[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"{node}: no {name} event within {timeout}s: "
                                 f"{[e['event'] for e in events(lab, node)]}")
        time.sleep(0.1)


def raw_control(lab, payloads: list[str], node: str = "client") -> tuple[bytes, bool]:
    """Send raw bytes to the server's TCP 1723 from `node`: (all that came back, whether the
    server closed the connection within a second after the last payload)."""
    script = (
        "import socket,sys,time\n"
        f"s=socket.create_connection(('{lab.address('vpnsrv', 'isp')}',1723),timeout=3)\n"
        f"for p in {payloads!r}: s.sendall(bytes.fromhex(p)); time.sleep(0.2)\n"
        "s.settimeout(1)\nout=b''\nclosed=False\n"
        "try:\n  while True:\n    d=s.recv(4096)\n    if not d: closed=True; break\n"
        "    out+=d\n"
        "except ConnectionResetError: closed=True\n"
        "except OSError: pass\nprint(out.hex() or '-', closed)\n")
    res = lab.node(node).run(["python3", "-c", script], timeout=20, check=True)
    data, closed = res.stdout.split()
    return bytes.fromhex(data.strip("-")), closed == "True"


def messages(blob: bytes) -> list[PPTP]:
    out = []
    while len(blob) >= 12:
        length = struct.unpack("!H", blob[:2])[0]
        out.append(PPTP(blob[:length]))
        blob = blob[length:]
    return out
