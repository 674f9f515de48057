"""The Modbus TCP driver through the Driver interface, against the virtual plant on loopback."""

from __future__ import annotations

import asyncio
import logging

import pytest

from runtime.io.driver import IOContext
from runtime.io.maps import PollClass
from runtime.sim.devices import Fault
from runtime.tags import US
from tests.io.helpers import TEARDOWN_S, Tags, free_port, inputs, plant, tcp_driver, teardown, wait_for

INV = "sunspec_der_inverter"


async def started(map_: str, **drv_kw):  # type: ignore[no-untyped-def]
    port = free_port()
    vp = plant([{"name": "dev", "map": map_, "port": port}])
    await vp.start()
    drv = tcp_driver(port, map_, **drv_kw)
    io = IOContext()
    tags = Tags(io)
    task = asyncio.create_task(drv.run(io))
    await wait_for(lambda: tags.good(*inputs(drv)), 10, "all tags good")
    return vp, drv, tags, task


async def stopped(vp, drv, task) -> None:  # type: ignore[no-untyped-def]
    await teardown([task], [drv], [vp])


def setpoint_writes(vp, addr: int) -> list[tuple[float, int, list[int]]]:  # type: ignore[no-untyped-def]
    return [w for w in vp.devices["dev"].writes if w[1] == addr]


def test_writes_on_change_and_refresh_driven_by_cycles() -> None:
    async def main() -> None:
        vp, drv, _tags, task = await started(INV)
        try:
            u = drv.units[0]
            wset = u.disc.addr["WSet"][1]
            want = {u.disc.addr[k][1] for k in ("WSetMod", "WSetRvrt", "WSetEnaRvrt")}
            await wait_for(
                lambda: want <= {w[1] for w in vp.devices["dev"].writes},
                5,
                "non-volatile configuration written at connect",
            )
            init = [w for w in vp.devices["dev"].writes if w[1] != wset]
            n_init = len(init)
            outs = {"inverter.setpoint": -7000.0, "inverter.enable": True}
            refresh_us = int(u.map.refresh_s * US)
            k_per_refresh = refresh_us // 20_000
            for k in range(3 * k_per_refresh + 1):  # three refresh periods of 20 ms cycles
                drv.on_outputs(k * 20_000, outs, outs if k == 0 else {})
                await asyncio.sleep(0)
            await wait_for(lambda: not u.wr.pending, 5)
            await asyncio.sleep(0.1)
            # once on change, then once per refresh period (cycle clock), never in between
            assert len(setpoint_writes(vp, wset)) == 4
            assert (
                len([w for w in vp.devices["dev"].writes if w[1] != wset and w[1] != u.disc.addr["WSetEna"][1]])
                == n_init
            )
            # a change is written at once
            drv.on_outputs(
                3 * refresh_us + 20_000, {**outs, "inverter.setpoint": 3000.0}, {"inverter.setpoint": 3000.0}
            )
            await wait_for(lambda: vp.plant.setpoint_w == 3000.0, 5)
        finally:
            await stopped(vp, drv, task)

    asyncio.run(main())


def test_reversion_expires_only_when_the_scan_stops() -> None:
    """Simulated time: refresh writes keep the 10 s timer alive; without on_outputs it expires."""

    async def main() -> None:
        vp, drv, tags, task = await started(INV)
        try:
            u = drv.units[0]
            outs = {"inverter.setpoint": -7000.0, "inverter.enable": True}
            for k in range(60):  # 30 s of cycles at 0.5 s, simulated
                drv.on_outputs(k * 500_000, outs, outs if k == 0 else {})
                await wait_for(lambda: not u.wr.pending, 5)
                await asyncio.sleep(0.02)
                vp.advance(0.5)
                assert vp.plant.setpoint_w == -7000.0 and vp.plant.enabled, f"reverted at cycle {k}"
            assert vp.plant.power_w == pytest.approx(-7000.0, abs=1)
            await wait_for(lambda: tags.value("inverter.write_mismatch") is False, 5)
            vp.advance(7.0)  # scan stopped: no more on_outputs (last refresh 9 s ago now)
            assert vp.plant.setpoint_w == -7000.0
            vp.advance(1.5)
            assert vp.plant.setpoint_w == 0.0 and vp.plant.enabled is False
            vp.advance(4.0)
            assert vp.plant.power_w == pytest.approx(0.0, abs=1)
            # the driver sees the device no longer holds what was written
            await wait_for(lambda: tags.value("inverter.write_mismatch") is True, 5, "mismatch reported")
            assert tags.value("inverter.setpoint_readback") == 0.0
        finally:
            await stopped(vp, drv, task)

    asyncio.run(main())


