"""``v2g-plc backtest --prices CSV --scenario YAML``: arbitrage over a price series in simulated time.

At each re-plan point the strategy gets a :class:`DecisionView` built here from what is *visible* at
the start of that row (published prices, visible forecasts, past prices, the public plug-in calendar)
and nothing else: the view is sliced out of the series, so a strategy has no handle on unpublished
data. Re-plan points, exactly as the scenario implies: the first row, every plug-in (arrival), every
row at which more prices are published (12:00 D-1) and, for strategies that use forecasts, every row at
which more forecasts become visible (00:00 D-1); the planner also re-plans when ``needs_replan`` says
the battery drifted from its plan or the plan ran out.

Between re-plans the schedule is followed by the site's own programs: the ``modes`` state machine and
``dispatch`` (programs/), then the ``v2g_safety`` interlock (safety/), on the scan engine's one step
function, ``Engine.step``, in simulated time (docs/design.md#the-scan-cycle). The schedule's power for the
row becomes ``plan.power`` (W), with ``plan.soc_target`` and ``plan.interval_end`` as the planner task
publishes them; the engine's inputs are a healthy 240 V / 60 Hz site, the EV's plug and SoC, and the
power the battery took in the previous scan as ``inverter.power`` and ``meter.power``. A plain battery
model (efficiencies, capacity, the charger's ratings, the SoC window) follows the committed setpoint
between scans and is the hard physical limit, like the EV's BMS.

The departure reserve belongs to the plan, not to the programs: before the request goes to the engine,
it is raised to the charge that still reaches the energy from which full power meets every later
departure and the terminal SoC, and a discharge stops where that would stop being true with one
turn-round scan held back. The programs then only ever make the battery do less than asked in a
direction (limits), never more, so the driver's departure charge rests on the reserve alone.

Scanning: the site's scan period is ``PERIOD_S`` = 10 s (long enough that dispatch's 2 kW/s ramp makes
a full-power step in one scan). The programs decide from the previous scan's outputs in three places
(``modes`` reads last scan's ``safety.trip``; ``dispatch`` last scan's safety limits and setpoint; one
mode trigger per scan, so discharge -> charge takes two scans). A scan every hour would turn each of
those one-scan lags into a lost hour, and a scan every 10 s for two years is 6.3 million scans per run.
So the engine scans at the period while anything moves and sleeps when nothing does: each row starts
with a scan at the row's start; after a scan whose mode, setpoint, limits or trip differ from the
previous scan's, the next follows one period later (at most ``MAX_SETTLE`` times); once a scan changes
nothing, the outputs hold until the row ends, or until the SoC reaches a level at which ``modes`` or
``v2g_safety`` act (then the next scan is the first period boundary after it). A turn-round thus costs
the row one 10 s scan in ``idle``, as a real site loses one 20 ms scan, and the row's grid power in the
trace is the mean over its scans. A 2-year run is about 21,000 scans per strategy run. Before the
first row the site runs through IEEE 1547 enter service (delay, then ramp) with the EV plugged in, as
a site energized before the series starts would have.

The trace is then checked independently of all that for violations and priced by the scenario's
accounting.
"""

from __future__ import annotations

import argparse
import bisect
import csv
import datetime as dt
import json
import math
import resource
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from programs.planner.scenario import Calendar, PriceSeries, Scenario, calendar, publication_times
from programs.planner.strategies import (
    Baseline,
    Cheapest,
    DecisionView,
    PlannerStrategy,
    Strategy,
    Threshold,
)
from runtime.tags import US, Direction, TagSpec, TagType, TagUpdate

if TYPE_CHECKING:
    import numpy as np

    from safety.settings import SafetyParams

TOL = 1e-6  # SoC and kW tolerance of the violation checks (float rounding, not slack)
HISTORY_DAYS = 14


class DataError(Exception):
    """A price or scenario file that cannot be used; the message names file, line and column."""


