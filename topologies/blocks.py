"""Building blocks of the chapter's scenarios, so each scenario is a short list of parts.

Addresses follow the chapter's figures: private ranges for home and corporate LANs, and the
documentation ranges (RFC 5737) for "the Internet"; all of them exist only inside a lab's
namespaces. The ISP core is the node `isp`; each block attaches to it on its own subnet.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from testbed.model import Direction, Filter, LinkSpec, NodeKind, NodeSpec, Route
from testbed.shaping import LinkShape


@dataclass
class Builder:
    """Collects nodes and links; blocks add to it."""

    nodes: list[NodeSpec] = field(default_factory=list)
    links: list[LinkSpec] = field(default_factory=list)
    isp_routes: list[Route] = field(default_factory=list)

    def add(self, node: NodeSpec) -> None:
        self.nodes.append(node)

    def link(self, a: str, b: str, a_addr: str | None, b_addr: str | None,
             shape: LinkShape | None = None) -> None:
        self.links.append(LinkSpec(a, b, a_addr, b_addr, shape))

    def isp_core(self) -> None:
        """Added last so its routes toward every attached block are known."""
        self.nodes.append(NodeSpec("isp", NodeKind.ROUTER, routes=tuple(self.isp_routes),
                                   description="ISP core router (the Internet)"))


def internet_host(b: Builder, name: str = "www", net: str = "192.0.2") -> None:
    """A host on the public Internet, in its own subnet off the ISP core."""
    b.add(NodeSpec(name, routes=(Route("default", f"{net}.1"),),
                   description="a host on the Internet"))
    b.link(name, "isp", f"{net}.10/24", f"{net}.1/24")


def home_behind_nat(b: Builder, client: str = "client", nat: str = "homenat",
                    lan: str = "192.168.1", wan: str = "198.51.100", pptp_helper: bool = True,
                    shape: LinkShape | None = None, extra_clients: tuple[str, ...] = ()) -> None:
    """Home LAN with one or more clients behind a NAT router whose outside faces the ISP."""
    b.add(NodeSpec(nat, NodeKind.NAT_ROUTER, routes=(Route("default", f"{wan}.1"),),
                   nat_outside="isp", pptp_helper=pptp_helper,
                   description="home NAT router (MASQUERADE" +
                   (", PPTP helper)" if pptp_helper else ", no PPTP helper)")))
    clients = (client, *extra_clients)
    if len(clients) == 1:
        b.add(NodeSpec(client, routes=(Route("default", f"{lan}.1"),),
                       description="client on the home LAN"))
        b.link(client, nat, f"{lan}.10/24", f"{lan}.1/24")
    else:
        switch = f"{nat}sw"
        b.add(NodeSpec(switch, NodeKind.SWITCH, description="home LAN switch"))
        b.link(nat, switch, f"{lan}.1/24", None)
        for i, name in enumerate(clients):
            b.add(NodeSpec(name, routes=(Route("default", f"{lan}.1"),),
                           description="client on the home LAN"))
            b.link(name, switch, f"{lan}.{10 + i}/24", None)
    b.link(nat, "isp", f"{wan}.2/24", f"{wan}.1/24", shape)


def direct_client(b: Builder, name: str = "client", wan: str = "198.51.100",
                  shape: LinkShape | None = None) -> None:
    """A client with a public address straight on the ISP (a dial-up or DSL subscriber)."""
    b.add(NodeSpec(name, routes=(Route("default", f"{wan}.1"),),
                   description="client connected to the ISP"))
    b.link(name, "isp", f"{wan}.2/24", f"{wan}.1/24", shape)


def corporate_edge(b: Builder, edge: str = "edge", server: str = "server",
                   ruleset: str = "allow-all", transit: str = "203.0.113",
                   lan: str = "203.0.113") -> None:
    """A firewall between the ISP and a corporate perimeter network holding `server`.

    The firewall's filters sit on its Internet interface, both directions, as the chapter
    places the PPTP and L2TP/IPsec filters.
    """
    filters = (Filter("isp", Direction.IN, ruleset), Filter("isp", Direction.OUT, ruleset))
    b.add(NodeSpec(edge, NodeKind.FIREWALL, routes=(Route("default", f"{transit}.1"),),
                   filters=filters, description=f"corporate edge firewall ({ruleset})"))
    b.link(edge, "isp", f"{transit}.2/25", f"{transit}.1/25")
    b.add(NodeSpec(server, routes=(Route("default", f"{lan}.129"),),
                   description="server on the corporate perimeter network"))
    b.link(server, edge, f"{lan}.130/25", f"{lan}.129/25")
    b.isp_routes.append(Route(f"{lan}.128/25", f"{transit}.2"))


def vpn_site(b: Builder, server: str = "vpnsrv", intranet_host: str = "fileserver",
             public: str = "203.0.113", intranet: str = "10.10.0") -> None:
    """A VPN server with an Internet interface and an intranet interface, and an intranet host.

    The intranet host routes the VPN clients' pool back through the server (the pool is a
    separate subnet, 10.10.100.0/24, routed to the server).
    """
    b.add(NodeSpec(server, NodeKind.ROUTER, routes=(Route("default", f"{public}.1"),),
                   description="VPN server (Internet + intranet interfaces)"))
    b.link(server, "isp", f"{public}.2/24", f"{public}.1/24")
    b.add(NodeSpec(intranet_host, routes=(Route("default", f"{intranet}.1"),),
                   description="intranet file server"))
    b.link(intranet_host, server, f"{intranet}.20/24", f"{intranet}.1/24")


def dialup_client(b: Builder, name: str = "dialup", wan: str = "198.51.100",
                  shape_name: str = "modem-56k") -> None:
    """A client reaching the ISP over a dial-up line (the chapter's branch-office and remote
    users on modems): a direct client whose link has the modem's rate and delay."""
    from testbed.shaping import preset

    direct_client(b, name, wan, preset(shape_name))


