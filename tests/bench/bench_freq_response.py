"""Frequency-watt response on the live plant, and what the curve costs the scan (issue 9).

    python -m tests.bench.bench_freq_response [--steps 200] [--interval 0.5] [--phases 10] [--phase-s 3]
                                              [--json FILE]

One live ``v2g-plc run`` of the bundled site (``make run``'s, on free ports: tests/runtime/helpers.py
bundled_site_copy) in real time, with its virtual plant in a process of its own as always (this module's
``--plant`` mode: runtime/sim's own entry point, ``python -m runtime.sim``, with two probes on the plant
and nothing else changed), the demo CSMS the plant serves, and a recording of the inputs and outputs.

1. **Response.** The operator asks for frequency response over the control socket (``mode_request``
   ``frequency``, the curve below, baseline 1000 W: the request a CentralFrequency/LocalFrequency profile
   becomes, docs/ocpp.md). Then the plant steps ``grid.frequency`` ``--steps`` times, every ``--interval``
   s, as scenario events (armed once the runtime is in frequency mode, so no step falls into start-up).
   Measured per step, on the one monotonic clock of the machine: from the plant's step (the scenario event
   sets the frequency; the registers show it to the next read) to the plant's write of the inverter's set
   point register with the curve's value at the new frequency. In scan cycles: from the first cycle whose
   input frame holds the new frequency to the first cycle whose committed ``inverter.setpoint`` has the new
   value (the recording's own frame numbers), and the whole delay divided by the scan period.
2. **Scan compute time.** In the same run, once the steps are over (the frequency back at 60 Hz, inside
   the dead band), the operator's request alternates ``--phases`` times between ``frequency`` (the curve
   evaluated every cycle) and ``remote`` at the same 1000 W (no curve): the same outputs, the same I/O, the
   frequency-watt path the only difference. ``runtime.cycle_time`` (compute time of each cycle, from the
   recording) is grouped by the mode the cycle ran in; the ratio of medians is the cost of the curve.

The machine is shared: the figures are medians and ratios, and the load average is printed beside them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

import yaml

from runtime.iothread import control_request
from tests.bench.bench_scan import pct
from tests.runtime.helpers import bundled_site_copy

ROOT = Path(__file__).resolve().parents[2]
BASELINE_W = 1000.0
# IEEE 1547-2018 Table 24's default dead band (0.036 Hz) around 60 Hz, 6 kW at +-0.5 Hz: the curve a
# CentralFrequency profile would carry in v2xFreqWattCurve, as [hz, W].
CURVE = [[59.5, -6000.0], [59.964, 0.0], [60.036, 0.0], [60.5, 6000.0]]
# Steps inside IEEE 1547 Category III continuous operation, each one moving the set point, none larger than
# 0.2 Hz: over the safety layer's 0.1 s ROCOF window that is at most 2 Hz/s, inside the Category III ROCOF
# ride-through (3 Hz/s, IEEE 1547-2018 Table 21), so no step is an islanding event (a 0.5 Hz step is: it
# tripped the ROCOF protection now and then, depending on when the reads fell).
STEPS_HZ = (59.8, 60.0, 60.2, 60.0, 59.9, 59.7, 59.9, 60.1, 60.3, 60.1, 60.0)
TOL_W = 2.0  # the SunSpec WSet register holds whole watts


def curve_w(hz: float) -> float:
    """The curve's value, as the scan computes it (programs/freqwatt.py), plus the baseline."""
    from programs.freqwatt import curve_w as cw

    return BASELINE_W + cw(tuple((a, b) for a, b in CURVE), hz)


