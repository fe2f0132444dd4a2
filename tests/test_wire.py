"""The wire's scheduling core on a virtual clock, its control messages and its command line.

No root, no sockets: `Direction.admit` is pure given `now` and a seeded RNG, so delay, jitter,
loss and serialization are checked exactly (or statistically with a fixed seed).
"""

from __future__ import annotations

import random
import socket

import pytest

from testbed import shaping, wire
from testbed.wire import Direction, apply_change


def _run(d: Direction, arrivals: list[tuple[float, int]], seed: int = 1) -> list[float | None]:
    rng = random.Random(seed)
    return [d.admit(size, now, rng) for now, size in arrivals]


def test_delay_only_is_exact():
    d = Direction(delay_s=0.020)
    assert _run(d, [(0.0, 100), (0.5, 1500)]) == [pytest.approx(0.020), pytest.approx(0.520)]


def test_serialization_at_the_rate_like_netem():
    # 1500 bytes at 1 Mbit/s take 12 ms; back-to-back frames queue behind each other
    d = Direction(rate_bps=1_000_000, delay_s=0.010)
    due = _run(d, [(0.0, 1500), (0.0, 1500), (0.1, 125)])
    assert due == [pytest.approx(0.022), pytest.approx(0.034), pytest.approx(0.111)]


def test_rate_over_a_long_run_is_the_configured_rate():
    d = Direction(rate_bps=56_000, queue_s=1e9)
    due = _run(d, [(0.0, 1000)] * 700)
    assert 700 * 1000 * 8 / due[-1] == pytest.approx(56_000)


def test_jitter_stays_in_bounds_and_never_reorders():
    d = Direction(delay_s=0.050, jitter_s=0.010)
    arrivals = [(i * 0.001, 100) for i in range(5000)]
    due = _run(d, arrivals)
    assert due == sorted(due)
    offsets = [t - now for t, (now, _) in zip(due, arrivals, strict=True)]
    # never earlier than delay - jitter; later only by keeping order behind an earlier frame
    assert min(offsets) >= 0.040 - 1e-9
    assert max(offsets) <= 0.060 + 1e-9
    assert 0.049 < sum(offsets) / len(offsets) < 0.056


def test_loss_is_bernoulli_at_the_configured_rate():
    d = Direction(loss=0.05)
    due = _run(d, [(i * 1e-3, 100) for i in range(20_000)], seed=7)
    lost = due.count(None)
    assert lost == d.lost and d.received == 20_000
    assert 0.045 < lost / 20_000 < 0.055


def test_full_queue_drops_the_newest_and_counts_it():
    # 1500 bytes at 64 kbit/s = 187.5 ms each: a 200 ms queue holds two frames' wait
    d = Direction(rate_bps=64_000, queue_s=0.2)
    due = _run(d, [(0.0, 1500)] * 4)
    assert due[:2] != [None, None] and due[2:] == [None, None]
    assert d.overflow == 2


def test_down_drops_everything_including_the_queue():
    ab, ba = Direction(delay_s=1.0), Direction()
    ab.queue.extend([(1.0, b"x"), (1.1, b"y")])
    apply_change(ab, ba, {"down": True})
    assert not ab.queue and ab.lost == 2
    assert _run(ab, [(0.0, 60)]) == [None]
    apply_change(ab, ba, {"down": False})
    assert _run(ab, [(2.0, 60)]) == [pytest.approx(3.0)]


def test_passthrough_only_without_any_impairment():
    assert Direction().passthrough
    assert not Direction(delay_s=0.001).passthrough
    assert not Direction(rate_bps=1000).passthrough


def test_control_changes_both_directions_and_rates_separately():
    ab, ba = Direction(), Direction()
    apply_change(ab, ba, {"delay_ms": 50, "jitter_ms": 5, "loss_pct": 1.5,
                          "rate_ab": 33_600, "rate_ba": 53_000, "stats": True})
    assert (ab.delay_s, ab.jitter_s, ab.loss) == (0.05, 0.005, 0.015) == (
        ba.delay_s, ba.jitter_s, ba.loss)
    assert (ab.rate_bps, ba.rate_bps) == (33_600, 53_000)
    apply_change(ab, ba, {"rate_ab": 0, "rate_ba": None})
    assert ab.rate_bps is None and ba.rate_bps is None


@pytest.mark.parametrize("change, field", [
    ({"delay_ms": -1}, "delay_ms"),
    ({"loss_pct": 120}, "loss_pct"),
    ({"jitter_ms": "5"}, "jitter_ms"),
    ({"rate_ab": 1.5}, "rate_ab"),
    ({"down": 1}, "down"),
    ({"delay": 5}, "unknown keys"),
])
def test_bad_control_messages_are_refused_whole(change, field):
    ab, ba = Direction(), Direction()
    with pytest.raises(ValueError, match=field):
        apply_change(ab, ba, {"loss_pct": 10, **change})
    assert ab.loss == 0  # nothing applied


def test_command_line_from_wire_argv_round_trips():
    shape = shaping.preset("modem-56k")
    argv = shaping.wire_argv(shape, "la", "lb", "/run/x.ctl", netem=False)
    assert argv is not None
    args = wire.parse_args(argv[3:])
    ab, ba = wire.directions(args)
    assert (args.a, args.b, args.control) == ("la", "lb", "/run/x.ctl")
    assert (ab.rate_bps, ba.rate_bps) == (33_600, 53_000)
    assert ab.delay_s == ba.delay_s == 0.1


def test_reverse_rate_defaults_to_the_forward_rate():
    ab, ba = wire.directions(wire.parse_args(["--a", "x", "--b", "y", "--rate-ab", "64000"]))
    assert ab.rate_bps == ba.rate_bps == 64_000


def test_control_client_gets_the_reply_and_raises_on_refusal(tmp_path):
    path = str(tmp_path / "w.ctl")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    try:
        import threading

        def answer(ok: bool) -> None:
            data, addr = server.recvfrom(4096)
            server.sendto(b'{"ok": true, "ab": {}, "ba": {}}' if ok
                          else b'{"ok": false, "error": "nope"}', addr)

        t = threading.Thread(target=answer, args=(True,))
        t.start()
        assert wire.send_wire_control(path, stats=True)["ok"]
        t.join()
        t = threading.Thread(target=answer, args=(False,))
        t.start()
        with pytest.raises(ValueError, match="nope"):
            wire.send_wire_control(path, delay_ms=-1)
        t.join()
    finally:
        server.close()