# -- inputs ------------------------------------------------------------------------------------------
def load_prices(path: str | Path) -> PriceSeries:
    import numpy as np

    path = Path(path)
    try:
        fh = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    with fh:
        rows = csv.reader(fh)
        header = next(rows, None)
        if not header or header[:2] != ["time", "price"]:
            raise DataError(f"{path}:1: expected a header starting with time,price; got {header}")
        times: list[dt.datetime] = []
        cols: list[list[float]] = [[] for _ in header[1:]]
        for line, row in enumerate(rows, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise DataError(f"{path}:{line}: expected {len(header)} columns, got {len(row)}")
            try:
                t = dt.datetime.fromisoformat(row[0])
            except ValueError:
                raise DataError(f"{path}:{line}: time: not an ISO 8601 time: {row[0]!r}") from None
            if t.tzinfo is not None:
                raise DataError(f"{path}:{line}: time: expected naive local market time, got offset {row[0]!r}")
            if times and t < times[-1] - dt.timedelta(hours=1):  # a repeated DST hour is still a row
                raise DataError(f"{path}:{line}: time: {row[0]} does not follow {times[-1].isoformat()}")
            times.append(t)
            for j, v in enumerate(row[1:]):
                try:
                    x = float(v)
                except ValueError:
                    raise DataError(f"{path}:{line}: {header[j + 1]}: not a number: {v!r}") from None
                if not math.isfinite(x):
                    raise DataError(f"{path}:{line}: {header[j + 1]}: not finite: {v!r}")
                cols[j].append(x)
    if len(times) < 2:
        raise DataError(f"{path}: fewer than two price rows")
    step_s = int((times[1] - times[0]).total_seconds())
    return PriceSeries(
        tuple(times), np.asarray(cols[0]), {name: np.asarray(c) for name, c in zip(header[2:], cols[1:])}, step_s
    )


def load_scenario(path: str | Path) -> Scenario:
    from runtime.yamlload import load_yaml, validate

    doc = load_yaml(path)
    return validate(Scenario, doc.data, doc)


# -- the visible market ------------------------------------------------------------------------------
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


# -- the departure reserve and the battery model -----------------------------------------------------
def reserve_kwh(cal: Calendar, sc: Scenario, dt_h: float, margin_h: float = 0.0):
    """Energy needed at the end of each row so that full-power charging still meets every later floor,
    counting on each plugged-in row for ``dt_h - margin_h`` hours of charging."""
    import numpy as np

    b, ch = sc.battery, sc.charger
    n = len(cal.connected)
    req = cal.floor_soc * b.capacity_kwh
    gain = ch.efficiency_charge * ch.max_charge_kw * max(0.0, dt_h - margin_h) * cal.connected
    out = np.array(req, dtype=float)
    for t in range(n - 2, -1, -1):
        out[t] = max(out[t], out[t + 1] - gain[t + 1] + cal.drive_kwh[t + 1])
    return np.minimum(out, b.soc_max * b.capacity_kwh)


def energy_after(e: float, p: float, drive: float, sc: Scenario, dt_h: float) -> float:
    ch = sc.charger
    return e - drive + (ch.efficiency_charge * p * dt_h if p >= 0 else p * dt_h / ch.efficiency_discharge)


def power_for(e: float, target: float, drive: float, sc: Scenario, dt_h: float) -> float:
    ch = sc.charger
    delta = target - e + drive
    return delta / (ch.efficiency_charge * dt_h) if delta >= 0 else delta * ch.efficiency_discharge / dt_h


# -- the site: the real programs and interlock on the engine -----------------------------------------
PERIOD_S = 10  # the backtest site's scan period (module docstring: why 10 s)
MAX_SETTLE = 8  # short cycles per row at most before the long one
RESERVE_MARGIN_CYCLES = 2  # scan cycles per row the departure reserve does not count on
NOMINAL_V, NOMINAL_HZ = 240.0, 60.0  # docs/design.md#voltage-basis: the bundled 240 V split-phase site
EPS_KWH = 1e-9  # below this an energy deficit is float rounding, not a reason to force charging

# What the site's device maps deliver, at the values of a healthy site: nominal grid, no islanding,
# a cool inverter at 25 degC ambient, a healthy PLC link and EV battery (SoH unknown would count as low).
STEADY_INPUTS: dict[str, tuple[TagType, str, Any]] = {
    "grid.voltage": (TagType.FLOAT, "V", NOMINAL_V),
    "grid.frequency": (TagType.FLOAT, "Hz", NOMINAL_HZ),
    "grid.loss": (TagType.BOOL, "", False),
    "inverter.temperature": (TagType.FLOAT, "degC", 25.0),
    "inverter.write_mismatch": (TagType.BOOL, "", False),
    "ev.soh": (TagType.FLOAT, "", 1.0),
    "plc.snr": (TagType.FLOAT, "dB", 30.0),
}
# The inverter's own ratings (SunSpec 702), written once with the scenario's charger limits; then,
# every scan, the battery model (plug, SoC, the power it took in the previous scan) and the plan.
CYCLE_INPUTS: tuple[TagSpec, ...] = (
    TagSpec("inverter.max_charge_w", TagType.FLOAT, "W"),
    TagSpec("inverter.max_discharge_w", TagType.FLOAT, "W"),
    TagSpec("ev.connected", TagType.BOOL),
    TagSpec("ev.soc", TagType.FLOAT),
    TagSpec("inverter.power", TagType.FLOAT, "W"),
    TagSpec("meter.power", TagType.FLOAT, "W"),
    # as runtime/tasks/planner_task.py declares them
    TagSpec("plan.power", TagType.FLOAT, "W", Direction.SHARED, 0.0, 300.0),
    TagSpec("plan.soc_target", TagType.FLOAT, "", Direction.SHARED, None, 300.0),
    TagSpec("plan.interval_end", TagType.FLOAT, "s", Direction.SHARED, None, 300.0),
)
OUTPUTS: tuple[TagSpec, ...] = (
    TagSpec("inverter.setpoint", TagType.FLOAT, "W", Direction.OUTPUT, 0.0),
    TagSpec("inverter.enable", TagType.BOOL, "", Direction.OUTPUT, False),
)


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), dict) else v
    return out


