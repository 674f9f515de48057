"""The SunSpec server against pysunspec2's own client over loopback: discovery, every model, scale factors,
sentinels, the sign, writes becoming commands to the scan's real gate (answers in the registers, reversion,
opt-in trip reset), bad writes, a read-only and a refused client."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import struct
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import sunspec2.device as ssd
import sunspec2.modbus.client as ssc
from pymodbus.client import AsyncModbusTcpClient

from runtime.api import SiteInfo
from runtime.tags import US, Image, Quality, TagValue
from runtime.tasks.base import TASKS, TaskContext
from runtime.tasks.localapi.access import AllowEntry
from runtime.tasks.localapi.modbus_server import ModbusServer, ModbusServerParams
from runtime.tasks.localapi.sunspec import register_map_markdown
from runtime.tasks.localapi.vendor_model import DEFINITION, VENDOR_ID
from tests.localapi.scan import GateScan
from tests.ports import free_port
from tests.waiting import cancel_and_wait, until

SITE = SiteInfo("test-site", 240.0, 60.0, 20_000)

GOOD_TAGS: dict[str, Any] = {
    "inverter.power": -5000.0,  # discharging 5 kW in the project's sign
    "inverter.enable": True,
    "inverter.connected": True,
    "grid.voltage": 241.3,
    "grid.frequency": 59.987,
    "inverter.energy_export": 12345.0,
    "inverter.energy_import": 23456.0,
    "inverter.temperature": 41.5,
    "safety.trip": "",
    "ev.capacity_wh": 60000.0,
    "ev.energy_available": 27000.0,
    "ev.soc": 0.45,
    "ev.soh": 0.95,
    "mode.state": "discharge",
    "safety.reason": "",
    "safety.cessation": False,
    "safety.limit_charge": 11000.0,
    "safety.limit_discharge": 8000.0,
    "plan.power": -6000.0,
    "inverter.setpoint": -5000.0,
    # the task clock starts at 2027-01-04 00:00 (naive: UTC); negative prices happen
    "prices.day_ahead": [
        {"start": "2027-01-04T00:00:00+00:00", "end": "2027-01-04T01:00:00+00:00", "price": -12.34},
        {"start": "2027-01-04T01:00:00+00:00", "end": "2027-01-04T02:00:00+00:00", "price": 87.5},
    ],
    "prices.real_time": 95.67,
    "plan.price": -12.3,
}


def image(tags: dict[str, Any], bad: tuple[str, ...] = ()) -> Image:
    out = {n: TagValue(v, Quality.GOOD, 0) for n, v in tags.items()}
    out.update({n: TagValue(tags.get(n), Quality.BAD, 0) for n in bad})
    return Image(out)


def gate_scan(allow: tuple[str, ...] = ("mode_request",)) -> GateScan:
    """The scan's real gate, with the Modbus task allowed to ask for ``allow``."""
    return GateScan({"modbus": "localapi_modbus"}, {"localapi_modbus": list(allow)})


@asynccontextmanager
async def server(
    allow: list[AllowEntry],
    scan: GateScan | None = None,
    **kw: Any,
) -> AsyncIterator[tuple[ModbusServer, TaskContext]]:
    port = free_port()
    params = ModbusServerParams(
        host="0.0.0.0" if any(a.address != "127.0.0.1" for a in allow) else "127.0.0.1",
        port=port,
        allow=allow,
        max_charge_w=11000,
        max_discharge_w=10000,
        reversion_s=30,
        **kw,
    )
    task = ModbusServer("modbus", params, SITE)
    cx = (scan or gate_scan()).context("modbus")
    runner = asyncio.create_task(task.run(cx))

    def listening() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            return False

    try:
        await until(lambda: task.port is not None and listening(), "the server to listen")
        yield task, cx
    finally:
        await cancel_and_wait(runner, 5)


@pytest.fixture(autouse=True)
def vendor_model_on_path(tmp_path: Path) -> Iterator[None]:
    """The EMS side: the vendor model's JSON definition on pysunspec2's model path."""
    (tmp_path / f"model_{VENDOR_ID}.json").write_text(json.dumps(DEFINITION))
    old = ssd.get_model_defs_path()
    ssd.set_model_defs_path([str(tmp_path), *old])
    ssd.model_defs_cache.pop((VENDOR_ID, True), None)
    try:
        yield
    finally:
        ssd.set_model_defs_path(old)


