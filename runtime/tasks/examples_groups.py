"""Two small tasks for the task process groups' tests (docs/architecture.md#task-processes): not site logic.

``example_hang`` blocks its task process's event loop for good once a file exists, the way a CPU-bound
parser or a blocking library call would hang an integration; ``example_asker`` sends the scan a command
over and over and counts the answers, so a test can see one group keep exchanging image and commands
while another is hung.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from pydantic import Field

from runtime.api import MAX_AGE_S, Params
from runtime.commands import TaskKind
from runtime.tags import Direction, TagSpec, TagType
from runtime.tasks.base import Task, TaskContext, register_task


class HangParams(Params):
    prefix: str = Field("hang", pattern=r"^[a-z][a-z0-9_]*$")
    hang_file: str = Field(min_length=1, max_length=4096, description="once this file exists, block the loop")
    interval_s: float = Field(0.05, gt=0, le=60)
    stale_after_s: float = Field(1.0, gt=0, le=MAX_AGE_S)


@register_task("example_hang")
class Hang(Task):
    """Writes ``<prefix>.pid`` and ``<prefix>.count``; blocks its event loop for good once ``hang_file``
    exists (relative: to the site file's folder), heartbeat included."""

    Params = HangParams
    params: HangParams

    def declare(self) -> list[TagSpec]:
        p = self.params
        return [
            TagSpec(f"{p.prefix}.{q}", TagType.INT, "", Direction.SHARED, 0, p.stale_after_s) for q in ("count", "pid")
        ]

    async def run(self, cx: TaskContext) -> None:
        p = self.params
        trigger = self.base_dir / Path(p.hang_file)
        n = 0
        while True:
            n += 1
            cx.write(f"{p.prefix}.count", n)
            cx.write(f"{p.prefix}.pid", os.getpid())
            await asyncio.sleep(p.interval_s)  # the writes leave first
            if trigger.exists():
                cx.log.warning("%s exists: blocking the event loop for good", trigger)
                while True:
                    time.sleep(1.0)  # blocking on purpose: a hang that only the supervisor ends


class AskerParams(Params):
    prefix: str = Field("asker", pattern=r"^[a-z][a-z0-9_]*$")
    kind: TaskKind
    args: dict[str, Any] = Field(default_factory=dict)
    by: str = Field("example", min_length=1, max_length=100)
    interval_s: float = Field(0.1, gt=0, le=60)


@register_task("example_asker")
class Asker(Task):
    """Sends ``kind`` with ``args`` every ``interval_s`` and publishes how many the scan accepted
    (``<prefix>.accepted``); ``<prefix>.pid`` is its process."""

    Params = AskerParams
    params: AskerParams

    def declare(self) -> list[TagSpec]:
        p = self.params
        return [
            TagSpec(f"{p.prefix}.{q}", TagType.INT, "", Direction.SHARED, 0, MAX_AGE_S) for q in ("accepted", "pid")
        ]

    async def run(self, cx: TaskContext) -> None:
        p = self.params
        cx.write(f"{p.prefix}.pid", os.getpid())
        await cx.next_image()  # the channel is up
        accepted = 0
        while True:
            ok, _reason = await cx.command(p.kind, p.args, by=p.by)
            accepted += ok
            cx.write(f"{p.prefix}.accepted", accepted)
            await asyncio.sleep(p.interval_s)
