"""Reading the backtest's inputs: a price CSV and a scenario YAML, with errors that name file and line."""

from __future__ import annotations

import csv
import datetime as dt
import math
from pathlib import Path

from programs.planner.scenario import PriceSeries, Scenario


class DataError(Exception):
    """A price or scenario file that cannot be used; the message names file, line and column."""


def load_prices(path: str | Path) -> PriceSeries:
    import numpy as np

    path = Path(path)
    try:
        fh = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    with fh:
        rows = csv.reader(fh)
        header = next(rows, None)
        if not header or header[:2] != ["time", "price"]:
            raise DataError(f"{path}:1: expected a header starting with time,price; got {header}")
        times: list[dt.datetime] = []
        cols: list[list[float]] = [[] for _ in header[1:]]
        for line, row in enumerate(rows, start=2):
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
            if times and t < times[-1] - dt.timedelta(hours=1):  # a repeated DST hour is still a row
                raise DataError(f"{path}:{line}: time: {row[0]} does not follow {times[-1].isoformat()}")
            times.append(t)
            for j, v in enumerate(row[1:]):
                try:
                    x = float(v)
                except ValueError:
                    raise DataError(f"{path}:{line}: {header[j + 1]}: not a number: {v!r}") from None
                if not math.isfinite(x):
                    raise DataError(f"{path}:{line}: {header[j + 1]}: not finite: {v!r}")
                cols[j].append(x)
    if len(times) < 2:
        raise DataError(f"{path}: fewer than two price rows")
    step_s = int((times[1] - times[0]).total_seconds())
    return PriceSeries(
        tuple(times), np.asarray(cols[0]), {name: np.asarray(c) for name, c in zip(header[2:], cols[1:])}, step_s
    )


def load_scenario(path: str | Path) -> Scenario:
    from runtime.yamlload import load_yaml, validate

    doc = load_yaml(path)
    return validate(Scenario, doc.data, doc)