def ems(port: int, unit: int = 1) -> ssc.SunSpecModbusClientDeviceTCP:
    d = ssc.SunSpecModbusClientDeviceTCP(slave_id=unit, ipaddr="127.0.0.1", ipport=port, timeout=5)
    d.scan()
    return d


RW = [AllowEntry(address="127.0.0.1", role="read_write")]


def test_registered() -> None:
    assert TASKS["localapi_modbus"] is ModbusServer


def test_discovery_every_model_sign_and_sentinels() -> None:
    async def main() -> None:
        async with server(RW) as (task, cx):
            await cx._publish(image(GOOD_TAGS), 1 * US)
            d = await asyncio.to_thread(ems, task.port)
            try:
                assert sorted(k for k in d.models if isinstance(k, int)) == [1, 701, 702, 704, 713, 64901]
                common = d.models[1][0]
                assert common.Mn.value == "v2g-plc" and common.SN.value == "test-site" and common.DA.value == 1
                m = d.models[701][0]
                assert m.W.cvalue == 5000  # SunSpec: discharge (export) is positive
                assert m.W_SF.value == 0
                assert m.LLV.cvalue == pytest.approx(241.3)
                assert m.Hz.cvalue == pytest.approx(59.987)
                assert m.St.value == 1 and m.ConnSt.value == 1 and m.Alrm.value == 0
                assert m.TotWhInj.cvalue == 12345 and m.TotWhAbs.cvalue == 23456
                assert m.TmpSw.cvalue == pytest.approx(41.5)
                assert m.VA.value is None  # never measured: the not-implemented sentinel
                cap = d.models[702][0]
                assert cap.WChaRteMaxRtg.cvalue == 11000 and cap.WDisChaRteMaxRtg.cvalue == 10000
                assert cap.WMaxRtg.cvalue == 11000 and cap.VNomRtg.cvalue == 240
                ctl = d.models[704][0]
                assert ctl.WSetEna.value == 0 and ctl.WSetMod.value == 1 and ctl.WSetRvrtTms.value == 30
                st = d.models[713][0]
                assert st.SoC.cvalue == pytest.approx(45.0) and st.SoH.cvalue == pytest.approx(95.0)
                assert st.WHRtg.cvalue == 60000 and st.WHAvail.cvalue == 27000
                v = d.models[64901][0]  # the vendor model, read through its published JSON definition
                assert v.Mode.value == 2 and v.Trip.value == 0 and v.TripCode.value in ("", None)
                assert v.WLimCha.cvalue == 11000 and v.WLimDis.cvalue == 8000
                assert v.WPlan.cvalue == 6000 and v.WSetOut.cvalue == 5000  # SunSpec sign: + = discharge
                assert v.Prc_SF.value == -2
                assert v.PrcDA.cvalue == pytest.approx(-12.34) and v.PrcRT.cvalue == pytest.approx(95.67)
                assert v.PrcPlan.cvalue == pytest.approx(-12.3)

                # charging: SunSpec W is negative; a bad tag reads as the sentinel; a trip sets its alarm bit
                tags = {
                    **GOOD_TAGS,
                    "inverter.power": 7000.0,
                    "safety.trip": "ov2",
                    "safety.reason": "ov2: grid.voltage 1.21 pu",
                    "mode.state": "safe_state",
                }
                await cx._publish(image(tags, bad=("ev.soc", "grid.frequency", "prices.real_time")), 2 * US)
                for mid in (701, 713, 64901):
                    await asyncio.to_thread(d.models[mid][0].read)
                v = d.models[64901][0]
                assert v.Mode.value == 3 and v.Trip.value == 1 and v.TripCode.value == "ov2"
                assert v.TripRsn.value == "ov2: grid.voltage 1.21 pu"
                m, st = d.models[701][0], d.models[713][0]
                assert m.W.cvalue == -7000
                assert m.Hz.value is None and st.SoC.value is None
                assert m.Alrm.value == 1 << 10  # AC_OVER_VOLT
                assert v.PrcDA.cvalue == pytest.approx(-12.34) and v.PrcRT.value is None  # bad price: sentinel
                # zero power is a value, not a sentinel; an hour on, the next day-ahead interval
                await cx._publish(image({**GOOD_TAGS, "inverter.power": 0.0, "prices.real_time": 0.0}), 3601 * US)
                for mid in (701, 64901):
                    await asyncio.to_thread(d.models[mid][0].read)
                assert d.models[701][0].W.value == 0
                v = d.models[64901][0]
                assert v.PrcDA.cvalue == pytest.approx(87.5) and v.PrcRT.value == 0
                # past the known curve, a price that does not fit int32 at 0.01: not implemented, never wrapped
                await cx._publish(image({**GOOD_TAGS, "prices.real_time": 3e7}), 7201 * US)
                await asyncio.to_thread(v.read)
                assert v.PrcDA.value is None and v.PrcRT.value is None and v.PrcPlan.cvalue == pytest.approx(-12.3)
            finally:
                d.close()

    asyncio.run(main())


