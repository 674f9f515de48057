"""What a strategy may see at a row's start: published prices, visible forecasts, the past, the calendar."""

from __future__ import annotations

import bisect

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
        return bisect.bisect_right(self._pub, self._series.times[t])

    def forecast_count(self, t: int) -> int:
        return bisect.bisect_right(self._vis, self._series.times[t])

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