def safety_params(sc: Scenario, overrides: Mapping[str, Any] | None = None) -> SafetyParams:
    """v2g_safety for the scenario: Category III at 240 V / 60 Hz, the charger's ratings, the scenario's
    SoC window with no taper band (the battery model is the BMS that lands on the limits exactly)."""
    from pydantic import ValidationError

    from safety.settings import SafetyParams

    b, ch = sc.battery, sc.charger
    p: dict[str, Any] = {
        "category": "III",
        "frequency_basis_hz": int(NOMINAL_HZ),
        "rated_charge_w": ch.max_charge_kw * 1000.0,
        "rated_discharge_w": ch.max_discharge_kw * 1000.0,
        "battery": {
            "soc_reserve": b.soc_min,
            "soc_max": b.soc_max,
            "soc_band": 0.0,
            "soc_reserve_guarded": max(0.40, b.soc_min),
        },
    }
    try:
        return SafetyParams.model_validate(_merge(p, overrides or {}))
    except ValidationError as exc:
        why = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'safety'}: {e['msg']}" for e in exc.errors())
        raise DataError(f"safety settings for the scenario: {why}") from None


class Site:
    """The scan engine with ``modes``, ``dispatch`` and ``v2g_safety``, stepped in simulated time against
    a plain battery model that is also the hard physical limit (the EV's BMS)."""

    def __init__(self, sc: Scenario, safety: Mapping[str, Any] | None = None):
        from programs.dispatch import Dispatch, DispatchParams
        from programs.modes import ModeParams, Modes
        from runtime.api import SiteInfo
        from runtime.engine import RUNTIME_TAGS, Engine, tag_table
        from safety.supervisor import SafetySupervisor

        b, ch = sc.battery, sc.charger
        self.sc = sc
        site = SiteInfo("backtest", NOMINAL_V, NOMINAL_HZ, PERIOD_S * US)
        self.safety_params = safety_params(sc, safety)
        try:
            modes = Modes("modes", ModeParams(soc_min=b.soc_min, soc_max=b.soc_max), site)
        except ValueError as exc:  # pydantic's ValidationError is one
            raise DataError(f"modes for the scenario's SoC window: {exc}".replace("\n", " ")) from None
        dispatch = Dispatch(
            "dispatch",
            DispatchParams(
                max_charge_w=ch.max_charge_kw * 1000.0,
                max_discharge_w=ch.max_discharge_kw * 1000.0,
                capacity_wh=b.capacity_kwh * 1000.0,
                efficiency_charge=ch.efficiency_charge,
                efficiency_discharge=ch.efficiency_discharge,
            ),
            site,
        )
        lock = SafetySupervisor("v2g_safety", self.safety_params, site)
        # a forced charge must clear the mode machine's deadband, or it would not start
        self.min_forced_kw = 2.0 * modes.params.deadband_w / 1000.0
        steady = [TagSpec(n, t, u) for n, (t, u, _) in STEADY_INPUTS.items()]
        tags = tag_table(
            ("runtime", RUNTIME_TAGS),
            ("plant", (*steady, *CYCLE_INPUTS, *OUTPUTS)),
            *((p.name, p.declare()) for p in (modes, dispatch, lock)),
        )
        missing = [n for p in (modes, dispatch, lock) for n in p.requires() if n not in tags.specs]
        if missing:
            raise RuntimeError(f"the backtest site does not simulate {missing}, which its programs require")
        self.engine = Engine(site, tags, [modes, dispatch], [lock])
        self.now_us = 0
        self.e = b.soc_initial * b.capacity_kwh
        self.p_kw = 0.0  # what the battery took last cycle (grid side, signed)
        self.cycles = 0
        self.events: dict[str, int] = {}
        self._steady = [TagUpdate(n, v) for n, (_, _, v) in STEADY_INPUTS.items()]
        self._steady += [
            TagUpdate("inverter.max_charge_w", ch.max_charge_kw * 1000.0),
            TagUpdate("inverter.max_discharge_w", ch.max_discharge_kw * 1000.0),
        ]
        self._last: tuple = ()
        bp, mp = self.safety_params.battery, modes.params
        # SoC levels at which v2g_safety or modes change what they allow
        self._levels = sorted(
            {
                bp.soc_reserve,
                bp.soc_max,
                mp.soc_min,
                mp.soc_max,
                mp.soc_min + mp.soc_hysteresis,
                mp.soc_max - mp.soc_hysteresis,
            }
        )
        # Before the first row: the site is energized with the EV plugged in and no plan, through
        # enter service (IEEE 1547 clause 4.10 delay, then the ramp), as it would have been before the
        # series starts.
        es = self.safety_params.enter_service
        warm_us = round((es.delay_s + es.ramp_s) * US) // (PERIOD_S * US) * (PERIOD_S * US) + PERIOD_S * US
        while self.now_us < warm_us:
            self._cycle(self.now_us + PERIOD_S * US, True, 0.0, self.e / b.capacity_kwh, warm_us / US, 0.0, False)
        self.origin_us = warm_us

    def _cycle(
        self,
        until_us: int,
        connected: bool,
        plan_kw: float,
        soc_target: float,
        end_s: float,
        drive_kw: float,
        settle: bool,
    ) -> float:
        """One scan at ``now_us``; the battery follows its setpoint until the next scan. Returns the
        battery's grid power over that time (kW)."""
        cap = self.sc.battery.capacity_kwh
        w = self.p_kw * 1000.0
        ups = [
            TagUpdate("ev.connected", connected),
            TagUpdate("ev.soc", self.e / cap),
            TagUpdate("inverter.power", w),
            TagUpdate("meter.power", w),
            TagUpdate("plan.power", plan_kw * 1000.0),
            TagUpdate("plan.soc_target", soc_target),
            TagUpdate("plan.interval_end", end_s),
        ]
        if self.cycles == 0:
            ups += self._steady
        res = self.engine.step(self.now_us, ups)
        self.cycles += 1
        for ev in res.events:
            self.events[ev.kind] = self.events.get(ev.kind, 0) + 1
        out = res.outputs
        sp = out["inverter.setpoint"] if out["inverter.enable"] else 0.0
        sig = (
            res.image.value("mode.state"),
            sp,
            out["safety.limit_charge"],
            out["safety.limit_discharge"],
            out["safety.trip"],
        )
        settled = sig == self._last
        self._last = sig
        # Unsettled (a transition, a new setpoint or limit): the next scan follows one period later, as
        # on the real site; settled: nothing changes until the plan or the plug does, at the row's end.
        nxt = until_us if settled or not settle else min(until_us, self.now_us + PERIOD_S * US)
        if sp and connected:
            nxt = min(nxt, self._next_threshold_us(sp / 1000.0))
        dur_h = (nxt - self.now_us) / (3600 * US)
        self.e, self.p_kw = self.battery(self.e, sp / 1000.0 if connected else 0.0, drive_kw * dur_h, dur_h)
        self.now_us = nxt
        return self.p_kw

    def _next_threshold_us(self, p_kw: float) -> int:
        """The first scan at or after the battery crosses the next SoC level a program acts on at this
        power, so a window narrower than the battery's is overshot by one scan at most, as on a site."""
        ch, cap = self.sc.charger, self.sc.battery.capacity_kwh
        soc = self.e / cap
        if p_kw > 0:
            ahead = [x for x in self._levels if x > soc]
            if not ahead:
                return 1 << 62
            hours = (ahead[0] - soc) * cap / (ch.efficiency_charge * min(p_kw, ch.max_charge_kw))
        else:
            ahead = [x for x in self._levels if x < soc]
            if not ahead:
                return 1 << 62
            hours = (soc - ahead[-1]) * cap * ch.efficiency_discharge / min(-p_kw, ch.max_discharge_kw)
        period = PERIOD_S * US
        return self.now_us + max(1, math.ceil(hours * 3600 * US / period)) * period

    def battery(self, e: float, p: float, drive: float, dt_h: float) -> tuple[float, float]:
        """(energy after, grid power taken): the charger's ratings and the SoC window are physical."""
        b, ch = self.sc.battery, self.sc.charger
        p = max(-ch.max_discharge_kw, min(ch.max_charge_kw, p))
        if p > 0:
            p = min(p, max(0.0, power_for(e, b.soc_max * b.capacity_kwh, drive, self.sc, dt_h)))
        elif p < 0:
            p = max(p, min(0.0, power_for(e, b.soc_min * b.capacity_kwh, drive, self.sc, dt_h)))
        return energy_after(e, p, drive, self.sc, dt_h), p + 0.0

    def run_row(
        self,
        start_us: int,
        end_us: int,
        connected: bool,
        plan_kw: float,
        floor_kwh: float,
        discharge_floor_kwh: float,
        drive_kwh: float,
    ) -> float:
        """Scan through one price row; returns its mean grid power (kW)."""
        sc, cap = self.sc, self.sc.battery.capacity_kwh
        row_h = (end_us - start_us) / (3600 * US)
        req0 = self.request(plan_kw, connected, floor_kwh, discharge_floor_kwh, row_h)
        # what the plan expects at the row's end (dispatch corrects only deviations beyond its deadband)
        target = energy_after(self.e, req0, drive_kwh, sc, row_h) / cap
        target = min(sc.battery.soc_max, max(sc.battery.soc_min, target))
        kwh_in = kwh_out = 0.0
        short = 0
        while self.now_us < end_us:
            rest_h = (end_us - self.now_us) / (3600 * US)
            req = self.request(plan_kw, connected, floor_kwh, discharge_floor_kwh, rest_h)
            t0 = self.now_us
            p = self._cycle(end_us, connected, req, target, end_us / US, drive_kwh / row_h, short < MAX_SETTLE)
            short += 1
            if p > 0:
                kwh_in += p * (self.now_us - t0) / (3600 * US)
            elif p < 0:
                kwh_out += p * (self.now_us - t0) / (3600 * US)
        if kwh_in > EPS_KWH and kwh_out < -EPS_KWH:
            raise RuntimeError("a row both charged and discharged: its trace row could not state that")
        return (kwh_in + kwh_out) / row_h

    def request(
        self, plan_kw: float, connected: bool, floor_kwh: float, discharge_floor_kwh: float, rest_h: float
    ) -> float:
        """The plan's power with the departure reserve applied (docs/planner.md "Departure reserve"):
        charging is forced while the energy is below ``floor_kwh`` (from which full power still meets
        every later floor), by at least what reaches it by the row's end; discharge stops at
        ``discharge_floor_kwh`` (the same, with a turn-round scan per row held back). Zero while away."""
        if not connected:
            return 0.0
        ch = self.sc.charger
        deficit = floor_kwh - self.e
        if deficit > EPS_KWH:
            return max(plan_kw, deficit / (ch.efficiency_charge * rest_h), self.min_forced_kw)
        return max(plan_kw, min(0.0, (discharge_floor_kwh - self.e) * ch.efficiency_discharge / rest_h))


