"""Helpers for the L2TP/IPsec conformance cases: IKE, ESP and NAT-T read from a lab's pcap by
scapy and tshark, ESP decrypted with the server's key log, ESP re-sent from inside a node.

Never our own codecs (design.md principle 4): ESP is decrypted by
`scapy.layers.ipsec.SecurityAssociation` and by tshark's ESP dissector (its `esp_sa` table),
L2TP headers come from scapy's L2TP layer, ISAKMP from tshark; the RFC 3948 demultiplexing
of UDP 4500 (non-ESP marker, keepalive) is written out from the RFC here.
"""

from __future__ import annotations

import json
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scapy.layers.inet import IP, UDP
from scapy.layers.ipsec import ESP, SecurityAssociation
from scapy.layers.l2tp import L2TP

from conformance.l2tp_wire import MESSAGE_TYPE, NAMES, avps_raw
from conformance.pptp_wire import events, wait_event
from testbed import pcap

__all__ = ["events", "wait_event"]  # the daemons' JSON traces, as for PPTP and L2TP

IKE_PORT, NAT_T_PORT, L2TP_PORT = 500, 4500, 1701
MAIN_MODE, QUICK_MODE, INFORMATIONAL = 2, 32, 5  # RFC 2408 §3.1 exchange types
NAT_D = 20  # RFC 3947 §3.2 payload type
NON_ESP_MARKER = b"\0\0\0\0"  # RFC 3948 §2.2
KEEPALIVE = b"\xff"  # RFC 3948 §2.3
ESP_OPTIONS = ("-o", "esp.enable_encryption_decode:TRUE",
               "-o", "esp.enable_authentication_check:TRUE",
               "-o", "esp.do_esp_sequence_analysis:TRUE")


@dataclass
class Datagram:
    """One IPv4 packet of the capture, classified by RFC 3948 §2 (what UDP 4500 carries)."""

    frame: int  # 1-based, as tshark numbers frames
    kind: str  # ike | ike-natt | esp | esp-udp | keepalive | l2tp-clear | other
    src: str
    dst: str
    sport: int  # 0 for raw ESP
    dport: int
    payload: bytes  # ISAKMP without the marker, or the ESP packet (SPI onwards)
    ip: Any = field(repr=False, default=None)

    @property
    def spi(self) -> int:
        return struct.unpack("!I", self.payload[:4])[0]

    @property
    def seq(self) -> int:
        return struct.unpack("!I", self.payload[4:8])[0]


def _classify(frame: int, ip: Any) -> Datagram:
    body = bytes(ip)[ip.ihl * 4:ip.len]
    if ip.proto == 50:
        return Datagram(frame, "esp", ip.src, ip.dst, 0, 0, body, ip)
    if ip.proto != 17 or len(body) < 8:
        return Datagram(frame, "other", ip.src, ip.dst, 0, 0, body, ip)
    sport, dport = struct.unpack("!HH", body[:4])
    data, ports = body[8:], (sport, dport)
    if L2TP_PORT in ports:
        kind = "l2tp-clear"
    elif NAT_T_PORT in ports and data == KEEPALIVE:
        kind = "keepalive"
    elif NAT_T_PORT in ports and data[:4] == NON_ESP_MARKER:
        kind, data = "ike-natt", data[4:]
    elif NAT_T_PORT in ports:
        kind = "esp-udp"
    elif IKE_PORT in ports:
        kind = "ike"
    else:
        kind = "other"
    return Datagram(frame, kind, ip.src, ip.dst, sport, dport, data, ip)


def snapshot(lab, node: str = "vpnsrv", peer: str = "isp") -> Path:
    """A copy of the link's live capture cut after its last whole record, so that scapy and
    tshark read the same frames (tcpdump goes on writing while a case reads)."""
    src = lab.capture_path(node, peer)
    data = src.read_bytes()
    pos, little = 24, data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1")
    while pos + 16 <= len(data):
        length = struct.unpack("<I" if little else ">I", data[pos + 8:pos + 12])[0]
        if pos + 16 + length > len(data):
            break
        pos += 16 + length
    dst = src.with_name(f"{src.stem}.snapshot.pcap")
    dst.write_bytes(data[:pos])
    return dst


def wire(path: Path) -> list[Datagram]:
    """Every IPv4 packet of a capture, classified."""
    return [_classify(i, p[IP]) for i, p in enumerate(pcap.read(path), 1) if IP in p]


def of_kind(datagrams: list[Datagram], *kinds: str) -> list[Datagram]:
    return [d for d in datagrams if d.kind in kinds]


