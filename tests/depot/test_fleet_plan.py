"""The fleet LP: the connection shared over the cheap hours, every departure met, the limit every interval."""

from __future__ import annotations

import numpy as np
import pytest

from programs.planner.fleet import FleetEv, FleetInput, solve_fleet

DT = 0.25  # 15-minute intervals


def _ev(n: int, e0: float, need: float, leave: int) -> FleetEv:
    conn = np.zeros(n, dtype=bool)
    conn[:leave] = True
    floor = np.zeros(n)
    floor[leave - 1] = need
    return FleetEv(e0, conn, floor, 6.0, 57.0, 11.0, 11.0)


def test_two_evs_share_the_cheap_hours_within_the_connection() -> None:
    n = 32  # 8 hours
    price = np.full(n, 100.0)
    price[8:16] = 20.0  # two cheap hours
    inp = FleetInput(price, np.full(n, 5.0), 20.0, 10.0, (_ev(n, 20.0, 40.0, 28), _ev(n, 25.0, 40.0, 28)), DT)
    plan = solve_fleet(inp)
    assert plan.ok, plan.message
    p = plan.power_kw()
    assert (p.sum(axis=0) + 5.0 <= 20.0 + 1e-6).all()  # the connection, every interval
    assert (p.sum(axis=0) + 5.0 >= -10.0 - 1e-6).all()
    assert plan.energy_kwh[:, 27] == pytest.approx([40.0, 40.0], abs=1e-6)  # departures met, not more
    cheap = p[:, 8:16].sum() * DT
    assert cheap == pytest.approx(15.0 * 2.0)  # the cheap hours run at what the connection leaves (15 kW)
    alone = solve_fleet(FleetInput(price, np.full(n, 5.0), 1e6, 1e6, inp.evs, DT))
    assert alone.power_kw()[:, 8:16].sum(axis=0).max() > 20.0  # without the connection both pile into them
    assert plan.cost > alone.cost


def test_a_departure_that_cannot_be_reached_is_lowered_to_full_power() -> None:
    n = 8
    inp = FleetInput(np.full(n, 50.0), np.zeros(n), 100.0, 100.0, (_ev(n, 10.0, 57.0, 4),), DT)
    plan = solve_fleet(inp)
    assert plan.ok
    assert plan.energy_kwh[0, 3] == pytest.approx(10.0 + 4 * 11.0 * 0.95 * DT)
    assert plan.power_kw()[0, :4] == pytest.approx(np.full(4, 11.0))
    assert (plan.power_kw()[0, 4:] == 0.0).all()  # away: nothing
