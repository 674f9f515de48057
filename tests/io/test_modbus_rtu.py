"""Modbus RTU over a pseudo-terminal pair: real serial framing and CRCs, corrupted frames, a silent slave.

Two pty pairs joined by a relay on the test's loop: the driver opens one slave end, a pymodbus RTU
server (the virtual plant's meter) the other; the relay copies bytes between the master ends and can
corrupt or swallow responses.
"""

from __future__ import annotations

import asyncio
import os
import tty
from pathlib import Path

import pytest

from runtime.io.driver import IOContext
from runtime.io.modbus_rtu import ModbusRtuDriver
from tests.io.helpers import SITE, Tags, inputs, plant, teardown, wait_for


class Relay:
    def __init__(self) -> None:
        self.m_a, self.s_a = os.openpty()
        self.m_b, self.s_b = os.openpty()
        for fd in (self.s_a, self.s_b):
            tty.setraw(fd)
        self.path_a, self.path_b = os.ttyname(self.s_a), os.ttyname(self.s_b)
        self.corrupt = False
        self.drop = False
        self.wrong_fc = False  # answer a read with the other read function code (3 <-> 4), CRC made valid
        self._pending = b""
        self.requests = 0
        self.corrupted = 0

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_reader(self.m_a, self._pump, self.m_a, self.m_b, False)
        loop.add_reader(self.m_b, self._pump, self.m_b, self.m_a, True)

    def _pump(self, src: int, dst: int, response: bool) -> None:
        try:
            data = os.read(src, 4096)
        except OSError:
            return
        if not response:
            self.requests += 1
        elif self.drop:
            return
        elif self.corrupt and len(data) > 2:
            data = data[:-1] + bytes([data[-1] ^ 0xFF])  # break the CRC
            self.corrupted += 1
        elif self.wrong_fc:
            data = self._swap_fc(data)
            if not data:
                return
        os.write(dst, data)

    def _swap_fc(self, data: bytes) -> bytes:
        """Whole RTU answers (unit, fc, byte count, data, CRC) with fc 3 and 4 swapped and a valid CRC."""
        from pymodbus.framer.rtu import FramerRTU

        buf = self._pending + data
        if len(buf) < 3 or len(buf) < 5 + (buf[2] if buf[1] in (3, 4) else 0):
            self._pending = buf
            return b""
        self._pending = b""
        if buf[1] not in (3, 4):
            return buf
        frame = buf[:1] + bytes([7 - buf[1]]) + buf[2 : 3 + buf[2]]
        self.corrupted += 1
        return frame + FramerRTU.compute_CRC(frame).to_bytes(2, "big")

    def close(self) -> None:
        loop = asyncio.get_running_loop()
        for fd in (self.m_a, self.m_b):
            loop.remove_reader(fd)
        for fd in (self.m_a, self.m_b, self.s_a, self.s_b):
            os.close(fd)


def rtu_driver(port: str, **kw) -> ModbusRtuDriver:  # type: ignore[no-untyped-def]
    # Parity N: Linux ptys refuse re-configuring PARENB (EINVAL); framing and CRCs are the real thing.
    params = {
        "port": port,
        "baudrate": 19200,
        "parity": "N",
        "units": [{"map": "site_meter_rtu", "unit": 7}],
        "timeout_s": 0.3,
        "retries": 0,
        "backoff_s": 0.05,
        "backoff_max_s": 0.4,
        **kw,
    }
    return ModbusRtuDriver("meter", ModbusRtuDriver.Params.model_validate(params), SITE)


@pytest.mark.parametrize("fault", ["corrupt", "drop", "wrong_fc"])
def test_rtu_over_pty(fault: str) -> None:
    async def main() -> None:
        relay = Relay()
        relay.start()
        vp = plant([{"name": "meter", "map": "site_meter_rtu", "port": 0, "unit": 7}])
        await vp.start_serial(["meter"], relay.path_b, baudrate=19200, parity="N")
        drv = rtu_driver(relay.path_a)
        io = IOContext()
        tags = Tags(io)
        task = asyncio.create_task(drv.run(io))
        try:
            await wait_for(lambda: tags.good(*inputs(drv)), 10, "all RTU tags good")
            assert tags.value("meter.energy_import") == pytest.approx(vp.plant.e_import_wh, rel=1e-6)
            assert tags.value("meter.power") == pytest.approx(vp.plant.power_w + vp.plant.load_w, abs=0.01)
            setattr(relay, fault, True)
            await wait_for(lambda: tags.bad("meter.power", "meter.voltage"), 5, f"bad on {fault}")
            if fault != "drop":
                assert relay.corrupted > 0
            if fault == "wrong_fc":  # a valid frame (CRC right) answering another function: refused
                assert drv.faults["wrong_function"] > 0
            setattr(relay, fault, False)
            await wait_for(lambda: tags.good("meter.power", "meter.voltage"), 10, "good after recovery")
        finally:
            try:
                await teardown([task], [drv], [vp])
            finally:
                relay.close()

    asyncio.run(main())


def test_rtu_missing_serial_port_is_bad_not_fatal(tmp_path: Path) -> None:
    async def main() -> None:
        drv = rtu_driver(str(tmp_path / "ttyNONE"))
        io = IOContext()
        tags = Tags(io)
        task = asyncio.create_task(drv.run(io))
        try:
            await wait_for(lambda: tags.bad(*inputs(drv)), 5, "all bad without the port")
        finally:
            await teardown([task], [drv])

    asyncio.run(main())
