"""The backtest's planner skips the validated request and plan (``PlannerStrategy.lp_input``,
``PlanArrays``): on slices of both bundled markets that reach the series' end, every re-plan's LP input is
the input of the validated request byte for byte, its schedule is the validated plan's, and the re-plan
rule answers the same for the light plan as for the ``Plan`` on every row it stands."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from backtest.data import load_prices, load_scenario
from backtest.market import VisibleMarket
from backtest.run import simulate
from backtest.strategies import PLANNER_SETTINGS
from programs.planner.lp import LpInput
from programs.planner.model import Plan
from programs.planner.planner import lp_input, plan
from programs.planner.strategies import DecisionView, PlannerStrategy

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "runtime/data/scenarios/commuter.yaml"
PRICES = ROOT / "runtime/data/prices"


def _same(a: LpInput, b: LpInput) -> list[str]:
    """Fields in which two inputs differ (arrays: dtype, shape and every byte)."""
    out = []
    for f in dataclasses.fields(LpInput):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray):
            same = (
                isinstance(y, np.ndarray) and x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()
            )
        else:
            same = type(x) is type(y) and x == y
        if not same:
            out.append(f.name)
    return out


class Checked(PlannerStrategy):
    """The backtest's planner, each decision compared with the validated path's."""

    def __init__(self, *a: object, **k: object) -> None:
        super().__init__(*a, **k)  # type: ignore[arg-type]
        self.checked: list[tuple[DecisionView, Plan]] = []
        self.mismatch: list[tuple[int, list[str]]] = []

    def decide(self, view: DecisionView) -> np.ndarray:
        fast = self.lp_input(view)
        req = self.request(view)
        diff = _same(fast, lp_input(req))
        sched = super().decide(view)
        full = plan(req, reason="backtest")
        if not np.array_equal(sched, np.array([iv.power_w / 1000.0 for iv in full.intervals])):
            diff.append("schedule")
        if self.last_plan is None or self.last_plan.soc_end != [iv.soc_end for iv in full.intervals]:
            diff.append("soc_end")
        if diff:
            self.mismatch.append((view.t, diff))
        self.checked.append((view, full))
        return sched


@pytest.mark.parametrize("name", ["PJM_2017-2018.csv", "DE_2016-2017.csv"])
def test_backtest_plans_equal_the_validated_ones(name: str) -> None:
    full = load_prices(PRICES / name)
    # 12 days ending at 10:00 on the last weekday: the series' end (its terminal rules) during a trip,
    # whose plug-in no window states
    end = max(r for r, t in enumerate(full.times) if t.weekday() < 5 and t.hour == 10) + 1
    keep = slice(end - 24 * 12, end)
    series = dataclasses.replace(
        full,
        times=full.times[keep],
        price=full.price[keep].copy(),
        forecasts={k: v[keep].copy() for k, v in full.forecasts.items()},
    )
    sc = load_scenario(SCENARIO)
    market = VisibleMarket(series, sc)
    strat = Checked(sc, **PLANNER_SETTINGS)
    run = simulate(series, sc, strat, market)
    assert len(strat.checked) == run.replans > 20
    assert strat.mismatch == []
    assert any(v.t + len(p.intervals) == len(series) for v, p in strat.checked)  # plans that reach the end
    assert any(not v.calendar.connected[v.t + len(p.intervals) - 1] for v, p in strat.checked)  # in a trip


def test_light_plan_answers_the_replan_rule_as_the_plan() -> None:
    full = load_prices(PRICES / "DE_2016-2017.csv")
    series = dataclasses.replace(
        full,
        times=full.times[:96],
        price=full.price[:96].copy(),
        forecasts={k: v[:96].copy() for k, v in full.forecasts.items()},
    )
    sc = load_scenario(SCENARIO)
    market = VisibleMarket(series, sc)
    strat = PlannerStrategy(sc, **PLANNER_SETTINGS)
    asked = 0
    for t0 in (0, 7, 13, 30):
        strat.decide(market.view(t0, 0.5))
        light = strat.last_plan
        heavy = plan(strat.request(market.view(t0, 0.5)), reason="backtest")
        assert light is not None and light.end == heavy.end
        for t in range(t0, len(series)):
            when = series.times[t]
            assert light.connected_at(when) == heavy.connected_at(when)
            for soc in (0.0, 0.3, 0.5, 0.81, 1.0):
                for conn in (True, False):
                    got = strat.replan_reason(when, soc, conn)
                    strat.last_plan = heavy  # type: ignore[assignment]
                    want = strat.replan_reason(when, soc, conn)
                    strat.last_plan = light
                    assert got == want, (t0, t, soc, conn)
                    asked += 1
    assert asked > 1000


def test_a_solver_failure_in_a_backtest_replan_plans_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    """HiGHS raising in a backtest re-plan: the fallback schedule (charge towards the departure SoC, never
    discharge), counted as such, and the same schedule as the validated path's fallback plan."""
    from programs.planner import lp

    full = load_prices(PRICES / "DE_2016-2017.csv")
    series = dataclasses.replace(
        full,
        times=full.times[:72],
        price=full.price[:72].copy(),
        forecasts={k: v[:72].copy() for k, v in full.forecasts.items()},
    )
    sc = load_scenario(SCENARIO)
    view = VisibleMarket(series, sc).view(0, 0.3)

    def broken(inp: LpInput) -> None:
        raise RuntimeError("solver gone")

    monkeypatch.setattr(lp, "solve", broken)
    strat = PlannerStrategy(sc, **PLANNER_SETTINGS)
    sched = strat.decide(view)
    assert strat.last_plan is not None and strat.last_plan.status == "fallback"
    assert strat.statuses == {"fallback": 1}
    assert (sched >= 0).all() and sched[0] > 0  # charging now, towards the departure's 0.8
    validated = plan(strat.request(view), reason="backtest")
    assert validated.status == "fallback" and "solver gone" in validated.reason
    assert np.array_equal(sched, np.array([iv.power_w / 1000.0 for iv in validated.intervals]))


