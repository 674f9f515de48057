"""Every shipped I/O map instantiated against the virtual plant (as evcc tests every template): the TCP
driver reads every input tag good, and every output reaches the plant."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from runtime.io.driver import IOContext
from runtime.io.maps import shipped_maps
from runtime.io.readplan import min_requests
from tests.io.helpers import TEARDOWN_S, Tags, free_port, inputs, plant, tcp_driver, teardown, wait_for


@pytest.mark.parametrize("path", shipped_maps(), ids=lambda p: p.stem)
def test_map_against_virtual_plant(path: Path) -> None:
    async def main() -> None:
        port = free_port()
        vp = plant([{"name": "dev", "map": path.stem, "port": port}])
        await vp.start()
        drv = tcp_driver(port, path.stem)
        io = IOContext()
        tags = Tags(io)
        task = asyncio.create_task(drv.run(io))
        try:
            await wait_for(lambda: tags.good(*inputs(drv)), 10, f"all tags of {path.stem} good")
            outs = {s.name: s for s in drv.declare() if not s.is_input and s.direction.value == "output"}
            if "inverter.setpoint" in outs:
                for w in (-7000.0, 0.0, 7000.0):
                    drv.on_outputs(0, {"inverter.setpoint": w, "inverter.enable": True}, {"inverter.setpoint": w})
                    await wait_for(lambda w=w: vp.plant.setpoint_w == w and vp.plant.enabled, 5, f"setpoint {w}")
                    vp.advance(2.0)
                    await wait_for(lambda w=w: tags.value("inverter.setpoint_readback") == w, 5, "read-back")
                    assert tags.value("inverter.write_mismatch") is False
                    p = tags.value("inverter.power") if tags.good("inverter.power") else None
                    await wait_for(lambda w=w: abs(tags.value("inverter.power") - w) < 50, 5, f"power {w} ({p})")
        finally:
            # as the runtime stops: close (safe outputs) while the driver still runs, then cancel it
            safe = {s.name: s.default for s in drv.declare() if s.direction.value == "output"}
            await asyncio.wait_for(drv.close(safe), TEARDOWN_S)
            await teardown([task], [drv], [vp])
        assert vp.plant.setpoint_w == 0.0 and vp.plant.enabled is False  # safe outputs written at close

    asyncio.run(main())


def test_requests_per_cycle_is_minimum() -> None:
    """A fast poll of the SunSpec inverter costs the planner's minimum number of requests."""

    async def main() -> tuple[int, int]:
        port = free_port()
        vp = plant([{"name": "inv", "map": "sunspec_der_inverter", "port": port}])
        await vp.start()
        drv = tcp_driver(port, "sunspec_der_inverter")
        io = IOContext()
        tags = Tags(io)
        task = asyncio.create_task(drv.run(io))
        try:
            await wait_for(lambda: tags.good("inverter.power", "ev.soc"), 10)
            from runtime.io.maps import PollClass
            from runtime.io.readplan import Span

            task.cancel()  # measure one poll alone (the client stays connected)
            await asyncio.wait([task], timeout=TEARDOWN_S)
            u = drv.units[0]
            before = drv.requests
            await drv._read(u, io, {PollClass.FAST})
            spans = [Span(*u.disc.addr[p.key], p.count, p.key) for p in drv._points_for(u, {PollClass.FAST})]
            return drv.requests - before, min_requests(spans, u.map.max_gap, u.rd.rejected)
        finally:
            await teardown([task], [drv], [vp])

    used, minimum = asyncio.run(main())
    assert used == minimum
