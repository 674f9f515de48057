"""``v2g-plc backtest``: the command line (``add_arguments`` / ``main`` for runtime/cli.py)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

from backtest.data import DataError
from backtest.output import plot_week, write_trace
from backtest.run import backtest
from backtest.strategies import STRATEGIES

DESCRIPTION = "arbitrage backtest over a price series in simulated time (docs/planner.md)"


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument(
        "--prices",
        required=True,
        type=Path,
        action="append",
        help="price CSV: time,price[,forecast columns] (repeat it with --compare)",
    )
    ap.add_argument("--scenario", required=True, type=Path, help="scenario YAML (commuter.yaml)")
    ap.add_argument("--strategy", default="planner", choices=list(STRATEGIES))
    ap.add_argument("--compare", action="store_true", help="run every strategy on every --prices file; print one table")
    ap.add_argument("--trace", type=Path, metavar="CSV", help="write time,grid_kw,soc per price row")
    ap.add_argument("--plot", type=Path, metavar="PNG", help="draw one week (needs --week)")
    ap.add_argument("--week", type=dt.date.fromisoformat, metavar="YYYY-MM-DD", help="first day of the plotted week")
    ap.add_argument(
        "--no-cache",
        action="store_true",
        help="run the baseline and perfect foresight again instead of reading them from the cache "
        "($V2G_PLC_CACHE_DIR, else ~/.cache/v2g-plc/backtest)",
    )


def main(a: argparse.Namespace) -> int:
    """Exit 0 with the JSON summary (or the --compare table) on stdout; 2 with ``error: file:line: ...``
    on a bad input."""
    from backtest import cache
    from runtime.yamlload import ConfigError

    cache_dir = None if a.no_cache else cache.default_dir()
    try:
        if a.compare:
            from backtest.compare import compare, table

            print(table(compare(a.prices, a.scenario, cache_dir=cache_dir)))
            return 0
        out, run, series = backtest(a.prices[0], a.scenario, a.strategy, cache_dir=cache_dir)
        if a.trace:
            write_trace(a.trace, series, run)
        if a.plot:
            plot_week(a.plot, a.week, series, run, out["price_unit"])
    except (DataError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(out, indent=2))
    return 0


def cli(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="v2g-plc backtest", description=DESCRIPTION)
    add_arguments(ap)
    a = ap.parse_args(argv)
    if a.plot and not a.week:
        ap.error("--plot needs --week YYYY-MM-DD")
    if len(a.prices) > 1 and not a.compare:
        ap.error("several --prices files need --compare")
    if a.compare and (a.trace or a.plot):
        ap.error("--trace and --plot draw one run: not with --compare")
    return main(a)


if __name__ == "__main__":
    raise SystemExit(cli(sys.argv[1:]))
