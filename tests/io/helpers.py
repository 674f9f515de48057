"""Shared helpers of the I/O and plant tests: a virtual plant, drivers on a real loop (free ports: tests.ports)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from runtime.api import SiteInfo
from runtime.io.driver import IOContext
from runtime.io.modbus_tcp import ModbusTcpDriver
from runtime.sim.server import VirtualPlant, VirtualPlantParams
from runtime.tags import Quality, TagUpdate
from tests.ports import free_port

__all__ = ["ROOT", "SITE", "Tags", "free_port", "inputs", "plant", "tcp_driver", "teardown", "wait_for"]

ROOT = Path(__file__).resolve().parents[2]
SITE = SiteInfo("test", 240.0, 60.0, 20_000, base_dir=ROOT)


async def wait_for(pred: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            raise AssertionError(f"{what} not met within {timeout} s")
        await asyncio.sleep(0.01)


class Tags:
    """Latest update per tag, drained from an IOContext (what the scan would see)."""

    def __init__(self, io: IOContext):
        self.io = io
        self.latest: dict[str, TagUpdate] = {}
        self.count: dict[str, int] = {}

    def poll(self) -> Tags:
        for u in self.io.drain():
            self.latest[u.name] = u
            self.count[u.name] = self.count.get(u.name, 0) + 1
        return self

    def good(self, *names: str) -> bool:
        self.poll()
        return all(n in self.latest and self.latest[n].quality is Quality.GOOD for n in names)

    def bad(self, *names: str) -> bool:
        self.poll()
        return all(n in self.latest and self.latest[n].quality is Quality.BAD for n in names)

    def value(self, name: str) -> Any:
        self.poll()
        return self.latest[name].value

    def get(self, name: str) -> Any:
        """The latest value, None before the first update (for predicates polled from the start)."""
        self.poll()
        u = self.latest.get(name)
        return None if u is None else u.value


TEARDOWN_S = 3.0  # every step of a test's teardown is bounded by this


async def teardown(
    tasks: Iterable[asyncio.Task[Any]] = (), drivers: Iterable[Any] = (), plants: Iterable[Any] = ()
) -> None:
    """Stop driver tasks, close their clients, stop plants: each step bounded, so a teardown that would
    hang fails the test after seconds instead of the suite's 300 s timeout."""
    tasks = list(tasks)
    for d in drivers:
        d._closed = True
    for t in tasks:
        t.cancel()
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=TEARDOWN_S)
        assert not pending, f"{len(pending)} task(s) ignored cancellation for {TEARDOWN_S} s"
    for d in drivers:
        if d.client is not None:
            d.client.close()
    for vp in plants:
        await asyncio.wait_for(vp.stop(), TEARDOWN_S)


def plant(devices: list[dict[str, Any]], **kw: Any) -> VirtualPlant:
    return VirtualPlant(VirtualPlantParams.model_validate({"devices": devices, **kw}), ROOT)


def tcp_driver(port: int, map_: str, name: str = "dev", **kw: Any) -> ModbusTcpDriver:
    params = {
        "host": "127.0.0.1",
        "port": port,
        "timeout_s": 0.3,
        "retries": 0,
        "backoff_s": 0.05,
        "backoff_max_s": 0.4,
        **({"units": [{"unit": 1, "map": map_}]} if map_ else {}),
        **kw,
    }
    return ModbusTcpDriver(name, ModbusTcpDriver.Params.model_validate(params), SITE)


def inputs(drv: Any) -> list[str]:
    return [s.name for s in drv.declare() if s.is_input]
