"""Modbus I/O benchmarks (issue 3): requests per cycle against the minimum, loopback round trip, scan
lateness with fast polling of inverter + meter beside the same site with I/O disabled, CPU share.

    python -m tests.bench.bench_io [--seconds 30] [--json FILE]

The virtual plant always runs in a process of its own (as in production). The baseline for lateness and
CPU is the same site with the Modbus devices replaced by an in-memory device serving the same tags, run
in the same invocation: compare ratios, the machine is shared and noisy. CPU is the scan process's own
(utime + stime from /proc, after start-up), not the plant's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.bench.bench_scan import beside_bare
from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[2]


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))]


def plan_table() -> list[dict[str, Any]]:
    """Per shipped map: requests of a fast cycle and of a full poll, the planner's count against the DP
    minimum and against one request per point (no coalescing)."""
    from runtime.io.maps import PollClass, shipped_maps
    from runtime.io.readplan import min_requests, plan_reads
    from tests.io.test_readplan import map_spans

    rows = []
    for path in shipped_maps():
        row: dict[str, Any] = {"map": path.stem}
        for label, classes in (("fast", {PollClass.FAST}), ("all", set(PollClass))):
            spans, gap, rej = map_spans(path, classes)
            row[label] = {
                "planned": len(plan_reads(spans, gap, rej)) if spans else 0,
                "minimum": min_requests(spans, gap, rej) if spans else 0,
                "per_point": len(spans),
            }
        rows.append(row)
    return rows


def start_plant(site: Path) -> subprocess.Popen[bytes]:
    p = subprocess.Popen(
        [sys.executable, "-m", "runtime.sim", "--site", str(site)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert p.stdout is not None
    if p.stdout.readline().strip() != b"READY":
        raise RuntimeError("virtual plant did not start")
    return p


def stop(p: subprocess.Popen[bytes]) -> None:
    p.terminate()
    p.wait(10)


def round_trip(port: int, n: int = 2000) -> dict[str, Any]:
    """Median/p99 of single reads (10 and 125 registers) with the pymodbus async client, plant in another
    process; the 10-register read is the baseline of the 125-register one."""
    from pymodbus.client import AsyncModbusTcpClient

    async def reads() -> dict[str, Any]:
        c = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=1, retries=0, reconnect_delay=0)
        await c.connect()
        out: dict[str, Any] = {}
        try:
            for count in (10, 125):
                ts = []
                for _ in range(n):
                    t = time.perf_counter_ns()
                    rr = await c.read_holding_registers(40000, count=count, device_id=1)
                    ts.append((time.perf_counter_ns() - t) / 1e6)
                    assert not rr.isError()
                out[f"{count}_regs"] = {"median_ms": statistics.median(ts), "p99_ms": pct(ts, 0.99)}
        finally:
            c.close()
        out["ratio_125_vs_10"] = out["125_regs"]["median_ms"] / out["10_regs"]["median_ms"]
        return out

    return asyncio.run(reads())


SITE_HEAD = """\
site: {name: bench-io, nominal_voltage: 240.0, nominal_frequency: 60}
scan: {period_ms: 20, overrun_fault_after: 5}
programs:
  - {type: example_copy, name: follow, params: {source: ev.soc, target: demo.out}}
safety:
  - {type: example_clamp, name: clamp, params: {tag: demo.out, limit: 11000}}
"""

MODBUS_DEVICES = """\
devices:
  - {{name: inverter, type: modbus_tcp, params: {{host: 127.0.0.1, port: {inv}, units: [{{unit: 1, map: sunspec_der_inverter}}]}}}}
  - {{name: meter, type: modbus_tcp, params: {{host: 127.0.0.1, port: {meter}, units: [{{unit: 1, map: site_meter_tcp}}]}}}}
plant:
  type: virtual
  params:
    devices:
      - {{name: inverter, map: sunspec_der_inverter, port: {inv}}}
      - {{name: meter, map: site_meter_tcp, port: {meter}}}
