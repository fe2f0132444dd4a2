"""Helpers for the L2TP conformance cases: UDP 1701 read from a lab's pcap by scapy and tshark,
raw L2TP datagrams sent from inside a node, and an independent RFC 2661 §4.3 unhider.

Never our own codecs (design.md principle 4): headers come from scapy's L2TP layer and tshark's
l2tp fields; the AVP table below and the bytes of the raw messages are written out from RFC 2661
here, not imported from tunnels/.
"""

from __future__ import annotations

import hashlib
import json
import struct
import time
from dataclasses import dataclass, field

from scapy.layers.inet import UDP
from scapy.layers.l2tp import L2TP

from conformance.pptp_wire import events, wait_event
from testbed import pcap

__all__ = ["events", "wait_event"]  # the daemons' JSON traces, as for PPTP

PORT = 1701
# RFC 2661 §3.2 message types
SCCRQ, SCCRP, SCCCN, StopCCN, HELLO = 1, 2, 3, 4, 6
OCRQ, OCRP, OCCN, ICRQ, ICRP, ICCN, CDN, WEN, SLI = 7, 8, 9, 10, 11, 12, 14, 15, 16
NAMES = {SCCRQ: "SCCRQ", SCCRP: "SCCRP", SCCCN: "SCCCN", StopCCN: "StopCCN", HELLO: "HELLO",
         OCRQ: "OCRQ", OCRP: "OCRP", OCCN: "OCCN", ICRQ: "ICRQ", ICRP: "ICRP", ICCN: "ICCN",
         CDN: "CDN", WEN: "WEN", SLI: "SLI"}

# RFC 2661 §4.4 attribute types
(MESSAGE_TYPE, RESULT_CODE, PROTOCOL_VERSION, FRAMING_CAPABILITIES, BEARER_CAPABILITIES,
 TIE_BREAKER, FIRMWARE_REVISION, HOST_NAME, VENDOR_NAME, ASSIGNED_TUNNEL_ID,
 RECEIVE_WINDOW_SIZE, CHALLENGE, Q931_CAUSE, CHALLENGE_RESPONSE, ASSIGNED_SESSION_ID,
 CALL_SERIAL_NUMBER, MINIMUM_BPS, MAXIMUM_BPS, BEARER_TYPE, FRAMING_TYPE) = range(20)
CALLED_NUMBER, CALLING_NUMBER, SUB_ADDRESS, TX_CONNECT_SPEED = 21, 22, 23, 24
CALL_ERRORS, ACCM, RANDOM_VECTOR, RX_CONNECT_SPEED, SEQUENCING_REQUIRED = 34, 35, 36, 38, 39

