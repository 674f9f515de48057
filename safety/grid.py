"""IEEE 1547-2018 voltage/frequency trips, momentary cessation and passive islanding detection.

Pure state machines over (now_us, measurement): no tags, no clock. The supervisor feeds them the frozen
image's values; a test can drive them directly.
"""

from __future__ import annotations

from safety import tables as T
from safety.settings import Resolved, Trip


class TripTimers:
    """One timer per trip: the excursion starts at the first cycle that sees the value beyond the
    threshold, and the trip is commanded at the first cycle at least ``trip_after_us`` later.

    Why the first cycle that sees it, not an interpolated start: the runtime only knows sampled values;
    the response allowance covers one cycle of sampling plus the write and the inverter's reaction.
    A value back inside the threshold restarts the timer (a short excursion that returns in time does
    not trip)."""

    __slots__ = ("_band", "_start", "_timing", "ceasing", "trips")

    def __init__(self, trips: dict[str, Trip]):
        self.retune(trips)
        self._start: dict[str, int | None] = {t.code: None for t in self.trips}
        self._timing = False  # some excursion is being timed (a start is set)
        self.ceasing: Trip | None = None  # a trip whose output must already be zero, latching later

    def retune(self, trips: dict[str, Trip]) -> None:
        """New settings (a DER control, an online change) on a cycle boundary: an excursion under way keeps
        its start, so a stricter setting can only bring its trip closer."""
        self.trips = list(trips.values())
        # The band inside every threshold (strictly: at a threshold is beyond it). A sample inside it is
        # beyond no trip, which is nearly every sample, so ``update`` decides it with four comparisons.
        inf = float("inf")
        v, f = [t for t in self.trips if t.quantity != "f"], [t for t in self.trips if t.quantity == "f"]
        self._band = (
            min((t.threshold for t in v if t.over), default=inf),
            max((t.threshold for t in v if not t.over), default=-inf),
            min((t.threshold for t in f if t.over), default=inf),
            max((t.threshold for t in f if not t.over), default=-inf),
        )

    def reset(self) -> None:
        self.ceasing = None
        self._timing = False
        for code in self._start:
            self._start[code] = None

    def update(self, now_us: int, v_high: float, v_low: float, f: float) -> Trip | None:
        v_over, v_under, f_over, f_under = self._band
        if v_high < v_over and v_low > v_under and f_under < f < f_over:
            # beyond no threshold: every excursion ends, nothing fires or ceases (the loop below would agree)
            if self._timing:
                self.reset()
            self.ceasing = None
            return None
        return self.time_every_trip(now_us, v_high, v_low, f)

    def time_every_trip(self, now_us: int, v_high: float, v_low: float, f: float) -> Trip | None:
        """``update`` without the band: every trip's timer stepped (what the band must always agree with)."""
        fired: Trip | None = None
        self.ceasing = None
        start = self._start
        for t in self.trips:
            x = f if t.quantity == "f" else (v_high if t.over else v_low)
            if t.beyond(x):
                s = start[t.code]
                if s is None:
                    s = start[t.code] = now_us
                elapsed = now_us - s
                if fired is None and elapsed >= t.trip_after_us:
                    fired = t
                elif self.ceasing is None and elapsed >= t.cease_after_us:
                    self.ceasing = t
            else:
                start[t.code] = None
        self._timing = any(s is not None for s in start.values())
        return fired

    def any_beyond(self) -> bool:
        """Some value is beyond some trip threshold right now."""
        return self._timing

    def excursion_start(self, code: str) -> int | None:
        return self._start[code]


class Rocof:
    """|df/dt| from successive frequency samples at least ``window_us`` apart by their read times; a trip
    once the estimates have stayed above the limit for ``confirm_us`` of read time.

    Both count evidence, never scans. Samples are recognised by their read time, so a frequency polled
    slower than the scan is not read as zero ROCOF between polls, and an estimate held over cycles that
    brought no new read is not a ROCOF that persisted: at ``--speed 20`` one cycle is four confirm times,
    and one estimate (a read stamped late, the 0 -> 60 Hz of a grid coming back) held over a single missed
    read used to trip. The supervisor gives ``window_us`` on the cycle clock, stretched like the tags' age
    limits at --speed: a read's stamp carries the wire's latency, which is real time (docs/architecture.md
    "Clocks")."""

    __slots__ = ("_above_since", "_last_t", "_ref", "confirm_us", "limit", "tripping", "value", "window_us")

    def __init__(self, limit_hz_per_s: float, window_us: int, confirm_us: int):
        self.limit = limit_hz_per_s
        self.window_us = window_us
        self.confirm_us = confirm_us
        self._ref: tuple[int, float] | None = None
        self._last_t: int | None = None
        self._above_since: int | None = None  # read time of the first estimate of a run above the limit
        self.value = 0.0
        self.tripping = False

    def reset(self) -> None:
        self._ref = None
        self._last_t = None
        self._above_since = None
        self.value = 0.0
        self.tripping = False

    def update(self, f: float, t_read_us: int) -> bool:
        """True while the last estimates say trip (until an estimate falls back inside the limit)."""
        if t_read_us == self._last_t:
            return self.tripping
        self._last_t = t_read_us
        if self._ref is None:
            self._ref = (t_read_us, f)
            return self.tripping
        t0, f0 = self._ref
        if t_read_us - t0 < self.window_us:
            return self.tripping
        self.value = (f - f0) * 1_000_000 / (t_read_us - t0)
        self._ref = (t_read_us, f)
        if abs(self.value) > self.limit:
            if self._above_since is None:
                self._above_since = t_read_us
            self.tripping = t_read_us - self._above_since >= self.confirm_us
        else:
            self._above_since = None
            self.tripping = False
        return self.tripping


def in_continuous(r: Resolved, v_high: float, v_low: float, f: float) -> bool:
    """Inside the continuous operating region (IEEE 1547-2018: 0.88-1.10 pu; 58.8-61.2 Hz at 60 Hz)."""
    return T.V_CONTINUOUS[0] <= v_low and v_high <= T.V_CONTINUOUS[1] and r.f_continuous[0] <= f <= r.f_continuous[1]


def in_enter_service_window(r: Resolved, v_high: float, v_low: float, f: float) -> bool:
    """IEEE 1547-2018 clause 4.10: 0.917-1.05 pu and 59.5-60.1 Hz by default."""
    return r.es_v[0] <= v_low and v_high <= r.es_v[1] and r.es_f[0] <= f <= r.es_f[1]
