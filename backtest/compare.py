"""``v2g-plc backtest --compare``: every strategy on several price files, in one table.

So that a user can judge a market before deploying: how much of the perfect-foresight savings each
strategy reaches there, the savings against the baseline, violations, and the time each run took. The
baseline and perfect-foresight runs are made once per file (and cached, backtest/cache.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from backtest.accounting import check, cost
from backtest.data import load_prices, load_scenario
from backtest.market import VisibleMarket
from backtest.run import reference_runs, simulate
from backtest.strategies import STRATEGIES, make_strategy


def compare(
    prices: Iterable[Path],
    scenario: Path,
    strategies: Iterable[str] = tuple(STRATEGIES),
    safety: Mapping[str, Any] | None = None,
    cache_dir: Path | None = None,
) -> list[dict[str, Any]]:
    """One row per (price file, strategy)."""
    rows = []
    sc = load_scenario(scenario)
    for path in prices:
        series = load_prices(path)
        market = VisibleMarket(series, sc)
        cal = market.calendar
        t = time.perf_counter()
        base, pf, _ = reference_runs(Path(path), Path(scenario), series, sc, market, safety, cache_dir)
        t_ref = time.perf_counter() - t
        c_base, c_pf = cost(series, sc, base.grid_kw), cost(series, sc, pf.grid_kw)
        for name in strategies:
            t = time.perf_counter()
            if name in ("baseline", "perfect"):
                run = base if name == "baseline" else pf
            else:
                run = simulate(series, sc, make_strategy(name, series, sc, cal), market, safety)
            secs = time.perf_counter() - t + (t_ref / 2 if name in ("baseline", "perfect") else 0.0)
            bad, met, deps = check(series, sc, cal, run)
            c = cost(series, sc, run.grid_kw)
            rows.append(
                {
                    "prices": Path(path).name,
                    "rows": len(series),
                    "step_s": series.step_s,
                    "strategy": name,
                    "share_of_perfect_foresight": round((c_base - c) / (c_base - c_pf), 4) if c_base > c_pf else None,
                    "savings": round(c_base - c, 2),
                    "price_unit": sc.market.price_unit,
                    "violations": len(bad),
                    "departures_met": f"{met}/{deps}",
                    "time_s": round(secs, 2),
                }
            )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table: one line per run; savings in the money of the prices (their unit per MWh)."""
    money = rows[0]["price_unit"].split(" per ")[0].split("/")[0] if rows else ""
    head = (
        f"| prices | strategy | share of perfect foresight | savings ({money}) | violations | departures met | time s |"
    )
    out = [head, "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        share = "-" if r["share_of_perfect_foresight"] is None else f"{r['share_of_perfect_foresight']:.4f}"
        out.append(
            f"| {r['prices']} | {r['strategy']} | {share} | {r['savings']:.2f} | "
            f"{r['violations']} | {r['departures_met']} | {r['time_s']:.2f} |"
        )
    return "\n".join(out)
