"""The planner on cases small enough to solve by hand, its exclusivity fix, fallback, schema and
re-plan rule."""

from __future__ import annotations

import datetime as dt
import json

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from programs.planner import Battery, Charger, Plan, PlanRequest, PlugWindow, plan
from programs.planner.replan import needs_replan
from programs.planner.routine import Routine, routine_windows
from programs.planner.schema import SCHEMA_PATH, render

T0 = dt.datetime(2018, 1, 1, 0, 0)  # a Monday
H = dt.timedelta(hours=1)


def req(
    prices,
    *,
    soc,
    cap=10.0,
    soc_min=0.0,
    soc_max=1.0,
    pc=10.0,
    pd=10.0,
    eta_c=1.0,
    eta_d=1.0,
    deg=0.0,
    windows=None,
    value=0.0,
    terminal=None,
    ends=False,
):
    n = len(prices)
    return PlanRequest(
        start=T0,
        step_s=3600,
        prices=tuple(prices),
        n_published=n,
        soc=soc,
        battery=Battery(capacity_kwh=cap, soc_min=soc_min, soc_max=soc_max),
        charger=Charger(max_charge_kw=pc, max_discharge_kw=pd, efficiency_charge=eta_c, efficiency_discharge=eta_d),
        degradation_cost_per_mwh=deg,
        windows=tuple(windows) if windows is not None else (PlugWindow(start=T0, end=T0 + n * H),),
        terminal_value_per_mwh=value,
        terminal_soc_min=terminal,
        ends_operation=ends,
    )


def powers(p: Plan) -> list[float]:
    return [iv.power_w for iv in p.intervals]


def test_discharge_stored_energy_at_the_dear_hour():
    # 5 kWh stored, no value at the end: sell it all at 50 (Pd 5 kW), never at 10. Cost -50*5/1000.
    p = plan(req([10.0, 50.0], soc=0.5, pc=5.0, pd=5.0))
    assert p.status == "optimal"
    assert powers(p) == pytest.approx([0.0, -5000.0], abs=1e-3)
    assert p.objective == pytest.approx(-0.25)
    assert p.intervals[-1].soc_end == pytest.approx(0.0)


def test_losses_decide_whether_arbitrage_pays():
    # eta_c 0.8: 1 kWh bought at 20 becomes 0.8 kWh; sold at 24.9 it earns 19.92 < 20: stay idle.
    idle = plan(req([20.0, 24.9], soc=0.0, eta_c=0.8))
    assert powers(idle) == pytest.approx([0.0, 0.0], abs=1e-3)
    assert idle.objective == pytest.approx(0.0, abs=1e-9)
    # at 40: charge 10 kW (8 kWh stored), sell 8 kW: cost 20*10/1000 - 40*8/1000 = -0.12
    arb = plan(req([20.0, 40.0], soc=0.0, eta_c=0.8))
    assert powers(arb) == pytest.approx([10000.0, -8000.0], abs=1e-3)
    assert arb.objective == pytest.approx(-0.12)


def test_departure_soc_is_met_in_the_cheapest_hours():
    # 2 kWh now, 8 kWh needed when the car leaves at 03:00; 4 kW charger; prices 30, 10, 20 then away.
    # Cheapest: 4 kWh at 10 and 2 kWh at 20 -> [0, 4, 2, 0] kW, cost (40 + 40)/1000 = 0.08.
    w = PlugWindow(start=T0, end=T0 + 3 * H, departure_soc_min=0.8)
    p = plan(req([30.0, 10.0, 20.0, 5.0], soc=0.2, soc_min=0.2, pc=4.0, pd=4.0, windows=[w]))
    assert powers(p) == pytest.approx([0.0, 4000.0, 2000.0, 0.0], abs=1e-3)
    assert p.objective == pytest.approx(0.08)
    assert [iv.connected for iv in p.intervals] == [True, True, True, False]
    assert p.intervals[2].soc_end == pytest.approx(0.8)


def test_degradation_cost_stops_a_thin_spread():
    # Buy at 10, sell at 25 with deg 20/MWh out of the battery: margin 15 < 20, so no cycling.
    p = plan(req([10.0, 25.0], soc=0.0, deg=20.0))
    assert powers(p) == pytest.approx([0.0, 0.0], abs=1e-3)
    # deg 10: margin 15 > 10: charge then discharge 10 kW: cost 0.1 - 0.25 + 0.1 = -0.05
    p = plan(req([10.0, 25.0], soc=0.0, deg=10.0))
    assert powers(p) == pytest.approx([10000.0, -10000.0], abs=1e-3)
    assert p.objective == pytest.approx(-0.05)


