"""Step a built depot site (runtime.site.build_site) through Engine.step with a plant that follows.

Every input the site declares is fed fresh each cycle, as the pollers would: per-EVSE values from
``evse`` (overridable per EVSE), site values from ``site``. Each charger's measured power is the set
point committed by the previous cycle (0 without the permit) and the meter reads the building plus them.
"""

from __future__ import annotations

from typing import Any

from runtime.engine import Engine, StepResult
from runtime.site import BuiltSite
from runtime.tags import US, Quality, TagUpdate

EVSE_INPUTS: dict[str, Any] = {
    "ev.connected": True,
    "ev.soc": 0.5,
    "ev.soh": 0.95,
    "ev.capacity_wh": 60_000.0,
    "grid.loss": False,
    "grid.voltage": 240.0,
    "grid.frequency": 60.0,
    "inverter.max_charge_w": 11_000.0,
    "inverter.max_discharge_w": 11_000.0,
    "inverter.write_mismatch": False,
    "plc.snr": 30.0,
}
SITE_INPUTS: dict[str, Any] = {
    "meter.voltage": 240.0,
    "meter.frequency": 60.0,
    "runtime.overrun_fault": False,
    "runtime.persist_fault": False,
    "runtime.available": True,
    "runtime.task_process_alive": True,
}


class Drive:
    def __init__(self, built: BuiltSite, ids: list[int]):
        self.built = built
        self.engine: Engine = built.engine()
        self.ids = ids
        self.period_us = built.info.period_us
        self.now_us = 0
        self.site: dict[str, Any] = dict(SITE_INPUTS)
        self.evse: dict[int, dict[str, Any]] = {i: dict(EVSE_INPUTS) for i in ids}
        self.bad: set[str] = set()  # site names whose reads fail
        self.power = dict.fromkeys(ids, 0.0)
        self.building = 0.0
        self.last: StepResult | None = None

    def updates(self) -> list[TagUpdate]:
        ups = [TagUpdate(n, v) for n, v in self.site.items()]
        ups.append(TagUpdate("meter.power", self.building + sum(self.power.values())))
        for i in self.ids:
            ups += [TagUpdate(f"evse{i}.{n}", v) for n, v in self.evse[i].items()]
            ups.append(TagUpdate(f"evse{i}.inverter.power", self.power[i]))
        return [TagUpdate(u.name, None, Quality.BAD) if u.name in self.bad else u for u in ups]

    def step(self) -> StepResult:
        res = self.engine.step(self.now_us, self.updates())
        for i in self.ids:
            on = res.outputs[f"evse{i}.inverter.enable"]
            self.power[i] = res.outputs[f"evse{i}.inverter.setpoint"] if on else 0.0
        self.now_us += self.period_us
        self.last = res
        return res

    def run(self, seconds: float) -> list[StepResult]:
        return [self.step() for _ in range(round(seconds * US / self.period_us))]

    def setpoints(self, res: StepResult | None = None) -> dict[int, float]:
        r = res or self.last
        assert r is not None
        return {i: r.outputs[f"evse{i}.inverter.setpoint"] for i in self.ids}

    def value(self, name: str) -> Any:
        assert self.last is not None
        return self.last.image[name].value