@pytest.mark.parametrize("asked,held", [(15000.0, 11000.0), (-15000.0, -11000.0)])
def test_readback_mismatch_when_device_clamps(asked: float, held: float) -> None:
    async def main() -> None:
        vp, drv, tags, task = await started("vendor_bidi_charger")
        try:
            drv.on_outputs(0, {"inverter.setpoint": asked, "inverter.enable": True}, {"inverter.setpoint": asked})
            await wait_for(lambda: tags.value("inverter.setpoint_readback") == held, 5)
            await wait_for(lambda: tags.value("inverter.write_mismatch") is True, 5, "mismatch")
            drv.on_outputs(20_000, {"inverter.setpoint": 0.0, "inverter.enable": True}, {"inverter.setpoint": 0.0})
            await wait_for(lambda: tags.value("inverter.write_mismatch") is False, 5, "mismatch cleared")
        finally:
            await stopped(vp, drv, task)

    asyncio.run(main())


def test_connection_refused_then_device_appears() -> None:
    async def main() -> None:
        port = free_port()
        drv = tcp_driver(port, "site_meter_tcp")
        io = IOContext()
        tags = Tags(io)
        task = asyncio.create_task(drv.run(io))
        plants = []
        try:
            await wait_for(lambda: tags.bad(*inputs(drv)), 5, "all bad while refused")
            vp = plant([{"name": "dev", "map": "site_meter_tcp", "port": port}])
            plants.append(vp)
            await vp.start()
            await wait_for(lambda: tags.good(*inputs(drv)), 10, "good after the device appears")
            assert tags.value("meter.energy_import") > 0
            await asyncio.wait_for(vp.stop(), TEARDOWN_S)
            await wait_for(lambda: tags.bad("meter.power"), 5, "bad after it vanishes")
            vp2 = plant([{"name": "dev", "map": "site_meter_tcp", "port": port}])
            plants.append(vp2)
            await vp2.start()
            await wait_for(lambda: tags.good(*inputs(drv)), 10, "good after it returns")
        finally:
            await teardown([task], [drv], plants)

    asyncio.run(main())


@pytest.mark.parametrize(
    "code,meaning",
    [
        (0x01, "Illegal Function"),
        (0x02, "Illegal Data Address"),
        (0x03, "Illegal Data Value"),
        (0x04, "Server Device Failure"),
        (0x0A, "Gateway Path Unavailable"),
        (0x0B, "Gateway Target Device Failed to Respond"),
    ],
)
def test_exception_codes_set_quality_and_are_logged(code: int, meaning: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="v2g_plc.io.modbus")

    async def main() -> None:
        vp, drv, tags, task = await started("site_meter_tcp")
        try:
            vp.inject("dev", Fault(exception=code))
            await wait_for(lambda: tags.bad("meter.power", "meter.voltage"), 5, "bad on exception")
            vp.inject("dev", None)
            await wait_for(lambda: tags.good("meter.power", "meter.voltage"), 5, "good after recovery")
        finally:
            await stopped(vp, drv, task)

    asyncio.run(main())
    assert f"0x{code:02X} {meaning}" in caplog.text


def test_write_exception_reports_mismatch() -> None:
    async def main() -> None:
        vp, drv, tags, task = await started("vendor_bidi_charger")
        try:
            vp.inject("dev", Fault(exception=0x03, addresses={40000}, on_write_only=True))
            drv.on_outputs(0, {"inverter.setpoint": 5000.0, "inverter.enable": True}, {"inverter.setpoint": 5000.0})
            await wait_for(lambda: tags.value("inverter.write_mismatch") is True, 5, "mismatch on refused write")
            vp.inject("dev", None)
            outs = {"inverter.setpoint": 5000.0, "inverter.enable": True}
            drv.on_outputs(20_000, outs, {})  # the refused value waits for its retry (1 s after the first)
            assert "inverter.setpoint" not in drv.units[0].wr.pending
            drv.on_outputs(1_000_000, outs, {})  # retried
            await wait_for(lambda: tags.value("inverter.write_mismatch") is False, 5, "accepted on retry")
            assert vp.plant.setpoint_w == 5000.0
        finally:
            await stopped(vp, drv, task)

    asyncio.run(main())


