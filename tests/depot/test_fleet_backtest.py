"""The depot backtest on a short scenario (runtime/data/scenarios/depot_short.yaml: 4 vans, 2 days, a
connection that cannot charge them all at once): through the engine step, with and without the fleet plan,
against the fleet's perfect foresight."""

from __future__ import annotations

from pathlib import Path

import pytest

from backtest.depot import backtest, load_scenario

SCENARIO = Path(__file__).resolve().parents[2] / "runtime" / "data" / "scenarios" / "depot_short.yaml"


@pytest.mark.slow
@pytest.mark.timeout(900)  # 40 s of CPU; a loaded 2-core machine takes several times that
def test_the_fleet_plan_saves_meets_every_departure_and_keeps_the_connection() -> None:
    r = backtest(SCENARIO)
    print(r)  # the figures, for docs/depot.md (pytest -s)
    sc = load_scenario(SCENARIO)
    assert r["departures"] == sc.chargers * sc.fleet.days  # every van left once a day
    assert r["perfect_foresight_shortfall_kwh"] == 0.0  # every departure is feasible ...
    assert r["missed_departures"] == 0  # ... so none may be missed
    assert r["savings"] > 0.0
    assert 0.0 < r["share_of_perfect_foresight"] <= 1.0
    assert r["cost_perfect_foresight"] < r["cost_fleet"] < r["cost_baseline"]
    # the import stays within the limit but for a building step the meter shows a cycle later: at most the
    # step less the margin (docs/depot.md "Overshoot"), never longer than one physics step
    steps = [b - a for (_, a), (_, b) in zip(sc.building_w, sc.building_w[1:], strict=False)]
    assert r["max_over_w"] <= max(0.0, max(steps) - sc.margin_w) + 1.0
    assert r["longest_over_s"] <= sc.plant_step_s
