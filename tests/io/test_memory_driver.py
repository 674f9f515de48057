"""The in-memory driver through the Driver interface, on a real asyncio loop with an IOContext."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from runtime.api import SiteInfo
from runtime.io.driver import DRIVERS, IOContext
from runtime.io.memory import MemoryDriver, MemoryParams
from runtime.tags import Direction, Quality
from runtime.yamlload import ConfigError, parse_yaml, validate

SITE = SiteInfo("t", 240.0, 60.0, 20_000)


def make(tmp_path: Path, **params) -> MemoryDriver:
    return MemoryDriver("plant", MemoryParams.model_validate(params), SiteInfo("t", 240, 60, 20_000, base_dir=tmp_path))


async def wait_for(pred, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            raise AssertionError("condition not met before deadline")
        await asyncio.sleep(0.005)


def test_registered() -> None:
    assert DRIVERS["memory"] is MemoryDriver


def test_tag_specs(tmp_path: Path) -> None:
    d = make(
        tmp_path,
        tags=[
            {"name": "grid.voltage", "unit": "V", "value": 240, "stale_after_s": 1.0},
            {"name": "inverter.setpoint", "unit": "W", "direction": "output", "value": 0},
        ],
    )
    specs = {s.name: s for s in d.declare()}
    assert specs["grid.voltage"].direction is Direction.INPUT
    assert specs["grid.voltage"].stale_after_s == 1.0
    assert specs["inverter.setpoint"].direction is Direction.OUTPUT
    assert specs["inverter.setpoint"].default == 0.0


def test_inputs_redelivered_and_fresh(tmp_path: Path) -> None:
    d = make(tmp_path, poll_s=0.01, tags=[{"name": "ev.soc", "value": 0.5}, {"name": "ev.soh"}])

    async def main() -> list:
        io = IOContext()
        task = asyncio.create_task(d.run(io))
        got: list = []

        def three_reads() -> bool:
            got.extend(io.drain())
            return sum(u.name == "ev.soc" for u in got) >= 3

        await wait_for(three_reads)
        task.cancel()
        return got

    got = asyncio.run(main())
    soc = [u for u in got if u.name == "ev.soc"]
    assert all(u.value == 0.5 and u.quality is Quality.GOOD for u in soc)
    assert [u.t_us for u in soc] == sorted(u.t_us for u in soc)
    # configured without a value: never read, so bad
    assert all(u.quality is Quality.BAD for u in got if u.name == "ev.soh")


@pytest.mark.parametrize("setpoint", [-7000.0, 0.0, 7000.0])
def test_echo_and_journal(tmp_path: Path, setpoint: float) -> None:
    d = make(
        tmp_path,
        journal="out/journal.jsonl",
        poll_s=5.0,
        echo={"inverter.power": "inverter.setpoint"},
        tags=[
            {"name": "inverter.power", "unit": "W", "value": 0.0},
            {"name": "inverter.setpoint", "unit": "W", "direction": "output", "value": 0.0},
        ],
    )

    async def main() -> list:
        io = IOContext()
        task = asyncio.create_task(d.run(io))
        await wait_for(lambda: d._io is not None)
        io.drain()
        d.on_outputs(20_000, {"inverter.setpoint": setpoint}, {"inverter.setpoint": setpoint})
        d.on_outputs(40_000, {"inverter.setpoint": setpoint}, {})  # no change: no journal line
        staged = io.drain()
        task.cancel()
        await d.close({"inverter.setpoint": 0.0})
        return staged

    staged = asyncio.run(main())
    if setpoint != 0.0:
        assert [(u.name, u.value) for u in staged] == [("inverter.power", setpoint)]
    else:
        assert staged == []
    lines = [json.loads(x) for x in (tmp_path / "out/journal.jsonl").read_text().splitlines()]
    assert lines[0] == {"t_us": 20_000, "writes": {"inverter.setpoint": setpoint}}
    assert lines[-1]["writes"] == {"inverter.setpoint": 0.0}
    assert len(lines) == 2
    assert d.outputs == {"inverter.setpoint": 0.0}


def test_bad_params_name_line(tmp_path: Path) -> None:
    doc = parse_yaml("tags:\n  - {name: grid.voltage, value: abc}\necho: {x.y: grid.voltage}\n", "site.yaml")
    with pytest.raises(ConfigError) as exc:
        validate(MemoryParams, doc.data, doc)
    assert "site.yaml:" in str(exc.value)
    doc = parse_yaml("tags:\n  - {name: Grid, value: 1}\n", "site.yaml")
    with pytest.raises(ConfigError, match=r"site.yaml:2: tags\[0\].name"):
        validate(MemoryParams, doc.data, doc)
