"""`interop`: our endpoint against a real third-party peer in user-mode Linux, over the Internet.

    ours (our client or server) -- isp (router) -- peer (reference peer: pptpd or pptp-linux)

peer=pptpd: `vpnlab connect` dials pptpd + pppd. peer=pptp-linux: pptp-linux + pppd dial
`vpnlab server`. The checks, in order: the tunnel comes up with the negotiated auth and MPPE at
both ends; ping both ways through it; a TCP transfer echoed back with SHA-256 of both
directions; the Internet-side capture (scapy: PPTP control, enhanced GRE; tshark: PPP inside
GRE, nothing malformed, no plaintext when encrypted); then each side hangs up in turn and the
other must notice and clean up. `MATRIX` lists every cell, with the reason when a cell does
not apply; `vpnlab interop` and conformance/test_interop_pptp.py run it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass

from testbed import pcap
from testbed.errors import SpecError
from testbed.lab import Lab
from testbed.model import LabSpec, LinkSpec, NodeKind, NodeSpec, Route
from testbed.process import Result
from testbed.refpeer import PeerSpec
from testbed.scenario import CheckResult, Param, Scenario
from topologies import interop_ipsec as ipsec
from topologies import interop_l2tp as l2tp
from topologies import interop_softether as softether

USER, PASSWORD = "alice", "Pa55w0rd!"
OURS_NET, PEER_NET = "198.51.100", "203.0.113"
PPTPD_LOCAL, PPTPD_REMOTE = "172.30.0.1", "172.30.0.10-19"
POOL = "10.10.100.0/24"
SERVER_TUNNEL = "10.10.100.1"
XFER_BYTES = 300_000
XFER_PORT = 5001
STOP_LINGER = 3  # seconds our L2TP client waits out a peer's StopCCN in these labs
MPPE_BITS = {"none": "none", "basic": "40", "strongest": "128"}
PEERS = ("pptpd", "pptp-linux")
# the peers our client dials; the others dial our server
OUR_CLIENT = ("pptpd", "xl2tpd-lns", *ipsec.OUR_CLIENT)


@dataclass(frozen=True, slots=True)
class Cell:
    """One cell of the interop matrix: a peer and what both sides are configured to use."""

    peer: str
    auth: str
    encryption: str = "none"
    mppe: str = "stateless"
    tunnel: str = "plain"  # L2TP: plain, auth (tunnel authentication), hidden (+ hidden AVPs)
    call: str = "incoming"  # L2TP: incoming (ICRQ) or outgoing (OCRQ) call
    cipher: str = ""  # L2TP/IPsec: IKE and ESP proposals (interop_ipsec.CIPHERS), PSK
    nat: str = "none"  # L2TP/IPsec: nat-t = a NAT in front of the initiator
    provider: str = "local"  # our server's authentication: local accounts or RADIUS
    not_applicable: str = ""  # the reason, when the two implementations cannot do this

    @property
    def id(self) -> str:
        return self._id + ("-radius" if self.provider == "radius" else "")

    @property
    def _id(self) -> str:
        if self.cipher:
            return f"{self.peer}-psk-{self.cipher}-{self.auth}" + (
                "-nat-t" if self.nat == "nat-t" else "")
        enc = {"none": "clear", "basic": "mppe40", "strong": "mppe56",
               "strongest": "mppe128"}.get(self.encryption, self.encryption)
        extra = {"auth": "-tunnelauth", "hidden": "-hiddenavps"}.get(self.tunnel, "")
        return (f"{self.peer}-{self.auth}-{enc}" + (f"-{self.mppe}" if enc != "clear" else "")
                + extra + ("-outgoing" if self.call == "outgoing" else ""))

    @property
    def params(self) -> dict[str, str]:
        return {"peer": self.peer, "auth": self.auth, "encryption": self.encryption,
                "mppe": self.mppe, "tunnel": self.tunnel, "call": self.call,
                "cipher": self.cipher, "nat": self.nat, "provider": self.provider}


NO_56 = "pppd and Linux's ppp_mppe implement 40- and 128-bit MPPE only, not 56-bit"
NO_V1_40 = ("pppd disables 40-bit MPPE after MS-CHAP v1 (\"MS-CHAP LM not supported\": RFC 3079 "
            "§2.1 derives those keys from the LAN Manager hash)")


def _pptp_cells(peer: str) -> list[Cell]:
    return [
        Cell(peer, "mschapv2", "strongest"),
        Cell(peer, "mschapv2", "basic"),
        Cell(peer, "mschapv2", "strongest", "stateful"),
        Cell(peer, "mschapv2", "strong", not_applicable=NO_56),
        Cell(peer, "mschap", "strongest"),
        Cell(peer, "mschap", "basic", not_applicable=NO_V1_40),
        Cell(peer, "mschapv2"),
        Cell(peer, "chap"),
        Cell(peer, "pap"),
    ]


def _l2tp_cells(peer: str) -> list[Cell]:
    return [
        Cell(peer, "mschapv2", "strongest"),
        Cell(peer, "mschapv2"),
        Cell(peer, "chap"),
        Cell(peer, "pap"),
        Cell(peer, "mschapv2", "strongest", tunnel="auth"),
        Cell(peer, "mschapv2", "strongest", tunnel="hidden",
             not_applicable=l2tp.NOT_APPLICABLE[peer, "hidden"]),
        Cell(peer, "mschapv2", "strongest", call="outgoing",
             not_applicable=l2tp.NOT_APPLICABLE[peer, "outgoing"]),
    ]


MATRIX: list[Cell] = [
    *_pptp_cells("pptpd"), *_pptp_cells("pptp-linux"),
    *_l2tp_cells("xl2tpd-lns"), *_l2tp_cells("xl2tpd-lac"),
    *[Cell(p, "mschapv2", cipher=c, nat=n,
           not_applicable=ipsec.NOT_APPLICABLE.get((p, c, n), ""))
      for p in ipsec.IPSEC_PEERS for c, n in ipsec.CELLS[p]],
    # our server with a RADIUS provider (FreeRADIUS beside it): the peer's pppd derives its
    # MPPE keys from the password, ours come from RADIUS's MS-MPPE-Send/Recv-Key, so traffic
    # passing proves the RADIUS key path against an independent implementation
    Cell("pptp-linux", "mschapv2", "strongest", provider="radius"),
    Cell("pptp-linux", "mschap", "strongest", provider="radius"),
    Cell("pptp-linux", "chap", provider="radius"),
    Cell("xl2tpd-lac", "mschapv2", "strongest", provider="radius"),
]
RADIUS_SECRET = "vpnlab-radius"


def build(params: Mapping[str, str]) -> LabSpec:
    if params["encryption"] not in MPPE_BITS:
        raise SpecError(f"interop: encryption={params['encryption']}: {NO_56}")
    if params["encryption"] != "none" and params["auth"] not in ("mschap", "mschapv2"):
        raise SpecError(f"interop: encryption={params['encryption']} needs MPPE keys, which "
                        "come from MS-CHAP: expected auth=mschap or mschapv2")
    if params["provider"] == "radius" and params["peer"] in OUR_CLIENT:
        raise SpecError(f"interop: provider=radius is our server's: peer={params['peer']} "
                        "is dialled by our client")
    if ipsec.applies(params):
        return ipsec.build(params, OURS_NET, PEER_NET, ((USER, PASSWORD),),
                           (PPTPD_LOCAL, PPTPD_REMOTE))
    bits = MPPE_BITS[params["encryption"]]
    stateful = params["mppe"] == "stateful"
    if params["peer"] in l2tp.L2TP_PEERS:
        peer = l2tp.peer_spec(params, bits, ((USER, PASSWORD),), f"{OURS_NET}.2", PPTPD_LOCAL,
                              PPTPD_REMOTE)
        role = "our L2TP " + ("LAC (vpnlab connect)" if params["peer"] in OUR_CLIENT else
                              "LNS (vpnlab server)")
    elif params["peer"] == "pptpd":
        peer = PeerSpec("pptpd", users=((USER, PASSWORD),), auth=params["auth"], mppe=bits,
                        mppe_stateful=stateful, local_ip=PPTPD_LOCAL, remote_ips=PPTPD_REMOTE)
        role = "our PPTP client (vpnlab connect)"
    else:
        peer = PeerSpec("pptp-linux", users=((USER, PASSWORD),), auth=params["auth"],
                        mppe=bits, mppe_stateful=stateful, server=f"{OURS_NET}.2")
        role = "our PPTP server (vpnlab server)"
    nodes = (
        NodeSpec("ours", routes=(Route("default", f"{OURS_NET}.1"),), description=role),
        NodeSpec("isp", NodeKind.ROUTER, description="ISP core router (the Internet)"),
        NodeSpec("peer", NodeKind.REFPEER, routes=(Route("default", f"{PEER_NET}.1"),),
                 peer=peer, description=f"reference peer: {params['peer']} in user-mode Linux"),
    )
    links = (LinkSpec("ours", "isp", f"{OURS_NET}.2/24", f"{OURS_NET}.1/24"),
             LinkSpec("peer", "isp", f"{PEER_NET}.2/24", f"{PEER_NET}.1/24"))
    return LabSpec("interop", nodes, links, f"interop: ours against {params['peer']}")


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "testbed.cli", *args]


def server_config(params: Mapping[str, str], extra: tuple[str, ...] = ()) -> str:
    return "\n".join([
        "[server]", f'listen = "{OURS_NET}.2"', 'name = "vpnlab"', f'pool = "{POOL}"',
        f'auth = ["{params["auth"]}"]', f'encryption = "{params["encryption"]}"',
        f'mppe = "{params["mppe"]}"', "echo_interval = 10",
        *(l2tp.server_lines(params) if params["peer"] in l2tp.L2TP_PEERS else []), *extra, "",
        f"[users.{USER}]", f'password = "{PASSWORD}"', ""])


def start_ours(lab: Lab, params: Mapping[str, str]) -> None:
    """Our side: the server listening (peer=pptp-linux) or the client dialling pptpd."""
    assert lab.run_dir is not None
    ours = lab.node("ours")
    if params["peer"] in OUR_CLIENT:
        protocol = (l2tp.client_args(params) if params["peer"] in l2tp.L2TP_PEERS else
                    ipsec.client_args(params, lab) if ipsec.applies(params) else
                    ["--protocol", "pptp"])
        if protocol[1] != "pptp":
            # a peer's StopCCN keeps our client STOP_LINGER s to re-ack it (RFC 2661 §5.7),
            # not the default 31: the linger itself is test_l2tp_wire's case
            protocol += ["--stop-linger", str(STOP_LINGER)]
        argv = _cli("connect", *protocol, "--server", f"{PEER_NET}.2", "--user",
                    USER, "--password", PASSWORD, "--auth", params["auth"], "--encryption",
                    params["encryption"], "--mppe", params["mppe"], "--routes", "split",
                    "--split", softether.HUB_NET if params["peer"] == softether.PEER else
                    f"{PPTPD_LOCAL}/32", "--json", "--status",
                    str(lab.run_dir / "ours-status.json"))
        t0 = time.monotonic()
        ours.start_daemon("vpnclient", argv, ready=r'"event": "tunnel-(up|down)"', timeout=40)
        lab.figures.setdefault("tunnel_up_s", round(time.monotonic() - t0, 2))  # type: ignore[attr-defined]
    else:
        config = lab.run_dir / "ours-server.toml"
        extra = tuple(ipsec.server_lines(params, lab)) if ipsec.applies(params) else ()
        if params["provider"] == "radius":
            extra += _start_radius(lab)
        config.write_text(server_config(params, extra))
        ours.start_daemon("vpnserver", _cli("server", "--config", str(config), "--json",
                                            "--status", str(lab.run_dir / "ours-status.json")),
                          ready=r'"event": "listening"', timeout=15)


def _start_radius(lab: Lab) -> tuple[str, ...]:
    """FreeRADIUS in our server's namespace on loopback, knowing the one user; the server's
    [authentication] lines for it (placed after [server]'s own keys)."""
    from testbed.freeradius import FreeRadius, FreeRadiusSpec, RadiusClientSpec, RadiusUser

    spec = FreeRadiusSpec(address="127.0.0.1", users=(RadiusUser(USER, PASSWORD),),
                          clients=(RadiusClientSpec("127.0.0.1", RADIUS_SECRET),))
    lab.freeradius = FreeRadius.on_node(lab.node("ours"), spec).start()  # type: ignore[attr-defined]
    return ("", "[authentication]", 'provider = "radius"', "[[authentication.radius]]",
            'address = "127.0.0.1"', f'secret = "{RADIUS_SECRET}"')


def start(lab: Lab, params: Mapping[str, str]) -> None:
    if params["peer"] == softether.PEER:
        return softether.start(lab, params, start_ours, ipsec.PSK, USER, PASSWORD)
    lab.figures = {"boot_s": round(lab.node("peer").peer.boot_seconds or 0, 2)}  # type: ignore[attr-defined]
    start_ours(lab, params)
    if params["peer"] not in OUR_CLIENT:
        t0 = time.monotonic()
        lab.dial = lab.node("peer").peer.dial(timeout=40)  # type: ignore[attr-defined]
        lab.figures["tunnel_up_s"] = round(time.monotonic() - t0, 2)  # type: ignore[attr-defined]
    lab.figures["peer_memory_mb"] = round(lab.node("peer").peer.memory_kib() / 1024, 1)  # type: ignore[attr-defined]


def status(lab: Lab) -> dict:
    assert lab.run_dir is not None
    try:
        return json.loads((lab.run_dir / "ours-status.json").read_text())
    except (OSError, ValueError):
        return {}


def _events(lab: Lab) -> list[dict]:
    daemons = lab.node("ours").daemons
    daemon = daemons.get("vpnclient") or daemons.get("vpnserver")
    if daemon is None:
        return []
    return [json.loads(line) for line in daemon.output().splitlines() if line.startswith("{")]


def _wait(predicate, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def expected_encryption(params: Mapping[str, str]) -> str | None:
    bits = MPPE_BITS.get(params["encryption"])
    return None if bits in (None, "none") else f"mppe-{bits} {params['mppe']}"


def tunnel(lab: Lab, params: Mapping[str, str]) -> tuple[list[CheckResult], str, str]:
    """Up at both ends: (checks, our tunnel address, the peer's tunnel address)."""
    peer = lab.node("peer").peer
    dialled = params["peer"] in OUR_CLIENT or lab.dial.ok  # type: ignore[attr-defined]
    got_up = _wait(lambda: any(e["event"] == "ppp-up" for e in peer.ppp_events()),
                   10 if dialled else 0)
    theirs = next((e for e in peer.ppp_events() if e["event"] == "ppp-up"), {})
    if params["peer"] in OUR_CLIENT:
        st = status(lab)
        ours_ok = st.get("state") == "up"
        mine, detail = st.get("local_address", ""), f"state {st.get('state')}: " + str(
            st.get("reason") or f"{st.get('local_address')} <-> {st.get('peer_address')}")
        auth, enc = st.get("auth"), st.get("encryption")
    else:
        dial = lab.dial  # type: ignore[attr-defined]
        _wait(lambda: bool(status(lab).get("sessions")), 5)
        sessions = status(lab).get("sessions", [])
        ours_ok = dial.ok and len(sessions) == 1
        mine = SERVER_TUNNEL
        detail = (f"pppd exit {dial.returncode}; our sessions: {sessions}" if not ours_ok else
                  f"session {sessions[0].get('address')} user {sessions[0].get('user')}")
        auth = sessions[0].get("auth") if sessions else None
        enc = sessions[0].get("encryption") if sessions else None
    out = [CheckResult("our side: tunnel up", ours_ok, detail),
           CheckResult(f"{params['peer']}: ppp0 up (pppd ip-up)", got_up,
                       f"{theirs.get('local')} <-> {theirs.get('remote')}" if got_up else
                       f"no ip-up; pppd.log: {peer.log('pppd.log')[-300:]!r}")]
    if ours_ok:
        out.append(CheckResult(f"negotiated auth is {params['auth']}", auth == params["auth"],
                               f"got {auth}"))
        want = expected_encryption(params)
        out.append(CheckResult(f"encryption is {want or 'off'}", enc == want, f"got {enc}"))
    return out, mine, theirs.get("local", "")


def ping_both_ways(lab: Lab, mine: str, theirs: str) -> list[CheckResult]:
    ours = lab.node("ours").run(["ping", "-c", "3", "-i", "0.2", "-W", "2", "-n", "-q",
                                 theirs], timeout=15)
    back = lab.node("peer").peer.run(["ping", "-c", "3", "-i", "0.2", "-W", "2", "-n", "-q",
                                      mine], timeout=20)
    return [CheckResult(f"ping through the tunnel: ours -> peer {theirs}", ours.ok, _last(ours)),
            CheckResult(f"ping through the tunnel: peer -> ours {mine}", back.ok, _last(back))]


def _last(result: Result) -> str:
    return (result.stdout.strip().splitlines() or [result.stderr.strip()])[-1]


ECHO_SERVER = """
import hashlib, json, socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1); s.settimeout(30)
print("listening", flush=True)
c, _ = s.accept(); c.settimeout(30); h = hashlib.sha256(); n = 0
while True:
    d = c.recv(65536)
    if not d:
        break
    h.update(d); n += len(d); c.sendall(d)
c.shutdown(socket.SHUT_WR)
print(json.dumps({"received": n, "sha256": h.hexdigest()}), flush=True)
"""

ECHO_CLIENT = """
import hashlib, json, os, socket, sys, threading
data = os.urandom(int(sys.argv[3]))
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)
def send():
    c.sendall(data); c.shutdown(socket.SHUT_WR)
t = threading.Thread(target=send); t.start(); h = hashlib.sha256(); n = 0
while True:
    d = c.recv(65536)
    if not d:
        break
    h.update(d); n += len(d)
t.join()
print(json.dumps({"sent": len(data), "sent_sha256": hashlib.sha256(data).hexdigest(),
                  "echoed": n, "echo_sha256": h.hexdigest()}))
"""


def transfer(lab: Lab, mine: str, run=None) -> CheckResult:  # type: ignore[no-untyped-def]
    """XFER_BYTES from the peer to our side and echoed back, SHA-256 compared both ways
    (run: how to run the sender on the peer's side; default the reference peer's agent)."""
    name = f"TCP transfer of {XFER_BYTES} bytes each way, SHA-256 equal"
    listener = lab.node("ours").popen([sys.executable, "-c", ECHO_SERVER, mine, str(XFER_PORT)],
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert listener.stdout is not None
        first = listener.stdout.readline().strip()
        if first != "listening":
            return CheckResult(name, False, f"our listener: {first}")
        t0 = time.monotonic()
        sent = (run or lab.node("peer").peer.run)(["python3", "-c", ECHO_CLIENT, mine,
                                                   str(XFER_PORT), str(XFER_BYTES)], timeout=60)
        elapsed = time.monotonic() - t0
        got = listener.stdout.readline().strip()
    finally:
        listener.kill()
        listener.wait(5)
    try:
        a, b = json.loads(sent.stdout.strip().splitlines()[-1]), json.loads(got)
    except (ValueError, IndexError):
        return CheckResult(name, False, f"peer: {sent.stdout.strip()[-300:]!r}; ours: {got!r}")
    ok = (a["sent"] == b["received"] == a["echoed"] == XFER_BYTES
          and a["sent_sha256"] == b["sha256"] == a["echo_sha256"])
    return CheckResult(name, ok, f"sent {a['sent']}, received {b['received']}, echoed "
                       f"{a['echoed']} in {elapsed:.2f}s" + ("" if ok else
                                                            f"; hashes {a} vs {b}"))


def wire(lab: Lab, params: Mapping[str, str], theirs: str) -> list[CheckResult]:
    """Our Internet-side capture, decoded by scapy (PPTP, GRE) and tshark (PPP in GRE)."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.pptp import PPTP

    lab.node("ours").python("testbed.probe", "udp", theirs, "9", "--count", "3")
    path = lab.capture_path("ours", "isp")
    packets = pcap.wait_for(path, lambda pkts: sum(
        1 for p in pkts if IP in p and p[IP].proto == 47 and len(p[IP]) > 60) >= 3, 3.0)
    control = [PPTP(bytes(p[IP])[p[IP].ihl * 4 + p[TCP].dataofs * 4:p[IP].len])
               for p in packets if TCP in p and 1723 in (p[TCP].sport, p[TCP].dport)
               and p[IP].len > p[IP].ihl * 4 + p[TCP].dataofs * 4]
    types = sorted({int(c.ctrl_msg_type) for c in control})
    cookies = bool(control) and all(c.magic_cookie == 0x1A2B3C4D for c in control)
    out = [CheckResult("PPTP control messages decode in scapy with the magic cookie",
                       cookies and {1, 2, 7, 8} <= set(types),
                       f"{len(control)} messages, types {types}")]
    gre = [bytes(p[IP])[p[IP].ihl * 4:p[IP].len] for p in packets if IP in p and p[IP].proto == 47]
    bad = [g for g in gre if len(g) < 8 or g[1] & 7 != 1 or g[2:4] != b"\x88\x0b" or
           not g[0] & 0x20]
    out.append(CheckResult("GRE is enhanced GRE (version 1, protocol 0x880B, key present)",
                           bool(gre) and not bad, f"{len(gre)} GRE packets, {len(bad)} bad"))
    rows = pcap.tshark_fields(path, ["ppp.protocol", "_ws.malformed", "_ws.expert.severity"],
                              "gre", pcap.TUNNEL_FRAMING_ONLY)
    malformed = [r for r in rows if len(r) > 1 and r[1]]
    protocols = {r[0] for r in rows if r and r[0]}
    out.append(CheckResult("tshark: PPP inside GRE decodes, nothing malformed",
                           bool(rows) and not malformed,
                           f"{len(rows)} frames, {len(malformed)} malformed, PPP protocols "
                           f"{sorted(protocols)}"))
    clear = any(b"vpnlab-probe" in g for g in gre)
    if expected_encryption(params):
        out.append(CheckResult("encrypted: MPPE data only, no clear IP or probe payload",
                               "0x00fd" in protocols and "0x0021" not in protocols
                               and not clear, f"probe payload {'FOUND' if clear else 'absent'}"))
    else:
        out.append(CheckResult("unencrypted: IP in clear inside GRE", "0x0021" in protocols
                               and clear, f"probe payload {'seen' if clear else 'absent'}"))
    return out


def _pppd_gone(lab: Lab) -> bool:
    peer = lab.node("peer").peer
    return _wait(lambda: any(e["event"] == "ppp-down" for e in peer.ppp_events())
                 and not peer.run(["pgrep", "-x", "pppd"]).ok, 10)


def hang_ups(lab: Lab, params: Mapping[str, str]) -> list[CheckResult]:
    """Each side hangs up in turn; the other must notice and clean up."""
    peer = lab.node("peer").peer
    ours = lab.node("ours")
    if params["peer"] in OUR_CLIENT:
        rc = ours.daemons["vpnclient"].stop()
        first = CheckResult(f"we hang up: {params['peer']}'s pppd ends the call (ip-down, "
                            "pppd exits)",
                            rc == 0 and _pppd_gone(lab), f"our client exited {rc}")
        mark = len(peer.ppp_events())
        start_ours(lab, params)
        ours_up = status(lab).get("state") == "up"
        # the peer's ip-up hook runs inside user-mode Linux: slow when the machine is loaded
        peer_up = _wait(lambda: len(peer.ppp_events()) > mark, 30)
        up = ours_up and peer_up
        peer.sh("kill $(cat /run/ppp*.pid)")
        daemon = ours.daemons["vpnclient"]
        gone = _wait(lambda: not daemon.running(), 15)
        down = [e for e in _events(lab) if e["event"] == "tunnel-down"]
        no_tun = not ours.run(["ip", "link", "show", "vpn0"]).ok
        second = CheckResult(f"{params['peer']}'s pppd hangs up: our client notices, exits, "
                             "removes vpn0",
                             up and gone and no_tun and bool(down),
                             f"re-dialled {up} (ours up {ours_up}, peer's ip-up {peer_up}), "
                             f"exited {daemon.returncode}, reason "
                             f"{down[-1]['reason'] if down else None!r}, vpn0 gone {no_tun}")
        return [first, second]
    mark = len(_events(lab))
    peer.sh("kill $(cat /run/ppp*.pid)")
    down = _wait(lambda: any(e["event"] == "session-down" for e in _events(lab)[mark:]), 10)
    reason = next((e["reason"] for e in _events(lab)[mark:] if e["event"] == "session-down"),
                  None)
    first = CheckResult(f"{params['peer']} hangs up: our server ends the session",
                        down and _pppd_gone(lab) and not status(lab).get("sessions"),
                        f"reason {reason!r}")
    dial = peer.dial(timeout=40)
    daemon = ours.daemons["vpnserver"]
    rc = daemon.stop()
    ended = _pppd_gone(lab)
    second = CheckResult(f"we hang up (server stops): {params['peer']}'s pppd ends the call",
                         dial.ok and rc == 0 and ended,
                         f"re-dialled rc {dial.returncode}, our server exited {rc}")
    return [first, second]


def checks(lab: Lab, params: Mapping[str, str]) -> list[CheckResult]:
    if params["peer"] == softether.PEER:
        return softether.checks(lab, params)
    results, mine, theirs = tunnel(lab, params)
    if not all(r.passed for r in results):
        return results
    if ipsec.applies(params):
        results += ipsec.ipsec_checks(lab, params, status(lab))
    results += ping_both_ways(lab, mine, theirs)
    results.append(transfer(lab, mine))
    if ipsec.applies(params):
        results += ipsec.wire(lab, params, theirs)
    elif params["peer"] in l2tp.L2TP_PEERS:
        results += l2tp.wire(lab, params, theirs, expected_encryption(params))
    else:
        results += wire(lab, params, theirs)
    results += hang_ups(lab, params)
    if ipsec.applies(params):
        results.append(ipsec.sas_gone(lab, params))
    figures = lab.figures  # type: ignore[attr-defined]
    results.append(CheckResult("figures", True, ", ".join(f"{k} {v}" for k, v in
                                                          figures.items())))
    return results


SCENARIO = Scenario(
    name="interop",
    description="Our PPTP, L2TP or L2TP/IPsec client or server against a real peer (pptpd, "
                "pptp-linux, xl2tpd or strongSwan + xl2tpd as LNS or LAC) in UML",
    build=build,
    start=start,
    checks=checks,
    params={
        "peer": Param("pptpd", PEERS + l2tp.L2TP_PEERS + ipsec.IPSEC_PEERS,
                      "pptpd, xl2tpd-lns, strongswan-lns: our client dials it; pptp-linux, "
                      "xl2tpd-lac, strongswan-lac: it dials our server"),
        "auth": Param("mschapv2", ("pap", "chap", "mschap", "mschapv2"), "authentication"),
        "encryption": Param("strongest", ("none", "basic", "strong", "strongest"),
                            "none, or MPPE: basic 40-bit, strongest 128 (56: no pppd)"),
        "mppe": Param("stateless", ("stateless", "stateful"),
                      "stateful: our side requests it, pppd accepts (mppe-stateful)"),
        "tunnel": Param("plain", l2tp.TUNNELS, "L2TP: auth = tunnel authentication both ways "
                        "(xl2tpd challenge = yes), hidden = also our AVPs hidden"),
        "call": Param("incoming", l2tp.CALLS, "L2TP call: incoming (ICRQ) or outgoing (OCRQ)"),
        "cipher": Param("", ("", *ipsec.CIPHERS), "L2TP/IPsec (strongswan-*): PSK with 3DES or "
                        "AES proposals at both ends"),
        "provider": Param("local", ("local", "radius"), "our server's authentication "
                          "(peers that dial our server): radius = FreeRADIUS beside it"),
        "nat": Param("none", ipsec.NATS, "L2TP/IPsec: nat-t = a NAT router in front of the "
                     "initiator (NAT-T, UDP 4500)"),
    },
)