"""


def memory_devices() -> str:
    """The same tags served by the in-memory driver: the run "with I/O disabled"."""
    from runtime.io.maps import load_map, tag_specs

    lines = ["devices:", "  - name: plant", "    type: memory", "    params:", "      poll_s: 0.02", "      tags:"]
    for m in ("sunspec_der_inverter", "site_meter_tcp"):
        for s in tag_specs(load_map(ROOT / "io_maps" / f"{m}.yaml")):
            value = {"float": 1.0, "int": 1, "bool": False, "str": "x"}.get(s.type.value, 1.0)
            extra = f", stale_after_s: {s.stale_after_s}" if s.stale_after_s else ""
            lines.append(
                f"        - {{name: {s.name}, type: {s.type.value}, direction: {s.direction.value}, "
                f"value: {json.dumps(value)}{extra}}}"
            )
    return "\n".join(lines) + "\n"


def _cpu_s(pid: int) -> float | None:
    """utime + stime of one process (not its children), from /proc/PID/stat."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_site(site: Path, seconds: float, stats: Path, extra: tuple[str, ...] = ("--no-plant",)) -> dict[str, Any]:
    """Run a site for ``seconds``; CPU share of the scan process alone (sampled from /proc until it exits)."""
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "runtime.cli",
            "run",
            str(site),
            "--for",
            str(seconds),
            *extra,
            "--stats-json",
            str(stats),
        ],
        cwd=ROOT,
        stderr=subprocess.DEVNULL,
    )
    t0 = time.monotonic()
    first: tuple[float, float] | None = None
    last: tuple[float, float] | None = None
    while p.poll() is None:
        c = _cpu_s(p.pid)
        if c is not None:
            now = time.monotonic()
            if first is None and now - t0 > 3.0:  # after start-up (imports, connects)
                first = (now, c)
            last = (now, c)
        time.sleep(0.25)
    if p.returncode != 0:
        raise RuntimeError(f"run of {site.name} failed (rc={p.returncode})")
    out = json.loads(stats.read_text())
    if first is not None and last is not None and last[0] > first[0]:
        out["cpu_share_of_one_core"] = (last[1] - first[1]) / (last[0] - first[0])
    else:
        out["cpu_share_of_one_core"] = float("nan")
    return out


def line(label: str, r: dict[str, Any]) -> str:
    lat = r["lateness_ms"]
    return (
        f"{label}: lateness p50 {lat['p50']:.3f} p99 {lat['p99']:.3f} max {lat['max']:.3f} ms, overruns "
        f"{r['overruns']}, cycles {r['cycles']}, scan process CPU {100 * r['cpu_share_of_one_core']:.1f} % "
        f"of one core, RSS {r.get('rss_mb')} MB"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    out: dict[str, Any] = {"seconds": a.seconds}
    out["plans"] = plans = plan_table()
    for r in plans:
        print(
            f"{r['map']:<24} fast: {r['fast']['planned']} requests (minimum {r['fast']['minimum']}, "
            f"per point {r['fast']['per_point']}); full poll: {r['all']['planned']} (minimum "
            f"{r['all']['minimum']}, per point {r['all']['per_point']})",
            flush=True,
        )
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        ports = {"inv": free_port(), "meter": free_port()}
        modbus_site = tmp / "modbus.yaml"
        modbus_site.write_text(SITE_HEAD + MODBUS_DEVICES.format(**ports))
        mem_site = tmp / "memory.yaml"
        mem_site.write_text(SITE_HEAD + memory_devices())
        plant = start_plant(modbus_site)
        try:
            out["round_trip"] = rt = round_trip(ports["inv"])
            print(
                f"loopback round trip: 10 regs median {rt['10_regs']['median_ms']:.3f} ms p99 "
                f"{rt['10_regs']['p99_ms']:.3f} ms; 125 regs median {rt['125_regs']['median_ms']:.3f} ms p99 "
                f"{rt['125_regs']['p99_ms']:.3f} ms (ratio {rt['ratio_125_vs_10']:.2f})",
                flush=True,
            )
            # Each run beside a bare loop in the same minute: what the runtime adds over the machine's own
            # noise is p99 - bare p99, and the growth with I/O compares those excesses.
            bare_a, base = beside_bare(20, a.seconds, lambda: run_site(mem_site, a.seconds, tmp / "mem.json"))
            out["without_io"], out["without_io_bare"] = base, bare_a
            print(
                line("I/O disabled (memory device)", base) + f"; bare loop beside it p99 {bare_a['p99']:.3f} ms",
                flush=True,
            )
            bare_b, io = beside_bare(20, a.seconds, lambda: run_site(modbus_site, a.seconds, tmp / "io.json"))
            out["with_io"], out["with_io_bare"] = io, bare_b
            print(
                line("inverter + meter over Modbus TCP, fast poll every 20 ms cycle", io)
                + f"; bare loop beside it p99 {bare_b['p99']:.3f} ms",
                flush=True,
            )
        finally:
            stop(plant)
        d99 = io["lateness_ms"]["p99"] - base["lateness_ms"]["p99"]
        excess = (io["lateness_ms"]["p99"] - bare_b["p99"]) - (base["lateness_ms"]["p99"] - bare_a["p99"])
        out["p99_lateness_growth_ms"] = d99
        out["p99_excess_over_bare_growth_ms"] = excess
        print(
            f"p99 lateness growth with I/O: {d99:+.3f} ms raw, {excess:+.3f} ms over the bare loops beside them "
            f"(target <= 0.2 ms, no overruns)",
            flush=True,
        )
        try:  # the bundled site as `make run` runs it (fixed ports 15502..15505: fails if they are busy)
            out["bundled"] = b = run_site(ROOT / "runtime/sites/sim.yaml", a.seconds, tmp / "bundled.json", ())
            print(line("bundled site (4 Modbus devices, programs, safety, tasks; target CPU <= 15 %)", b))
        except Exception as exc:
            out["bundled"] = {"error": repr(exc)}
            print(f"bundled site: not measured ({exc!r})")
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
