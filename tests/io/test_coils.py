"""Coils and discrete inputs through the TCP driver, against a plain pymodbus server (the virtual plant's
devices have none)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from runtime.io.driver import IOContext
from tests.io.helpers import TEARDOWN_S, Tags, free_port, inputs, tcp_driver, teardown, wait_for

MAP = """\
name: relay_box
points:
  - {tag: box.contactor, direction: output, access: rw, table: coil, address: 3, type: bool, default: false}
  - {tag: box.contactor_state, table: coil, address: 3, type: bool, poll: fast}
  - {tag: box.door_open, table: discrete, address: 5, type: bool, poll: fast}
  - {tag: box.estop, table: discrete, address: 6, type: bool, poll: fast}
"""


def test_coils_and_discrete_inputs(tmp_path: Path) -> None:
    from pymodbus.server import ModbusTcpServer
    from pymodbus.simulator import DataType, SimData, SimDevice

    (tmp_path / "relay_box.yaml").write_text(MAP)

    async def main() -> None:
        port = free_port()
        bits = [False] * 16
        bits[5] = True  # door open
        dev = SimDevice(
            1,
            simdata=(
                [SimData(0, values=[False] * 16, datatype=DataType.BITS)],
                [SimData(0, values=bits, datatype=DataType.BITS)],
                [SimData(0, values=0, datatype=DataType.REGISTERS)],
                [SimData(0, values=0, datatype=DataType.REGISTERS)],
            ),
        )
        server = ModbusTcpServer([dev], address=("127.0.0.1", port))
        await server.serve_forever(background=True)
        drv = tcp_driver(port, str(tmp_path / "relay_box.yaml"))
        io = IOContext()
        tags = Tags(io)
        task = asyncio.create_task(drv.run(io))
        try:
            await wait_for(lambda: tags.good(*inputs(drv)), 10)
            assert tags.value("box.door_open") is True and tags.value("box.estop") is False
            assert tags.value("box.contactor_state") is False
            drv.on_outputs(0, {"box.contactor": True}, {"box.contactor": True})
            await wait_for(lambda: tags.value("box.contactor_state") is True, 5, "coil written and read")
            drv.on_outputs(20_000, {"box.contactor": False}, {"box.contactor": False})
            await wait_for(lambda: tags.value("box.contactor_state") is False, 5, "coil cleared")
        finally:
            await teardown([task], [drv])
            await asyncio.wait_for(server.shutdown(), TEARDOWN_S)

    asyncio.run(main())
