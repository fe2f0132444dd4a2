"""`internet`: a client at home behind NAT, the ISP, a corporate edge firewall and a server.

The ground for every VPN scenario: it shows who reaches whom before any tunnel, that the home
NAT rewrites source address and port, and that each of the chapter's packet-filter rule sets
passes exactly what it names.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Mapping

from testbed import pcap
from testbed.lab import Lab
from testbed.model import RULESETS, LabSpec
from testbed.scenario import CheckResult, Param, Scenario
from testbed.shaping import preset
from topologies.blocks import Builder, corporate_edge, home_behind_nat, internet_host

PROBES = (("tcp", 1723), ("tcp", 80), ("udp", 500), ("udp", 4500), ("udp", 1701), ("udp", 53),
          ("gre", None), ("esp", None))
NAT_PROBE_PORT = 40001
NAT_CLASH_PORT = 40002  # taken on the NAT's outside address first, so the client's is rewritten


def build(params: Mapping[str, str]) -> LabSpec:
    b = Builder()
    shape = None if params["link"] == "none" else preset(params["link"])
    extra = ("client2",) if params["clients"] == "2" else ()
    home_behind_nat(b, pptp_helper=params["pptp_helper"] == "on", shape=shape,
                    extra_clients=extra)
    internet_host(b)
    corporate_edge(b, ruleset=params["firewall"])
    b.isp_core()
    return LabSpec("internet", tuple(b.nodes), tuple(b.links),
                   "client behind home NAT, ISP core, corporate edge firewall, server")


def expected_reach(params: Mapping[str, str]) -> dict[tuple[str, str], bool]:
    """Ping reachability: private home addresses are not routed on the Internet; ICMP to the
    server passes the firewall only with allow-all."""
    open_fw = params["firewall"] == "allow-all"
    return {
        ("client", "www"): True,
        ("client", "server"): open_fw,
        ("www", "server"): open_fw,
        ("server", "www"): open_fw,
        ("www", "client"): False,
        ("server", "client"): False,
    }


def passes(ruleset: str, proto: str, port: int | None) -> bool:
    rules = RULESETS[ruleset]
    if rules is None:
        return True
    return any(p == proto and (pp is None or pp == port) for p, pp in rules)


def check_reachability(lab: Lab, params: Mapping[str, str]) -> list[CheckResult]:
    expected = expected_reach(params)

    def ping(pair: tuple[str, str]) -> bool:
        src, dst = pair
        return lab.node(src).run(["ping", "-c", "2", "-i", "0.2", "-W", "1", "-n", "-q",
                                  lab.address(dst)], timeout=10).ok

    with concurrent.futures.ThreadPoolExecutor(len(expected)) as pool:
        seen = dict(zip(expected, pool.map(ping, expected), strict=True))
    return [CheckResult(f"ping {src} -> {dst}", seen[(src, dst)] == want,
                        f"expected {'reachable' if want else 'unreachable'}, got "
                        f"{'reachable' if seen[(src, dst)] else 'unreachable'}")
            for (src, dst), want in expected.items()]


def check_nat(lab: Lab) -> CheckResult:
    """The same datagram seen on both sides of the home NAT: source rewritten to the outside
    address, destination unchanged."""
    from scapy.layers.inet import IP, UDP

    client, www = lab.address("client"), lab.address("www")
    outside = lab.address("homenat", "isp")
    lab.node("client").python("testbed.probe", "udp", www, "9", "--sport", str(NAT_PROBE_PORT),
                              check=True)

    def marked(pkts: list) -> list:
        return [p for p in pkts if UDP in p and p[IP].dst == www and p[UDP].dport == 9]

    lan_side = "client" if "client2" not in lab.nodes else "homenatsw"
    inside = marked(pcap.wait_for(lab.capture_path("homenat", lan_side),
                                  lambda p: bool(marked(p))))
    out = marked(pcap.wait_for(lab.capture_path("homenat", "isp"), lambda p: bool(marked(p))))
    if not inside or not out:
        return CheckResult("NAT rewrites source", False,
                           f"probe seen inside: {len(inside)}, outside: {len(out)}")
    i, o = inside[0], out[0]
    ok = (i[IP].src == client and i[UDP].sport == NAT_PROBE_PORT and o[IP].src == outside)
    return CheckResult("NAT rewrites source", ok,
                       f"inside {i[IP].src}:{i[UDP].sport} -> outside {o[IP].src}:{o[UDP].sport}")


def check_nat_port(lab: Lab) -> CheckResult:
    """Port rewriting, shown by forcing it: the NAT itself first sends from its outside
    address and port P to www:7, then the client sends from P to www:7; the same outside tuple
    is taken, so the client's datagram must leave with another source port."""
    from scapy.layers.inet import IP, UDP

    www, outside = lab.address("www"), lab.address("homenat", "isp")
    port = str(NAT_CLASH_PORT)
    lab.node("homenat").python("testbed.probe", "udp", www, "7", "--sport", port, check=True)
    lab.node("client").python("testbed.probe", "udp", www, "7", "--sport", port, check=True)

    def to_echo(pkts: list) -> list:
        return [p for p in pkts if UDP in p and p[IP].dst == www and p[UDP].dport == 7]

    lan_side = "client" if "client2" not in lab.nodes else "homenatsw"
    inside = to_echo(pcap.wait_for(lab.capture_path("homenat", lan_side),
                                   lambda p: bool(to_echo(p))))
    out = to_echo(pcap.wait_for(lab.capture_path("homenat", "isp"),
                                lambda p: len(to_echo(p)) >= 2))
    name = "NAT rewrites source port on a clash"
    if not inside or len(out) < 2:
        return CheckResult(name, False, f"probe seen inside: {len(inside)}, outside: {len(out)}")
    i, o = inside[0], out[1]
    ok = (i[UDP].sport == NAT_CLASH_PORT and o[IP].src == outside
          and o[UDP].sport != NAT_CLASH_PORT and out[0][UDP].sport == NAT_CLASH_PORT)
    return CheckResult(name, ok, f"inside {i[IP].src}:{i[UDP].sport} -> outside "
                       f"{o[IP].src}:{o[UDP].sport} (port {port} already used by the NAT)")


