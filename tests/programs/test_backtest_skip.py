"""Skipping the scans of rows in which nothing can change is exact: on two weeks of each bundled market,
every strategy's trace is byte for byte the trace of stepping every row; the reference runs' cache
returns exactly what was run; ``--compare`` prints one table of every strategy on several files."""

from __future__ import annotations

from pathlib import Path

import pytest

from backtest.cli import cli
from backtest.data import load_prices, load_scenario
from backtest.market import VisibleMarket
from backtest.output import write_trace
from backtest.run import backtest, simulate
from backtest.strategies import STRATEGIES, make_strategy

pytestmark = pytest.mark.slow  # whole backtests in simulated time

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "runtime/data/scenarios/commuter.yaml"
PRICES = ROOT / "runtime/data/prices"


def slice_csv(tmp_path: Path, name: str, first_row: int, rows: int) -> Path:
    lines = (PRICES / name).read_text().splitlines(keepends=True)
    out = tmp_path / f"{name}.{first_row}.csv"
    out.write_text(lines[0] + "".join(lines[1 + first_row : 1 + first_row + rows]))
    return out


@pytest.mark.parametrize("name", ["PJM_2017-2018.csv", "DE_2016-2017.csv"])
def test_skipping_equals_stepping_byte_for_byte(tmp_path: Path, name: str) -> None:
    # two weeks from the first Monday after New Year (both series start in late December)
    path = slice_csv(tmp_path, name, 24 * 7, 24 * 14)
    series, sc = load_prices(path), load_scenario(SCENARIO)
    market = VisibleMarket(series, sc)
    saved = 0
    for strategy in STRATEGIES:
        traces, cycles = [], []
        for skip in (False, True):
            run = simulate(series, sc, make_strategy(strategy, series, sc, market.calendar), market, None, skip)
            trace = tmp_path / f"{strategy}.{skip}.csv"
            write_trace(trace, series, run)
            traces.append(trace.read_bytes())
            cycles.append(run.cycles)
        assert traces[0] == traces[1], strategy
        assert cycles[1] <= cycles[0]
        saved += cycles[0] - cycles[1]
    assert saved > 0.5 * 14 * 24 * len(STRATEGIES) / 2  # the skipping does skip (most rows are idle)


def test_reference_runs_come_back_from_the_cache_unchanged(tmp_path: Path) -> None:
    path = slice_csv(tmp_path, "PJM_2017-2018.csv", 24 * 7, 24 * 7)
    cache = tmp_path / "cache"
    first, run1, _ = backtest(path, SCENARIO, "cheapest", cache_dir=cache)
    assert len(list(cache.glob("*.npz"))) == 2  # baseline and perfect foresight
    again, run2, _ = backtest(path, SCENARIO, "cheapest", cache_dir=cache)
    for k in ("baseline_cost", "perfect_foresight_cost", "strategy_cost", "share_of_perfect_foresight"):
        assert again[k] == first[k]
    assert (run1.grid_kw == run2.grid_kw).all()
    uncached, _, _ = backtest(path, SCENARIO, "cheapest")
    assert uncached["share_of_perfect_foresight"] == first["share_of_perfect_foresight"]
    # other prices: other entries, never a stale hit
    other = slice_csv(tmp_path, "PJM_2017-2018.csv", 24 * 14, 24 * 7)
    backtest(other, SCENARIO, "cheapest", cache_dir=cache)
    assert len(list(cache.glob("*.npz"))) == 4


def test_compare_prints_one_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = slice_csv(tmp_path, "PJM_2017-2018.csv", 24 * 7, 24 * 7)
    b = slice_csv(tmp_path, "DE_2016-2017.csv", 24 * 7, 24 * 7)
    assert cli(["--compare", "--prices", str(a), "--prices", str(b), "--scenario", str(SCENARIO)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("| prices | strategy | share of perfect foresight | savings (currency) |")
    body = [ln.split(" | ") for ln in lines[2:]]
    assert len(body) == 2 * len(STRATEGIES)
    assert {(r[0].strip("| "), r[1]) for r in body} == {(p.name, s) for p in (a, b) for s in STRATEGIES}
    for r in body:
        if r[1] == "perfect":
            assert r[2] == "1.0000"
        if r[1] == "baseline":
            assert r[2] == "0.0000" and r[3] == "0.00"
        assert r[4] == "0"  # no violations


def test_several_files_need_compare(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = slice_csv(tmp_path, "PJM_2017-2018.csv", 0, 48)
    with pytest.raises(SystemExit):
        cli(["--prices", str(a), "--prices", str(a), "--scenario", str(SCENARIO)])
    assert "need --compare" in capsys.readouterr().err
