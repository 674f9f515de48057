"""Arbitrage benchmark: the 2-year backtests of BENCHMARKS.md "Arbitrage planner and backtest".

``python -m tests.bench.bench_planner`` runs ``v2g-plc backtest`` (as ``python -m backtest``,
one fresh process per run so its peak RSS is its own) for every strategy on both bundled series, and
prints one Markdown table row per run plus the targets: share of perfect foresight >= 0.97 with zero
violations, <= 60 s and <= 300 MB per 2-year backtest. The baseline and the perfect-foresight bound are
computed inside every run (each a run of the site's programs and safety on the engine, as the strategy
is), so each share is against figures from the same process. The scans, mode transitions and safety
trips are those of the strategy's run (backtest/site.py: when the engine scans).
``--variants`` instead measures the planner variants of docs/planner.md (share on both series).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from backtest.strategies import STRATEGIES

ROOT = Path(__file__).resolve().parents[2]
SERIES = ("PJM_2017-2018.csv", "DE_2016-2017.csv")


def run(series: str, strategy: str) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "backtest",
        "--prices",
        str(ROOT / "runtime/data/prices" / series),
        "--scenario",
        str(ROOT / "runtime/data/scenarios/commuter.yaml"),
        "--strategy",
        strategy,
    ]
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
    out = json.loads(proc.stdout)
    out["wall_s"] = time.perf_counter() - t
    return out


# What closes the gap between a plain re-planning LP and perfect foresight (docs/planner.md).
VARIANTS = (
    ("published prices only", {"forecast": None}),
    ("+ forecast (mean of both columns)", {"forecast": "mean"}),
    ("+ forecast_dnn only", {"forecast": "forecast_dnn"}),
    ("+ forecast_lear only", {"forecast": "forecast_lear"}),
    ("published only + terminal value q0.3", {"forecast": None, "terminal_value": "quantile:0.3"}),
    ("forecast + 1 day seasonal-naive extension", {"forecast": "mean", "extend_days": 1}),
    ("forecast + 2 days seasonal-naive extension", {"forecast": "mean", "extend_days": 2}),
    ("forecast + terminal value q0.2", {"forecast": "mean", "terminal_value": "quantile:0.2"}),
    ("forecast + terminal value q0.3", {"forecast": "mean", "terminal_value": "quantile:0.3"}),
    ("forecast + terminal value q0.5", {"forecast": "mean", "terminal_value": "quantile:0.5"}),
    ("forecast + refill value, 3 days", {"forecast": "mean", "terminal_value": "refill:3"}),
    ("forecast + refill value, 7 days (default)", {"forecast": "mean", "terminal_value": "refill"}),
)


def variants() -> int:
    from backtest.run import backtest

    print("| planner variant | " + " | ".join(SERIES) + " |")
    print("| --- | " + " | ".join("---" for _ in SERIES) + " |")
    for label, settings in VARIANTS:
        cells = []
        for series in SERIES:
            o = backtest(
                ROOT / "runtime/data/prices" / series,
                ROOT / "runtime/data/scenarios/commuter.yaml",
                "planner",
                settings,
            )[0]
            cells.append(f"{o['share_of_perfect_foresight']:.4f} ({o['violations']} violations)")
        print(f"| {label} | " + " | ".join(cells) + " |", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--variants"]:
        return variants()
    strategies = argv or list(STRATEGIES)
    print(
        "| series | strategy | cost | share of perfect foresight | departures met | violations | "
        "re-plans | solve s median / max | scans / mode transitions / trips | wall s | peak RSS MB |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    ok = True
    for series in SERIES:
        for strategy in strategies:
            o = run(series, strategy)
            st = o.get("solve_time_s")
            solve = f"{st['median'] * 1000:.2f} ms / {st['max'] * 1000:.2f} ms" if st else "-"
            print(
                f"| {series} | {strategy} | {o['strategy_cost']:.2f} | {o['share_of_perfect_foresight']:.4f} | "
                f"{o['departures_met']}/{o['departures']} | {o['violations']} | {o['replans']} | {solve} | "
                f"{o['scan_cycles']} / {o['mode_transitions']} / {o['safety_trips']} | "
                f"{o['wall_s']:.1f} | {o['peak_rss_mb']:.0f} |",
                flush=True,
            )
            if strategy == "planner":
                ok &= o["share_of_perfect_foresight"] >= 0.97 and o["violations"] == 0
            ok &= o["wall_s"] <= 60 and o["peak_rss_mb"] <= 300
        print(
            f"(baseline {o['baseline_cost']:.2f}, perfect foresight {o['perfect_foresight_cost']:.2f}, "
            f"{o['rows']} rows, {o['price_unit']})",
            flush=True,
        )
    print("targets met" if ok else "TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
