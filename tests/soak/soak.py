"""Soak: the bundled site for a long simulated time, then for real time, watching memory, trips and events.

``python -m tests.soak.soak`` (``make soak``) runs two phases of the bundled site on free ports with a
private state directory, each a real ``v2g-plc run`` process tree (scan process, task process, virtual
plant):

1. ``--sim-hours`` simulated hours (default 24) at ``--speed`` (default 400: 216 s of real time);
2. ``--real-s`` real seconds (default 3600) at ``--speed 1``.

Every ``--sample-s`` real seconds it samples the RSS of every process (from /proc) and the control
socket's status (cycle, mode, trip, overruns). A phase fails on:

- memory growth: a process whose RSS at the end exceeds its RSS after warm-up (the first
  ``WARMUP_FRACTION`` of the phase) by more than ``GROWTH_MB`` MB + ``GROWTH_FRACTION`` of it;
- an overrun trip (an event ``trip`` with code ``overrun``);
- an event storm: more than ``STORM_PER_SIM_HOUR`` events in any simulated hour;
- the scan process exiting early or with a non-zero code.

Other trips are findings, listed in the result file (``--out``, JSON) and the summary but not failures:
they belong to the safety tests. Exit 0 when every phase passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tests.slow.bundled import copy_bundled_site, kill_tree, processes, read_events, rss_kb, start_site

WARMUP_FRACTION = 0.2  # imports, the first plan, caches: RSS is judged from here on
GROWTH_MB = 16.0  # absolute allowance per process (allocator noise, a late first use of a code path)
GROWTH_FRACTION = 0.10  # plus 10 % of the warm RSS
STORM_PER_SIM_HOUR = 360  # one event per 10 simulated seconds on average over an hour
STARTUP_S = 60.0  # a phase's run time is --for plus this, at most, before it counts as hung


def _status(sock: Path) -> dict[str, Any] | None:
    from runtime.iothread import control_request

    try:
        return control_request(sock, {"cmd": "status"})
    except (OSError, ValueError):
        return None


def run_phase(name: str, workdir: Path, speed: int, real_s: float, sample_s: float) -> dict[str, Any]:
    """One ``v2g-plc run`` of the bundled site for ``real_s`` seconds at ``speed``; samples and verdict."""
    workdir.mkdir(parents=True, exist_ok=True)
    site = copy_bundled_site(workdir / "site")
    state = workdir / "site" / "state"
    stats_file = workdir / "stats.json"
    log = workdir / "run.log"
    proc = start_site(site, "--speed", str(speed), "--for", str(real_s), "--stats-json", str(stats_file), log=log)
    samples: list[dict[str, Any]] = []
    t0 = time.monotonic()
    deadline = t0 + real_s + STARTUP_S
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            pids = processes(proc.pid)
            rss = {r: rss_kb(p) for r, p in pids.items()}
            samples.append(
                {"t": round(time.monotonic() - t0, 1), "rss_kb": rss, "status": _status(state / "control.sock")}
            )
            end = min(deadline, time.monotonic() + sample_s)
            while proc.poll() is None and time.monotonic() < end:
                time.sleep(0.2)  # poll interval of the sampler: a short sleep between /proc reads
    finally:
        hung = proc.poll() is None
        kill_tree(proc)
    wall = time.monotonic() - t0
    rc = proc.returncode
    events = read_events(state)
    stats = json.loads(stats_file.read_text()) if stats_file.exists() else None
    return judge(name, speed, real_s, wall, rc, hung, samples, events, stats)


def memory(samples: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per process: RSS (MB) after warm-up (median of the samples around that point) and at the end (median
    of the last three samples), and the growth allowed."""
    out: dict[str, dict[str, float]] = {}
    roles = sorted({r for s in samples for r, v in s["rss_kb"].items() if v})
    for r in roles:
        series = [s["rss_kb"].get(r) for s in samples]
        vals = [v / 1024 for v in series if v]
        if len(vals) < 4:
            continue
        w = int(len(vals) * WARMUP_FRACTION)
        warm = statistics.median(vals[w : w + 3])
        end = statistics.median(vals[-3:])
        out[r] = {
            "warm_mb": round(warm, 1),
            "end_mb": round(end, 1),
            "max_mb": round(max(vals), 1),
            "growth_mb": round(end - warm, 1),
            "allowed_mb": round(GROWTH_MB + GROWTH_FRACTION * warm, 1),
        }
    return out


