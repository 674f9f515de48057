"""A second Modbus master that overrides the virtual plant's inverter set point (SunSpec 704 WSet): the
device then does what nobody in the runtime asked, which the safety layer must see as a write mismatch
(read-back differs from the committed set point), an operator-reset trip."""

from __future__ import annotations

import threading

from pymodbus.client import ModbusTcpClient

BASE = 40000  # SunSpec "SunS" marker (SunSpec Information Model Specification: base 40000)


def wset_address(client: ModbusTcpClient, unit: int = 1) -> tuple[int, int]:
    """(WSet register, WSet_SF value) found by walking the SunSpec model chain to model 704."""
    rr = client.read_holding_registers(BASE, count=2, device_id=unit)
    assert not rr.isError() and rr.registers == [0x5375, 0x6E53], "no SunS marker"
    addr = BASE + 2
    for _ in range(50):
        rr = client.read_holding_registers(addr, count=2, device_id=unit)
        model, length = rr.registers
        if model == 704:
            sf = client.read_holding_registers(addr + 55, count=1, device_id=unit).registers[0]
            return addr + 24, sf - 0x10000 if sf >= 0x8000 else sf  # sunssf is int16
        if model == 0xFFFF:
            break
        addr += 2 + length
    raise AssertionError("no SunSpec model 704 on the inverter")


class RogueMaster:
    """Writes ``watts`` (charge-positive, as the runtime's tags) into WSet every ``every_s`` until stopped."""

    def __init__(self, port: int, watts: float, every_s: float = 0.1) -> None:
        self.client = ModbusTcpClient("127.0.0.1", port=port, timeout=1)
        self.watts = watts
        self.every_s = every_s
        self.stop = threading.Event()
        self.writes = 0
        self.errors = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        assert self.client.connect()
        addr, sf = wset_address(self.client)
        raw = round(-self.watts / 10**sf) & 0xFFFFFFFF  # the map negates WSet: SunSpec is generation-positive
        while not self.stop.is_set():
            rr = self.client.write_registers(addr, [raw >> 16, raw & 0xFFFF], device_id=1)
            self.errors += rr.isError()
            self.writes += 1
            self.stop.wait(self.every_s)  # the rogue's write rate, not synchronisation

    def __enter__(self) -> RogueMaster:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)
        self.client.close()