def keylog(lab) -> list[dict]:
    """The server's ESP key log (tunnels/runtime/keylog.py's JSON lines), one per SA."""
    path = Path(lab.run_dir) / "esp-keys.jsonl"
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line]
    except FileNotFoundError:
        return []


def scapy_sa(key: dict) -> SecurityAssociation:
    """scapy's SA for one key-log line, with the UDP header of RFC 3948 when encapsulated."""
    nat_t = UDP(sport=key["encap"][0], dport=key["encap"][1]) if key["encap"] else None
    return SecurityAssociation(ESP, spi=key["spi"], crypt_algo=key["scapy_crypt_algo"],
                               crypt_key=bytes.fromhex(key["enc_key"]),
                               auth_algo=key["scapy_auth_algo"],
                               auth_key=bytes.fromhex(key["auth_key"]), nat_t_header=nat_t)


def decrypt(datagram: Datagram, key: dict) -> Any:
    """The packet inside (authenticated first: scapy raises IPSecIntegrityError otherwise)."""
    return scapy_sa(key).decrypt(IP(bytes(datagram.ip)))


@dataclass(frozen=True)
class Inner:
    """What a decrypted ESP packet carried, by scapy's UDP and L2TP layers."""

    sport: int
    dport: int
    control: bool  # L2TP T bit
    message: str | None  # "SCCRQ", ... or "ZLB" for a control packet; None for data
    tunnel: int
    session: int
    src: str = ""
    ns: int | None = None  # control packets: their Ns (a retransmission repeats it, §5.8)
    ppp: tuple[int, bytes] | None = None  # data packets: (PPP protocol, the PPP payload)


def inner_l2tp(packet: Any) -> Inner | None:
    """The L2TP packet of a decrypted ESP packet, or None if it is not UDP 1701 L2TP."""
    if UDP not in packet or L2TP not in packet:
        return None
    head = packet[L2TP]
    raw = bytes(head)
    control = bool(raw[0] & 0x80)
    message = None
    if control:
        avps = {a: v for vendor, a, _, _, v in avps_raw(raw[12:]) if not vendor}
        mtype = struct.unpack("!H", avps[MESSAGE_TYPE])[0] if MESSAGE_TYPE in avps else None
        message = "ZLB" if mtype is None else NAMES.get(mtype, str(mtype))
    return Inner(packet[UDP].sport, packet[UDP].dport, control, message,
                 int(head.tunnel_id), int(head.session_id), packet[IP].src,
                 struct.unpack("!H", raw[8:10])[0] if control else None,
                 None if control else ppp_frame(raw))


def ppp_frame(l2tp: bytes) -> tuple[int, bytes]:
    """(protocol, payload) of the PPP frame in an L2TP data message: the RFC 2661 §3.1 header
    (L, S and O bits), then RFC 1662's optional FF 03 and RFC 1661's (compressible) protocol."""
    flags, pos = struct.unpack("!H", l2tp[:2])[0], 2
    pos += 2 if flags & 0x4000 else 0  # Length
    pos += 4  # Tunnel ID, Session ID
    pos += 4 if flags & 0x0800 else 0  # Ns, Nr
    if flags & 0x0200:  # Offset Size, then that many octets
        pos += 2 + struct.unpack("!H", l2tp[pos:pos + 2])[0]
    frame = l2tp[pos:]
    frame = frame[2:] if frame[:2] == b"\xff\x03" else frame
    if frame[:1] and frame[0] & 1:  # protocol field compressed to one octet
        return frame[0], frame[1:]
    return struct.unpack("!H", frame[:2])[0], frame[2:]


def tshark_esp(path: Path, keys: list[dict], fields: list[str]) -> list[list[str]]:
    """tshark's decode of the capture's ESP, each SA decrypted with its key log line's
    `tshark_uat` (one esp_sa record per SA)."""
    table = [arg for key in keys for arg in ("-o", f"uat:esp_sa:{key['tshark_uat']}")]
    rows = pcap.tshark_fields(path, fields, "esp",
                              options=(*ESP_OPTIONS, *table, *decode_as(path)))
    return [r + [""] * (len(fields) - len(r)) for r in rows]


ISAKMP_FIELDS = ["frame.number", "udp.srcport", "udp.dstport", "isakmp.ispi",
                 "isakmp.exchangetype", "isakmp.nextpayload", "isakmp.typepayload"]


@dataclass(frozen=True)
class IsakmpMessage:
    frame: int
    sport: int
    dport: int
    icookie: str
    exchange: int
    payloads: tuple[int, ...]  # payload types tshark dissected in clear


