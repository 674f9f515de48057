"""An in-memory device: inputs with fixed (or echoed) values and outputs that go nowhere but a journal.

Why it exists: to run a site without any field device (tests of the runner, smoke runs, a trivial plant
where an input simply follows an output). The journal is the evidence a test reads after the process that
wrote it has exited, so every line is flushed and fsynced before ``on_outputs`` returns.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from pydantic import Field, field_validator, model_validator

from runtime.api import Params, SiteInfo, TagFields
from runtime.io.driver import Driver, IOContext, register_driver
from runtime.tags import Direction, Quality, TagSpec, TagUpdate


class MemoryTag(TagFields):
    direction: Direction = Direction.INPUT
    value: Any = None

    @field_validator("direction")
    @classmethod
    def _dir(cls, v: Direction) -> Direction:
        if v not in (Direction.INPUT, Direction.OUTPUT):
            raise ValueError("a device tag is an input or an output")
        return v

    def spec(self) -> TagSpec:
        default = self.value if self.direction is Direction.OUTPUT else None
        spec = TagSpec(self.name, self.type, self.unit, self.direction, None, self.stale_after_s)
        # Coerce through the spec so a wrong literal ("abc" for a float) is a config error, not a crash.
        return TagSpec(self.name, self.type, self.unit, self.direction, spec.coerce(default), self.stale_after_s)


class MemoryParams(Params):
    tags: list[MemoryTag] = Field(min_length=1)
    journal: str | None = Field(None, description="JSONL file of output writes (relative: to the site file)")
    echo: dict[str, str] = Field(default_factory=dict, description="input_tag: output_tag (input follows output)")
    poll_s: float = Field(0.1, gt=0, le=60, description="period of re-delivering inputs so they stay fresh")

    @model_validator(mode="after")
    def _check(self) -> MemoryParams:
        by_name: dict[str, MemoryTag] = {}
        for t in self.tags:
            if t.name in by_name:
                raise ValueError(f"tag {t.name!r} listed twice")
            by_name[t.name] = t
            t.spec()  # raises ValueError on a value of the wrong type
        for inp, out in self.echo.items():
            if inp not in by_name or by_name[inp].direction is not Direction.INPUT:
                raise ValueError(f"echo: {inp!r} is not an input tag of this device")
            if out not in by_name or by_name[out].direction is not Direction.OUTPUT:
                raise ValueError(f"echo: {out!r} is not an output tag of this device")
        return self


@register_driver("memory")
class MemoryDriver(Driver):
    """Inputs are delivered every ``poll_s``; an echoed input follows its output at once."""

    Params = MemoryParams
    params: MemoryParams

    def __init__(self, name: str, params: MemoryParams, site: SiteInfo):
        super().__init__(name, params, site)
        self._specs = {t.name: t.spec() for t in params.tags}
        self._inputs: dict[str, Any] = {
            t.name: self._specs[t.name].coerce(t.value) for t in params.tags if t.direction is Direction.INPUT
        }
        self._outputs: dict[str, Any] = {
            t.name: self._specs[t.name].default for t in params.tags if t.direction is Direction.OUTPUT
        }
        self._io: IOContext | None = None
        self._journal: IO[str] | None = None
        self._journal_path: Path | None = None
        if params.journal:
            p = Path(params.journal)
            self._journal_path = p if p.is_absolute() else self.base_dir / p

    def declare(self) -> list[TagSpec]:
        return list(self._specs.values())

    @property
    def outputs(self) -> dict[str, Any]:
        """The last output values received (for tests running the driver in-process)."""
        return dict(self._outputs)

    def _updates(self, names: list[str] | None = None) -> list[TagUpdate]:
        assert self._io is not None
        now = self._io.now_us()
        out = []
        for n in names if names is not None else list(self._inputs):
            v = self._inputs[n]
            # An input configured without a value has never been "read": it stays bad, not 0.
            out.append(TagUpdate(n, v, Quality.GOOD if v is not None else Quality.BAD, now))
        return out

    async def run(self, io: IOContext) -> None:
        self._io = io
        while True:
            io.deliver(self._updates())
            await asyncio.sleep(self.params.poll_s)

    def on_outputs(self, now_us: int, outputs: Mapping[str, Any], changed: Mapping[str, Any]) -> None:
        writes = {k: v for k, v in changed.items() if k in self._outputs}
        for k in self._outputs:
            if k in outputs:
                self._outputs[k] = outputs[k]
        echoed = []
        for inp, out in self.params.echo.items():
            v = self._specs[inp].coerce(self._outputs[out]) if self._outputs[out] is not None else None
            if v != self._inputs[inp]:
                self._inputs[inp] = v
                echoed.append(inp)
        if echoed and self._io is not None:
            self._io.deliver(self._updates(echoed))
        if writes:
            self._write_journal(now_us, writes)

    def _write_journal(self, t_us: int, writes: Mapping[str, Any]) -> None:
        if self._journal_path is None:
            return
        if self._journal is None:
            self._journal_path.parent.mkdir(parents=True, exist_ok=True)
            self._journal = open(self._journal_path, "a", encoding="utf-8")  # noqa: SIM115 - kept open
        self._journal.write(json.dumps({"t_us": t_us, "writes": dict(writes)}, default=str) + "\n")
        self._journal.flush()
        os.fsync(self._journal.fileno())

    async def close(self, safe_outputs: Mapping[str, Any]) -> None:
        writes = {k: v for k, v in safe_outputs.items() if k in self._outputs}
        self._outputs.update(writes)
        t_us = self._io.now_us() if self._io is not None else 0
        if writes:
            self._write_journal(t_us, writes)
        if self._journal is not None:
            self._journal.close()
            self._journal = None
