"""Price data: parsing, validation and the idempotent curve store. Pure functions, no I/O, no clock.

Why a module of its own: the feeds (CSV file, HTTP, MQTT in ``runtime.tasks.prices``) differ only in how
bytes arrive; what counts as a valid curve must be the same for all of them and testable without a
network.

Time: every interval is kept as aware UTC ``datetime``s. A source declares its IANA timezone; times with
an explicit offset (or ``Z``) are taken as written, naive times are wall-clock times of that timezone.
A 23-hour day (spring forward) has no 02:00 local; a 25-hour day has 01:00 twice: the first naive
occurrence is read as the first (``fold=0``), the second as the repeated hour (``fold=1``). Files whose
publisher "evened out" daylight saving (24 rows every day, as runtime/data/prices) are read with
``dst="evened"``: the row of the hour that does not exist is dropped and the single row of the repeated
hour covers both of its intervals.

Validation rejects, with a message naming the source and line: malformed rows, NaN/inf, prices outside
[min_price, max_price], conflicting duplicates, gaps and overlaps, wrong interval lengths. Negative
prices are valid. Identical duplicates are dropped.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from zoneinfo import ZoneInfo

UTC = dt.UTC
Market = Literal["day_ahead", "real_time"]
MARKETS: tuple[str, ...] = ("day_ahead", "real_time")
DstPolicy = Literal["strict", "evened"]


@dataclass(frozen=True, slots=True)
class Interval:
    start: dt.datetime  # aware, UTC
    end: dt.datetime  # aware, UTC
    price: float  # currency per MWh

    def as_json(self) -> dict[str, Any]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat(), "price": self.price}


@dataclass(frozen=True, slots=True)
class Row:
    """One parsed row before localisation: a naive wall time (with its fold) or an aware time."""

    line: int
    time: dt.datetime
    price: float


@dataclass
class Parsed:
    rows: list[Row] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@dataclass
class Signal:
    """One message of a feed: a market and the intervals it sets."""

    market: str
    intervals: list[Interval]


class PriceError(ValueError):
    """A signal or curve that must be rejected; ``errors`` lists every reason found."""

    def __init__(self, errors: Sequence[str]):
        super().__init__("; ".join(errors))
        self.errors = list(errors)


def parse_price(text: Any) -> float:
    if isinstance(text, bool):
        raise ValueError(f"price {text!r} is not a number")
    try:
        v = float(text)
    except (TypeError, ValueError):
        raise ValueError(f"price {text!r} is not a number") from None
    if not math.isfinite(v):
        raise ValueError(f"price {text!r} is not finite")
    return v


def parse_time(text: Any) -> dt.datetime:
    if not isinstance(text, str):
        raise ValueError(f"time {text!r} is not an ISO 8601 string")
    try:
        return dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"time {text!r} is not ISO 8601") from None


def parse_csv(text: str, *, source: str, time_column: str = "time", price_column: str = "price") -> Parsed:
    """Rows of a CSV price file; malformed rows become errors with their line number."""
    out = Parsed()
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        fields = reader.fieldnames
        if fields is None or time_column not in fields or price_column not in fields:
            out.errors.append(f"{source}: header must name columns {time_column!r} and {price_column!r}, got {fields}")
            return out
        for rec in reader:
            line = reader.line_num
            try:
                t = parse_time(rec.get(time_column))
                p = parse_price(rec.get(price_column))
            except ValueError as exc:
                out.errors.append(f"{source}:{line}: {exc}: row rejected")
                continue
            out.rows.append(Row(line, t, p))
    except csv.Error as exc:  # a NUL byte, an unterminated quote: the rest of the file is not CSV
        out.errors.append(f"{source}:{reader.line_num + 1}: not CSV ({exc}): the rest of the file rejected")
    return out


def _exists(wall: dt.datetime, tz: ZoneInfo) -> bool:
    aware = wall.replace(tzinfo=tz)
    return aware.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == wall


def _ambiguous(wall: dt.datetime, tz: ZoneInfo) -> bool:
    return wall.replace(tzinfo=tz, fold=0).utcoffset() != wall.replace(tzinfo=tz, fold=1).utcoffset()


def localize(
    rows: Iterable[Row], tz: ZoneInfo, resolution: dt.timedelta, *, source: str, dst: DstPolicy = "strict"
) -> tuple[list[tuple[Row, Interval]], list[str]]:
    """Rows to UTC intervals of length ``resolution``; see the module docstring for DST."""
    out: list[tuple[Row, Interval]] = []
    errors: list[str] = []
    seen_ambiguous: set[dt.datetime] = set()
    for row in rows:
        t = row.time
        if t.tzinfo is not None:
            start = t.astimezone(UTC)
            out.append((row, Interval(start, start + resolution, row.price)))
            continue
        if not _exists(t, tz):
            if dst == "evened":
                continue  # the publisher's filler row for the skipped hour
            errors.append(
                f"{source}:{row.line}: local time {t.isoformat()} does not exist in {tz.key} "
                f"(daylight-saving gap): row rejected"
            )
            continue
        folds = [0]
        if _ambiguous(t, tz):
            if dst == "evened":
                folds = [0, 1]
            elif t in seen_ambiguous:
                folds = [1]
            seen_ambiguous.add(t)
        for fold in folds:
            start = t.replace(tzinfo=tz, fold=fold).astimezone(UTC)
            out.append((row, Interval(start, start + resolution, row.price)))
    return out, errors


def check_curve(
    intervals: Sequence[Interval],
    *,
    source: str,
    min_price: float,
    max_price: float,
    resolution: dt.timedelta | None = None,
) -> list[Interval]:
    """A valid, sorted, de-duplicated curve or PriceError with every reason found."""
    errors: list[str] = []
    by_start: dict[dt.datetime, Interval] = {}
    for iv in intervals:
        where = f"{source}: interval {iv.start.isoformat()}"
        if not math.isfinite(iv.price):
            errors.append(f"{where}: price {iv.price!r} is not finite")
        elif not min_price <= iv.price <= max_price:
            errors.append(f"{where}: price {iv.price} outside [{min_price}, {max_price}] (absurd value)")
        if iv.end <= iv.start:
            errors.append(f"{where}: ends at or before its start")
        elif resolution is not None and iv.end - iv.start != resolution:
            errors.append(f"{where}: lasts {iv.end - iv.start}, expected {resolution}")
        old = by_start.get(iv.start)
        if old is not None and old != iv:
            errors.append(f"{where}: conflicting duplicate ({old.price} and {iv.price})")
        by_start[iv.start] = iv
    curve = sorted(by_start.values(), key=lambda iv: iv.start)
    for a, b in itertools.pairwise(curve):
        if b.start > a.end:
            errors.append(f"{source}: gap from {a.end.isoformat()} to {b.start.isoformat()}")
        elif b.start < a.end:
            errors.append(f"{source}: interval {b.start.isoformat()} overlaps the one before")
    if errors:
        raise PriceError(errors)
    return curve


def local_day(iv: Interval, tz: ZoneInfo) -> dt.date:
    return iv.start.astimezone(tz).date()


def check_day(curve: Sequence[Interval], day: dt.date, tz: ZoneInfo, *, source: str) -> None:
    """A day-ahead curve of one delivery day must cover it from local midnight to local midnight (23, 24
    or 25 hours)."""
    lo = dt.datetime.combine(day, dt.time(), tz).astimezone(UTC)
    hi = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tz).astimezone(UTC)
    if not curve or curve[0].start != lo or curve[-1].end != hi:
        first = curve[0].start.isoformat() if curve else "-"
        last = curve[-1].end.isoformat() if curve else "-"
        raise PriceError(
            [
                f"{source}: day {day} incomplete: covers {first} .. {last}, "
                f"needs {lo.isoformat()} .. {hi.isoformat()} ({(hi - lo) / dt.timedelta(hours=1):g} h)"
            ]
        )


def parse_signal(obj: Any, *, tz: ZoneInfo, source: str, default_market: str | None = None) -> Signal:
    """One JSON signal, either explicit intervals::

        {"market": "day_ahead", "intervals": [{"start": "2024-03-31T00:00:00+01:00",
                                                "end": "2024-03-31T01:00:00+01:00", "price": 41.2}, ...]}

    or a start (an instant, normally with offset or Z), a resolution and a price list::

        {"market": "real_time", "start": "2024-03-31T00:00:00Z", "resolution_s": 300, "prices": [..]}

    Naive times are wall times of ``tz``. Raises PriceError.
    """
    if not isinstance(obj, Mapping):
        raise PriceError([f"{source}: a signal is a JSON object, got {type(obj).__name__}"])
    market = obj.get("market", default_market)
    if market not in MARKETS:
        raise PriceError([f"{source}: market {market!r} is not one of {', '.join(MARKETS)}"])
    errors: list[str] = []
    ivs: list[Interval] = []
    if "intervals" in obj:
        raw = obj["intervals"]
        if not isinstance(raw, list) or not raw:
            raise PriceError([f"{source}: 'intervals' must be a non-empty list"])
        for i, rec in enumerate(raw):
            try:
                if not isinstance(rec, Mapping):
                    raise ValueError("not an object")
                start = _instant(parse_time(rec.get("start")), tz)
                end = _instant(parse_time(rec.get("end")), tz)
                ivs.append(Interval(start, end, parse_price(rec.get("price"))))
            except ValueError as exc:
                errors.append(f"{source}: intervals[{i}]: {exc}")
    elif "prices" in obj:
        try:
            start = _instant(parse_time(obj.get("start")), tz)
            res = obj.get("resolution_s")
            if isinstance(res, bool) or not isinstance(res, int) or res <= 0:
                raise ValueError(f"resolution_s {res!r} is not a positive whole number of seconds")
        except ValueError as exc:
            raise PriceError([f"{source}: {exc}"]) from None
        prices = obj["prices"]
        if not isinstance(prices, list) or not prices:
            raise PriceError([f"{source}: 'prices' must be a non-empty list"])
        step = dt.timedelta(seconds=res)
        for i, p in enumerate(prices):
            try:
                ivs.append(Interval(start + i * step, start + (i + 1) * step, parse_price(p)))
            except ValueError as exc:
                errors.append(f"{source}: prices[{i}]: {exc}")
    else:
        raise PriceError([f"{source}: a signal needs 'intervals' or 'start'/'resolution_s'/'prices'"])
    if errors:
        raise PriceError(errors)
    return Signal(str(market), ivs)


def _instant(t: dt.datetime, tz: ZoneInfo) -> dt.datetime:
    if t.tzinfo is None:
        if not _exists(t, tz):
            raise ValueError(f"local time {t.isoformat()} does not exist in {tz.key}")
        if _ambiguous(t, tz):
            raise ValueError(f"local time {t.isoformat()} is ambiguous in {tz.key}: send an offset")
        t = t.replace(tzinfo=tz)
    return t.astimezone(UTC)


class CurveStore:
    """The last valid curve of each market, keyed by interval start and compared by content.

    ``apply`` replaces whatever the store holds over the span a valid signal covers. Applying the same
    signal again changes nothing and does not bump ``revision``.
    """

    def __init__(self) -> None:
        self.curves: dict[str, dict[dt.datetime, Interval]] = {m: {} for m in MARKETS}
        self.revision = 0

    def apply(self, market: str, curve: Sequence[Interval]) -> tuple[int, int]:
        """Store a validated, sorted curve; returns (new, revised) interval counts."""
        if not curve:
            return 0, 0
        d = self.curves[market]
        lo, hi = curve[0].start, curve[-1].end
        old = {k: iv for k, iv in d.items() if iv.start < hi and iv.end > lo}
        new = {iv.start: iv for iv in curve}
        if old == new:
            return 0, 0
        for k in old:
            del d[k]
        d.update(new)
        self.revision += 1
        added = sum(1 for k in new if k not in old)
        return added, len(new) - added

    def prune(self, before: dt.datetime) -> None:
        for d in self.curves.values():
            for k in [k for k, iv in d.items() if iv.end <= before]:
                del d[k]

    def window(self, market: str, after: dt.datetime) -> list[Interval]:
        return sorted((iv for iv in self.curves[market].values() if iv.end > after), key=lambda iv: iv.start)

    def at(self, market: str, t: dt.datetime) -> Interval | None:
        for iv in self.curves[market].values():
            if iv.start <= t < iv.end:
                return iv
        return None


def curve_json(curve: Iterable[Interval]) -> list[dict[str, Any]]:
    return [iv.as_json() for iv in curve]
