"""SunSpec discovery and model reads of the virtual inverter by pysunspec2's own client (an independent
implementation), and discovery by our driver at each of the three marker locations."""

from __future__ import annotations

import asyncio

import pytest

from runtime.io.driver import IOContext
from tests.io.helpers import Tags, free_port, inputs, plant, tcp_driver, teardown, wait_for


def test_pysunspec2_scans_and_reads_the_virtual_inverter() -> None:
    from sunspec2.modbus.client import SunSpecModbusClientDeviceTCP

    async def main() -> None:
        port = free_port()
        vp = plant([{"name": "inv", "map": "sunspec_der_inverter", "port": port}])
        vp.plant.command("inverter.setpoint", -6000.0)  # discharge 6 kW (charge-positive convention)
        vp.plant.command("inverter.enable", True)
        vp.advance(5.0)
        await vp.start()

        def scan() -> dict:
            d = SunSpecModbusClientDeviceTCP(slave_id=1, ipaddr="127.0.0.1", ipport=port, timeout=2)
            try:
                d.scan()
                m701 = d.models[701][0]
                m713 = d.models[713][0]
                m704 = d.models[704][0]
                out = {
                    "ids": sorted(k for k in d.models if isinstance(k, int)),
                    "Mn": d.models[1][0].Mn.value,
                    "W": m701.W.cvalue,
                    "Hz": m701.Hz.cvalue,
                    "LLV": m701.LLV.cvalue,
                    "SoC": m713.SoC.cvalue,
                    "SoH": m713.SoH.cvalue,
                    "TotWhAbs": m701.TotWhAbs.cvalue,
                }
                # an independent client writes WSet (generation-positive: +3000 = 3 kW export)
                m704.WSet.cvalue = 3000
                m704.WSet.write()
                return out
            finally:
                d.close()

        try:
            got = await asyncio.wait_for(asyncio.to_thread(scan), 30)
        finally:
            await teardown(plants=[vp])
        assert got["ids"] == [1, 701, 702, 704, 713]
        assert got["Mn"] == "v2g-plc sim"
        assert got["W"] == pytest.approx(6000.0, abs=2)  # SunSpec: generation (export) positive
        assert got["Hz"] == pytest.approx(60.0) and got["LLV"] == pytest.approx(240.0)
        assert got["SoC"] == pytest.approx(vp.plant.soc * 100, abs=0.1)  # percent on the wire
        assert got["SoH"] == pytest.approx(95.0)
        assert got["TotWhAbs"] > 0  # counters never start at 0 (0 = not implemented)
        assert vp.plant.setpoint_w == -3000.0  # export on the wire is discharge here

    asyncio.run(main())


@pytest.mark.parametrize("base", [0, 40000, 50000])
def test_driver_discovers_suns_at_each_base(base: int) -> None:
    async def main() -> None:
        port = free_port()
        vp = plant([{"name": "inv", "map": "sunspec_der_inverter", "port": port, "sunspec_base": base}])
        await vp.start()
        drv = tcp_driver(port, "sunspec_der_inverter")
        io = IOContext()
        tags = Tags(io)
        task = asyncio.create_task(drv.run(io))
        try:
            await wait_for(lambda: tags.good(*inputs(drv)), 10, f"all good with SunS at {base}")
            assert drv.units[0].disc.addr["inverter.power"][1] == base + 2 + 68 + 10  # after model 1 (2 + 66)
            assert tags.value("ev.soc") == pytest.approx(vp.plant.soc, abs=1e-3)
            assert 0.0 <= tags.value("ev.soh") <= 1.0
        finally:
            await teardown([task], [drv], [vp])

    asyncio.run(main())


def test_missing_model_turns_its_tags_bad() -> None:
    """A device without model 713 has no SoC: those tags are bad, never invented."""

    async def main() -> None:
        port = free_port()
        vp = plant([{"name": "inv", "map": "sunspec_der_inverter", "port": port}])
        dev = vp.devices["inv"]
        # cut the chain after 704: overwrite 713's header with the end marker
        a713 = dev.addr["ev.soc"] - 4
        dev.image[a713], dev.image[a713 + 1] = 0xFFFF, 0
        await vp.start()
        drv = tcp_driver(port, "sunspec_der_inverter")
        io = IOContext()
        tags = Tags(io)
        task = asyncio.create_task(drv.run(io))
        try:
            await wait_for(lambda: tags.good("inverter.power", "grid.voltage") and tags.bad("ev.soc", "ev.soh"), 10)
        finally:
            await teardown([task], [drv], [vp])

    asyncio.run(main())
