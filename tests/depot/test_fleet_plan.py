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


def test_needs_that_do_not_fit_the_connection_fall_short_and_say_so() -> None:
    """Two EVs each able to reach 40 kWh alone, but the connection carries only one at full power: the
    plan stays feasible, charges at the limit every interval, and reports the shortfall."""
    n = 8
    evs = (_ev(n, 20.0, 40.0, 8), _ev(n, 20.0, 40.0, 8))
    plan = solve_fleet(FleetInput(np.full(n, 50.0), np.zeros(n), 11.0, 0.0, evs, DT))
    assert plan.ok, plan.message
    assert plan.power_kw().sum(axis=0) == pytest.approx(np.full(n, 11.0))  # all the connection, every interval
    reach = 2 * 20.0 + n * 11.0 * 0.95 * DT  # what the connection can put into both together
    assert plan.shortfall_kwh.sum() == pytest.approx(80.0 - reach, abs=1e-6)
    assert plan.cost == pytest.approx(50.0 * 11.0 * n * DT / 1000.0)  # the penalty is not money


def test_a_building_above_the_limit_stops_net_charging_but_never_asks_the_fleet_to_cover_it() -> None:
    n = 4
    need = np.array([0.0, 0.0, 0.0, 57.0])  # wants every interval at full power
    ev = FleetEv(40.0, np.ones(n, dtype=bool), need, 6.0, 57.0, 11.0, 11.0)
    b = np.array([0.0, 30.0, 30.0, 0.0])  # 30 kW building over a 20 kW import limit
    price = np.array([10.0, 10.0, 10.0, 10.0])
    plan = solve_fleet(FleetInput(price, b, 20.0, 10.0, (ev,), DT, deg_per_mwh=100.0))  # discharge never pays
    assert plan.ok, plan.message  # not infeasible: the fleet is not asked to carry the building
    assert (plan.power_kw()[0, 1:3] <= 1e-9).all()  # no charge while the building alone breaks the limit
    assert (plan.discharge_kw[0] == 0.0).all()
    assert plan.power_kw()[0, [0, 3]] == pytest.approx([11.0, 11.0])
    assert plan.shortfall_kwh[0] == pytest.approx(2 * 11.0 * 0.95 * DT)  # the two intervals it could not use


def test_trips_between_stays_are_planned_for() -> None:
    """Perfect foresight over two stays: the trip's energy comes off between them, and the second
    departure's need is met from what the first stay stored plus the second's charging."""
    n = 12
    conn = np.array([True] * 4 + [False] * 4 + [True] * 4)
    need = np.zeros(n)
    need[3], need[11] = 30.0, 30.0
    drain = np.zeros(n)
    drain[4:8] = 5.0  # 20 kWh trip
    price = np.array([10.0] * 4 + [0.0] * 4 + [200.0] * 4)  # charging the second stay is dear
    ev = FleetEv(35.0, conn, need, 6.0, 57.0, 11.0, 11.0, drain_kwh=drain)
    plan = solve_fleet(FleetInput(price, np.zeros(n), 100.0, 100.0, (ev,), DT))
    assert plan.ok, plan.message
    e = plan.energy_kwh[0]
    assert e[7] == pytest.approx(e[3] - 20.0)  # the trip
    assert e[11] == pytest.approx(30.0) and plan.shortfall_kwh[0] == 0.0
    assert (plan.power_kw()[0, 4:8] == 0.0).all()  # away: no columns, no power
    # the cheap first stay carries the second departure as far as 11 kW for an hour can
    assert e[3] == pytest.approx(35.0 + 4 * 11.0 * 0.95 * DT)


def test_an_ev_below_its_floor_charges_now_ahead_of_the_cheap_hours() -> None:
    """The floor (the task's departure reserve) is soft: an EV below it is charged at once though the
    price is high, up to the floor and no further; without it the same EV waits for the cheap hours."""
    n = 16  # 4 hours
    price = np.full(n, 200.0)
    price[8:] = 10.0  # the last two hours are cheap
    base = _ev(n, 20.0, 40.0, 16)
    floor = np.full(n, 30.0)
    floor[-1] = 40.0
    free = solve_fleet(FleetInput(price, np.zeros(n), 50.0, 50.0, (base,), DT))
    assert free.charge_kw[0, :8].sum() == 0.0  # nothing in the dear hours
    below = FleetEv(20.0, base.connected, base.need_kwh, 6.0, 57.0, 11.0, 11.0, floor_kwh=floor)
    plan = solve_fleet(FleetInput(price, np.zeros(n), 50.0, 50.0, (below,), DT))
    assert plan.ok, plan.message
    assert plan.charge_kw[0, 0] == pytest.approx(11.0)  # at its rating from the first interval
    assert plan.energy_kwh[0, :8].max() == pytest.approx(30.0, abs=1e-6)  # to the floor, not above it
    assert plan.energy_kwh[0, -1] == pytest.approx(40.0, abs=1e-6)
    assert plan.shortfall_kwh.sum() == 0.0
