"""Price parsing and validation without any network: DST days, duplicates, negative prices, bad rows,
and the store's idempotency."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from runtime.tasks.price_parse import (
    UTC,
    CurveStore,
    Interval,
    PriceError,
    check_curve,
    check_day,
    localize,
    parse_csv,
    parse_signal,
)

NY = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")
H = dt.timedelta(hours=1)


def day_csv(day: str, hours: list[str], price: float = 30.0) -> str:
    return "time,price\n" + "".join(f"{day}T{h}:00:00,{price + i}\n" for i, h in enumerate(hours))


def curve_of(text: str, tz: ZoneInfo = NY, dst: str = "strict") -> list[Interval]:
    parsed = parse_csv(text, source="t.csv")
    assert parsed.errors == []
    pairs, errors = localize(parsed.rows, tz, H, source="t.csv", dst=dst)  # type: ignore[arg-type]
    if errors:
        raise PriceError(errors)
    return check_curve([iv for _, iv in pairs], source="t.csv", min_price=-500, max_price=4000, resolution=H)


HOURS = [f"{h:02d}" for h in range(24)]


def test_normal_day_24_intervals() -> None:
    c = curve_of(day_csv("2018-06-04", HOURS))
    check_day(c, dt.date(2018, 6, 4), NY, source="t")
    assert len(c) == 24
    assert c[0].start == dt.datetime(2018, 6, 4, 4, tzinfo=UTC)  # EDT = UTC-4
    assert c[0].as_json() == {"start": "2018-06-04T04:00:00+00:00", "end": "2018-06-04T05:00:00+00:00", "price": 30.0}


def test_spring_forward_23_hours() -> None:
    hours = [h for h in HOURS if h != "02"]  # 2018-03-11: 02:00 does not exist in New York
    c = curve_of(day_csv("2018-03-11", hours))
    check_day(c, dt.date(2018, 3, 11), NY, source="t")
    assert len(c) == 23
    assert c[1].start == dt.datetime(2018, 3, 11, 6, tzinfo=UTC) and c[2].start == c[1].end


def test_fall_back_25_hours() -> None:
    hours = [*HOURS[:2], "01", *HOURS[2:]]  # 2018-11-04: 01:00 twice
    c = curve_of(day_csv("2018-11-04", hours))
    check_day(c, dt.date(2018, 11, 4), NY, source="t")
    assert len(c) == 25
    assert [iv.price for iv in c[:4]] == [30.0, 31.0, 32.0, 33.0]  # file order kept through the fold


def test_nonexistent_local_time_rejected_in_strict_mode() -> None:
    parsed = parse_csv(day_csv("2018-03-11", HOURS), source="t.csv")
    _, errors = localize(parsed.rows, NY, H, source="t.csv")
    assert len(errors) == 1 and "2018-03-11T02:00:00 does not exist" in errors[0] and "t.csv:4" in errors[0]


def test_evened_file_dst_days() -> None:
    """The shared data files hold 24 rows on DST days: 'evened' reads them as full 23/25-hour days."""
    spring = curve_of(day_csv("2018-03-11", HOURS), dst="evened")
    check_day(spring, dt.date(2018, 3, 11), NY, source="t")
    assert len(spring) == 23
    fall = curve_of(day_csv("2018-11-04", HOURS), dst="evened")
    check_day(fall, dt.date(2018, 11, 4), NY, source="t")
    assert len(fall) == 25 and fall[1].price == fall[2].price == 31.0


def test_fall_back_with_single_row_is_a_gap_in_strict_mode() -> None:
    with pytest.raises(PriceError, match="gap from 2018-11-04T06:00:00"):
        curve_of(day_csv("2018-11-04", HOURS))


def test_offsets_and_utc_live_feed_dst() -> None:
    """A live feed with explicit offsets: the 23- and 25-hour days of Europe/Berlin."""
    spring = parse_signal(
        {"market": "day_ahead", "start": "2024-03-30T23:00:00Z", "resolution_s": 3600, "prices": [50.0] * 23},
        tz=BERLIN,
        source="s",
    )
    c = check_curve(spring.intervals, source="s", min_price=-500, max_price=4000)
    check_day(c, dt.date(2024, 3, 31), BERLIN, source="s")
    fall = parse_signal(
        {"market": "day_ahead", "start": "2024-10-27T00:00:00+02:00", "resolution_s": 900, "prices": [50.0] * 100},
        tz=BERLIN,
        source="s",
    )
    c = check_curve(fall.intervals, source="s", min_price=-500, max_price=4000)
    check_day(c, dt.date(2024, 10, 27), BERLIN, source="s")
    with pytest.raises(PriceError, match="incomplete"):
        check_day(c[:-1], dt.date(2024, 10, 27), BERLIN, source="s")
    ivs = [
        {"start": "2024-10-27T02:00:00+02:00", "end": "2024-10-27T02:00:00+01:00", "price": 1.0},
        {"start": "2024-10-27T02:00:00+01:00", "end": "2024-10-27T03:00:00+01:00", "price": 2.0},
    ]
    sig = parse_signal({"market": "day_ahead", "intervals": ivs}, tz=BERLIN, source="s")
    assert [iv.end - iv.start for iv in check_curve(sig.intervals, source="s", min_price=0, max_price=9)] == [H, H]


def test_naive_ambiguous_time_in_live_signal_rejected() -> None:
    with pytest.raises(PriceError, match="ambiguous"):
        parse_signal(
            {"market": "day_ahead", "start": "2024-10-27T02:00:00", "resolution_s": 3600, "prices": [1.0]},
            tz=BERLIN,
            source="s",
        )


def test_negative_prices_valid() -> None:
    c = curve_of("time,price\n2017-12-24T00:00:00,-45.5\n2017-12-24T01:00:00,0\n2017-12-24T02:00:00,-0.01\n", tz=BERLIN)
    assert [iv.price for iv in c] == [-45.5, 0.0, -0.01]


def test_malformed_rows() -> None:
    text = (
        "time,price\n2018-06-04T00:00:00,10\n2018-06-04T01:00:00,abc\n2018-06-04T02:00:00,nan\n"
        "yesterday,5\n2018-06-04T04:00:00,\n2018-06-04T05:00:00,inf\n2018-06-04T06:00:00,12\n"
    )
    parsed = parse_csv(text, source="t.csv")
    assert [r.price for r in parsed.rows] == [10.0, 12.0]
    assert len(parsed.errors) == 5
    assert parsed.errors[0] == "t.csv:3: price 'abc' is not a number: row rejected"
    assert "t.csv:4: price 'nan' is not finite" in parsed.errors[1]
    assert "t.csv:5: time 'yesterday' is not ISO 8601" in parsed.errors[2]


def test_bad_header() -> None:
    parsed = parse_csv("when,cost\n2018-06-04T00:00:00,1\n", source="t.csv")
    assert parsed.rows == [] and "header must name columns 'time' and 'price'" in parsed.errors[0]


def test_duplicates() -> None:
    same = "time,price\n2018-06-04T00:00:00,10\n2018-06-04T00:00:00,10\n2018-06-04T01:00:00,11\n"
    assert len(curve_of(same)) == 2  # identical duplicate dropped
    conflict = "time,price\n2018-06-04T00:00:00,10\n2018-06-04T00:00:00,12\n2018-06-04T01:00:00,11\n"
    with pytest.raises(PriceError, match="conflicting duplicate"):
        curve_of(conflict)


@pytest.mark.parametrize("price, ok", [(-500.0, True), (4000.0, True), (-500.01, False), (1e6, False)])
def test_absurd_values(price: float, ok: bool) -> None:
    text = f"time,price\n2018-06-04T00:00:00,{price}\n"
    if ok:
        assert curve_of(text)[0].price == price
    else:
        with pytest.raises(PriceError, match="absurd"):
            curve_of(text)


def test_gap_and_wrong_length() -> None:
    with pytest.raises(PriceError, match="gap"):
        curve_of("time,price\n2018-06-04T00:00:00,1\n2018-06-04T02:00:00,2\n")
    sig = parse_signal(
        {
            "market": "real_time",
            "intervals": [
                {"start": "2018-06-04T00:00:00Z", "end": "2018-06-04T00:05:00Z", "price": 1},
                {"start": "2018-06-04T00:05:00Z", "end": "2018-06-04T00:15:00Z", "price": 1},
            ],
        },
        tz=NY,
        source="s",
    )
    with pytest.raises(PriceError, match="expected 0:05:00"):
        check_curve(sig.intervals, source="s", min_price=-1, max_price=9, resolution=dt.timedelta(minutes=5))


@pytest.mark.parametrize(
    "obj, match",
    [
        ([1, 2], "a signal is a JSON object"),
        ({"market": "spot", "prices": []}, "market 'spot'"),
        ({"market": "day_ahead"}, "needs 'intervals'"),
        ({"market": "day_ahead", "intervals": []}, "non-empty"),
        ({"market": "day_ahead", "start": "2018-06-04T00:00Z", "resolution_s": 0, "prices": [1]}, "resolution_s"),
        (
            {"market": "day_ahead", "start": "2018-06-04T00:00Z", "resolution_s": 3600, "prices": [1, None]},
            r"prices\[1\]",
        ),
        ({"market": "day_ahead", "intervals": [{"start": "x", "end": "y", "price": 1}]}, r"intervals\[0\]"),
        (
            {
                "market": "day_ahead",
                "intervals": [{"start": "2018-06-04T00:00Z", "end": "2018-06-04T01:00Z", "price": True}],
            },
            "not a number",
        ),
    ],
)
def test_malformed_signals(obj: object, match: str) -> None:
    with pytest.raises(PriceError, match=match):
        parse_signal(obj, tz=NY, source="s")


def test_store_idempotent_and_revisions() -> None:
    c = curve_of(day_csv("2018-06-04", HOURS))
    store = CurveStore()
    assert store.apply("day_ahead", c) == (24, 0) and store.revision == 1
    assert store.apply("day_ahead", list(c)) == (0, 0) and store.revision == 1  # same signal: nothing
    revised = [Interval(iv.start, iv.end, iv.price + (1 if i == 5 else 0)) for i, iv in enumerate(c)]
    assert store.apply("day_ahead", revised) == (0, 24) and store.revision == 2
    assert store.window("day_ahead", c[0].start)[5].price == c[5].price + 1
    # 15-minute data over one hour replace the hourly interval they cover
    q = dt.timedelta(minutes=15)
    quarter = [Interval(c[0].start + i * q, c[0].start + (i + 1) * q, 1.0) for i in range(4)]
    store.apply("day_ahead", quarter)
    w = store.window("day_ahead", c[0].start)
    assert len(w) == 27 and w[4].start == c[1].start
    assert store.at("day_ahead", c[0].start + q) == quarter[1]
    store.prune(c[12].start)
    assert store.window("day_ahead", c[0].start)[0] == c[12] and store.revision == 3
    assert store.apply("real_time", []) == (0, 0)
