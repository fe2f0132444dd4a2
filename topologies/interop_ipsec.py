"""The L2TP/IPsec cells of `interop` (topologies/interop.py): strongSwan + xl2tpd in UML.

    ours -- [nat --] isp -- peer     strongswan-lns: our client (`vpnlab connect --protocol
                                     l2tp-ipsec`) dials strongSwan + xl2tpd + pppd
    ours -- isp -- [nat --] peer     strongswan-lac: strongSwan + xl2tpd dial `vpnlab server`
                                     with protocols = ["l2tp-ipsec"]

IKEv1 Main Mode with a pre-shared key, Quick Mode for ESP in transport mode on UDP 1701, L2TP,
PPP with MS-CHAP v2 (no MPPE: IPsec encrypts). `cipher` picks the proposals of both ends
(strongSwan's strict `ike=`/`esp=`, our `--ipsec-cipher` / `ipsec_ciphers`); `nat=nat-t` puts
a MASQUERADE router in front of the initiator, so both ends switch to UDP 4500 (RFC 3947/3948).

The checks: the tunnel up at both ends (our status: the ESP cipher and encapsulation; the
peer: pppd's ip-up and strongSwan's CHILD_SA INSTALLED), ping both ways, the echoed transfer,
the responder's Internet-side capture (tshark: ISAKMP Main and Quick Mode and ESP with nothing
malformed, no UDP 1701 in clear, no plaintext; the ESP decrypted to L2TP with our key log),
then each side hangs up in turn and the other must clean up (PPP, L2TP and the SAs).
"""

from __future__ import annotations

import json
from collections import Counter
import time
from collections.abc import Mapping

from testbed import pcap
from testbed.errors import SpecError
from testbed.lab import Lab
from testbed.model import LabSpec, LinkSpec, NodeKind, NodeSpec, Route
from testbed.refpeer import PeerSpec
from testbed.scenario import CheckResult

IPSEC_PEERS = ("strongswan-lns", "strongswan-lac", "softether")
OUR_CLIENT = ("strongswan-lns", "softether")
PSK = "vpnlab-interop-psk"
# (strongSwan's ike=, esp= as the recipe proposes them; our ESP cipher; the IKE cipher we
# expect chosen): strongSwan takes them strictly (`!`)
CIPHERS = {
    "3des": ("3des-sha1-modp1024", "3des-sha1", "3des-cbc", "3des-cbc"),
    "aes": ("aes256-sha1-modp2048,aes256-sha1-modp1024", "aes256-sha1,aes128-sha1",
            "aes-cbc-256", "aes-cbc-256"),
}
NATS = ("none", "nat-t")
LAN = "192.168.1"
KEYLOG = "esp-keys.jsonl"  # conformance/ipsec_wire.keylog reads it from the run dir


def applies(params: Mapping[str, str]) -> bool:
    return params["peer"] in IPSEC_PEERS