@dataclass
class Run:
    strategy: str
    grid_kw: np.ndarray
    soc: np.ndarray  # at the end of each row
    replans: int
    solve_times: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    cycles: int = 0  # engine scans
    events: dict[str, int] = field(default_factory=dict)  # engine events by kind (transition, trip, ...)


def simulate(
    series: PriceSeries,
    sc: Scenario,
    strategy: Strategy,
    market: VisibleMarket | None = None,
    safety: Mapping[str, Any] | None = None,
) -> Run:
    import numpy as np

    market = market or VisibleMarket(series, sc)
    cal = market.calendar
    n = len(series)
    dt_h = series.step_s / 3600
    floor = reserve_kwh(cal, sc, dt_h)
    # a discharge-to-charge turn-round costs a row one scan in idle (programs/modes.py: one trigger
    # per scan), so discharge stops where full power would still make it with that scan held back
    discharge_floor = reserve_kwh(cal, sc, dt_h, RESERVE_MARGIN_CYCLES * PERIOD_S / 3600)
    cap = sc.battery.capacity_kwh
    site = Site(sc, safety)
    step_us = series.step_s * US
    grid = np.zeros(n)
    soc = np.zeros(n)
    arrivals = set(cal.arrival_rows)
    sched: Any = np.zeros(0)
    s0 = 0
    last_pub = last_vis = -1
    replans = 0
    for t in range(n):
        e = site.e
        npub = market.published_count(t)
        nvis = market.forecast_count(t) if strategy.uses_forecasts else last_vis
        if (
            t == 0
            or t in arrivals
            or npub != last_pub
            or nvis != last_vis
            or strategy.replan_reason(series.times[t], e / cap, bool(cal.connected[t])) is not None
        ):
            sched, s0 = strategy.decide(market.view(t, e / cap)), t
            replans += 1
        last_pub, last_vis = npub, nvis
        i = t - s0
        p = float(sched[i]) if i < len(sched) else 0.0
        start = site.origin_us + t * step_us
        grid[t] = site.run_row(
            start,
            start + step_us,
            bool(cal.connected[t]),
            p,
            float(floor[t]),
            float(discharge_floor[t]),
            float(cal.drive_kwh[t]),
        )
        soc[t] = site.e / cap
    return Run(
        strategy.name,
        grid,
        soc,
        replans,
        list(getattr(strategy, "solve_times", [])),
        dict(getattr(strategy, "statuses", {})),
        site.cycles,
        dict(site.events),
    )


