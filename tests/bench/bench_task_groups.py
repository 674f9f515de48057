"""Memory cost of several task processes: RSS of the scan process and its children, the bundled site run
with its three default groups (backoffice, local, planning) against the same site with every task in one
group (``process: tasks``). Run: ``python -m tests.bench.bench_task_groups [--settle-s 20] [--rounds 2]``."""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from tests.runtime.helpers import bundled_site_copy, read_tag, wait_for
from tests.slow.bundled import children, cmdline, kill_tree, rss_kb, start_site


def one_group(site: Path) -> None:
    data = yaml.safe_load(site.read_text())
    for t in data["tasks"]:
        t["process"] = "tasks"
    site.write_text(yaml.safe_dump(data, sort_keys=False))


def measure(groups: int, settle_s: float, samples: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as d:
        site = bundled_site_copy(Path(d))
        if groups == 1:
            one_group(site)
        proc = start_site(site, log=Path(d, "run.log"))
        try:
            sock = Path(d, "var", "control.sock")
            wait_for(lambda: (read_tag(sock, "runtime.task_process_alive") or {}).get("value"), 120, "tasks alive")
            time.sleep(settle_s)  # a benchmark, not a test: let start-up allocations settle before sampling
            rows: list[dict[str, int]] = []
            for _ in range(samples):
                row = {"scan": rss_kb(proc.pid) or 0, "tasks": 0, "plant": 0, "task_processes": 0}
                for c in children(proc.pid):
                    cmd = cmdline(c)
                    if "runtime.taskproc" in cmd:
                        row["tasks"] += rss_kb(c) or 0
                        row["task_processes"] += 1
                    elif "runtime.sim" in cmd:
                        row["plant"] += rss_kb(c) or 0
                rows.append(row)
                time.sleep(1.0)
            return {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        finally:
            kill_tree(proc)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--settle-s", type=float, default=20.0)
    ap.add_argument("--samples", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args(argv)
    print("| run | task processes | scan MB | task processes MB | plant MB | scan + tasks MB |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in range(a.rounds):
        for groups in (1, 3) if r % 2 == 0 else (3, 1):  # alternate the order: drift hits both alike
            m = measure(groups, a.settle_s, a.samples)
            mb = {k: m[k] / 1024 for k in ("scan", "tasks", "plant")}
            print(
                f"| {groups} group{'s' if groups > 1 else ''} ({r + 1}) | {m['task_processes']:.0f} | {mb['scan']:.1f} "
                f"| {mb['tasks']:.1f} | {mb['plant']:.1f} | {mb['scan'] + mb['tasks']:.1f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