# RFC 2661 §6.1-§6.14: the AVPs each message MUST carry.
REQUIRED = {
    SCCRQ: {MESSAGE_TYPE, PROTOCOL_VERSION, HOST_NAME, FRAMING_CAPABILITIES, ASSIGNED_TUNNEL_ID},
    SCCRP: {MESSAGE_TYPE, PROTOCOL_VERSION, FRAMING_CAPABILITIES, HOST_NAME, ASSIGNED_TUNNEL_ID},
    SCCCN: {MESSAGE_TYPE},
    StopCCN: {MESSAGE_TYPE, ASSIGNED_TUNNEL_ID, RESULT_CODE},
    HELLO: {MESSAGE_TYPE},
    ICRQ: {MESSAGE_TYPE, ASSIGNED_SESSION_ID, CALL_SERIAL_NUMBER},
    ICRP: {MESSAGE_TYPE, ASSIGNED_SESSION_ID},
    ICCN: {MESSAGE_TYPE, TX_CONNECT_SPEED, FRAMING_TYPE},
    OCRQ: {MESSAGE_TYPE, ASSIGNED_SESSION_ID, CALL_SERIAL_NUMBER, MINIMUM_BPS, MAXIMUM_BPS,
           BEARER_TYPE, FRAMING_TYPE, CALLED_NUMBER},
    OCRP: {MESSAGE_TYPE, ASSIGNED_SESSION_ID},
    OCCN: {MESSAGE_TYPE, TX_CONNECT_SPEED, FRAMING_TYPE},
    CDN: {MESSAGE_TYPE, RESULT_CODE, ASSIGNED_SESSION_ID},
    WEN: {MESSAGE_TYPE, CALL_ERRORS},
    SLI: {MESSAGE_TYPE, ACCM},
}
# §4.4: the M bit each IETF AVP "MUST" carry, and those that "MUST NOT be hidden"
MANDATORY_BIT = {MESSAGE_TYPE: True, RESULT_CODE: True, PROTOCOL_VERSION: True,
                 FRAMING_CAPABILITIES: True, BEARER_CAPABILITIES: True, TIE_BREAKER: False,
                 FIRMWARE_REVISION: False, HOST_NAME: True, VENDOR_NAME: False,
                 ASSIGNED_TUNNEL_ID: True, RECEIVE_WINDOW_SIZE: True, CHALLENGE: True,
                 Q931_CAUSE: True, CHALLENGE_RESPONSE: True, ASSIGNED_SESSION_ID: True,
                 CALL_SERIAL_NUMBER: True, MINIMUM_BPS: True, MAXIMUM_BPS: True,
                 BEARER_TYPE: True, FRAMING_TYPE: True, CALLED_NUMBER: True,
                 CALLING_NUMBER: True, SUB_ADDRESS: True, TX_CONNECT_SPEED: True,
                 25: False, 26: False, 27: False, 28: False, 29: False, 30: False, 31: False,
                 32: False, 33: False, CALL_ERRORS: True, ACCM: True, RANDOM_VECTOR: True,
                 37: False, RX_CONNECT_SPEED: False, SEQUENCING_REQUIRED: True}
NEVER_HIDDEN = {MESSAGE_TYPE, RANDOM_VECTOR, RESULT_CODE, PROTOCOL_VERSION, TIE_BREAKER,
                HOST_NAME, RECEIVE_WINDOW_SIZE, SEQUENCING_REQUIRED}

_FIELDS = ["frame.number", "frame.time_relative", "ip.src", "udp.srcport", "udp.dstport",
           "l2tp.version", "l2tp.length_bit", "l2tp.seq_bit", "l2tp.tunnel", "l2tp.session",
           "l2tp.Ns", "l2tp.Nr", "l2tp.avp.message_type", "l2tp.avp.type",
           "l2tp.avp.mandatory", "l2tp.avp.hidden", "l2tp.avp.length", "l2tp.result_code",
           "l2tp.avp.error_code"]


def _ints(text: str) -> list[int]:
    return [int(v, 0) for v in text.split(",") if v]


def _bools(text: str) -> list[bool]:
    return [v in ("1", "True") for v in text.split(",") if v]


@dataclass
class Msg:
    """One L2TP control packet (a message or a ZLB) as tshark dissects it, with the raw L2TP
    bytes from scapy for what tshark cannot show (hidden values, byte identity)."""

    frame: int
    time: float
    src: str
    sport: int
    dport: int
    version: int
    tunnel: int
    session: int
    ns: int
    nr: int
    type: int | None  # None: a ZLB (§5.8: a control header and no AVP)
    avps: list[tuple[int, bool, bool, int]]  # (attribute type, M, H, vendor) in wire order
    tshark_avps: tuple[list[int], list[bool], list[bool], list[int]]  # types, M, H, lengths
    result: int | None
    error: int | None
    length_bit: bool
    seq_bit: bool
    raw: bytes = field(repr=False, default=b"")

    @property
    def name(self) -> str:
        return "ZLB" if self.type is None else NAMES.get(self.type, str(self.type))

    @property
    def payload(self) -> bytes:
        """The AVPs (the bytes after the 12-octet control header)."""
        return self.raw[12:]


