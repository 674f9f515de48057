"""The backtest scenario (``commuter.yaml``) as a model, its calendar, and what is visible when.

Every rule here is read from the scenario file as written (runtime/data/scenarios/commuter.yaml):

- Weekdays Mon-Fri the car departs at ``depart`` and plugs back in at ``arrive`` the same day; from
  Friday ``arrive`` to Monday ``depart`` it stays plugged in. An interval (one price row, its ``time`` the
  start on the local market clock) is *connected* unless it starts on a weekday in [depart, arrive).
- A *departure* is the first disconnected row after a connected one: the SoC at the end of the row
  before it must be >= ``departure_soc_min``. ``trip_energy_kwh`` is used between departure and arrival,
  spread evenly over the disconnected rows (the trace shows it as a steady decline; the cost does not
  depend on how it is spread). The car is plugged in at the first row with ``soc_initial``, and the
  SoC at the end of the last row must be >= ``terminal_soc_min``.
- Day D's prices are published at ``publication_time`` on day D-1; a forecast value for day D is visible
  from 00:00 on day D-``forecast_visible_days_ahead``. A decision for row t is taken at the start of row
  t, so row r's price is visible to it iff publish(r) <= start(t).
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, field_validator

from programs.planner.model import Battery as PlanBattery
from programs.planner.model import Charger as PlanCharger

if TYPE_CHECKING:
    import numpy as np


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # every number finite


class ScenarioBattery(_Strict):
    capacity_kwh: float = Field(gt=0, le=10_000)
    soc_min: float = Field(ge=0, le=1)
    soc_max: float = Field(ge=0, le=1)
    soc_initial: float = Field(ge=0, le=1)


class ScenarioCharger(_Strict):
    max_charge_kw: float = Field(ge=0, le=10_000)
    max_discharge_kw: float = Field(ge=0, le=10_000)
    efficiency_charge: float = Field(gt=0, le=1)
    efficiency_discharge: float = Field(gt=0, le=1)


def _hhmm(v: str) -> str:
    dt.time.fromisoformat(v)  # raises a clear "Invalid isoformat string" on a bad time
    return v


class Availability(_Strict):
    depart: str
    arrive: str
    departure_soc_min: float = Field(ge=0, le=1)
    trip_energy_kwh: float = Field(ge=0, le=10_000)
    terminal_soc_min: float = Field(ge=0, le=1)

    _t = field_validator("depart", "arrive")(_hhmm)


class Market(_Strict):
    publication_time: str
    forecast_visible_days_ahead: int = Field(ge=0, le=14)
    price_unit: str

    _t = field_validator("publication_time")(_hhmm)


class Scenario(_Strict):
    battery: ScenarioBattery
    charger: ScenarioCharger
    degradation_cost_per_mwh: float = Field(ge=0, le=10_000)
    availability: Availability
    market: Market
    accounting: dict | None = None  # the file states the accounting rules as comments only

    def plan_battery(self) -> PlanBattery:
        b = self.battery
        return PlanBattery(capacity_kwh=b.capacity_kwh, soc_min=b.soc_min, soc_max=b.soc_max)

    def plan_charger(self) -> PlanCharger:
        return PlanCharger(**self.charger.model_dump())


@dataclass(frozen=True)
class PriceSeries:
    """A price file: naive local interval starts, one row per interval, in file order."""

    times: tuple[dt.datetime, ...]
    price: np.ndarray
    forecasts: dict[str, np.ndarray]  # column name -> values
    step_s: int = 3600

    def __len__(self) -> int:
        return len(self.times)


@dataclass(frozen=True)
class Calendar:
    """Plug-in facts per row: public knowledge, unlike prices (the driver's routine is a given)."""

    connected: np.ndarray  # bool
    drive_kwh: np.ndarray  # trip energy used in the row
    floor_soc: np.ndarray  # SoC floor at the END of the row (soc_min, departures, terminal)
    departure_rows: tuple[int, ...]  # rows whose END is a departure
    arrival_rows: tuple[int, ...]  # first connected row after a trip (plug-in)

    @functools.cached_property
    def runs(self) -> tuple[list[int], list[int]]:
        """For every row, the first row of its run (connected or away) and the first row after that run:
        worked out once, so each re-plan finds its plug-in windows without walking the rows."""
        conn = self.connected.tolist()
        n = len(conn)
        first, after = [0] * n, [n] * n
        for r in range(1, n):
            first[r] = first[r - 1] if conn[r] == conn[r - 1] else r
        for r in range(n - 2, -1, -1):
            after[r] = after[r + 1] if conn[r] == conn[r + 1] else r + 1
        return first, after

    @functools.cached_property
    def departures(self) -> frozenset[int]:
        return frozenset(self.departure_rows)

    @functools.cached_property
    def arrivals(self) -> frozenset[int]:
        return frozenset(self.arrival_rows)


def calendar(times: tuple[dt.datetime, ...], sc: Scenario) -> Calendar:
    import numpy as np

    a = sc.availability
    dep, arr = dt.time.fromisoformat(a.depart), dt.time.fromisoformat(a.arrive)
    n = len(times)
    conn = np.array([not (s.weekday() < 5 and dep <= s.time() < arr) for s in times], dtype=bool)
    conn[0] = True  # the scenario: "the car is plugged in then"
    drive = np.zeros(n)
    floor = np.full(n, sc.battery.soc_min)
    departures: list[int] = []
    arrivals: list[int] = []
    t = 1
    while t < n:
        if conn[t - 1] and not conn[t]:
            departures.append(t - 1)
            floor[t - 1] = max(floor[t - 1], a.departure_soc_min)
            end = t
            while end < n and not conn[end]:
                end += 1
            drive[t:end] = a.trip_energy_kwh / (end - t)
            if end < n:
                arrivals.append(end)
            t = end
        t += 1
    floor[-1] = max(floor[-1], a.terminal_soc_min)
    return Calendar(conn, drive, floor, tuple(departures), tuple(arrivals))


ONE_DAY = dt.timedelta(days=1)
MIDNIGHT = dt.time(0, 0)


def publication_times(times: tuple[dt.datetime, ...], sc: Scenario) -> tuple[list[dt.datetime], list[dt.datetime]]:
    """(when each row's price is published, when each row's forecast becomes visible)."""
    pub_t = dt.time.fromisoformat(sc.market.publication_time)
    ahead = dt.timedelta(days=sc.market.forecast_visible_days_ahead)
    pub, vis = [], []
    d0 = None
    for s in times:
        d = s.date()
        if d != d0:  # worked out once per day, not per row: 96 quarter-hours share a day's instants
            d0, p, v = d, dt.datetime.combine(d - ONE_DAY, pub_t), dt.datetime.combine(d - ahead, MIDNIGHT)
        pub.append(p)
        vis.append(v)
    return pub, vis