class Perfect(Strategy):
    """The least-cost schedule over the whole series with every price known (an upper bound)."""

    name = "perfect"

    def __init__(self, series: PriceSeries, sc: Scenario, cal: Calendar):
        self._schedule = perfect_schedule(series, sc, cal)

    def decide(self, view: DecisionView):
        return self._schedule[view.t :]


def perfect_schedule(series: PriceSeries, sc: Scenario, cal: Calendar):
    import numpy as np

    from programs.planner.lp import LpInput, solve

    b, ch = sc.battery, sc.charger
    n = len(series)
    res = solve(
        LpInput(
            price=series.price,
            connected=cal.connected,
            drive_kwh=cal.drive_kwh,
            e_lo=cal.floor_soc * b.capacity_kwh,
            e_hi=np.full(n, b.soc_max * b.capacity_kwh),
            e0=b.soc_initial * b.capacity_kwh,
            dt_h=series.step_s / 3600,
            max_charge_kw=ch.max_charge_kw,
            max_discharge_kw=ch.max_discharge_kw,
            eta_c=ch.efficiency_charge,
            eta_d=ch.efficiency_discharge,
            deg_per_mwh=sc.degradation_cost_per_mwh,
            time_limit_s=120.0,
        )
    )
    if not res.ok:
        raise DataError(f"perfect foresight: {res.message}")
    return res.charge_kw - res.discharge_kw