def test_writes_become_mode_requests(caplog: pytest.LogCaptureFixture) -> None:
    scan = gate_scan()

    async def main() -> None:
        async with server(RW, scan=scan) as (task, cx):
            await cx._publish(image(GOOD_TAGS), 1 * US)
            d = await asyncio.to_thread(ems, task.port)
            try:
                ctl, site = d.models[704][0], d.models[VENDOR_ID][0]
                ctl.WSet.cvalue = 4000  # SunSpec: 4 kW discharge
                ctl.WSetEna.value = 1
                ctl.WSetRvrtTms.value = 120
                await asyncio.to_thread(ctl.write)  # pysunspec2 writes each changed point on its own
                await until(
                    lambda: len(scan.modes()) > 0 and scan.modes()[-1]["expiry_s"] == 120, "the requests at the gate"
                )
                last = scan.modes()[-1]
                assert last["mode"] == "remote" and last["setpoint_w"] == -4000.0  # project sign: discharge < 0
                assert last["expiry_s"] == 120 and (last["source"], last["by"]) == ("modbus", "modbus:127.0.0.1")
                await until(lambda: task.images[1].accepted["WSetEna"] == 1, "the answer")
                await asyncio.to_thread(ctl.read)
                await asyncio.to_thread(site.read)
                assert ctl.WSet.cvalue == 4000 and ctl.WSetEna.value == 1  # what the scan accepted
                assert site.CmdSt.value == 2  # ACCEPTED
                n = len(scan.modes())
                ctl.WSet.cvalue = -11000  # full charge rating: the edge is inside
                await asyncio.to_thread(ctl.write)
                await until(lambda: len(scan.modes()) == n + 1, "the second request")
                assert scan.modes()[-1]["setpoint_w"] == 11000.0
                ctl.WSetEna.value = 0
                await asyncio.to_thread(ctl.write)
                await until(lambda: len(scan.modes()) == n + 2, "the hand back")
                assert scan.modes()[-1]["mode"] == "local" and "setpoint_w" not in scan.modes()[-1]
            finally:
                d.close()
        assert "mode request from modbus:127.0.0.1 accepted" in caplog.text

    with caplog.at_level(logging.INFO):
        asyncio.run(main())


def test_refused_write_reads_back_what_the_scan_holds() -> None:
    """The gate refuses (the site file does not allow the Modbus task mode requests): the write was
    accepted on the wire, but the registers go back to the controls in force and say why."""
    scan = gate_scan(allow=())

    async def main() -> None:
        async with server(RW, scan=scan) as (task, cx):
            await cx._publish(image(GOOD_TAGS), 1 * US)
            d = await asyncio.to_thread(ems, task.port)
            try:
                ctl, site = d.models[704][0], d.models[VENDOR_ID][0]
                ctl.WSet.cvalue = 3000
                ctl.WSetEna.value = 1
                await asyncio.to_thread(ctl.write)  # no Modbus exception: access and range were fine
                await until(lambda: len(scan.refused) == 2 and task._outbox.empty(), "both refusals")  # one per point
                await until(lambda: task.images[1].control_values()["WSetEna"] == 0, "the registers restored")
                await asyncio.to_thread(ctl.read)
                await asyncio.to_thread(site.read)
                assert ctl.WSetEna.value == 0 and ctl.WSet.cvalue == 0
                assert site.CmdSt.value == 3  # REFUSED
                assert site.CmdRsn.value.startswith("mode_request not allowed")
                assert not scan.accepted
            finally:
                d.close()

    asyncio.run(main())


