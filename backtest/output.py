"""The backtest's outputs besides its JSON summary: the trace CSV and a one-week plot."""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

from backtest.data import DataError
from backtest.run import Run
from programs.planner.scenario import PriceSeries


def write_trace(path: str | Path, series: PriceSeries, run: Run) -> None:
    """``time,grid_kw,soc``: one row per price row; SoC at the END of the row (the scenario's format)."""
    with Path(path).open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["time", "grid_kw", "soc"])
        for t, p, s in zip(series.times, run.grid_kw, run.soc):
            w.writerow([t.isoformat(), f"{p:.9g}", f"{s:.9g}"])


def plot_week(path: str | Path, week: dt.date, series: PriceSeries, run: Run, unit: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    start = dt.datetime.combine(week, dt.time())
    rows = [i for i, t in enumerate(series.times) if start <= t < start + dt.timedelta(days=7)]
    if not rows:
        raise DataError(f"--week {week}: no price rows in that week")
    ts = [series.times[i] for i in rows]
    fig, (ax1, ax2, ax3) = plt.subplots(3, 1, sharex=True, figsize=(11, 7))
    ax1.step(ts, series.price[rows], where="post", color="tab:gray")
    ax1.set_ylabel(f"price ({unit})")
    ax2.bar(
        ts,
        run.grid_kw[rows],
        width=series.step_s / 86400,
        align="edge",
        color=["tab:green" if p >= 0 else "tab:red" for p in run.grid_kw[rows]],
    )
    ax2.axhline(0, color="black", lw=0.5)
    ax2.set_ylabel("grid kW (+ charge)")
    ends = [t + dt.timedelta(seconds=series.step_s) for t in ts]
    ax3.plot(ends, run.soc[rows], color="tab:blue")
    ax3.set_ylabel("SoC (end of interval)")
    ax3.set_ylim(0, 1)
    fig.suptitle(f"{run.strategy}: week of {week.isoformat()}")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
