"""The SunSpec server on a depot, against pysunspec2's and pymodbus's clients over loopback: the site unit
(meter, aggregate, connection model 64902), one unit per EVSE with its own tags (both power signs and
zero), 704 writes becoming mode requests for that EVSE only with their own reversion, the connection
limits (range, expiry, published tags, the protocol's errors), the unit numbering refusing an overlap, and
a single site's unit 1 unchanged to the register."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pydantic
import pytest
import sunspec2.device as ssd
import sunspec2.modbus.client as ssc
from pymodbus.client import AsyncModbusTcpClient

from runtime.tags import US, Image, Quality, TagValue
from runtime.tasks.base import TaskContext
from runtime.tasks.localapi import modbus_server
from runtime.tasks.localapi.access import AllowEntry
from runtime.tasks.localapi.connection import EXPORT_TAG, IMPORT_TAG
from runtime.tasks.localapi.modbus_server import ModbusServer, ModbusServerParams
from runtime.tasks.localapi.sunspec import BASE, SunSpecImage
from runtime.tasks.localapi.vendor_model import CONNECTION_ID, DEFINITIONS
from tests.localapi.depot import RATING, Recorder, depot_tags
from tests.localapi.test_modbus_server import GOOD_TAGS, SITE, image
from tests.ports import free_port
from tests.waiting import cancel_and_wait, until

RW = [AllowEntry(address="127.0.0.1", role="read_write")]
RO = [AllowEntry(address="127.0.0.1", role="read_only")]


@asynccontextmanager
async def depot_server(
    allow: list[AllowEntry] = RW, rec: Recorder | None = None, **kw: Any
) -> AsyncIterator[tuple[ModbusServer, TaskContext, Recorder]]:
    port = free_port()
    kw = {"evses": [1, 2, 3], "max_charge_w": 11000, "max_discharge_w": 11000, "reversion_s": 30, **kw}
    params = ModbusServerParams(port=port, allow=allow, **kw)
    task = ModbusServer("modbus", params, SITE)
    rec = rec or Recorder()
    cx = rec.context()
    runner = asyncio.create_task(task.run(cx))

    def listening() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            return False

    try:
        await until(lambda: task.port is not None and listening(), "the server to listen")
        yield task, cx, rec
    finally:
        await cancel_and_wait(runner, 5)


@pytest.fixture(autouse=True)
def vendor_models_on_path(tmp_path: Path) -> Iterator[None]:
    """The EMS side: both vendor models' JSON definitions on pysunspec2's model path."""
    for mid, definition in DEFINITIONS.items():
        (tmp_path / f"model_{mid}.json").write_text(json.dumps(definition))
    old = ssd.get_model_defs_path()
    ssd.set_model_defs_path([str(tmp_path), *old])
    for mid in DEFINITIONS:
        ssd.model_defs_cache.pop((mid, True), None)
    try:
        yield
    finally:
        ssd.set_model_defs_path(old)


def ems(port: int, unit: int) -> ssc.SunSpecModbusClientDeviceTCP:
    d = ssc.SunSpecModbusClientDeviceTCP(slave_id=unit, ipaddr="127.0.0.1", ipport=port, timeout=5)
    d.scan()
    return d


async def read_all(c: AsyncModbusTcpClient, unit: int, count: int) -> list[int]:
    out: list[int] = []
    while len(out) < count:
        n = min(100, count - len(out))
        rr = await c.read_holding_registers(BASE + len(out), count=n, device_id=unit)
        assert not rr.isError(), rr
        out += rr.registers
    return out


def test_a_single_sites_unit_1_is_unchanged_to_the_register(monkeypatch: pytest.MonkeyPatch) -> None:
    """The registers a single site served before depots (tests/localapi/data), read over the wire, good
    tags and then every tag bad: the depot work moved nothing."""
    lines = [ln for ln in (Path(__file__).parent / "data" / "unit1_registers.txt").read_text().splitlines()]
    good, bad = ([int(h, 16) for h in ln.split()] for ln in lines if not ln.startswith("#"))
    monkeypatch.setattr(modbus_server, "_version", lambda: "0.0.0")

    async def main() -> None:
        rec = Recorder()
        async with depot_server(rec=rec, evses=[], max_discharge_w=10000) as (task, cx, _):
            assert sorted(task.images) == [1] and task.declare() == []
            c = AsyncModbusTcpClient("127.0.0.1", port=task.port)
            await c.connect()
            try:
                await cx._publish(image(GOOD_TAGS), 1800 * US)
                assert await read_all(c, 1, len(good)) == good
                await cx._publish(image(GOOD_TAGS, bad=tuple(GOOD_TAGS)), 1801 * US)
                assert await read_all(c, 1, len(bad)) == bad
                rr = await c.read_holding_registers(BASE, count=1, device_id=2)  # no other unit
                assert rr.isError()
            finally:
                c.close()

    asyncio.run(main())


def test_each_evse_is_its_own_unit_and_the_site_unit_is_the_aggregate() -> None:
    async def main() -> None:
        async with depot_server() as (task, cx, _):
            assert sorted(task.images) == [1, 2, 3, 4]
            await cx._publish(image(depot_tags()), 1 * US)
            site = await asyncio.to_thread(ems, task.port, 1)
            units = [await asyncio.to_thread(ems, task.port, n + 1) for n in (1, 2, 3)]
            try:
                assert set(site.models) >= {1, 701, 702, CONNECTION_ID} and 704 not in site.models
                m701, conn = site.models[701][0], site.models[CONNECTION_ID][0]
                assert m701.W.cvalue == pytest.approx(-48_000)  # import 48 kW: SunSpec's export-positive sign
                assert m701.LLV.cvalue == pytest.approx(240.5) and m701.Hz.cvalue == pytest.approx(60.01)
                assert site.models[702][0].WChaRteMaxRtg.cvalue == pytest.approx(33_000)  # 3 x 11 kW
                assert conn.NEvse.value == 3 and conn.EvseUnitOfs.value == 1
                assert conn.NTrip.value == 1 and conn.NCut.value == 1
                assert conn.Bldg.cvalue == pytest.approx(45_000) and conn.ShortWh.cvalue == pytest.approx(1500)
                assert conn.FleetSt.value == "optimal"
                assert conn.ImpLim.value is None  # this interface does not carry the limits
                # EVSE n on unit n + 1, its own power: charging (SunSpec negative), discharging, zero
                for n, d, w in ((1, units[0], -7000), (2, units[1], 4000), (3, units[2], 0)):
                    assert d.models[1][0].DA.value == n + 1 and d.models[1][0].Md.value == f"V2G site evse{n}"
                    assert d.models[701][0].W.cvalue == w and d.models[64901][0].WSetOut.cvalue == w
                    assert d.models[713][0].SoC.cvalue == pytest.approx(10.0 * n)
                    assert d.models[64901][0].PrcRT.cvalue == pytest.approx(95.67)  # the site's price
                assert units[1].models[64901][0].TripCode.value == "comms_lost"
                assert units[0].models[64901][0].Trip.value == 0
            finally:
                for d in (site, *units):
                    d.close()

    asyncio.run(main())


def test_a_704_write_asks_for_its_own_evse_and_reverts_only_that_evse() -> None:
    async def main() -> None:
        async with depot_server() as (task, cx, rec):
            await cx._publish(image(depot_tags()), 1 * US)
            c = AsyncModbusTcpClient("127.0.0.1", port=task.port)
            await c.connect()
            try:
                img = task.images[3]  # EVSE 2
                a704 = img.address[704]
                pts = img.models[704].points
                rr = await c.write_registers(a704 + pts["WSetRvrtTms"].offset, [0, 5], device_id=3)
                assert not rr.isError()
                rr = await c.write_registers(a704 + pts["WSet"].offset, [0, 3000], device_id=3)  # discharge
                assert not rr.isError()
                rr = await c.write_register(a704 + pts["WSetEna"].offset, 1, device_id=3)
                assert not rr.isError()
                await until(lambda: len(rec.commands) == 3, "three mode requests")
                kind, args, by = rec.commands[-1]
                assert kind == "mode_request" and by == "modbus:127.0.0.1"
                assert args == {"mode": "remote", "setpoint_w": -3000.0, "expiry_s": 5.0, "evse": 2}
                assert all(a["evse"] == 2 for _, a, _ in rec.commands)
                # no refresh for 5 s of cycle clock: EVSE 2 alone goes back to local, its unit shows it
                t = 2 * US
                while not any(by.endswith("(reversion)") for _, _, by in rec.commands):
                    t += US
                    assert t < 20 * US, "no reversion"
                    await cx._publish(image(depot_tags()), t)
                    await asyncio.sleep(0.01)  # let the reversion timer see the new clock
                await until(lambda: img.control_values()["WSetEna"] == 0, "EVSE 2's 704 to show the hand-back")
                ena = await c.read_holding_registers(a704 + pts["WSetEna"].offset, count=1, device_id=3)
                assert ena.registers == [0]
                assert rec.commands[-1][:2] == ("mode_request", {"mode": "local", "evse": 2})
                other = task.images[2]
                assert other.control_values() == other.accepted  # EVSE 1's controls were never touched
            finally:
                c.close()

    asyncio.run(main())


def test_connection_limits_from_modbus_range_expiry_and_errors(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async with depot_server(connection=RATING) as (task, cx, rec):
            assert {s.name for s in task.declare()} == {IMPORT_TAG, EXPORT_TAG}
            await cx._publish(image(depot_tags()), 1 * US)
            await until(lambda: rec.last(IMPORT_TAG) is not None, "the limits published")
            assert (rec.last(IMPORT_TAG), rec.last(EXPORT_TAG)) == (100_000.0, 60_000.0)  # none: the rating
            img = task.images[1]
            a = img.address[CONNECTION_ID]
            pts = img.models[CONNECTION_ID].points
            imp, exp, rvrt = (a + pts[n].offset for n in ("ImpLim", "ExpLim", "LimRvrtTms"))
            c = AsyncModbusTcpClient("127.0.0.1", port=task.port)
            await c.connect()
            try:
                # both limits and their lifetime in one write (the pair is contiguous), then refused writes
                rr = await c.write_registers(imp, [0, 50_000, 0, 0, 0, 10], device_id=1)
                assert not rr.isError()
                bad = [
                    (imp, [0x0001, 0x86A1]),  # 100001 W: above the import rating
                    (exp, [0xFFFF, 0xFFFF]),  # the not-implemented sentinel is no limit
                    (rvrt, [0, 0]),  # a lifetime of 0
                ]
                for addr, regs in bad:
                    rr = await c.write_registers(addr, regs, device_id=1)
                    assert rr.isError() and rr.exception_code == 3
                rr = await c.write_register(imp + 1, 7, device_id=1)  # half of a 32-bit point
                assert rr.isError() and rr.exception_code == 2
                rr = await c.write_registers(imp, [0, 1000], device_id=2)  # an EVSE unit has no limits
                assert rr.isError() and rr.exception_code == 2
                await cx._publish(image(depot_tags()), 2 * US)
                await until(lambda: rec.last(EXPORT_TAG) == 0.0, "the new limits published")
                assert rec.last(IMPORT_TAG) == 50_000.0  # the refused writes changed nothing
                rr = await c.read_holding_registers(imp, count=6, device_id=1)
                assert rr.registers == [0, 50_000, 0, 0, 0, 10]
                assert not rec.commands  # a limit is the task's own: nothing asks the scan
                # not refreshed within 10 s of cycle clock: back to the rating, never above it
                await cx._publish(image(depot_tags()), 11 * US)
                await until(lambda: rec.last(IMPORT_TAG) == 100_000.0, "the limits to expire")
                assert rec.last(EXPORT_TAG) == 60_000.0
                rr = await c.read_holding_registers(imp, count=4, device_id=1)
                assert rr.registers == [1, 100_000 - 65_536, 0, 60_000]
            finally:
                c.close()
        async with depot_server(allow=RO, connection=RATING) as (task, cx, rec):
            c = AsyncModbusTcpClient("127.0.0.1", port=task.port)
            await c.connect()
            try:
                img = task.images[1]
                imp = img.address[CONNECTION_ID] + img.models[CONNECTION_ID].points["ImpLim"].offset
                rr = await c.write_registers(imp, [0, 1000], device_id=1)
                assert rr.isError() and rr.exception_code == 1
            finally:
                c.close()

    with caplog.at_level(logging.INFO):
        asyncio.run(main())
    assert "outside 0..100000" in caplog.text and "back to the rating" in caplog.text


def _image(**kw: Any) -> SunSpecImage:
    """A one-charger image of the test's site, with ``kw`` on top (connection, EVSEs)."""
    base: dict[str, Any] = {
        "prefix": "",
        "unit": 1,
        "serial": "s",
        "version": "0",
        "nominal_voltage": 240.0,
        "max_charge_w": 11000,
        "max_discharge_w": 11000,
        "reversion_s": 60,
    }
    return SunSpecImage(**{**base, **kw})


