"""The site without its planner (docs/modes.md "Without a planner"): once the planner task's tags turn
stale, no discharge within one scan of their age limit, and charging toward the departure SoC goes on.

The plan tags are the planner task's own declarations (its age limit included); the scan is the real
``modes`` and ``dispatch`` on the shared cycle rig, in simulated time: the task writes once and dies.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from backtest.rig import CycleRig
from programs.dispatch import Dispatch, DispatchParams
from programs.modes import ModeParams, Modes
from programs.planner.model import Battery, Charger, PlanRequest, PlugWindow
from programs.planner.reserve import reserve_soc
from runtime.api import SiteInfo
from runtime.tags import US, TagSpec, TagType, TagUpdate
from runtime.tasks.planner_task import PlannerTask, PlannerTaskParams
from tests.programs.conftest import OUTPUTS

SITE = SiteInfo("fallback", 240.0, 60.0, 20_000)
STEP_S = 1  # simulated seconds between scans (the rig's clock; the ramp uses the site's period)

PLANT = (
    TagSpec("ev.connected", TagType.BOOL),
    TagSpec("ev.soc", TagType.FLOAT),
    TagSpec("plc.snr", TagType.FLOAT, "dB"),
    TagSpec("safety.trip", TagType.STR),
    TagSpec("safety.limit_charge", TagType.FLOAT, "W"),
    TagSpec("safety.limit_discharge", TagType.FLOAT, "W"),
    *OUTPUTS,
)
HEALTHY = {
    "ev.connected": True,
    "plc.snr": 30.0,
    "safety.trip": "",
    "safety.limit_charge": 11e3,
    "safety.limit_discharge": 11e3,
}


def rig() -> tuple[CycleRig, float]:
    task = PlannerTask("planner", PlannerTaskParams(), SITE)
    plan_tags = [s for s in task.declare() if s.name != "plan.json"]
    limit_s = task.params.stale_after_s
    assert all(s.stale_after_s == limit_s for s in plan_tags)
    programs = [Modes("modes", ModeParams(), SITE), Dispatch("dispatch", DispatchParams(ramp_w_per_s=1e6), SITE)]
    return CycleRig(SITE, programs, (), (*PLANT, *plan_tags)), limit_s


def run(r: CycleRig, soc: float, plan: dict[str, Any] | None, seconds: float) -> list[tuple[float, str, float]]:
    """Scan every STEP_S for ``seconds``; ``plan`` is written at the first scan only (then the task is
    dead). Returns (time s, mode, setpoint W) per scan."""
    out = []
    end = r.now_us + round(seconds * US)
    first = True
    while r.now_us < end:
        ups = [TagUpdate(n, v) for n, v in {**HEALTHY, "ev.soc": soc}.items()]
        if first and plan is not None:
            ups += [TagUpdate(n, v) for n, v in plan.items()]
        first = False
        res = r.step(ups)
        sp = res.outputs["inverter.setpoint"] if res.outputs["inverter.enable"] else 0.0
        out.append((r.now_us / US, res.image.value("mode.state"), sp))
        r.advance(STEP_S * US)
    return out


PLAN_DISCHARGE = {"plan.power": -11e3, "plan.soc_target": 0.5, "plan.interval_end": 3600.0, "plan.reserve_soc": 0.3}


def test_stale_plan_stops_discharge_within_its_age_limit_and_charging_resumes() -> None:
    r, limit_s = rig()
    trace = run(r, 0.6, PLAN_DISCHARGE, limit_s + 5)
    while_good = [(t, m, sp) for t, m, sp in trace if t <= limit_s]
    after = [(t, m, sp) for t, m, sp in trace if t > limit_s + 1]
    assert all(m == "discharge" and sp < 0 for _, m, sp in while_good[1:])  # the plan is followed while good
    assert after and all(sp >= 0 for _, _, sp in after)  # no discharge one scan past the limit
    # the SoC (0.6) is below the departure SoC (0.8): the fallback charges, at its stated power
    assert after[-1][1] == "charge" and after[-1][2] == pytest.approx(11e3)
    assert r.last is not None and r.last.image.value("mode.request") == 11e3


def test_stale_plan_never_discharges_and_stops_charging_at_the_departure_soc() -> None:
    r, limit_s = rig()
    trace = run(r, 0.85, PLAN_DISCHARGE, limit_s + 5)
    after = [(m, sp) for t, m, sp in trace if t > limit_s + 1]
    assert after and all(m == "idle" and sp == 0.0 for m, sp in after)  # zero: neither sign


def test_no_plan_at_all_charges_to_the_departure_soc() -> None:
    """A runtime started while the task process is down: no plan was ever written."""
    r, _ = rig()
    trace = run(r, 0.5, None, 3)
    assert [m for _, m, _ in trace] == ["charge"] * 3 and trace[-1][2] == pytest.approx(11e3)


def test_a_good_plan_discharges_only_above_its_reserve() -> None:
    r, _ = rig()
    trace = run(r, 0.31, {**PLAN_DISCHARGE, "plan.reserve_soc": 0.305}, 2)
    assert all(m == "idle" and sp == 0.0 for _, m, sp in trace)  # within the hysteresis: no start
    r, _ = rig()
    trace = run(r, 0.5, PLAN_DISCHARGE, 2)
    assert trace[-1][1] == "discharge" and trace[-1][2] < 0


def test_reserve_is_what_full_power_still_needs_before_the_departure() -> None:
    """07:00 departure at 0.8, 11 kW at 0.933 = 0.171 SoC per hour: at the end of 05:00-06:00 the
    reserve is 0.8 - 0.171; earlier it falls to the SoC window's floor."""
    start = dt.datetime(2026, 1, 5, 0, 0)
    req = PlanRequest(
        start=start,
        prices=(50.0,) * 8,
        n_published=8,
        soc=0.5,
        battery=Battery(capacity_kwh=60.0, soc_min=0.2, soc_max=0.9),
        charger=Charger(max_charge_kw=11.0, max_discharge_kw=11.0, efficiency_charge=0.933, efficiency_discharge=0.933),
        windows=(PlugWindow(start=start, end=start + dt.timedelta(hours=7), departure_soc_min=0.8),),
    )
    res = reserve_soc(req)
    per_h = 11.0 * 0.933 / 60.0
    assert res[6] == pytest.approx(0.8)
    assert res[5] == pytest.approx(0.8 - per_h)
    assert res[4] == pytest.approx(0.8 - 2 * per_h)
    assert res[0] == pytest.approx(0.2) and res[7] == pytest.approx(0.2)  # away after 07:00
