"""Hostile and odd price files: the backtest and the runtime's CSV price task give clear errors naming
file and line (never a traceback), keep nothing half-read, and accept the DST days of 15-minute markets.
A bounded hypothesis fuzz of both parsers: only clean errors."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backtest.cli import cli
from backtest.data import DataError, load_prices
from runtime.tasks.price_parse import PriceError, check_curve, localize, parse_csv

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "runtime/data/scenarios/commuter.yaml"
HEADER = "time,price\n"


def hours(first: str, n: int, step_min: int = 60) -> list[str]:
    t0 = dt.datetime.fromisoformat(first)
    return [(t0 + dt.timedelta(minutes=step_min * i)).isoformat() for i in range(n)]


def write(tmp_path: Path, body: str | bytes, name: str = "p.csv") -> Path:
    p = tmp_path / name
    if isinstance(body, bytes):
        p.write_bytes(body)
    else:
        p.write_text(body)
    return p


def rows(times: list[str], price: float = 20.0) -> str:
    return HEADER + "".join(f"{t},{price + i}\n" for i, t in enumerate(times))


CASES = [
    # (id, body, message fragment, line)
    ("duplicated first time", rows(["2018-01-01T00:00:00", *hours("2018-01-01T00:00", 5)]), "repeats", 3),
    ("reversed file", rows(list(reversed(hours("2018-01-01T00:00", 6)))), "does not follow", 3),
    (
        "conflicting duplicate",
        rows([*hours("2018-01-01T00:00", 4), "2018-01-01T02:00:00", *hours("2018-01-01T04:00", 2)]),
        "repeats line 4",
        6,
    ),
    ("three-day gap", rows([*hours("2018-01-01T00:00", 3), *hours("2018-01-04T03:00", 3)]), "gap of 3 days", 5),
    ("one-hour gap on a weekday", rows([*hours("2018-01-02T00:00", 2), *hours("2018-01-02T03:00", 2)]), "gap", 4),
    ("step that does not divide a day", rows(hours("2018-01-01T00:00", 4, 7 * 60)), "divides a day", 3),
    ("absurd price", HEADER + "2018-01-01T00:00:00,1\n2018-01-01T01:00:00,1e308\n", "beyond", 3),
    ("infinite price", HEADER + "2018-01-01T00:00:00,1\n2018-01-01T01:00:00,inf\n", "not finite", 3),
    ("offset time", HEADER + "2018-01-01T00:00:00+01:00,1\n2018-01-01T01:00:00,2\n", "naive", 2),
    # the first bad value in file order: columns are checked as a whole, the error still names the first
    (
        "bad forecast before a bad price",
        "time,price,fc\n2018-01-01T00:00:00,1,1\n2018-01-01T01:00:00,1,x\n2018-01-01T02:00:00,y,1\n",
        "fc: not a number",
        3,
    ),
    (
        "bad price before a gap",
        rows(hours("2018-01-01T00:00", 2)) + "2018-01-01T02:00:00,z\n2018-01-05T00:00:00,1\n",
        "price: not a number",
        4,
    ),
]


@pytest.mark.parametrize(("body", "fragment", "line"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_price_file_names_file_and_line(tmp_path: Path, body: str, fragment: str, line: int) -> None:
    p = write(tmp_path, body)
    with pytest.raises(DataError, match=fragment) as err:
        load_prices(p)
    assert str(err.value).startswith(f"{p}:{line}: ")


def test_non_utf8_byte_names_its_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = write(tmp_path, (HEADER + "2018-01-01T00:00:00,1\n2018-01-01T01:00:00,2\xe9\n").encode("latin-1"))
    assert cli(["--prices", str(p), "--scenario", str(SCENARIO)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {p}:3: not UTF-8") and "Traceback" not in err


def test_nul_byte_is_a_clean_error(tmp_path: Path) -> None:
    p = write(tmp_path, HEADER + "2018-01-01T00:00:00,1\n2018-01-01T01:00:00,2\x00\n")
    with pytest.raises(DataError, match=rf"^{p}:3: price: not a number"):
        load_prices(p)


@pytest.mark.parametrize(
    ("day", "skip_or_repeat", "rows_that_day"),
    [("2024-03-31", "skip", 92), ("2024-10-27", "repeat", 100)],
)
def test_quarter_hour_dst_days_are_92_and_100_intervals(
    tmp_path: Path, day: str, skip_or_repeat: str, rows_that_day: int
) -> None:
    """EU DST: 2024-03-31 02:00-03:00 does not exist; on 2024-10-27 02:00-03:00 happens twice."""
    d0 = dt.datetime.fromisoformat(day)
    before = hours((d0 - dt.timedelta(days=1)).isoformat(), 96, 15)
    wall = [d0 + dt.timedelta(minutes=15 * i) for i in range(96)]
    if skip_or_repeat == "skip":
        today = [t for t in wall if t.hour != 2]
    else:
        today = [t for t in wall if t.hour < 3] + [t for t in wall if t.hour == 2] + [t for t in wall if t.hour >= 3]
    after = hours((d0 + dt.timedelta(days=1)).isoformat(), 96, 15)
    series = load_prices(write(tmp_path, rows([*before, *(t.isoformat() for t in today), *after])))
    assert series.step_s == 900
    assert sum(t.date() == d0.date() for t in series.times) == rows_that_day
    assert len(series) == 96 + rows_that_day + 96


# -- fuzz: only clean errors ----------------------------------------------------------------------------

LINE = st.one_of(
    st.sampled_from(["2018-01-01T00:00:00,1", "2018-01-01T01:00:00,2", "2018-01-07T02:00:00,3", "time,price"]),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=40),
    st.builds(
        lambda t, p: f"{t.isoformat()},{p}",
        st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31)),
        st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8)),
    ),
)
FILE = st.one_of(
    st.binary(max_size=300),
    st.lists(LINE, max_size=12).map(lambda ls: ("time,price\n" + "\n".join(ls)).encode()),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=FILE)
def test_fuzz_backtest_price_file(tmp_path: Path, body: bytes) -> None:
    p = write(tmp_path, body)
    try:
        series = load_prices(p)
    except DataError as exc:
        assert str(exc).startswith(f"{p}")
    else:
        assert len(series) >= 2 and series.step_s > 0


@settings(max_examples=200, deadline=None)
@given(body=FILE)
def test_fuzz_price_task_parser(body: bytes) -> None:
    """What the CSV price task does with a file's bytes: decode, parse, localize, check."""
    from runtime.tasks.prices import decode_price_file

    try:
        text = decode_price_file(body, "f.csv")
    except PriceError:
        return
    parsed = parse_csv(text, source="f.csv")
    assert all(e.startswith("f.csv") for e in parsed.errors)
    pairs, errors = localize(parsed.rows, ZoneInfo("Europe/Berlin"), dt.timedelta(hours=1), source="f.csv")
    assert all(e.startswith("f.csv") for e in errors)
    try:
        check_curve([iv for _, iv in pairs], source="f.csv", min_price=-500, max_price=4000)
    except PriceError as exc:
        assert all(e.startswith("f.csv") for e in exc.errors)


