"""Clocks and the pacing of cycles at absolute deadlines.

The real clock sleeps to just before the deadline and spins the last fraction of a millisecond
(``time.sleep`` on a standard kernel wakes 0.1-0.2 ms late; asyncio rounds to whole milliseconds, so it
never paces the scan: docs/reference.md "Python timing"). The simulated clock jumps, so tests can run the very
same pacing logic through hours of cycles, overruns included, in milliseconds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol


class Clock(Protocol):
    def now_ns(self) -> int: ...

    def sleep_until(self, deadline_ns: int) -> None: ...


class MonotonicClock:
    def __init__(self, spin_ns: int = 500_000):
        self.spin_ns = spin_ns

    def now_ns(self) -> int:
        return time.monotonic_ns()

    def sleep_until(self, deadline_ns: int) -> None:
        remaining = deadline_ns - time.monotonic_ns() - self.spin_ns
        if remaining > 0:
            time.sleep(remaining / 1e9)
        while time.monotonic_ns() < deadline_ns:
            pass


class SimClock:
    """Time moves only when told: ``sleep_until`` jumps to the deadline, ``advance`` models work."""

    def __init__(self, start_ns: int = 0):
        self.t = start_ns

    def now_ns(self) -> int:
        return self.t

    def sleep_until(self, deadline_ns: int) -> None:
        self.t = max(self.t, deadline_ns)

    def advance(self, ns: int) -> None:
        self.t += ns


@dataclass
class Pacer:
    """Absolute deadlines ``t0 + k*P``: no drift, and missed deadlines are skipped, never bunched."""

    t0_ns: int
    period_ns: int
    overrun_fault_after: int
    k: int = 0
    overruns: int = 0
    consecutive: int = 0
    skipped: int = 0

    def deadline(self, k: int | None = None) -> int:
        return self.t0_ns + (self.k if k is None else k) * self.period_ns

    def finish(self, end_ns: int) -> bool:
        """Account for the cycle that just ended at ``end_ns``; choose the next k. Returns True when the
        cycle overran (ended after the next deadline)."""
        nxt = self.k + 1
        overran = end_ns > self.deadline(nxt)
        if overran:
            self.overruns += 1
            self.consecutive += 1
            # The next cycle runs at the first deadline still ahead: the ones missed are skipped.
            first_ahead = (end_ns - self.t0_ns) // self.period_ns + 1
            self.skipped += first_ahead - nxt
            nxt = first_ahead
        else:
            self.consecutive = 0
        self.k = nxt
        return overran

    @property
    def overrun_fault(self) -> bool:
        return self.consecutive >= self.overrun_fault_after
