"""CPU per scan of a two-year backtest, by part: the engine's own phases, ``modes``, ``dispatch`` and
``v2g_safety``, for two trees in turn (issue 15, session 6); or, with ``--count``, the Python bytecode
instructions per scan (session 7).

    python -m tests.bench.scan_cost TREE_A TREE_B [--pairs N] [--prices F] [--count]

The scans are those of one planner backtest (``python -m backtest --prices F --scenario commuter.yaml``):
their inputs are recorded once, through this tree, then each tree replays exactly those steps on a
fresh backtest site (``backtest.site.Site``: the same programs, interlock and warm-up), in a process of
its own (two trees cannot share module names), the trees alternating pair by pair so both see the same
noise of a shared machine. Each part is timed with ``time.process_time_ns`` around its ``scan``, and the
step as a whole around ``Engine.step``; the engine's own phases are the step less the three scans and
less the timers' own cost outside the intervals they time (calibrated in the same process). Compare the
ratios, not the absolute numbers. The replays of both trees must agree on every committed output: the
script stops if they do not.

``--count`` replays each tree once and counts instead of timing: a trace function with
``f_trace_opcodes`` counts every instruction the interpreter executes, charged to the part whose ``scan``
is running, the rest to the engine. On a shared machine CPU time per scan varies by a tenth between runs;
the count does not vary at all, so a change of a few per cent is seen at once. It is a proxy, not a time:
an instruction that calls into C (a dict lookup, a tuple built) counts one, however long it takes.
"""

from __future__ import annotations

import argparse
import ast
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = "runtime/data/scenarios/commuter.yaml"
PARTS = ("engine", "modes", "dispatch", "safety")


def record(prices: str, out: Path) -> None:
    """The planner run's engine steps (time, updates, commands), warm-up included."""
    from backtest.rig import CycleRig
    from backtest.run import backtest

    steps: list[tuple[int, list[Any], tuple[Any, ...]]] = []
    step = CycleRig.step

    def recording(self: CycleRig, updates: Any = (), commands: Any = ()) -> Any:
        updates = list(updates)
        steps.append((self.now_us, updates, tuple(commands)))
        return step(self, updates, commands)

    CycleRig.step = recording  # type: ignore[method-assign]
    backtest(prices, SCENARIO, cache_dir=Path(tempfile.gettempdir()) / "scan_cost_cache")
    out.write_bytes(pickle.dumps(steps))


def replay(recorded: Path) -> dict[str, float]:
    """Microseconds of CPU per scan of each part (this process's tree), and a digest of the outputs."""
    from backtest.data import load_scenario
    from backtest.site import Site
    from programs.dispatch import Dispatch
    from programs.modes import Modes
    from runtime.engine import Engine
    from safety.supervisor import SafetySupervisor

    clock = time.process_time_ns
    spent: dict[str, int] = {}

    def timed(cls: type, name: str, key: str) -> None:
        f: Callable[..., Any] = getattr(cls, name)
        spent[key] = 0

        def w(self: Any, *a: Any) -> Any:
            t = clock()
            r = f(self, *a)
            spent[key] += clock() - t
            return r

        setattr(cls, name, w)

    for cls, key in ((Modes, "modes"), (Dispatch, "dispatch"), (SafetySupervisor, "safety"), (Engine, "step")):
        timed(cls, "step" if key == "step" else "scan", key)

    class Noop:
        def f(self) -> None:
            return None

    timed(Noop, "f", "noop")
    steps = pickle.loads(recorded.read_bytes())
    site = Site(load_scenario(SCENARIO))
    rig = site.rig
    todo = steps[rig.cycles :]  # the site's warm-up made the first steps already
    for k in spent:
        spent[k] = 0
    outputs = []
    for now, ups, cmds in todo:
        rig.now_us = now
        outputs.append(tuple(sorted(rig.step(ups, cmds).outputs.items())))
    noop, n = Noop(), 20_000
    t = clock()
    for _ in range(n):
        noop.f()
    outside = (clock() - t - spent["noop"]) / n  # a timer's cost outside the interval it times
    per = {k: v / len(todo) / 1000 for k, v in spent.items()}
    per["engine"] = per["step"] - per["modes"] - per["dispatch"] - per["safety"] - 3 * outside / 1000
    per["digest"] = hash(tuple(outputs))
    return per


