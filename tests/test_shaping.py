"""Link shapes: validation, presets and the commands they turn into."""

from __future__ import annotations

import random

import pytest

from testbed import shaping, wire
from testbed.errors import SpecError
from testbed.shaping import LinkShape
from testbed.wire import Direction as WireDirection


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


# -- reordering: netem's `reorder PERCENT gap N`, on both paths ----------------------------------

@pytest.mark.parametrize("kwargs, field, expected", [
    ({"delay_ms": 10, "reorder_pct": 101}, "reorder_pct", "0..100"),
    ({"delay_ms": 10, "reorder_pct": float("nan")}, "reorder_pct", "0..100"),
    ({"delay_ms": 10, "reorder_pct": True}, "reorder_pct", "0..100"),
    ({"delay_ms": 10, "reorder_pct": 25, "reorder_gap": 0}, "reorder_gap", "integer >= 1"),
    ({"delay_ms": 10, "reorder_pct": 25, "reorder_gap": 2.0}, "reorder_gap", "integer >= 1"),
    ({"reorder_pct": 25}, "reorder_pct", "delay_ms > 0"),
    ({"seed": -1}, "seed", "non-negative integer"),
    ({"seed": "7"}, "seed", "non-negative integer"),
])
def test_bad_reorder_values_name_the_field_and_expectation(kwargs, field, expected):
    with pytest.raises(SpecError, match=rf"link shape: {field}=.*expected.*{expected}"):
        LinkShape(**kwargs)


def test_reorder_netem_argv_is_netems_syntax():
    shape = LinkShape(delay_ms=20, loss_pct=10, reorder_pct=25, reorder_gap=5)
    assert shape.impairs and shape.describe() == "20 ms, 10% loss, 25% reordered gap 5"
    assert shaping.tc_commands(shape, "la", "lb", netem=True) == [
        ["tc", "qdisc", "replace", "dev", iface, "root", "netem", "delay", "20ms",
         "loss", "10%", "reorder", "25%", "gap", "5"] for iface in ("lb", "la")]
    # no reordering asked: no reorder keyword at all (the existing argv stays as it was)
    assert "reorder" not in shaping.netem_argv("lb", LinkShape(delay_ms=20), None)


def test_reorder_wire_argv_round_trips_to_the_wires_directions():
    shape = LinkShape(delay_ms=20, reorder_pct=25, reorder_gap=3, seed=42)
    argv = shaping.wire_argv(shape, "la", "lb", "/run/x.ctl", netem=False)
    assert argv is not None
    assert argv[argv.index("--reorder-pct") + 1] == "25"
    assert argv[argv.index("--reorder-gap") + 1] == "3"
    assert argv[argv.index("--seed") + 1] == "42"
    args = wire.parse_args(argv[3:])
    ab, ba = wire.directions(args)
    assert (ab.reorder, ab.reorder_gap) == (ba.reorder, ba.reorder_gap) == (0.25, 3)
    assert args.seed == 42
    plain = shaping.wire_argv(LinkShape(delay_ms=20), "la", "lb", "/run/x.ctl", netem=False)
    assert plain is not None and "--reorder-pct" not in plain and "--seed" not in plain


def test_wire_control_carries_the_whole_shape_and_the_wire_accepts_it():
    shape = LinkShape(rate_bps=64_000, delay_ms=20, reorder_pct=10, reorder_gap=2, seed=3)
    change = shaping.wire_control(shape)
    assert change == {"delay_ms": 20, "jitter_ms": 0.0, "loss_pct": 0.0, "reorder_pct": 10,
                      "reorder_gap": 2, "rate_ab": 64_000, "rate_ba": 64_000, "seed": 3}
    ab, ba = WireDirection(), WireDirection()
    wire.apply_change(ab, ba, change)
    assert (ab.reorder, ab.reorder_gap, ba.reorder) == (0.10, 2, 0.10)
    wire.apply_change(ab, ba, shaping.wire_control(LinkShape(delay_ms=20)))
    assert ab.reorder == 0 and ab.reorder_gap == 1


