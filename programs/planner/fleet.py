"""The fleet plan: one linear program over every connected EV of a depot, the connection and the prices.

Why joint: each EV planned alone would put every charge in the same cheap hours, and the connection
cannot carry them all at once; the allocator would then cut by urgency in real time and the plan's
savings would be lost. Here the connection is a constraint of the plan itself, so the plan shifts the
EVs among the cheap hours and every departure stays feasible.

Variables per EV i and *connected* interval k (``dt`` hours; an EV that is away has no columns at all,
which halves a depot's model: vans are away half the day): grid-side charge ``c_ik`` >= 0 and discharge
``d_ik`` >= 0 (kW), stored energy ``e_ik`` (kWh, within the SoC window), and at each departure a shortfall
``s_ik`` >= 0. Rows:

    e_ik - e_i,k-1 - eta_c*dt*c_ik + dt/eta_d*d_ik = -drain_i(k-1, k]     (e_i,-1 = the EV's energy now;
                                                                          drain: trips between two stays)
    e_ik + s_ik >= need_ik                                                (each departure)
    e_ik + u_ik >= floor_ik                                               (each interval with a floor)
    -(export_limit + building_t) <= sum_i (c_it - d_it) <= import_limit - building_t   (kW, each t)

Cost = sum price_t*dt*(c_it - d_it)/1000 + deg*dt*d_it/(eta_d*1000), the single-EV planner's accounting
(programs/planner/lp.py), plus SHORTFALL_COST per kWh of shortfall and FLOOR_COST per kWh-hour below a
floor. The floor is the caller's (runtime/tasks/fleet_task.py sets each van's departure reserve: the
energy from which its fair share of the connection still reaches its departure); soft, because a van the
allocator cut may already be below it, and then the cheapest plan charges that van now, before the cheap
hours. The shortfall keeps the plan feasible when the fleet's needs together do not fit the connection
(each need alone is already lowered to what the EV's full power can reach): the plan then says which
departure falls short and by how much, instead of failing and leaving every EVSE to its fallback. A
connection row whose building load alone breaks the limit is relaxed to "no net charge" (import) or "no
net discharge" (export): like the allocator, the plan never makes the fleet cover the building.
Simultaneous charge and discharge of one EV only pays at prices far below zero (lp.py explains); the
fleet LP does not add the binaries that exclude it and reports it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from programs.planner.lp import EPS_KW, new_highs

if TYPE_CHECKING:  # numpy loads with the first solve, not with the plug-in registry
    import numpy as np

SHORTFALL_COST = 1000.0  # currency per kWh missing at a departure: above any price a market has cleared at
# currency per kWh below an EV's floor, per hour it stays there: above any price spread a day's hours show
# (10 per kWh-hour = 2.5 per kWh-quarter-hour, i.e. 2500 /MWh), so a van below its floor charges now rather
# than in the cheap hours; below SHORTFALL_COST over a night (12 h = 120), so a floor never costs a departure.
FLOOR_COST = 10.0
# Dual simplex: on the model without the away columns it beats interior point (0.36 s) and primal simplex
# (0.37 s) at 50 EVs, 0.22 s of CPU; at 200 EVs 1.2 s against 3.2 s (BENCHMARKS.md "Fleet plan solve time").
SOLVER = "simplex"


@dataclass(frozen=True)
class FleetEv:
    e0_kwh: float  # energy now
    connected: np.ndarray  # bool per interval
    need_kwh: np.ndarray  # kWh floor at the end of each interval (the departure's need where it leaves), 0 else
    e_min_kwh: float
    e_max_kwh: float
    max_charge_kw: float
    max_discharge_kw: float
    eta_c: float = 0.95
    eta_d: float = 0.95
    drain_kwh: np.ndarray | None = field(default=None)  # energy a trip takes per interval (away only), or None
    # soft floor of the energy at the end of each interval (kWh), or None: see the module's docstring
    floor_kwh: np.ndarray | None = field(default=None)


@dataclass(frozen=True)
class FleetInput:
    price: np.ndarray  # currency/MWh per interval
    building_kw: np.ndarray  # import-positive, per interval
    import_limit_kw: float
    export_limit_kw: float
    evs: tuple[FleetEv, ...]
    dt_h: float
    deg_per_mwh: float = 0.0
    time_limit_s: float = 30.0


@dataclass(frozen=True)
class FleetPlan:
    ok: bool
    message: str
    charge_kw: np.ndarray  # (EVs, intervals)
    discharge_kw: np.ndarray
    energy_kwh: np.ndarray  # at the end of each interval
    cost: float  # energy and degradation, without the shortfall's penalty
    solve_s: float
    both: int  # intervals where some EV both charges and discharges (see the module's docstring)
    shortfall_kwh: np.ndarray  # per EV: what its departures miss of their (reachable) need, summed

    def power_kw(self) -> np.ndarray:
        """Per EV and interval, charge-positive: what each EVSE's plan tag carries."""
        return self.charge_kw - self.discharge_kw


