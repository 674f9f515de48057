"""Scan lateness of the bundled site with OCPP traffic and without, each beside a bare loop (issue 8).

    python -m tests.bench.bench_ocpp_lateness [--seconds 60] [--rounds 2] [--tx-interval 1] [--json FILE]

Each run is the bundled site (``make run``'s, on free ports: tests/runtime/helpers.py bundled_site_copy)
in real time with ``--record``; its recording carries every cycle's ``runtime.lateness``. "ocpp" runs keep
the ocpp task, talking to the demo CSMS the virtual plant serves, with the EV plugged in from t=0 (a
transaction, TransactionEvent Updated with sampled meter values every ``--tx-interval`` s: the
SampledDataCtrlr.TxUpdatedInterval); "none" runs remove the ocpp task and nothing else. Beside every run,
started once the runtime scans and stopped with it, a bare absolute-deadline loop in a process of its
own (tests/bench/bench_scan.py ``bare_loop``: the runtime's pacing code and nothing else, at the site's
period and real-time priority) sees the same minute of the same machine. The two variants alternate
round by round, so slow drift of the shared machine's load falls on both. Compare the ratios
runtime/bare between the variants, not absolute figures: the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from runtime.iothread import control_request
from tests.bench.bench_scan import pct
from tests.runtime.helpers import bundled_site_copy

ROOT = Path(__file__).resolve().parents[2]
WARMUP_CYCLES = 50  # start-up cycles (building, first connections) are left out of the runtime's figures


def site_for(tmp: Path, ocpp: bool, tx_interval: int) -> tuple[Path, dict[str, Any]]:
    """The bundled site's copy, with the ocpp task sampling every ``tx_interval`` s, or without it."""
    path = bundled_site_copy(tmp)
    site = yaml.safe_load(path.read_text())
    tasks = [t for t in site["tasks"] if ocpp or t["type"] != "ocpp"]
    for t in tasks:
        if t["type"] == "ocpp":
            t["params"].setdefault("variables", {})["TxUpdatedInterval"] = tx_interval
    site["tasks"] = tasks
    if not ocpp:  # the safety layer's back-office inputs go with the task (without them: the local plan only)
        for s in site["safety"]:
            s["params"].get("limits", {}).pop("external", None)
            s["params"].pop("comms", None)
    path.write_text(yaml.safe_dump(site, sort_keys=False))
    return path, site


def summary(late_ms: list[float]) -> dict[str, float]:
    return {
        "cycles": len(late_ms),
        "p50_ms": round(pct(late_ms, 0.5), 4),
        "p99_ms": round(pct(late_ms, 0.99), 3),
        "max_ms": round(max(late_ms, default=float("nan")), 3),
    }


def run_beside_bare(
    tmp: Path, site: Path, conf: dict[str, Any], seconds: float, beside: Callable[[], None] | None = None
) -> tuple[list[float], dict[str, Any], str]:
    """One runtime of ``site`` and, beside it, the bare loop for the same ``seconds`` (``beside`` is called
    once the runtime is past warm-up, just before the bare loop starts: a load that runs in that window).
    Returns the runtime's lateness past warm-up (ms), the bare loop's figures and the runtime's stderr."""
    period_ms = float(conf["scan"]["period_ms"])
    rt = conf["scan"].get("realtime_priority")
    sock, rec = tmp / "var" / "control.sock", tmp / "rec.jsonl"
    cmd = [sys.executable, "-m", "runtime.cli", "run", str(site), "--no-watch", "--for", str(seconds + 300)]
    log = tmp / "stderr.log"  # a file, not a pipe: a full pipe would block the runtime's logging
    with log.open("w") as errf:
        proc = subprocess.Popen([*cmd, "--record", str(rec)], cwd=ROOT, stderr=errf)
    try:
        deadline = time.monotonic() + 90
        while True:  # the runtime's first cycles past warm-up (a benchmark's own polling, bounded)
            try:
                if control_request(sock, {"cmd": "status"}, timeout=5).get("k", -1) >= WARMUP_CYCLES:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the runtime did not start")
            time.sleep(0.1)
        if beside is not None:
            beside()
        bare_cmd = [sys.executable, "-m", "tests.bench.bench_scan", "--bare", str(period_ms), "--seconds", str(seconds)]
        bare = subprocess.run(
            bare_cmd + (["--rt", str(rt)] if rt else []),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=seconds + 120,
        )
        bare_out = json.loads(bare.stdout)
    finally:
        proc.send_signal(signal.SIGTERM)  # a clean stop closes the recording
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    err = log.read_text()
    late_ms: list[float] = []
    for line in rec.read_text().splitlines():
        f = json.loads(line)
        v = f["tags"].get("runtime.lateness")
        if f["k"] > WARMUP_CYCLES and isinstance(v, (int, float)):
            late_ms.append(float(v) * 1e3)
    return late_ms, bare_out, err


