"""The value of energy still stored at the end of the planning horizon (docs/planner.md "Terminal value").

Energy left in the battery when the visible prices run out is not sold at the horizon's end: the car
keeps it, and it spares buying the same energy later. What it is worth is therefore what refilling it
will cost on the coming nights, where a charger that plans ahead does its buying: the cheapest price of
a night, divided by the charge efficiency (a battery MWh costs 1/eta_c grid MWh). The coming nights are
not published yet; the median of the last known days' cheapest prices is a robust guess of them (a
median, so one odd day, a holiday or a price spike, does not move it). Looking back at all prices (a
quantile of last week's) mixes in the peaks and shoulders at which no refill happens.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from statistics import median
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

# Per MWh, taken off the value: buying now and refilling later at the same price are worth the same, and
# the tie goes to not buying (energy carried for nothing only ties up the battery).
TIE_BREAK = 0.01


def day_numbers(times: Sequence[dt.datetime]) -> list[int]:
    """Each time's calendar day (of its own clock) as a number: the backtest works them out once per series."""
    return [t.date().toordinal() for t in times]


def daily_minima(
    days: Sequence[int] | np.ndarray,
    prices: Sequence[float] | np.ndarray,
    connected: Sequence[bool] | np.ndarray | None = None,
) -> list[float]:
    """The cheapest price of each calendar day (``days``: each interval's day number, in time order)
    among the intervals in which the car is plugged in (all of them when ``connected`` is None)."""
    import numpy as np

    d = np.asarray(days)
    p = np.asarray(prices, dtype=float)
    if connected is not None:
        keep = np.asarray(connected, dtype=bool)
        d, p = d[keep], p[keep]
    if not len(p):
        return []
    first = np.flatnonzero(np.concatenate(([True], d[1:] != d[:-1])))
    return np.minimum.reduceat(p, first).tolist()


def refill_value(
    times: Sequence[dt.datetime],
    prices: Sequence[float],
    eta_charge: float,
    days: int = 7,
    connected: Sequence[bool] | None = None,
) -> float | None:
    """Per MWh in the battery: the median of the last ``days`` days' cheapest plugged-in prices over
    the charge efficiency; None without prices. Plugged-in only: a midday low (solar) while the car is
    at work refills nothing. ``times`` in time order."""
    return value_of_minima(daily_minima(day_numbers(times), prices, connected), eta_charge, days)


def value_of_minima(minima: Sequence[float], eta_charge: float, days: int = 7) -> float | None:
    """``refill_value`` from the daily minima (the backtest numbers the days once per series)."""
    last = list(minima)[-days:]
    return median(last) / eta_charge - TIE_BREAK if last else None