def test_terminal_value_keeps_energy_and_soc_max_caps_it():
    # Energy at the end is worth 20/MWh, bought at 10: fill up to soc_max 0.9 (9 kWh): 0.09 - 0.18.
    p = plan(req([10.0], soc=0.0, soc_max=0.9, value=20.0))
    assert powers(p) == pytest.approx([9000.0], abs=1e-3)
    assert p.objective == pytest.approx(-0.09)


def test_end_of_operation_pays_no_terminal_value():
    """At the series' end (``ends_operation``) stored energy is worth nothing: only the terminal SoC is
    kept; the same horizon inside a series keeps what the terminal value pays for."""
    inside = plan(req([10.0, 50.0], soc=0.5, soc_max=0.9, value=100.0, terminal=0.3))
    last = plan(req([10.0, 50.0], soc=0.5, soc_max=0.9, value=100.0, terminal=0.3, ends=True))
    assert inside.intervals[-1].soc_end == pytest.approx(0.9)  # buy at 10, keep: worth 100
    assert last.intervals[-1].soc_end == pytest.approx(0.3)  # sell down to the terminal SoC at 50
    assert powers(last) == pytest.approx([4000.0, -6000.0], abs=1e-3)  # fill at 10, sell all it can at 50


def test_zero_power_while_unplugged_and_trip_energy_spread():
    # Away for hours 1-2 (2 intervals) with a 4 kWh trip: 2 kWh per interval; cheap power then is useless.
    windows = [PlugWindow(start=T0, end=T0 + H), PlugWindow(start=T0 + 3 * H, end=T0 + 4 * H, trip_energy_kwh=4.0)]
    p = plan(req([50.0, -100.0, -100.0, 50.0], soc=0.5, windows=windows, terminal=0.1))
    assert powers(p)[1:3] == [0.0, 0.0]
    assert p.intervals[1].soc_end == pytest.approx(p.intervals[0].soc_end - 0.2)
    assert p.intervals[2].soc_end == pytest.approx(p.intervals[0].soc_end - 0.4)


def test_negative_price_with_full_battery_never_charges_and_discharges_at_once():
    # Full battery (soc_max), price -500: the LP relaxation would charge 10 kW and discharge 8.1 kW to
    # import 1.9 kW net through the losses. Exactly: charging is impossible (full) and discharging costs
    # money at a negative price, so the power is 0.
    from programs.planner.lp import solve
    from programs.planner.planner import lp_input

    r = req([-500.0], soc=0.9, soc_max=0.9, eta_c=0.9, eta_d=0.9)
    res = solve(lp_input(r))
    assert res.mip_rounds >= 1
    assert not ((res.charge_kw > 1e-6) & (res.discharge_kw > 1e-6)).any()
    p = plan(r)
    assert powers(p) == pytest.approx([0.0], abs=1e-3)
    assert p.objective == pytest.approx(0.0, abs=1e-9)


def test_negative_prices_charge_when_there_is_room():
    p = plan(req([-50.0, 30.0], soc=0.5, pc=5.0, pd=5.0))
    assert powers(p) == pytest.approx([5000.0, -5000.0], abs=1e-3)
    assert p.objective == pytest.approx((-50 * 5 - 30 * 5) / 1000)


def test_unreachable_departure_floor_is_lowered_not_infeasible():
    w = PlugWindow(start=T0, end=T0 + H, departure_soc_min=0.9)
    p = plan(req([10.0, 10.0], soc=0.2, pc=2.0, windows=[w]))
    assert p.status == "optimal"
    assert powers(p) == pytest.approx([2000.0, 0.0], abs=1e-3)
    assert "lowered" in p.reason


def test_fallback_charges_as_soon_as_plugged_in_and_never_discharges():
    w = PlugWindow(start=T0, end=T0 + 4 * H, departure_soc_min=0.8)
    p = plan(req([90.0, 10.0, 10.0, 10.0], soc=0.2, pc=4.0, windows=[w]), "no prices", use_solver=False)
    assert p.status == "fallback"
    assert powers(p) == pytest.approx([4000.0, 2000.0, 0.0, 0.0], abs=1e-3)
    assert min(powers(p)) >= 0.0


def test_plan_schema_file_matches_the_model_and_validates_plans():
    assert SCHEMA_PATH.read_text(encoding="utf-8") == render(), "run: python -m programs.planner.schema"
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    p = plan(req([10.0, 50.0], soc=0.5))
    doc = json.loads(p.model_dump_json())
    jsonschema.validate(doc, schema)
    assert Plan.model_validate_json(p.model_dump_json()) == p
    bad = dict(doc, intervals=[dict(doc["intervals"][0], power_w="fast")])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(dict(doc, status="maybe"), schema)


def _plan_for_replan() -> Plan:
    w = PlugWindow(start=T0, end=T0 + 2 * H)
    r = req([10.0, 50.0, 30.0], soc=0.5, windows=[w])
    return plan(r.model_copy(update={"prices_key": "k1"}))


