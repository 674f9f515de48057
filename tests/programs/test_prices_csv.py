"""The CSV price task on a simulated task clock: publication at 12:00 on D-1, simulated start date and
loop, staleness, rejection with the last valid curve kept, idempotency, real-time prices."""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import os
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from runtime.api import SiteInfo
from runtime.tags import US, Quality
from runtime.tasks.base import TASKS, TaskContext
from runtime.tasks.prices import CsvParams, PricesCsv

NY = ZoneInfo("America/New_York")
SITE = SiteInfo("t", 240.0, 60.0, 20_000)
HOUR_US = 3600 * US


class Writes:
    def __init__(self) -> None:
        self.log: list[tuple[str, Any, Quality]] = []

    def __call__(self, tag: str, value: Any, quality: Quality) -> None:
        self.log.append((tag, value, quality))

    def last(self, tag: str) -> tuple[Any, Quality]:
        for t, v, q in reversed(self.log):
            if t == tag:
                return v, q
        raise KeyError(tag)


def write_days(path: Path, first: dt.date, n: int, base: float = 20.0, bad: dict[str, str] | None = None) -> None:
    lines = ["time,price"]
    for d in range(n):
        for h in range(24):
            t = f"{first + dt.timedelta(days=d)}T{h:02d}:00:00"
            lines.append(f"{t},{(bad or {}).get(t, base + d * 100 + h)}")
    path.write_text("\n".join(lines) + "\n")
    os.utime(path, ns=(path.stat().st_mtime_ns + 10**9,) * 2)  # a rewrite within one mtime tick still counts


def make(tmp_path: Path, start: dt.datetime, **params: Any) -> tuple[PricesCsv, TaskContext, Writes]:
    task = PricesCsv(
        "prices",
        CsvParams(**{"path": "p.csv", "timezone": "America/New_York", **params}),
        SiteInfo("t", 240.0, 60.0, 20_000, base_dir=tmp_path),
    )
    w = Writes()
    cx = TaskContext("prices", w, start, logging.getLogger("test.prices"))
    return task, cx, w


def at(task: PricesCsv, cx: TaskContext, hours: float) -> None:
    cx.now_us = round(hours * HOUR_US)
    task.poll(cx)


def test_registered_and_declared(tmp_path: Path) -> None:
    assert TASKS["prices_csv"] is PricesCsv
    task, _, _ = make(tmp_path, dt.datetime(2018, 6, 4, tzinfo=NY))
    specs = {s.name: s for s in task.declare()}
    assert set(specs) == {"prices.day_ahead", "prices.updated"}
    assert specs["prices.day_ahead"].stale_after_s == 36 * 3600


def test_timezone_is_required() -> None:
    with pytest.raises(ValueError, match="timezone"):
        CsvParams(path="p.csv")  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="unknown IANA timezone"):
        CsvParams(path="p.csv", timezone="Mars/Olympus")


@pytest.mark.parametrize("aware", [True, False])
def test_publication_at_noon_day_before(tmp_path: Path, aware: bool) -> None:
    write_days(tmp_path / "p.csv", dt.date(2018, 6, 4), 3)
    start = dt.datetime(2018, 6, 4, tzinfo=NY if aware else None)
    task, cx, w = make(tmp_path, start)
    at(task, cx, 0)
    curve, q = w.last("prices.day_ahead")
    assert q is Quality.GOOD and len(curve) == 24
    assert curve[0] == {"start": "2018-06-04T04:00:00+00:00", "end": "2018-06-04T05:00:00+00:00", "price": 20.0}
    assert w.last("prices.updated") == (1, Quality.GOOD)
    at(task, cx, 12 - 1 / 3600)
    curve, _ = w.last("prices.day_ahead")
    assert len(curve) == 13 and curve[-1]["start"] == "2018-06-05T03:00:00+00:00"  # not yet day 2
    at(task, cx, 12)
    curve, _ = w.last("prices.day_ahead")
    assert len(curve) == 12 + 24 and curve[-1]["price"] == 143.0
    assert w.last("prices.updated")[0] == 2
    n = len(w.log)
    at(task, cx, 12.5)  # same data again: nothing new, revision unchanged
    assert w.last("prices.updated")[0] == 2 and len(w.log) > n
    assert all(a["end"] == b["start"] for a, b in itertools.pairwise(curve))


