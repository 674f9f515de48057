"""Request latency of the SunSpec server on loopback (not a test: `python -m tests.localapi.bench_modbus_server`).

A pymodbus client reads the 701 measurement block (coalesced, 100 registers) N times, one request at a
time, while the server re-encodes the image for each new publication; prints median/p99/max in ms.
``--evses N``: a depot's server (the site unit and N EVSE units); each read goes to the next EVSE's unit.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import statistics
import time

from pymodbus.client import AsyncModbusTcpClient

from runtime.api import SiteInfo
from runtime.tags import Image, TagValue
from runtime.tasks.base import TaskContext
from runtime.tasks.localapi.access import AllowEntry
from runtime.tasks.localapi.modbus_server import ModbusServer, ModbusServerParams
from tests.ports import free_port
from tests.waiting import cancel_and_wait

SITE = SiteInfo("bench", 240.0, 60.0, 20_000)


async def main(n: int, evses: int = 0) -> dict[str, float]:
    port = free_port()
    params = ModbusServerParams(
        port=port,
        allow=[AllowEntry(address="127.0.0.1", role="read_write")],
        max_charge_w=11000,
        max_discharge_w=11000,
        evses=list(range(1, evses + 1)),
    )
    task = ModbusServer("modbus", params, SITE)
    cx = TaskContext("modbus", lambda *a: None, dt.datetime(2027, 1, 4), logging.getLogger("bench"))
    runner = asyncio.create_task(task.run(cx))
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=5, retries=0)
    deadline = time.monotonic() + 10
    while not await client.connect():
        assert time.monotonic() < deadline, "server did not start"
        await asyncio.sleep(0.05)
    lat: list[float] = []
    try:
        for k in range(n):
            # a new publication before every read: the worst case, each request re-encodes the image
            e = k % evses + 1 if evses else 0
            pre = f"evse{e}." if evses else ""
            tags = {f"{pre}inverter.power": TagValue(float(k)), f"{pre}grid.voltage": TagValue(240.0)}
            await cx._publish(Image(tags), k)
            t0 = time.perf_counter()
            rr = await client.read_holding_registers(40070, count=100, device_id=e + 1)
            lat.append((time.perf_counter() - t0) * 1000)
            assert not rr.isError()
    finally:
        client.close()
        await cancel_and_wait(runner)
    lat.sort()
    return {
        "evses": evses,
        "requests": n,
        "median_ms": round(statistics.median(lat), 3),
        "p99_ms": round(lat[int(0.99 * (n - 1))], 3),
        "max_ms": round(lat[-1], 3),
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("--evses", type=int, default=0, help="a depot of this many EVSEs (0: a single site)")
    args = ap.parse_args()
    print(json.dumps(asyncio.run(main(args.n, args.evses))))
