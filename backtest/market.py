"""What a strategy may see at a row's start: published prices, visible forecasts, the past, the calendar."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Sequence

from programs.planner.scenario import PriceSeries, Scenario, calendar, publication_times
from programs.planner.strategies import DecisionView

HISTORY_DAYS = 14


class VisibleMarket:
    """Holds the whole series and hands out only what is visible at a row's start."""

    def __init__(self, series: PriceSeries, sc: Scenario):
        self._series = series
        pub, vis = publication_times(series.times, sc)
        self._pub, self._vis = pub, vis
        self.calendar = calendar(series.times, sc)

    def published_count(self, t: int) -> int:
        """Rows [0, n) whose price is published at the start of row t."""
        return self.published_counts[t]

    def forecast_count(self, t: int) -> int:
        return self.forecast_counts[t]

    @functools.cached_property
    def published_counts(self) -> list[int]:
        """``published_count`` of every row, in one walk: the backtest asks it of every row."""
        return _counts_at(self._pub, self._series.times)

    @functools.cached_property
    def forecast_counts(self) -> list[int]:
        return _counts_at(self._vis, self._series.times)

    def view(self, t: int, soc: float) -> DecisionView:
        s = self._series
        npub = self.published_count(t)
        nvis = max(npub, self.forecast_count(t))
        fc = {k: v[npub:nvis].copy() for k, v in s.forecasts.items()} if nvis > npub else {}
        hist = s.price[max(0, t - HISTORY_DAYS * 86400 // s.step_s) : t].copy()
        return DecisionView(
            t=t,
            soc=soc,
            times=s.times,
            step_s=s.step_s,
            calendar=self.calendar,
            prices=s.price[t:npub].copy(),
            forecasts=fc,
            history=hist,
        )


def _counts_at(when: Sequence[dt.datetime], times: Sequence[dt.datetime]) -> list[int]:
    """For each of ``times``: how many of ``when`` are at or before it (``bisect_right``); both in time
    order (a row's publication follows from its date, and dates never go back, not even on a DST day)."""
    out, j, n = [], 0, len(when)
    for t in times:
        while j < n and when[j] <= t:
            j += 1
        out.append(j)
    return out
