"""When to re-plan, as a pure function, so the task and the backtest share one rule and tests can
table it. A plan is cheap (milliseconds) but re-planning every scan would let small measurement noise
shake the schedule; so a plan stands until something it assumed is no longer true."""

from __future__ import annotations

import datetime as dt

from programs.planner.model import Plan, PlanArrays


def needs_replan(
    plan: Plan | PlanArrays | None,
    now: dt.datetime,
    *,
    prices_key: str,
    connected: bool | None,
    soc: float | None,
    drift_soc: float = 0.05,
    min_remaining: dt.timedelta = dt.timedelta(hours=1),
    retry_fallback_after: dt.timedelta = dt.timedelta(minutes=5),
) -> str | None:
    """The reason to re-plan now, or None to keep the plan.

    In order: no plan; new prices (the key of the price data differs: publication, a new forecast, a
    stale curve turning good); the plan runs out (less than ``min_remaining`` left); plug-in or unplug
    (the plan's current interval assumed the other); drift (measured SoC differs from what the plan
    expects now by more than ``drift_soc``: dispatch could only chase it with power the plan did not
    price); a fallback plan older than ``retry_fallback_after`` (try the solver again).
    """
    if plan is None:
        return "no plan"
    if prices_key != plan.prices_key:
        return "new prices"
    planned = plan.connected_at(now)
    if planned is None or now + min_remaining > plan.end:
        return "plan runs out"
    if connected is not None and connected != planned:
        return "plug-in" if connected else "unplugged"
    if soc is not None and connected:
        expected = plan.expected_soc(now)
        if expected is not None and abs(soc - expected) > drift_soc:
            return f"drift: SoC {soc:.3f}, plan expects {expected:.3f}"
    if plan.status == "fallback" and now - plan.created >= retry_fallback_after:
        return "retry after fallback"
    return None
