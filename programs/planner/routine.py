"""Plug-in windows from a driver's weekly routine (the commuter scenario's rule, as site settings).

On commute days the car leaves at ``depart`` and plugs back in at ``arrive`` the same day; on other days
it stays plugged in. The routine is a forecast of the driver, not a fact: the task also looks at
``ev.connected`` and re-plans when reality differs (``needs_replan``: plug-in / unplugged).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from programs.planner.model import PlugWindow


class Routine(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # every number finite

    depart: dt.time = dt.time(7, 0)
    arrive: dt.time = dt.time(18, 0)
    commute_days: tuple[Annotated[int, Field(ge=0, le=6)], ...] = Field(
        (0, 1, 2, 3, 4), description="weekday numbers, Monday = 0"
    )
    departure_soc_min: float = Field(0.8, ge=0, le=1)
    trip_energy_kwh: float = Field(12.0, ge=0, le=10_000)


def trips(r: Routine, lo: dt.datetime, hi: dt.datetime, tz: dt.tzinfo | None) -> list[tuple[dt.datetime, dt.datetime]]:
    """Routine trips near [lo, hi). Days and clock times are the site's local ones (``tz``); the
    instants are returned in ``lo``'s zone, so aware plans stay in absolute time across DST."""
    out = []
    tz = tz or lo.tzinfo
    local_lo = lo.astimezone(tz) if (tz is not None and lo.tzinfo is not None) else lo
    local_hi = hi.astimezone(tz) if (tz is not None and hi.tzinfo is not None) else hi
    day = (local_lo - dt.timedelta(days=1)).date()
    while day <= local_hi.date():
        if day.weekday() in r.commute_days:
            d = dt.datetime.combine(day, r.depart, tzinfo=tz if lo.tzinfo is not None else None)
            a = dt.datetime.combine(day, r.arrive, tzinfo=tz if lo.tzinfo is not None else None)
            if lo.tzinfo is not None:
                d, a = d.astimezone(lo.tzinfo), a.astimezone(lo.tzinfo)
            if a > d:
                out.append((d, a))
        day += dt.timedelta(days=1)
    return out


def routine_windows(
    r: Routine, start: dt.datetime, end: dt.datetime, connected_now: bool, tz: dt.tzinfo | None = None
) -> tuple[PlugWindow, ...]:
    """Windows covering [start, end): the current one (if connected now) up to the next departure, then
    one per routine arrival. When away now, the window before ``start`` is included so the planner
    knows how much of the trip is already behind."""
    trips_near = trips(r, start, end, tz)
    windows: list[PlugWindow] = []
    if connected_now:
        nxt = next(((d, a) for d, a in trips_near if d > start), None)
        w_end = nxt[0] if nxt else end
        windows.append(
            PlugWindow(
                start=start,
                end=max(w_end, start + dt.timedelta(seconds=1)),
                departure_soc_min=r.departure_soc_min if nxt else None,
            )
        )
        later = [(d, a) for d, a in trips_near if d >= w_end]
    else:
        cur = next(((d, a) for d, a in trips_near if d <= start < a), None)
        if cur is not None:
            windows.append(PlugWindow(start=cur[0] - dt.timedelta(hours=1), end=cur[0]))
            later = [(d, a) for d, a in trips_near if d >= cur[0]]
        else:  # away outside the routine: expect the car back at the next interval
            later = [(start, start + dt.timedelta(minutes=1))] + [(d, a) for d, a in trips_near if d > start]
    for i, (d, a) in enumerate(later):
        if a >= end:
            break
        nxt_dep = later[i + 1][0] if i + 1 < len(later) else None
        windows.append(
            PlugWindow(
                start=a,
                end=nxt_dep if nxt_dep and nxt_dep < end else end,
                departure_soc_min=r.departure_soc_min if nxt_dep and nxt_dep <= end else None,
                trip_energy_kwh=r.trip_energy_kwh if a - d > dt.timedelta(minutes=1) else 0.0,
            )
        )
    return tuple(w for w in windows if w.end > w.start)