@pytest.mark.parametrize("fault", [Fault(silent=True), Fault(truncate=True)], ids=["silent", "truncated"])
def test_dead_device_does_not_delay_another(fault: Fault) -> None:
    async def main() -> None:
        a_port, b_port = free_port(), free_port()
        vp = plant(
            [
                {"name": "meter", "map": "site_meter_tcp", "port": a_port},
                {"name": "inverter", "map": INV, "port": b_port},
            ]
        )
        await vp.start()
        meter, inverter = tcp_driver(a_port, "site_meter_tcp", "meter"), tcp_driver(b_port, INV, "inverter")
        io = IOContext()
        tags = Tags(io)
        tasks = [asyncio.create_task(d.run(io)) for d in (meter, inverter)]
        try:
            await wait_for(lambda: tags.good(*inputs(meter), *inputs(inverter)), 10)
            vp.inject("meter", fault)
            await wait_for(lambda: tags.bad("meter.power"), 5, "dead meter turns bad")
            tags.poll()
            n0 = tags.count.get("inverter.power", 0)
            await asyncio.sleep(1.0)
            tags.poll()
            # the inverter keeps its fast poll going (every cycle; 40 ms without a scan) while the meter is dead
            assert tags.count["inverter.power"] - n0 >= 10
            assert tags.good("inverter.power")
            vp.inject("meter", None)
            await wait_for(lambda: tags.good("meter.power"), 10, "meter good after recovery")
        finally:
            await teardown(tasks, [meter, inverter], [vp])

    asyncio.run(main())


def test_learns_registers_the_device_rejects() -> None:
    """A coalesced read across a register the device rejects (0x02) is split and never bridged again."""

    async def main() -> None:
        vp, drv, tags, task = await started("site_meter_tcp")
        try:
            u = drv.units[0]
            assert len(drv._plan(u, set(PollClass))) == 1  # 0..13 bridged in one read
            vp.inject("dev", Fault(exception=0x02, addresses={7}))
            vp.advance(1.0)
            await wait_for(lambda: ("input", 7) in u.rd.rejected, 5, "gap learned")
            await wait_for(lambda: tags.good(*inputs(drv)), 5)
            assert len(drv._plan(u, set(PollClass))) == 2
        finally:
            await stopped(vp, drv, task)

    asyncio.run(main())


def test_not_implemented_value_is_bad_never_a_number() -> None:
    async def main() -> None:
        vp, drv, tags, task = await started("temperature_sensors")
        try:
            dev = vp.devices["dev"]
            # open-circuit sensor: the module reports 0x8000
            orig = dev.publish
            dev.publish = lambda values, t: (orig(values, t), dev.image.__setitem__(1, 0x8000))  # type: ignore[method-assign]
            vp.advance(0.1)
            await wait_for(lambda: tags.bad("temperature.coolant"), 10, "open circuit -> bad")
            assert tags.good("temperature.igbt")
        finally:
            await stopped(vp, drv, task)

    asyncio.run(main())


def test_several_units_on_one_link_one_map_two_devices() -> None:
    """Two chargers behind one gateway (unit ids 1 and 2), one map, the second renamed by prefix."""

    async def main() -> None:
        port = free_port()
        vp = plant(
            [
                {"name": "c1", "map": "vendor_bidi_charger", "port": port, "unit": 1},
                {"name": "c2", "map": "vendor_bidi_charger", "port": port, "unit": 2},
            ]
        )
        await vp.start()
        drv = tcp_driver(
            port,
            "",
            units=[
                {"unit": 1, "map": "vendor_bidi_charger"},
                {"unit": 2, "map": "vendor_bidi_charger", "prefix": "charger2."},
            ],
        )
        io = IOContext()
        tags = Tags(io)
        task = asyncio.create_task(drv.run(io))
        try:
            await wait_for(lambda: tags.good(*inputs(drv)), 10)
            assert "charger2.inverter.setpoint_readback" in inputs(drv)
            outs = {
                "inverter.setpoint": -7000.0,
                "inverter.enable": True,
                "charger2.inverter.setpoint": 3000.0,
                "charger2.inverter.enable": True,
            }
            drv.on_outputs(0, outs, outs)
            await wait_for(
                lambda: (
                    vp.devices["c1"].outputs["inverter.setpoint"] == -7000.0
                    and vp.devices["c2"].outputs["inverter.setpoint"] == 3000.0
                ),
                5,
            )
            await wait_for(
                lambda: (
                    tags.value("charger2.inverter.setpoint_readback") == 3000.0
                    and tags.value("inverter.setpoint_readback") == -7000.0
                ),
                5,
            )
        finally:
            await teardown([task], [drv], [vp])

    asyncio.run(main())


def test_duplicate_tags_and_missing_map_are_config_errors() -> None:
    with pytest.raises(ValueError, match="prefix/rename"):
        tcp_driver(1, "", units=[{"unit": 1, "map": "plc_modem"}, {"unit": 2, "map": "plc_modem"}])
    with pytest.raises(ValueError, match="not found"):
        tcp_driver(1, "no_such_map")
