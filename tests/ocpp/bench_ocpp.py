"""OCPP benchmarks (BENCHMARKS.md): round trip of a CALL on loopback, and draining 1,000 queued messages.

.venv/bin/python -m tests.ocpp.bench_ocpp
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from runtime.tasks.ocpp import connection as conn
from runtime.tasks.ocpp.local_csms import LocalCsms
from runtime.tasks.ocpp.protocol import V201, make_peer
from runtime.tasks.ocpp.queue import MessageQueue
from tests.ocpp.harness import Harness, params, until
from tests.ports import free_port

PW = "0123456789abcdef-operator"


async def rtt(n: int = 2000) -> dict[str, float]:
    csms = await LocalCsms("127.0.0.1", free_port()).start()
    ep = conn.Endpoint(conn.endpoint_url(csms.url, "CP-1"), "CP-1", 1, PW)
    ws = await conn.open_link(ep, ["ocpp2.0.1"], 5)
    samples: list[float] = []
    peer = make_peer(V201, "CP-1", ws, {}, timeout_s=5, on_rtt=lambda a, r: samples.append(r))
    rx = asyncio.create_task(peer.start())
    for _ in range(n):
        await peer.request("Heartbeat", {})
    rx.cancel()
    await ws.close()
    await csms.close()
    q = statistics.quantiles(samples, n=100)
    return {
        "calls": n,
        "median_ms": statistics.median(samples) * 1e3,
        "p99_ms": q[98] * 1e3,
        "max_ms": max(samples) * 1e3,
    }


async def drain(n: int = 1000) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as d:
        state = Path(d) / "s"
        q = MessageQueue(state / "queue.sqlite")
        t0 = time.perf_counter()
        for i in range(n):
            payload = {"eventType": "Updated", "timestamp": "2027-01-04T17:30:00.000Z", "triggerReason": "MeterValuePeriodic",
                       "seqNo": i, "offline": True, "transactionInfo": {"transactionId": "bench"},
                       "meterValue": [{"timestamp": "2027-01-04T17:30:00.000Z", "sampledValue": [{"value": float(i), "measurand": "Energy.Active.Import.Register"}]}]}  # fmt: skip
            q.put(str(uuid.uuid4()), "TransactionEvent", payload, periodic=True, state=("bench", i))
        put_s = time.perf_counter() - t0
        q.close()
        csms = await LocalCsms("127.0.0.1", free_port(), passwords={"CP-1": PW}).start()
        h = await Harness(params(csms.url, state)).start()
        await h.publish()
        await until(lambda: bool(csms.actions("StatusNotification")), timeout_s=30)
        t0 = time.perf_counter()
        await until(lambda: len(h.station.queue) == 0, timeout_s=60, poll_s=0.001)
        drain_s = time.perf_counter() - t0
        await h.stop()
        await csms.close()
        seqs = [json.loads(r.raw)[3]["seqNo"] for r in csms.actions("TransactionEvent")]
        assert seqs == list(range(n)), "order"
        return {"messages": n, "enqueue_s": put_s, "drain_s": drain_s, "per_message_ms": drain_s / n * 1e3}


def task_cpu(seconds: int = 60) -> dict[str, float]:
    """CPU of the task process over ``seconds`` of a real-time run, with and without the ocpp task
    (TxUpdatedInterval 15 s, a plugged-in EV) talking to the local CSMS process."""
    import os
    import signal
    import subprocess
    import sys

    from tests.ocpp.test_in_runtime import SITE
    from tests.runtime.helpers import ROOT, start_cli

    def run(with_ocpp: bool) -> float:
        with tempfile.TemporaryDirectory() as d:
            port = free_port()
            text = SITE.format(port=port).replace("TxUpdatedInterval: 1", "TxUpdatedInterval: 15")
            if not with_ocpp:
                text = (
                    text.split("tasks:")[0]
                    + "tasks:\n  - {type: example_counter, name: idle, params: {interval_s: 60}}\n"
                )
            Path(d, "password").write_text(PW + "\n")
            Path(d, "site.yaml").write_text(text)
            csms = subprocess.Popen([sys.executable, "-m", "runtime.tasks.ocpp.local_csms", "--port", str(port)], cwd=ROOT,
                                    stderr=subprocess.DEVNULL)  # fmt: skip
            proc = start_cli("run", str(Path(d, "site.yaml")))
            try:
                time.sleep(8)  # start-up is not measured
                site = str(Path(d, "site.yaml")).encode()

                def cmdline(p: Path) -> bytes:
                    try:
                        return (p / "cmdline").read_bytes()
                    except OSError:
                        return b""

                procs = [p for p in Path("/proc").iterdir() if p.name.isdigit()]
                pid = next(int(p.name) for p in procs if b"runtime.taskproc" in cmdline(p) and site in cmdline(p))

                def cpu() -> float:
                    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")

                c0 = cpu()
                time.sleep(seconds)
                return (cpu() - c0) / seconds * 100
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.communicate(timeout=30)
                csms.terminate()
                csms.wait(timeout=10)

    return {"seconds": seconds, "task_process_cpu_pct_with_ocpp": run(True), "task_process_cpu_pct_without": run(False)}


def main() -> None:
    out = {"rtt": asyncio.run(rtt()), "drain": asyncio.run(drain()), "task_cpu": task_cpu()}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