def build(params: Mapping[str, str], ours_net: str, peer_net: str, users: tuple,
          tunnel_ips: tuple[str, str]) -> LabSpec:
    """ours -- isp -- peer; with nat=nat-t the initiator (ours for strongswan-lns, the peer
    for strongswan-lac) sits on a LAN behind a NAT router whose outside is its old address."""
    if params["encryption"] != "none":
        raise SpecError(f"interop: peer={params['peer']}: encryption={params['encryption']}: "
                        "IPsec encrypts, PPP inside runs without MPPE: expected encryption=none")
    if params["peer"] == "softether":
        from topologies import interop_softether

        return interop_softether.build(params, ours_net, peer_net)
    ike, esp, _, _ = CIPHERS[params["cipher"] or "aes"]
    client = "ours" if params["peer"] in OUR_CLIENT else "peer"
    behind = params["nat"] == "nat-t"
    server_addr = f"{ours_net}.2" if client == "peer" else f"{peer_net}.2"
    spec = PeerSpec(params["peer"], users=users, auth=params["auth"], mppe="none",
                    local_ip=tunnel_ips[0], remote_ips=tunnel_ips[1], psk=PSK, ike=ike, esp=esp,
                    server=server_addr if params["peer"] == "strongswan-lac" else None)
    gateway = {"ours": f"{ours_net}.1", "peer": f"{peer_net}.1"}
    if behind:
        gateway[client] = f"{LAN}.1"
    nodes = [
        NodeSpec("ours", routes=(Route("default", gateway["ours"]),),
                 description="our L2TP/IPsec " + ("client (vpnlab connect)" if client == "ours"
                                                  else "server (vpnlab server)")),
        NodeSpec("isp", NodeKind.ROUTER, description="ISP core router (the Internet)"),
        NodeSpec("peer", NodeKind.REFPEER, routes=(Route("default", gateway["peer"]),),
                 peer=spec, description=f"reference peer: {params['peer']} in user-mode Linux"),
    ]
    nets = {"ours": ours_net, "peer": peer_net}
    links = [LinkSpec(n, "isp", f"{nets[n]}.2/24", f"{nets[n]}.1/24")
             for n in ("ours", "peer") if not (behind and n == client)]
    if behind:
        nodes.append(NodeSpec("nat", NodeKind.NAT_ROUTER, nat_outside="isp",
                              routes=(Route("default", f"{nets[client]}.1"),),
                              description="NAT router (MASQUERADE) in front of the initiator"))
        links += [LinkSpec(client, "nat", f"{LAN}.10/24", f"{LAN}.1/24"),
                  LinkSpec("nat", "isp", f"{nets[client]}.2/24", f"{nets[client]}.1/24")]
    return LabSpec("interop", tuple(nodes), tuple(links),
                   f"interop: ours against {params['peer']} (L2TP/IPsec, {params['cipher']}, "
                   f"nat {params['nat']})")


def client_args(params: Mapping[str, str], lab: Lab) -> list[str]:
    """`vpnlab connect` options of our L2TP/IPsec client."""
    assert lab.run_dir is not None
    return ["--protocol", "l2tp-ipsec", "--psk", PSK, "--ipsec-cipher",
            CIPHERS[params["cipher"] or "aes"][2], "--keylog", str(lab.run_dir / KEYLOG)]


def server_lines(params: Mapping[str, str], lab: Lab) -> list[str]:
    """The [server] fields of our L2TP/IPsec server (tunnels/config/server.py)."""
    assert lab.run_dir is not None
    return ['protocols = ["l2tp-ipsec"]', f'psk = "{PSK}"', "nat_t = true",
            f'ipsec_ciphers = ["{CIPHERS[params["cipher"] or "aes"][2]}"]',
            f'keylog = "{lab.run_dir / KEYLOG}"']


def responder(params: Mapping[str, str]) -> str:
    """The node whose Internet-side link carries everything unchanged by the NAT."""
    return "peer" if params["peer"] in OUR_CLIENT else "ours"


def _sa_installed(lab: Lab) -> bool:
    return "INSTALLED" in lab.node("peer").peer.run(["ipsec", "status", "vpnlab"]).stdout


