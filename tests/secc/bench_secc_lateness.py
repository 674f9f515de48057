"""Scan lateness of the bundled site while ISO 15118-20 sessions run, beside a bare loop (issue 16).

    .venv/bin/python -m tests.secc.bench_secc_lateness [--seconds 60] [--rounds 2] [--json FILE]   (root)

"sessions" runs are `make run-ev`'s site (tests/secc/run_ev.py: the bundled site with the SECC device,
`ev_source` and `secc_link`), measured once the SECC listens, while the package's EV simulator
runs -20 DC BPT sessions one after another on the other end of the veth pair (its message timeouts x
``--patience``, 10 by default: on a loaded machine the unmodified EV gives up in the charge loop, and the
load under test is sessions that run). "none" runs are the bundled
site as it ships. Beside each run the bare loop of tests/bench/bench_ocpp_lateness.py ``run_beside_bare``
sees the same minute of the same machine; the variants alternate round by round (``alternate``).
Compare the ratios runtime/bare between the variants: the machine is shared and noisy. The runtime's
figures are its cycles inside the bare loop's window (not the SECC's start before it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

import yaml

from tests.bench.bench_ocpp_lateness import alternate, bare_summary, run_beside_bare, summary
from tests.runtime.helpers import bundled_site_copy
from tests.secc import netns
from tests.secc.run_ev import ev_loop, secc_site, wait_listening


def one_run(tmp: Path, sessions: bool, seconds: float, patience: float, ev_nice: int) -> dict[str, Any]:
    stop = threading.Event()
    log = tmp / "ev.log"
    with netns.veth_pair() as pair:
        site = secc_site(tmp, pair) if sessions else bundled_site_copy(tmp)
        conf = yaml.safe_load(site.read_text())
        sock = tmp / "var" / "control.sock"
        evs: threading.Thread | None = None

        def beside() -> None:
            nonlocal evs
            if not sessions:
                return
            if not wait_listening(sock, stop):
                raise RuntimeError("the SECC did not come up")
            cfg = netns.ev_config("-20 DC BPT", tmp)
            evs = threading.Thread(target=ev_loop, args=(pair, cfg, log, stop, patience, sock, ev_nice), daemon=True)
            evs.start()

        try:
            late_ms, bare_out, _ = run_beside_bare(tmp, site, conf, seconds, beside)
        finally:
            stop.set()
            if evs is not None:
                evs.join(15)
    period_ms = float(conf["scan"]["period_ms"])
    # The runtime's cycles in the bare loop's window only: the last ones (the runtime is stopped as the
    # bare loop ends), not those of the SECC's start and codec warm-up before it.
    late_ms = late_ms[-round(seconds * 1000 / period_ms) :]
    rt_sum = summary(late_ms)
    done = log.read_text(errors="replace").count("SessionStopRes") if log.exists() else 0
    return {
        "variant": "sessions" if sessions else "none",
        "period_ms": period_ms,
        "runtime": rt_sum,
        "overruns": sum(1 for x in late_ms if x > period_ms),
        "bare": bare_summary(bare_out),
        "p99_ratio": round(rt_sum["p99_ms"] / bare_out["p99"], 2) if bare_out["p99"] > 0 else None,
        "sessions_completed": done,
        "loadavg": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.secc.bench_secc_lateness")
    ap.add_argument("--seconds", type=float, default=60.0, help="measured seconds per run")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of one run per variant")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--patience", type=float, default=10.0, help="the EV's message timeouts x this (1: unmodified)")
    ap.add_argument(
        "--ev-nice", type=int, default=-5, help="the EV simulator's niceness (on a site the EV is not on this machine)"
    )
    a = ap.parse_args(argv)
    netns.require_peers()
    runs = alternate(a.rounds, lambda tmp, sessions: one_run(tmp, sessions, a.seconds, a.patience, a.ev_nice))
    print("variant | runtime p50 / p99 / max ms | overruns | bare p50 / p99 / max ms | p99 ratio | sessions | load")
    for r in runs:
        rs, b = r["runtime"], r["bare"]
        print(
            f"{r['variant']} | {rs['p50_ms']} / {rs['p99_ms']} / {rs['max_ms']} | {r['overruns']} | "
            f"{b['p50_ms']} / {b['p99_ms']} / {b['max_ms']} | {r['p99_ratio']} | {r['sessions_completed']} | "
            f"{' '.join(f'{x:.1f}' for x in r['loadavg'])}"
        )
    if a.json:
        a.json.write_text(json.dumps(runs, indent=1) + "\n")
    return 0 if all(r["variant"] == "none" or r["sessions_completed"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