def test_runs_out_then_stale(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_days(tmp_path / "p.csv", dt.date(2018, 6, 4), 1)
    task, cx, w = make(tmp_path, dt.datetime(2018, 6, 4, tzinfo=NY))
    at(task, cx, 23.5)
    assert w.last("prices.day_ahead")[1] is Quality.GOOD
    with caplog.at_level(logging.WARNING):
        at(task, cx, 24.0)
    assert w.last("prices.day_ahead") == ([], Quality.STALE)
    assert "day_ahead prices stale: no interval covers now" in caplog.text


def test_bad_day_rejected_last_valid_kept(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "p.csv"
    write_days(path, dt.date(2018, 6, 4), 2)
    task, cx, w = make(tmp_path, dt.datetime(2018, 6, 4, tzinfo=NY))
    at(task, cx, 13)
    good, _ = w.last("prices.day_ahead")
    assert len(good) == 11 + 24
    with caplog.at_level(logging.WARNING):
        write_days(path, dt.date(2018, 6, 4), 2, base=25.0, bad={"2018-06-05T07:00:00": "NaN"})
        at(task, cx, 13.5)
    text = caplog.text
    assert "p.csv:33: price 'NaN' is not finite: row rejected" in text
    assert "p.csv day 2018-06-05 rejected, last valid curve kept" in text and "gap from" in text
    curve, q = w.last("prices.day_ahead")
    assert q is Quality.GOOD
    assert curve[0]["price"] == 25.0 + 13 and curve[-1] == good[-1]  # day 1 revised, day 2 kept as it was


@pytest.mark.parametrize("price", ["99999", "-2000"])
def test_absurd_value_rejects_day(tmp_path: Path, price: str) -> None:
    write_days(tmp_path / "p.csv", dt.date(2018, 6, 4), 1, bad={"2018-06-04T05:00:00": price})
    task, cx, w = make(tmp_path, dt.datetime(2018, 6, 4, tzinfo=NY))
    at(task, cx, 0)
    with pytest.raises(KeyError):
        w.last("prices.day_ahead")  # never any valid data: the tag stays bad in the scan
    assert w.last("prices.updated") == (0, Quality.GOOD)


def test_simulated_start_date_and_loop(tmp_path: Path) -> None:
    write_days(tmp_path / "p.csv", dt.date(2018, 6, 4), 3)
    start = dt.datetime(2026, 6, 1)  # a Monday, naive site-local
    task, cx, w = make(tmp_path, start, data_start="2018-06-04", loop=True)
    at(task, cx, 0)
    curve, q = w.last("prices.day_ahead")
    assert q is Quality.GOOD and curve[0] == {
        "start": "2026-06-01T04:00:00+00:00",
        "end": "2026-06-01T05:00:00+00:00",
        "price": 20.0,
    }
    at(task, cx, 3 * 24 - 12)  # noon of the 3rd simulated day: the 4th replays data day 1 again
    curve, _ = w.last("prices.day_ahead")
    assert curve[-1] == {"start": "2026-06-05T03:00:00+00:00", "end": "2026-06-05T04:00:00+00:00", "price": 43.0}
    assert curve[0]["price"] == 232.0 and curve[12]["price"] == 20.0


def test_data_start_without_loop_runs_out(tmp_path: Path) -> None:
    write_days(tmp_path / "p.csv", dt.date(2018, 6, 4), 1)
    task, cx, w = make(tmp_path, dt.datetime(2026, 6, 1), data_start="2018-06-04")
    at(task, cx, 25)
    assert w.last("prices.day_ahead")[1] is Quality.STALE


def test_real_time_market(tmp_path: Path) -> None:
    lines = ["time,price"] + [f"2018-06-04T00:{m:02d}:00,{-10 + m}" for m in range(0, 60, 5)]
    (tmp_path / "p.csv").write_text("\n".join(lines) + "\n")
    task, cx, w = make(
        tmp_path, dt.datetime(2018, 6, 4, tzinfo=NY), market="real_time", resolution_s=300, real_time_stale_after_s=600
    )
    assert {s.name for s in task.declare()} == {"prices.real_time", "prices.updated"}
    at(task, cx, 0)
    assert w.last("prices.real_time") == (-10.0, Quality.GOOD)  # negative prices are prices
    at(task, cx, 7 / 60)
    assert w.last("prices.real_time") == (-5.0, Quality.GOOD)
    at(task, cx, 1.0)
    assert w.last("prices.real_time") == (-5.0, Quality.STALE)  # no interval now: last value, stale


def test_missing_file_ages_out(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_days(tmp_path / "p.csv", dt.date(2018, 6, 4), 3)
    task, cx, w = make(tmp_path, dt.datetime(2018, 6, 4, tzinfo=NY), day_ahead_stale_after_s=3600)
    at(task, cx, 0)
    (tmp_path / "p.csv").unlink()
    with caplog.at_level(logging.WARNING):
        at(task, cx, 0.5)
        assert w.last("prices.day_ahead")[1] is Quality.GOOD
        at(task, cx, 1.01)
    assert w.last("prices.day_ahead")[1] is Quality.STALE
    assert "cannot read" in caplog.text and "data older than stale_after_s" in caplog.text


def test_bundled_site_prices() -> None:
    """The bundled site's price task reads its copied data without a single rejected row or day."""
    from runtime.config import load_site

    site = load_site(Path(__file__).resolve().parents[2] / "runtime" / "sites" / "sim.yaml")
    comp = next(c for c in site.config.tasks if c.type == "prices_csv")
    task = PricesCsv(comp.label, CsvParams(**comp.params), SiteInfo("t", 240.0, 60.0, 20_000, base_dir=site.base_dir))
    assert task.file.exists() and (task.file.parent / "README.md").exists()
    w = Writes()
    cx = TaskContext("prices", w, dt.datetime(2026, 6, 1, tzinfo=NY), logging.getLogger("t"))
    seen = 0
    for day in range(29):  # 28 days of data, then the loop starts over
        at(task, cx, 24 * day + 12)
        curve, q = w.last("prices.day_ahead")
        assert q is Quality.GOOD and len(curve) == 36
        seen = w.last("prices.updated")[0]
    assert seen == 29 + 1  # one revision per published day (plus the first day at start)
    assert task._cache and all(c is not None for c in task._cache.values())


@pytest.mark.parametrize("start, hours", [(dt.datetime(2026, 3, 7, 13), 23), (dt.datetime(2026, 10, 31, 13), 25)])
def test_bundled_prices_replayed_onto_dst_days(start: dt.datetime, hours: int) -> None:
    """The simulated calendar may cross a DST change: the next day is published as a 23/25-hour day."""
    from runtime.config import load_site

    site = load_site(Path(__file__).resolve().parents[2] / "runtime" / "sites" / "sim.yaml")
    comp = next(c for c in site.config.tasks if c.type == "prices_csv")
    task = PricesCsv(comp.label, CsvParams(**comp.params), SiteInfo("t", 240.0, 60.0, 20_000, base_dir=site.base_dir))
    w = Writes()
    cx = TaskContext("prices", w, start.replace(tzinfo=NY), logging.getLogger("t"))
    at(task, cx, 0)
    curve, q = w.last("prices.day_ahead")
    assert q is Quality.GOOD and len(curve) == 11 + hours
    assert all(a["end"] == b["start"] for a, b in itertools.pairwise(curve))


def test_tags_age_to_stale_in_the_scan_when_the_task_stops(tmp_path: Path) -> None:
    """The writes land in a real engine; without refreshes the tags turn stale after stale_after_s."""
    from runtime.engine import RUNTIME_TAGS, Engine, tag_table
    from runtime.tags import TagUpdate

    write_days(tmp_path / "p.csv", dt.date(2018, 6, 4), 2)
    task, cx, w = make(tmp_path, dt.datetime(2018, 6, 4, tzinfo=NY), day_ahead_stale_after_s=7200)
    engine = Engine(SITE, tag_table(("runtime", RUNTIME_TAGS), ("prices", task.declare())))
    at(task, cx, 1)
    res = engine.step(cx.now_us, [TagUpdate(t, v, q) for t, v, q in w.log])
    assert res.image["prices.day_ahead"].good and len(res.image["prices.day_ahead"].value) == 23
    assert res.image["prices.updated"].value == 1
    res = engine.step(cx.now_us + 7200 * US)  # the task process died: no refresh for stale_after_s
    assert res.image["prices.day_ahead"].good
    res = engine.step(cx.now_us + 7200 * US + SITE.period_us)
    assert res.image["prices.day_ahead"].quality is Quality.STALE
    assert res.image.value("prices.day_ahead") is None  # a stale curve is no curve for the planner
