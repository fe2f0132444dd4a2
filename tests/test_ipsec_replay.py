"""RFC 4303 §3.4.3 anti-replay window: edges (old, duplicate, far ahead, the left edge, the
sequence space's ends), the check/update split, and a model-based hypothesis test."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tunnels.errors import LocalProtocolError
from tunnels.ipsec.replay import MAX_SEQ, ReplayWindow


def accept(window: ReplayWindow, seq: int) -> bool:
    if not window.check(seq):
        return False
    window.update(seq)
    return True


def test_sequence_zero_and_out_of_range_are_never_valid():
    window = ReplayWindow()
    assert not window.check(0)
    assert not window.check(-1)
    assert not window.check(MAX_SEQ + 1)
    assert window.check(1) and window.check(MAX_SEQ)


def test_duplicate_rejected_in_order_and_out_of_order():
    window = ReplayWindow()
    assert accept(window, 1) and not accept(window, 1)
    assert accept(window, 5)
    assert accept(window, 3) and not accept(window, 3)  # late but inside: once
    assert accept(window, 2) and accept(window, 4) and not accept(window, 5)


@pytest.mark.parametrize("size", [32, 64, 128, 1024])
def test_left_edge_is_exactly_size_packets(size):
    window = ReplayWindow(size)
    assert accept(window, 5000)
    assert window.check(5000 - size + 1)  # the window's oldest slot
    assert not window.check(5000 - size)  # just left of it: too old
    assert accept(window, 5000 - size + 1)


def test_far_ahead_slides_the_window_and_forgets_everything_old():
    window = ReplayWindow(64)
    for seq in range(1, 65):
        assert accept(window, seq)
    assert accept(window, 10_000)
    assert not window.check(64) and not window.check(10_000)
    assert window.check(9_999) and window.check(10_000 - 63) and not window.check(10_000 - 64)
    assert accept(window, MAX_SEQ)  # a jump across the whole space costs nothing
    assert window.highest == MAX_SEQ and not window.check(MAX_SEQ)


def test_check_alone_does_not_move_the_window():
    """Forged packets pass check() but fail the ICV: they must not slide it (§3.4.3)."""
    window = ReplayWindow()
    accept(window, 10)
    assert window.check(1_000_000)
    assert window.highest == 10 and window.check(9)


def test_window_size_bounds():
    for size in (0, 31, 1025):
        with pytest.raises(LocalProtocolError):
            ReplayWindow(size)


@given(st.integers(32, 256), st.lists(st.integers(1, 400), max_size=300))
def test_window_matches_a_set_model(size, seqs):
    """Accepted iff never accepted before and not older than highest - size + 1."""
    window, seen, highest = ReplayWindow(size), set(), 0
    for seq in seqs:
        expected = seq not in seen and seq > highest - size
        assert accept(window, seq) == expected
        if expected:
            seen.add(seq)
            highest = max(highest, seq)
