"""Decision rules the backtest compares: the planner, two reference rules users run today, the
scenario's baseline and the perfect-foresight bound.

A strategy sees a :class:`DecisionView` and returns a power schedule (kW, grid side, project sign) from
the current row on; the backtest follows it until the next re-plan, through the site's modes, dispatch
and safety programs on the scan engine.
The view is built by the backtest from published data only, so a strategy *cannot* look at a price
before its publication or a forecast before its visibility. The one exception is ``perfect``, which by
definition is handed the whole series when it is constructed (an upper bound, not a controller).
"""

from __future__ import annotations

import datetime as dt
import functools
import time
from bisect import bisect_left
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from programs.planner.model import Battery, Charger, PlanArrays, PlanRequest, PlugWindow
from programs.planner.replan import needs_replan
from programs.planner.scenario import Calendar, Scenario

if TYPE_CHECKING:
    import numpy as np

    from programs.planner.lp import LpInput


@dataclass(frozen=True)
class DecisionView:
    t: int  # row of the decision (the current interval)
    soc: float  # at the start of row t
    times: tuple[dt.datetime, ...]  # every row's start (the clock is public)
    step_s: int
    calendar: Calendar  # the driver's routine (public)
    prices: np.ndarray  # published prices of rows t, t+1, ... (only those published by now)
    forecasts: dict[str, np.ndarray]  # visible forecasts of the rows after the published ones
    history: np.ndarray  # published prices of the rows before t (the most recent last)


_NO_MARGIN = dt.timedelta(0)  # the backtest re-plans when its plan runs out, not an hour before


class Strategy:
    name = "strategy"
    uses_forecasts = False  # re-plan when new forecasts become visible

    def decide(self, view: DecisionView) -> np.ndarray:
        raise NotImplementedError

    def replan_reason(self, when: dt.datetime, soc: float, connected: bool) -> str | None:
        """Beyond the scenario's re-plan points: a reason to re-plan now (drift, plan running out)."""
        return None


def _window_end(cal: Calendar, t: int) -> int:
    """First row after t's connected run (len if the run lasts to the end)."""
    n = len(cal.connected)
    e = t
    while e < n and cal.connected[e]:
        e += 1
    return e


class Baseline(Strategy):
    """The scenario's baseline: full power from plug-in until the departure SoC, never discharge."""

    name = "baseline"

    def __init__(self, sc: Scenario):
        self.sc = sc

    def decide(self, view: DecisionView) -> np.ndarray:
        import numpy as np

        b, ch = self.sc.battery, self.sc.charger
        end = _window_end(view.calendar, view.t)
        out = np.zeros(max(0, end - view.t))
        e = view.soc * b.capacity_kwh
        goal = self.sc.availability.departure_soc_min * b.capacity_kwh
        dt_h = view.step_s / 3600
        for i in range(len(out)):
            p = min(ch.max_charge_kw, max(0.0, (goal - e) / (ch.efficiency_charge * dt_h)))
            out[i] = p
            e += ch.efficiency_charge * p * dt_h
        return out


class Cheapest(Strategy):
    """Charge-only in the cheapest *known* hours of the current plug-in window, just enough for the
    departure SoC (the terminal SoC for the last window). When the departure is not yet published
    (a weekend), the known hours still count: later publications re-plan the rest."""

    name = "cheapest"

    def __init__(self, sc: Scenario):
        self.sc = sc

    def decide(self, view: DecisionView) -> np.ndarray:
        import numpy as np

        b, ch = self.sc.battery, self.sc.charger
        cal = view.calendar
        end = _window_end(cal, view.t)
        n_known = min(end - view.t, len(view.prices))
        out = np.zeros(n_known)
        goal_soc = cal.floor_soc[end - 1] if end > view.t else 0.0
        need = (goal_soc - view.soc) * b.capacity_kwh
        dt_h = view.step_s / 3600
        if end > view.t + n_known:  # departure not yet published: only what cannot wait
            later = end - view.t - n_known
            need -= later * ch.max_charge_kw * ch.efficiency_charge * dt_h
        for i in np.argsort(view.prices[:n_known], kind="stable"):
            if need <= 1e-9:
                break
            p = min(ch.max_charge_kw, need / (ch.efficiency_charge * dt_h))
            out[i] = p
            need -= p * ch.efficiency_charge * dt_h
        return out