# -- the plant, with its two probes ----------------------------------------------------------------
def plant_main(site: str, trace_path: str, steps: int, interval: float) -> int:
    """``python -m runtime.sim --site SITE`` with two probes on its plant: each step of grid.frequency and
    each new value written into the inverter's set point register go to ``trace_path`` with the monotonic
    time. The step events are added to the scenario on SIGUSR1 (from 1 s after it on)."""
    import runtime.sim.__main__ as sim_main
    from runtime.sim.config import load_plant
    from runtime.sim.server import ScenarioEvent, VirtualPlant

    trace: IO[str] = open(trace_path, "w", buffering=1)  # noqa: SIM115 - open for the process's life

    def traced(site: str | Path) -> VirtualPlant:
        vp = load_plant(site)
        p = vp.plant
        set_, command = p.set, p.command
        last: list[float | None] = [None]

        def probe_set(name: str, to: float, ramp_s: float = 0.0) -> None:
            set_(name, to, ramp_s)
            if name == "grid.frequency":
                trace.write(json.dumps({"ns": time.monotonic_ns(), "hz": to}) + "\n")

        def probe_command(tag: str, value: Any) -> None:
            command(tag, value)
            if tag == "inverter.setpoint" and float(value) != last[0]:
                last[0] = float(value)
                trace.write(json.dumps({"ns": time.monotonic_ns(), "w": float(value)}) + "\n")

        p.set, p.command = probe_set, probe_command  # type: ignore[method-assign]

        def arm() -> None:
            t0 = vp.t + 1.0
            hz = [STEPS_HZ[i % len(STEPS_HZ)] for i in range(steps)]
            hz += [60.0] if hz[-1] != 60.0 else []  # back to nominal for the compute-time part
            new = [ScenarioEvent(t=t0 + i * interval, set="grid.frequency", to=f) for i, f in enumerate(hz)]
            vp.events = sorted(vp.events + new, key=lambda e: e.t)  # all fired ones are earlier: _next holds

        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, arm)
        return vp

    sim_main.load_plant = traced
    return sim_main.main(["--site", site, "--speed", "1"])


# -- the run ----------------------------------------------------------------------------------------
def site_for(tmp: Path) -> tuple[Path, dict[str, Any]]:
    """The bundled site; its plant steady (no scenario: only the steps this benchmark arms)."""
    path = bundled_site_copy(tmp)
    site = yaml.safe_load(path.read_text())
    plant = site["plant"]["params"]
    plant.pop("scenario", None)
    plant["events"] = []
    plant["step_s"] = 0.005  # the plant's clock moves in 5 ms steps: when a step happens, not when it is seen
    site["task_process"] = {"heartbeat_s": 30.0}  # a slow import on a loaded machine is not a hang
    # The back office (its link is what the safety layer's supervision asks of a frequency mode) and the
    # planner with its prices (the mode machine and dispatch read the plan); not the local API or the HMI:
    # they touch neither the frequency path nor the scan's work, and a task process that imports them all
    # took longer than the 20 s start-up grace on a machine at a load average of 30, again and again
    # (task_process.startup_grace_s, now 60 s by default).
    site["tasks"] = [t for t in site["tasks"] if t["type"] in ("ocpp", "planner", "prices_csv")]
    for s in site["safety"]:  # in service at once: IEEE 1547-2018 Table 39 allows a 0-600 s delay, 1-1000 s ramp
        if s["type"] == "v2g_safety":  # (the default 300 s delay restarts whenever a step leaves 59.5-60.1 Hz)
            s["params"]["enter_service"] = {"delay_s": 0.0, "ramp_s": 1.0}
    path.write_text(yaml.safe_dump(site, sort_keys=False))
    return path, site


def ask(sock: Path, **req: Any) -> None:
    reply = control_request(sock, {"cmd": "mode_request", "by": "bench_freq_response", "expiry_s": 3600, **req})
    if not reply.get("ok"):
        raise RuntimeError(f"mode request refused: {reply}")


def read(sock: Path, name: str) -> Any:
    try:
        t = control_request(sock, {"cmd": "read", "tags": [name]}, timeout=5).get("tags", {}).get(name)
    except OSError:
        return None
    return None if not t else t.get("value")


def wait(what: str, pred: Any, timeout: float, alive: subprocess.Popen[Any]) -> None:
    """Poll with a bounded deadline (a benchmark's own waiting; no sleep stands for a condition)."""
    end = time.monotonic() + timeout
    while not pred():
        if alive.poll() is not None:
            raise RuntimeError(f"{what}: the runtime exited ({alive.returncode})")
        if time.monotonic() > end:
            raise RuntimeError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.05)


