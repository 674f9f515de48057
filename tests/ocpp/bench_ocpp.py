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


def main() -> None:
    print(json.dumps({"rtt": asyncio.run(rtt()), "drain": asyncio.run(drain())}, indent=1))


if __name__ == "__main__":
    main()
