"""The lab model: frozen, validated specs of nodes, links and filters.

A spec is data, checked up front (style.md 13): a wrong name, address or rule set raises
`SpecError` naming the node or link, the field and what was expected, before anything exists.
Interface names are derived, not chosen: a node's links, in the order the spec lists them, become
eth0, eth1, ... inside its namespace, so every name fits IFNAMSIZ and two labs never collide.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING

from testbed.errors import SpecError
from testbed.shaping import LinkShape

if TYPE_CHECKING:
    from testbed.refpeer import PeerSpec

_NAME = re.compile(r"^[a-z][a-z0-9]{0,9}$")


class NodeKind(Enum):
    HOST = "host"
    ROUTER = "router"
    NAT_ROUTER = "nat-router"
    FIREWALL = "firewall"
    SWITCH = "switch"
    SERVICE = "service"
    REFPEER = "refpeer"  # a real third-party peer in user-mode Linux (testbed.refpeer)

    @property
    def forwards(self) -> bool:
        return self in (NodeKind.ROUTER, NodeKind.NAT_ROUTER, NodeKind.FIREWALL)


class Direction(Enum):
    IN = "in"
    OUT = "out"


# Packet-filter rule sets as a router's interface filters name them (the chapter's PPTP and
# L2TP/IPsec filters). Each entry: (protocol, port) where port None means the whole protocol.
# "in" filters match the destination port of arriving packets, "out" the source port of leaving
# packets, so one rule set describes a VPN server's Internet interface both ways.
RULESETS: dict[str, tuple[tuple[str, int | None], ...] | None] = {
    "allow-all": None,
    "pptp": (("tcp", 1723), ("gre", None)),
    "l2tp-ipsec": (("udp", 500), ("udp", 4500), ("udp", 1701), ("esp", None)),
    "deny-all": (),
}


@dataclass(frozen=True, slots=True)
class Filter:
    """Rule set `ruleset` applied to packets crossing the interface toward `peer` in `direction`."""

    peer: str
    direction: Direction
    ruleset: str

    def __post_init__(self) -> None:
        if self.ruleset not in RULESETS:
            raise SpecError(
                f"filter toward {self.peer!r}: ruleset {self.ruleset!r}: expected one of "
                f"{', '.join(RULESETS)}"
            )


@dataclass(frozen=True, slots=True)
class Route:
    destination: str  # "default" or a CIDR prefix
    via: str

    def __post_init__(self) -> None:
        if self.destination != "default":
            _network(self.destination, "route destination")
        _address(self.via, "route gateway")


@dataclass(frozen=True, slots=True)
class NodeSpec:
    name: str
    kind: NodeKind = NodeKind.HOST
    routes: tuple[Route, ...] = ()
    nat_outside: str | None = None  # the neighbour whose link is the NAT's outside interface
    pptp_helper: bool = True  # assign the kernel's PPTP conntrack/NAT helper (nat-router)
    filters: tuple[Filter, ...] = ()
    description: str = ""
    peer: PeerSpec | None = None  # what a refpeer node runs

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise SpecError(
                f"node {self.name!r}: name: expected 1-10 lower-case letters/digits starting "
                "with a letter (it becomes part of interface names)"
            )
        if self.kind is NodeKind.NAT_ROUTER and not self.nat_outside:
            raise SpecError(f"node {self.name!r}: nat_outside: a nat-router needs its outside peer")
        if self.filters and self.kind is not NodeKind.FIREWALL:
            raise SpecError(f"node {self.name!r}: filters: only a firewall node has filters")
        if (self.kind is NodeKind.REFPEER) != (self.peer is not None):
            raise SpecError(f"node {self.name!r}: peer: a refpeer node needs a PeerSpec, and "
                            "only a refpeer node has one")


@dataclass(frozen=True, slots=True)
class LinkSpec:
    a: str
    b: str
    a_address: str | None = None  # CIDR on a's end, e.g. "192.168.1.10/24"
    b_address: str | None = None
    shape: LinkShape | None = None

    def __post_init__(self) -> None:
        if self.a == self.b:
            raise SpecError(f"link {self.a}-{self.b}: a link joins two different nodes")
        for end, addr in (("a_address", self.a_address), ("b_address", self.b_address)):
            if addr is not None:
                _interface(addr, f"link {self.a}-{self.b} {end}")

    @property
    def label(self) -> str:
        return f"{self.a}-{self.b}"


@dataclass(frozen=True)
class LabSpec:
    name: str
    nodes: tuple[NodeSpec, ...]
    links: tuple[LinkSpec, ...]
    description: str = ""
    _index: dict[str, NodeSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index: dict[str, NodeSpec] = {}
        for node in self.nodes:
            if node.name in index:
                raise SpecError(f"lab {self.name!r}: node {node.name!r} is defined twice")
            index[node.name] = node
        object.__setattr__(self, "_index", index)
        for link in self.links:
            for end in (link.a, link.b):
                if end not in index:
                    raise SpecError(f"lab {self.name!r}: link {link.label}: no node named {end!r}")
            for end, addr in ((link.a, link.a_address), (link.b, link.b_address)):
                if addr is not None and index[end].kind is NodeKind.SWITCH:
                    raise SpecError(f"link {link.label}: a switch end ({end}) has no address")
        for node in self.nodes:
            if node.kind is NodeKind.REFPEER and len(self.links_of(node.name)) != 1:
                raise SpecError(f"node {node.name!r}: a refpeer node has exactly one link (its "
                                f"UML's eth0), got {len(self.links_of(node.name))}")
        for node in self.nodes:
            peers = self.neighbours(node.name)
            for peer in [node.nat_outside] + [f.peer for f in node.filters]:
                if peer is not None and peer not in peers:
                    raise SpecError(
                        f"node {node.name!r}: {peer!r} is not a neighbour (neighbours: "
                        f"{', '.join(peers) or 'none'})"
                    )

    def node(self, name: str) -> NodeSpec:
        try:
            return self._index[name]
        except KeyError:
            raise SpecError(f"lab {self.name!r} has no node {name!r}") from None

    def links_of(self, name: str) -> list[LinkSpec]:
        return [link for link in self.links if name in (link.a, link.b)]

    def neighbours(self, name: str) -> list[str]:
        return [link.b if link.a == name else link.a for link in self.links_of(name)]

    def interface(self, name: str, peer: str) -> str:
        """The interface of `name` on its link toward `peer` (eth0, eth1, ... in link order)."""
        for i, other in enumerate(self.neighbours(name)):
            if other == peer:
                return f"eth{i}"
        raise SpecError(f"lab {self.name!r}: {name!r} has no link toward {peer!r}")

    def address(self, name: str, peer: str | None = None) -> str:
        """The address (without prefix length) of `name` on its link toward `peer`, or its first."""
        for link in self.links_of(name):
            other = link.b if link.a == name else link.a
            if peer is not None and other != peer:
                continue
            cidr = link.a_address if link.a == name else link.b_address
            if cidr:
                return cidr.split("/")[0]
        raise SpecError(f"lab {self.name!r}: {name!r} has no address" +
                        (f" toward {peer!r}" if peer else ""))


def _address(text: str, what: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(text)
    except ValueError:
        raise SpecError(f"{what}: {text!r}: expected an IPv4 address like 10.0.0.1") from None


def _network(text: str, what: str) -> ipaddress.IPv4Network:
    try:
        return ipaddress.IPv4Network(text, strict=True)
    except ValueError:
        raise SpecError(f"{what}: {text!r}: expected an IPv4 prefix like 10.0.0.0/24") from None


def _interface(text: str, what: str) -> ipaddress.IPv4Interface:
    if "/" not in text:
        raise SpecError(f"{what}: {text!r}: expected address/prefix-length like 10.0.0.1/24")
    try:
        return ipaddress.IPv4Interface(text)
    except ValueError:
        raise SpecError(
            f"{what}: {text!r}: expected address/prefix-length like 10.0.0.1/24"
        ) from None