def judge(
    name: str,
    speed: int,
    real_s: float,
    wall: float,
    rc: int | None,
    hung: bool,
    samples: list[dict[str, Any]],
    events: list[dict[str, Any]],
    stats: dict[str, Any] | None,
) -> dict[str, Any]:
    failures: list[str] = []
    if hung:
        failures.append(f"the run did not end within --for + {STARTUP_S:.0f} s")
    elif rc != 0:
        failures.append(f"v2g-plc run exited with {rc}")
    mem = memory(samples)
    for r, m in mem.items():
        if m["growth_mb"] > m["allowed_mb"]:
            failures.append(f"{r}: RSS grew {m['growth_mb']} MB after warm-up (allowed {m['allowed_mb']} MB)")
    trips = [e for e in events if e.get("kind") == "trip"]
    trip_codes = Counter(str((e.get("data") or {}).get("code", "?")) for e in trips)
    if trip_codes.get("overrun"):
        failures.append(f"overrun trip {trip_codes['overrun']} time(s)")
    per_hour = Counter(int(e["t"] // 3600) for e in events)
    kinds = Counter(str(e.get("kind")) for e in events)
    worst = max(per_hour.values(), default=0)
    if worst > STORM_PER_SIM_HOUR:
        hour = max(per_hour, key=lambda h: per_hour[h])
        top = Counter(str(e.get("kind")) for e in events if int(e["t"] // 3600) == hour).most_common(3)
        failures.append(f"event storm: {worst} events in simulated hour {hour} (bound {STORM_PER_SIM_HOUR}; {top})")
    sim_s = max((e["t"] for e in events), default=0.0)
    last = next((s["status"] for s in reversed(samples) if s["status"]), None)
    return {
        "phase": name,
        "speed": speed,
        "for_s": real_s,
        "wall_s": round(wall, 1),
        "exit_code": rc,
        "samples": len(samples),
        "last_status": last,
        "simulated_s_last_event": sim_s,
        "memory": mem,
        "events": len(events),
        "events_by_kind": dict(kinds.most_common()),
        "events_max_per_sim_hour": worst,
        "trips": dict(trip_codes),
        "trip_messages": [e.get("message") for e in trips[:20]],
        "stats": stats,
        "bounds": {
            "growth_mb": GROWTH_MB,
            "growth_fraction": GROWTH_FRACTION,
            "events_per_sim_hour": STORM_PER_SIM_HOUR,
        },
        "failures": failures,
        "ok": not failures,
    }


def summary(r: dict[str, Any]) -> str:
    st = r["stats"] or {}
    lines = [
        f"{r['phase']}: speed x{r['speed']}, {r['wall_s']} s wall, exit {r['exit_code']}, "
        f"{st.get('cycles', '?')} cycles, overruns {st.get('overruns', '?')}, "
        f"lateness p99 {st.get('lateness_ms', {}).get('p99', '?')} ms max {st.get('lateness_ms', {}).get('max', '?')} ms",
        "  RSS MB (warm -> end, max): "
        + ", ".join(f"{k} {m['warm_mb']} -> {m['end_mb']} ({m['max_mb']})" for k, m in r["memory"].items()),
        f"  events {r['events']} (max {r['events_max_per_sim_hour']} per simulated hour), trips {r['trips']}",
        "  " + ("PASS" if r["ok"] else "FAIL: " + "; ".join(r["failures"])),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.soak.soak", description=__doc__.split("\n")[0])
    ap.add_argument("--sim-hours", type=float, default=24.0, help="simulated hours of the fast phase (0: skip)")
    ap.add_argument("--speed", type=int, default=400, help="speed of the fast phase")
    ap.add_argument("--real-s", type=float, default=3600.0, help="real seconds at --speed 1 (0: skip)")
    ap.add_argument("--sample-s", type=float, default=5.0, help="real seconds between samples")
    ap.add_argument("--out", type=Path, default=Path("var/soak/result.json"), help="result file (JSON)")
    ap.add_argument("--workdir", type=Path, help="keep the runs here (default: a temporary directory)")
    a = ap.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="v2g-soak-") as tmp:
        work = a.workdir or Path(tmp)
        if a.sim_hours > 0:
            real = a.sim_hours * 3600 / a.speed
            results.append(run_phase("simulated", work / "simulated", a.speed, real, a.sample_s))
            print(summary(results[-1]), flush=True)
        if a.real_s > 0:
            results.append(run_phase("real", work / "real", 1, a.real_s, a.sample_s))
            print(summary(results[-1]), flush=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    ok = all(r["ok"] for r in results)
    a.out.write_text(json.dumps({"ok": ok, "phases": results}, indent=1, default=str) + "\n")
    print(f"result: {a.out} ({'PASS' if ok else 'FAIL'})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
