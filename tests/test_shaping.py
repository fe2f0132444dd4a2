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