def decode_as(path: Path) -> tuple[str, ...]:
    """tshark options to read IKE and UDP-encapsulated ESP from a NAT's ports: tshark picks
    the dissector of the lower port first, and Linux MASQUERADE maps a source port that
    another client holds to a random one (into 1-511 for 500: NTP's 123, say)."""
    out: list[str] = []
    for kinds, port, dissector in ((("ike",), IKE_PORT, "isakmp"),
                                   (("ike-natt", "esp-udp"), NAT_T_PORT, "udpencap")):
        ports = {p for d in of_kind(wire(path), *kinds) for p in (d.sport, d.dport)} - {port}
        out += [arg for p in sorted(ports) for arg in ("-d", f"udp.port=={p},{dissector}")]
    return tuple(out)


def isakmp(path: Path) -> list[IsakmpMessage]:
    """Every ISAKMP message of the link, as tshark dissects it (on 500 and, after the
    marker, on 4500)."""
    out = []
    for r in pcap.tshark_fields(path, ISAKMP_FIELDS, "isakmp", options=decode_as(path)):
        r += [""] * (len(ISAKMP_FIELDS) - len(r))
        out.append(IsakmpMessage(int(r[0]), int(r[1].split(",")[-1]), int(r[2].split(",")[-1]),
                                 r[3], int(r[4]), tuple(int(t) for t in r[6].split(",") if t)))
    return out


def isakmp_problems(path: Path) -> list[list[str]]:
    """ISAKMP frames tshark calls malformed or flags at warning or above."""
    return pcap.tshark_fields(path, ["frame.number", "_ws.expert.message"],
                              "isakmp && (_ws.malformed || _ws.expert.severity >= warning)",
                              options=decode_as(path))


def wait_esp(lab, count: int, timeout: float = 3.0) -> list[Datagram]:
    """Poll the server's capture until `count` ESP packets (raw or in UDP) are in it."""
    deadline = time.monotonic() + timeout
    while True:
        esp = of_kind(wire(snapshot(lab)), "esp", "esp-udp")
        if len(esp) >= count or time.monotonic() > deadline:
            return esp
        time.sleep(0.1)


_SEND = r"""
import socket, struct, sys
dst, proto, sport, dport, hexdata, copies = sys.argv[1:7]
data = bytes.fromhex(hexdata)
if proto == "esp":
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 50)
    for _ in range(int(copies)):
        s.sendto(data, (dst, 0))
else:  # UDP from a fixed source port another socket holds: a raw UDP header, checksum 0
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
    head = struct.pack("!HHHH", int(sport), int(dport), 8 + len(data), 0)
    for _ in range(int(copies)):
        s.sendto(head + data, (dst, 0))
"""


def resend(lab, node: str, datagram: Datagram, payload: bytes | None = None,
           copies: int = 1) -> None:
    """Send `payload` (default: the datagram's own ESP bytes) again from inside `node`, as
    raw ESP or in UDP from the datagram's ports (RFC 3948 §2.1: UDP checksum 0)."""
    data = datagram.payload if payload is None else payload
    proto = "esp" if datagram.kind == "esp" else "udp"
    lab.node(node).run(["python3", "-c", _SEND, datagram.dst, proto, str(datagram.sport),
                        str(datagram.dport), data.hex(), str(copies)], timeout=10, check=True)


def ipsec_status(lab) -> dict:
    """The server's `stacks.l2tp-ipsec.ipsec` status block (counters included)."""
    from topologies import remote_access as ra

    return (ra.status(lab, "vpnsrv").get("stacks", {}).get("l2tp-ipsec", {})
            .get("ipsec", {}))


def wait_counter(lab, name: str, at_least: int, timeout: float = 4.0) -> int:
    """Poll the server's status file (rewritten on events and every second) for a counter."""
    deadline = time.monotonic() + timeout
    while True:
        value = int(ipsec_status(lab).get(name, 0))
        if value >= at_least or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def isakmp_payloads(message: bytes) -> list[tuple[int, bytes]]:
    """(payload type, body) of an unencrypted ISAKMP message, by RFC 2408 §3.1's 28-octet
    header and §3.2's generic payload header (next payload, reserved, length)."""
    out, kind, pos = [], message[16], 28
    while kind and pos + 4 <= len(message):
        following, length = message[pos], struct.unpack("!H", message[pos + 2:pos + 4])[0]
        if length < 4:
            break
        out.append((kind, message[pos + 4:pos + length]))
        kind, pos = following, pos + length
    return out


def nat_d(message: bytes, address: str, port: int, hash_name: str) -> bytes:
    """RFC 3947 §3.2: HASH(CKY-I | CKY-R | IP | Port) with the phase 1 hash."""
    import hashlib
    import ipaddress

    data = message[:16] + ipaddress.IPv4Address(address).packed + struct.pack("!H", port)
    return hashlib.new(hash_name, data).digest()
