"""``v2g-plc backtest --prices CSV --scenario YAML``: arbitrage over a price series in simulated time.

One step per price row. At each re-plan point the strategy gets a :class:`DecisionView` built here
from what is *visible* at the start of that row (published prices, visible forecasts, past prices, the
public plug-in calendar) and nothing else: the view is sliced out of the series, so a strategy has no
handle on unpublished data. Re-plan points, exactly as the scenario implies: the first row, every
plug-in (arrival), every row at which more prices are published (12:00 D-1) and, for strategies that
use forecasts, every row at which more forecasts become visible (00:00 D-1); the planner also re-plans
when ``needs_replan`` says the battery drifted from its plan or the plan ran out.

Between re-plans the schedule is followed through *dispatch* (the requested power clamped to the
charger's limits, zero while unplugged, the SoC window, and a departure reserve that forces charging
when full power would otherwise no longer reach the next departure or terminal SoC) against a
simulated battery. The trace is then checked independently of that dispatch for violations and
priced by the scenario's accounting.
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

if TYPE_CHECKING:
    import numpy as np

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
    return PriceSeries(tuple(times), np.asarray(cols[0]),
                       {name: np.asarray(c) for name, c in zip(header[2:], cols[1:])}, step_s)


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
        hist = s.price[max(0, t - HISTORY_DAYS * 86400 // s.step_s):t].copy()
        return DecisionView(t=t, soc=soc, times=s.times, step_s=s.step_s, calendar=self.calendar,
                            prices=s.price[t:npub].copy(), forecasts=fc, history=hist)


# -- dispatch against the simulated battery ----------------------------------------------------------
def reserve_kwh(cal: Calendar, sc: Scenario, dt_h: float):
    """Energy needed at the end of each row so that full-power charging still meets every later floor."""
    import numpy as np

    b, ch = sc.battery, sc.charger
    n = len(cal.connected)
    req = cal.floor_soc * b.capacity_kwh
    gain = ch.efficiency_charge * ch.max_charge_kw * dt_h * cal.connected
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


def dispatch(p: float, e: float, t: int, cal: Calendar, reserve, sc: Scenario, dt_h: float) -> float:
    """Safety and departure limits on a requested power (kW). Hard limits (plug, charger, SoC ceiling)
    win over the departure reserve, which wins over the request."""
    if not cal.connected[t]:
        return 0.0
    ch, b = sc.charger, sc.battery
    d = cal.drive_kwh[t]
    lo = max(-ch.max_discharge_kw, power_for(e, reserve[t], d, sc, dt_h))
    hi = min(ch.max_charge_kw, power_for(e, b.soc_max * b.capacity_kwh, d, sc, dt_h))
    p = min(max(p, lo), hi)
    return max(-ch.max_discharge_kw, min(ch.max_charge_kw, p))


@dataclass
class Run:
    strategy: str
    grid_kw: np.ndarray
    soc: np.ndarray  # at the end of each row
    replans: int
    solve_times: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)


def simulate(series: PriceSeries, sc: Scenario, strategy: Strategy, market: VisibleMarket | None = None) -> Run:
    import numpy as np

    market = market or VisibleMarket(series, sc)
    cal = market.calendar
    n = len(series)
    dt_h = series.step_s / 3600
    reserve = reserve_kwh(cal, sc, dt_h)
    cap = sc.battery.capacity_kwh
    e = sc.battery.soc_initial * cap
    grid = np.zeros(n)
    soc = np.zeros(n)
    arrivals = set(cal.arrival_rows)
    sched: Any = np.zeros(0)
    s0 = 0
    last_pub = last_vis = -1
    replans = 0
    for t in range(n):
        npub = market.published_count(t)
        nvis = market.forecast_count(t) if strategy.uses_forecasts else last_vis
        if (t == 0 or t in arrivals or npub != last_pub or nvis != last_vis
                or strategy.replan_reason(series.times[t], e / cap, bool(cal.connected[t])) is not None):
            sched, s0 = strategy.decide(market.view(t, e / cap)), t
            replans += 1
        last_pub, last_vis = npub, nvis
        i = t - s0
        p = float(sched[i]) if i < len(sched) else 0.0
        p = dispatch(p, e, t, cal, reserve, sc, dt_h)
        e = energy_after(e, p, cal.drive_kwh[t], sc, dt_h)
        grid[t] = p
        soc[t] = e / cap
    return Run(strategy.name, grid, soc, replans, list(getattr(strategy, "solve_times", [])),
               dict(getattr(strategy, "statuses", {})))


class Perfect(Strategy):
    """The least-cost schedule over the whole series with every price known (an upper bound)."""

    name = "perfect"

    def __init__(self, series: PriceSeries, sc: Scenario, cal: Calendar):
        self._schedule = perfect_schedule(series, sc, cal)

    def decide(self, view: DecisionView):
        return self._schedule[view.t:]


def perfect_schedule(series: PriceSeries, sc: Scenario, cal: Calendar):
    import numpy as np

    from programs.planner.lp import LpInput, solve

    b, ch = sc.battery, sc.charger
    n = len(series)
    res = solve(LpInput(
        price=series.price, connected=cal.connected, drive_kwh=cal.drive_kwh,
        e_lo=cal.floor_soc * b.capacity_kwh, e_hi=np.full(n, b.soc_max * b.capacity_kwh),
        e0=b.soc_initial * b.capacity_kwh, dt_h=series.step_s / 3600, max_charge_kw=ch.max_charge_kw,
        max_discharge_kw=ch.max_discharge_kw, eta_c=ch.efficiency_charge, eta_d=ch.efficiency_discharge,
        deg_per_mwh=sc.degradation_cost_per_mwh, time_limit_s=120.0))
    if not res.ok:
        raise DataError(f"perfect foresight: {res.message}")
    return res.charge_kw - res.discharge_kw


# -- accounting and checks (on the trace alone) ------------------------------------------------------
def cost(series: PriceSeries, sc: Scenario, grid_kw) -> float:
    """price x grid energy + degradation per MWh taken out of the battery (the scenario's accounting)."""
    import numpy as np

    dt_h = series.step_s / 3600
    out_of_battery = np.maximum(-grid_kw, 0.0) * dt_h / sc.charger.efficiency_discharge
    return float(np.sum(series.price * grid_kw * dt_h) / 1000.0
                 + sc.degradation_cost_per_mwh * np.sum(out_of_battery) / 1000.0)


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
            bad.append(f"{series.times[t].isoformat()}: departure SoC {run.soc[t]:.4f} below "
                       f"{sc.availability.departure_soc_min}")
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


def backtest(prices: str | Path, scenario: str | Path, strategy: str = "planner",
             settings: dict[str, Any] | None = None) -> tuple[dict[str, Any], Run, PriceSeries]:
    import numpy as np

    t0 = time.perf_counter()
    series = load_prices(prices)
    sc = load_scenario(scenario)
    market = VisibleMarket(series, sc)
    cal = market.calendar
    base = simulate(series, sc, Baseline(sc), market)
    t_pf = time.perf_counter()
    perfect = Perfect(series, sc, cal)
    t_pf = time.perf_counter() - t_pf
    pf = simulate(series, sc, perfect, market)
    if strategy == "baseline":
        run = base
    elif strategy == "perfect":
        run = pf
    else:
        strat = PlannerStrategy(sc, **settings) if strategy == "planner" and settings else \
            make_strategy(strategy, series, sc, cal)
        run = simulate(series, sc, strat, market)
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
        "perfect_foresight_solve_s": round(t_pf, 3),
    }
    if run.solve_times:
        st = np.asarray(run.solve_times)
        out["solve_time_s"] = {"median": round(float(np.median(st)), 5), "max": round(float(st.max()), 5),
                               "count": len(st)}
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
    ax2.bar(ts, run.grid_kw[rows], width=1 / 24, align="edge",
            color=["tab:green" if p >= 0 else "tab:red" for p in run.grid_kw[rows]])
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
    ap.add_argument("--strategy", default="planner", choices=["planner", "cheapest", "threshold", "baseline", "perfect"])
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
