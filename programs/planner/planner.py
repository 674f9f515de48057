"""``plan(request) -> Plan``: receding-horizon arbitrage with a rule-based fallback, as a pure function.

The caller (the planner task, the backtest) decides what the planner may see; this module only turns a
request into a plan. It never raises for a solver problem: when HiGHS is missing, times out or reports
anything but optimal, the fallback (charge as soon as plugged in until the departure SoC, never
discharge: the scenario's baseline behaviour) still yields a plan, marked ``status="fallback"`` with
the reason, so dispatch always has something safe to follow.
"""

from __future__ import annotations

import datetime as dt
import time
from bisect import bisect_left, bisect_right
from typing import TYPE_CHECKING, Literal

from programs.planner.model import Plan, PlanRequest

if TYPE_CHECKING:
    import numpy as np

    from programs.planner.lp import LpInput


def plan(request: PlanRequest, reason: str = "requested", *, use_solver: bool = True) -> Plan:
    """``use_solver=False`` gives the fallback directly (the task's answer to stale or missing prices)."""
    t0 = time.perf_counter()
    inp = lp_input(request)
    status, why, c, d, e = schedule(inp, reason, use_solver=use_solver)
    return _to_plan(request, inp, c, d, e, status, why, time.perf_counter() - t0)


def schedule(
    inp: LpInput, reason: str, *, use_solver: bool = True
) -> tuple[Literal["optimal", "fallback"], str, np.ndarray, np.ndarray, np.ndarray]:
    """(status, reason, charge kW, discharge kW, energy kWh) for an LP input: the solver's schedule, or
    the fallback with the solver's failure in the reason. ``plan`` wraps it in a validated ``Plan``;
    the backtest uses it directly on the input it builds from its calendar (programs/planner/strategies.py)."""
    if not use_solver:
        c, d, e = fallback_schedule(inp)
        return "fallback", reason, c, d, e
    try:
        from programs.planner import lp

        res = lp.solve(inp)
        failure = None if res.ok else res.message
    except Exception as exc:  # a solver that cannot run must never leave dispatch without a plan
        res, failure = None, f"{type(exc).__name__}: {exc}"
    if res is None or failure is not None:
        c, d, e = fallback_schedule(inp)
        return "fallback", f"{reason}; fallback because {failure}", c, d, e
    why = reason
    if res.lowered:
        why += f"; {len(res.lowered)} SoC floor(s) unreachable, lowered to the most full power reaches"
    return "optimal", why, res.charge_kw, res.discharge_kw, res.energy_kwh


def interval_flags(request: PlanRequest) -> tuple[list[bool], list[float], dict[int, float]]:
    """Per interval: connected, driving energy (kWh), and departure SoC floors keyed by interval index.

    An interval counts as connected only if it lies wholly inside a plug-in window. A window's trip
    energy is spread evenly over the disconnected intervals between the previous window's end and this
    window's start (counting those before ``start`` too, which are no longer planned); with no previous
    window it is spread over the disconnected intervals from ``start``.
    """
    n = len(request.prices)
    step = request.step
    starts = [request.start + i * step for i in range(n)]
    ends = [s + step for s in starts]
    conn = [False] * n
    drive = [0.0] * n
    floors: dict[int, float] = {}
    windows = sorted(request.windows, key=lambda w: w.start)
    prev_end: dt.datetime | None = None
    # intervals wholly inside [a, b): from the first starting at or after a to the last ending at or before b
    for w in windows:
        for i in range(bisect_left(starts, w.start), bisect_right(ends, w.end)):
            conn[i] = True
        if w.trip_energy_kwh > 0:
            lo = prev_end if prev_end is not None else request.start
            n_gap = max(1, round((w.start - lo) / step))
            share = w.trip_energy_kwh / n_gap
            for i in range(bisect_left(starts, lo), bisect_right(ends, w.start)):
                drive[i] += share
        if w.departure_soc_min is not None:
            j = round((w.end - request.start) / step) - 1
            if 0 <= j < n:
                floors[j] = max(floors.get(j, 0.0), w.departure_soc_min)
        prev_end = w.end
    return conn, drive, floors