def test_a_single_site_carries_the_limits_on_unit_1_after_its_own_models() -> None:
    img = _image(connection=(20_000.0, 5_000.0))
    plain = _image()
    assert img.model_ids[:-1] == plain.model_ids and img.model_ids[-1] == CONNECTION_ID
    assert img.registers()[: img.address[CONNECTION_ID] - BASE] == plain.registers()[:-2]


@pytest.mark.parametrize(
    ("kw", "why"),
    [
        ({"site_unit": 3}, "site_unit 3 is EVSE 2's unit"),
        ({"evse_unit_offset": 0}, "site_unit 1 is EVSE 1's unit"),
        ({"evses": [1, 246]}, "EVSE 246 would be unit 247"),  # fits: no error expected (checked below)
        ({"evses": [1, 247]}, "EVSE 247 would be unit 248"),
    ],
)
def test_the_unit_numbering_refuses_an_overlap(kw: dict[str, Any], why: str) -> None:
    args: dict[str, Any] = {"allow": RW, "max_charge_w": 11000, "max_discharge_w": 11000, "evses": [1, 2, 3], **kw}
    if kw.get("evses") == [1, 246]:
        assert ModbusServerParams(**args).evse_units() == {1: 2, 246: 247}
        return
    with pytest.raises(pydantic.ValidationError, match=why):
        ModbusServerParams(**args)