def test_reversion_hands_back_on_the_cycle_clock() -> None:
    """WSetRvrtTms 5 s and no refresh: 5 s of cycle clock later the task asks for local itself, and 704
    reads DISABLED; a refresh inside the window restarts it."""
    scan = gate_scan()

    async def main() -> None:
        async with server(RW, scan=scan) as (task, cx):
            await cx._publish(image(GOOD_TAGS), 1 * US)
            d = await asyncio.to_thread(ems, task.port)
            try:
                ctl = d.models[704][0]
                ctl.WSet.cvalue = -2000
                ctl.WSetEna.value = 1
                ctl.WSetRvrtTms.value = 5
                await asyncio.to_thread(ctl.write)
                await until(lambda: len(scan.modes()) > 0 and scan.modes()[-1]["expiry_s"] == 5, "the remote request")
                await until(lambda: task._outbox.empty(), "every point answered")
                await cx._publish(image(GOOD_TAGS), 5 * US)  # 4 s later: still inside
                n = len(scan.modes())
                ctl.WSet.cvalue = -2500  # the refresh
                await asyncio.to_thread(ctl.write)
                await until(lambda: len(scan.modes()) == n + 1, "the refresh")
                await cx._publish(image(GOOD_TAGS), 9 * US)  # 4 s after the refresh: no reversion
                await cx._publish(image(GOOD_TAGS), 9 * US + 1)
                assert {m["mode"] for m in scan.modes()} == {"remote"}
                await cx._publish(image(GOOD_TAGS), 10 * US + 1)  # 5 s after the refresh
                await until(lambda: len(scan.modes()) == n + 2, "the reversion")
                assert scan.modes()[-1]["mode"] == "local" and "reversion" in scan.modes()[-1]["by"]
                await until(lambda: task.images[1].control_values()["WSetEna"] == 0, "704 disabled")
                await asyncio.to_thread(ctl.read)
                assert ctl.WSetEna.value == 0
            finally:
                d.close()

    asyncio.run(main())


def test_trip_reset_is_opt_in_and_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    async def write_reset(task: ModbusServer) -> Any:
        img = task.images[1]
        c = AsyncModbusTcpClient("127.0.0.1", port=task.port, timeout=5, retries=0)
        await c.connect()
        try:
            return await c.write_register(img.trip_reset_address, 1, device_id=1)
        finally:
            c.close()

    async def main() -> None:
        scan = gate_scan(("mode_request", "reset_trip"))
        async with server(RW, scan=scan) as (task, cx):  # not opted in: TripRst is read-only
            rr = await write_reset(task)
            assert rr.isError() and rr.exception_code == 2
        assert not scan.accepted
        async with server(RW, scan=scan, trip_reset=True, trip_reset_min_s=3600) as (task, cx):
            await cx._publish(image(GOOD_TAGS), 1 * US)
            assert not (await write_reset(task)).isError()
            await until(lambda: len(scan.accepted) == 1, "the reset at the gate")
            c = scan.accepted[0]
            assert c.name == "reset_trip" and c.args["by"] == "modbus:127.0.0.1"
            assert not (await write_reset(task)).isError()  # on the wire fine, but the rate limit refuses
            await until(lambda: task.images[1].models[VENDOR_ID].points["CmdSt"].value == 3, "the refusal")
            assert len(scan.accepted) == 1
        assert "trip reset asked by modbus:127.0.0.1" in caplog.text and "rate limit" in caplog.text

    with caplog.at_level(logging.WARNING):
        asyncio.run(main())


def _regs(fmt: str, *values: int) -> list[int]:
    raw = struct.pack(">" + fmt, *values)
    return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]