@pytest.mark.parametrize(
    ("first", "step_min", "day", "rows"),
    [
        ("2024-10-22", 60, "2024-10-27", 25),  # the clocks go back: a 25-hour day
        ("2024-03-26", 60, "2024-03-31", 23),  # forward: 23 hours
        ("2024-10-24", 15, "2024-10-27", 100),
        ("2024-03-28", 15, "2024-03-31", 92),
    ],
)
def test_backtest_plans_equal_the_validated_ones_across_a_clock_change(
    tmp_path: Path, first: str, step_min: int, day: str, rows: int
) -> None:
    """Naive local times jump by an hour on a DST day; the fast path counts rows, the validated path
    times: every re-plan of ten days around the change still gives both the same input and plan."""
    import datetime as dt

    from tests.programs.test_backtest_resolution import local_rows, write

    times = local_rows(dt.date.fromisoformat(first), 10, step_min)
    assert sum(t.date() == dt.date.fromisoformat(day) for t in times) == rows
    series = load_prices(write(tmp_path / "dst.csv", times))
    sc = load_scenario(SCENARIO)
    strat = Checked(sc, **PLANNER_SETTINGS)
    run = simulate(series, sc, strat, VisibleMarket(series, sc))
    assert len(strat.checked) == run.replans > 10
    assert strat.mismatch == []
    # the row after which the local clock jumps, and the plans that run across it
    step = dt.timedelta(minutes=step_min)
    (jump,) = [k for k in range(1, len(times)) if times[k] - times[k - 1] != step]
    assert len([v for v, p in strat.checked if v.t < jump < v.t + len(p.intervals)]) >= 2


@pytest.mark.parametrize("columns", [1, 2, 3, 4])
def test_the_forecast_mean_is_numpys_byte_for_byte(columns: int) -> None:
    """``PlannerStrategy.prices`` adds the forecast columns in order and divides, as ``np.mean(cols,
    axis=0)`` does, without stacking them: the same doubles, at every scale and horizon length."""
    import datetime as dt

    sc = load_scenario(SCENARIO)
    strat = PlannerStrategy(sc, forecast="mean")
    rng = np.random.default_rng(columns)
    for m in (1, 24, 96, 2 * 288):
        cols = {f"f{i}": rng.normal(0.0, 10.0 ** rng.integers(0, 5), m) for i in range(columns)}
        published = rng.normal(50.0, 20.0, 3)
        times = tuple(dt.datetime(2026, 1, 5) + dt.timedelta(hours=h) for h in range(3 + m))
        view = DecisionView(0, 0.5, times, 3600, None, published, cols, np.zeros(0))  # type: ignore[arg-type]
        got = strat.prices(view)
        want = np.concatenate([published, np.mean(list(cols.values()), axis=0)])
        assert got.dtype == want.dtype and got.tobytes() == want.tobytes()