def test_an_image_without_tags_reads_not_implemented() -> None:
    img = _image(evses=(1, 2), evse_unit_offset=1)
    img.update(Image({"meter.power": TagValue(5.0, Quality.BAD, 0)}))
    m = img.models
    assert m[701].points["W"].value is None and m[CONNECTION_ID].points["NTrip"].value == 0


def test_the_depot_register_map_in_docs_is_generated() -> None:
    from runtime.tasks.localapi.sunspec import register_map_markdown

    doc = (Path(__file__).parents[2] / "docs" / "local-api.md").read_text()
    assert register_map_markdown(depot=True) in doc, "docs/local-api.md: regenerate the depot's register map"


class _SlowScan(Recorder):
    """A scan that keeps every answer until released: the writes pile up behind the first."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def __call__(self, source: str, kind: str, args: Any, by: str) -> tuple[bool, str]:
        await self.release.wait()
        return await super().__call__(source, kind, args, by)


def test_writes_faster_than_the_scan_answers_are_busy_not_an_unbounded_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(modbus_server, "OUTBOX_MAX", 3)

    async def main() -> None:
        slow = _SlowScan()
        async with depot_server(rec=slow) as (task, _cx, _):
            c = AsyncModbusTcpClient("127.0.0.1", port=task.port)
            await c.connect()
            try:
                img = task.images[2]  # EVSE 1
                ena = img.address[704] + img.models[704].points["WSetEna"].offset
                answers = [await c.write_register(ena, k % 2, device_id=2) for k in range(6)]
                # one write is with the scan, three wait: the rest are busy (0x06), and the client may retry
                busy = [r.exception_code for r in answers if r.isError()]
                assert busy == [0x06] * 2 and not answers[0].isError()
                slow.release.set()
                await until(lambda: len(slow.commands) == 4, "the four writes taken to reach the scan")
                again = await c.write_register(ena, 1, device_id=2)
                assert not again.isError()  # the queue drained: writes are taken again
            finally:
                c.close()

    asyncio.run(main())
