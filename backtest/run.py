"""One backtest: the strategy, the baseline and the perfect-foresight bound, each run on the site."""

from __future__ import annotations

import resource
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import TYPE_CHECKING, Any

from backtest.accounting import check, cost
from backtest.data import load_prices, load_scenario
from backtest.market import VisibleMarket
from backtest.site import PERIOD_S, RESERVE_MARGIN_CYCLES, Site, reserve_kwh
from backtest.strategies import Perfect, make_strategy
from programs.planner.scenario import PriceSeries, Scenario
from programs.planner.strategies import Baseline, PlannerStrategy, Strategy
from runtime.tags import US

if TYPE_CHECKING:
    import numpy as np


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
    skip: bool = True,
) -> Run:
    """``skip=False`` scans every row (the reference the skipping is tested against)."""
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
    site = Site(sc, safety, skip)
    step_us = series.step_s * US
    grid: list[float] = []
    soc: list[float] = []
    arrivals = set(cal.arrival_rows)
    # per-row facts as Python values once (the same doubles): indexing numpy per row costs the loop more
    connected, floors, discharge_floors, drives = (
        a.tolist() for a in (cal.connected, floor, discharge_floor, cal.drive_kwh)
    )
    times = series.times
    sched: Any = np.zeros(0)
    s0 = 0
    last_pub = last_vis = -1
    replans = 0
    due = False  # a re-plan point met while the EV was away, answered at its plug-in
    pubs = market.published_counts
    viss = market.forecast_counts if strategy.uses_forecasts else [-1] * n
    for t in range(n):
        e = site.e
        npub, nvis = pubs[t], viss[t]
        due = due or t == 0 or t in arrivals or npub != last_pub or nvis != last_vis
        # No schedule reaches an unplugged EV (``Site.request``), so a re-plan point met while it is away
        # waits for its plug-in, which every trip ends with (an arrival row) and which re-plans from what
        # is visible then: a plan solved at the away row itself would never be followed. A quarter of a
        # commuter's re-plans (the noon publication) fall while it is at work.
        if connected[t] and (due or strategy.replan_reason(times[t], e / cap, True) is not None):
            sched, s0 = strategy.decide(market.view(t, e / cap)), t
            replans += 1
            due = False
        last_pub, last_vis = npub, nvis
        i = t - s0
        p = float(sched[i]) if i < len(sched) else 0.0
        start = site.origin_us + t * step_us
        grid.append(site.run_row(start, start + step_us, connected[t], p, floors[t], discharge_floors[t], drives[t]))
        soc.append(site.e / cap)
    return Run(
        strategy.name,
        np.array(grid, dtype=float),
        np.array(soc, dtype=float),
        replans,
        list(getattr(strategy, "solve_times", [])),
        dict(getattr(strategy, "statuses", {})),
        site.rig.cycles,
        dict(site.rig.events),
    )


def reference_runs(
    prices: Path,
    scenario: Path,
    series: PriceSeries,
    sc: Scenario,
    market: VisibleMarket,
    safety: Mapping[str, Any] | None,
    cache_dir: Path | None,
) -> tuple[Run, Run, float]:
    """(baseline, perfect foresight, the perfect-foresight solve's seconds), from the cache when it holds
    them (backtest/cache.py), else run and stored."""
    from backtest import cache

    runs: list[Run] = []
    t_pf = 0.0
    for kind in ("baseline", "perfect"):
        k = cache.key(kind, prices, scenario, safety) if cache_dir is not None else ""
        hit = cache.load(cache_dir, k) if cache_dir is not None else None
        if hit is not None:
            run, extra = hit
        else:
            t = time.perf_counter()
            strat = Baseline(sc) if kind == "baseline" else Perfect(series, sc, market.calendar)
            extra = {"solve_s": round(time.perf_counter() - t, 3)}
            run = simulate(series, sc, strat, market, safety)
            if cache_dir is not None:
                cache.store(cache_dir, k, run, extra)
        runs.append(run)
        t_pf = extra["solve_s"]
    return runs[0], runs[1], t_pf


def backtest(
    prices: str | Path,
    scenario: str | Path,
    strategy: str = "planner",
    settings: dict[str, Any] | None = None,
    safety: Mapping[str, Any] | None = None,
    cache_dir: Path | None = None,
) -> tuple[dict[str, Any], Run, PriceSeries]:
    """``safety``: overrides of the site's v2g_safety settings (``safety_params``), for every run;
    ``cache_dir``: where the baseline and perfect-foresight runs are cached (None: not cached)."""

    t0 = time.perf_counter()
    series = load_prices(prices)
    sc = load_scenario(scenario)
    market = VisibleMarket(series, sc)
    cal = market.calendar
    base, pf, t_pf = reference_runs(Path(prices), Path(scenario), series, sc, market, safety, cache_dir)
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
        st = run.solve_times  # statistics.median: numpy's would import numpy.ma (20 ms) for one number
        out["solve_time_s"] = {"median": round(float(median(st)), 5), "max": round(max(st), 5), "count": len(st)}
        out["plan_status"] = run.statuses
    out["runtime_s"] = round(time.perf_counter() - t0, 3)
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out, run, series
