"""Modbus TCP driver: one connection to a device or gateway, one or more unit ids behind it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import Field

from runtime.io.driver import register_driver
from runtime.io.modbus_common import ModbusDriver, ModbusParams

# MBAP length field: unit id + PDU, the PDU at most 253 bytes (Modbus Messaging on TCP/IP Implementation
# Guide V1.0b, 3.1.3; Modbus Application Protocol V1.1b3, 4.1).
MBAP_MAX_LENGTH = 254


def pdu_well_formed(pdu: bytes) -> bool:
    """Whether an answer PDU has the shape of an answer to a request this driver sends (reads 1-4, writes
    15/16 and 5/6, exception replies); pymodbus raises inside its protocol callback on a PDU it cannot
    decode, which closes the connection with an asyncio traceback."""
    if not pdu:
        return False
    fc = pdu[0]
    if fc > 0x80:  # exception reply: function code + 0x80, exception code (V1.1b3, 7)
        return len(pdu) == 2
    if fc in (1, 2, 3, 4):  # byte count, then data (6.1-6.4)
        return len(pdu) >= 2 and pdu[1] == len(pdu) - 2 and (fc in (1, 2) or pdu[1] % 2 == 0)
    if fc in (5, 6, 15, 16):  # address and value or quantity echoed (6.5, 6.6, 6.11, 6.12)
        return len(pdu) == 5
    return False


class MbapScreen:
    """pymodbus's ``trace_packet`` hook: drops an answer that is not to the request in flight (a late one,
    one with transaction id 0, which pymodbus accepts for any request) or not a Modbus frame at all,
    before pymodbus decodes it. A dropped frame is re-stamped so that pymodbus's framer skips it whole
    (a transaction id that is not the expected one) and the frames after it stay in step; the request it
    answered then times out like an unanswered one. A length that cannot be a frame leaves no frame
    boundary to trust: the buffer is dropped (pymodbus clears it at the next request)."""

    def __init__(self, dropped: Callable[[str], None]):
        self.tid = 0
        self.dropped = dropped

    def __call__(self, sending: bool, data: bytes) -> bytes:
        if sending:
            self.tid = int.from_bytes(data[0:2], "big")
            return data
        out: bytearray | None = None
        pos = 0
        while len(data) - pos >= 8:
            length = int.from_bytes(data[pos + 4 : pos + 6], "big")
            if not 2 <= length <= MBAP_MAX_LENGTH:
                self.dropped("garbled")
                return b""
            end = pos + 6 + length
            if end > len(data):
                break  # the rest of this frame is still on its way
            tid = int.from_bytes(data[pos : pos + 2], "big")
            why = None
            if data[pos + 2 : pos + 4] != b"\0\0" or not pdu_well_formed(data[pos + 7 : end]):
                why = "garbled"
            elif tid != self.tid:
                why = "wrong_transaction"
            if why is not None:
                self.dropped(why)
                out = out if out is not None else bytearray(data)
                skip = (self.tid % 0xFFFF) + 1  # non-zero and not the expected id
                out[pos : pos + 4] = skip.to_bytes(2, "big") + b"\0\0"
            pos = end
        return bytes(out) if out is not None else data


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
            p.host,
            port=p.port,
            timeout=p.timeout_s,
            retries=p.retries,
            reconnect_delay=0,
            name=self.name,
            trace_packet=MbapScreen(self._count_dropped),
            trace_connect=self._on_connection,
        )
