"""Scan runtime benchmarks (issue 2): lateness under task-process load beside a bare loop, compute time of
one cycle with 2,000 tags, resident memory and time to the first cycle.

    python -m tests.bench.bench_scan [--seconds 60] [--json FILE]

Each lateness figure is measured beside a bare sleep-then-wait absolute-deadline loop running at the
same time in its own process, under the same load: the runtime's task process doing JSON work and sending
shared-tag writes every cycle (these machines are shared and noisy: compare ratios, not absolute numbers).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runtime.clock import MonotonicClock

ROOT = Path(__file__).resolve().parents[2]

SITE = """\
site: {{name: bench, nominal_voltage: 240.0, nominal_frequency: 60}}
scan: {{period_ms: {period}, overrun_fault_after: 5{rt}}}
devices:
  - name: dev
    type: memory
    params:
      poll_s: 0.02
      tags:
        - {{name: grid.voltage, unit: V, value: 240.0, stale_after_s: 1.0}}
        - {{name: ev.soc, value: 0.5, stale_after_s: 1.0}}
        - {{name: inverter.setpoint, unit: W, direction: output, value: 0.0}}
programs:
  - {{type: example_copy, name: follow, params: {{source: ev.soc, target: inverter.setpoint, gain: 10000, declare_target: false}}}}
safety:
  - {{type: example_clamp, name: clamp, params: {{tag: inverter.setpoint, limit: 11000}}}}
tasks:
  - {{type: example_busy, name: busy, params: {{tags: 20, interval_s: {interval}, work_ms: 4.0}}}}