def lp_input(request: PlanRequest) -> LpInput:
    import numpy as np

    from programs.planner.lp import LpInput

    b, ch = request.battery, request.charger
    n = len(request.prices)
    conn, drive, floors = interval_flags(request)
    lo = np.full(n, b.soc_min * b.capacity_kwh)
    for j, soc in floors.items():
        lo[j] = max(lo[j], min(soc, b.soc_max) * b.capacity_kwh)
    if request.terminal_soc_min is not None:
        lo[-1] = max(lo[-1], min(request.terminal_soc_min, b.soc_max) * b.capacity_kwh)
    return LpInput(
        price=np.asarray(request.prices, dtype=float),
        connected=np.asarray(conn, dtype=bool),
        drive_kwh=np.asarray(drive, dtype=float),
        e_lo=lo,
        e_hi=np.full(n, b.soc_max * b.capacity_kwh),
        e0=request.soc * b.capacity_kwh,
        dt_h=request.step_s / 3600.0,
        max_charge_kw=ch.max_charge_kw,
        max_discharge_kw=ch.max_discharge_kw,
        eta_c=ch.efficiency_charge,
        eta_d=ch.efficiency_discharge,
        deg_per_mwh=request.degradation_cost_per_mwh,
        # past the end of operation stored energy sells for nothing: valuing it would end the series
        # with energy nobody uses
        value_end_per_mwh=0.0 if request.ends_operation else request.terminal_value_per_mwh,
        time_limit_s=request.time_limit_s,
    )


def fallback_schedule(inp: LpInput):
    """Charge as soon as connected, at the power that reaches the highest floor still ahead in this
    plug-in window, never discharge. Needs no solver and no prices."""
    import numpy as np

    n = len(inp.price)
    c = np.zeros(n)
    e = np.zeros(n)
    level = inp.e0
    # highest floor from t to the end of t's connected run
    need = np.array(inp.e_lo, dtype=float)
    for t in range(n - 2, -1, -1):
        if inp.connected[t] and inp.connected[t + 1]:
            need[t] = max(need[t], need[t + 1])
    for t in range(n):
        if inp.connected[t]:
            p = (min(need[t], inp.e_hi[t]) - level) / (inp.eta_c * inp.dt_h)
            c[t] = min(max(p, 0.0), inp.max_charge_kw)
        level = level + inp.eta_c * c[t] * inp.dt_h - inp.drive_kwh[t]
        e[t] = level
    return c, np.zeros(n), e


def _to_plan(
    request: PlanRequest, inp: LpInput, c, d, e, status: Literal["optimal", "fallback"], reason: str, secs: float
) -> Plan:
    step = request.step
    cap = request.battery.capacity_kwh
    dt_h = inp.dt_h
    cost = 0.0
    intervals = []
    # Python floats (the same doubles): indexing numpy arrays per interval costs a re-plan more
    c, d, e = (x.tolist() if hasattr(x, "tolist") else list(x) for x in (c, d, e))
    for i, price in enumerate(request.prices):
        s = request.start + i * step
        ci, di = c[i], d[i]
        cost += price * dt_h * (ci - di) / 1000.0 + inp.deg_per_mwh * dt_h * di / inp.eta_d / 1000.0
        intervals.append(
            {
                "start": s,
                "end": s + step,
                "price": price,
                "forecast": i >= request.n_published,
                "connected": bool(inp.connected[i]),
                "power_w": round((ci - di) * 1000.0, 3),
                "soc_end": min(1.0, max(0.0, float(e[i]) / cap)),
            }
        )
    cost -= inp.value_end_per_mwh * float(e[-1]) / 1000.0
    # validated in one call (the intervals as plain dicts): the backtest makes thousands of plans
    return Plan.model_validate(
        {
            "created": request.start,
            "status": status,
            "reason": reason,
            "soc_start": request.soc,
            "objective": round(cost, 6),
            "solve_time_s": secs,
            "prices_key": request.prices_key,
            "intervals": intervals,
        }
    )