# -- accounting and checks (on the trace alone) ------------------------------------------------------
def cost(series: PriceSeries, sc: Scenario, grid_kw) -> float:
    """price x grid energy + degradation per MWh taken out of the battery (the scenario's accounting)."""
    import numpy as np

    dt_h = series.step_s / 3600
    out_of_battery = np.maximum(-grid_kw, 0.0) * dt_h / sc.charger.efficiency_discharge
    return float(
        np.sum(series.price * grid_kw * dt_h) / 1000.0 + sc.degradation_cost_per_mwh * np.sum(out_of_battery) / 1000.0
    )


def check(series: PriceSeries, sc: Scenario, cal: Calendar, run: Run) -> tuple[list[str], int, int]:
    """Violations (departure SoC, SoC window, power limits, power while unplugged, terminal SoC),
    departures met and departures."""
    b, ch = sc.battery, sc.charger
    bad: list[str] = []
    for t, (p, s) in enumerate(zip(run.grid_kw, run.soc)):
        when = series.times[t].isoformat()
        if s < b.soc_min - TOL or s > b.soc_max + TOL:
            bad.append(f"{when}: SoC {s:.4f} outside [{b.soc_min}, {b.soc_max}]")
        if p > ch.max_charge_kw + TOL or p < -ch.max_discharge_kw - TOL:
            bad.append(f"{when}: power {p:.3f} kW beyond the charger's limits")
        if not cal.connected[t] and abs(p) > TOL:
            bad.append(f"{when}: power {p:.3f} kW while unplugged")
    met = 0
    for t in cal.departure_rows:
        if run.soc[t] >= sc.availability.departure_soc_min - TOL:
            met += 1
        else:
            bad.append(
                f"{series.times[t].isoformat()}: departure SoC {run.soc[t]:.4f} below "
                f"{sc.availability.departure_soc_min}"
            )
    if run.soc[-1] < sc.availability.terminal_soc_min - TOL:
        bad.append(f"end: SoC {run.soc[-1]:.4f} below the terminal {sc.availability.terminal_soc_min}")
    return bad, met, len(cal.departure_rows)


