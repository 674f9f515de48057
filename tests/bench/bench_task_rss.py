"""RSS of each task process of the bundled site (groups backoffice, local, planning), and of the scan.

    python -m tests.bench.bench_task_rss [--settle-s 15] [--samples 5] [--rounds 2]

Each round starts the bundled site (free ports, its own state directory), waits until every task process
is alive, lets start-up settle, then samples each child's RSS once a second; a row is the median per
group. A child that was restarted while sampling (a new PID) is reported, not averaged in. Run it on two
commits to compare what a group's process imports.
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
from pathlib import Path

from tests.runtime.helpers import bundled_site_copy, read_tag, wait_for
from tests.slow.bundled import children, cmdline, kill_tree, rss_kb, start_site


def groups_of(pid: int) -> dict[str, int]:
    """Task process PID by its group (``--group`` on its command line)."""
    out = {}
    for c in children(pid):
        cmd = cmdline(c)
        m = re.search(r"--group\s+(\S+)", cmd)
        if "runtime.taskproc" in cmd and m:
            out[m.group(1)] = c
    return out


def measure(settle_s: float, samples: int) -> dict[str, float | str]:
    with tempfile.TemporaryDirectory() as d:
        site = bundled_site_copy(Path(d))
        proc = start_site(site, log=Path(d, "run.log"))
        try:
            sock = Path(d, "var", "control.sock")
            wait_for(lambda: (read_tag(sock, "runtime.task_process_alive") or {}).get("value"), 120, "tasks alive")
            time.sleep(settle_s)  # a benchmark, not a test: let start-up allocations settle before sampling
            first = groups_of(proc.pid)
            rows: dict[str, list[int]] = {g: [] for g in first}
            scan: list[int] = []
            for _ in range(samples):
                now = groups_of(proc.pid)
                for g, pid in first.items():
                    if now.get(g) == pid:
                        rows[g].append(rss_kb(pid) or 0)
                scan.append(rss_kb(proc.pid) or 0)
                time.sleep(1.0)
            out: dict[str, float | str] = {"scan": statistics.median(scan) / 1024}
            for g, vals in rows.items():
                out[g] = statistics.median(vals) / 1024 if len(vals) == samples else "restarted"
            return out
        finally:
            kill_tree(proc)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--settle-s", type=float, default=15.0)
    ap.add_argument("--samples", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args(argv)
    cols = ("scan", "backoffice", "local", "planning")
    print("| round | " + " | ".join(f"{c} MB" for c in cols) + " |")
    print("|" + " --- |" * (len(cols) + 1))
    for r in range(a.rounds):
        m = measure(a.settle_s, a.samples)
        cells = [f"{m[c]:.1f}" if isinstance(m.get(c), float) else str(m.get(c, "-")) for c in cols]
        print(f"| {r + 1} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
