"""Modbus RTU driver (pyserial through pymodbus): one serial line, one or more slaves on it.

Slaves on one RS-485 line share its time: a silent slave costs the others its timeout on every poll,
which is why ``timeout_s`` and ``retries`` should be small on a shared line.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from runtime.io.driver import register_driver
from runtime.io.modbus_common import ModbusDriver, ModbusParams


class ModbusRtuParams(ModbusParams):
    port: str = Field(min_length=1, description="serial device, e.g. /dev/ttyUSB0")
    baudrate: int = Field(9600, ge=300, le=921600)
    bytesize: Literal[7, 8] = 8
    parity: Literal["N", "E", "O"] = "E"  # Modbus over Serial Line V1.02, 2.5.1: even parity is the default
    stopbits: Literal[1, 2] = 1


@register_driver("modbus_rtu")
class ModbusRtuDriver(ModbusDriver):
    Params = ModbusRtuParams
    params: ModbusRtuParams

    def describe(self) -> str:
        return f"{self.params.port}@{self.params.baudrate}"

    def make_client(self) -> Any:
        from pymodbus.client import AsyncModbusSerialClient

        p = self.params
        return AsyncModbusSerialClient(
            p.port,
            baudrate=p.baudrate,
            bytesize=p.bytesize,
            parity=p.parity,
            stopbits=p.stopbits,
            timeout=p.timeout_s,
            retries=p.retries,
            reconnect_delay=0,
            name=self.name,
            trace_connect=self._on_connection,
        )
