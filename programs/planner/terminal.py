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

# Per MWh, taken off the value: buying now and refilling later at the same price are worth the same, and
# the tie goes to not buying (energy carried for nothing only ties up the battery).
TIE_BREAK = 0.01


def daily_minima(
    times: Sequence[dt.datetime], prices: Sequence[float], connected: Sequence[bool] | None = None
) -> list[float]:
    """The cheapest price of each calendar day (of ``times``' own clock) among the intervals in which
    the car is plugged in (all of them when ``connected`` is None), in time order."""
    out: dict[dt.date, float] = {}
    for i, (t, p) in enumerate(zip(times, prices)):
        if connected is not None and not connected[i]:
            continue
        d = t.date()
        out[d] = min(p, out.get(d, p))
    return list(out.values())


def refill_value(
    times: Sequence[dt.datetime],
    prices: Sequence[float],
    eta_charge: float,
    days: int = 7,
    connected: Sequence[bool] | None = None,
) -> float | None:
    """Per MWh in the battery: the median of the last ``days`` days' cheapest plugged-in prices over
    the charge efficiency; None without prices. Plugged-in only: a midday low (solar) while the car is
    at work refills nothing."""
    minima = daily_minima(times, prices, connected)[-days:]
    return median(minima) / eta_charge - TIE_BREAK if minima else None
