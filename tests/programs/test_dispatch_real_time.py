"""Dispatch's real-time rule on a synthetic series (docs/planner.md "Real-time prices"): a real-time price
far above the plan's day-ahead price pauses charging and raises discharge to the rating, one far below
does the opposite, only while the SoC stays within the margin of what the plan expects, never changing
the direction the mode machine chose; otherwise (close prices, a stale real-time price) the plan."""

from __future__ import annotations

from typing import Any

import pytest

from programs.dispatch import Dispatch, DispatchParams
from programs.modes import ModeParams, Modes
from runtime.tags import Direction, TagSpec, TagType
from tests.programs.conftest import GOOD, SITE, Rig

RT = (
    TagSpec("prices.real_time", TagType.FLOAT, "currency/MWh", Direction.SHARED, stale_after_s=900),
    TagSpec("plan.price", TagType.FLOAT, "currency/MWh", Direction.SHARED, stale_after_s=900),
)


def rig() -> Rig:
    d = Dispatch("dispatch", DispatchParams(rt_price_tag="prices.real_time", ramp_w_per_s=1e6), SITE)
    return Rig([Modes("modes", ModeParams(), SITE), d], extra=RT)


def run(
    plan_w: float, rt: float | None, soc: float = 0.5, expected: float = 0.5, scans: int = 3
) -> tuple[str, float, str]:
    """Scans with the plan expecting ``expected`` now (interval ending now: no planned energy to come)."""
    r = rig()
    values: dict[str, Any] = {
        **GOOD,
        "plan.power": plan_w,
        "plan.soc_target": expected,
        "plan.interval_end": 0.0,
        "plan.price": 50.0,
        "ev.soc": soc,
    }
    stale = ()
    if rt is None:
        stale = ("prices.real_time",)
        values["prices.real_time"] = 500.0
    else:
        values["prices.real_time"] = rt
    for _ in range(scans):
        r.step(values, stale=stale)
    return r.value("mode.state"), r.value("inverter.setpoint"), r.value("dispatch.limit")


@pytest.mark.parametrize(
    ("plan_w", "rt", "soc", "mode", "setpoint", "why"),
    [
        # close to day-ahead: the plan (5 kW / -5 kW)
        (5000.0, 120.0, 0.5, "charge", 5000.0, ""),
        (-5000.0, -20.0, 0.5, "discharge", -5000.0, ""),
        # real time far dearer: charging pauses, discharge at the rating
        (5000.0, 200.0, 0.5, "charge", 0.0, "real time"),
        (-5000.0, 200.0, 0.5, "discharge", -11000.0, "real time"),
        # ... only while the SoC is within the margin (0.05) below the plan's expectation
        (5000.0, 200.0, 0.44, "charge", 5000.0 + 2000.0, ""),  # behind the plan: the plan and its correction
        # real time far cheaper: discharge pauses, charging at the rating, within the margin above
        (-5000.0, -100.0, 0.5, "discharge", 0.0, "real time"),
        (5000.0, -100.0, 0.5, "charge", 11000.0, "real time"),
        (5000.0, -100.0, 0.56, "charge", 5000.0 - 2000.0, ""),
        # a stale real-time price: the plan
        (5000.0, None, 0.5, "charge", 5000.0, ""),
        # the direction is the mode machine's: no plan, no power, whatever real time does
        (0.0, 500.0, 0.5, "idle", 0.0, ""),
    ],
)
def test_real_time_rule(plan_w: float, rt: float | None, soc: float, mode: str, setpoint: float, why: str) -> None:
    got = run(plan_w, rt, soc)
    assert got[0] == mode
    assert got[1] == pytest.approx(setpoint)
    assert got[2] == why


def test_without_a_real_time_tag_dispatch_needs_no_plan_price() -> None:
    assert "plan.price" not in Dispatch("d", DispatchParams(), SITE).requires()
    with_rt = Dispatch("d", DispatchParams(rt_price_tag="prices.real_time"), SITE).requires()
    assert {"prices.real_time", "plan.price"} <= set(with_rt)
