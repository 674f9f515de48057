"""The engine's compute per cycle, an earlier commit against this tree, in one run (issue 12: splitting
``Engine.step`` into named phases must not make it cost more).

    python -m tests.runtime.engine_ab [BASE_REF] [--rounds N]

The workload is the scan benchmark's (``tests.bench.bench_scan.compute_2000``: 2,006 tags, 10 programs,
10 interlocks). Both engines run in this process, alternating every 300 cycles, so both see the same
noise of a shared machine; compare the ratio, not the absolute numbers. The base engine is loaded from
``git show BASE_REF:runtime/engine.py`` against this tree's ``runtime.api`` and ``runtime.tags``.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import runtime.engine as current
from runtime.api import Cycle, Program, SiteInfo
from runtime.tags import Direction, TagSpec, TagUpdate
from tests.bench.bench_scan import pct

ROOT = Path(__file__).resolve().parents[2]
SITE = SiteInfo("b", 240, 60, 20_000)
INPUTS = [TagSpec(f"dev{i // 100}.in{i % 100}", stale_after_s=1.0) for i in range(1000)]
OUTPUTS = [TagSpec(f"out{i // 100}.v{i % 100}", direction=Direction.OUTPUT, default=0.0) for i in range(1000)]


class Scale(Program):
    def __init__(self, g: int, used: int):
        super().__init__(f"scale{g}", Program.Params(), SITE)
        self.pairs = [(INPUTS[i].name, OUTPUTS[i].name) for i in range(g * 100, g * 100 + used)]

    def scan(self, cx: Cycle) -> None:
        value, out = cx.inputs.value, cx.out
        for src, dst in self.pairs:
            v = value(src)
            out[dst] = 0.0 if v is None else 2.0 * v


class Limit(Program):
    def __init__(self, g: int, used: int):
        super().__init__(f"limit{g}", Program.Params(), SITE)
        self.names = [OUTPUTS[i].name for i in range(g * 100, g * 100 + used)]

    def scan(self, cx: Cycle) -> None:
        out = cx.out
        for n in self.names:
            v = out[n]
            if v > 1e6 or v < -1e6:
                out[n] = max(-1e6, min(1e6, v))


def base_engine(ref: str) -> ModuleType:
    src = subprocess.run(["git", "show", f"{ref}:runtime/engine.py"], cwd=ROOT, check=True, capture_output=True).stdout
    path = Path(tempfile.mkdtemp()) / "engine_base.py"
    path.write_bytes(src)
    spec = importlib.util.spec_from_file_location("engine_base", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["engine_base"] = mod
    spec.loader.exec_module(mod)
    return mod


def make(mod: ModuleType, used: int) -> Any:
    table = mod.tag_table(("rt", mod.RUNTIME_TAGS), ("in", INPUTS), ("out", OUTPUTS))
    return mod.Engine(SITE, table, [Scale(g, used) for g in range(10)], [Limit(g, used) for g in range(10)])


def run(engine: Any, k0: int, cycles: int, updated: int) -> list[float]:
    times = []
    every = 1000 // updated
    for k in range(k0, k0 + cycles):
        ups = [
            TagUpdate(s.name, float(k % 7 + j), t_us=k * 20_000) for j, s in enumerate(INPUTS) if j % every == k % every
        ]
        t = time.perf_counter_ns()
        engine.step(k * 20_000, ups)
        times.append((time.perf_counter_ns() - t) / 1e6)
    return times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("base", nargs="?", default="235d1f1")
    ap.add_argument("--rounds", type=int, default=20)
    a = ap.parse_args(argv)
    mods = {"base": base_engine(a.base), "this": current}
    for updated, used in ((100, 20), (100, 100), (1000, 100)):
        engines = {n: make(m, used) for n, m in mods.items()}
        times: dict[str, list[float]] = {n: [] for n in mods}
        for r in range(a.rounds):
            for n in ("base", "this") if r % 2 == 0 else ("this", "base"):
                times[n] += run(engines[n], r * 300, 300, updated)
        med = {n: statistics.median(v) for n, v in times.items()}
        p99 = {n: pct(v, 0.99) for n, v in times.items()}
        print(
            f"{updated} inputs updated per cycle, programs touching {used * 10}: median {a.base} {med['base']:.3f} ms,"
            f" this {med['this']:.3f} ms ({100 * (med['this'] / med['base'] - 1):+.1f} %); p99 {p99['base']:.3f} /"
            f" {p99['this']:.3f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
