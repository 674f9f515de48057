"""Reading the backtest's inputs: a price CSV and a scenario YAML, with errors that name file and line.

A price file is ``time,price[,forecast columns...]``: naive local market times (the interval starts) on
a regular grid, whose step the first two rows fix (3600, 900 or 300 s). Every row must be the previous
one plus the step. The one exception is daylight saving time, which moves local clocks by one hour on a
Sunday between 00:00 and 04:00 (every EU and US market): there a row may be one hour earlier than
expected (the repeated hour of a 25-hour day: 100 quarter-hours) or one hour later (the skipped hour of
a 23-hour day: 92 quarter-hours). Anything else (a duplicated or conflicting time, a file in reverse,
a gap of minutes or days) is an error naming the line, never something repaired silently. Prices must be
finite and within +-``MAX_ABS_PRICE``; the file must be UTF-8.

A mixed series (hourly history, then the 15-minute products the European day-ahead market has cleared
since October 2025) is read on the finer grid from the row where it starts: each earlier row becomes
``step / finer`` rows of its own price, which is how an hourly product settles each of its quarter-hours.
The step may only get finer, and only to one that divides it.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
from pathlib import Path
from typing import TYPE_CHECKING

from programs.planner.scenario import PriceSeries, Scenario

if TYPE_CHECKING:
    import numpy as np

# Per MWh. Above every market's price cap (SDAC +4000 EUR, ERCOT 5000 USD, the Australian NEM's about
# 17,500 AUD) with room to spare; beyond it a price is corrupt data, and its products overflow the cost.
MAX_ABS_PRICE = 1e5
DST_SHIFT = dt.timedelta(hours=1)
ZERO = dt.timedelta(0)


class DataError(Exception):
    """A price or scenario file that cannot be used; the message names file, line and column."""


def _text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(f"{path}:{line}: not UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})") from None


def _dst_shift(expected: dt.datetime, got: dt.datetime) -> bool:
    """``got`` is ``expected`` moved by a daylight-saving change (Sunday, 00:00-04:00 local)."""
    return abs(got - expected) == DST_SHIFT and expected.weekday() == 6 and min(expected, got).hour < 4


def _number(path: Path, line: int, column: str, v: str) -> float:
    try:
        x = float(v)
    except ValueError:
        raise DataError(f"{path}:{line}: {column}: not a number: {v!r}") from None
    if not math.isfinite(x):
        raise DataError(f"{path}:{line}: {column}: not finite: {v!r}")
    if abs(x) > MAX_ABS_PRICE:
        raise DataError(f"{path}:{line}: {column}: {v} is beyond +-{MAX_ABS_PRICE:g} per MWh (corrupt data?)")
    return x


def _refine(
    times: list[dt.datetime], lines: list[int], cols: list[list[str]], step: dt.timedelta, finer: dt.timedelta
) -> None:
    """Rows before the last, of length ``step``, as ``step/finer`` rows of ``finer`` with the same price:
    an hourly product's price applies to each of its quarter-hours, so the cost is unchanged."""
    k = step // finer
    last = len(times) - 1
    times[:last] = [t + i * finer for t in times[:last] for i in range(k)]
    lines[:last] = [n for n in lines[:last] for _ in range(k)]
    for c in cols:
        c[:last] = [x for x in c[:last] for _ in range(k)]


def load_prices(path: str | Path) -> PriceSeries:
    path = Path(path)
    rows = csv.reader(io.StringIO(_text(path), newline=""))
    try:
        header = next(rows, None)
        if not header or header[:2] != ["time", "price"]:
            raise DataError(f"{path}:1: expected a header starting with time,price; got {header}")
        times: list[dt.datetime] = []
        lines: list[int] = []
        cols: list[list[str]] = [[] for _ in header[1:]]  # as read; numbers checked per column
        step: dt.timedelta | None = None
        try:
            for row in rows:
                line = rows.line_num
                if not row:
                    continue
                if len(row) != len(header):
                    raise DataError(f"{path}:{line}: expected {len(header)} columns, got {len(row)}")
                try:
                    t = dt.datetime.fromisoformat(row[0])
                except ValueError:
                    raise DataError(f"{path}:{line}: time: not an ISO 8601 time: {row[0]!r}") from None
                if t.tzinfo is not None:
                    raise DataError(f"{path}:{line}: time: expected naive local market time, got offset {row[0]!r}")
                if times:
                    if step is None:
                        step = t - times[-1]
                        if step <= ZERO or step > dt.timedelta(days=1) or 86400 % step.total_seconds():
                            why = "repeats" if step == ZERO else "does not follow"
                            raise DataError(
                                f"{path}:{line}: time: {row[0]} {why} {times[-1].isoformat()} (line {lines[-1]}); "
                                "rows go forward in time by one interval (a step that divides a day)"
                            )
                    finer = t - times[-1]
                    if finer == step:  # the row follows by one step: the common case, nothing to check
                        pass
                    elif (
                        len(times) >= 2
                        and ZERO < finer < step
                        and step % finer == ZERO
                        and times[-1] - times[-2] in (step, step - DST_SHIFT, step + DST_SHIFT)
                    ):
                        # a mixed series: the market moved to a finer grid with the previous row (hourly
                        # history, then quarter-hours): every earlier row becomes step/finer rows of its price
                        _refine(times, lines, cols, step, finer)
                        step = finer
                    elif not _dst_shift(expected := times[-1] + step, t):
                        if t in times[-4 * 24 * 12 :]:
                            why = f"repeats line {lines[times.index(t)]}"
                        elif t < expected:
                            why = f"goes back from {times[-1].isoformat()} (line {lines[-1]})"
                        else:
                            why = f"leaves a gap of {t - expected} after {times[-1].isoformat()} (line {lines[-1]})"
                        raise DataError(f"{path}:{line}: time: {row[0]} {why}; expected {expected.isoformat()}")
                times.append(t)
                lines.append(line)
                for j, v in enumerate(row[1:]):
                    cols[j].append(v)
        except (DataError, csv.Error):
            _numbers(path, header, lines, cols)  # a bad number on an earlier line is named first
            raise
    except csv.Error as exc:
        raise DataError(f"{path}:{rows.line_num}: not a CSV row: {exc}") from None
    if len(times) < 2 or step is None:
        raise DataError(f"{path}: fewer than two price rows")
    values = _numbers(path, header, lines, cols)
    return PriceSeries(tuple(times), values[0], dict(zip(header[2:], values[1:])), int(step.total_seconds()))


def _numbers(path: Path, header: list[str], lines: list[int], cols: list[list[str]]) -> list[np.ndarray]:
    """Every column's numbers, each checked as a whole (a two-year file has 50,000 of them). When one
    fails, the rows are walked in file order, so that ``_number`` names the first bad value by line and
    column, as reading row by row would."""
    import numpy as np

    out = []
    for raw in cols:
        try:
            x = np.array([float(v) for v in raw])
        except ValueError:
            break
        if not bool(np.all(np.abs(x) <= MAX_ABS_PRICE)):  # NaN and infinities fail the comparison too
            break
        out.append(x)
    else:
        return out
    for i, line in enumerate(lines):
        for name, raw in zip(header[1:], cols):
            _number(path, line, name, raw[i])
    raise AssertionError("a column failed as a whole but no value of it did")  # pragma: no cover


def load_scenario(path: str | Path) -> Scenario:
    from runtime.yamlload import load_yaml, validate

    doc = load_yaml(path)
    return validate(Scenario, doc.data, doc)