def make_strategy(name: str, series: PriceSeries, sc: Scenario, cal: Calendar) -> Strategy:
    if name == "planner":
        return PlannerStrategy(sc, **PLANNER_SETTINGS)
    if name == "cheapest":
        return Cheapest(sc)
    if name == "threshold":
        return Threshold(sc)
    if name == "baseline":
        return Baseline(sc)
    if name == "perfect":
        return Perfect(series, sc, cal)
    raise ValueError(name)


# The planner's settings for the backtest, chosen by the experiments in docs/planner.md.
PLANNER_SETTINGS: dict[str, Any] = {"forecast": "mean", "extend_days": 0, "terminal_value": "quantile:0.3"}


def backtest(
    prices: str | Path,
    scenario: str | Path,
    strategy: str = "planner",
    settings: dict[str, Any] | None = None,
    safety: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], Run, PriceSeries]:
    """``safety``: overrides of the site's v2g_safety settings (``safety_params``), for every run."""
    import numpy as np

    t0 = time.perf_counter()
    series = load_prices(prices)
    sc = load_scenario(scenario)
    market = VisibleMarket(series, sc)
    cal = market.calendar
    base = simulate(series, sc, Baseline(sc), market, safety)
    t_pf = time.perf_counter()
    perfect = Perfect(series, sc, cal)
    t_pf = time.perf_counter() - t_pf
    pf = simulate(series, sc, perfect, market, safety)
    if strategy == "baseline":
        run = base
    elif strategy == "perfect":
        run = pf
    else:
        strat = (
            PlannerStrategy(sc, **settings)
            if strategy == "planner" and settings
            else make_strategy(strategy, series, sc, cal)
        )
        run = simulate(series, sc, strat, market, safety)
    bad, met, deps = check(series, sc, cal, run)
    c_base, c_pf, c_run = (cost(series, sc, r.grid_kw) for r in (base, pf, run))
    denom = c_base - c_pf
    out: dict[str, Any] = {
        "prices": str(prices),
        "strategy": strategy,
        "rows": len(series),
        "price_unit": sc.market.price_unit,
        "baseline_cost": round(c_base, 4),
        "strategy_cost": round(c_run, 4),
        "perfect_foresight_cost": round(c_pf, 4),
        "share_of_perfect_foresight": round((c_base - c_run) / denom, 4) if denom > 0 else None,
        "departures_met": met,
        "departures": deps,
        "violations": len(bad),
        "violation_examples": bad[:10],
        "final_soc": round(float(run.soc[-1]), 4),
        "replans": run.replans,
        "scan_cycles": run.cycles,
        "mode_transitions": run.events.get("transition", 0),
        "safety_trips": run.events.get("trip", 0),
        "perfect_foresight_solve_s": round(t_pf, 3),
    }
    if run.solve_times:
        st = np.asarray(run.solve_times)
        out["solve_time_s"] = {
            "median": round(float(np.median(st)), 5),
            "max": round(float(st.max()), 5),
            "count": len(st),
        }
        out["plan_status"] = run.statuses
    out["runtime_s"] = round(time.perf_counter() - t0, 3)
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out, run, series


