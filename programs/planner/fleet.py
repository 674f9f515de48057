"""The fleet plan: one linear program over every connected EV of a depot, the connection and the prices.

Why joint: each EV planned alone would put every charge in the same cheap hours, and the connection
cannot carry them all at once; the allocator would then cut by urgency in real time and the plan's
savings would be lost. Here the connection is a constraint of the plan itself, so the plan shifts the
EVs among the cheap hours and every departure stays feasible.

Variables per EV i and interval t (``dt`` hours): grid-side charge ``c_it`` >= 0 and discharge ``d_it`` >= 0
(kW, 0 while away), stored energy ``e_it`` (kWh, within the SoC window; at the departure interval at least
what the EV needs, lowered to what full power can reach). Rows:

    e_it - e_i,t-1 - eta_c*dt*c_it + dt/eta_d*d_it = 0                   (e_i,-1 = the EV's energy now)
    -(export_limit + building_t) <= sum_i (c_it - d_it) <= import_limit - building_t   (kW, each t)

Cost = sum price_t*dt*(c_it - d_it)/1000 + deg*dt*d_it/(eta_d*1000), the single-EV planner's accounting
(programs/planner/lp.py). Simultaneous charge and discharge of one EV only pays at prices far below zero
(lp.py explains); the fleet LP does not add the binaries that exclude it and reports it when it occurs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from programs.planner.lp import EPS_KW, new_highs

if TYPE_CHECKING:  # numpy loads with the first solve, not with the plug-in registry
    import numpy as np


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
    energy_kwh: np.ndarray
    cost: float
    solve_s: float
    both: int  # intervals where some EV both charges and discharges (see the module's docstring)

    def power_kw(self) -> np.ndarray:
        """Per EV and interval, charge-positive: what each EVSE's plan tag carries."""
        return self.charge_kw - self.discharge_kw


def _floors(ev: FleetEv, n: int, dt: float) -> np.ndarray:
    """The departure needs, lowered to what full-power charging can reach from now (always feasible)."""
    import numpy as np

    reach = ev.e0_kwh + np.cumsum(ev.connected * ev.max_charge_kw * ev.eta_c * dt)
    lo = np.maximum(np.asarray(ev.need_kwh, dtype=float), ev.e_min_kwh)
    return np.minimum(np.minimum(lo, reach), ev.e_max_kwh)


def solve_fleet(inp: FleetInput) -> FleetPlan:
    import highspy
    import numpy as np

    t0 = time.perf_counter()
    n, m, dt = len(inp.price), len(inp.evs), inp.dt_h
    price = np.asarray(inp.price, dtype=float)
    rows_e = m * n
    cost, col_lo, col_hi, starts, index, value = [], [], [], [], [], []
    nnz = 0
    t_idx = np.arange(n)
    for i, ev in enumerate(inp.evs):
        conn = np.asarray(ev.connected, dtype=bool)
        base = i * n
        cost += [price * dt / 1000.0, (-price + inp.deg_per_mwh / ev.eta_d) * dt / 1000.0, np.zeros(n)]
        col_lo += [np.zeros(n), np.zeros(n), _floors(ev, n, dt)]
        col_hi += [ev.max_charge_kw * conn, ev.max_discharge_kw * conn, np.full(n, ev.e_max_kwh)]
        for coef_e, coef_g in ((-ev.eta_c * dt, 1.0), (dt / ev.eta_d, -1.0)):  # c, then d: energy row, grid row
            starts.append(nnz + 2 * t_idx)
            index.append(np.column_stack([base + t_idx, rows_e + t_idx]).ravel())
            value.append(np.column_stack([np.full(n, coef_e), np.full(n, coef_g)]).ravel())
            nnz += 2 * n
        e_rows = np.column_stack([base + t_idx, base + t_idx + 1]).ravel()[:-1]  # e_t in rows t and t+1
        e_vals = np.tile([1.0, -1.0], n)[:-1]
        starts.append(nnz + np.minimum(2 * t_idx, 2 * n - 1))
        index.append(e_rows)
        value.append(e_vals)
        nnz += 2 * n - 1
    start = np.concatenate([*starts, [nnz]]).astype(np.int32)
    rhs_e = np.zeros(rows_e)
    rhs_e[np.arange(m) * n] = [ev.e0_kwh for ev in inp.evs]
    b = np.asarray(inp.building_kw, dtype=float)
    row_lo = np.concatenate([rhs_e, -(inp.export_limit_kw + b)])
    row_hi = np.concatenate([rhs_e, inp.import_limit_kw - b])
    ncol = 3 * n * m
    h = new_highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("time_limit", float(inp.time_limit_s))
    h.setOptionValue("solver", "ipm")  # interior point: 0.8 s beside simplex 1.2 s at 50 EVs (BENCHMARKS.md)
    h.passModel(
        ncol,
        rows_e + n,
        nnz,
        1,
        1,
        0.0,
        np.concatenate(cost),
        np.concatenate(col_lo),
        np.concatenate(col_hi),
        row_lo,
        row_hi,
        start,
        np.concatenate(index).astype(np.int32),
        np.concatenate(value),
        np.zeros(ncol, dtype=np.int32),
    )
    h.run()
    status = h.getModelStatus()
    shape = (m, n)
    if status != highspy.HighsModelStatus.kOptimal:
        z = np.zeros(shape)
        return FleetPlan(
            False, f"HiGHS: {h.modelStatusToString(status)}", z, z, z, float("nan"), time.perf_counter() - t0, 0
        )
    x = np.asarray(h.getSolution().col_value).reshape(m, 3, n)
    c = np.where(x[:, 0] > EPS_KW, x[:, 0], 0.0)
    d = np.where(x[:, 1] > EPS_KW, x[:, 1], 0.0)
    both = int(np.count_nonzero(((c > 0) & (d > 0)).any(axis=0)))
    return FleetPlan(
        True,
        "optimal",
        c,
        d,
        x[:, 2].copy(),
        float(h.getInfo().objective_function_value),
        time.perf_counter() - t0,
        both,
    )