def l2tp_packets(lab, node: str = "vpnsrv", peer: str = "isp") -> list[tuple[int, L2TP]]:
    """(frame number, scapy L2TP layer) of every UDP datagram to or from port 1701."""
    out = []
    for i, p in enumerate(pcap.read(lab.capture_path(node, peer)), 1):
        if UDP in p and PORT in (p[UDP].sport, p[UDP].dport) and p[UDP].payload:
            out.append((i, L2TP(bytes(p[UDP].payload))))
    return out


def control(lab, node: str = "vpnsrv", peer: str = "isp") -> list[Msg]:
    """Every control packet (T=1) on the link, in capture order, decoded by tshark."""
    path = lab.capture_path(node, peer)
    raw = {n: bytes(pkt) for n, pkt in l2tp_packets(lab, node, peer)}
    out = []
    for r in pcap.tshark_fields(path, _FIELDS, "l2tp.type == 1"):
        r += [""] * (len(_FIELDS) - len(r))
        types = _ints(r[13])
        msg_types = _ints(r[12])
        out.append(Msg(
            frame=int(r[0]), time=float(r[1]), src=r[2].split(",")[0],
            sport=int(r[3].split(",")[0]), dport=int(r[4].split(",")[0]), version=int(r[5]),
            tunnel=int(r[8]), session=int(r[9]), ns=int(r[10]), nr=int(r[11]),
            type=msg_types[0] if msg_types else None,
            avps=[(a, mb, h, vendor) for vendor, a, mb, h, _ in avps_raw(raw.get(int(r[0]),
                                                                             b"")[12:])],
            tshark_avps=(types, _bools(r[14]), _bools(r[15]), _ints(r[16])),
            result=(_ints(r[17]) or [None])[0], error=(_ints(r[18]) or [None])[0],
            length_bit=r[6] in ("1", "True"), seq_bit=r[7] in ("1", "True"),
            raw=raw.get(int(r[0]), b"")))
    return out


def malformed_frames(lab, node: str = "vpnsrv", peer: str = "isp") -> list[list[str]]:
    """L2TP frames tshark calls malformed or flags with an expert warning or error (but for
    its Security group, 0x0a000000, which judges a method such as EAP-MD5, not the bytes)."""
    return pcap.tshark_fields(lab.capture_path(node, peer),
                              ["frame.number", "_ws.expert.message"],
                              "l2tp && (_ws.malformed || (_ws.expert.severity >= warning && "
                              "!(_ws.expert.group == 0x0a000000)))")


def rfc_problems(msgs: list[Msg], hidden_ok: bool = False) -> list[str]:
    """What in these control packets breaks RFC 2661: header bits (§3.1: T, L, S set, version
    2), required AVPs (§6), M bits (§4.4), Message Type first, hiding where forbidden."""
    out = []
    for m in msgs:
        where = f"frame {m.frame} {m.name}"
        if m.version != 2 or not (m.length_bit and m.seq_bit):
            out.append(f"{where}: header version {m.version} L={m.length_bit} S={m.seq_bit}")
        if m.type is None:
            continue
        types, mbits, hbits, lengths = m.tshark_avps
        walked = avps_raw(m.payload)
        if ([x[2] for x in walked], [x[3] for x in walked], [6 + len(x[4]) for x in walked]) != \
                (mbits, hbits, lengths) or [x[1] for x in walked if not x[3]] != types:
            out.append(f"{where}: tshark's AVPs {m.tshark_avps} differ from the §4.1 walk")
        ietf = [(t, mb, h) for t, mb, h, vendor in m.avps if not vendor]
        if not m.avps or m.avps[0][0] != MESSAGE_TYPE:
            out.append(f"{where}: Message Type is not the first AVP")
        missing = REQUIRED.get(m.type, set()) - {t for t, _, _ in ietf}
        if missing:
            out.append(f"{where}: missing required AVPs {sorted(missing)}")
        for t, mb, h in ietf:
            if t in MANDATORY_BIT and mb != MANDATORY_BIT[t]:
                out.append(f"{where}: AVP {t} has M={int(mb)}, §4.4 says {int(not mb)}")
            if h and (not hidden_ok or t in NEVER_HIDDEN):
                out.append(f"{where}: AVP {t} is hidden")
    return out