def run(tmp: Path, steps: int, interval: float, phases: int, phase_s: float) -> dict[str, Any]:
    site, conf = site_for(tmp)
    sock, rec, out, trace = tmp / "var" / "control.sock", tmp / "rec.jsonl", tmp / "out.jsonl", tmp / "trace.jsonl"
    plant = subprocess.Popen(
        [sys.executable, "-m", "tests.bench.bench_freq_response", "--plant", str(site), "--trace", str(trace),
         "--steps", str(steps), "--interval", str(interval)],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    runtime: subprocess.Popen[Any] | None = None
    try:
        assert plant.stdout is not None
        if plant.stdout.readline().strip() != "READY":
            raise RuntimeError("the plant did not start")
        with (tmp / "stderr.log").open("w") as errf:
            runtime = subprocess.Popen(
                [sys.executable, "-m", "runtime.cli", "run", str(site), "--no-plant", "--no-watch",
                 "--record", str(rec), "--record-outputs", str(out)],
                cwd=ROOT, stderr=errf,
            )  # fmt: skip
        rt = runtime
        wait("the back office accepted", lambda: read(sock, "ocpp.accepted") is True, 240, rt)
        ask(sock, mode="frequency", curve=CURVE, baseline_w=BASELINE_W)
        wait("frequency mode", lambda: read(sock, "mode.state") == "frequency", 60, rt)
        wait("the baseline at the inverter", lambda: read(sock, "inverter.setpoint") == BASELINE_W, 60, rt)
        load_before = os.getloadavg()
        plant.send_signal(signal.SIGUSR1)
        armed = time.monotonic()
        wait("the steps", lambda: time.monotonic() > armed + 2.0 + (steps + 1) * interval, 3600, rt)
        # part 2: frequency and remote at the same power, alternating (frequency held at 60 Hz)
        bounds: list[tuple[str, float]] = []
        for i in range(2 * phases):
            mode = "frequency" if i % 2 else "remote"
            if mode == "remote":
                ask(sock, mode="remote", setpoint_w=BASELINE_W)
            else:
                ask(sock, mode="frequency", curve=CURVE, baseline_w=BASELINE_W)
            wait(mode, lambda mode=mode: read(sock, "mode.state") == mode, 30, rt)
            start = time.monotonic()
            wait(f"{mode} phase", lambda start=start: time.monotonic() > start + phase_s, phase_s + 60, rt)
            bounds.append((mode, phase_s))
        load_after = os.getloadavg()
    finally:
        if runtime is not None:
            runtime.send_signal(signal.SIGTERM)  # a clean stop closes the recordings
            try:
                runtime.wait(timeout=60)
            except subprocess.TimeoutExpired:
                runtime.kill()
                runtime.wait(timeout=10)
        plant.send_signal(signal.SIGTERM)
        try:
            plant.wait(timeout=30)
        except subprocess.TimeoutExpired:
            plant.kill()
            plant.wait(timeout=10)
    res = analyse(trace, rec, out, float(conf["scan"]["period_ms"]))
    res["load_avg_1m"] = [round(load_before[0], 1), round(load_after[0], 1)]
    res["cpus"] = os.cpu_count()
    return res


# -- the figures ------------------------------------------------------------------------------------
def jsonl(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            break  # a line cut by the stop
    return out


def response(trace: list[dict[str, Any]]) -> list[dict[str, float]]:
    """Per step: ms from the plant's step to the plant's write of the curve's value at the new frequency.
    A step whose value never arrives before the next step is counted as missed (``ms`` None)."""
    steps = [(i, r) for i, r in enumerate(trace) if "hz" in r]
    out = []
    for n, (i, s) in enumerate(steps):
        end = steps[n + 1][0] if n + 1 < len(steps) else len(trace)
        want = curve_w(s["hz"])
        hit = next((r for r in trace[i + 1 : end] if "w" in r and abs(r["w"] - want) <= TOL_W), None)
        out.append(
            {"hz": s["hz"], "want_w": round(want, 1), "ms": None if hit is None else (hit["ns"] - s["ns"]) / 1e6}
        )
    return out


def cycles(rec: list[dict[str, Any]], outs: list[dict[str, Any]]) -> list[int]:
    """Per frequency change in the input frames: cycles from the first frame with the new frequency to the
    first committed ``inverter.setpoint`` with the curve's value at it (0: the same scan)."""
    sp = {o["k"]: o["tags"].get("inverter.setpoint") for o in outs}
    ks = sorted(sp)
    res = []
    for f in rec:
        hz = f["tags"].get("grid.frequency")
        if not isinstance(hz, (int, float)) or round(hz, 3) not in STEPS_HZ or f["k"] not in sp:
            continue
        want = curve_w(round(hz, 3))
        later = (k for k in ks[ks.index(f["k"]) : ks.index(f["k"]) + 50])
        k = next((k for k in later if isinstance(sp[k], (int, float)) and abs(sp[k] - want) <= 0.5), None)
        if k is not None:
            res.append(k - f["k"])
    return res


def compute_times(rec: list[dict[str, Any]], outs: list[dict[str, Any]]) -> dict[str, list[float]]:
    """``runtime.cycle_time`` (frame k: the compute time of cycle k-1) by the mode cycle k-1 ran in; only
    the alternating part (from the first ``remote`` cycle on)."""
    state = {o["k"]: o.get("state") for o in outs}
    first_remote = min((k for k, s in state.items() if s == "remote"), default=None)
    by: dict[str, list[float]] = {"frequency": [], "remote": []}
    if first_remote is None:
        return by
    for f in rec:
        ct = f["tags"].get("runtime.cycle_time")
        s = state.get(f["k"] - 1)
        if f["k"] - 1 > first_remote and isinstance(ct, (int, float)) and s in by:
            by[s].append(float(ct) * 1e3)
    return by


def analyse(trace_path: Path, rec_path: Path, out_path: Path, period_ms: float) -> dict[str, Any]:
    per_step = response(jsonl(trace_path))
    got = [s["ms"] for s in per_step if s["ms"] is not None]
    rec, outs = jsonl(rec_path), jsonl(out_path)
    cyc = cycles(rec, outs)
    ct = compute_times(rec, outs)

    def fig(xs: list[float]) -> dict[str, float]:
        return {"n": len(xs), "p50": round(pct(xs, 0.5), 4), "p99": round(pct(xs, 0.99), 4), "max": round(max(xs), 4)}

    res: dict[str, Any] = {
        "period_ms": period_ms,
        "steps": len(per_step),
        "missed": len(per_step) - len(got),
        "step_to_write_ms": fig(got) if got else None,
        "step_to_write_periods": {"p50": round(pct(got, 0.5) / period_ms, 2), "max": round(max(got) / period_ms, 2)}
        if got
        else None,
        "scan_cycles_seen_to_committed": {str(c): cyc.count(c) for c in sorted(set(cyc))},
        "cycle_time_ms": {m: fig(xs) for m, xs in ct.items() if xs},
    }
    if ct["frequency"] and ct["remote"]:
        res["cycle_time_ratio_p50"] = round(statistics.median(ct["frequency"]) / statistics.median(ct["remote"]), 3)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.bench.bench_freq_response")
    ap.add_argument("--steps", type=int, default=200, help="frequency steps on the plant")
    ap.add_argument("--interval", type=float, default=0.5, help="seconds between steps")
    ap.add_argument("--phases", type=int, default=10, help="rounds of remote then frequency for the compute time")
    ap.add_argument("--phase-s", type=float, default=3.0, help="seconds per phase")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--plant", help=argparse.SUPPRESS)  # the plant process this benchmark starts
    ap.add_argument("--trace", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.plant:
        return plant_main(a.plant, a.trace, a.steps, a.interval)
    with tempfile.TemporaryDirectory() as d:
        res = run(Path(d), a.steps, a.interval, a.phases, a.phase_s)
    print(json.dumps(res, indent=1))
    if a.json:
        a.json.write_text(json.dumps(res, indent=1) + "\n")
    return 0 if res["step_to_write_ms"] and res["missed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
