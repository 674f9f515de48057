"""Python bytecode instructions per scan of a two-year backtest, by part, for two trees (issue 15, session 7).

    python -m tests.bench.scan_ops TREE_A TREE_B [--prices F]

The same scans as ``tests.bench.scan_cost`` (one planner backtest's engine steps, recorded once through
this tree, replayed by each tree on a fresh backtest site in a process of its own), counted instead of
timed: a trace function with ``f_trace_opcodes`` counts every instruction the interpreter executes,
charged to the part whose ``scan`` is running (``modes``, ``dispatch``, ``safety``), the rest to the
engine. Why: on a shared machine CPU time per scan varies by a tenth between runs; the count does not vary
at all, so a change of a few per cent is seen at once. It is a proxy, not a time: an instruction that calls
into C (a dict lookup, a tuple built) counts one, however long it takes; confirm with ``scan_cost``.
"""

from __future__ import annotations

import argparse
import ast
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from types import FrameType
from typing import Any

PARTS = ("engine", "modes", "dispatch", "safety")


def replay(recorded: Path) -> dict[str, float]:
    """Instructions per scan of each part (this process's tree)."""
    import pickle

    from backtest.data import load_scenario
    from backtest.site import Site
    from programs.dispatch import Dispatch
    from programs.modes import Modes
    from safety.supervisor import SafetySupervisor
    from tests.bench.scan_cost import SCENARIO

    part = ["engine"]
    counts: Counter[str] = Counter()

    def charged(cls: type, key: str) -> None:
        scan = cls.scan

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
    sys.settrace(tracer)
    try:
        for now, ups, cmds in todo:
            rig.now_us = now
            rig.step(ups, cmds)
    finally:
        sys.settrace(None)
    per = {k: counts[k] / len(todo) for k in PARTS}
    # the wrappers' own instructions (the same in both trees) stay in: compare differences and ratios
    return per


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("trees", nargs="*", help="two trees to compare (their runtime/, programs/, safety/)")
    ap.add_argument("--prices", default="runtime/data/prices/PJM_2017-2018.csv")
    ap.add_argument("--replay", help=argparse.SUPPRESS)
    ap.add_argument("--tree", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.replay:  # a child: the tree, first on sys.path, replays the recording
        sys.path.insert(0, a.tree)
        print(repr(replay(Path(a.replay))))
        return 0
    if len(a.trees) != 2:
        ap.error("give two trees")
    from tests.bench.scan_cost import record

    recorded = Path(tempfile.mkdtemp()) / "steps.pickle"
    record(a.prices, recorded)
    seen: dict[str, dict[str, float]] = {}
    for tree in a.trees:
        path = str(Path(tree).resolve())
        cmd = [sys.executable, __file__, "--replay", str(recorded), "--tree", path]
        out = subprocess.run(cmd, cwd=path, env=dict(os.environ), check=True, capture_output=True)
        seen[tree] = ast.literal_eval(out.stdout.decode())
    ra, rb = (seen[t] for t in a.trees)
    print(f"bytecode instructions per scan, {a.prices}; A = {a.trees[0]}, B = {a.trees[1]}")
    for part in (*PARTS, "own"):
        own = ("engine", "modes", "dispatch")
        va = sum(ra[p] for p in own) if part == "own" else ra[part]
        vb = sum(rb[p] for p in own) if part == "own" else rb[part]
        label = "engine + modes + dispatch" if part == "own" else part
        print(f"{label:26s} A {va:8.1f}  B {vb:8.1f}  A/B {va / vb:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