@pytest.mark.parametrize("change, field", [
    ({"reorder_pct": 150}, "reorder_pct"),
    ({"reorder_gap": 0}, "reorder_gap"),
    ({"reorder_gap": 1.5}, "reorder_gap"),
    ({"seed": -3}, "seed"),
])
def test_wire_refuses_bad_reorder_control_whole(change, field):
    ab, ba = WireDirection(), WireDirection()
    with pytest.raises(ValueError, match=field):
        wire.apply_change(ab, ba, {"reorder_pct": 5, **change})
    assert ab.reorder == 0


def _reorder_run(d: WireDirection, n: int, gap_s: float = 0.001, seed: int = 5):
    rng = random.Random(seed)
    return [d.take(100, i * gap_s, rng) for i in range(n)]


def test_wire_reordered_frames_skip_the_delay_and_others_keep_theirs():
    d = WireDirection(delay_s=0.020, reorder=0.25)
    taken = _reorder_run(d, 20_000)
    picked = [i for i, t in enumerate(taken) if t[1]]
    assert d.reordered == len(picked) and 0.24 < len(picked) / 20_000 < 0.26
    for i, (due, reordered) in enumerate(taken):
        # reordered: out at once; the others exactly the delay after arriving
        assert due == pytest.approx(i * 0.001 + (0 if reordered else 0.020))


def test_wire_reorder_gap_is_netems_counter():
    d = WireDirection(delay_s=0.010, reorder=1.0, reorder_gap=5)
    flags = [t[1] for t in _reorder_run(d, 20)]
    # 100%: every 5th frame once the gap is open (netem: "gap 5" sends the 5th, 10th, ...)
    assert [i for i, f in enumerate(flags) if f] == [4, 9, 14, 19]
    d = WireDirection(delay_s=0.010, reorder=0.25, reorder_gap=5)
    fraction = sum(t[1] for t in _reorder_run(d, 40_000)) / 40_000
    assert fraction == pytest.approx(1 / (4 + 4), rel=0.06)  # 1 / (N - 1 + 1/p)


def test_wire_reordered_frames_still_take_their_time_on_the_line():
    # 1500 bytes at 1 Mbit/s = 12 ms on the line; a reordered frame leaves when clocked out
    d = WireDirection(rate_bps=1_000_000, delay_s=0.050, reorder=1.0, queue_s=1e9)
    rng = random.Random(1)
    assert d.take(1500, 0.0, rng) == (pytest.approx(0.012), True)
    assert d.take(1500, 0.0, rng) == (pytest.approx(0.024), True)
    d.reorder = 0.0
    assert d.take(1500, 0.0, rng) == (pytest.approx(0.036 + 0.050), False)


def test_wire_loss_comes_first_and_down_empties_the_express_queue():
    d = WireDirection(delay_s=0.010, loss=0.5, reorder=0.5)
    taken = _reorder_run(d, 10_000)
    assert d.lost == taken.count(None) and d.reordered == sum(1 for t in taken if t and t[1])
    assert 0.22 < d.reordered / 10_000 < 0.28  # half survive, half of those reordered
    rng = random.Random(2)
    d = WireDirection(delay_s=0.010, reorder=1.0)
    d.place(b"x" * 60, 0.0, rng)
    assert len(d.express) == 1 and d.counters()["queued"] == 1 and not d.passthrough
    d.set_down(True)
    assert not d.express and d.lost == 1


def test_impaired_path_from_scenario_parameters():
    def path(loss="0", reorder="0", seed=""):
        params = {"isp_loss": loss, "isp_reorder": reorder, "isp_seed": seed}
        return shaping.impaired_path(params, "isp_", "remote-access (link client-isp)")

    assert path() is None
    assert path("10", "25", "7") == LinkShape(delay_ms=20, loss_pct=10, reorder_pct=25, seed=7)
    with pytest.raises(SpecError, match=r"remote-access \(link client-isp\): isp_loss='ten': "
                                        "expected a percentage"):
        path("ten")
    with pytest.raises(SpecError, match=r"\(link client-isp\): link shape: reorder_pct=200"):
        path(reorder="200")
    with pytest.raises(SpecError, match=r"isp_seed='x': expected a non-negative integer"):
        path("1", seed="x")
