"""`remote-access`: the chapter's remote access VPN connection over the Internet.

A client at home (straight on the ISP, or behind a home NAT with or without the PPTP helper),
the Internet, a VPN server with an Internet and an intranet interface, and an intranet file
server. Our server and client run as daemons in the namespaces; the checks read their JSON
status and the captures (decoded with scapy, never with our own codecs).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from collections.abc import Mapping

from testbed import pcap
from testbed.errors import SpecError, TestbedError
from testbed.lab import Lab
from testbed.model import LabSpec
from testbed.scenario import CheckResult, Param, Scenario
from testbed.shaping import impaired_path
from topologies.blocks import Builder, direct_client, home_behind_nat, vpn_site
from tunnels.stacks.pptp import NO_GRE_REASON

PASSWORD = "Pa55w0rd!"
FILESERVER = "10.10.0.20"
POOL = "10.10.100.0/24"


MPPE_AUTH = ("mschap", "mschapv2")  # MPPE keys come from MS-CHAP (RFC 3079)
IPSEC_LEVELS = ("basic", "strong", "strongest")  # DES, DES, 3DES (the chapter's profile)
PSK = "vpnlab-ipsec-psk"


def build(params: Mapping[str, str]) -> LabSpec:
    if params["protocol"] not in ("pptp", "l2tp", "l2tp-ipsec"):
        raise SpecError(f"remote-access: protocol={params['protocol']!r}: expected pptp, l2tp "
                        "or l2tp-ipsec")
    if params["protocol"] == "l2tp-ipsec" and params["encryption"] not in IPSEC_LEVELS and \
            not params["cipher"]:
        raise SpecError(f"remote-access: encryption={params['encryption']} with l2tp-ipsec: "
                        "L2TP/IPsec always encrypts; expected basic, strong or strongest (DES, "
                        "DES, 3DES) or cipher=aes-cbc-128/aes-cbc-256")
    if params["protocol"] != "l2tp-ipsec" and (params["cipher"] or params["nat_t"] != "yes"
                                               or params["ipsec_auth"] != "psk"):
        raise SpecError("remote-access: cipher, nat_t and ipsec_auth are IPsec settings; expected "
                        "protocol=l2tp-ipsec with them")
    if params["hide_avps"] == "yes" and not params["tunnel_secret"]:
        raise SpecError("remote-access: hide_avps=yes needs tunnel_secret=SECRET (hidden AVPs "
                        "are encrypted with it, RFC 2661 §4.3)")
    if params["protocol"] == "pptp" and (params["tunnel_secret"] or params["hide_avps"] == "yes"
                                         or params["call_mode"] != "incoming"):
        raise SpecError("remote-access: tunnel_secret, hide_avps and call_mode are L2TP "
                        "settings; expected protocol=l2tp with them")
    if params["encryption"] in ("basic", "strong", "strongest") and \
            params["auth"] not in MPPE_AUTH and params["protocol"] != "l2tp-ipsec":
        raise SpecError(f"remote-access: encryption={params['encryption']} needs MPPE keys, "
                        f"which come from MS-CHAP: expected auth=mschap or mschapv2 (got "
                        f"{params['auth']}), or encryption=none")
    try:
        if float(params["echo"]) < 0:
            raise ValueError
    except ValueError:
        raise SpecError(f"remote-access: echo={params['echo']!r}: expected seconds >= 0 "
                        "(0: no LCP echo)") from None
    try:
        if float(params["control_echo"]) < 1:
            raise ValueError
    except ValueError:
        raise SpecError(f"remote-access: control_echo={params['control_echo']!r}: expected "
                        "seconds >= 1") from None
    if not params["max_ports"].isdigit() or int(params["max_ports"]) < 1:
        raise SpecError(f"remote-access: max_ports={params['max_ports']!r}: expected a "
                        "positive integer")
    if params["clients"] == "2" and params["nat"] == "none":
        raise SpecError("remote-access: clients=2 puts both clients behind the home NAT; "
                        "expected nat=pptp-helper or nat=no-helper with it")
    b = Builder()
    # loss/reordering on the client's (or home NAT's) link to its ISP: 20 ms, per direction
    isp = impaired_path(params, "isp_", "remote-access (the client's link to its ISP)")
    if params["nat"] == "none":
        direct_client(b, shape=isp)
    else:
        extra = ("client2",) if params["clients"] == "2" else ()
        home_behind_nat(b, pptp_helper=params["nat"] in ("pptp-helper", "helper"),
                        extra_clients=extra, shape=isp)
    vpn_site(b)
    b.isp_core()
    return LabSpec("remote-access", tuple(b.nodes), tuple(b.links),
                   "remote access VPN client over the Internet to a VPN server and intranet")


def clients(lab: Lab) -> list[str]:
    return [n for n in ("client", "client2") if n in lab.nodes]


def server_config(params: Mapping[str, str], listen: str, keylog: str = "",
                  users: str | None = None) -> str:
    """The server's TOML; `users` replaces the [users] tables (alice, bob and carol, who has
    no dial-in permission)."""
    auth = params["auth"]
    return "\n".join([
        "[server]",
        f'listen = "{listen}"',
        'name = "vpnsrv"',
        f'pool = "{POOL}"',
        'dns = ["10.10.0.53"]',
        'wins = ["10.10.0.54"]',
        f'auth = ["{auth}"]',
        f'encryption = "{params["encryption"]}"',
        f'mppe = "{params["mppe"]}"',
        f"echo_interval = {params['echo']}",
        f"max_ports = {params['max_ports']}",
        f"control_echo = {params['control_echo']}",
        f'protocols = ["{params["protocol"]}"]',
        f'tunnel_secret = "{params["tunnel_secret"]}"',
        f'hide_avps = {"true" if params["hide_avps"] == "yes" else "false"}',
        f"hello_interval = {params['hello']}",
        *_ipsec_lines(params, str(Path(keylog).parent / "pki") if keylog else ""),
        *([f'keylog = "{keylog}"'] if keylog and params["protocol"] == "l2tp-ipsec" else []),
        "",
        *(users.splitlines() if users is not None else [
            "[users.alice]",
            f'password = "{PASSWORD}"',
            "[users.bob]",
            f'password = "{PASSWORD}"',
            "[users.carol]  # an account without dial-in permission: refused with error 649",
            f'password = "{PASSWORD}"',
            "dialin = false"]),
        "",
    ])


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "testbed.cli", *args]


def start(lab: Lab, params: Mapping[str, str]) -> None:
    assert lab.run_dir is not None
    listen = lab.address("vpnsrv", "isp")
    config = lab.run_dir / "vpnsrv.toml"
    if params["protocol"] == "l2tp-ipsec" and params["ipsec_auth"] == "cert":
        from topologies.pki import make_pki

        make_pki(lab.run_dir / "pki", ["vpnsrv", "client", "client2"])
    # the server's ESP keys, so checks and conformance cases decrypt captures independently
    config.write_text(server_config(params, listen, str(lab.run_dir / "esp-keys.jsonl")))
    lab.node("vpnsrv").start_daemon(
        "vpnserver", _cli("server", "--config", str(config), "--json", "--status",
                          str(lab.run_dir / "vpnsrv-status.json")),
        ready=r'"event": "listening"', timeout=15)
    # Before any tunnel the intranet is out of reach: its addresses are not routed outside.
    lab.pre_tunnel = {c: lab.node(c).run(["ping", "-c1", "-W1", "-n", FILESERVER]).ok  # type: ignore[attr-defined]
                      for c in clients(lab)}
    for i, name in enumerate(clients(lab)):
        connect(lab, name, params, user=("alice", "bob")[i])


def connect(lab: Lab, node: str, params: Mapping[str, str], user: str = "alice",
            password: str = PASSWORD, extra: tuple[str, ...] = (), wait: bool = True) -> None:
    assert lab.run_dir is not None
    argv = _cli("connect", "--protocol", params["protocol"], "--server",
                lab.address("vpnsrv", "isp"), "--user", user, "--password", password,
                "--auth", params["auth"], "--encryption", params["encryption"],
                "--mppe", params["mppe"], "--routes", "split", "--split", "10.10.0.0/24",
                "--echo-interval", params["echo"], "--control-echo", params["control_echo"],
                "--json", "--status", str(lab.run_dir / f"{node}-status.json"),
                *_l2tp_args(params, node, str(lab.run_dir / "pki")), *extra)
    lab.node(node).start_daemon("vpnclient", argv,
                                ready=r'"event": "tunnel-(up|down)"' if wait else None,
                                timeout=40)


def _ipsec_lines(params: Mapping[str, str], pki_dir: str = "") -> list[str]:
    if params["protocol"] != "l2tp-ipsec":
        return []
    lines = [f'nat_t = {"true" if params["nat_t"] == "yes" else "false"}']
    if params["ipsec_auth"] == "cert":
        lines += [f'certificate = "{pki_dir}/vpnsrv.pem"', f'private_key = "{pki_dir}/vpnsrv.key"',
                  f'ca = ["{pki_dir}/ca.pem"]']
    else:
        lines.append(f'psk = "{PSK}"')
    if params["cipher"]:
        lines.append(f'ipsec_ciphers = ["{params["cipher"]}"]')
    return lines


def _l2tp_args(params: Mapping[str, str], node: str = "client", pki: str = "") -> list[str]:
    if params["protocol"] not in ("l2tp", "l2tp-ipsec"):
        return []
    args = ["--call-mode", params["call_mode"], "--hello-interval", params["hello"]]
    if params["protocol"] == "l2tp-ipsec" and params["ipsec_auth"] == "cert":
        args += ["--cert", f"{pki}/{node}.pem", "--key", f"{pki}/{node}.key", "--ca",
                 f"{pki}/ca.pem"]
    elif params["protocol"] == "l2tp-ipsec":
        args += ["--psk", PSK]
        if params["nat_t"] != "yes":
            args.append("--no-nat-t")
        if params["cipher"]:
            args += ["--ipsec-cipher", params["cipher"]]
    if params["tunnel_secret"]:
        args += ["--tunnel-secret", params["tunnel_secret"]]
    if params["hide_avps"] == "yes":
        args.append("--hide-avps")
    return args


def status(lab: Lab, name: str) -> dict:
    assert lab.run_dir is not None
    try:
        return json.loads((lab.run_dir / f"{name}-status.json").read_text())
    except (OSError, ValueError):
        return {}


def check_tunnels(lab: Lab, params: Mapping[str, str]) -> list[CheckResult]:
    out = []
    for name in clients(lab):
        st = status(lab, name)
        if params["protocol"] == "l2tp-ipsec" and params["nat"] != "none" and \
                params["nat_t"] != "yes":
            # The chapter: L2TP/IPsec cannot pass a NAT (without NAT-T), and the user is told.
            named = st.get("state") == "down" and "NAT" in (st.get("reason") or "")
            out.append(CheckResult(f"{name}: L2TP/IPsec fails through a NAT without NAT-T, "
                                   "with the reason named", named,
                                   f"state {st.get('state')}: {st.get('reason')}"))
            continue
        if params["nat"] == "no-helper" and params["protocol"] == "pptp":
            # The chapter's point: PPTP through a NAT that does not translate GRE fails, and
            # the user is told why.
            named = st.get("state") == "down" and st.get("reason") == NO_GRE_REASON
            out.append(CheckResult(f"{name}: tunnel fails through a NAT without the PPTP "
                                   "helper, with the reason named", named,
                                   f"state {st.get('state')}: {st.get('reason')}"))
            continue
        up = st.get("state") == "up"
        out.append(CheckResult(f"{name}: tunnel up", up,
                               f"address {st.get('local_address')}, auth {st.get('auth')}, "
                               f"dns {st.get('dns')}, up {st.get('bringup_seconds')} s after "
                               "connecting" if up else
                               f"state {st.get('state')}: {st.get('reason')}"))
        if up:
            out.append(CheckResult(f"{name}: negotiated auth is {params['auth']}",
                                   st.get("auth") == params["auth"], f"got {st.get('auth')}"))
            bits = {"basic": 40, "strong": 56, "strongest": 128}.get(params["encryption"])
            want = f"mppe-{bits} {params['mppe']}" if bits else None
            if params["protocol"] == "l2tp-ipsec":
                out.append(_ipsec_check(st, params))
            elif params["encryption"] != "optional":
                out.append(CheckResult(f"{name}: encryption is {want or 'off'}",
                                       st.get("encryption") == want,
                                       f"got {st.get('encryption')}"))
            out.append(_server_agrees(lab, name, st))
            if params["protocol"] == "l2tp":
                out.append(_l2tp_is_not_a_vpn(st, params))
    return out


ESP_CIPHER_OF_LEVEL = {"basic": "des-cbc", "strong": "des-cbc", "strongest": "3des-cbc"}


def _ipsec_check(st: Mapping, params: Mapping[str, str]) -> CheckResult:
    """L2TP/IPsec: the ESP SA carries the chapter's cipher for the level (or the one asked
    for), UDP-encapsulated exactly when a NAT sits in the path."""
    ipsec, ike = st.get("ipsec") or {}, st.get("ike") or {}
    cipher = params["cipher"] or ESP_CIPHER_OF_LEVEL[params["encryption"]]
    encap = "udp-transport" if params["nat"] != "none" else "transport"
    auth = "rsa-sig" if params["ipsec_auth"] == "cert" else "psk"
    ok = ipsec.get("cipher") == cipher and ipsec.get("encapsulation") == encap and \
        st.get("encrypted_transport") is True and ike.get("auth") == auth
    return CheckResult(f"IPsec ESP SA: {cipher}, {encap}, IKE authenticated by {auth}", ok,
                       f"IKE {ike.get('auth')} {ike.get('cipher')}/{ike.get('hash')} group "
                       f"{ike.get('group')}; ESP {ipsec.get('cipher')}, integrity "
                       f"{ipsec.get('integrity')}, "
                       f"{ipsec.get('encapsulation')}, SPIs {ipsec.get('spi_in')}/"
                       f"{ipsec.get('spi_out')}")


def _l2tp_is_not_a_vpn(st: Mapping, params: Mapping[str, str]) -> CheckResult:
    """The chapter: L2TP alone is no VPN connection; IPsec gives it confidentiality. Reported
    as such (it passes when the client says so too)."""
    protected = "MPPE only" if params["encryption"] not in ("none",) else "nothing: in clear"
    return CheckResult("L2TP without IPsec: reported as not a VPN connection",
                       st.get("encrypted_transport") is False,
                       f"no IPsec ESP; the PPP payload is protected by {protected} "
                       "(use protocol=l2tp-ipsec for the chapter's VPN connection)")


def _server_agrees(lab: Lab, name: str, st: Mapping) -> CheckResult:
    """The server's own status shows the same call: address, auth and encryption (waited for
    briefly: the two ends open IPCP a round trip apart)."""
    deadline = time.monotonic() + 3.0
    while True:
        sessions = status(lab, "vpnsrv").get("sessions", [])
        mine = [s for s in sessions if s.get("address") == st.get("local_address")]
        same = len(mine) == 1 and all(mine[0].get(k) == st.get(k)
                                      for k in ("auth", "encryption"))
        if same or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    detail = mine[0] if mine else f"no session for {st.get('local_address')}"
    return CheckResult(f"{name}: the server reports the same call", same, f"server: {detail}")


def check_reach(lab: Lab) -> list[CheckResult]:
    out = []
    for name in clients(lab):
        before = lab.pre_tunnel.get(name)  # type: ignore[attr-defined]
        out.append(CheckResult(f"{name}: intranet unreachable without the tunnel",
                               before is False, f"ping {FILESERVER} before connecting: "
                               f"{'answered' if before else 'no answer'}"))
        res = lab.node(name).run(["ping", "-c", "3", "-i", "0.2", "-W", "2", "-n", "-q",
                                  FILESERVER], timeout=15)
        out.append(CheckResult(f"{name}: intranet file server reachable through the tunnel",
                               res.ok, res.stdout.strip().splitlines()[-1] if res.stdout
                               else res.stderr.strip()))
    return out


def check_wire(lab: Lab, params: Mapping[str, str]) -> list[CheckResult]:
    if params["protocol"] == "l2tp":
        return check_l2tp_wire(lab, params)
    if params["protocol"] == "l2tp-ipsec":
        return check_ipsec_wire(lab, params)
    return check_pptp_wire(lab, params)


L2TP_SETUP = {"incoming": {1, 2, 3, 10, 11, 12}, "outgoing": {1, 2, 3, 7, 8, 9}}


def check_l2tp_wire(lab: Lab, params: Mapping[str, str]) -> list[CheckResult]:
    """From the server's Internet-side capture, decoded by tshark: L2TP on UDP 1701 both
    ends, the setup messages of the call mode, no malformed frame, payload in clear or not."""
    import scapy.layers.inet  # noqa: F401 - Ethernet/IP layers for the capture reader

    name = clients(lab)[0]
    lab.node(name).python("testbed.probe", "udp", FILESERVER, "9", "--count", "3")
    path = lab.capture_path("vpnsrv", "isp")
    pcap.wait_for(path, lambda pkts: sum(1 for p in pkts if b"vpnlab-probe" in bytes(p)) >= 3
                  or len(pkts) > 40, timeout=3.0)
    # a NAT may map a client's 1701 to a port tshark gives another dissector (1194 is
    # OpenVPN's): decode every port that talks to 1701 as L2TP
    pairs = pcap.tshark_fields(path, ["udp.srcport", "udp.dstport"], "udp.port == 1701")
    ports = {p.split(",")[0] for r in pairs for p in r[:2]} - {"1701", ""}
    decode = [a for port in sorted(ports) for a in ("-d", f"udp.port=={port},l2tp")]
    rows = pcap.tshark_fields(path, ["udp.srcport", "udp.dstport", "l2tp.version",
                                     "l2tp.type", "l2tp.avp.message_type"], "udp.port == 1701",
                              decode)
    rows = [[field.split(",")[0] for field in r[:4]] + r[4:] for r in rows]  # outer UDP only
    ports_ok = bool(rows) and all(r[0] == "1701" or r[1] == "1701" for r in rows)
    types = {int(t) for r in rows for t in r[4].split(",") if t}
    want = L2TP_SETUP[params["call_mode"]]
    results = [CheckResult("L2TP v2 on UDP 1701, decoded by tshark",
                           ports_ok and all(r[2] == "2" for r in rows),
                           f"{len(rows)} datagrams, port pairs "
                           f"{sorted({(r[0], r[1]) for r in rows})[:3]}"),
               CheckResult(f"L2TP control messages of a {params['call_mode']} call "
                           "(SCCRQ, SCCRP, SCCCN, then ICRQ/ICRP/ICCN or OCRQ/OCRP/OCCN)",
                           want <= types, f"message types seen {sorted(types)}")]
    # tshark's Security-group warnings (0x0a000000: "EAP-MD5 is vulnerable to MITM") judge the
    # method chosen, not the encoding; everything else at warning or above counts
    bad = pcap.tshark_fields(path, ["frame.number"],
                             "l2tp && (_ws.malformed || (_ws.expert.severity >= warning && "
                             "!(_ws.expert.group == 0x0a000000)))", decode)
    results.append(CheckResult("no malformed or warned L2TP frame in tshark", not bad,
                               f"{len(bad)} frames"))
    raw = path.read_bytes()
    clear = b"vpnlab-probe" in raw
    if params["encryption"] == "none":
        results.append(CheckResult("payload visible on the Internet (L2TP without IPsec or "
                                   "MPPE: not a VPN connection)", clear,
                                   "a probe's payload appears in clear"))
    else:
        results.append(CheckResult("no plaintext on the Internet side (MPPE inside L2TP)",
                                   not clear, "probe payload found in clear" if clear else
                                   "not found"))
    return results


def check_ipsec_wire(lab: Lab, params: Mapping[str, str]) -> list[CheckResult]:
    """From the server's Internet-side capture, decoded by tshark: IKE on 500 (and 4500
    behind a NAT) with no malformed message, ESP (raw or in UDP 4500), never UDP 1701 in
    clear, and no plaintext."""
    import scapy.layers.inet  # noqa: F401 - Ethernet/IP layers for the capture reader

    name = clients(lab)[0]
    lab.node(name).python("testbed.probe", "udp", FILESERVER, "9", "--count", "3")
    path = lab.capture_path("vpnsrv", "isp")
    pcap.wait_for(path, lambda pkts: len(pkts) > 30, timeout=2.0)
    ike = pcap.tshark_fields(path, ["isakmp.exchangetype"], "isakmp")
    exchanges = sorted({int(x) for r in ike for x in r[0].split(",") if x})
    results = [CheckResult("IKEv1 Main Mode (2) and Quick Mode (32) decoded by tshark",
                           {2, 32} <= set(exchanges), f"exchange types {exchanges}")]
    esp = pcap.tshark_fields(path, ["esp.spi"], "esp")
    results.append(CheckResult("ESP carries the tunnel" + (" (UDP 4500, NAT-T)" if
                                                           params["nat"] != "none" else ""),
                               len(esp) >= 3, f"{len(esp)} ESP packets"))
    clear = pcap.tshark_fields(path, ["frame.number"], "udp.port == 1701")
    results.append(CheckResult("no L2TP (UDP 1701) in clear on the Internet", not clear,
                               f"{len(clear)} datagrams"))
    bad = pcap.tshark_fields(path, ["frame.number"],
                             "(isakmp || esp) && (_ws.malformed || _ws.expert.severity >= "
                             "warning)")
    results.append(CheckResult("no malformed IKE or ESP frame in tshark", not bad,
                               f"{len(bad)} frames"))
    found = b"vpnlab-probe" in path.read_bytes()
    results.append(CheckResult("no plaintext on the Internet side", not found,
                               "probe payload found in clear" if found else "not found"))
    return results


def check_pptp_wire(lab: Lab, params: Mapping[str, str]) -> list[CheckResult]:
    """From the server's Internet-side capture: PPTP control in scapy, GRE headers, and the
    known payload in clear or not."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.pptp import PPTP

    name = clients(lab)[0]
    lab.node(name).python("testbed.probe", "udp", FILESERVER, "9", "--count", "3")
    path = lab.capture_path("vpnsrv", "isp")

    def probes_captured(pkts: list) -> bool:  # the probes' GRE frames, plain or encrypted
        n = sum(1 for p in pkts if IP in p and p[IP].proto == 47 and len(p[IP]) > 60
                and p[IP].src == lab.address(name if params["nat"] == "none" else "homenat",
                                             "isp"))
        return n >= 3

    packets = pcap.wait_for(path, probes_captured, timeout=3.0)
    control = [PPTP(bytes(p[IP])[p[IP].ihl * 4 + p[TCP].dataofs * 4:p[IP].len])
               for p in packets if TCP in p and 1723 in (p[TCP].sport, p[TCP].dport)
               and p[IP].len > p[IP].ihl * 4 + p[TCP].dataofs * 4]
    cookies_ok = bool(control) and all(c.magic_cookie == 0x1A2B3C4D for c in control)
    types = sorted({int(c.ctrl_msg_type) for c in control})
    results = [CheckResult("PPTP control messages decode in scapy with the magic cookie",
                           cookies_ok and {1, 2, 7, 8} <= set(types),
                           f"{len(control)} messages, types {types}")]
    gre = [bytes(p[IP])[p[IP].ihl * 4:p[IP].len] for p in packets if IP in p and p[IP].proto == 47]
    bad = [g for g in gre if len(g) < 8 or g[1] & 7 != 1 or g[2:4] != b"\x88\x0b" or
           not g[0] & 0x20]
    results.append(CheckResult("GRE is enhanced GRE (version 1, protocol 0x880B, key present)",
                               bool(gre) and not bad, f"{len(gre)} GRE packets, {len(bad)} bad"))
    clear = any(b"vpnlab-probe" in g for g in gre)
    if params["encryption"] == "none":
        results.append(CheckResult("payload visible on the Internet without encryption",
                                   clear, "a probe's payload appears in clear in GRE (as "
                                   "expected with encryption=none)"))
    else:
        results.append(CheckResult("no plaintext on the Internet side", not clear,
                                   "probe payload found in clear" if clear else "not found"))
    return results


