"""The arbitrage linear program, built as numpy arrays and handed to HiGHS in one ``passModel`` call.

Variables per interval t (length ``dt`` hours): grid-side charge ``c_t`` >= 0 and discharge ``d_t`` >= 0
(kW), and the stored energy ``e_t`` at the end of the interval (kWh). One equality row per interval:

    e_t - e_{t-1} - eta_c*dt*c_t + dt/eta_d*d_t = -drive_t          (e_{-1} = the energy now)

Cost = sum price_t*dt*(c_t - d_t)/1000 + deg*dt*d_t/(eta_d*1000) - value_end*e_{n-1}/1000, which is the
scenario's accounting: price x grid energy plus degradation per MWh taken out of the *battery*.
Plug-in windows enter as bounds (c_t, d_t fixed to 0 while away), the SoC window, departure and terminal
SoC as bounds on e_t. No constraint matrix beyond the energy balance: the model stays banded and tiny.

Lower bounds that cannot be reached (a car that arrives nearly empty an hour before departure) are
lowered to the most that full-power charging reaches, so the program is always feasible and the
driver gets as much as physically possible; the clamps are reported.

No simultaneous charge and discharge: in the LP relaxation both can be non-zero in one interval, which
burns energy in the conversion losses. That only pays when burning energy is worth money: prices below
about -(deg/eta_d)/(1 - eta_c*eta_d) (about -150/MWh here) with a full battery, or a terminal value
below zero. We solve the LP, look for such intervals, and only then make exactly those intervals
exclusive with one binary each (``c_t <= Pc*u_t``, ``d_t <= Pd*(1-u_t)``) and re-solve as a small MIP;
repeated until no interval has both (at most a few rounds; the last round makes every connected
interval binary). So the published plan is exact, and the common case stays a pure LP.
"""

from __future__ import annotations

import functools
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

EPS_KW = 1e-6  # below this a power is zero (HiGHS primal feasibility tolerance is 1e-7)
# HiGHS presolve costs more than it saves on this small banded LP: 0.82 -> 0.51 ms per 30-48 interval
# plan, the 2-year perfect-foresight LP no slower (docs/planner.md "The backtest"). Among prices that
# tie exactly it may pick another optimal vertex: the same objective, another of the tied intervals.
PRESOLVE = "off"
THREADS = 1  # ``new_highs``: why one
# ``_start_basis`` up to two days of 5-minute intervals, the longest re-plan horizon. Beyond, in the
# backtest's whole-series perfect-foresight LP (17,472 hourly rows), nearly every stored energy starts
# outside its bounds and HiGHS's all-slack start is ten times faster (0.23 s against 2.3 s).
START_BASIS_MAX = 2 * 288


@dataclass(frozen=True)
class LpInput:
    price: np.ndarray  # currency/MWh per interval
    connected: np.ndarray  # bool per interval
    drive_kwh: np.ndarray  # energy used by driving in each interval (battery side)
    e_lo: np.ndarray  # kWh floor at the end of each interval (SoC window, departures, terminal)
    e_hi: np.ndarray  # kWh ceiling at the end of each interval
    e0: float  # kWh now
    dt_h: float
    max_charge_kw: float
    max_discharge_kw: float
    eta_c: float
    eta_d: float
    deg_per_mwh: float = 0.0
    value_end_per_mwh: float = 0.0
    time_limit_s: float = 2.0


@dataclass(frozen=True)
class LpResult:
    ok: bool
    message: str
    charge_kw: np.ndarray
    discharge_kw: np.ndarray
    energy_kwh: np.ndarray  # at the end of each interval
    objective: float
    solve_time_s: float
    lowered: tuple[int, ...] = ()  # intervals whose floor was lowered to what is reachable
    mip_rounds: int = 0


def reachable_bounds(inp: LpInput) -> tuple[list[float], list[float], tuple[int, ...]]:
    """Clamp the energy bounds to what the charger can reach from ``e0`` (see module docstring)."""
    import numpy as np

    # the same float64 arithmetic on Python floats: a loop over numpy scalars costs a re-plan more.
    # A connected interval gains (eta_c*Pc)*dt and loses Pd*dt/eta_d, a disconnected one 0.0: what
    # multiplying by the plug (1.0 or 0.0) gives, bit for bit, without two array products.
    full_gain = inp.eta_c * inp.max_charge_kw * inp.dt_h
    full_loss = inp.max_discharge_kw * inp.dt_h / inp.eta_d
    drive = np.asarray(inp.drive_kwh, dtype=float).tolist()
    hi = np.asarray(inp.e_hi, dtype=float).tolist()
    lo = np.asarray(inp.e_lo, dtype=float).tolist()
    lowered = []
    top = bottom = float(inp.e0)
    # min/max written out (as the builtins pick among equals: the first): a call each costs the loop more
    for t, (c, dr, h, low) in enumerate(zip(np.asarray(inp.connected).tolist(), drive, hi, lo)):
        bottom = bottom - (full_loss if c else 0.0) - dr
        if h < bottom:  # already above the ceiling (e.g. after drift): allow the way down
            h = hi[t] = bottom
        up = top + (full_gain if c else 0.0) - dr
        top = h if h <= up else up
        floor = low if low <= top else top
        bottom = bottom if bottom >= floor else floor
        if low > top + 1e-9:
            lo[t] = top
            lowered.append(t)
    return lo, hi, tuple(lowered)


