"""Small programs for the engine's own tests and for trying the runtime out: not site logic."""

from __future__ import annotations

from pydantic import Field

from runtime.api import Cycle, Params, Program, TagName, register_interlock, register_program
from runtime.tags import Direction, TagSpec


class CopyParams(Params):
    source: TagName
    target: TagName
    gain: float = Field(1.0, ge=-1e6, le=1e6)
    declare_target: bool = Field(True, description="declare target as an output tag of this program")
    unit: str = ""


@register_program("example_copy")
class Copy(Program):
    """target = gain * source while the source is good, else the target's fail-safe 0."""

    Params = CopyParams
    params: CopyParams

    def declare(self) -> list[TagSpec]:
        p = self.params
        return [TagSpec(p.target, unit=p.unit, direction=Direction.OUTPUT, default=0.0)] if p.declare_target else []

    def requires(self) -> list[str]:
        return [self.params.source]

    def scan(self, cx: Cycle) -> None:
        v = cx.inputs.value(self.params.source)
        cx.out[self.params.target] = 0.0 if v is None else self.params.gain * v


class ClampParams(Params):
    tag: TagName
    limit: float = Field(ge=0, le=1e9)


@register_interlock("example_clamp")
class Clamp(Program):
    """Clamp a signed output to +-limit: the simplest interlock, for engine tests."""

    Params = ClampParams
    params: ClampParams

    def requires(self) -> list[str]:
        return [self.params.tag]

    def scan(self, cx: Cycle) -> None:
        v = cx.out[self.params.tag]
        lim = self.params.limit
        cx.out[self.params.tag] = max(-lim, min(lim, v))


class StallParams(Params):
    tag: TagName
    ms: float = Field(gt=0, le=10_000)


@register_program("example_stall")
class Stall(Program):
    """Busy-waits ``ms`` each cycle while a bool input is true: a stand-in for a hung program, so tests can
    show the watchdogs go hungry when the scan is late. Deliberately breaks the no-clock rule; never use
    it in a real site."""

    Params = StallParams
    params: StallParams

    def requires(self) -> list[str]:
        return [self.params.tag]

    def scan(self, cx: Cycle) -> None:
        if cx.inputs.value(self.params.tag):
            import time

            end = time.perf_counter() + self.params.ms / 1000
            while time.perf_counter() < end:
                pass