def count(recorded: Path) -> dict[str, float]:
    """Bytecode instructions per scan of each part (this process's tree), and a digest of the outputs."""
    from backtest.data import load_scenario
    from backtest.site import Site
    from programs.dispatch import Dispatch
    from programs.modes import Modes
    from safety.supervisor import SafetySupervisor

    part = ["engine"]
    counts: Counter[str] = Counter()

    def charged(cls: type, key: str) -> None:
        scan = cls.scan  # type: ignore[attr-defined]

        def w(self: Any, cx: Any) -> None:
            outer, part[0] = part[0], key
            try:
                scan(self, cx)
            finally:
                part[0] = outer

        cls.scan = w  # type: ignore[attr-defined]

    for cls, key in ((Modes, "modes"), (Dispatch, "dispatch"), (SafetySupervisor, "safety")):
        charged(cls, key)

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        if event == "opcode":
            counts[part[0]] += 1
        return tracer

    steps = pickle.loads(recorded.read_bytes())
    site = Site(load_scenario(SCENARIO))
    rig = site.rig
    todo = steps[rig.cycles :]  # the site's warm-up made the first steps already
    outputs = []
    sys.settrace(tracer)
    try:
        for now, ups, cmds in todo:
            rig.now_us = now
            outputs.append(tuple(sorted(rig.step(ups, cmds).outputs.items())))
    finally:
        sys.settrace(None)
    # the wrappers' own instructions (the same in both trees) stay in: compare differences and ratios
    per: dict[str, float] = {k: counts[k] / len(todo) for k in PARTS}
    per["digest"] = hash(tuple(outputs))
    return per


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("trees", nargs="*", help="two trees to compare (their runtime/, programs/, safety/)")
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--prices", default="runtime/data/prices/PJM_2017-2018.csv")
    ap.add_argument("--count", action="store_true", help="bytecode instructions per scan, one replay per tree")
    ap.add_argument("--replay", help=argparse.SUPPRESS)
    ap.add_argument("--tree", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.replay:  # a child: the tree, first on sys.path, replays the recording
        sys.path.insert(0, a.tree)
        print(repr((count if a.count else replay)(Path(a.replay))))
        return 0
    if len(a.trees) != 2:
        ap.error("give two trees")
    recorded = Path(tempfile.mkdtemp()) / "steps.pickle"
    record(a.prices, recorded)
    seen: dict[str, list[dict[str, float]]] = {t: [] for t in a.trees}
    for i in range(1 if a.count else a.pairs):  # a count is the same every time
        for tree in a.trees if i % 2 == 0 else a.trees[::-1]:
            path = str(Path(tree).resolve())
            cmd = [
                sys.executable,
                __file__,
                "--replay",
                str(recorded),
                "--tree",
                path,
                *(["--count"] if a.count else []),
            ]
            env = {**os.environ, "PYTHONHASHSEED": "0"}  # the outputs' digest is a hash
            out = subprocess.run(cmd, cwd=path, env=env, check=True, capture_output=True)
            seen[tree].append(ast.literal_eval(out.stdout.decode()))
    digests = {r["digest"] for rows in seen.values() for r in rows}
    if len(digests) != 1:
        print("the trees' outputs differ: not the same behaviour, no comparison")
        return 1
    a_rows, b_rows = (seen[t] for t in a.trees)
    what, unit = ("bytecode instructions", "") if a.count else ("CPU", "us")
    print(f"{what} per scan, {len(a_rows)} replays each of {a.prices}; A = {a.trees[0]}, B = {a.trees[1]}")
    for part in (*PARTS, "own"):

        def value(r: dict[str, float], part: str = part) -> float:
            return r["engine"] + r["modes"] + r["dispatch"] if part == "own" else r[part]

        va, vb = [value(r) for r in a_rows], [value(r) for r in b_rows]
        ratio = statistics.median(x / y for x, y in zip(va, vb, strict=True))
        label = "engine + modes + dispatch" if part == "own" else part
        print(
            f"{label:26s} A {statistics.median(va):8.2f} {unit:2s} B {statistics.median(vb):8.2f} {unit:2s} A/B {ratio:.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
