"""The planner's fast paths give what their plain definitions give: the cheapest price of each day, the
intervals a plug-in window covers and the driving energy spread before it, and the optimum with HiGHS
presolve off (programs/planner/lp.py ``PRESOLVE``) equal to the optimum with it on."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from programs.planner import Battery, Charger, PlanRequest, PlugWindow
from programs.planner.planner import interval_flags, lp_input
from programs.planner.terminal import daily_minima

T0 = dt.datetime(2018, 3, 24, 0, 0)
Q = dt.timedelta(minutes=15)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 2), st.floats(-500, 3000, allow_nan=False), st.booleans()), min_size=0, max_size=60
    ),
    st.booleans(),
)
def test_daily_minima_is_the_cheapest_plugged_in_price_of_each_day(
    rows: list[tuple[int, float, bool]], masked: bool
) -> None:
    days, day = [], 0
    for step, _, _ in rows:  # day numbers in time order, some days with no interval at all
        day += step
        days.append(day)
    prices = [p for _, p, _ in rows]
    plugged = [c for _, _, c in rows]
    want: dict[int, float] = {}
    for d, p, c in zip(days, prices, plugged):
        if c or not masked:
            want[d] = min(p, want.get(d, p))
    assert daily_minima(days, prices, plugged if masked else None) == list(want.values())


def request(n: int, windows: list[tuple[int, int, float, float | None]], offset_min: int) -> PlanRequest:
    """``windows``: (start, length) in quarter hours from T0 shifted by ``offset_min`` (not aligned to the
    intervals unless 0), trip energy, departure SoC."""
    out, t = [], T0 + dt.timedelta(minutes=offset_min)
    for gap, length, trip, soc in windows:
        start = t + gap * Q
        out.append(PlugWindow(start=start, end=start + length * Q, trip_energy_kwh=trip, departure_soc_min=soc))
        t = start + length * Q
    return PlanRequest(
        start=T0,
        step_s=900,
        prices=(50.0,) * n,
        n_published=n,
        soc=0.5,
        battery=Battery(capacity_kwh=60.0, soc_min=0.1, soc_max=0.9),
        charger=Charger(max_charge_kw=7.0, max_discharge_kw=7.0, efficiency_charge=0.9, efficiency_discharge=0.9),
        windows=tuple(out),
    )


windows_st = st.lists(
    st.tuples(st.integers(0, 20), st.integers(1, 30), st.sampled_from([0.0, 3.5, 12.0]), st.sampled_from([None, 0.8])),
    max_size=5,
)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 100), windows_st, st.sampled_from([-20, 0, 7]))
def test_interval_flags_are_their_definition(n: int, windows: list, offset_min: int) -> None:
    r = request(n, windows, offset_min)
    conn, drive, _ = interval_flags(r)
    # the definition, interval by interval (what bisection replaced)
    starts = [r.start + i * r.step for i in range(n)]
    want_conn, want_drive = [False] * n, [0.0] * n
    prev_end = None
    for w in sorted(r.windows, key=lambda w: w.start):
        for i, s in enumerate(starts):
            if w.start <= s and s + r.step <= w.end:
                want_conn[i] = True
        if w.trip_energy_kwh > 0:
            lo = prev_end if prev_end is not None else r.start
            share = w.trip_energy_kwh / max(1, round((w.start - lo) / r.step))
            for i, s in enumerate(starts):
                if lo <= s and s + r.step <= w.start:
                    want_drive[i] += share
        prev_end = w.end
    assert conn == want_conn
    assert drive == want_drive


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.sampled_from([-40.0, 0.0, 12.5, 30.0, 30.0, 55.0, 120.0]), min_size=4, max_size=48),
    st.floats(0.1, 0.9),
    windows_st,
)
def test_presolve_off_finds_the_same_optimum(prices: list[float], soc: float, windows: list) -> None:
    from programs.planner import lp

    r = request(len(prices), windows, 0).model_copy(update={"prices": tuple(prices), "soc": soc})
    inp = lp_input(r)
    fast = lp.solve(inp)
    assert lp.PRESOLVE == "off"
    lp.PRESOLVE = "on"
    try:
        slow = lp.solve(inp)
    finally:
        lp.PRESOLVE = "off"
    assert fast.ok and slow.ok
    assert fast.objective == pytest.approx(slow.objective, rel=1e-9, abs=1e-9)


def walked_windows(conn: list[bool], t: int, stop: int) -> list[tuple[int, int]]:
    """The plug-in windows' (first row, row after) of rows [t, stop) found by walking the rows, as
    ``windows_from_calendar`` did before it looked them up in ``Calendar.runs``."""
    out = []
    r = t
    if not conn[r]:
        p = r
        while p > 0 and not conn[p - 1]:
            p -= 1
        if p > 0:
            s = p - 1
            while s > 0 and conn[s - 1]:
                s -= 1
            out.append((s, p))
    while r < stop:
        if not conn[r]:
            r += 1
            continue
        s = r
        while s > 0 and conn[s - 1]:
            s -= 1
        e = r
        while e < len(conn) and conn[e]:
            e += 1
        out.append((s, e))
        r = e
    return out


@settings(max_examples=200, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=80), st.data())
def test_plug_in_windows_from_the_calendar_runs_are_the_walked_ones(conn: list[bool], data: st.DataObject) -> None:
    import numpy as np

    from backtest.data import load_scenario
    from programs.planner.scenario import Calendar
    from programs.planner.strategies import DecisionView, windows_from_calendar

    n = len(conn)
    t = data.draw(st.integers(0, n - 1))
    stop = data.draw(st.integers(t, n))
    times = tuple(T0 + i * Q for i in range(n))
    cal = Calendar(np.array(conn), np.zeros(n), np.zeros(n), (), ())
    view = DecisionView(t, 0.5, times, 900, cal, np.zeros(0), {}, np.zeros(0))
    sc = load_scenario(Path(__file__).resolve().parents[2] / "runtime/data/scenarios/commuter.yaml")
    got = [(w.start, w.end) for w in windows_from_calendar(view, stop, sc)]
    want = [(times[s], times[e] if e < n else times[-1] + Q) for s, e in walked_windows(conn, t, stop)]
    assert got == want
