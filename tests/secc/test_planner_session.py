"""The planner takes the EV's own goal while its ISO 15118 session is live, on a site without a plug point
(no PLC modem map, no charger ``ev.connected``): ``ev.in_session`` (what ``ev_source`` copies from the SECC's
``secc.session``) says the EV is plugged in. No root: the task on a real TaskContext and real images, as
tests/programs/test_planner_task_ev.py drives it."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from runtime.api import SiteInfo
from runtime.tags import US, Image, Quality, TagValue
from runtime.tasks.base import TaskContext
from runtime.tasks.planner_task import PlannerTask, PlannerTaskParams
from tests.programs.test_planner_task import START, _until, curve
from tests.programs.test_planner_task_ev import at, connected


def image(now_us: int, in_session: Any, departure: Any = None, energy: Any = None) -> Image:
    """What such a site's scan publishes: prices, the SoC and the EV's data from the SECC, no ``ev.connected``."""
    return Image(
        {
            "prices.day_ahead": TagValue(curve(), Quality.GOOD, now_us),
            "ev.soc": TagValue(0.5, Quality.GOOD, now_us),
            "ev.in_session": TagValue(in_session, Quality.GOOD, now_us),
            "ev.departure_time": TagValue(departure, Quality.GOOD, now_us),
            "ev.energy_request_wh": TagValue(energy, Quality.GOOD, now_us),
        }
    )


@pytest.mark.parametrize("session_tag", ["ev.in_session", None], ids=["session", "no-session-tag"])
def test_a_live_session_is_a_plugged_in_ev_and_its_goal_is_planned(session_tag: str | None) -> None:
    async def main() -> None:
        writes: list[tuple[str, object, Quality]] = []
        cx = TaskContext("planner", lambda n, v, q: writes.append((n, v, q)), START, logging.getLogger("t"))
        params = PlannerTaskParams(ev_session_tag=session_tag)
        task = PlannerTask("planner", params, SiteInfo("t", 240.0, 60.0, 20_000))
        job = asyncio.create_task(task.run(cx))

        def plans() -> list[dict]:
            return [v for n, v, _ in writes if n == "plan.json"]  # type: ignore[misc]

        try:
            # In session: leaves at 05:00 (the routine says 07:00), asks 24 kWh: 0.5 + 24/60 = 0.9.
            await _until(cx, job, image(0, True, at(5), 24_000.0), 0, lambda: bool(plans()), "the first plan")
            first = plans()[-1]
            if session_tag is None:  # the old rule: without ev.connected no goal, and the EV counts as away
                assert "EV's own" not in first["reason"] and connected(first)[0] is False
                return
            assert "EV's own departure 2018-01-01T10:00+00:00, target SoC 0.900" in first["reason"]
            assert connected(first)[:6] == [True] * 5 + [False]
            assert first["intervals"][4]["soc_end"] == pytest.approx(0.9, abs=1e-6)
            powers = [v for n, v, _ in writes if n == "plan.power"]
            assert powers and powers[-1] == first["intervals"][0]["power_w"]  # published: the EV is plugged in

            # The session ends (ev_source writes None and false): the goal goes, and so does the plug.
            t = 61 * US
            await _until(cx, job, image(t, False), t, lambda: plans()[-1] != first, "a re-plan at the session's end")
            after = plans()[-1]
            assert "EV's own" not in after["reason"] and connected(after)[0] is False
            assert [v for n, v, _ in writes if n == "plan.power"][-1] == 0.0
        finally:
            job.cancel()

    asyncio.run(main())