def solve(inp: LpInput) -> LpResult:
    import highspy
    import numpy as np

    t0 = time.perf_counter()
    n = len(inp.price)
    dt = inp.dt_h
    lo, hi, lowered = reachable_bounds(inp)
    conn = np.asarray(inp.connected, dtype=bool)
    price = np.asarray(inp.price, dtype=float)

    # columns c_0..c_{n-1}, d_0..d_{n-1}, e_0..e_{n-1}; each array built in one call (a re-plan is
    # mostly such calls: the backtest makes thousands)
    zeros = np.zeros(n)
    last = np.zeros(n)
    last[-1] = -inp.value_end_per_mwh / 1000.0
    cost = np.concatenate((price * dt / 1000.0, (-price + inp.deg_per_mwh / inp.eta_d) * dt / 1000.0, last))
    col_lo = np.concatenate((zeros, zeros, lo))
    col_hi = np.concatenate((inp.max_charge_kw * conn, inp.max_discharge_kw * conn, hi))
    rhs = -np.asarray(inp.drive_kwh, dtype=float)
    rhs[0] += inp.e0
    start, index, value, continuous = _matrix(n, inp.eta_c, inp.eta_d, dt)

    h = _highs()
    # HiGHS's run clock counts every run of the instance, so the limit is set from where it stands now
    h.setOptionValue("time_limit", h.getRunTime() + float(inp.time_limit_s))
    h.passModel(3 * n, n, len(index), 1, 1, 0.0, cost, col_lo, col_hi, rhs, rhs, start, index, value, continuous)
    if n <= START_BASIS_MAX:
        h.setBasis(_start_basis(n))
    rounds = 0
    binaries: set[int] = set()
    while True:
        h.run()
        status = h.getModelStatus()
        if status != highspy.HighsModelStatus.kOptimal:
            return LpResult(
                False,
                f"HiGHS: {h.modelStatusToString(status)}",
                np.zeros(n),
                np.zeros(n),
                np.zeros(n),
                float("nan"),
                time.perf_counter() - t0,
                lowered,
                rounds,
            )
        x = np.asarray(h.getSolution().col_value)
        c, d = x[:n], x[n : 2 * n]
        charging, discharging = c > EPS_KW, d > EPS_KW
        both = np.flatnonzero(charging & discharging)
        if both.size == 0:
            break
        rounds += 1
        new = [int(t) for t in both if int(t) not in binaries]
        if rounds >= 3:  # stubborn: make every connected interval exclusive at once
            new = [int(t) for t in np.flatnonzero(conn) if int(t) not in binaries]
        if not new:
            return LpResult(
                False,
                "simultaneous charge and discharge persists",
                c,
                d,
                x[2 * n :],
                float("nan"),
                time.perf_counter() - t0,
                lowered,
                rounds,
            )
        _add_exclusive(h, new, n, inp)
        binaries.update(new)
    c = np.where(charging, c, 0.0)
    d = np.where(discharging, d, 0.0)
    return LpResult(
        True,
        "optimal",
        c,
        d,
        x[2 * n : 2 * n + n].copy(),
        float(h.getObjectiveValue()),
        time.perf_counter() - t0,
        lowered,
        rounds,
    )


