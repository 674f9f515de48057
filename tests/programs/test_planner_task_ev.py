"""The planner takes the EV's own departure time and energy request (ISO 15118, ``ev.departure_time`` /
``ev.energy_request_wh`` as ``programs/ev_source.py`` writes them) ahead of the site's routine, re-plans when
they change materially and falls back to the routine when they go: through the task on a real TaskContext
and real images, as tests/programs/test_planner_task.py drives it; the rules themselves as tables."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
from typing import Any

import pytest

from programs.planner.model import Battery
from runtime.api import SiteInfo
from runtime.tags import US, Image, Quality, TagValue
from runtime.tasks.base import TaskContext
from runtime.tasks.planner_task import EvGoal, PlannerTask, PlannerTaskParams, ev_goal, ev_goal_change, parse_curve
from tests.programs.test_planner_task import NY, START, _until, curve

UTC = dt.UTC
BATTERY = Battery(capacity_kwh=60.0, soc_min=0.2, soc_max=0.9)


def at(hour: float) -> float:
    """UTC epoch seconds of ``hour`` o'clock on the test's Monday (site time, New York)."""
    return (START + dt.timedelta(hours=hour)).timestamp()


def image(now_us: int, departure: Any = None, energy: Any = None, quality: Quality = Quality.GOOD) -> Image:
    """The scan's image: prices, plugged in at SoC 0.5, and the EV's own data (memory tags of ev_source)."""
    return Image(
        {
            "prices.day_ahead": TagValue(curve(), Quality.GOOD, now_us),
            "ev.soc": TagValue(0.5, Quality.GOOD, now_us),
            "ev.connected": TagValue(True, Quality.GOOD, now_us),
            "ev.departure_time": TagValue(departure, quality, now_us),
            "ev.energy_request_wh": TagValue(energy, quality, now_us),
        }
    )


def connected(plan: dict) -> list[bool]:
    return [iv["connected"] for iv in plan["intervals"]]


@pytest.mark.parametrize("gone", ["none", "stale"], ids=["session-ended", "source-stale"])
def test_the_evs_own_goal_comes_before_the_routine_and_goes_with_the_session(gone: str) -> None:
    async def main() -> None:
        writes: list[tuple[str, object, Quality]] = []
        cx = TaskContext("planner", lambda n, v, q: writes.append((n, v, q)), START, logging.getLogger("t"))
        task = PlannerTask("planner", PlannerTaskParams(), SiteInfo("t", 240.0, 60.0, 20_000))
        job = asyncio.create_task(task.run(cx))

        def plans() -> list[dict]:
            return [v for n, v, _ in writes if n == "plan.json"]  # type: ignore[misc]

        try:
            # The EV leaves at 05:00 (the routine says 07:00) and asks 24 kWh: 0.5 + 24/60 = 0.9 (its cap).
            img = image(0, at(5), 24_000.0)
            await _until(cx, job, img, 0, lambda: bool(plans()), "the first plan")
            first = plans()[-1]
            assert "EV's own departure 2018-01-01T10:00+00:00, target SoC 0.900" in first["reason"]
            assert connected(first)[:6] == [True] * 5 + [False]  # away from 05:00, not 07:00
            assert first["intervals"][4]["soc_end"] == pytest.approx(0.9, abs=1e-6)

            # Jitter (the EV's countdown, a new SoC step's rounding): no new plan. The heartbeat rewrite a
            # minute later shows the task saw it.
            k = len(plans())
            t = 61 * US
            jitter = image(t, at(5) + 40, 24_000.0 - 300.0)
            await _until(cx, job, jitter, t, lambda: len(plans()) > k, "the heartbeat rewrite")
            assert plans()[-1] == first

            # The EV moves its departure by an hour: a new plan, which says why.
            t = 62 * US
            await _until(
                cx, job, image(t, at(6), 24_000.0), t, lambda: plans()[-1] != first, "a re-plan on the new departure"
            )
            moved = plans()[-1]
            assert "EV data: departure 2018-01-01T11:00+00:00" in moved["reason"]
            assert connected(moved)[:7] == [True] * 6 + [False]

            # Session over (ev_source writes None) or its source stale: the routine again (07:00, 0.8).
            t = 63 * US
            ended = image(t, None, None) if gone == "none" else image(t, at(6), 24_000.0, Quality.STALE)
            await _until(cx, job, ended, t, lambda: plans()[-1] != moved, "a re-plan on the routine")
            routine = plans()[-1]
            assert "EV data: departure routine, target SoC routine" in routine["reason"]
            assert connected(routine)[:8] == [True] * 7 + [False]
            assert routine["intervals"][6]["soc_end"] == pytest.approx(0.8, abs=1e-6)
        finally:
            job.cancel()

    asyncio.run(main())


def test_without_a_departure_the_evs_target_applies_at_the_routines() -> None:
    task = PlannerTask("planner", PlannerTaskParams(), SiteInfo("t", 240.0, 60.0, 20_000))
    now = START.astimezone(UTC)
    goal = EvGoal(None, 0.7)
    req = task.build_request(now, 0.5, True, parse_curve(curve()), [], NY, goal=goal)
    first = req.windows[0]
    assert first.end == (START + dt.timedelta(hours=7)).astimezone(UTC) and first.departure_soc_min == 0.7
    unplugged = task.build_request(now, 0.5, False, parse_curve(curve()), [], NY, goal=goal)
    assert unplugged.windows == task.build_request(now, 0.5, False, parse_curve(curve()), [], NY).windows


def test_a_departure_beyond_the_horizon_asks_nothing_inside_it() -> None:
    task = PlannerTask("planner", PlannerTaskParams(max_horizon_h=24), SiteInfo("t", 240.0, 60.0, 20_000))
    now = START.astimezone(UTC)
    goal = EvGoal(now + dt.timedelta(days=3), 0.9)
    req = task.build_request(now, 0.5, True, parse_curve(curve()), [], NY, goal=goal)
    assert len(req.windows) == 1  # connected over the whole horizon; the routine's trips are not taken
    assert req.windows[0].departure_soc_min is None


# -- the rules as tables -------------------------------------------------------------------------------

NOW = dt.datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
T = NOW.timestamp()


@pytest.mark.parametrize(
    "departure, energy, soc, expected",
    [
        (T + 3600, 12_000.0, 0.5, EvGoal(NOW + dt.timedelta(hours=1), 0.7)),
        (T + 3600, 60_000.0, 0.5, EvGoal(NOW + dt.timedelta(hours=1), 0.9)),  # capped at soc_max
        (T + 3600, -6_000.0, 0.5, EvGoal(NOW + dt.timedelta(hours=1), 0.4)),  # -20 BPT: above target
        (T - 1, 12_000.0, 0.5, EvGoal(None, 0.7)),  # a departure already past is no departure
        (T, None, 0.5, EvGoal(None, None)),
        (math.nan, math.inf, 0.5, EvGoal(None, None)),  # not finite: not used
        (1e300, 12_000.0, None, EvGoal(None, None)),  # out of range; no SoC: no target
        (None, 12_000.0, 0.5, EvGoal(None, 0.7)),
        (True, None, 0.5, EvGoal(None, None)),  # a wrong type is not a time
    ],
)
def test_ev_goal(departure: Any, energy: Any, soc: float | None, expected: EvGoal) -> None:
    got = ev_goal(departure, energy, soc, NOW, BATTERY, UTC)
    assert got.departure == expected.departure
    assert got.target_soc == (None if expected.target_soc is None else pytest.approx(expected.target_soc))


def test_ev_goal_on_a_naive_site_clock() -> None:
    naive = NOW.replace(tzinfo=None)
    got = ev_goal(T + 60, None, 0.5, naive, BATTERY, None)
    assert got.departure == naive + dt.timedelta(seconds=60)


H = dt.timedelta(hours=1)


@pytest.mark.parametrize(
    "old, new, replan",
    [
        (EvGoal(NOW, 0.8), EvGoal(NOW + dt.timedelta(seconds=900), 0.8), False),  # within the 15 min
        (EvGoal(NOW, 0.8), EvGoal(NOW + dt.timedelta(seconds=901), 0.8), True),
        (EvGoal(NOW, 0.8), EvGoal(NOW - H, 0.8), True),
        (EvGoal(NOW, 0.80), EvGoal(NOW, 0.82), False),  # two whole-percent SoC steps of rounding
        (EvGoal(NOW, 0.80), EvGoal(NOW, 0.821), True),
        (EvGoal(NOW, 0.80), EvGoal(NOW, 0.779), True),
        (EvGoal(), EvGoal(NOW, None), True),  # a session starts giving its departure
        (EvGoal(NOW, 0.8), EvGoal(), True),  # ... and stops
        (EvGoal(None, 0.8), EvGoal(NOW, 0.8), True),
        (EvGoal(), EvGoal(), False),
    ],
)
def test_material_change(old: EvGoal, new: EvGoal, replan: bool) -> None:
    why = ev_goal_change(old, new, 900.0, 0.02)
    assert (why is not None) == replan
    if why:
        assert why.startswith("EV data: ") and "(was " in why