# -- output --------------------------------------------------------------------------------------------
def write_trace(path: str | Path, series: PriceSeries, run: Run) -> None:
    """``time,grid_kw,soc``: one row per price row; SoC at the END of the row (the scenario's format)."""
    with Path(path).open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["time", "grid_kw", "soc"])
        for t, p, s in zip(series.times, run.grid_kw, run.soc):
            w.writerow([t.isoformat(), f"{p:.9g}", f"{s:.9g}"])


def plot_week(path: str | Path, week: dt.date, series: PriceSeries, run: Run, unit: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    start = dt.datetime.combine(week, dt.time())
    rows = [i for i, t in enumerate(series.times) if start <= t < start + dt.timedelta(days=7)]
    if not rows:
        raise DataError(f"--week {week}: no price rows in that week")
    ts = [series.times[i] for i in rows]
    fig, (ax1, ax2, ax3) = plt.subplots(3, 1, sharex=True, figsize=(11, 7))
    ax1.step(ts, series.price[rows], where="post", color="tab:gray")
    ax1.set_ylabel(f"price ({unit})")
    ax2.bar(
        ts,
        run.grid_kw[rows],
        width=1 / 24,
        align="edge",
        color=["tab:green" if p >= 0 else "tab:red" for p in run.grid_kw[rows]],
    )
    ax2.axhline(0, color="black", lw=0.5)
    ax2.set_ylabel("grid kW (+ charge)")
    ends = [t + dt.timedelta(seconds=series.step_s) for t in ts]
    ax3.plot(ends, run.soc[rows], color="tab:blue")
    ax3.set_ylabel("SoC (end of hour)")
    ax3.set_ylim(0, 1)
    fig.suptitle(f"{run.strategy}: week of {week.isoformat()}")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def cli(argv: list[str]) -> int:
    from runtime.yamlload import ConfigError

    ap = argparse.ArgumentParser(prog="v2g-plc backtest", description=__doc__.split("\n\n")[0])
    ap.add_argument("--prices", required=True, type=Path, help="price CSV: time,price[,forecast columns]")
    ap.add_argument("--scenario", required=True, type=Path, help="scenario YAML (commuter.yaml)")
    ap.add_argument(
        "--strategy", default="planner", choices=["planner", "cheapest", "threshold", "baseline", "perfect"]
    )
    ap.add_argument("--trace", type=Path, metavar="CSV", help="write time,grid_kw,soc per price row")
    ap.add_argument("--plot", type=Path, metavar="PNG", help="draw one week (needs --week)")
    ap.add_argument("--week", type=dt.date.fromisoformat, metavar="YYYY-MM-DD", help="first day of the plotted week")
    a = ap.parse_args(argv)
    if a.plot and not a.week:
        ap.error("--plot needs --week YYYY-MM-DD")
    try:
        out, run, series = backtest(a.prices, a.scenario, a.strategy)
        if a.trace:
            write_trace(a.trace, series, run)
        if a.plot:
            plot_week(a.plot, a.week, series, run, out["price_unit"])
    except (DataError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(cli(sys.argv[1:]))