def wait_control(lab, predicate, timeout: float = 5.0, node: str = "vpnsrv",
                 peer: str = "isp") -> list[Msg]:
    """Poll the capture until `predicate(messages)` holds; the messages either way."""
    deadline = time.monotonic() + timeout
    while True:
        msgs = control(lab, node, peer)
        if predicate(msgs) or time.monotonic() > deadline:
            return msgs
        time.sleep(0.2)


# RFC 2661 §4.3 hidden AVPs, written out independently

def avps_raw(payload: bytes) -> list[tuple[int, int, bool, bool, bytes]]:
    """(vendor, attribute type, M, H, value as on the wire) for each AVP, by the §4.1 header
    (tshark shows no type for a hidden AVP, so the walk is ours; `rfc_problems` checks that it
    agrees with tshark on every AVP's M, H and length and on every plain AVP's type)."""
    out, pos = [], 0
    while pos + 6 <= len(payload):
        word, vendor, attr = struct.unpack_from("!HHH", payload, pos)
        length = word & 0x03FF
        if length < 6:
            break
        out.append((vendor, attr, bool(word & 0x8000), bool(word & 0x4000),
                    payload[pos + 6:pos + length]))
        pos += length
    return out


def unhide(attr: int, secret: bytes, vector: bytes, hidden: bytes) -> bytes:
    """§4.3: b(1) = MD5(Attribute Type + secret + RV), b(i) = MD5(secret + c(i-1)); the plain
    text is Original Length (2 octets), the value, padding."""
    plain, prev = b"", struct.pack("!H", attr) + secret + vector
    for i in range(0, len(hidden), 16):
        block = hidden[i:i + 16]
        key = hashlib.md5(prev).digest()
        plain += bytes(a ^ b for a, b in zip(block, key, strict=False))
        prev = secret + block
    length = struct.unpack("!H", plain[:2])[0]
    assert length <= len(plain) - 2, f"hidden AVP {attr}: original length {length} too long"
    return plain[2:2 + length]


def plain_avps(msg: Msg, secret: bytes) -> dict[int, bytes]:
    """The message's IETF AVP values, hidden ones decrypted with the Random Vector that came
    before them in the message (§4.3)."""
    out, vector = {}, None
    for vendor, attr, _, hidden, value in avps_raw(msg.payload):
        if vendor:
            continue
        if attr == RANDOM_VECTOR:
            vector = value
        if hidden:
            assert vector is not None, f"{msg.name}: hidden AVP {attr} before any Random Vector"
            value = unhide(attr, secret, vector, value)
        out[attr] = value
    return out


# Hand-built messages for negative cases (RFC 2661 §3.1 header, §4.1 AVPs)

def avp(attr: int, value: bytes, mandatory: bool = True, vendor: int = 0) -> bytes:
    return struct.pack("!HHH", (0x8000 if mandatory else 0) | (6 + len(value)), vendor,
                       attr) + value


def u16(v: int) -> bytes:
    return struct.pack("!H", v)


def u32(v: int) -> bytes:
    return struct.pack("!I", v)


def packet(tunnel: int, session: int, ns: int, nr: int, avps: bytes = b"",
           flags: int = 0xC802) -> bytes:
    """A control packet: T, L, S set, version 2 (0xC802) unless `flags` says otherwise."""
    return struct.pack("!HHHHHH", flags, 12 + len(avps), tunnel, session, ns, nr) + avps


