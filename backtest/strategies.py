"""The strategies ``v2g-plc backtest`` runs, in one table, and the perfect-foresight bound."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from backtest.data import DataError
from programs.planner.scenario import Calendar, PriceSeries, Scenario
from programs.planner.strategies import Baseline, Cheapest, DecisionView, PlannerStrategy, Strategy, Threshold


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


# The planner's settings for the backtest, chosen by the experiments in docs/planner.md.
PLANNER_SETTINGS: dict[str, Any] = {"forecast": "mean", "extend_days": 0, "terminal_value": "refill"}

# name -> how to build it from the series, the scenario and its calendar: the one list of strategies
# (the command line's choices, --compare's rows and the benchmark read it from here).
STRATEGIES: dict[str, Callable[[PriceSeries, Scenario, Calendar], Strategy]] = {
    "planner": lambda series, sc, cal: PlannerStrategy(sc, **PLANNER_SETTINGS),
    "cheapest": lambda series, sc, cal: Cheapest(sc),
    "threshold": lambda series, sc, cal: Threshold(sc),
    "baseline": lambda series, sc, cal: Baseline(sc),
    "perfect": Perfect,
}


def make_strategy(name: str, series: PriceSeries, sc: Scenario, cal: Calendar) -> Strategy:
    try:
        build = STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; one of {', '.join(STRATEGIES)}") from None
    return build(series, sc, cal)