def _wait(predicate, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    from topologies.interop import _wait  # interop imports this module first

    return _wait(predicate, timeout)


def ipsec_checks(lab: Lab, params: Mapping[str, str], st: Mapping) -> list[CheckResult]:
    """Our side's ESP SA (cipher, encapsulation as the path needs) and strongSwan's CHILD_SA."""
    cipher = CIPHERS[params["cipher"] or "aes"][2]
    encap = "udp-transport" if params["nat"] == "nat-t" else "transport"
    ipsec, ike = our_sa(st)
    peer = lab.node("peer").peer
    status = peer.run(["ipsec", "statusall", "vpnlab"]).stdout
    line = next((ln.strip() for ln in status.splitlines() if "INSTALLED" in ln), "")
    proposal = next((ln.strip() for ln in status.splitlines() if "IKE proposal" in ln), "")
    return [
        CheckResult(f"our ESP SA: {cipher}, {encap}, IKE by psk",
                    ipsec.get("cipher") == cipher and ipsec.get("encapsulation") == encap
                    and ike.get("auth") in ("psk", None),
                    f"IKE {ike.get('cipher')}/{ike.get('hash')} group {ike.get('group')}; ESP "
                    f"{ipsec.get('cipher')} {ipsec.get('integrity')} "
                    f"{ipsec.get('encapsulation')}"),
        CheckResult(f"{params['peer']}: CHILD_SA INSTALLED, TRANSPORT" +
                    (", ESP in UDP" if encap != "transport" else ""),
                    "TRANSPORT" in line and (("ESP in UDP" in line) == (encap != "transport")),
                    f"{line}; {proposal}"),
    ]


# the cells per peer: (cipher, nat)
CELLS = {"strongswan-lns": (("3des", "none"), ("aes", "none"), ("aes", "nat-t")),
         "strongswan-lac": (("3des", "none"), ("aes", "none"), ("aes", "nat-t")),
         "softether": (("3des", "none"), ("aes", "none"))}
NOT_APPLICABLE: dict[tuple[str, str, str], str] = {}


def our_sa(st: Mapping) -> tuple[dict, dict]:
    """(ESP SA, IKE SA) from our status: the client's last IPsecUp, or the first SA of the
    stack's block (which the periodic status rewrite puts under `ipsec`, and which is the
    server's `stacks.l2tp-ipsec.ipsec`)."""
    block = st.get("ipsec") or (((st.get("stacks") or {}).get("l2tp-ipsec") or {})
                                .get("ipsec") or {})
    if "sas" in block:
        block = (block["sas"] or [{}])[0]
    ike = st.get("ike") if isinstance(st.get("ike"), dict) else {}
    return block, ike if "cipher" in ike else {}


def _esp(path) -> list[tuple[int, object, bytes]]:  # type: ignore[no-untyped-def]
    """(frame, IP layer, ESP bytes from the SPI on) of every ESP packet: IP protocol 50, or
    UDP 4500 that is neither a keepalive (0xFF) nor IKE (the non-ESP marker; RFC 3948 §2)."""
    from scapy.layers.inet import IP, UDP

    out = []
    for i, p in enumerate(pcap.read(path), 1):
        if IP not in p:
            continue
        ip = p[IP]
        body = bytes(ip)[ip.ihl * 4:ip.len]
        if ip.proto == 50:
            out.append((i, ip, body))
        elif UDP in p and 4500 in (p[UDP].sport, p[UDP].dport) and len(body) > 12 \
                and body[8:12] != b"\0\0\0\0":
            out.append((i, ip, body[8:]))
    return out


def _keylog(lab: Lab) -> dict[int, dict]:
    assert lab.run_dir is not None
    try:
        lines = (lab.run_dir / KEYLOG).read_text().splitlines()
    except FileNotFoundError:
        return {}
    return {k["spi"]: k for k in map(json.loads, filter(None, lines))}


def _wait_esp(lab: Lab, path, count: int = 10) -> list:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 3
    while True:
        esp = _esp(path)
        if len(esp) >= count or time.monotonic() > deadline:
            return esp
        time.sleep(0.1)


def wire(lab: Lab, params: Mapping[str, str], theirs: str) -> list[CheckResult]:
    """The responder's Internet-side capture: tshark decodes IKEv1 Main and Quick Mode and
    ESP (raw, or in UDP 4500 through the NAT) with nothing malformed; no UDP 1701 in clear;
    no plaintext; scapy decrypts every ESP packet to L2TP on 1701 with our key log."""
    node = responder(params)
    lab.node("ours").python("testbed.probe", "udp", theirs, "9", "--count", "3")
    path = lab.capture_path(node, "isp")
    esp = _wait_esp(lab, path)
    rows = pcap.tshark_fields(path, ["isakmp.exchangetype"], "isakmp")
    exchanges = sorted({int(x) for r in rows for x in r[0].split(",") if x})
    udp = sum(1 for _, ip, raw in esp if ip.proto == 17)
    natt = params["nat"] == "nat-t" or params["peer"] == "softether"  # it always uses 4500
    out = [CheckResult("tshark: IKEv1 Main Mode (2) and Quick Mode (32)", {2, 32} <=
                       set(exchanges), f"exchange types {exchanges}"),
           CheckResult("ESP carries the tunnel " + ("in UDP 4500 (NAT-T)" if natt else
                                                    "as IP protocol 50"),
                       len(esp) >= 3 and udp == (len(esp) if natt else 0),
                       f"{len(esp)} ESP packets, {udp} in UDP")]
    # a sequence number may be skipped (RFC 4303 §3.4.3: loss; the receiver's window takes
    # it): a burst overflows a sender's queue (UML's NIC, our veth) after ESP numbered it, and
    # every capture point misses the same packets. Anything else tshark flags fails.
    skips = 'esp.sequence-analysis.wrong-sequence-number && _ws.expert.message contains "missing"'
    bad = pcap.tshark_fields(path, ["frame.number", "_ws.expert.message"],
                             f"(isakmp || esp) && (_ws.malformed || (_ws.expert.severity >= "
                             f"warning && !({skips})))")
    gaps = pcap.tshark_fields(path, ["ip.src"], skips)
    out.append(CheckResult("tshark: no malformed ISAKMP or ESP frame, no ESP sequence going "
                           "back", not bad, f"{len(bad)} frames {bad[:2]}; sequence skips "
                           f"(loss before the capture) by sender: "
                           f"{dict(Counter(r[0] for r in gaps))}"))
    clear = pcap.tshark_fields(path, ["frame.number"], "udp.port == 1701")
    found = b"vpnlab-probe" in path.read_bytes()
    out.append(CheckResult("no L2TP (UDP 1701) in clear, no plaintext", not clear and not found,
                           f"{len(clear)} clear L2TP datagrams, probe payload "
                           f"{'FOUND' if found else 'absent'}"))
    out.append(_decrypts(lab, esp))
    return out


def _decrypts(lab: Lab, esp: list) -> CheckResult:
    """scapy, with our key log: every ESP packet authenticates and carries L2TP on 1701."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.ipsec import ESP, SecurityAssociation
    from scapy.layers.l2tp import L2TP

    keys = _keylog(lab)
    unknown, errors, l2tp, control = set(), [], 0, 0
    for frame, ip, raw in esp:
        spi = int.from_bytes(raw[:4], "big")
        key = keys.get(spi)
        if key is None:
            unknown.add(hex(spi))
            continue
        encap = UDP(sport=key["encap"][0], dport=key["encap"][1]) if key["encap"] else None
        sa = SecurityAssociation(ESP, spi=spi, crypt_algo=key["scapy_crypt_algo"],
                                 crypt_key=bytes.fromhex(key["enc_key"]),
                                 auth_algo=key["scapy_auth_algo"],
                                 auth_key=bytes.fromhex(key["auth_key"]), nat_t_header=encap)
        try:
            inner = sa.decrypt(IP(bytes(ip)))
        except Exception as exc:  # noqa: BLE001 - reported as the check's detail
            errors.append(f"frame {frame}: {exc}")
            continue
        if UDP in inner and (inner[UDP].sport, inner[UDP].dport) == (1701, 1701) \
                and L2TP in inner:
            l2tp += 1
            control += bool(bytes(inner[L2TP])[0] & 0x80)
    return CheckResult("scapy decrypts every ESP packet to L2TP (UDP 1701) with our key log",
                       bool(esp) and not unknown and not errors and l2tp == len(esp),
                       f"{l2tp}/{len(esp)} decrypted to L2TP ({control} control); unknown "
                       f"SPIs {sorted(unknown)}; {errors[:2]}")


def sas_gone(lab: Lab, params: Mapping[str, str]) -> CheckResult:
    """After the last hang-up our side is gone: its IKE Delete took strongSwan's SAs too."""
    gone = _wait(lambda: not _sa_installed(lab), 10)
    return CheckResult(f"{params['peer']}: no CHILD_SA left after our side ended (IKE Delete)",
                       gone, lab.node("peer").peer.run(["ipsec", "status"]).stdout.strip()[-300:])