def sccrq(tunnel_id: int, version: int = 0x0100, extra: bytes = b"") -> bytes:
    """An SCCRQ's AVPs (§6.1): Message Type, Protocol Version, Host Name, Framing Capabilities,
    Assigned Tunnel ID, Receive Window Size, then `extra`."""
    return (avp(MESSAGE_TYPE, u16(SCCRQ)) + avp(PROTOCOL_VERSION, u16(version)) +
            avp(HOST_NAME, b"probe") + avp(FRAMING_CAPABILITIES, u32(3)) +
            avp(ASSIGNED_TUNNEL_ID, u16(tunnel_id)) + avp(RECEIVE_WINDOW_SIZE, u16(4)) + extra)


def message(mtype: int, *avps: bytes) -> bytes:
    return avp(MESSAGE_TYPE, u16(mtype)) + b"".join(avps)


TID = "TTTT"  # in a step: replaced by the Assigned Tunnel ID of the first SCCRP received

# The receive loop both scripts below share (plain sockets and struct, nothing of ours):
# every datagram kept as (time, hex); `peer` the first source; `tid` the first Assigned Tunnel
# ID AVP in the clear (§4.4.3); `next_nr` one past the highest Ns of a control message.
_COLLECT = r"""
peer, tid, next_nr, got = None, None, 0, []

def collect(until):
    global peer, tid, next_nr
    while (left := until - time.monotonic()) > 0:
        s.settimeout(left)
        try:
            data, src = s.recvfrom(65535)
        except socket.timeout:
            return
        got.append((time.monotonic(), data.hex()))
        peer = peer or src
        if len(data) > 12 and data[0] & 0x80:
            next_nr = max(next_nr, (struct.unpack_from("!H", data, 8)[0] + 1) & 0xFFFF)
            pos = 12
            while tid is None and len(data) >= pos + 8:
                word, vendor, attr = struct.unpack_from("!HHH", data, pos)
                if (word & 0x3FF) < 6:
                    break
                if not vendor and attr == 9 and not word & 0x4000:
                    tid = "%04x" % struct.unpack_from("!H", data, pos + 6)[0]
                pos += word & 0x3FF
"""

_SCRIPT = r"""
import json, socket, struct, sys, time
server, steps, wait = sys.argv[1], json.loads(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("", 0))
""" + _COLLECT + r"""
for hexdata, pause in steps:
    if "TTTT" in hexdata and tid is None:
        collect(time.monotonic() + 2.0)
    s.sendto(bytes.fromhex(hexdata.replace("TTTT", tid or "0000")), (server, 1701))
    collect(time.monotonic() + pause)
collect(time.monotonic() + wait)
print(json.dumps({"port": s.getsockname()[1], "replies": [h for _, h in got]}))
"""


@dataclass
class Exchange:
    port: int  # our source port
    replies: list[bytes]

    def messages(self) -> list[tuple[int, int, int, int, dict[int, bytes]]]:
        """(Ns, Nr, tunnel, message type or -1 for a ZLB, AVPs) of each reply, the header by
        scapy, the AVPs by the §4.1 layout (nothing hidden: no secret in these cases)."""
        out = []
        for data in self.replies:
            head = L2TP(data)
            avps = {a: v for vendor, a, _, _, v in avps_raw(data[12:]) if not vendor}
            mtype = struct.unpack("!H", avps[MESSAGE_TYPE])[0] if MESSAGE_TYPE in avps else -1
            out.append((int(head.ns), int(head.nr), int(head.tunnel_id), mtype, avps))
        return out

    def of_type(self, mtype: int) -> list[dict[int, bytes]]:
        return [a for _, _, _, t, a in self.messages() if t == mtype]


def result_code(avps: dict[int, bytes]) -> tuple[int, int | None]:
    """§4.4.2 Result Code: (result, error or None)."""
    value = avps[RESULT_CODE]
    result = struct.unpack("!H", value[:2])[0]
    error = struct.unpack("!H", value[2:4])[0] if len(value) >= 4 else None
    return result, error