def check_firewall(lab: Lab, params: Mapping[str, str]) -> list[CheckResult]:
    """Probe every listed protocol/port and some unlisted ones from the Internet to the server;
    count what arrives in the server's capture."""
    from scapy.layers.inet import IP, TCP, UDP

    ruleset, server = params["firewall"], lab.address("server")
    for proto, port in PROBES:
        args = [proto, server] + ([str(port)] if port else [])
        lab.node("www").python("testbed.probe", *args, check=True)

    def arrived(pkts: list, proto: str, port: int | None) -> bool:
        for p in pkts:
            if IP not in p or p[IP].dst != server:
                continue
            if proto == "tcp" and TCP in p and p[TCP].dport == port:
                return True
            if proto == "udp" and UDP in p and p[UDP].dport == port:
                return True
            if proto == "gre" and p[IP].proto == 47:
                return True
            if proto == "esp" and p[IP].proto == 50:
                return True
        return False

    want = {(proto, port): passes(ruleset, proto, port) for proto, port in PROBES}
    must_arrive = [k for k, v in want.items() if v]
    pkts = pcap.wait_for(lab.capture_path("server", "edge"),
                         lambda ps: all(arrived(ps, *k) for k in must_arrive), timeout=2.0)
    results = []
    for (proto, port), should in want.items():
        got = arrived(pkts, proto, port)
        label = f"{proto}/{port}" if port else proto
        results.append(CheckResult(f"firewall {ruleset}: {label}", got == should,
                                   f"expected {'pass' if should else 'drop'}, "
                                   f"{'arrived' if got else 'dropped'}"))
    return results


def checks(lab: Lab, params: Mapping[str, str]) -> list[CheckResult]:
    return [*check_reachability(lab, params), check_nat(lab), check_nat_port(lab),
            *check_firewall(lab, params)]


SCENARIO = Scenario(
    name="internet",
    description="Client at home behind NAT, ISP core, corporate edge firewall, server: "
                "reachability, NAT and packet-filter report",
    build=build,
    checks=checks,
    params={
        "firewall": Param("allow-all", tuple(RULESETS), "rule set on the edge's Internet side"),
        "pptp_helper": Param("on", ("on", "off"), "PPTP conntrack/NAT helper on the home NAT"),
        "clients": Param("1", ("1", "2"), "clients on the home LAN (2: behind a switch)"),
        "link": Param("none", ("none", "ethernet", "t1", "isdn-128k", "modem-56k", "internet"),
                      "shape of the home NAT's link to the ISP"),
    },
)
