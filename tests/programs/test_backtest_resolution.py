"""15-minute and 5-minute markets through prices, plan, dispatch, accounting, backtest and trace: the
DST days of a quarter-hour market (92 and 100 intervals), a mixed series (hourly history, then quarter
hours), and the trace re-priced independently at the series' own interval length."""

from __future__ import annotations

import csv
import datetime as dt
import math
from pathlib import Path

import pytest

from backtest.cli import cli
from backtest.data import load_prices
from backtest.run import backtest

pytestmark = pytest.mark.slow  # whole backtests in simulated time

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "runtime/data/scenarios/commuter.yaml"
ETA, DEG, CAP = 0.933, 20.0, 60.0


def price_at(t: dt.datetime) -> float:
    """A daily shape with cheap nights and dear evenings, varying within the hour (so the resolution matters)."""
    h = t.hour + t.minute / 60
    return round(40 + 30 * math.sin((h - 12) / 24 * 2 * math.pi) + 5 * math.cos(t.minute / 60 * 2 * math.pi), 3)


def local_rows(first: dt.date, days: int, step_min: int) -> list[dt.datetime]:
    """Naive local interval starts of an EU market (Europe/Berlin clock changes), DST days included."""
    from zoneinfo import ZoneInfo

    tz, utc = ZoneInfo("Europe/Berlin"), dt.UTC
    t = dt.datetime.combine(first, dt.time(), tz).astimezone(utc)
    end = dt.datetime.combine(first + dt.timedelta(days=days), dt.time(), tz).astimezone(utc)
    out = []
    while t < end:
        out.append(t.astimezone(tz).replace(tzinfo=None))
        t += dt.timedelta(minutes=step_min)
    return out


def write(path: Path, times: list[dt.datetime], prices: list[float] | None = None) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["time", "price"])
        for i, t in enumerate(times):
            w.writerow([t.isoformat(), prices[i] if prices else price_at(t)])
    return path


def reprice(trace: Path, prices: dict[int, float], step_h: float) -> tuple[float, list[dict[str, str]]]:
    with trace.open() as fh:
        rows = list(csv.DictReader(fh))
    cost = 0.0
    for i, r in enumerate(rows):
        p = float(r["grid_kw"])
        cost += prices[i] * p * step_h / 1000 + (DEG * -p * step_h / ETA / 1000 if p < 0 else 0.0)
    return cost, rows


@pytest.mark.parametrize(
    ("first", "day", "intervals"), [("2024-10-24", "2024-10-27", 100), ("2024-03-28", "2024-03-31", 92)]
)
def test_quarter_hours_through_a_dst_week(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], first: str, day: str, intervals: int
) -> None:
    times = local_rows(dt.date.fromisoformat(first), 7, 15)
    assert sum(t.date() == dt.date.fromisoformat(day) for t in times) == intervals
    path = write(tmp_path / "q.csv", times)
    trace = tmp_path / "trace.csv"
    assert cli(["--prices", str(path), "--scenario", str(SCENARIO), "--trace", str(trace), "--no-cache"]) == 0
    import json

    out = json.loads(capsys.readouterr().out)
    assert out["rows"] == len(times) and out["violations"] == 0 and out["departures_met"] == out["departures"] > 0
    assert 0.5 < out["share_of_perfect_foresight"] <= 1.0 + 1e-9
    cost, rows = reprice(trace, {i: price_at(t) for i, t in enumerate(times)}, 0.25)
    assert len(rows) == len(times) and sum(r["time"].startswith(day) for r in rows) == intervals
    assert cost == pytest.approx(out["strategy_cost"], abs=1e-3)
    # SoC physics per quarter hour, from the trace alone
    soc = 0.5
    for r in rows:
        p = float(r["grid_kw"])
        assert -11.0 - 1e-6 <= p <= 11.0 + 1e-6
        step = (p * ETA if p >= 0 else p / ETA) * 0.25 / CAP
        assert float(r["soc"]) - soc <= step + 1e-7  # never more than the power gave (driving only takes)
        soc = float(r["soc"])


def test_five_minute_market(tmp_path: Path) -> None:
    times = local_rows(dt.date(2024, 6, 3), 3, 5)
    out, _, series = backtest(write(tmp_path / "rt.csv", times), SCENARIO, "planner")
    assert series.step_s == 300 and out["rows"] == 3 * 288
    assert out["violations"] == 0 and out["departures_met"] == out["departures"] == 3


def test_mixed_series_is_read_on_the_finer_grid(tmp_path: Path) -> None:
    """Three hourly days then three quarter-hour days equal the same file written in quarter hours."""
    hourly = local_rows(dt.date(2025, 9, 29), 3, 60)
    quarter = local_rows(dt.date(2025, 10, 2), 3, 15)
    mixed = write(tmp_path / "mixed.csv", hourly + quarter)
    as_quarters = [t + dt.timedelta(minutes=15 * k) for t in hourly for k in range(4)]
    flat = write(
        tmp_path / "flat.csv",
        as_quarters + quarter,
        [price_at(t.replace(minute=0)) for t in as_quarters] + [price_at(t) for t in quarter],
    )
    a, b = load_prices(mixed), load_prices(flat)
    assert a.step_s == b.step_s == 900 and a.times == b.times and (a.price == b.price).all()
    ra, rb = backtest(mixed, SCENARIO, "planner")[0], backtest(flat, SCENARIO, "planner")[0]
    for k in ("strategy_cost", "baseline_cost", "perfect_foresight_cost", "violations"):
        assert ra[k] == rb[k]


def test_a_coarser_step_after_a_finer_one_is_an_error(tmp_path: Path) -> None:
    quarter = local_rows(dt.date(2025, 10, 2), 1, 15)
    hourly = local_rows(dt.date(2025, 10, 3), 1, 60)
    from backtest.data import DataError

    with pytest.raises(DataError, match=r"q\.csv:98: time: .* leaves a gap of 1:00:00"):
        load_prices(write(tmp_path / "q.csv", quarter + hourly[1:]))