def raw_exchange(lab, steps: list[tuple[bytes | str, float]], node: str = "client",
                 wait: float = 1.0) -> Exchange:
    """Send each datagram (bytes, or hex with TID for the server's tunnel ID) from a fresh
    UDP port in `node` to the server's 1701, pausing after each; collect what comes back."""
    hexsteps = [(d.hex() if isinstance(d, bytes) else d, pause) for d, pause in steps]
    res = lab.node(node).run(["python3", "-c", _SCRIPT, lab.address("vpnsrv", "isp"),
                              json.dumps(hexsteps), str(wait)], timeout=30, check=True)
    out = json.loads(res.stdout.strip().splitlines()[-1])
    return Exchange(out["port"], [bytes.fromhex(h) for h in out["replies"]])



def with_tid(data: bytes) -> str:
    """`data` as a raw_exchange step whose Tunnel ID is the server's (learnt from its reply)."""
    return data[:4].hex() + TID + data[6:].hex()


def stop_ccn(our_tid: int, ns: int, nr: int, result: int = 1) -> str:
    """A StopCCN (§6.4) to the server's tunnel, as a raw_exchange step."""
    return with_tid(packet(0, 0, ns, nr, message(
        StopCCN, avp(ASSIGNED_TUNNEL_ID, u16(our_tid)), avp(RESULT_CODE, u16(result)))))


def zlb(ns: int, nr: int) -> str:
    """A ZLB acknowledgement (§5.8) to the server's tunnel, as a raw_exchange step."""
    return with_tid(packet(0, 0, ns, nr))


# A scripted LNS in a node (plain sockets and struct, nothing of ours): it answers the
# client's SCCRQ with `sccrp`, then sends `stop` twice a second apart (the client's ack of
# the first is dropped by the case), with TTTT replaced by the client's Assigned Tunnel ID
# and Nr set to what it has received; it prints what it sent and got, with times.
_LNS_SCRIPT = r"""
import json, socket, struct, sys, time
address, sccrp, stop = sys.argv[1], sys.argv[2], sys.argv[3]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((address, 1701))
sent = []
""" + _COLLECT + r"""
def send(hexdata):
    data = bytearray.fromhex(hexdata.replace("TTTT", tid))
    struct.pack_into("!H", data, 10, next_nr)
    s.sendto(bytes(data), peer)
    sent.append((time.monotonic(), bytes(data).hex()))

deadline = time.monotonic() + 30
while tid is None and time.monotonic() < deadline:
    collect(time.monotonic() + 0.2)
if tid is None:
    print(json.dumps({"error": "no SCCRQ within 30 s", "got": got}))
    sys.exit(0)
send(sccrp)
collect(time.monotonic() + 0.5)
send(stop)
collect(time.monotonic() + 1.0)
send(stop)
collect(time.monotonic() + 2.0)
print(json.dumps({"sent": sent, "got": got}))
"""

SCRIPTED_LNS_TID = 0x4C4E


def scripted_lns(lab, node: str = "vpnsrv", result: int = 1):  # type: ignore[no-untyped-def]
    """Start the scripted LNS on the node's Internet address (UDP 1701); returns the Popen
    (its last stdout line is the JSON report)."""
    import subprocess

    sccrp = packet(0, 0, 0, 0, message(
        SCCRP, avp(PROTOCOL_VERSION, b"\x01\x00"), avp(FRAMING_CAPABILITIES, u32(3)),
        avp(HOST_NAME, b"scripted-lns"), avp(ASSIGNED_TUNNEL_ID, u16(SCRIPTED_LNS_TID)),
        avp(RECEIVE_WINDOW_SIZE, u16(4))))
    stop = packet(0, 0, 1, 0, message(
        StopCCN, avp(ASSIGNED_TUNNEL_ID, u16(SCRIPTED_LNS_TID)), avp(RESULT_CODE, u16(result))))
    return lab.node(node).popen(
        ["python3", "-c", _LNS_SCRIPT, lab.address(node, "isp"), with_tid(sccrp),
         with_tid(stop)], stdout=subprocess.PIPE, text=True)
