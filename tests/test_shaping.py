"""Link shapes: validation, presets and the commands they turn into."""

from __future__ import annotations

import pytest

from testbed import shaping
from testbed.errors import SpecError
from testbed.shaping import LinkShape


def test_presets_match_the_issue():
    assert shaping.preset("modem-56k").rate_bps == 33_600  # up, from the subscriber (A)
    assert shaping.preset("modem-56k").rate_b_to_a == 53_000  # down
    assert shaping.preset("modem-56k").delay_ms == 100
    internet = shaping.preset("internet")
    assert (internet.rate_bps, internet.delay_ms, internet.loss_pct) == (10_000_000, 20, 0.5)
    assert shaping.preset("isdn-128k").rate_bps == 128_000
    with pytest.raises(SpecError, match="expected one of ethernet"):
        shaping.preset("dsl")


@pytest.mark.parametrize("kwargs, field", [
    ({"rate_bps": 10}, "rate_bps"),
    ({"rate_bps": 1.5e6}, "rate_bps"),
    ({"delay_ms": -1}, "delay_ms"),
    ({"delay_ms": 5, "jitter_ms": 10}, "jitter_ms"),
    ({"loss_pct": 101}, "loss_pct"),
])
def test_bad_values_raise_naming_the_field(kwargs, field):
    with pytest.raises(SpecError, match=field):
        LinkShape(**kwargs)


def test_tbf_has_a_byte_limit_and_burst():
    argv = shaping.tbf_argv("la", 56_000)
    assert argv[:8] == ["tc", "qdisc", "replace", "dev", "la", "root", "tbf", "rate"]
    assert argv[8] == "56000bit" and "limit" in argv and "burst" in argv


def test_every_shaped_link_gets_a_link_namespace():
    assert not shaping.needs_link_namespace(None)
    assert not shaping.needs_link_namespace(LinkShape())
    assert shaping.needs_link_namespace(LinkShape(rate_bps=64_000))
    assert shaping.needs_link_namespace(LinkShape(delay_ms=10))


def test_without_netem_the_wire_does_everything():
    shape = shaping.preset("internet")
    assert shaping.tc_commands(shape, "la", "lb", netem=False) == []
    argv = shaping.wire_argv(shape, "la", "lb", "/tmp/x.ctl", netem=False)
    assert argv is not None and argv[1:3] == ["-m", "testbed.wire"]
    assert argv[argv.index("--delay-ms") + 1] == "20"
    assert argv[argv.index("--rate-ab") + 1] == "10000000"
    assert shaping.wire_argv(shape, "la", "lb", "/tmp/x.ctl", netem=True) is None


def test_with_netem_each_egress_gets_its_direction():
    shape = shaping.preset("modem-56k")
    toward_b, toward_a = shaping.tc_commands(shape, "la", "lb", netem=True)
    assert toward_b[4] == "lb" and "33600bit" in toward_b and "100ms" in toward_b
    assert toward_a[4] == "la" and "53000bit" in toward_a


@pytest.mark.parametrize("value", [True, float("nan"), float("inf"), "10"])
def test_non_numbers_are_refused(value):
    with pytest.raises(SpecError, match="delay_ms"):
        LinkShape(delay_ms=value)


@pytest.mark.parametrize("shape, want", [
    (None, False),
    (LinkShape(), False),
    (LinkShape(rate_bps=64_000), True),
    (LinkShape(reverse_rate_bps=64_000), True),
    (LinkShape(delay_ms=1), True),
    (LinkShape(loss_pct=0.1), True),
])
@pytest.mark.parametrize("netem", [True, False])
def test_link_namespace_truth_table(shape, want, netem):
    assert shaping.needs_link_namespace(shape, netem) is want


def test_tc_commands_exact_argv():
    assert shaping.tc_commands(shaping.preset("isdn-128k"), "la", "lb", netem=True) == [
        ["tc", "qdisc", "replace", "dev", "lb", "root", "netem", "delay", "10ms",
         "rate", "128000bit"],
        ["tc", "qdisc", "replace", "dev", "la", "root", "netem", "delay", "10ms",
         "rate", "128000bit"],
    ]
    rate_only = LinkShape(rate_bps=56_000, reverse_rate_bps=33_600)
    assert shaping.tc_commands(rate_only, "la", "lb", netem=True) == [
        ["tc", "qdisc", "replace", "dev", "lb", "root", "tbf", "rate", "56000bit",
         "burst", "1600", "limit", "4800"],
        ["tc", "qdisc", "replace", "dev", "la", "root", "tbf", "rate", "33600bit",
         "burst", "1600", "limit", "4800"],
    ]
    assert shaping.tc_commands(LinkShape(), "la", "lb", netem=True) == []


def test_shaping_method_text_for_doctor():
    assert str(shaping.ShapingMethod(netem=True)) == "netem"
    assert str(shaping.ShapingMethod(False, "Error: Specified qdisc kind is unknown.")) == (
        "userspace wire (netem missing: Error: Specified qdisc kind is unknown.)")
