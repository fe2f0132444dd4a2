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