@pytest.mark.parametrize(
    ("now", "key", "connected", "soc", "expect"),
    [
        (T0, "k1", True, 0.5, None),  # as planned
        (T0, "k2", True, 0.5, "new prices"),
        (T0 + 2.5 * H, "k1", True, 0.5, "plan runs out"),  # less than an hour left
        (T0 + 2 * H, "k1", True, 0.5, "plug-in"),  # the plan assumed away in interval 2
        (T0, "k1", False, None, "unplugged"),
        (T0, "k1", True, 0.6, "drift"),  # 0.1 off
        (T0, "k1", True, 0.54, None),  # within 0.05
        (T0, "k1", None, None, None),  # unknown connection: keep the plan
    ],
)
def test_needs_replan(now, key, connected, soc, expect):
    got = needs_replan(_plan_for_replan(), now, prices_key=key, connected=connected, soc=soc)
    if expect is None:
        assert got is None
    else:
        assert got is not None and got.startswith(expect)


def test_needs_replan_without_a_plan_and_after_fallback():
    assert needs_replan(None, T0, prices_key="", connected=True, soc=0.5) == "no plan"
    fb = plan(req([10.0, 10.0, 10.0], soc=0.5).model_copy(update={"prices_key": "k"}), use_solver=False)
    assert needs_replan(fb, T0 + dt.timedelta(minutes=1), prices_key="k", connected=True, soc=0.5) is None
    assert (
        needs_replan(fb, T0 + dt.timedelta(minutes=6), prices_key="k", connected=True, soc=0.5)
        == "retry after fallback"
    )


def test_routine_windows_weekday_and_weekend():
    r = Routine()
    fri_20 = dt.datetime(2018, 1, 5, 20)  # Friday evening, plugged in: stays until Monday 07:00
    ws = routine_windows(r, fri_20, fri_20 + 72 * H, True)
    assert ws[0].start == fri_20 and ws[0].end == dt.datetime(2018, 1, 8, 7)
    assert ws[0].departure_soc_min == 0.8
    assert ws[1].start == dt.datetime(2018, 1, 8, 18) and ws[1].trip_energy_kwh == 12.0
    mon_12 = dt.datetime(2018, 1, 8, 12)  # away now: the previous window marks the trip's start
    ws = routine_windows(r, mon_12, mon_12 + 24 * H, False)
    assert ws[0].end == dt.datetime(2018, 1, 8, 7)
    assert ws[1].start == dt.datetime(2018, 1, 8, 18) and ws[1].end == dt.datetime(2018, 1, 9, 7)


def test_routine_windows_in_absolute_time_across_dst():
    from zoneinfo import ZoneInfo

    ny = ZoneInfo("America/New_York")
    start = dt.datetime(2018, 3, 11, 0, tzinfo=ny).astimezone(dt.UTC)  # Sunday of the spring change
    ws = routine_windows(Routine(), start, start + 40 * H, True, ny)
    assert ws[0].end.astimezone(ny) == dt.datetime(2018, 3, 12, 7, tzinfo=ny)


def test_solver_time_limit_gives_the_fallback():
    p = plan(req([10.0, 50.0, 30.0] * 20, soc=0.5).model_copy(update={"time_limit_s": 1e-9}))
    assert p.status == "fallback" and "Time limit" in p.reason
    assert len(p.intervals) == 60


@settings(max_examples=60, deadline=None)
@given(
    prices=st.lists(st.floats(-300, 300, allow_nan=False), min_size=1, max_size=12),
    soc=st.floats(0.2, 0.9),
    eta=st.floats(0.7, 1.0),
    deg=st.floats(0, 50),
    away=st.sets(st.integers(0, 11), max_size=4),
)
def test_plans_are_exclusive_physical_and_within_limits(prices, soc, eta, deg, away):
    from programs.planner.lp import solve
    from programs.planner.planner import lp_input

    n = len(prices)
    windows = [PlugWindow(start=T0 + i * H, end=T0 + (i + 1) * H) for i in range(n) if i not in away]
    if not windows:
        return
    r = req(prices, soc=soc, soc_min=0.2, soc_max=0.9, pc=7.0, pd=5.0, eta_c=eta, eta_d=eta, deg=deg, windows=windows)
    res = solve(lp_input(r))
    assert res.ok
    assert not ((res.charge_kw > 1e-6) & (res.discharge_kw > 1e-6)).any()
    p = plan(r)
    e = soc * 10.0
    for i, iv in enumerate(p.intervals):
        kw = iv.power_w / 1000
        assert -5.0 - 1e-6 <= kw <= 7.0 + 1e-6
        if i in away:
            assert kw == 0.0 and not iv.connected
        e += kw * eta if kw >= 0 else kw / eta
        assert iv.soc_end == pytest.approx(e / 10.0, abs=1e-6)
        assert 0.2 - 1e-6 <= iv.soc_end <= 0.9 + 1e-6