def expected_failure(params: Mapping[str, str]) -> bool:
    """The chapter's named failures: PPTP through a NAT without the PPTP helper, L2TP/IPsec
    through a NAT without NAT-T."""
    if params["protocol"] == "pptp":
        return params["nat"] == "no-helper"
    return params["protocol"] == "l2tp-ipsec" and params["nat"] != "none" and \
        params["nat_t"] != "yes"


def checks(lab: Lab, params: Mapping[str, str]) -> list[CheckResult]:
    results = check_tunnels(lab, params)
    if all(r.passed for r in results) and not expected_failure(params):
        results += check_reach(lab) + check_wire(lab, params)
    return results


def stop_clients(lab: Lab) -> None:
    for name in clients(lab):
        daemon = lab.node(name).daemons.get("vpnclient")
        if daemon is not None and daemon.running():
            daemon.stop()
            if daemon.returncode not in (0, None):
                raise TestbedError(f"{name}: client exited {daemon.returncode} on hang-up")


SCENARIO = Scenario(
    name="remote-access",
    description="Remote access VPN over the Internet: client, ISP, VPN server, intranet host",
    build=build,
    start=start,
    checks=checks,
    params={
        "protocol": Param("pptp", ("pptp", "l2tp", "l2tp-ipsec"), "tunnel protocol"),
        "auth": Param("mschapv2", ("pap", "chap", "mschap", "mschapv2", "eap-md5"),
                      "authentication (MPPE needs mschap or mschapv2)"),
        "encryption": Param("strongest", ("none", "optional", "basic", "strong", "strongest"),
                            "none, or MPPE: basic 40-bit, strong 56, strongest 128"),
        "mppe": Param("stateless", ("stateless", "stateful"), "MPPE mode"),
        "nat": Param("none", ("none", "pptp-helper", "no-helper", "helper"),
                     "client behind a home NAT, with or without the kernel's PPTP helper "
                     "(helper: same as pptp-helper)"),
        "clients": Param("1", ("1", "2"), "clients (2 needs nat=helper or no-helper)"),
        "echo": Param("10", (), "LCP echo interval in seconds, both ends (3 misses: down)"),
        "max_ports": Param("128", (), "the server's concurrent calls (ports)"),
        "control_echo": Param("60", (), "PPTP control-connection Echo-Request interval and "
                              "timeout in seconds, both ends"),
        "tunnel_secret": Param("", (), "L2TP tunnel authentication secret, both ends "
                               "(empty: none)"),
        "hide_avps": Param("no", ("no", "yes"), "L2TP hidden AVPs (needs tunnel_secret)"),
        "call_mode": Param("incoming", ("incoming", "outgoing"),
                           "L2TP: the client places its call with ICRQ or OCRQ"),
        "hello": Param("60", (), "L2TP Hello interval in seconds, both ends"),
        "cipher": Param("", ("", "des-cbc", "3des-cbc", "aes-cbc-128", "aes-cbc-256"),
                        "L2TP/IPsec ESP cipher (empty: from encryption, basic/strong DES, "
                        "strongest 3DES)"),
        "nat_t": Param("yes", ("yes", "no"), "L2TP/IPsec NAT traversal, both ends"),
        "ipsec_auth": Param("psk", ("psk", "cert"), "L2TP/IPsec IKE authentication: "
                            "pre-shared key, or certificates from the lab's own CA"),
        "isp_loss": Param("0", (), "percent lost per direction on the client's ISP link"),
        "isp_reorder": Param("0", (), "percent reordered on it (netem's reorder, 20 ms delay)"),
        "isp_seed": Param("", (), "seed of that link's loss and reordering (empty: fresh)"),
    },
)
