"""A depot site and its virtual plant coupled in-process through Engine.step, in simulated time.

The same engine step and the same plant physics as ``v2g-plc run SITE --speed N``, without the Modbus hop:
each cycle every input the site declares is read from the plant's values (what its devices would serve,
by tag name), the engine steps, and the committed outputs command the plant, which then advances one
cycle period. Long durations cost compute time only, never sleeping.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runtime.engine import Engine, StepResult
from runtime.evses import evse_of
from runtime.sim.config import plant_params
from runtime.sim.server import VirtualPlant
from runtime.site import BuiltSite, build_site
from runtime.tags import US, Quality, TagUpdate

RUNTIME_OK: dict[str, Any] = {
    "runtime.overrun_fault": False,
    "runtime.persist_fault": False,
    "runtime.available": True,
    "runtime.task_process_alive": True,
}
DRIVER_OK: dict[str, Any] = {"inverter.write_mismatch": False}  # what a driver reports of its own writes


class Coupled:
    def __init__(self, site: Path, speed: int, plant_step_s: float = 1.0):
        self.built: BuiltSite = build_site(site, speed=speed)
        params, base = plant_params(site)
        self.plant = VirtualPlant(params.model_copy(update={"step_s": plant_step_s}), base)
        self.engine: Engine = self.built.engine()
        self.period_us = self.built.info.period_us
        self.now_us = 0
        self.inputs = [s.name for s in self.built.tags.specs.values() if s.direction.value == "input"]
        self.outputs = [s.name for s in self.built.tags.specs.values() if s.direction.value == "output"]
        self.last: StepResult | None = None

    def updates(self) -> list[TagUpdate]:
        site = {**self.plant.site_values(), **RUNTIME_OK}
        per = {n: {**self.plant.evse_values(n), **DRIVER_OK} for n in self.plant.evse}
        ups = []
        for name in self.inputs:
            n = evse_of(name)
            v = site.get(name) if n is None else per[n].get(name.split(".", 1)[1])
            if v is None:
                ups.append(TagUpdate(name, None, Quality.BAD))
            else:
                ups.append(TagUpdate(name, v))
        return ups

    def step(self) -> StepResult:
        res = self.engine.step(self.now_us, self.updates())
        for name in self.outputs:
            n = evse_of(name)
            if n is not None:
                self.plant.evse[n].command(name.split(".", 1)[1], res.outputs[name])
        self.plant.advance(self.period_us / US)
        self.now_us += self.period_us
        self.last = res
        return res

    def run(self, seconds: float) -> None:
        for _ in range(round(seconds * US / self.period_us)):
            self.step()
