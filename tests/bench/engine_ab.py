"""The engine's compute per cycle, an earlier commit against this tree, in one run (issue 12: splitting
``Engine.step`` into named phases must not make it cost more).

    python -m tests.bench.engine_ab [BASE_REF] [--rounds N]

The workload is the scan benchmark's (``tests.bench.bench_scan.Workload``: 2,006 tags, 10 programs,
10 interlocks). Both engines run in this process, alternating every 300 cycles, so both see the same
noise of a shared machine; compare the ratio, not the absolute numbers. The base engine is loaded from
``git show BASE_REF:runtime/engine.py`` against this tree's ``runtime.tags`` and ``runtime.api``, except
``Outputs``, which is BASE_REF's too: the engine builds its output image, and since issue 15 (session 6)
one image serves every cycle and builds its coercer map once, which an engine that builds an image per
cycle must not be charged for. ``runtime.tags`` is shared, so its gains count for both sides.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import runtime.engine as current
from tests.bench.bench_scan import Workload, pct

ROOT = Path(__file__).resolve().parents[2]


def load_at(ref: str, file: str, name: str) -> ModuleType:
    """``file`` as it is at ``ref``, imported as module ``name`` beside this tree's modules."""
    src = subprocess.run(["git", "show", f"{ref}:{file}"], cwd=ROOT, check=True, capture_output=True).stdout
    path = Path(tempfile.mkdtemp()) / f"{name}.py"
    path.write_bytes(src)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def base_engine(ref: str) -> ModuleType:
    mod = load_at(ref, "runtime/engine.py", "engine_base")
    mod.Outputs = load_at(ref, "runtime/api.py", "api_base").Outputs  # type: ignore[attr-defined]
    return mod


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("base", nargs="?", default="235d1f1")
    ap.add_argument("--rounds", type=int, default=20)
    a = ap.parse_args(argv)
    mods = {"base": base_engine(a.base), "this": current}
    for updated, used in ((100, 20), (100, 100), (1000, 100)):
        engines = {n: Workload(used, m) for n, m in mods.items()}
        times: dict[str, list[float]] = {n: [] for n in mods}
        for r in range(a.rounds):
            for n in ("base", "this") if r % 2 == 0 else ("this", "base"):
                times[n] += engines[n].run(r * 300, 300, updated)
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