def test_start_outside_the_soc_window_comes_back_into_it():
    # Above soc_max (drift): discharge toward the window at once, feasible all the same.
    p = plan(req([50.0, 50.0], soc=0.95, soc_max=0.9, pd=2.0))
    assert p.status == "optimal" and p.intervals[0].soc_end <= 0.9 + 1e-9
    # Below soc_min: full-power charging is the only way back; the floor is lowered to what it reaches.
    p = plan(req([50.0, 50.0], soc=0.1, soc_min=0.2, pc=0.5))
    assert p.status == "optimal"
    assert powers(p) == pytest.approx([500.0, 500.0], abs=1e-3)


def test_request_rejects_nan_prices_and_bad_windows():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="finite"):
        req([10.0, float("nan")], soc=0.5)
    with pytest.raises(ValidationError, match="before it starts"):
        PlugWindow(start=T0 + H, end=T0)
    with pytest.raises(ValidationError, match="soc_min"):
        Battery(capacity_kwh=10, soc_min=0.9, soc_max=0.2)


def test_refill_value_is_the_median_cheapest_plugged_in_price_over_the_charge_efficiency():
    from programs.planner.terminal import TIE_BREAK, refill_value

    times = [T0 + i * H for i in range(72)]
    prices = [50.0 if t.hour < 12 else 10.0 + t.day for t in times]  # afternoons cheap: 11, 12, 13
    assert refill_value(times, prices, 0.9) == pytest.approx(12.0 / 0.9 - TIE_BREAK)
    plugged = [t.hour < 12 for t in times]  # the cheap afternoons are spent at work
    assert refill_value(times, prices, 0.9, connected=plugged) == pytest.approx(50.0 / 0.9 - TIE_BREAK)
    assert refill_value(times, prices, 0.9, days=1) == pytest.approx(13.0 / 0.9 - TIE_BREAK)
    assert refill_value([], [], 0.9) is None


@pytest.mark.parametrize(("nights", "carried"), [(50.0, 0.5), (10.0, 0.0), (90.0, 0.9)])
def test_terminal_value_carries_energy_only_when_refilling_costs_more(nights: float, carried: float):
    """Horizon at 50 throughout. Flat prices (nights at 50 too): carry nothing extra. A cheap night
    coming (10): carry less, selling what is stored at 50 to refill at 10. Dear nights (90): fill up now
    at 50 and carry it."""
    from programs.planner.terminal import refill_value

    past = [T0 - 72 * H + i * H for i in range(72)]
    value = refill_value(past, [nights if t.hour < 6 else 200.0 for t in past], 0.9)
    p = plan(req([50.0] * 4, soc=0.5, soc_max=0.9, eta_c=0.9, value=value))
    assert p.intervals[-1].soc_end == pytest.approx(carried)


def test_reused_solver_instance_gives_what_a_fresh_one_gives_and_keeps_its_time_limit():
    # lp.solve reuses one HiGHS instance per thread: a MIP round, a time-out and many plans before must
    # leave no trace in the next solution, and the instance's run clock (which counts every run) must not
    # eat a later plan's time limit.
    from programs.planner import lp
    from programs.planner.planner import lp_input

    cases = [
        req([-500.0], soc=0.9, soc_max=0.9, eta_c=0.9, eta_d=0.9),  # a MIP round
        req([10.0, 50.0, 30.0] * 20, soc=0.5).model_copy(update={"time_limit_s": 1e-9}),  # times out
        req([10.0, 50.0, 30.0, -20.0, 80.0] * 8, soc=0.3, eta_c=0.9, eta_d=0.95, deg=5.0),
        req([40.0, 10.0, 90.0], soc=0.5, pc=5.0, pd=5.0),
    ]
    fresh = []
    for r in cases:
        lp._LOCAL.highs = None
        fresh.append(lp.solve(lp_input(r)))
    reused = [lp.solve(lp_input(r)) for r in cases]
    for a, b in zip(fresh, reused):
        assert (a.ok, a.message, a.mip_rounds) == (b.ok, b.message, b.mip_rounds)
        if a.ok:
            assert a.charge_kw.tobytes() == b.charge_kw.tobytes()
            assert a.discharge_kw.tobytes() == b.discharge_kw.tobytes()
            assert a.objective == b.objective
    limited = lp_input(cases[2].model_copy(update={"time_limit_s": 0.5}))
    h = lp._highs()
    for _ in range(50_000):  # until the instance has run for longer than one plan's limit (bounded)
        assert lp.solve(limited).ok
        if h.getRunTime() > 1.0:
            break
    assert h.getRunTime() > 1.0
