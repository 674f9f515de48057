"""Online change: the scan's lateness while a reload is validated, against the same run's quiet cycles.

    python -m tests.bench.bench_online [--seconds 60] [--json FILE]

One runtime process (``v2g-plc run --no-watch --record``, 20 ms period, the safety layer and a memory
device) runs for ``--seconds``; the benchmark asks it for a reload every few seconds over the control
socket (polling its status every 20 ms all the time, so that both kinds of cycles see the same
control-socket traffic), each with a new revision (a comment changes, so the whole path runs: the validating child, the
comparison, the reconfigure command at a cycle boundary, the snapshot). Each reload's window runs from
the cycle at which it was asked to the cycle at which its outcome was read. The recording carries every
cycle's ``runtime.lateness``, so cycles inside the windows and outside them come from the same process in
the same minutes: compare the two, not absolute figures (the machine is shared and noisy).
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from runtime.iothread import control_request
from runtime.online.service import FINAL
from tests.runtime.test_online import site_text

ROOT = Path(__file__).resolve().parents[2]
PAUSE_S = 2.0  # quiet time between reloads
POLL_S = 0.02  # status polled this often, in the quiet time as during a reload: the same socket traffic


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))] if s else float("nan")


def summary(xs: list[float]) -> dict[str, float]:
    return {
        "cycles": len(xs),
        "p50_ms": round(pct(xs, 0.5) * 1e3, 3),
        "p99_ms": round(pct(xs, 0.99) * 1e3, 3),
        "max_ms": round(max(xs, default=float("nan")) * 1e3, 3),
    }


def worst(lateness: dict[int, float], a: int, b: int) -> str:
    """The latest cycle of a window: how late, and where in the window (cycle / cycles)."""
    k = max(range(a, b + 1), key=lambda k: lateness.get(k, 0.0))
    return f"{lateness.get(k, 0.0) * 1e3:.3f} ms at {k - a}/{b - a}"


def ask(sock: Path, req: dict[str, Any]) -> dict[str, Any]:
    return control_request(sock, req, timeout=5)


def measure(seconds: float, tmp: Path, rt: int | None = None) -> dict[str, Any]:
    site, sock, rec = tmp / "site.yaml", tmp / "var" / "control.sock", tmp / "in.jsonl"

    def text(n: int) -> str:
        t = site_text() + f"# revision {n}\n"
        return (
            t
            if rt is None
            else t.replace("overrun_fault_after: 50}", f"overrun_fault_after: 50, realtime_priority: {rt}}}")
        )

    site.write_text(text(0))
    cmd = [sys.executable, "-m", "runtime.cli", "run", str(site), "--no-watch", "--for", str(seconds + 120)]
    proc = subprocess.Popen([*cmd, "--record", str(rec)], cwd=ROOT, stderr=subprocess.DEVNULL)
    windows: list[tuple[int, int]] = []
    outcomes: dict[str, int] = {}
    try:
        deadline = time.monotonic() + 60
        while True:  # the runtime's first cycles (a benchmark's own polling, bounded)
            try:
                if ask(sock, {"cmd": "status"}).get("k", -1) >= 0:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the runtime did not start")
            time.sleep(0.1)
        end = time.monotonic() + seconds
        n = 0
        while time.monotonic() < end:
            quiet_end = time.monotonic() + PAUSE_S
            while time.monotonic() < quiet_end:  # the same control-socket traffic as during a reload
                ask(sock, {"cmd": "status"})
                time.sleep(POLL_S)
            n += 1
            site.write_text(text(n))
            k0 = ask(sock, {"cmd": "status"})["k"]
            rid = ask(sock, {"cmd": "reload", "by": "bench"})["reload"]
            while True:
                st = ask(sock, {"cmd": "status"})
                r = st.get("reload", {})
                if r.get("id", 0) >= rid and r.get("state") in FINAL:
                    break
                time.sleep(POLL_S)
            windows.append((k0, st["k"]))
            outcomes[r["state"]] = outcomes.get(r["state"], 0) + 1
    finally:
        proc.send_signal(signal.SIGTERM)  # a clean stop closes the recording
        proc.wait(timeout=60)
    lateness: dict[int, float] = {}
    for line in rec.read_text().splitlines():
        f = json.loads(line)
        v = f["tags"].get("runtime.lateness")
        if isinstance(v, (int, float)):
            lateness[f["k"]] = float(v)
    inside = {k for a, b in windows for k in range(a, b + 1)}
    during = [v for k, v in lateness.items() if k in inside]
    quiet = [v for k, v in lateness.items() if k not in inside and k > 50]  # past start-up
    return {
        "realtime_priority": rt,
        "reloads": len(windows),
        "outcomes": outcomes,
        "window_cycles_median": pct([b - a for a, b in windows], 0.5),
        "window_worst": [worst(lateness, a, b) for a, b in windows],
        "during_reload": summary(during),
        "quiet": summary(quiet),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.bench.bench_online")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--rt", type=int, help="scan.realtime_priority (SCHED_FIFO) of the measured runtime")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        out = measure(a.seconds, Path(d), a.rt)
    print(json.dumps(out, indent=1))
    if a.json:
        a.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0 if out["outcomes"].get("applied", 0) == out["reloads"] else 1


if __name__ == "__main__":
    sys.exit(main())
