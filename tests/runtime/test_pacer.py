"""Absolute-deadline pacing with a simulated clock: no drift, overruns counted, missed deadlines skipped."""

from __future__ import annotations

import pytest

from runtime.clock import Pacer, SimClock

P = 20_000_000  # ns


def run(costs_ms: list[float], fault_after: int = 3):
    """Run one cycle per cost on a simulated clock; return (k, wake time, lateness) per cycle and the pacer."""
    clock = SimClock(1_000_000_000)
    pacer = Pacer(clock.now_ns(), P, fault_after)
    seen = []
    for cost in costs_ms:
        deadline = pacer.deadline()
        clock.sleep_until(deadline)
        wake = clock.now_ns()
        seen.append((pacer.k, wake - pacer.t0_ns, wake - deadline))
        clock.advance(int(cost * 1e6))
        pacer.finish(clock.now_ns())
    return seen, pacer


def test_no_drift_over_a_long_run() -> None:
    seen, pacer = run([3.0] * 10_000)
    assert seen[-1][0] == 9_999
    assert seen[-1][1] == 9_999 * P  # exactly k*P after t0: no accumulated drift
    assert pacer.overruns == 0 and pacer.skipped == 0


@pytest.mark.parametrize(
    "cost_ms, next_k, skipped",
    [
        (19.9, 1, 0),  # ends before the next deadline: no overrun
        (20.0, 1, 0),  # ends exactly at the next deadline: on time
        (20.1, 2, 1),  # past deadline 1: k=1 skipped, next cycle at deadline 2
        (45.0, 3, 2),  # past deadlines 1 and 2: both skipped
        (100.0, 6, 5),
    ],
)
def test_overrun_skips_missed_deadlines_never_bunches(cost_ms: float, next_k: int, skipped: int) -> None:
    seen, pacer = run([cost_ms, 1.0])
    assert seen[1][0] == next_k
    assert pacer.skipped == skipped
    assert pacer.overruns == (1 if skipped else 0)
    assert seen[1][2] == 0  # the next cycle wakes at its own deadline, not at once


def test_consecutive_overruns_raise_the_fault_and_an_on_time_cycle_clears_it() -> None:
    _, pacer = run([25.0, 25.0], fault_after=3)
    assert not pacer.overrun_fault
    _, pacer = run([25.0, 25.0, 25.0], fault_after=3)
    assert pacer.overrun_fault and pacer.consecutive == 3
    _, pacer = run([25.0, 25.0, 25.0, 1.0], fault_after=3)
    assert not pacer.overrun_fault and pacer.overruns == 3


def test_alternating_overruns_do_not_count_as_consecutive() -> None:
    _, pacer = run([25.0, 1.0] * 10, fault_after=2)
    assert pacer.overruns == 10 and not pacer.overrun_fault
