"""Modbus TCP driver: one connection to a device or gateway, one or more unit ids behind it."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from runtime.io.driver import register_driver
from runtime.io.modbus_common import ModbusDriver, ModbusParams


class ModbusTcpParams(ModbusParams):
    host: str = Field(min_length=1)
    port: int = Field(502, ge=1, le=65535)


@register_driver("modbus_tcp")
class ModbusTcpDriver(ModbusDriver):
    Params = ModbusTcpParams
    params: ModbusTcpParams

    def describe(self) -> str:
        return f"{self.params.host}:{self.params.port}"

    def make_client(self) -> Any:
        from pymodbus.client import AsyncModbusTcpClient

        p = self.params
        # reconnect_delay=0: reconnecting (with our own exponential backoff) is the driver's job, so
        # that tags turn bad at the moment the link fails rather than after pymodbus's silent retries.
        return AsyncModbusTcpClient(
            p.host, port=p.port, timeout=p.timeout_s, retries=p.retries, reconnect_delay=0, name=self.name
        )