def test_bad_writes_get_modbus_exceptions(caplog: pytest.LogCaptureFixture) -> None:
    scan = gate_scan()

    async def main() -> None:
        async with server(RW, scan=scan) as (task, cx):
            await cx._publish(image(GOOD_TAGS), 1 * US)
            img = task.images[1]
            a704 = img.address[704]
            wset = a704 + img.models[704].points["WSet"].offset
            ena = a704 + img.models[704].points["WSetEna"].offset
            rvrt = a704 + img.models[704].points["WSetRvrtTms"].offset
            w701 = img.address[701] + img.models[701].points["W"].offset
            c = AsyncModbusTcpClient("127.0.0.1", port=task.port, timeout=5, retries=0)
            await c.connect()
            try:
                cases = [
                    (wset, _regs("i", -11001), 3),  # beyond the charge rating (SunSpec sign: charge < 0)
                    (wset, _regs("i", 10001), 3),  # beyond the discharge rating
                    (wset, _regs("i", -0x80000000), 3),  # the int32 sentinel is not a value
                    (ena, [2], 3),  # not an enum value of WSetEna
                    (rvrt, _regs("I", 0), 3),  # no reversion is refused
                    (wset + 1, [5], 2),  # half of WSet
                    (w701, [100], 2),  # a measurement is read-only
                    (39990, [1], 2),  # outside the image
                ]
                for addr, values, code in cases:
                    rr = await c.write_registers(addr, values, device_id=1)
                    assert rr.isError(), (addr, values)
                    assert rr.exception_code == code, (addr, values, rr)
                rc = await c.write_coil(40000, True, device_id=1)
                assert rc.isError() and rc.exception_code in (1, 2)
                rr = await c.read_holding_registers(wset, count=2, device_id=1)
                assert rr.registers == _regs("i", 0)  # nothing changed
                # the server survives a malformed frame: a garbage MBAP, then a good request still works
                with socket.create_connection(("127.0.0.1", task.port), timeout=2) as s:
                    s.sendall(b"\x00\x01\x00\x00\x00\x02\x01")  # header announces 2 bytes, sends 1
                    s.sendall(b"\xff\xff\xff\xff\xff\xff\xff\xff\xff")
                rr = await c.read_holding_registers(40000, count=2, device_id=1)
                assert rr.registers == [0x5375, 0x6E53]
            finally:
                c.close()
            assert task.errors >= 8
        assert not scan.accepted and not scan.refused  # nothing bad reached the scan
        assert "outside -11000..10000" in caplog.text and "write whole points" in caplog.text

    with caplog.at_level(logging.WARNING):
        asyncio.run(main())


def _has_loopback(addr: str) -> bool:
    try:
        with socket.socket() as s:
            s.bind((addr, 0))
        return True
    except OSError:
        return False


def _refused_read(port: int, source: str) -> bool:
    """Connect from ``source``, send a read of 40000; True when the server closed without an answer."""
    with socket.socket() as s:
        s.bind((source, 0))
        s.settimeout(5)
        s.connect(("127.0.0.1", port))
        try:
            s.sendall(bytes.fromhex("000100000006010399400002"))  # read 2 registers at 40000 (0x9C40)
            return s.recv(100) == b""
        except (ConnectionResetError, BrokenPipeError):
            return True


@pytest.mark.skipif(not _has_loopback("127.0.0.2"), reason="no 127.0.0.2 on this host")
def test_refused_and_read_only_clients(caplog: pytest.LogCaptureFixture) -> None:
    scan = gate_scan()
    allow = [AllowEntry(address="127.0.0.1", role="read_write"), AllowEntry(address="127.0.0.3/32")]

    async def main() -> None:
        async with server(allow, scan=scan) as (task, cx):
            await cx._publish(image(GOOD_TAGS), 1 * US)
            # 127.0.0.2 is not on the list: the connection is closed before a request is answered
            assert await asyncio.to_thread(_refused_read, task.port, "127.0.0.2")
            await until(lambda: task.refused == 1, "the refusal to be counted")
            # 127.0.0.3 is read-only: it reads, and its write is an ILLEGAL FUNCTION
            c = AsyncModbusTcpClient("127.0.0.1", port=task.port, timeout=5, retries=0, source_address=("127.0.0.3", 0))
            await c.connect()
            try:
                rr = await c.read_holding_registers(40000, count=2, device_id=1)
                assert rr.registers == [0x5375, 0x6E53]
                img = task.images[1]
                ena = img.address[704] + img.models[704].points["WSetEna"].offset
                rr = await c.write_register(ena, 1, device_id=1)
                assert rr.isError() and rr.exception_code == 1
            finally:
                c.close()
        assert not scan.accepted and not scan.refused
        assert "connection from 127.0.0.2 refused" in caplog.text and "client is read-only" in caplog.text

    with caplog.at_level(logging.INFO):
        asyncio.run(main())


def test_register_map_in_docs_is_generated() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "local-api.md").read_text()
    assert register_map_markdown() in doc, "docs/local-api.md: regenerate the register map (see the doc)"