def intranet_with_sensitive_segment(b: Builder, router: str = "corprtr",
                                    host: str = "staff", gate: str = "hrvpn",
                                    hr_host: str = "hrsrv", intranet: str = "10.20.0",
                                    hr: str = "10.30.0") -> None:
    """An intranet whose sensitive segment (the chapter's HR network) sits behind a VPN server
    that is itself on the intranet: only VPN clients reach `hr_host`."""
    b.add(NodeSpec(router, NodeKind.ROUTER, description="intranet router"))
    b.add(NodeSpec(host, routes=(Route("default", f"{intranet}.1"),),
                   description="intranet user"))
    b.link(host, router, f"{intranet}.10/24", f"{intranet}.1/24")
    b.add(NodeSpec(gate, NodeKind.ROUTER, routes=(Route("default", f"{intranet}.1"),),
                   description="VPN server guarding the sensitive segment"))
    b.link(gate, router, f"{intranet}.2/24", f"{intranet}.3/24")
    b.add(NodeSpec(hr_host, routes=(Route("default", f"{hr}.1"),),
                   description="server on the sensitive segment"))
    b.link(hr_host, gate, f"{hr}.10/24", f"{hr}.1/24")


def second_company(b: Builder, router: str = "partner", host: str = "partnerpc",
                   public: str = "192.0.2.128", lan: str = "172.16.50") -> None:
    """Another organization on the Internet (extranet and pass-through scenarios): its own
    edge router and LAN, reachable only through the ISP."""
    b.add(NodeSpec(router, NodeKind.NAT_ROUTER, routes=(Route("default", "192.0.2.129"),),
                   nat_outside="isp", description="second company's edge router"))
    b.link(router, "isp", "192.0.2.130/25", "192.0.2.129/25")
    b.add(NodeSpec(host, routes=(Route("default", f"{lan}.1"),),
                   description="second company's host"))
    b.link(host, router, f"{lan}.10/24", f"{lan}.1/24")
