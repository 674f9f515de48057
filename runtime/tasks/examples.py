"""A small task for the runtime's own tests and for trying the task process out: not site logic."""

from __future__ import annotations

import asyncio
import json
import os

from pydantic import Field

from runtime.api import MAX_AGE_S, Params
from runtime.tags import Direction, TagSpec, TagType
from runtime.tasks.base import Task, TaskContext, register_task


class CounterParams(Params):
    prefix: str = Field("counter", pattern=r"^[a-z][a-z0-9_]*$")
    interval_s: float = Field(0.05, gt=0, le=60)
    stale_after_s: float = Field(1.0, gt=0, le=MAX_AGE_S)
    fail_every: int | None = Field(None, ge=1, le=1_000_000, description="raise after this many writes (restart tests)")


@register_task("example_counter")
class Counter(Task):
    """Writes ``<prefix>.count`` (increasing), ``<prefix>.pid`` (the task process) and echoes the scan's
    cycle number back as ``<prefix>.seen_k`` — enough to observe staging, staleness and restarts."""

    Params = CounterParams
    params: CounterParams

    def declare(self) -> list[TagSpec]:
        p = self.params
        return [
            TagSpec(f"{p.prefix}.{q}", TagType.INT, "", Direction.SHARED, 0, p.stale_after_s)
            for q in ("count", "pid", "seen_k")
        ]

    async def run(self, cx: TaskContext) -> None:
        p = self.params
        n = 0
        while True:
            n += 1
            cx.write(f"{p.prefix}.count", n)
            cx.write(f"{p.prefix}.pid", os.getpid())
            seen = cx.image.tag("runtime.overruns")  # any published tag proves the image arrives
            if seen.value is not None:
                cx.write(f"{p.prefix}.seen_k", cx.now_us)
            if p.fail_every and n % p.fail_every == 0:
                raise RuntimeError(f"example failure after {n} writes")
            await asyncio.sleep(p.interval_s)


class BusyParams(Params):
    tags: int = Field(20, ge=1, le=2000, description="shared tags written every round")
    interval_s: float = Field(0.01, gt=0, le=60)
    work_ms: float = Field(4.0, ge=0, le=1000, description="CPU-bound JSON work per round")


@register_task("example_busy")
class Busy(Task):
    """Load for the benchmarks: JSON encode/decode work on the task loop and shared-tag writes every round,
    the kind of work OCPP validation and price parsing do."""

    Params = BusyParams
    params: BusyParams

    def declare(self) -> list[TagSpec]:
        return [TagSpec(f"busy.v{i}", TagType.FLOAT, "", Direction.SHARED, 0.0, 5.0) for i in range(self.params.tags)]

    async def run(self, cx: TaskContext) -> None:
        import json
        import time

        p = self.params
        doc = {"intervals": [{"start": i * 900, "price": i * 1.5, "tags": list(range(20))} for i in range(200)]}
        n = 0
        while True:
            t_end = time.perf_counter() + p.work_ms / 1000
            while time.perf_counter() < t_end:
                doc = json.loads(json.dumps(doc))
            n += 1
            for i in range(p.tags):
                cx.write(f"busy.v{i}", float(n + i))
            await asyncio.sleep(p.interval_s)


class CommandStep(Params):
    kind: str = Field(min_length=1, max_length=50)
    args: dict[str, object] = Field(default_factory=dict)


class CommanderParams(Params):
    prefix: str = Field("commander", pattern=r"^[a-z][a-z0-9_]*$")
    commands: list[CommandStep] = Field(default_factory=list, max_length=100)
    by: str = Field("example", min_length=1, max_length=100)
    big_write_bytes: int = Field(0, ge=0, le=1_000_000, description="then write this much in one batch (tests)")
    watch_events: bool = Field(False, description="publish the scan's events as <prefix>.events and its pid")


@register_task("example_commander")
class Commander(Task):
    """Sends its ``commands`` to the scan one after the other over the real channel and publishes the
    answers as ``<prefix>.acks`` (JSON [[kind, accepted, reason], ...]): the typed commands' tests."""

    Params = CommanderParams
    params: CommanderParams
    events = True

    def declare(self) -> list[TagSpec]:
        p = self.params
        specs = [TagSpec(f"{p.prefix}.acks", TagType.STR, "", Direction.SHARED, "[]", MAX_AGE_S)]
        if p.big_write_bytes:
            specs += [TagSpec(f"{p.prefix}.big{i}", TagType.STR, "", Direction.SHARED, "", MAX_AGE_S) for i in range(8)]
        if p.watch_events:
            specs += [
                TagSpec(f"{p.prefix}.events", TagType.STR, "", Direction.SHARED, "[]", MAX_AGE_S),
                TagSpec(f"{p.prefix}.pid", TagType.INT, "", Direction.SHARED, 0, MAX_AGE_S),
            ]
        return specs

    async def run(self, cx: TaskContext) -> None:
        await asyncio.gather(self.send(cx), *([self.watch(cx)] if self.params.watch_events else []))

    async def send(self, cx: TaskContext) -> None:
        p = self.params
        await cx.next_image()  # the channel is up
        acks: list[list[object]] = []
        for step in p.commands:
            ok, reason = await cx.command(step.kind, step.args, by=p.by)
            acks.append([step.kind, ok, reason])
            cx.write(f"{p.prefix}.acks", json.dumps(acks))
        if p.big_write_bytes:  # one batch far larger than one message: it must arrive whole
            for i in range(8):
                cx.write(f"{p.prefix}.big{i}", str(i) * (p.big_write_bytes // 8))

    async def watch(self, cx: TaskContext) -> None:
        seen: list[list[object]] = []
        cx.write(f"{self.params.prefix}.pid", os.getpid())
        while True:
            e = await cx.next_event()
            seen.append([e.get("seq", e.get("from")), e["kind"], e["message"]])
            cx.write(f"{self.params.prefix}.events", json.dumps(seen[-200:]))
