"""Depot benchmarks: scan compute time against EVSE count, and a live depot's Modbus load and lateness.

``python -m tests.bench.bench_depot`` measures the engine step of a depot site (tests/depot/sites.py: per
EVSE modes, dispatch and v2g_safety through the renaming view; the allocator; the connection interlock)
for 1, 5, 20 and 50 EVSEs, fed every input each cycle. CPU time of the scan thread (``thread_time``) is
reported beside wall time: on a shared machine the wall time includes waiting for a core.

``--live SECONDS`` also runs the example depot (runtime/sites/depot.yaml, free ports) in real time for that
long and reports the scan's lateness and compute time (``--stats-json``) and the Modbus requests per cycle
its virtual plant served.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from runtime.site import build_site
from tests.depot.drive import Drive
from tests.depot.sites import depot_site

COUNTS = (1, 5, 20, 50)
FLEET_COUNTS = (1, 10, 50, 200)


def compute(n: int, cycles: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        built = build_site(depot_site(Path(tmp), n=n, import_w=n * 8_000.0))
    d = Drive(built, list(range(1, n + 1)))
    d.run(5.0)  # past enter service: every EVSE charging, the allocator cutting
    wall, cpu = [], []
    for _ in range(cycles):
        ups = d.updates()
        w0, c0 = time.perf_counter(), time.thread_time()
        res = d.engine.step(d.now_us, ups)
        cpu.append(time.thread_time() - c0)
        wall.append(time.perf_counter() - w0)
        for i in d.ids:
            d.power[i] = res.outputs[f"evse{i}.inverter.setpoint"] if res.outputs[f"evse{i}.inverter.enable"] else 0.0
        d.now_us += d.period_us
    wall.sort()
    cpu.sort()
    return {
        "evses": n,
        "tags": len(built.tags.specs),
        "cpu_median_ms": round(statistics.median(cpu) * 1e3, 3),
        "cpu_p99_ms": round(cpu[int(0.99 * len(cpu))] * 1e3, 3),
        "wall_median_ms": round(statistics.median(wall) * 1e3, 3),
        "wall_p99_ms": round(wall[int(0.99 * len(wall))] * 1e3, 3),
    }


def live(seconds: float) -> dict[str, object]:
    from tests.depot.test_live import depot_copy
    from tests.runtime.helpers import cli

    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        site = depot_copy(t)
        res = cli("run", str(site), "--for", str(seconds), "--stats-json", str(t / "stats.json"), timeout=seconds + 120)
        if res.returncode != 0:
            raise SystemExit(res.stderr[-2000:])
        stats = json.loads((t / "stats.json").read_text())
        report = json.loads((t / "report.json").read_text())
    req = report["modbus_requests"]
    cycles = max(1, stats["cycles"])
    return {
        "seconds": seconds,
        "cycles": cycles,
        "overruns": stats["overruns"],
        "lateness_ms": stats["lateness_ms"],
        "cycle_time_ms": stats["cycle_time_ms"],
        "reads_per_cycle": round(req["reads"] / cycles, 2),
        "writes_per_cycle": round(req["writes"] / cycles, 2),
    }


def fleet_input(evs: int, hours: int = 48, dt_h: float = 0.25, seed: int = 1) -> tuple[Any, ...]:
    """``evs`` EVs over ``hours`` at ``dt_h``: evening arrivals and morning departures, a connection of
    5 kW per EV beside a 30 kW building, a price day that repeats. (price, building, import, export,
    EVs as (e0, connected, need, e_min, e_max, max charge, max discharge), dt, degradation): plain
    values, so that an older version of programs/planner/fleet.py solves the same fleet."""
    import random

    import numpy as np

    rng = random.Random(seed)
    n = round(hours / dt_h)
    day = round(24 / dt_h)
    t = np.arange(n)
    price = 60 + 40 * np.sin(2 * np.pi * (t % day) / day) + np.array([rng.uniform(-5, 5) for _ in t])
    ev_list = []
    for _ in range(evs):
        conn = np.zeros(n, dtype=bool)
        need = np.zeros(n)
        for d0 in range(0, n, day):
            a = d0 + round((1 + rng.uniform(0, 2)) / dt_h)
            b = min(n, d0 + round((13 + rng.uniform(0, 1.5)) / dt_h))
            conn[a:b] = True
            need[b - 1] = 45.6
        ev_list.append((rng.uniform(12, 28), conn, need, 5.7, 57.0, 11.0, 11.0))
    return price, np.full(n, 30.0), 30.0 + 5.0 * evs, 3.0 * evs, tuple(ev_list), dt_h, 20.0


def fleet_module(commit: str | None) -> Any:
    """programs/planner/fleet.py as it is, or as it was at ``commit`` (the before of a before/after)."""
    import importlib
    import subprocess
    import sys
    import types

    if commit is None:
        return importlib.import_module("programs.planner.fleet")
    root = Path(__file__).resolve().parents[2]
    src = subprocess.run(
        ["git", "show", f"{commit}:programs/planner/fleet.py"], cwd=root, capture_output=True, text=True, check=True
    ).stdout
    mod = types.ModuleType(f"fleet_{commit}")
    sys.modules[mod.__name__] = mod  # dataclasses look their module up
    exec(compile(src, f"fleet.py@{commit}", "exec"), mod.__dict__)
    return mod


def fleet(evs: int, commit: str | None = None, repeat: int = 3) -> dict[str, Any]:
    """One joint solve of ``fleet_input(evs)``, best of ``repeat``: wall time and the process's CPU time
    (HiGHS runs on this thread; on a shared machine the wall time includes waiting for a core)."""
    mod = fleet_module(commit)
    price, building, imp, exp, evs_raw, dt_h, deg = fleet_input(evs)
    inp = mod.FleetInput(price, building, imp, exp, tuple(mod.FleetEv(*e) for e in evs_raw), dt_h, deg_per_mwh=deg)
    wall, cpu = [], []
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        plan = mod.solve_fleet(inp)
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return {
        "version": commit or "now",
        "evs": evs,
        "intervals": len(price),
        "ok": plan.ok,
        "cost": round(plan.cost, 4),
        "cpu_s": round(min(cpu), 4),
        "wall_s": round(min(wall), 4),
        "both": plan.both,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cycles", type=int, default=500)
    ap.add_argument("--live", type=float, default=0.0, metavar="SECONDS")
    ap.add_argument("--fleet", action="store_true", help="only the fleet LP's solve time against EV count")
    ap.add_argument("--before", metavar="COMMIT", help="with --fleet: also solve with fleet.py as of COMMIT")
    a = ap.parse_args()
    if a.fleet:
        for evs in FLEET_COUNTS:
            for commit in ([a.before] if a.before else []) + [None]:
                print(json.dumps(fleet(evs, commit)), flush=True)
        return
    for n in COUNTS:
        print(json.dumps(compute(n, a.cycles)), flush=True)
    if a.live:
        print(json.dumps(live(a.live)), flush=True)


if __name__ == "__main__":
    main()
