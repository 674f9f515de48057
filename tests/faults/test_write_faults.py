"""Writes under faults: a set point the device refuses is re-sent on a schedule (not every cycle), said
once and summarised; a set point waits for its scale factor (no warning on a normal start, output left as
the device holds it); an undecodable read-back is a communications fault, never a mismatch."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

from tests.faults.proxy import Rule
from tests.faults.rig import Rig, rig
from tests.io.helpers import wait_for

INV = "sunspec_der_inverter"
CHARGER = "vendor_bidi_charger"
LOG = "v2g_plc.io.modbus"


@contextlib.asynccontextmanager
async def scan(r: Rig, outs: dict[str, Any], period_us: int = 20_000) -> AsyncIterator[dict[str, Any]]:
    """A stand-in for the scan: commits ``outs`` every cycle from now on (the dict may be changed)."""

    async def loop() -> None:
        k = 0
        last: Mapping[str, Any] = {}
        while True:
            changed = {t: v for t, v in outs.items() if last.get(t) != v}
            r.drv.on_outputs(k * period_us, dict(outs), changed)
            last = dict(outs)
            k += 1
            await asyncio.sleep(period_us / 1e6)  # pacing of the stand-in scan, not synchronisation

    task = asyncio.create_task(loop())
    try:
        yield outs
    finally:
        task.cancel()
        await asyncio.wait([task], timeout=2.0)


def warnings(caplog: pytest.LogCaptureFixture, text: str) -> int:
    return sum(
        1 for rec in caplog.records if rec.name == LOG and rec.levelno >= logging.WARNING and text in rec.message
    )


def test_refused_write_backs_off_logs_once_and_a_changed_value_goes_at_once(caplog: pytest.LogCaptureFixture) -> None:
    """Cycle clock in 0.5 s steps (simulated): the refused value goes out at 0, 1, 3, 7, 15, 31, 61, 91,
    121, 151 s (1, 2, 4, 8, 16, then every 30 s), never in between; one warning, one summary at 10."""
    caplog.set_level(logging.INFO, logger=LOG)

    async def main() -> None:
        async with rig(CHARGER) as r:
            await wait_for(lambda: r.tags.good(*r.inputs), 10)
            u = r.drv.units[0]
            r.proxy.inject(Rule("exception", code=0x03, function={16}, addresses=range(40000, 40001)))
            outs = {"inverter.setpoint": 5000.0, "inverter.enable": True}
            sent_at: list[float] = []
            for k in range(303):
                t_us = k * 500_000
                r.drv.on_outputs(t_us, outs, outs if k == 0 else {})
                if "setpoint" in u.wr.pending:
                    sent_at.append(t_us / 1e6)
                    n = len(sent_at)
                    await wait_for(lambda n=n: r.drv.faults["refused_write"] == n, 5, f"refusal {n} answered")
            assert sent_at == [0, 1, 3, 7, 15, 31, 61, 91, 121, 151]
            assert r.proxy.count("exception", 16) == 10
            await wait_for(lambda: r.tags.value("inverter.write_mismatch") is True, 5, "mismatch while refused")
            # a changed value (a trip's zero) is not held back by the schedule of the refused one
            t_us = 303 * 500_000
            zero = {"inverter.setpoint": 0.0, "inverter.enable": False}
            r.drv.on_outputs(t_us, zero, zero)
            assert u.wr.pending.get("setpoint") == 0.0
            await wait_for(lambda: r.drv.faults["refused_write"] == 11, 5, "zero sent at once")
            r.proxy.clear()
            r.drv.on_outputs(t_us + 500_000, zero, {})  # not due yet: 1 s after its refusal
            assert "setpoint" not in u.wr.pending
            r.drv.on_outputs(t_us + 1_000_000, zero, {})
            await wait_for(
                lambda: r.vp.plant.setpoint_w == 0.0 and r.vp.devices["dev"].outputs["inverter.enable"] is False, 5
            )
            await wait_for(lambda: r.tags.value("inverter.write_mismatch") is False, 5, "accepted once healed")

    asyncio.run(main())
    assert warnings(caplog, "exception 0x03 Illegal Data Value") == 1
    assert warnings(caplog, "still refused after 10 attempts") == 1
    assert any("recovered" in rec.message and "0x03" in rec.message for rec in caplog.records)


def test_setpoint_waits_for_its_scale_factor_on_a_normal_start(caplog: pytest.LogCaptureFixture) -> None:
    """The scan commits outputs from its first cycle, before the link is up and while the first read (of
    the scale factors) runs: the set point is written once WSet_SF is known, with no warning and no
    mismatch (which the safety layer would latch as write_mismatch)."""
    caplog.set_level(logging.INFO, logger=LOG)

    async def main() -> None:
        async with rig(INV, start=False) as r, scan(r, {"inverter.setpoint": -3000.0, "inverter.enable": True}):
            r.start()
            await wait_for(lambda: r.tags.good(*r.inputs), 10)
            await wait_for(lambda: r.tags.get("inverter.setpoint_readback") == -3000.0, 5, "read back")
            assert r.tags.value("inverter.write_mismatch") is False
            assert r.vp.plant.setpoint_w == -3000.0
            assert not any(r.drv.units[0].wr.mismatch.values())

    asyncio.run(main())
    assert [rec.message for rec in caplog.records if rec.name == LOG and rec.levelno >= logging.WARNING] == []


def test_unusable_scale_factor_holds_the_setpoint_and_reads_back_bad(caplog: pytest.LogCaptureFixture) -> None:
    """WSet_SF not implemented (0x8000): no set point is guessed; the device keeps its own (0 W), the
    read-back and mismatch tags are bad (communications, not a mismatch), one warning; the write goes out
    once the scale factor reads right."""
    caplog.set_level(logging.INFO, logger=LOG)

    async def main() -> None:
        async with rig(INV, start=False) as r:
            dev = r.vp.devices["dev"]
            sf_addr = dev.addr["WSet_SF"]
            dev.image[sf_addr] = 0x8000
            async with scan(r, {"inverter.setpoint": -3000.0, "inverter.enable": True}):
                r.start()
                await wait_for(
                    lambda: (
                        r.tags.good("inverter.power")
                        and r.tags.bad("inverter.setpoint_readback", "inverter.write_mismatch")
                    ),
                    10,
                )
                wset = r.drv.units[0].disc.addr["WSet"][1]
                assert not [q for q in r.proxy.seen if q.function == 16 and q.address == wset]
                assert r.vp.plant.setpoint_w == 0.0
                dev.image[sf_addr] = 0  # the device reports its scale factor
                await wait_for(lambda: r.tags.good("inverter.setpoint_readback"), 10, "read-back good")
                await wait_for(lambda: r.tags.get("inverter.setpoint_readback") == -3000.0, 5)
                assert r.tags.value("inverter.write_mismatch") is False
                assert r.vp.plant.setpoint_w == -3000.0

    asyncio.run(main())
    assert warnings(caplog, "holding write of WSet:") == 1
    assert warnings(caplog, "cannot write") == 0


def test_undecodable_readback_is_a_communications_fault() -> None:
    async def main() -> None:
        async with rig(INV) as r:
            async with scan(r, {"inverter.setpoint": -3000.0, "inverter.enable": True}):
                await wait_for(lambda: r.tags.get("inverter.setpoint_readback") == -3000.0, 10, "read back")
                assert r.tags.value("inverter.write_mismatch") is False
            # the scan stopped (no rewrite); the device's WSet register now holds int32 "not implemented"
            dev = r.vp.devices["dev"]
            a = dev.addr["WSet"]
            dev.image[a], dev.image[a + 1] = 0x8000, 0x0000
            await wait_for(lambda: r.tags.bad("inverter.setpoint_readback", "inverter.write_mismatch"), 10)
            assert not any(r.drv.units[0].wr.mismatch.values())

    asyncio.run(main())
