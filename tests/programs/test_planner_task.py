"""The planner task driven through a real TaskContext: tags written, schema kept, fallback on bad prices."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import jsonschema
import pytest

from runtime.api import SiteInfo
from runtime.tags import US, Image, Quality, TagValue
from runtime.tasks.base import TaskContext
from runtime.tasks.planner_task import PlannerTask, PlannerTaskParams, contiguous_from, parse_curve

NY = ZoneInfo("America/New_York")
START = dt.datetime(2018, 1, 1, 0, 0, tzinfo=NY)  # a Monday, plugged in, departs at 07:00
SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "programs/planner/plan.schema.json").read_text())


def curve(hours: int = 48, cheap: tuple[int, ...] = (2, 3)) -> list[dict]:
    t0 = START.astimezone(dt.UTC)
    out = []
    for h in range(hours):
        s = t0 + dt.timedelta(hours=h)
        out.append(
            {
                "start": s.isoformat(),
                "end": (s + dt.timedelta(hours=1)).isoformat(),
                "price": 5.0 if h % 24 in cheap else 60.0,
            }
        )
    return out


def image(now_us: int, prices, soc=0.5, connected=True, quality=Quality.GOOD) -> Image:
    return Image(
        {
            "prices.day_ahead": TagValue(prices, quality, now_us),
            "ev.soc": TagValue(soc, Quality.GOOD if soc is not None else Quality.BAD, now_us),
            "ev.connected": TagValue(connected, Quality.GOOD, now_us),
        }
    )


async def _until(
    cx: TaskContext, job: asyncio.Task, img: Image, now_us: int, cond, what: str, timeout: float = 20.0
) -> None:
    """Publish like the scan does (every cycle) until the task has done what we wait for."""
    deadline = time.monotonic() + timeout
    while True:
        await cx._publish(img, now_us)
        await asyncio.sleep(0.01)
        if job.done():
            job.result()  # surface the task's exception
        if cond():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")


def test_task_publishes_the_plan_and_falls_back_without_prices():
    async def main():
        writes: list[tuple[str, object, Quality]] = []
        cx = TaskContext("planner", lambda n, v, q: writes.append((n, v, q)), START, logging.getLogger("t"))
        site = SiteInfo("t", 240.0, 60.0, 20_000)
        task = PlannerTask("planner", PlannerTaskParams(), site)
        specs = {s.name: s for s in task.declare()}
        assert set(specs) == {
            "plan.power",
            "plan.soc_target",
            "plan.interval_end",
            "plan.price",
            "plan.reserve_soc",
            "plan.json",
        }
        assert all(s.stale_after_s for s in specs.values())
        job = asyncio.create_task(task.run(cx))
        try:

            def last(name):
                return next((v for n, v, _ in reversed(writes) if n == name), None)

            await _until(cx, job, image(0, curve()), 0, lambda: last("plan.json") is not None, "the first plan")
            plan = last("plan.json")
            jsonschema.validate(plan, SCHEMA)
            assert plan["status"] == "optimal"
            # 18 kWh needed by 07:00 (0.5 -> 0.8): the cheap hours 02:00 and 03:00 carry it
            powers = [iv["power_w"] for iv in plan["intervals"][:7]]
            assert powers[2] == pytest.approx(11000.0) and powers[3] > 0
            assert last("plan.power") == pytest.approx(powers[0])
            assert last("plan.interval_end") == pytest.approx(3600.0)
            assert 0 <= last("plan.soc_target") <= 1
            # six full-power hours before the 07:00 departure cover 0.5 -> 0.8: the reserve is soc_min
            assert last("plan.reserve_soc") == pytest.approx(0.2)

            # 02:00: the current interval's power and its end on the cycle clock
            n = len(writes)
            await _until(
                cx, job, image(2 * 3600 * US, curve()), 2 * 3600 * US, lambda: len(writes) > n, "writes at 02:00"
            )
            assert last("plan.power") == pytest.approx(11000.0)
            assert last("plan.interval_end") == pytest.approx(3 * 3600.0)

            # unplugged: power 0 (no SoC to plan with)
            n = len(writes)
            await _until(
                cx,
                job,
                image(2 * 3600 * US + US, curve(), soc=None, connected=False),
                2 * 3600 * US + US,
                lambda: len(writes) > n,
                "writes after unplug",
            )
            assert last("plan.power") == 0.0

            # stale prices: a fallback plan (charge now, toward the departure SoC)
            n = len(writes)
            await _until(
                cx,
                job,
                image(3 * 3600 * US, curve(), soc=0.5, quality=Quality.STALE),
                3 * 3600 * US,
                lambda: any(n_ == "plan.json" and v["status"] == "fallback" for n_, v, _ in writes[n:]),
                "a fallback plan",
            )
            fb = last("plan.json")
            jsonschema.validate(fb, SCHEMA)
            assert "not good" in fb["reason"]
            assert last("plan.power") == pytest.approx(11000.0)
            # its prices are placeholders: plan.price is bad, so no real-time rule judges by them
            price_q = next(q for n_, _, q in reversed(writes) if n_ == "plan.price")
            assert price_q == Quality.BAD
        finally:
            job.cancel()

    asyncio.run(main())


def test_curve_parsing_and_contiguity():
    c = parse_curve(curve(6))
    now = START.astimezone(dt.UTC) + dt.timedelta(minutes=90)
    s, step, prices = contiguous_from(c, now, dt.timedelta(hours=48))
    assert s == START.astimezone(dt.UTC) + dt.timedelta(hours=1) and step == 3600 and len(prices) == 5
    gap = [x for i, x in enumerate(curve(6)) if i != 3]
    assert len(contiguous_from(parse_curve(gap), now, dt.timedelta(hours=48))[2]) == 2
    with pytest.raises(ValueError, match="no price interval covers"):
        contiguous_from(c, now + dt.timedelta(days=1), dt.timedelta(hours=48))
    with pytest.raises(ValueError, match="UTC offset"):
        parse_curve([{"start": "2018-01-01T00:00:00", "end": "2018-01-01T01:00:00", "price": 1}])
    with pytest.raises(ValueError, match="interval 0"):
        parse_curve([{"start": "2018-01-01T00:00:00+00:00", "price": 1}])


def test_a_mixed_curve_is_planned_in_quarter_hours():
    """Hourly products, then quarter-hours (the EU day-ahead market since October 2025)."""
    t0 = dt.datetime(2025, 9, 30, 22, 0, tzinfo=dt.UTC)
    hourly = [(t0 + dt.timedelta(hours=i), t0 + dt.timedelta(hours=i + 1), 10.0 + i) for i in range(2)]
    q0 = t0 + dt.timedelta(hours=2)
    quarters = [
        (q0 + i * dt.timedelta(minutes=15), q0 + (i + 1) * dt.timedelta(minutes=15), 50.0 + i) for i in range(8)
    ]
    s, step, prices = contiguous_from(hourly + quarters, t0 + dt.timedelta(minutes=70), dt.timedelta(hours=48))
    assert s == t0 + dt.timedelta(hours=1) and step == 900
    assert prices == [11.0] * 4 + [50.0 + i for i in range(8)]
    odd = [*hourly, (q0, q0 + dt.timedelta(minutes=25), 9.0)]  # 25 min: hours are not whole multiples
    assert contiguous_from(odd, t0, dt.timedelta(hours=48))[2] == []  # nothing to plan: the fallback plans


def test_a_sliding_curve_is_not_new_prices_but_a_new_revision_is():
    async def main():
        writes: list[tuple[str, object, Quality]] = []
        cx = TaskContext("planner", lambda n, v, q: writes.append((n, v, q)), START, logging.getLogger("t"))
        task = PlannerTask("planner", PlannerTaskParams(), SiteInfo("t", 240.0, 60.0, 20_000))
        job = asyncio.create_task(task.run(cx))

        def last(name):
            return next((v for n, v, _ in reversed(writes) if n == name), None)

        def img(now_us, prices, rev):
            d = dict(image(now_us, prices))
            d["prices.updated"] = TagValue(rev, Quality.GOOD, now_us)
            return Image(d)

        try:
            await _until(cx, job, img(0, curve(), 1), 0, lambda: last("plan.json") is not None, "a plan")
            first = last("plan.json")["created"]
            hour = 3600 * US
            await _until(
                cx,
                job,
                img(hour, curve()[1:], 1),
                hour,
                lambda: last("plan.interval_end") == pytest.approx(7200.0),
                "the next interval",
            )
            assert last("plan.json")["created"] == first  # same revision: the plan stands
            await _until(
                cx,
                job,
                img(hour + US, curve()[1:], 2),
                hour + US,
                lambda: last("plan.json")["created"] != first,
                "a re-plan on revision 2",
            )
        finally:
            job.cancel()

    asyncio.run(main())
