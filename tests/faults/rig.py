"""The rig every fault test uses: virtual plant <- fault proxy <- a Modbus TCP driver, on free ports."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from runtime.io.driver import IOContext
from runtime.io.modbus_tcp import ModbusTcpDriver
from runtime.sim.server import VirtualPlant
from tests.faults.proxy import FaultProxy
from tests.io.helpers import TEARDOWN_S, Tags, inputs, plant, tcp_driver, teardown
from tests.ports import free_port


@dataclass
class Rig:
    vp: VirtualPlant
    proxy: FaultProxy
    drv: ModbusTcpDriver
    io: IOContext
    tags: Tags
    task: asyncio.Task[None]

    @property
    def inputs(self) -> list[str]:
        return inputs(self.drv)

    def start(self) -> None:
        """Start the driver (a rig made with ``start=False`` lets a test inject faults before it connects)."""
        self.task = asyncio.create_task(self.drv.run(self.io))


@contextlib.asynccontextmanager
async def rig(map_: str, *, start: bool = True, speed: int = 1, **drv_kw: Any) -> AsyncIterator[Rig]:
    """A plant serving ``map_`` behind a proxy, and a driver polling through the proxy. ``speed``: the
    cycle clock runs that many times real time (retry schedules are on it; poll periods count real time)."""
    vp = plant([{"name": "dev", "map": map_, "port": free_port()}])
    await vp.start()
    proxy = FaultProxy(vp.ports["dev"])
    await proxy.start()
    drv = tcp_driver(proxy.port, map_, **drv_kw)
    io = IOContext(speed=speed)
    r = Rig(vp, proxy, drv, io, Tags(io), asyncio.create_task(asyncio.sleep(0)))
    try:
        if start:
            r.start()
        yield r
    finally:
        try:
            await teardown([r.task], [drv])
            await asyncio.wait_for(proxy.stop(), TEARDOWN_S)
        finally:
            await teardown(plants=[vp])
