"""The lab model and scenario parameters: validation happens before anything exists."""

from __future__ import annotations

import pytest

from testbed.errors import SpecError
from testbed.lab import filter_commands
from testbed.model import Direction, Filter, LabSpec, LinkSpec, NodeKind, NodeSpec, Route
from testbed.scenario import parse_param_args
from topologies import SCENARIOS


def _two_nodes(**link_kw) -> LabSpec:
    return LabSpec("t", (NodeSpec("a"), NodeSpec("b")),
                   (LinkSpec("a", "b", "10.0.0.1/24", "10.0.0.2/24", **link_kw),))


def test_interfaces_follow_link_order_and_fit_ifnamsiz():
    spec = SCENARIOS["internet"].build(SCENARIOS["internet"].resolve({}))
    for node in spec.nodes:
        for i, peer in enumerate(spec.neighbours(node.name)):
            assert spec.interface(node.name, peer) == f"eth{i}"
    assert spec.address("homenat", "isp") == "198.51.100.2"


@pytest.mark.parametrize("bad, message", [
    (lambda: NodeSpec("Client"), "name"),
    (lambda: NodeSpec("averyveryverylongname"), "name"),
    (lambda: NodeSpec("n", NodeKind.NAT_ROUTER), "nat_outside"),
    (lambda: NodeSpec("n", filters=(Filter("x", Direction.IN, "pptp"),)), "only a firewall"),
    (lambda: Filter("x", Direction.IN, "pptpp"), "expected one of"),
    (lambda: Route("10.0.0.1/24", "10.0.0.1"), "prefix"),
    (lambda: Route("default", "gateway"), "IPv4 address"),
    (lambda: LinkSpec("a", "b", "10.0.0.1"), "prefix-length"),
    (lambda: LinkSpec("a", "a"), "two different nodes"),
    (lambda: LabSpec("t", (NodeSpec("a"), NodeSpec("a")), ()), "defined twice"),
    (lambda: LabSpec("t", (NodeSpec("a"),), (LinkSpec("a", "b"),)), "no node named 'b'"),
])
def test_bad_specs_say_what_and_where(bad, message):
    with pytest.raises(SpecError, match=message):
        bad()


def test_nat_outside_must_be_a_neighbour():
    with pytest.raises(SpecError, match="not a neighbour"):
        LabSpec("t", (NodeSpec("a", NodeKind.NAT_ROUTER, nat_outside="c"), NodeSpec("b")),
                (LinkSpec("a", "b"),))


def test_scenario_params_are_checked():
    s = SCENARIOS["internet"]
    assert s.resolve({})["firewall"] == "allow-all"
    with pytest.raises(SpecError, match="unknown parameter 'colour'"):
        s.resolve({"colour": "red"})
    with pytest.raises(SpecError, match="expected one of"):
        s.resolve({"firewall": "open"})
    assert parse_param_args(["a=1", "b = x"]) == {"a": "1", "b": "x"}
    with pytest.raises(SpecError, match="key=value"):
        parse_param_args(["novalue"])


def test_filter_commands_accept_listed_and_drop_the_rest():
    argv = filter_commands("eth0", Direction.IN, "pptp")
    text = [" ".join(a) for a in argv]
    assert "iptables -A vf-eth0-in -p tcp --dport 1723 -j ACCEPT" in text
    assert "iptables -A vf-eth0-in -p gre -j ACCEPT" in text
    assert text.index("iptables -A vf-eth0-in -j DROP") > text.index(
        "iptables -A vf-eth0-in -p gre -j ACCEPT")
    out = [" ".join(a) for a in filter_commands("eth1", Direction.OUT, "l2tp-ipsec")]
    assert "iptables -A vf-eth1-out -p udp --sport 4500 -j ACCEPT" in out
    assert "iptables -A OUTPUT -o eth1 -j vf-eth1-out" in out
    assert filter_commands("eth0", Direction.IN, "allow-all") == []
    deny = [" ".join(a) for a in filter_commands("eth0", Direction.IN, "deny-all")]
    assert "iptables -A vf-eth0-in -j DROP" in deny and not any("ACCEPT" in d for d in deny)


def test_building_blocks_compose_into_a_valid_lab():
    from testbed.model import LabSpec
    from topologies import blocks

    b = blocks.Builder()
    blocks.dialup_client(b)
    blocks.internet_host(b)
    blocks.vpn_site(b)
    blocks.second_company(b)
    b.isp_core()
    spec = LabSpec("all", tuple(b.nodes), tuple(b.links))
    assert spec.node("dialup") and spec.links_of("dialup")[0].shape.rate_b_to_a == 53_000
    c = blocks.Builder()
    blocks.intranet_with_sensitive_segment(c)
    inner = LabSpec("hr", tuple(c.nodes), tuple(c.links))
    assert inner.address("hrsrv") == "10.30.0.10"