"""


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))]


def bare_loop(period_ms: float, seconds: float, rt: int | None = None) -> dict[str, float]:
    """The baseline: the same sleep-then-spin absolute-deadline loop as the runtime's, and nothing else.
    Run in a process of its own *at the same time* as the runtime, so both see the same load (the
    runtime's busy task process) and the same noise of this shared virtual machine, minute by minute."""
    if rt is not None:
        os.sched_setscheduler(0, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, os.sched_param(rt))
    clock = MonotonicClock(500_000)
    p = int(period_ms * 1e6)
    t0 = clock.now_ns() + p
    late = []
    for k in range(int(seconds * 1000 / period_ms)):
        d = t0 + k * p
        clock.sleep_until(d)
        late.append((clock.now_ns() - d) / 1e6)
    return {"p50": pct(late, 0.5), "p99": pct(late, 0.99), "max": max(late), "cycles": len(late)}


def beside_bare(period_ms: float, seconds: float, run: Callable[[], dict], rt: int | None = None) -> tuple[dict, dict]:
    """Run ``run()`` (a runtime process for ``seconds``) and, started together, the bare loop in a process
    of its own: both measured in the same minute, under the same load and noise."""
    cmd = [sys.executable, "-m", "tests.bench.bench_scan", "--bare", str(period_ms), "--seconds", str(seconds)]
    bare = subprocess.Popen(cmd + (["--rt", str(rt)] if rt else []), cwd=ROOT, stdout=subprocess.PIPE, text=True)
    result = run()
    out, _ = bare.communicate(timeout=seconds + 60)
    return json.loads(out), result


def side_by_side(period_ms: float, seconds: float, tmp: Path, rt: int | None) -> tuple[dict, dict]:
    """The runtime (with its busy task process) and the bare loop, started together, measured together."""
    return beside_bare(period_ms, seconds, lambda: runtime_loop(period_ms, seconds, tmp, rt), rt)


def runtime_loop(period_ms: float, seconds: float, tmp: Path, rt: int | None = None) -> dict:
    site = tmp / f"bench{period_ms}.yaml"
    site.write_text(
        SITE.format(period=period_ms, interval=period_ms / 1000, rt="" if rt is None else f", realtime_priority: {rt}")
    )
    stats = tmp / f"stats{period_ms}.json"
    subprocess.run(
        [sys.executable, "-m", "runtime.cli", "run", str(site), "--for", str(seconds), "--stats-json", str(stats)],
        cwd=ROOT,
        check=True,
        stderr=subprocess.DEVNULL,
    )
    return json.loads(stats.read_text())


class Workload:
    """The compute benchmark's site: 2,000 tags (1,000 inputs, 1,000 outputs); 10 programs each map ``used``
    inputs to outputs and 10 interlocks each check ``used`` outputs. ``engine_module`` builds it: this tree's
    ``runtime.engine`` or an older one loaded beside it (tests/bench/engine_ab.py)."""

    def __init__(self, used: int, engine_module: Any = None) -> None:
        from runtime import engine as this_engine
        from runtime.api import Cycle, Program, SiteInfo
        from runtime.tags import Direction, TagSpec

        mod = engine_module or this_engine
        site = SiteInfo("b", 240, 60, 20_000)
        inputs = [TagSpec(f"dev{i // 100}.in{i % 100}", stale_after_s=1.0) for i in range(1000)]
        outputs = [TagSpec(f"out{i // 100}.v{i % 100}", direction=Direction.OUTPUT, default=0.0) for i in range(1000)]

        class Scale(Program):
            def __init__(self, g: int):
                super().__init__(f"scale{g}", Program.Params(), site)
                self.pairs = [(inputs[i].name, outputs[i].name) for i in range(g * 100, g * 100 + used)]

            def scan(self, cx: Cycle) -> None:
                value, out = cx.inputs.value, cx.out
                for src, dst in self.pairs:
                    v = value(src)
                    out[dst] = 0.0 if v is None else 2.0 * v

        class Limit(Program):
            def __init__(self, g: int):
                super().__init__(f"limit{g}", Program.Params(), site)
                self.names = [outputs[i].name for i in range(g * 100, g * 100 + used)]

            def scan(self, cx: Cycle) -> None:
                out = cx.out
                for n in self.names:
                    v = out[n]
                    if v > 1e6 or v < -1e6:
                        out[n] = max(-1e6, min(1e6, v))

        self.inputs = inputs
        self.engine = mod.Engine(
            site,
            mod.tag_table(("rt", mod.RUNTIME_TAGS), ("in", inputs), ("out", outputs)),
            [Scale(g) for g in range(10)],
            [Limit(g) for g in range(10)],
        )

    def run(self, k0: int, cycles: int, updated: int) -> list[float]:
        """``cycles`` steps from cycle ``k0``; ``updated`` inputs arrive per cycle (fast poll class), the rest
        were read within their limit. The compute time of each step, ms."""
        from runtime.tags import TagUpdate

        times = []
        every = 1000 // updated
        for k in range(k0, k0 + cycles):
            ups = [
                TagUpdate(s.name, float(k % 7 + j), t_us=k * 20_000)
                for j, s in enumerate(self.inputs)
                if j % every == k % every
            ]
            t = time.perf_counter_ns()
            self.engine.step(k * 20_000, ups)
            times.append((time.perf_counter_ns() - t) / 1e6)
        return times


def compute_2000(cycles: int = 3000, updated: int = 100, used: int = 100) -> dict[str, float]:
    """One cycle's compute (image switch + programs + interlocks) of the Workload."""
    w = Workload(used)
    e = w.engine
    assert len(e.tags.specs) >= 2000
    times = w.run(0, cycles, updated)
    return {
        "tags": len(e.tags.specs),
        "updated_per_cycle": updated,
        "used_by_programs": 10 * used,
        "median_ms": statistics.median(times),
        "p99_ms": pct(times, 0.99),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--json", type=Path)
    ap.add_argument(
        "--rt",
        type=int,
        default=None,
        metavar="PRIO",
        help="also measure both loops with SCHED_FIFO at this priority (needs the privilege)",
    )
    ap.add_argument("--bare", type=float, metavar="PERIOD_MS", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.bare:  # the baseline's own process (see side_by_side)
        print(json.dumps(bare_loop(a.bare, a.seconds, a.rt)))
        return 0
    out: dict = {"seconds": a.seconds}
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        variants = [(p, None) for p in (10, 20)] + ([(p, a.rt) for p in (10, 20)] if a.rt else [])
        for period, prio in variants:
            bare, rt = side_by_side(period, a.seconds, tmp, prio)
            lat = rt["lateness_ms"]
            target = min(0.5, max(1.5 * bare["p99"], bare["p99"] + 0.1))
            label = f"{period}ms" + ("" if prio is None else f"_fifo{prio}")
            out[label] = {
                "bare": bare,
                "runtime": rt,
                "p99_target_ms": target,
                "p99_ok": lat["p99"] <= target,
                "overruns": rt["overruns"],
            }
            print(
                f"{label}: runtime p99 {lat['p99']:.3f} ms max {lat['max']:.3f} ms overruns {rt['overruns']} | "
                f"bare p99 {bare['p99']:.3f} ms max {bare['max']:.3f} ms | target p99 <= {target:.3f} ms",
                flush=True,
            )
        for updated, used in ((100, 20), (100, 100), (1000, 100)):
            out[f"compute_2000_tags_{updated}_updated_{used * 10}_used"] = c = compute_2000(updated=updated, used=used)
            print(
                f"compute with {c['tags']} tags, {updated} inputs updated per cycle, programs using {used * 10}: "
                f"median {c['median_ms']:.3f} ms, p99 {c['p99_ms']:.3f} ms"
            )
        rt20 = out["20ms"]["runtime"]
        print(
            f"scan process RSS {rt20.get('rss_mb')} MB (peak {rt20.get('peak_rss_mb')} MB), "
            f"first cycle {rt20.get('first_cycle_after_start_s')} s after start"
        )
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