@functools.lru_cache(maxsize=64)
def _matrix(n: int, eta_c: float, eta_d: float, dt: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The energy balance, column-wise: c_t and d_t in row t; e_t in rows t (+1) and t+1 (-1), and
    every column continuous. It depends only on the horizon's length and the charger, so the backtest's
    thousands of re-plans build it once per length (HiGHS copies what it is passed; the arrays are never
    written)."""
    import numpy as np

    nnz = 2 * n + 2 * n - 1
    start = np.empty(3 * n + 1, dtype=np.int32)
    start[: 2 * n + 1] = np.arange(2 * n + 1)
    start[2 * n + 1 :] = 2 * n + np.minimum(2 * np.arange(1, n + 1), 2 * n - 1)
    index = np.empty(nnz, dtype=np.int32)
    value = np.empty(nnz)
    index[:n] = np.arange(n)
    value[:n] = -eta_c * dt
    index[n : 2 * n] = np.arange(n)
    value[n : 2 * n] = dt / eta_d
    e_rows = np.empty(2 * n, dtype=np.int32)
    e_rows[0::2] = np.arange(n)
    e_rows[1::2] = np.arange(1, n + 1)
    e_vals = np.empty(2 * n)
    e_vals[0::2] = 1.0
    e_vals[1::2] = -1.0
    index[2 * n :] = e_rows[:-1]
    value[2 * n :] = e_vals[:-1]
    continuous = np.zeros(3 * n, dtype=np.int32)
    for a in (start, index, value, continuous):
        a.flags.writeable = False
    return start, index, value, continuous


@functools.lru_cache(maxsize=64)
def _start_basis(n: int):
    """Where the simplex starts: every stored energy e_t basic (one per energy-balance row, a bidiagonal
    and so regular basis), every power c_t, d_t at its lower bound. The powers are boxed, so HiGHS's dual
    simplex makes each dual feasible by moving it to its other bound, without a pivot; what is left is
    repairing the few e_t outside their bounds: 1.7 pivots per plan instead of 44 from HiGHS's own
    all-slack start (0.44 -> 0.28 s of HiGHS time for a two-year backtest's 1,974 plans). The start
    depends only on the horizon's length, so a plan stays a function of its input alone: the backtest and
    the planner task solve the same input to the same plan. Among optimal schedules that differ only
    within the solver's tolerances, or at tied prices, it may end on another one than the all-slack start
    did (docs/planner.md "The backtest")."""
    import highspy

    basis = highspy.HighsBasis()
    basis.col_status = [highspy.HighsBasisStatus.kLower] * (2 * n) + [highspy.HighsBasisStatus.kBasic] * n
    basis.row_status = [highspy.HighsBasisStatus.kLower] * n
    basis.valid = True
    return basis


_BANNER_DONE = False
_LOCAL = threading.local()


def _highs():
    """This thread's HiGHS instance, emptied: constructing one costs about as much as solving a 48-interval
    plan, and the backtest solves thousands. Per thread, because an instance is not thread-safe. Solutions
    are the same as from a fresh instance (checked on every re-plan of a 2-year backtest)."""
    h = getattr(_LOCAL, "highs", None)
    if h is None:
        h = _LOCAL.highs = new_highs()
        h.setOptionValue("output_flag", False)  # options outlive ``clearModel``: set once per instance
        h.setOptionValue("presolve", PRESOLVE)
    else:
        h.clearModel()
    return h


def new_highs():
    """A silent, single-threaded HiGHS instance, the only way this code makes one.

    Silent: HiGHS prints its banner to the C stdout on the first construction in a process, before any
    option can turn output off; that would corrupt a command's JSON on stdout, so the first construction
    runs with file descriptor 1 pointed at /dev/null.

    One thread: every ``run`` sizes HiGHS's global scheduler by reading the CPU topology from sysfs
    (``highs::parallel::available_core_count``, five files), once more when ``threads`` is left at 0.
    The plans here are small LPs that the serial dual simplex solves, so that read is all a thread pool
    would bring: 0.1 ms of a 0.3 ms run, 0.2 s of a two-year backtest. The scheduler is global and
    refuses an instance that asks for another thread count than the first one did (the run fails with
    status "Not Set"), so every instance of the process must ask for the same: they all come from here."""
    global _BANNER_DONE
    import highspy

    if _BANNER_DONE:
        h = highspy.Highs()
    else:
        import ctypes
        import os
        import sys

        sys.stdout.flush()
        saved = os.dup(1)
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, 1)
            h = highspy.Highs()
            ctypes.CDLL(None).fflush(None)
        finally:
            os.dup2(saved, 1)
            os.close(saved)
            os.close(null)
        _BANNER_DONE = True
    h.setOptionValue("threads", THREADS)
    return h


def _add_exclusive(h, ts: list[int], n: int, inp: LpInput) -> None:
    """One binary u per interval: c_t <= Pc*u and d_t <= Pd*(1-u)."""
    import highspy
    import numpy as np

    k = len(ts)
    first = h.getNumCol()
    h.addCols(k, np.zeros(k), np.zeros(k), np.ones(k), 0, np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0))
    h.changeColsIntegrality(
        k, np.arange(first, first + k, dtype=np.int32), np.full(k, highspy.HighsVarType.kInteger.value, dtype=np.uint8)
    )
    idx = np.empty(4 * k, dtype=np.int32)
    val = np.empty(4 * k)
    for j, t in enumerate(ts):
        idx[4 * j : 4 * j + 4] = (t, first + j, n + t, first + j)
        val[4 * j : 4 * j + 4] = (1.0, -inp.max_charge_kw, 1.0, inp.max_discharge_kw)
    starts = np.arange(0, 4 * k, 2, dtype=np.int32)
    lower = np.full(2 * k, -highspy.kHighsInf)
    upper = np.tile([0.0, inp.max_discharge_kw], k)
    h.addRows(2 * k, lower, upper, 4 * k, starts, idx, val)
