"""Safety layer benchmarks (issue 4).

    python -m tests.bench.bench_safety [--excursions 1000] [--cycles 20000] [--seed 1] [--json FILE]

1. Safety evaluation time per cycle: Engine.step with the safety supervisor beside the same engine
   without it (baseline, same run); the difference is what the safety layer costs each cycle.
2. Trip-time error over random excursions: a random category, trip, depth and start time (in
   microseconds, not aligned to the cycle); the error is the trip time read from the outputs minus the
   commanded time (clearing time minus the response allowance), counted from the true start, in cycles.
   Also the margins: output at zero before the clearing time, trip latched after the ride-through owed.
3. End to end on the virtual plant over Modbus: a 1.25 pu step to the inverter's setpoint read-back at 0,
   with the shipped inverter map and with a copy that polls the WSet read-back every cycle.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from typing import Any

from runtime.api import SiteInfo
from runtime.engine import RUNTIME_TAGS, Engine
from runtime.tags import US, TagUpdate
from tests.safety.rig import INPUTS, MODBUS_DEVICES, PLANT_DEVICES, Requester, Rig


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def bench_cycle(cycles: int) -> dict[str, Any]:
    rig = Rig()
    rig.req.setpoint = -7000.0
    rig.settle()
    # baseline: the same engine and inputs, without the interlock
    site = SiteInfo("rig", 240.0, 60, 20_000)
    base_req = Requester(site)
    base = Engine(site, rig.tags, [base_req], [])
    ups = [TagUpdate(n, v) for n, v in rig.values.items()]
    out: dict[str, list[float]] = {"with_safety": [], "baseline": []}
    now = rig.now_us
    for i in range(cycles):
        for name, eng in (("baseline", base), ("with_safety", rig.engine)):
            t0 = time.perf_counter_ns()
            eng.step(now, ups)
            out[name].append((time.perf_counter_ns() - t0) / 1000)
        now += 20_000
        ups = [TagUpdate("grid.voltage", 240.0 + (i % 7) * 0.1)]
    med_s, med_b = statistics.median(out["with_safety"]), statistics.median(out["baseline"])
    return {
        "cycles": cycles,
        "step_us_with_safety": {"p50": round(med_s, 1), "p99": round(_pct(out["with_safety"], 0.99), 1)},
        "step_us_baseline": {"p50": round(med_b, 1), "p99": round(_pct(out["baseline"], 0.99), 1)},
        "safety_us_per_cycle_p50": round(med_s - med_b, 1),
        "ratio_p50": round(med_s / med_b, 2),
    }


def one_excursion(rng: random.Random) -> dict[str, Any]:
    cat = rng.choice(["I", "II", "III"])
    code = rng.choice(["ov2", "ov1", "uv1", "uv2", "of2", "of1", "uf1", "uf2"])
    # ROCOF is not under test here: the largest allowed threshold keeps the step changes from tripping it.
    rig = Rig(category=cat, islanding={"rocof_hz_per_s": 10.0}, enter_service={"delay_s": 0.0, "ramp_s": 1.0})
    rig.req.setpoint = -7000.0  # exporting, so the instant the output reaches zero is visible
    t = rig.safety.r.trips[code]
    trips = rig.safety.r.trips
    # depth: beyond this trip's threshold, short of the next faster trip on the same side
    if t.quantity == "v":
        nxt = {"ov1": trips["ov2"].threshold, "uv1": trips["uv2"].threshold}.get(code)
        lo, hi = (t.threshold, nxt or 1.35) if t.over else (nxt or 0.05, t.threshold)
        x = rng.uniform(lo + 1e-4, hi - 1e-4)
        before, after = {"grid.voltage": 240.0}, {"grid.voltage": x * 240.0}
    else:
        span = 0.5
        x = t.threshold + (rng.uniform(1e-3, span) if t.over else -rng.uniform(1e-3, span))
        if code == "of1":
            x = min(x, trips["of2"].threshold - 1e-3)
        if code == "uf1":
            x = max(x, trips["uf2"].threshold + 1e-3)
        pre = t.threshold - 0.01 if t.over else t.threshold + 0.01
        before, after = {"grid.frequency": pre}, {"grid.frequency": x}
    rig.run(1.5, step_s=0.5)  # through the (shortened) enter service: exporting when the excursion comes
    assert rig.out["inverter.setpoint"] == -7000.0, rig.out["safety.reason"]
    if "grid.frequency" in before:  # approach at 1 Hz/s, inside every category's trip-free ROCOF here
        f, target = 60.0, before["grid.frequency"]
        while f != target:
            f = f + max(-0.5, min(0.5, target - f))
            rig.set(grid__frequency=f)
            rig.run(0.5, step_s=0.5)
    else:
        rig.set(**{k.replace(".", "__"): v for k, v in before.items()})
    t_true = rig.now_us + rng.randrange(0, 2 * rig.period_us)  # true start, microseconds
    # first cycle at or after the true start sees it
    while rig.now_us < t_true:
        rig.step()
    rig.set(**{k.replace(".", "__"): v for k, v in after.items()})
    fired, zero_us = None, None
    near = ((t_true + t.trip_after_us) // rig.period_us - 2) * rig.period_us  # stay on the cycle grid
    while rig.now_us <= t_true + round(t.clearing_s * US) + rig.period_us:
        res = rig.step(
            advance_us=rig.period_us if rig.now_us >= near else min(500_000, max(rig.period_us, near - rig.now_us))
        )
        if res.outputs["inverter.setpoint"] == 0.0 and zero_us is None:
            zero_us = res.now_us
        if res.outputs["safety.trip"]:
            fired = (res.outputs["safety.trip"], res.now_us)
            break
    assert fired is not None, (cat, code, x)
    got = fired[1] - t_true
    owed = t.ride_through_s if t.ride_through_s <= t.clearing_s else 0.0
    zero = (zero_us if zero_us is not None else fired[1]) - t_true
    return {
        "cat": cat,
        "code": code,
        "trip": fired[0],
        "error_cycles": (got - t.trip_after_us) / rig.period_us,
        "margin_to_clearing_s": t.clearing_s - zero / US,
        "margin_after_ride_through_s": got / US - owed,
    }


def bench_trip_time(n: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    rows = [one_excursion(rng) for _ in range(n)]
    err = [r["error_cycles"] for r in rows]
    wrong = [r for r in rows if r["trip"] != r["code"]]
    return {
        "excursions": n,
        "error_cycles": {
            "median": round(statistics.median(err), 4),
            "max": round(max(err), 4),
            "min": round(min(err), 4),
        },
        "min_margin_to_clearing_s": round(min(r["margin_to_clearing_s"] for r in rows), 4),
        "min_margin_after_ride_through_s": round(min(r["margin_after_ride_through_s"] for r in rows), 4),
        "wrong_trip_code": len(wrong),
    }


PLANT_SITE = (
    """\
