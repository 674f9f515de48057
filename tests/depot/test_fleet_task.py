"""The fleet plan task: its re-plan triggers, plans within the connection, and each EVSE's fallback when
the plan goes stale, through the real engine of a depot site (backtest/depot.py builds it from
runtime/sites/depot.yaml) and through the task's own loop on a TaskContext."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from backtest.depot import Prices, load_scenario, site_file
from runtime.site import build_site
from runtime.tags import US, Image, Quality, TagUpdate, TagValue
from runtime.tasks.base import TaskContext
from runtime.tasks.fleet_task import FleetPlanner, FleetTask, FleetTaskParams

NY = ZoneInfo("America/New_York")
SCENARIO = Path(__file__).resolve().parents[2] / "runtime" / "data" / "scenarios" / "depot_short.yaml"
START = dt.datetime(2027, 1, 4, 17, 0, tzinfo=NY)


def curve(hours: int = 48, cheap: tuple[int, ...] = (2, 3, 4)) -> list[dict[str, Any]]:
    """Hourly prices from 17:00, cheap in the early morning (local hours ``cheap``)."""
    out = []
    for h in range(hours):
        s = START + dt.timedelta(hours=h)
        out.append(
            {
                "start": s.isoformat(),
                "end": (s + dt.timedelta(hours=1)).isoformat(),
                "price": 10.0 if s.hour in cheap else 80.0,
            }
        )
    return out


def image(now_us: int, evs: dict[int, dict[str, Any]], prices: Any = None, rev: int = 1, building: float = 5000.0):
    """A depot's image: EVSE n's EV values (soc, departure_s...), the meter, the price curve."""
    d: dict[str, TagValue] = {}
    total = 0.0
    for n in range(1, 4):
        ev = evs.get(n)
        on = ev is not None
        vals = {
            "ev.connected": on,
            "ev.soc": ev["soc"] if on else None,
            "ev.capacity_wh": 60_000.0 if on else None,
            "ev.soh": 0.95 if on else None,
            "ev.departure_s": ev.get("departure_s") if on else None,
            "ev.target_soc": 0.8 if on else None,
            "inverter.power": ev.get("power", 0.0) if on else 0.0,
        }
        total += vals["inverter.power"]
        for k, v in vals.items():
            d[f"evse{n}.{k}"] = TagValue(v, Quality.GOOD if v is not None else Quality.BAD, now_us)
    d["meter.power"] = TagValue(building + total, Quality.GOOD, now_us)
    p = curve() if prices is None else prices
    d["prices.day_ahead"] = TagValue(p, Quality.GOOD if p != "bad" else Quality.STALE, now_us)
    d["prices.updated"] = TagValue(rev, Quality.GOOD, now_us)
    return Image(d)


def planner(**kw: Any) -> FleetPlanner:
    base = {"evses": [1, 2, 3], "import_limit_w": 25_000.0, "export_limit_w": 15_000.0, "margin_w": 1000.0}
    return FleetPlanner(FleetTaskParams.model_validate({**base, **kw}))


def at(h: float) -> tuple[dt.datetime, int]:
    return START + dt.timedelta(hours=h), round(h * 3600 * US)


def test_replans_on_arrival_departure_prices_a_moved_departure_and_drift_only() -> None:
    fp = planner()
    two = {1: {"soc": 0.3, "departure_s": 13 * 3600.0}, 2: {"soc": 0.4, "departure_s": 13 * 3600.0}}
    local, us = at(0.0)
    assert fp.step(image(us, two), local, us) == "no plan"
    assert fp.planned is not None and [e.evse for e in fp.planned.evs] == [1, 2]
    local, us = at(0.1)
    assert (
        fp.step(image(us, {k: {**v, "departure_s": v["departure_s"] - 360} for k, v in two.items()}), local, us) is None
    )
    three = {**two, 3: {"soc": 0.5, "departure_s": 12 * 3600.0}}
    assert fp.step(image(us, three), local, us) == "arrival: evse3"
    assert fp.step(image(us, two), local, us) == "departure: evse3"
    assert fp.step(image(us, two, rev=2), local, us) == "new prices"
    moved = {1: {"soc": 0.3, "departure_s": 10 * 3600.0}, 2: two[2]}
    assert fp.step(image(us, moved, rev=2), local, us) == "departure of evse1 moved"
    # drift: evse2 far above what its plan expects now (nothing charges before the cheap hours)
    local, us = at(0.2)
    drifted = {1: moved[1], 2: {"soc": 0.5, "departure_s": 13 * 3600.0 - 720}}
    why = fp.step(image(us, drifted, rev=2), local, us)
    assert why is not None and why.startswith("drift of evse2")
    assert fp.step(image(us, drifted, rev=2), local, us) is None  # the new plan expects it


def test_the_plan_shares_the_cheap_hours_within_the_connection_and_meets_every_departure() -> None:
    fp = planner()
    evs = {n: {"soc": 0.25, "departure_s": 13.5 * 3600.0} for n in (1, 2, 3)}
    local, us = at(0.0)
    fp.step(image(us, evs, building=5000.0), local, us)
    pl = fp.planned
    assert pl is not None and pl.step_s == 900  # hourly prices planned in quarter-hours
    p = pl.plan.power_kw()
    assert (p.sum(axis=0) <= 25.0 - 1.0 - 5.0 + 1e-6).all()  # the connection less margin and building
    assert (p.sum(axis=0) >= -(15.0 - 1.0) - 5.0 - 1e-6).all()
    assert pl.plan.shortfall_kwh.sum() == 0.0
    leave = 54  # 13.5 h of quarters
    assert (pl.plan.energy_kwh[:, leave - 1] >= 0.82 * 57.0 - 1e-6).all()  # the target and its margin
    # the cheap hours (02:00-05:00 local = quarters 36..47) carry as much as the connection lets them: its
    # import less the margin, less the building
    assert p[:, 36:48].sum(axis=0) == pytest.approx([25.0 - 1.0 - 5.0] * 12)
    # the published tags: every EVSE's plan under its prefix; the one without a van planned at 0
    fp2 = planner()
    fp2.step(image(us, {1: evs[1]}), local, us)
    w = {t: (v, q) for t, v, q in fp2.writes(local.astimezone(dt.UTC), us / US)}
    assert w["evse2.plan.power"] == (0.0, Quality.GOOD)
    assert w["evse2.plan.reserve_soc"][1] is Quality.BAD
    assert w["evse1.plan.interval_end"][0] == pytest.approx(900.0)
    assert w["fleet.status"][0] == "optimal"


def test_without_prices_every_evse_falls_back() -> None:
    fp = planner()
    local, us = at(0.0)
    assert "not good" in (fp.step(image(us, {1: {"soc": 0.3, "departure_s": 3600.0}}, prices="bad"), local, us) or "")
    w = {t: (v, q) for t, v, q in fp.writes(local.astimezone(dt.UTC), us / US)}
    assert all(w[f"evse{n}.plan.power"][1] is Quality.BAD for n in (1, 2, 3))
    assert all(w[f"evse{n}.plan.reserve_soc"][1] is Quality.BAD for n in (1, 2, 3))
    assert w["fleet.status"][0] == "fallback"


async def _until(cx: TaskContext, job: asyncio.Task, img: Image, now_us: int, cond: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        await cx._publish(img, now_us)
        await asyncio.sleep(0.01)
        if job.done():
            job.result()
        assert time.monotonic() < deadline, "timed out waiting for the fleet task"


def test_the_task_plans_through_the_engine_and_a_stale_plan_leaves_each_evse_on_its_fallback(tmp_path: Path) -> None:
    """The example depot's site (4 EVSEs) on its real engine: the task's writes land as shared tags,
    each EVSE's modes follow its own plan.power; once the task stops writing, the plan tags go stale
    and each EVSE charges on its fallback, never discharging."""
    sc = load_scenario(SCENARIO)
    built = build_site(site_file(sc, tmp_path, fleet=True))
    engine = built.engine()
    task = next(t for t in built.tasks if isinstance(t, FleetTask))
    prices = Prices.load(sc, SCENARIO.parent)
    ins = [s.name for s in built.tags.specs.values() if s.direction.value == "input"]
    writes: list[TagUpdate] = []

    def inputs(now_us: int) -> list[TagUpdate]:
        vals: dict[str, Any] = {"meter.power": 8000.0, "meter.voltage": 240.0, "meter.frequency": 60.0}
        for n in range(1, 5):
            vals |= {
                f"evse{n}.ev.connected": n <= 2,
                f"evse{n}.ev.soc": 0.3 if n <= 2 else None,
                f"evse{n}.ev.capacity_wh": 60_000.0,
                f"evse{n}.ev.soh": 0.95,
                f"evse{n}.ev.departure_s": 12 * 3600.0 - now_us / US if n <= 2 else None,
                f"evse{n}.ev.target_soc": 0.8,
                f"evse{n}.inverter.power": 0.0,
                f"evse{n}.inverter.connected": True,
            }
        rev, cv = prices.published(sc.start + dt.timedelta(microseconds=now_us))
        ups = [TagUpdate(n, vals[n]) if vals.get(n) is not None else TagUpdate(n, None, Quality.BAD) for n in ins]
        return [*ups, TagUpdate("prices.day_ahead", cv), TagUpdate("prices.updated", rev)]

    async def main() -> None:
        cx = TaskContext("fleet", lambda n, v, q: writes.append(TagUpdate(n, v, q)), START, logging.getLogger("t"))
        job = asyncio.create_task(task.run(cx))
        now_us = 0
        try:
            res = engine.step(now_us, inputs(now_us))
            await _until(cx, job, res.image, now_us, lambda: any(w.name == "fleet.status" for w in writes))
            pending = list(writes)
            writes.clear()
            now_us += built.info.period_us
            res = engine.step(now_us, inputs(now_us) + pending)
            img = res.image
            assert img.value("fleet.status") == "optimal"
            for n in (1, 2):
                planned = img.value(f"evse{n}.plan.power")
                assert planned is not None
                assert img.value(f"evse{n}.plan.reserve_soc") is not None
            assert img.value("evse3.plan.power") == 0.0  # no van
            # the task stops: after stale_after_s of the cycle clock the plan tags are no longer good
            job.cancel()
            now_us += round((task.params.stale_after_s + 1) * US)
            res = engine.step(now_us, inputs(now_us))
            res = engine.step(now_us + built.info.period_us, inputs(now_us))
            img = res.image
            for n in (1, 2):
                assert img.value(f"evse{n}.plan.power") is None
                assert img.value(f"evse{n}.mode.request") == pytest.approx(11_000.0)  # fallback: charge
                assert res.outputs[f"evse{n}.inverter.setpoint"] >= 0.0  # never discharge
        finally:
            job.cancel()

    asyncio.run(main())


def test_a_van_cut_in_the_cheap_hours_is_caught_up_and_every_van_leaves_with_its_soc() -> None:
    """Three vans leave at 06:00 needing 0.8 (planned 0.83); cheap hours 02:00-05:00. Every plan keeps each
    van at or above its departure reserve (the SoC from which its fair share of the connection less the
    headroom still reaches its departure). The allocator then cuts van 1 to nothing from 02:00 to 02:45:
    the planner re-plans on it, the headroom the reserves left free catches it up, and all three leave with
    their SoC. Each van's SoC moves with what it was granted: its plan's power, 0 while cut. (The plan
    before the reserves met two of the three.)"""
    fp = planner()
    step_s, cap = 300, 57_000.0  # 60 kWh x SoH 0.95
    soc = {1: 0.25, 2: 0.3, 3: 0.3}
    leave_h = 13.0  # 17:00 + 13 h = 06:00
    reasons: list[str] = []
    for k in range(round(leave_h * 3600 / step_s)):
        h = k * step_s / 3600
        local, us = at(h)
        evs = {n: {"soc": s, "departure_s": leave_h * 3600 - k * step_s} for n, s in soc.items()}
        why = fp.step(image(us, evs), local, us)
        pl = fp.planned
        assert pl is not None
        if why is not None:
            reasons.append(why)
            if h < 9.0:  # nobody cut yet: the plan keeps every van at or above its reserve
                for j, e in enumerate(pl.evs):
                    res = [(i, r) for i, r in enumerate(pl.reserve[e.evse]) if r is not None and r > 0.2]
                    assert res and all(pl.plan.energy_kwh[j, i] >= r * cap / 1000 - 1e-6 for i, r in res)
        w = {t: v for t, v, _ in fp.writes(local.astimezone(dt.UTC), us / US)}
        power = {n: float(w[f"evse{n}.plan.power"]) for n in soc}
        assert sum(power.values()) <= 25_000 - 1000 - 5000 + 1e-3  # the plan within the connection
        if 9.0 <= h < 9.75:  # 02:00-02:45 local: the allocator gives van 1 nothing
            power[1] = 0.0
        for n, pw in power.items():
            soc[n] += pw * 0.95 * step_s / 3600 / cap
    assert any(r.startswith(("evse1 below its reserve", "drift of evse1")) for r in reasons), reasons
    assert all(s >= 0.8 for s in soc.values()), soc


def test_a_building_step_in_the_forecast_is_planned_for_from_the_quarter_before() -> None:
    """The building steps from 5 to 12 kW at 03:00, inside the cheap hours. The chargers follow the plan's
    new quarter in the scan in which the building steps, and the meter shows the step a read later; so the
    plan makes room for it from the quarter before (02:45), and the site never passes its limit, margin or not."""
    fp = planner(building_w=[["00:00", 5000.0], ["03:00", 12000.0], ["06:00", 5000.0]])
    evs = {n: {"soc": 0.25, "departure_s": 13.5 * 3600.0} for n in (1, 2, 3)}
    local, us = at(0.0)
    fp.step(image(us, evs), local, us)
    pl = fp.planned
    assert pl is not None and pl.plan.shortfall_kwh.sum() == 0.0
    total = pl.plan.power_kw().sum(axis=0)
    q = {f"{(17 + i // 4) % 24:02d}:{i % 4 * 15:02d}": i for i in range(96)}  # the first night: quarter -> index
    room = 25.0 - 1.0  # import less the margin
    assert total[q["02:30"]] == pytest.approx(room - 5.0)  # cheap, the whole room
    assert total[q["02:45"]] <= room - 12.0 + 1e-6  # the quarter before the step: its room already
    assert total[q["03:00"]] <= room - 12.0 + 1e-6


def test_a_limit_from_outside_is_planned_with_and_its_change_replans() -> None:
    """The back office lowers the 25 kW import to 15 kW (the allocator's own tags): the plan fits the lower
    limit, so its reserves assume only the room there is; a change of the limit re-plans, and a limit tag
    gone bad leaves the site file's rating, as for the allocator."""
    fp = planner(import_limit_tags=["ocpp.connection_import_w"])
    evs = {n: {"soc": 0.5, "departure_s": 13.5 * 3600.0} for n in (1, 2, 3)}

    def img(us: int, limit: float | None) -> Image:
        q = Quality.GOOD if limit is not None else Quality.BAD
        return Image({**image(us, evs), "ocpp.connection_import_w": TagValue(limit, q, us)})

    local, us = at(0.0)
    assert fp.step(img(us, 15_000.0), local, us) == "no plan"
    pl = fp.planned
    assert pl is not None
    assert pl.plan.power_kw().sum(axis=0).max() == pytest.approx(15.0 - 1.0 - 5.0)  # the limit, margin, building
    local, us = at(0.1)
    assert fp.step(img(us, 15_000.0), local, us) is None
    why = fp.step(img(us, 20_000.0), local, us)
    assert why is not None and why.startswith("connection limit changed: import 19.0 kW")
    why = fp.step(img(us, None), local, us)  # not good: the site file's 25 kW
    assert why is not None and "import 24.0 kW" in why
    assert fp.planned is not None and fp.planned.plan.power_kw().sum(axis=0).max() == pytest.approx(25.0 - 1.0 - 5.0)