def bounds(ev: FleetEv, n: int, dt: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lowest, highest energy the EV can be held at, need) per interval: the SoC window, widened to
    what full power can reach from now (an EV below its window cannot be above it at once), and each
    departure's need lowered to what full-power charging can reach."""
    import numpy as np

    conn = np.asarray(ev.connected, dtype=bool)
    drain = np.zeros(n) if ev.drain_kwh is None else np.asarray(ev.drain_kwh, dtype=float)
    up = conn * ev.max_charge_kw * ev.eta_c * dt
    down = conn * ev.max_discharge_kw * dt / ev.eta_d
    cap = max(ev.e_max_kwh, ev.e0_kwh)
    if drain.any():
        reach, r = np.empty(n), ev.e0_kwh
        for t in range(n):
            r = min(cap, r + up[t]) - drain[t]
            reach[t] = r
    else:
        reach = np.minimum(cap, ev.e0_kwh + np.cumsum(up))
    lowest = ev.e0_kwh - np.cumsum(down + drain)
    lo = np.minimum(ev.e_min_kwh, reach)
    hi = np.maximum(ev.e_max_kwh, lowest)
    need = np.minimum(np.minimum(np.asarray(ev.need_kwh, dtype=float), reach), hi)
    return lo, hi, need


def _failed(message: str, shape: tuple[int, int], t0: float) -> FleetPlan:
    import numpy as np

    z = np.zeros(shape)
    return FleetPlan(False, message, z, z, z, float("nan"), time.perf_counter() - t0, 0, np.zeros(shape[0]))


