"""ISO 15118 benchmark: the SECC service's request handling time, and its RSS and CPU per session.

Runs the bridge (services/secc/bridge.py) with the bounded JVM (or --no-bounded-jvm) between two network
namespaces, fed a -7000 W set point, and N sessions of the package's unmodified EV simulator one after
the other. Handling time = from "<Req> received" to "Sent <Res>" in the service's own log. RSS and CPU
are the service's Python process plus its JVM, read from /proc after each session. Root needed.

    .venv/bin/python -m tests.secc.bench_secc --sessions 3 [--jvm both|bounded|default] [--config "-20 DC BPT"]

``both`` (the default) runs the bounded JVM's service, then the default JVM's, in the same run on the same
veth pair, so the two see the same machine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.secc import netns
from tests.secc.netns import BRIDGE, DEFAULT_PYTHON

TICK = os.sysconf("SC_CLK_TCK")
STAMP = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) - iso15118\.shared\.comm_session \(\d+\): (.*)$")


def tree(pid: int) -> list[int]:
    """pid and its descendants (the JVM is the bridge's child)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == p:
                        todo.append(int(d.name))
                except (OSError, IndexError, ValueError):
                    pass
    return out


def usage(pid: int) -> tuple[float, float]:
    """(RSS MB, CPU s) of the process tree."""
    rss = cpu = 0.0
    for p in tree(pid):
        try:
            f = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            cpu += (int(f[11]) + int(f[12])) / TICK
            rss += int(f[21]) * os.sysconf("SC_PAGE_SIZE") / 1e6
        except (OSError, IndexError, ValueError):
            pass
    return rss, cpu


def handling_times(log: Path) -> list[float]:
    t_in: datetime | None = None
    out = []
    for line in log.read_text(errors="replace").splitlines():
        m = STAMP.search(line)
        if not m:
            continue
        t = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f")
        if m.group(2).endswith("received"):
            t_in = t
        elif m.group(2).startswith("Sent ") and t_in is not None:
            out.append((t - t_in).total_seconds())
            t_in = None
    return out


def measure(pair: netns.Pair, tmp: Path, bounded: bool, sessions: int, config: str, patience: float) -> dict[str, Any]:
    """One service (bounded JVM or not) and ``sessions`` EV sessions one after the other."""
    ours, theirs = socket.socketpair()
    log = tmp / f"secc-{'bounded' if bounded else 'default'}.log"
    cmd = ["ip", "netns", "exec", pair.secc_ns, str(DEFAULT_PYTHON), str(BRIDGE), "--fd", str(theirs.fileno())]
    cmd += ["--iface", pair.secc_if, "--log-messages", "--bounded-jvm" if bounded else "--no-bounded-jvm"]
    with open(log, "wb") as out:
        svc = subprocess.Popen(cmd, pass_fds=(theirs.fileno(),), stdout=out, stderr=subprocess.STDOUT)
    theirs.close()
    stop = threading.Event()
    cmd_line = json.dumps({"setpoint_w": -7000.0, "enable": True, "max_charge_w": 11000, "max_discharge_w": 11000})

    def feed() -> None:
        while not stop.wait(0.1):
            try:
                ours.sendall(cmd_line.encode() + b"\n")
            except OSError:
                return

    threading.Thread(target=feed, daemon=True).start()
    try:
        return _sessions(svc, ours, pair, tmp, bounded, sessions, config, patience, log)
    finally:
        stop.set()
        ours.close()
        netns.stop(svc)


def _sessions(
    svc: subprocess.Popen[bytes],
    ours: socket.socket,
    pair: netns.Pair,
    tmp: Path,
    bounded: bool,
    sessions: int,
    config: str,
    patience: float,
    log: Path,
) -> dict[str, Any]:
    reader = ours.makefile("rb")
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:  # until the service listens (after its codec warm-up)
        line = reader.readline()
        if not line or json.loads(line).get("status", {}).get("state") == "Idle":
            break
    threading.Thread(target=lambda: [None for _ in iter(reader.readline, b"")], daemon=True).start()
    rows = []
    rss0, cpu0 = usage(svc.pid)
    start = (rss0, cpu0)
    name = "bounded" if bounded else "default"
    print(f"{name}: after start and warm-up: RSS {rss0:.0f} MB, CPU {cpu0:.1f} s", flush=True)
    for i in range(sessions):
        ev = netns.start_ev(pair, netns.ev_config(config, tmp), tmp / f"ev-{name}-{i}.log", patience=patience)
        t0 = time.monotonic()
        try:
            rc = ev.wait(120)
        except subprocess.TimeoutExpired:  # an EV whose session failed can linger: bounded
            rc = netns.stop(ev)
        finally:
            netns.stop(ev)
        rss, cpu = usage(svc.pid)
        rows.append(
            {
                "session": i + 1,
                "ev_exit": rc,
                "s": round(time.monotonic() - t0, 1),
                "rss_mb": round(rss),
                "cpu_s": round(cpu - cpu0, 2),
            }
        )
        print(f"{name} session {i + 1}: {rows[-1]}", flush=True)
        cpu0 = cpu
    ht = handling_times(log)
    return {
        "jvm": name,
        "start_rss_mb": round(start[0]),
        "start_cpu_s": round(start[1], 1),
        "sessions": rows,
        "requests": len(ht),
        "median_ms": round(statistics.median(ht) * 1000, 1) if ht else None,
        "max_ms": round(max(ht) * 1000, 1) if ht else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=3)
    ap.add_argument("--config", default="-20 DC BPT", choices=sorted(netns.EV_CONFIGS))
    ap.add_argument("--jvm", choices=["both", "bounded", "default"], default="both", help="both: one after the other")
    ap.add_argument(
        "--patience", type=float, default=1.0, help="the EV's message timeouts x this (1: the unmodified EV)"
    )
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-secc-"))
    print(f"load average before: {os.getloadavg()}", flush=True)
    variants = {"both": [True, False], "bounded": [True], "default": [False]}[a.jvm]
    results = []
    with netns.veth_pair() as pair:
        for bounded in variants:
            results.append(measure(pair, tmp, bounded, a.sessions, a.config, a.patience))
    print(f"load average after: {os.getloadavg()}", flush=True)
    print("JVM | start RSS MB / CPU s | RSS MB after each session | CPU s per session | requests | median / max ms")
    for r in results:
        rss = " / ".join(str(x["rss_mb"]) for x in r["sessions"])
        cpu = " / ".join(str(x["cpu_s"]) for x in r["sessions"])
        print(
            f"{r['jvm']} | {r['start_rss_mb']} / {r['start_cpu_s']} | {rss} | {cpu} | {r['requests']} | "
            f"{r['median_ms']} / {r['max_ms']}"
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
