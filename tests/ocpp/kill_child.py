"""A process that holds the station's queue, for the kill -9 test: it publishes an image stream (plug-ins,
meter values every cycle-clock second) while its station delivers to the CSMS, until it is killed.
With --drain it unplugs, waits until the queue is empty, prints "drained" and exits."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from tests.ocpp.harness import Harness, params, plugged


async def main(url: str, state: Path, start_us: int, drain: bool) -> None:
    h = Harness(params(url, state, identity="KILL-1", variables={"TxUpdatedInterval": 1}))
    h.now_us = start_us
    await h.start()
    if drain:
        while True:
            await h.publish(ev__connected=False, inverter__power=0.0)
            if len(h.station.queue) == 0 and h.station.online:
                print("drained", flush=True)
                return
            await asyncio.sleep(0.05)
    n = 0
    while True:
        n += 1
        connected = (start_us // 1_000_000 + n) % 40 < 30  # 30 s plugged in, 10 s away
        await h.publish(**plugged(ev__connected=connected, meter__energy_import=1000.0 + n))
        if n == 1:
            print("publishing", flush=True)
        await asyncio.sleep(0.003)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--state", required=True, type=Path)
    ap.add_argument("--start-us", type=int, required=True)
    ap.add_argument("--drain", action="store_true")
    a = ap.parse_args()
    asyncio.run(main(a.url, a.state, a.start_us, a.drain))