def solve_fleet(inp: FleetInput) -> FleetPlan:
    import highspy
    import numpy as np

    t0 = time.perf_counter()
    n, m, dt = len(inp.price), len(inp.evs), inp.dt_h
    price = np.asarray(inp.price, dtype=float)
    if m == 0:  # nobody plugged in: nothing to plan, and nothing for HiGHS to fail on
        z = np.zeros((0, n))
        return FleetPlan(True, "optimal", z, z, z, 0.0, time.perf_counter() - t0, 0, np.zeros(0))
    # Triplets (row, col, value), then one sort into the column-wise matrix HiGHS takes in one call.
    rows, cols, vals = [], [], []
    cost, col_lo, col_hi, row_lo, row_hi = [], [], [], [], []
    # per EV: its connected intervals, first column, first shortfall column, departures
    where: list[tuple[np.ndarray, int, int, int]] = []
    nrow = n  # rows 0..n-1: the connection
    ncol = 0
    for ev in inp.evs:
        conn = np.asarray(ev.connected, dtype=bool)
        ks = np.flatnonzero(conn)
        need_at = np.flatnonzero(np.asarray(ev.need_kwh, dtype=float) > 0)
        if not np.isin(need_at, ks).all():
            raise ValueError("a departure's need falls on an interval where the EV is away")
        L = len(ks)
        c0, d0, e0c = ncol, ncol + L, ncol + 2 * L
        lo, hi, need = bounds(ev, n, dt)
        drain = np.zeros(n) if ev.drain_kwh is None else np.asarray(ev.drain_kwh, dtype=float)
        cum = np.concatenate([[0.0], np.cumsum(drain)])
        prev = np.concatenate([[-1], ks[:-1]])
        rhs = -(cum[ks] - cum[prev + 1])  # the trips between the stay before and this one
        if L:
            rhs[0] += ev.e0_kwh
        er = nrow + np.arange(L)  # energy rows
        j = np.arange(L)
        rows += [er, ks, er, ks, er, er[1:]]
        cols += [c0 + j, c0 + j, d0 + j, d0 + j, e0c + j, e0c + j[:-1]]
        vals += [
            np.full(L, -ev.eta_c * dt),
            np.ones(L),
            np.full(L, dt / ev.eta_d),
            -np.ones(L),
            np.ones(L),
            -np.ones(max(0, L - 1)),
        ]
        cost += [price[ks] * dt / 1000.0, (-price[ks] + inp.deg_per_mwh / ev.eta_d) * dt / 1000.0, np.zeros(L)]
        col_lo += [np.zeros(L), np.zeros(L), lo[ks]]
        col_hi += [np.full(L, ev.max_charge_kw), np.full(L, ev.max_discharge_kw), hi[ks]]
        row_lo.append(rhs)
        row_hi.append(rhs)
        nrow += L
        ncol += 3 * L
        # departures: e + s >= need
        q = len(need_at)
        pos = np.searchsorted(ks, need_at)
        nr = nrow + np.arange(q)
        rows += [nr, nr]
        cols += [e0c + pos, ncol + np.arange(q)]
        vals += [np.ones(q), np.ones(q)]
        cost.append(np.full(q, SHORTFALL_COST))
        col_lo.append(np.zeros(q))
        col_hi.append(need[need_at])
        row_lo.append(need[need_at])
        row_hi.append(np.full(q, np.inf))
        where.append((ks, c0, ncol, q))
        nrow += q
        ncol += q
        if ev.floor_kwh is not None:  # e + u >= floor where the floor is above the window's bottom
            fl = np.minimum(np.asarray(ev.floor_kwh, dtype=float)[ks], hi[ks])
            at = np.flatnonzero(fl > lo[ks] + 1e-9)
            f = len(at)
            fr = nrow + np.arange(f)
            rows += [fr, fr]
            cols += [e0c + at, ncol + np.arange(f)]
            vals += [np.ones(f), np.ones(f)]
            cost.append(np.full(f, FLOOR_COST * dt))
            col_lo.append(np.zeros(f))
            col_hi.append(fl[at] - lo[ks][at])
            row_lo.append(fl[at])
            row_hi.append(np.full(f, np.inf))
            nrow += f
            ncol += f
    b = np.asarray(inp.building_kw, dtype=float)
    conn_hi = np.maximum(0.0, inp.import_limit_kw - b)
    conn_lo = np.minimum(0.0, -(inp.export_limit_kw + b))
    r = np.concatenate(rows).astype(np.int32)
    c = np.concatenate(cols).astype(np.int64)
    v = np.concatenate(vals)
    order = np.argsort(c, kind="stable")
    start = np.searchsorted(c[order], np.arange(ncol + 1)).astype(np.int32)
    h = new_highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("time_limit", float(inp.time_limit_s))
    h.setOptionValue("solver", SOLVER)
    h.setOptionValue("simplex_strategy", 1)  # dual
    h.passModel(
        ncol,
        nrow,
        len(v),
        1,
        1,
        0.0,
        np.concatenate(cost) if cost else np.zeros(0),
        np.concatenate(col_lo) if col_lo else np.zeros(0),
        np.concatenate(col_hi) if col_hi else np.zeros(0),
        np.concatenate([conn_lo, *row_lo]),
        np.concatenate([conn_hi, *row_hi]),
        start,
        r[order],
        v[order],
        np.zeros(ncol, dtype=np.int32),
    )
    h.run()
    status = h.getModelStatus()
    shape = (m, n)
    if status != highspy.HighsModelStatus.kOptimal:
        return _failed(f"HiGHS: {h.modelStatusToString(status)}", shape, t0)
    x = np.asarray(h.getSolution().col_value)
    ch, dis, short = np.zeros(shape), np.zeros(shape), np.zeros(m)
    for i, (ks, c0, s0, q) in enumerate(where):
        L = len(ks)
        ch[i, ks] = x[c0 : c0 + L]
        dis[i, ks] = x[c0 + L : c0 + 2 * L]
        short[i] = x[s0 : s0 + q].sum()
    ch = np.where(ch > EPS_KW, ch, 0.0)
    dis = np.where(dis > EPS_KW, dis, 0.0)
    energy = np.empty(shape)
    for i, ev in enumerate(inp.evs):
        drain = np.zeros(n) if ev.drain_kwh is None else np.asarray(ev.drain_kwh, dtype=float)
        energy[i] = ev.e0_kwh + np.cumsum(ev.eta_c * dt * ch[i] - dt / ev.eta_d * dis[i] - drain)
    both = int(np.count_nonzero(((ch > 0) & (dis > 0)).any(axis=0)))
    deg = sum(inp.deg_per_mwh * dt * dis[i].sum() / (ev.eta_d * 1000.0) for i, ev in enumerate(inp.evs))
    money = float((price * dt / 1000.0 * (ch - dis).sum(axis=0)).sum() + deg)
    short = np.where(short > 1e-6, short, 0.0)
    return FleetPlan(True, "optimal", ch, dis, energy, money, time.perf_counter() - t0, both, short)
