"""The backtest: a one-day slice worked out by hand, the trace re-priced independently, the site's
programs and safety in the loop (a safety setting shows in the trace), and the visibility rules (a
strategy's decisions do not change when unpublished prices or not-yet-visible forecasts change)."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from backtest.accounting import check
from backtest.cli import cli
from backtest.data import DataError, load_prices, load_scenario
from backtest.market import VisibleMarket
from backtest.run import backtest, simulate
from backtest.strategies import PLANNER_SETTINGS
from programs.planner.strategies import PlannerStrategy, Threshold

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "runtime/data/scenarios/commuter.yaml"
DE = ROOT / "runtime/data/prices/DE_2016-2017.csv"

ETA = 0.933  # commuter.yaml: efficiency_charge = efficiency_discharge
PMAX = 11.0  # kW
CAP = 60.0  # kWh
DEG = 20.0  # per MWh out of the battery

# Monday 2018-01-01: morning plug-in 00-06, away 07-17 (trip 12 kWh), evening 18-23, series ends.
MORNING = [30.0, 21.0, 10.0, 11.0, 20.0, 31.0, 40.0]
EVENING = [100.0, 100.0, 60.0, 50.0, 40.0, 30.0]
DAY = MORNING + [50.0] * 11 + EVENING


@pytest.fixture
def day_csv(tmp_path: Path) -> Path:
    path = tmp_path / "day.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["time", "price", "forecast_dnn"])
        for h, p in enumerate(DAY):
            w.writerow([f"2018-01-01T{h:02d}:00:00", p, p + 1.0])
    return path


def test_scenario_copy_is_the_one_the_tests_use():
    sc = load_scenario(SCENARIO)
    assert (sc.battery.capacity_kwh, sc.charger.max_charge_kw, sc.charger.efficiency_charge) == (CAP, PMAX, ETA)
    assert (sc.availability.depart, sc.availability.arrive, sc.market.publication_time) == ("07:00", "18:00", "12:00")


def test_one_day_by_hand(day_csv: Path):
    full = PMAX * ETA  # kWh into the battery in one full-power hour: 10.263
    # Baseline: from 0.5 (30 kWh) to 0.8 (48 kWh) at full power from 00:00: 11 kW, then the rest;
    # back at 18:00 with 36 kWh (trip 12 kWh), again to 48 kWh at 100.
    base_morning = [PMAX, (18.0 - full) / ETA]
    base_evening = [PMAX, (12.0 - full) / ETA]
    c_base = (30 * base_morning[0] + 21 * base_morning[1] + 100 * sum(base_evening)) / 1000
    # Perfect foresight (and the planner, which sees the whole day: it is published at 12:00 D-1):
    # fill to soc_max 0.9 (54 kWh) in the cheapest hours 10, 11, then 20; arrive with 42 kWh; sell at
    # full power in both hours at 100 (a battery MWh earns 100*0.933 - 20 = 73.3, more than the 30/0.933
    # = 32.2 of buying it back at 30, not at 40 = 42.9 for a sale at 60, which earns 36.0); come back to
    # the terminal 0.5 (30 kWh) with a full hour at 30 and the rest at 40.
    pf_morning = {2: PMAX, 3: PMAX, 4: (24.0 - 2 * full) / ETA}
    out_kwh = 2 * PMAX / ETA
    after_sale = 42.0 - out_kwh
    pf_evening = {18: -PMAX, 19: -PMAX, 22: (30.0 - after_sale - full) / ETA, 23: PMAX}
    c_pf = (sum(DAY[h] * p for h, p in (pf_morning | pf_evening).items()) + DEG * out_kwh) / 1000
    # Cheapest: 18 kWh in the cheapest known hours before 07:00 (10, then 11); nothing in the evening
    # (36 kWh is above the terminal 30 kWh).
    c_cheap = (10 * PMAX + 11 * (18.0 - full) / ETA) / 1000

    res = {s: backtest(day_csv, SCENARIO, s)[0] for s in ("baseline", "perfect", "planner", "cheapest", "threshold")}
    for out in res.values():
        assert out["baseline_cost"] == pytest.approx(c_base, abs=1e-4)
        assert out["perfect_foresight_cost"] == pytest.approx(c_pf, abs=1e-4)
        assert out["departures"] == out["departures_met"] == 1
        assert out["violations"] == 0
    assert res["baseline"]["share_of_perfect_foresight"] == 0.0
    assert res["perfect"]["share_of_perfect_foresight"] == 1.0
    assert res["planner"]["strategy_cost"] == pytest.approx(c_pf, abs=1e-4)
    assert res["cheapest"]["strategy_cost"] == pytest.approx(c_cheap, abs=1e-4)
    assert res["cheapest"]["share_of_perfect_foresight"] == pytest.approx(
        (c_base - c_cheap) / (c_base - c_pf), abs=1e-4
    )
    assert res["planner"]["replans"] == 2  # 00:00 (start) and 18:00 (plug-in); nothing new is published


def test_trace_reprices_to_the_reported_cost(day_csv: Path, tmp_path: Path, capsys):
    trace = tmp_path / "trace.csv"
    assert (
        cli(["--prices", str(day_csv), "--scenario", str(SCENARIO), "--strategy", "threshold", "--trace", str(trace)])
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    with trace.open() as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["time", "grid_kw", "soc"] and len(rows) == 24
    # Independent re-computation: the scenario's accounting and battery physics, from the trace alone.
    cost, e = 0.0, 0.5 * CAP
    for h, r in enumerate(rows):
        p = float(r["grid_kw"])
        cost += DAY[h] * p / 1000 + (DEG * -p / ETA / 1000 if p < 0 else 0.0)
        drive = 12.0 / 11 if 7 <= h < 18 else 0.0
        e += (p * ETA if p >= 0 else p / ETA) - drive
        assert float(r["soc"]) == pytest.approx(e / CAP, abs=1e-7)
        assert 0.2 - 1e-9 <= float(r["soc"]) <= 0.9 + 1e-9
        if 7 <= h < 18:
            assert p == 0.0
    assert cost == pytest.approx(out["strategy_cost"], abs=1e-4)
    assert float(rows[6]["soc"]) >= 0.8 - 1e-9  # departure at 07:00


def test_plot_week(day_csv: Path, tmp_path: Path, capsys):
    png = tmp_path / "week.png"
    assert cli(["--prices", str(day_csv), "--scenario", str(SCENARIO), "--plot", str(png), "--week", "2018-01-01"]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_price_file_names_the_line(tmp_path: Path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("time,price\n2018-01-01T00:00:00,10\n2018-01-01T01:00:00,abc\n")
    assert cli(["--prices", str(bad), "--scenario", str(SCENARIO)]) == 2
    assert f"{bad}:3: price: not a number" in capsys.readouterr().err


# -- visibility ------------------------------------------------------------------------------------
def _slice(days: int):
    s = load_prices(DE)
    n = days * 24
    return dataclasses.replace(
        s, times=s.times[:n], price=s.price[:n].copy(), forecasts={k: v[:n].copy() for k, v in s.forecasts.items()}
    )


def _run(series):
    sc = load_scenario(SCENARIO)
    return simulate(series, sc, PlannerStrategy(sc, **PLANNER_SETTINGS), VisibleMarket(series, sc))


def test_views_hold_only_published_prices_and_visible_forecasts():
    series = _slice(4)
    sc = load_scenario(SCENARIO)
    m = VisibleMarket(series, sc)
    v = m.view(11, 0.5)  # Monday 11:00: Monday is published, Tuesday's forecast is visible
    assert len(v.prices) == 24 - 11 and len(v.forecasts["forecast_dnn"]) == 24
    v = m.view(12, 0.5)  # Monday 12:00: Tuesday published, no forecast beyond it is visible yet
    assert len(v.prices) == 48 - 12 and v.forecasts == {}
    v = m.view(24, 0.5)  # Tuesday 00:00: Wednesday's forecast becomes visible
    assert len(v.prices) == 24 and len(v.forecasts["forecast_lear"]) == 24


@pytest.mark.parametrize("day", [3, 5])
def test_unpublished_prices_do_not_change_decisions(day: int):
    base = _slice(9)
    pub_row = (day - 1) * 24 + 12  # day `day`'s prices are published at 12:00 the day before
    rng = np.random.default_rng(day)
    noisy = dataclasses.replace(base, price=base.price.copy())
    noisy.price[day * 24 :] += rng.normal(0, 80, len(base) - day * 24)
    a, b = _run(base), _run(noisy)
    assert np.array_equal(a.grid_kw[:pub_row], b.grid_kw[:pub_row])
    assert not np.array_equal(a.grid_kw, b.grid_kw)  # the perturbation does matter once published


def test_invisible_forecasts_do_not_change_decisions():
    base = _slice(9)
    day = 5
    vis_row = (day - 1) * 24  # day 5's forecast is visible from 00:00 on day 4
    noisy = dataclasses.replace(base, forecasts={k: v.copy() for k, v in base.forecasts.items()})
    for v in noisy.forecasts.values():
        v[day * 24 :] = np.where(np.arange(len(v) - day * 24) % 24 < 12, -200.0, 300.0)
    a, b = _run(base), _run(noisy)
    assert np.array_equal(a.grid_kw[:vis_row], b.grid_kw[:vis_row])
    assert not np.array_equal(a.grid_kw, b.grid_kw)


@pytest.mark.slow
@pytest.mark.parametrize("series", ["PJM_2017-2018.csv", "DE_2016-2017.csv"])
def test_two_years_reach_the_target_share(series: str):
    out = backtest(ROOT / "runtime/data/prices" / series, SCENARIO, "planner")[0]
    assert out["violations"] == 0 and out["departures_met"] == out["departures"] == 520
    assert out["safety_trips"] == 0 and out["mode_transitions"] > 1000  # the programs did follow the plan
    assert out["share_of_perfect_foresight"] >= 0.97
    assert out["plan_status"] == {"optimal": out["replans"]}


def test_planner_strategy_replans_on_drift_but_not_on_plan():
    series = _slice(3)
    sc = load_scenario(SCENARIO)
    m = VisibleMarket(series, sc)
    strat = PlannerStrategy(sc, **PLANNER_SETTINGS)
    sched = strat.decide(m.view(0, 0.5))
    assert strat.replan_reason(series.times[0], 0.5, True) is None
    soc1 = strat.last_plan.soc_end[0]
    assert strat.replan_reason(series.times[1], soc1, True) is None
    assert strat.replan_reason(series.times[1], soc1 + 0.1, True).startswith("drift")
    assert strat.replan_reason(series.times[8], 0.7, True) == "plug-in"  # 08:00 Monday: the plan says away
    assert len(sched) == len(strat.last_plan.power_kw)


@dataclasses.dataclass
class _Recording(PlannerStrategy):
    rows: list[int] = dataclasses.field(default_factory=list)

    def decide(self, view):  # type: ignore[no-untyped-def]
        self.rows.append(view.t)
        return super().decide(view)


def test_a_replan_point_met_while_away_waits_for_the_plug_in():
    """No schedule reaches an unplugged EV (the request is 0 either way: the departure reserve test), so
    the noon publication, met while the commuter is at work, is answered by the plan made at the
    plug-in. Every plan is made at a connected row: at each re-plan point met while connected (the
    start, each plug-in, each publication and forecast at night), and none for the points met away."""
    series = _slice(5)  # Monday to Friday: away 07-18 every day
    sc = load_scenario(SCENARIO)
    m = VisibleMarket(series, sc)
    strat = _Recording(sc, **PLANNER_SETTINGS)
    run = simulate(series, sc, strat, m)
    cal = m.calendar
    pubs, viss = m.published_counts, m.forecast_counts
    points = {0, *cal.arrival_rows} | {
        t for t in range(1, len(series)) if (pubs[t], viss[t]) != (pubs[t - 1], viss[t - 1])
    }
    away = sorted(t for t in points if not cal.connected[t])
    assert [t % 24 for t in away] == [12] * 4  # the noon publications at work (Friday's: Saturday, past the end)
    assert strat.rows == sorted(t for t in points if cal.connected[t]) and run.replans == len(strat.rows)
    assert all(t + 6 in cal.arrival_rows for t in away)  # each answered at 18:00 by the plug-in's plan
    assert cal.connected[strat.rows].all()


def test_departure_reserve_on_the_request_both_signs_and_zero(day_csv: Path):
    """The plan's request before it goes to the programs: forced charging below the floor, discharge
    only down to the discharge floor (one turn-round scan held back), the plan itself otherwise."""
    from backtest.site import PERIOD_S, RESERVE_MARGIN_CYCLES, Site, reserve_kwh

    series = load_prices(day_csv)
    sc = load_scenario(SCENARIO)
    cal = VisibleMarket(series, sc).calendar
    floor = reserve_kwh(cal, sc, 1.0)
    dfloor = reserve_kwh(cal, sc, 1.0, RESERVE_MARGIN_CYCLES * PERIOD_S / 3600)
    assert floor[6] == dfloor[6] == pytest.approx(48.0)  # the departure row
    assert floor[5] == pytest.approx(48.0 - PMAX * ETA)  # one full-power hour before it
    assert dfloor[5] == pytest.approx(48.0 - PMAX * ETA * (1 - RESERVE_MARGIN_CYCLES * PERIOD_S / 3600))
    site = Site(sc)

    def req(p: float, t: int, e: float, rest_h: float = 1.0, connected: bool = True) -> float:
        site.e = e
        return site.request(p, connected, float(floor[t]), float(dfloor[t]), rest_h)

    # 06:00 with 40 kWh: a discharge request becomes the charge that still lands on 0.8
    assert req(-11.0, 6, 40.0) == pytest.approx(8.0 / ETA)
    # ... and with half the hour left, twice that power
    assert req(-11.0, 6, 40.0, rest_h=0.5) == pytest.approx(16.0 / ETA)
    # 00:00 with 30 kWh: discharge passes (the programs clamp it to the rating) down to soc_min
    assert req(-11.0, 0, 30.0) == -11.0
    assert req(-20.0, 0, 30.0) == pytest.approx((0.2 * CAP - 30.0) * ETA)
    assert req(11.0, 0, 30.0) == 11.0 and req(0.0, 0, 30.0) == 0.0
    # 05:00 between the two floors: no discharge, no forced charge
    between = (floor[5] + dfloor[5]) / 2
    assert req(-11.0, 5, between) == 0.0 and req(3.0, 5, between) == 3.0
    # just below the floor: at least enough to clear the mode machine's deadband
    assert req(0.0, 5, floor[5] - 1e-6) == pytest.approx(site.min_forced_kw)
    # away: nothing either way
    assert req(11.0, 10, 40.0, connected=False) == 0.0 and req(-11.0, 10, 40.0, connected=False) == 0.0


def _threshold(day_csv: Path, safety: dict | None = None):
    series = load_prices(day_csv)
    sc = load_scenario(SCENARIO)
    m = VisibleMarket(series, sc)
    return simulate(series, sc, Threshold(sc), m, safety), series, sc, m.calendar


def test_the_trace_is_what_the_site_programs_did(day_csv: Path):
    """The threshold plan asks for discharge; v2g_safety with no discharge rating lets none through,
    and the departure is still met (charging untouched)."""
    plain, series, sc, cal = _threshold(day_csv)
    assert (plain.grid_kw < -1.0).sum() >= 4 and (plain.grid_kw > 1.0).any()
    assert plain.events["transition"] > 0 and plain.events.get("trip", 0) == 0
    run, *_ = _threshold(day_csv, {"rated_discharge_w": 0.0})
    assert (run.grid_kw >= 0.0).all()  # not one discharging row
    assert (run.grid_kw > 1.0).any()  # charging still happens
    assert (run.grid_kw[7:18] == 0.0).all()  # and nothing while away
    bad, met, deps = check(series, sc, cal, run)
    assert bad == [] and met == deps == 1


def test_a_narrower_safety_soc_window_holds_within_one_scan(day_csv: Path):
    plain, *_ = _threshold(day_csv)
    assert plain.soc.min() < 0.6
    run, *_ = _threshold(day_csv, {"battery": {"soc_reserve": 0.6, "soc_reserve_guarded": 0.6}})
    one_scan = PMAX * (10 / 3600) / ETA / CAP  # SoC of one 10 s scan at full discharge
    soc_before = np.concatenate([[0.5], run.soc[:-1]])
    discharging = run.grid_kw < 0
    assert discharging.any()
    assert (run.soc[discharging] >= 0.6 - one_scan).all()
    assert (soc_before[discharging] > 0.6).all()  # discharge starts only above the safety reserve


def test_turn_round_from_discharge_to_charge_costs_one_scan(day_csv: Path):
    """modes fires one trigger per scan: discharge -> idle -> charge takes one 10 s scan in idle."""
    run, *_ = _threshold(day_csv)
    assert run.grid_kw[20] < 0 and run.grid_kw[21] == pytest.approx(PMAX * (3600 - 10) / 3600)
    assert run.grid_kw[22] == run.grid_kw[23] == PMAX  # charge -> charge: no scan lost


def test_bad_safety_setting_is_a_clear_error(day_csv: Path):
    with pytest.raises(DataError, match=r"safety settings for the scenario: .*rated_discharge_w"):
        backtest(day_csv, SCENARIO, "baseline", safety={"rated_discharge_w": -1.0})


def test_bad_scenario_names_file_line_and_key(tmp_path: Path, day_csv: Path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(SCENARIO.read_text().replace("capacity_kwh: 60.0", "capacity_kwh: lots"))
    assert cli(["--prices", str(day_csv), "--scenario", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:" in err and "battery.capacity_kwh" in err