site: {{name: bench-plant, nominal_voltage: 240.0, nominal_frequency: 60}}
scan: {{period_ms: 20, overrun_fault_after: 50}}
"""
    + MODBUS_DEVICES
    + """programs:
  - {{type: example_copy, name: ask, params: {{source: ev.soc, target: inverter.setpoint, gain: -10000, declare_target: false}}}}
  - {{type: example_copy, name: permit, params: {{source: inverter.connected, target: inverter.enable, gain: 1.0, declare_target: false}}}}
safety:
  - type: v2g_safety
    name: safety
    params: {{category: III, rated_charge_w: 11000, rated_discharge_w: 11000, enter_service: {{delay_s: 1.0, ramp_s: 1.0}}}}
plant:
  type: virtual
  params:
    host: 127.0.0.1
"""
    + PLANT_DEVICES
    + """    ev: {{soc: 0.6}}
    events:
{events}
"""
)


def bench_plant(steps: int, fast_readback: bool = False) -> dict[str, Any]:
    """End to end on the virtual plant over Modbus: from the cycle that reads a 1.25 pu step to the cycle
    that reads the inverter's setpoint read-back at 0 W (written, applied, read back). The step itself
    is read on the next fast poll (every cycle), so the true reaction is at most one cycle more."""
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    from tests.io.helpers import ROOT, free_port

    events = []
    for i in range(steps):
        t = 6.0 + 4.0 * i
        events.append(f"      - {{t: {t}, set: grid.voltage, to: 300.0}}")
        events.append(f"      - {{t: {t + 0.5}, set: grid.voltage, to: 240.0}}")
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp) / "site.yaml"
        text = PLANT_SITE.format(p1=free_port(), p2=free_port(), p3=free_port(), events="\n".join(events))
        if fast_readback:  # the shipped map, with the WSet read-back polled every cycle instead of every 1 s
            shipped = (ROOT / "io_maps" / "sunspec_der_inverter.yaml").read_text()
            fast = shipped.replace("readback: true, poll: normal", "readback: true, poll: fast")
            assert fast != shipped, "the WSet read-back point changed shape in the shipped map"
            (Path(tmp) / "inverter_fast_readback.yaml").write_text(fast)
            text = text.replace(
                "units: [{{unit: 1, map: sunspec_der_inverter}}], timeout_s",
                "unit: 1, map: inverter_fast_readback.yaml, timeout_s",
            )
        site.write_text(text)
        rec, rec_out = Path(tmp) / "in.jsonl", Path(tmp) / "out.jsonl"
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "runtime.cli",
                "run",
                str(site),
                "--for",
                str(8.0 + 4.0 * steps),
                "--record",
                str(rec),
                "--record-outputs",
                str(rec_out),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if run.returncode != 0:
            raise RuntimeError(run.stderr[-2000:])
        frames = [json.loads(line) for line in rec.read_text().splitlines() if line.strip()]
        outs = {
            o["k"]: o["tags"] for o in (json.loads(line) for line in rec_out.read_text().splitlines() if line.strip())
        }
    reactions, seen_at, last_rb, skipped = [], None, 0.0, 0
    safety_cycles: list[int] = []
    period = 0.02
    for fr in frames:
        tags = fr["tags"]
        v = tags.get("grid.voltage")
        if isinstance(v, (int, float)) and v >= 288.0 and seen_at is None:
            if last_rb < -1000.0:  # exporting when the step came: the case that matters
                seen_at = fr["t"]
                k = fr["k"]
                while outs.get(k, {}).get("inverter.setpoint", 0.0) != 0.0:
                    k += 1
                safety_cycles.append(k - fr["k"])
            else:
                skipped += 1
        rb = tags.get("inverter.setpoint_readback")
        if isinstance(rb, (int, float)):
            last_rb = rb
            if seen_at is not None and rb == 0.0:
                reactions.append(fr["t"] - seen_at)
                seen_at = None
    if not reactions:
        return {"steps": steps, "reactions": 0}
    return {
        "steps": steps,
        "reactions": len(reactions),
        "skipped_not_exporting": skipped,
        "seen_to_readback_zero_s": {"median": round(statistics.median(reactions), 3), "max": round(max(reactions), 3)},
        "upper_bound_step_to_readback_zero_s": round(max(reactions) + period, 3),
        "safety_cycles_seen_to_zero_output": {"median": statistics.median(safety_cycles), "max": max(safety_cycles)},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--excursions", type=int, default=1000)
    ap.add_argument("--cycles", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--plant-steps", type=int, default=5, help="over-voltage steps on the virtual plant (0: skip)")
    ap.add_argument("--json", type=str)
    a = ap.parse_args(argv)
    res = {
        "cycle": bench_cycle(a.cycles),
        "trip_time": bench_trip_time(a.excursions, a.seed),
        "inputs": len(INPUTS) + len(RUNTIME_TAGS),
    }
    if a.plant_steps:
        res["plant"] = bench_plant(a.plant_steps)
        res["plant_fast_readback"] = bench_plant(a.plant_steps, fast_readback=True)
    text = json.dumps(res, indent=1)
    print(text)
    if a.json:
        with open(a.json, "w") as fh:
            fh.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
