"""The `internet` topology on the wire: reachability, NAT rewrites, packet-filter rule sets."""

from __future__ import annotations

import pytest

from conformance.plugin import start_scenario
from testbed.model import RULESETS
from topologies import internet

pytestmark = pytest.mark.netns


@pytest.fixture(scope="module")
def open_lab():
    with start_scenario("internet") as lab:
        yield lab


def test_reachability_matrix_before_any_tunnel(open_lab):
    results = internet.check_reachability(open_lab, open_lab.params)
    assert all(r.passed for r in results), [r for r in results if not r.passed]


def test_nat_rewrites_source_address_keeps_destination(open_lab):
    result = internet.check_nat(open_lab)
    assert result.passed, result.detail
    assert "-> outside 198.51.100.2:" in result.detail


def test_nat_rewrites_source_port_when_the_outside_port_is_taken(open_lab):
    result = internet.check_nat_port(open_lab)
    assert result.passed, result.detail


@pytest.mark.parametrize("ruleset", [r for r in RULESETS if r != "allow-all"])
def test_firewall_ruleset_passes_exactly_what_it_names(ruleset):
    with start_scenario("internet", firewall=ruleset) as lab:
        results = internet.check_firewall(lab, lab.params)
    failed = [f"{r.name}: {r.detail}" for r in results if not r.passed]
    assert not failed, failed
    # the rule set is not vacuous: something was dropped, and what it names arrived
    assert any("dropped" in r.detail for r in results)
    if RULESETS[ruleset]:
        assert any("arrived" in r.detail for r in results)


def test_firewall_blocks_ping_unless_allow_all():
    with start_scenario("internet", firewall="pptp") as lab:
        assert not lab.node("www").run(["ping", "-c1", "-W1", lab.address("server")]).ok
        assert lab.node("client").run(["ping", "-c1", "-W1", lab.address("www")]).ok


@pytest.mark.scenario("internet", firewall="l2tp-ipsec")
def test_tshark_sees_ike_through_the_edge_and_scapy_agrees(scenario_lab, captures):
    """The plugin's marker, lab and capture helpers; tshark and scapy read the same pcap."""
    lab = scenario_lab
    assert lab.params["firewall"] == "l2tp-ipsec"
    lab.node("www").python("testbed.probe", "udp", lab.address("server"), "500", check=True)
    from scapy.layers.inet import UDP

    pkts = captures.wait_for(lab, "server", "edge",
                             lambda ps: any(UDP in p and p[UDP].dport == 500 for p in ps))
    assert any(UDP in p and p[UDP].dport == 500 for p in pkts)
    rows = captures.tshark_fields(lab, "server", "edge", ["ip.src", "udp.dstport"], "udp")
    assert [lab.address("www"), "500"] in rows


def test_lab_factory_labs_end_with_the_test(lab_factory):
    lab = lab_factory("internet", firewall="deny-all")
    assert not lab.node("www").run(["ping", "-c1", "-W1", lab.address("server")]).ok