class Threshold(Strategy):
    """Day-ahead threshold rule: full-power charge in the 4 cheapest and discharge in the 4 dearest
    known hours of each plug-in window (the departure reserve and the site's safety keep the departure SoC
    and the SoC window)."""

    name = "threshold"

    def __init__(self, sc: Scenario, hours: int = 4):
        self.sc = sc
        self.hours = hours

    def decide(self, view: DecisionView) -> np.ndarray:
        import numpy as np

        ch = self.sc.charger
        end = _window_end(view.calendar, view.t)
        n_known = min(end - view.t, len(view.prices))
        out = np.zeros(n_known)
        order = np.argsort(view.prices[:n_known], kind="stable")
        k = min(self.hours * 3600 // view.step_s, n_known // 2)  # hours, at any resolution
        if k:
            out[order[:k]] = ch.max_charge_kw
            out[order[-k:]] = -ch.max_discharge_kw
        return out


@dataclass
class PlannerStrategy(Strategy):
    """The planner over what is visible: published prices, then the chosen forecast column, then
    optionally ``extend_days`` of a seasonal-naive guess (the same hours one week earlier, from published
    history), with ``terminal_value`` per MWh stored at the horizon's end. ``decide`` solves the planner's
    LP (``planner.schedule``) on the input read off the calendar (``lp_input``) and keeps the plan as
    arrays; ``request`` is the validated request the planner task would send, the reference for both."""

    sc: Scenario
    forecast: str | None = "mean"  # a forecast column, "mean" of all, or None
    extend_days: int = 0
    # "none" | "quantile:<q>" of the last week's published prices | "refill[:<days>]" (programs/planner/terminal.py)
    terminal_value: str = "none"
    name: str = "planner"
    solve_times: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    last_plan: PlanArrays | None = None
    _days: tuple[tuple[dt.datetime, ...], np.ndarray] | None = field(default=None, repr=False, compare=False)

    @property
    def uses_forecasts(self) -> bool:  # type: ignore[override]
        return self.forecast is not None

    def prices(self, view: DecisionView) -> np.ndarray:
        """The horizon's prices: published, then the forecast, then the seasonal-naive extension, cut
        at the series' end."""
        import numpy as np

        parts = [np.asarray(view.prices, dtype=float)]
        if self.forecast and view.forecasts:
            cols = list(view.forecasts.values()) if self.forecast == "mean" else [view.forecasts[self.forecast]]
            # the columns' mean as ``np.mean(cols, axis=0)`` works it out (added in order, then divided),
            # without stacking them into a new array first
            total = cols[0]
            for col in cols[1:]:
                total = total + col
            parts.append(total / len(cols))
        steps_per_day = 86400 // view.step_s
        if self.extend_days and len(view.history) >= 7 * steps_per_day:
            # the same rows one week earlier, from published history or the known horizon itself
            known = np.concatenate(parts)
            full = np.concatenate([view.history, known])
            stop = len(full)
            idx = np.arange(stop, stop + min(self.extend_days, 7) * steps_per_day) - 7 * steps_per_day
            parts.append(full[idx])
        prices = np.concatenate(parts)
        return prices[: min(len(prices), len(view.times) - view.t)]

    def stored_value(self, view: DecisionView) -> float:
        """Per MWh stored at the horizon's end (``terminal_value``)."""
        import numpy as np

        steps_per_day = 86400 // view.step_s
        if self.terminal_value.startswith("quantile:") and len(view.history):
            q = float(self.terminal_value.split(":", 1)[1])
            return float(np.quantile(view.history[-7 * steps_per_day :], q))
        if self.terminal_value.startswith("refill"):  # "refill" or "refill:<days>"
            from programs.planner.terminal import daily_minima, value_of_minima

            days = int(self.terminal_value.split(":", 1)[1]) if ":" in self.terminal_value else 7
            lo = max(0, view.t - days * steps_per_day)
            known = np.concatenate([view.history[len(view.history) - (view.t - lo) :], view.prices])
            span = slice(lo, lo + len(known))
            minima = daily_minima(self._day_numbers(view.times)[span], known, view.calendar.connected[span])
            v = value_of_minima(minima, self.sc.charger.efficiency_charge, days)
            return 0.0 if v is None else v
        return 0.0

    def request(self, view: DecisionView) -> PlanRequest:
        """The validated request the planner task would send for this view (``lp_input`` is the same
        input, built for the backtest without it; a test holds the two equal)."""
        sc = self.sc
        prices = self.prices(view)
        n = len(prices)
        return PlanRequest(
            start=view.times[view.t],
            step_s=view.step_s,
            prices=tuple(prices.tolist()),
            n_published=min(len(view.prices), n),
            soc=min(1.0, max(0.0, view.soc)),
            battery=self._plan_models[0],
            charger=self._plan_models[1],
            degradation_cost_per_mwh=sc.degradation_cost_per_mwh,
            windows=tuple(windows_from_calendar(view, view.t + n, sc)),
            terminal_soc_min=sc.availability.terminal_soc_min if view.t + n >= len(view.times) else None,
            terminal_value_per_mwh=self.stored_value(view),
            ends_operation=view.t + n >= len(view.times),
        )

    def lp_input(self, view: DecisionView) -> LpInput:
        """``planner.lp_input(self.request(view))``, read straight off the calendar's rows: the plug,
        the trip energy and the departure floors per row are what the request's plug-in windows say
        of the same rows (the calendar is where the backtest's windows come from). No pydantic, no
        per-interval objects: the backtest makes thousands of these."""
        import numpy as np

        from programs.planner.lp import LpInput

        b, ch, cal = self.sc.battery, self.sc.charger, view.calendar
        prices = self.prices(view)
        t, n = view.t, len(prices)
        stop = t + n
        ends = stop >= len(view.times)
        cap = b.capacity_kwh
        lo = np.full(n, b.soc_min * cap)
        deps = cal.departure_rows
        for r in deps[bisect_left(deps, t) : bisect_left(deps, stop)]:
            lo[r - t] = max(lo[r - t], min(float(cal.floor_soc[r]), b.soc_max) * cap)
        if ends:
            lo[-1] = max(lo[-1], min(self.sc.availability.terminal_soc_min, b.soc_max) * cap)
        conn = cal.connected[t:stop]
        drive = cal.drive_kwh[t:stop]
        if not conn[-1]:  # a trip whose plug-in lies past the horizon: no window states its energy
            drive = drive.copy()
            drive[max(0, cal.runs[0][stop - 1] - t) :] = 0.0
        return LpInput(
            price=prices,
            connected=conn,
            drive_kwh=drive,
            e_lo=lo,
            e_hi=np.full(n, b.soc_max * cap),
            e0=min(1.0, max(0.0, view.soc)) * cap,
            dt_h=view.step_s / 3600.0,
            max_charge_kw=ch.max_charge_kw,
            max_discharge_kw=ch.max_discharge_kw,
            eta_c=ch.efficiency_charge,
            eta_d=ch.efficiency_discharge,
            deg_per_mwh=self.sc.degradation_cost_per_mwh,
            # past the end of operation stored energy sells for nothing (``planner.lp_input``)
            value_end_per_mwh=0.0 if ends else self.stored_value(view),
        )

    @functools.cached_property
    def _plan_models(self) -> tuple[Battery, Charger]:
        """The scenario's battery and charger as the planner's frozen models, built once, not per re-plan."""
        return self.sc.plan_battery(), self.sc.plan_charger()

    def _day_numbers(self, times: tuple[dt.datetime, ...]) -> np.ndarray:
        """The calendar day of every row, worked out once per series (``terminal.day_numbers``)."""
        import numpy as np

        from programs.planner.terminal import day_numbers

        if self._days is None or self._days[0] is not times:
            self._days = (times, np.asarray(day_numbers(times)))
        return self._days[1]

    def decide(self, view: DecisionView) -> np.ndarray:
        import numpy as np

        from programs.planner.planner import schedule

        t0 = time.perf_counter()
        inp = self.lp_input(view)
        status, _, c, d, e = schedule(inp, "backtest")
        cap = self.sc.battery.capacity_kwh
        # as ``planner._to_plan`` rounds the published plan's power_w and bounds its soc_end, on numpy's
        # doubles as Python floats. Shortcuts that give the same doubles: a whole number of W (0, full
        # power) is its own rounding (``round`` costs a float-to-decimal conversion), and a SoC strictly
        # inside (0, 1) its own bound.
        power = [(w if w.is_integer() else round(w, 3)) / 1000.0 for w in ((c - d) * 1000.0).tolist()]
        soc_end = [x if 0.0 < x < 1.0 else min(1.0, max(0.0, x)) for x in (e / cap).tolist()]
        secs = time.perf_counter() - t0
        self.last_plan = PlanArrays(
            view.times[view.t],
            dt.timedelta(seconds=view.step_s),
            status,
            min(1.0, max(0.0, view.soc)),
            power,
            soc_end,
            inp.connected.tolist(),
            secs,
        )
        self.solve_times.append(secs)
        self.statuses[status] = self.statuses.get(status, 0) + 1
        return np.array(power)

    def replan_reason(self, when: dt.datetime, soc: float, connected: bool) -> str | None:
        p = self.last_plan
        if p is None:
            return None
        if when >= p.end:  # the series' end: nothing left to plan for
            return None
        return needs_replan(p, when, prices_key=p.prices_key, connected=connected, soc=soc, min_remaining=_NO_MARGIN)


def windows_from_calendar(view: DecisionView, stop: int, sc: Scenario) -> list[PlugWindow]:
    """The connected runs of rows [t, stop) as plug-in windows, with departure SoC and trip energy."""
    cal, times = view.calendar, view.times
    step = dt.timedelta(seconds=view.step_s)
    n = len(times)
    out = []
    first, after = cal.runs
    arrivals, departures = cal.arrivals, cal.departures
    r = view.t
    if not cal.connected[r]:  # away now: the previous window tells how much of the trip is behind us
        p = first[r]
        if p > 0:
            out.append(PlugWindow(start=times[first[p - 1]], end=times[p]))
    while r < stop:
        if not cal.connected[r]:
            r = after[r]
            continue
        # a run that started before t: its real start (for the trip energy already used)
        s, e = first[r], after[r]
        end_t = times[e] if e < n else times[-1] + step
        out.append(
            PlugWindow(
                start=times[s],
                end=end_t,
                departure_soc_min=float(cal.floor_soc[e - 1]) if (e - 1) in departures else None,
                trip_energy_kwh=sc.availability.trip_energy_kwh if s in arrivals else 0.0,
            )
        )
        r = e
    return out