def test_price_task_keeps_the_last_good_curve_on_a_bad_byte(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A non-UTF-8 byte: logged once, the last good rows kept, and the file read again once it changes."""
    import os

    from runtime.tasks.prices import CsvParams, PricesCsv

    good = rows(hours("2018-01-01T00:00", 48))
    p = write(tmp_path, good)
    from runtime.api import SiteInfo

    site = SiteInfo("t", 240.0, 60.0, 20_000, base_dir=tmp_path)
    task = PricesCsv("prices", CsvParams(path=str(p), timezone="UTC"), site)
    log = logging.getLogger("test.prices")
    assert task._load(log) and len(task._days) == 2
    p.write_bytes(good.encode() + b"2018-01-03T00:00:00,\xff\n")
    os.utime(p, (1, 1))  # a different mtime than the good read, whatever the file system's resolution
    with caplog.at_level(logging.WARNING, logger="test.prices"):
        for _ in range(3):
            assert task._load(log)  # no exception, no restart of the task
    warnings = [r for r in caplog.records if "not UTF-8" in r.getMessage()]
    assert len(warnings) == 1 and f"{p.name}:50" in warnings[0].getMessage()
    assert len(task._days) == 2  # the last good data
    p.write_text(rows(hours("2018-01-01T00:00", 72)))
    os.utime(p, (2, 2))
    assert task._load(log) and len(task._days) == 3