def bare_summary(bare_out: dict[str, Any]) -> dict[str, float]:
    return {
        "cycles": bare_out["cycles"],
        "p50_ms": round(bare_out["p50"], 4),
        "p99_ms": round(bare_out["p99"], 3),
        "max_ms": round(bare_out["max"], 3),
    }


def one_run(tmp: Path, ocpp: bool, seconds: float, tx_interval: int) -> dict[str, Any]:
    """One runtime of the bundled site and, beside it, the bare loop for the same ``seconds``."""
    site, conf = site_for(tmp, ocpp, tx_interval)
    late_ms, bare_out, err = run_beside_bare(tmp, site, conf, seconds)
    period_ms = float(conf["scan"]["period_ms"])
    rt_sum = summary(late_ms)
    return {
        "variant": "ocpp" if ocpp else "none",
        "period_ms": period_ms,
        "runtime": rt_sum,
        "overruns": sum(1 for x in late_ms if x > period_ms),
        "realtime_priority": conf["scan"].get("realtime_priority"),
        "bare": bare_summary(bare_out),
        "p99_ratio": round(rt_sum["p99_ms"] / bare_out["p99"], 2) if bare_out["p99"] > 0 else None,
        "ocpp_connected": "connected to" in err if ocpp else None,
        "transaction_events": err.count(" transaction ") if ocpp else 0,  # the demo CSMS logs each one it takes
    }


def alternate(rounds: int, run: Callable[[Path, bool], dict[str, Any]]) -> list[dict[str, Any]]:
    """``run(tmp, variant)`` for both variants each round, alternating which goes first, so that slow
    drift of a shared machine's load falls on both; each result printed as it comes."""
    runs = []
    for r in range(rounds):
        for variant in (True, False) if r % 2 == 0 else (False, True):
            with tempfile.TemporaryDirectory() as d:
                res = run(Path(d), variant)
            print(json.dumps(res), flush=True)
            runs.append(res)
    return runs


def measure(seconds: float, rounds: int, tx_interval: int) -> list[dict[str, Any]]:
    return alternate(rounds, lambda tmp, ocpp: one_run(tmp, ocpp, seconds, tx_interval))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.bench.bench_ocpp_lateness")
    ap.add_argument("--seconds", type=float, default=60.0, help="measured seconds per run")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of one run per variant")
    ap.add_argument("--tx-interval", type=int, default=1, help="SampledDataCtrlr.TxUpdatedInterval, s")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    runs = measure(a.seconds, a.rounds, a.tx_interval)
    print("variant | runtime p50 / p99 / max ms | overruns | bare p50 / p99 / max ms | p99 ratio | TransactionEvents")
    for r in runs:
        rs, b = r["runtime"], r["bare"]
        print(
            f"{r['variant']} | {rs['p50_ms']} / {rs['p99_ms']} / {rs['max_ms']} | {r['overruns']} | "
            f"{b['p50_ms']} / {b['p99_ms']} / {b['max_ms']} | {r['p99_ratio']} | {r['transaction_events']}"
        )
    if a.json:
        a.json.write_text(json.dumps(runs, indent=1) + "\n")
    return (
        0
        if all(r["ocpp_connected"] is not False and (r["variant"] == "none" or r["transaction_events"]) for r in runs)
        else 1
    )


if __name__ == "__main__":
    sys.exit(main())
