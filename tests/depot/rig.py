"""A depot on the cycle rig: N EVSEs whose requests the test sets, a site meter, the allocator and the
connection interlock, stepped through the engine's one step function.

The plant is the simplest honest one: each EVSE's measured power is the set point committed by the
previous cycle, and the meter reads the building load plus the EVSEs' measured power (import-positive).
"""

from __future__ import annotations

from typing import Any

from backtest.rig import CycleRig
from programs.allocator import Allocator, AllocatorParams
from runtime.api import Cycle, Program, SiteInfo
from runtime.engine import StepResult
from runtime.tags import Direction, Quality, TagSpec, TagType, TagUpdate
from safety.connection import ConnectionLimit, ConnectionParams

CAPACITY_WH = 60_000.0


class Requests(Program):
    """What each EVSE's modes and dispatch would have asked this cycle, and its interlock's trip code."""

    def __init__(self, site: SiteInfo, ids: list[int]):
        super().__init__("requests", Program.Params(), site)
        self.ids = ids
        self.request = {n: 0.0 for n in ids}
        self.trip = {n: "" for n in ids}
        self.bypass = False  # write after the allocator (a forced output would): only the interlock is left

    def declare(self) -> list[TagSpec]:
        out = []
        for n in self.ids:
            out += [
                TagSpec(f"evse{n}.inverter.setpoint", TagType.FLOAT, "W", Direction.OUTPUT, 0.0),
                TagSpec(f"evse{n}.safety.trip", TagType.STR, "", Direction.MEMORY, ""),
            ]
        return out

    def scan(self, cx: Cycle) -> None:
        for n in self.ids:
            cx.out[f"evse{n}.inverter.setpoint"] = self.request[n]
            cx.out[f"evse{n}.safety.trip"] = self.trip[n]


class Bypass(Program):
    """Runs after the allocator and writes the raw requests again when asked (a program gone wrong)."""

    def __init__(self, site: SiteInfo, req: Requests):
        super().__init__("bypass", Program.Params(), site)
        self.req = req

    def scan(self, cx: Cycle) -> None:
        if self.req.bypass:
            for n in self.req.ids:
                cx.out[f"evse{n}.inverter.setpoint"] = self.req.request[n]


class DepotRig(CycleRig):
    def __init__(
        self,
        n: int = 3,
        period_ms: int = 100,
        shared: tuple[str, ...] = (),
        shared_stale_s: float | None = None,
        **limits: Any,
    ):
        self.ids = list(range(1, n + 1))
        limits.setdefault("import_limit_w", 30_000.0)
        limits.setdefault("export_limit_w", 20_000.0)
        limits["evses"] = self.ids
        site = SiteInfo("depot-rig", 240.0, 60, period_ms * 1000)
        self.req = Requests(site, self.ids)
        self.alloc = Allocator("allocator", AllocatorParams.model_validate(limits), site)
        conn = {k: v for k, v in limits.items() if k in ConnectionParams.model_fields}  # no margin: hard limits
        self.conn = ConnectionLimit("connection", ConnectionParams.model_validate(conn), site)
        plant = [TagSpec("meter.power", TagType.FLOAT, "W", Direction.INPUT)]
        plant += [TagSpec(name, TagType.FLOAT, "W", Direction.SHARED, None, shared_stale_s) for name in shared]
        for i in self.ids:
            plant += [
                TagSpec(f"evse{i}.inverter.power", TagType.FLOAT, "W", Direction.INPUT),
                TagSpec(f"evse{i}.ev.soc", TagType.FLOAT, "", Direction.INPUT),
                TagSpec(f"evse{i}.ev.capacity_wh", TagType.FLOAT, "Wh", Direction.INPUT),
                TagSpec(f"evse{i}.ev.departure_s", TagType.FLOAT, "s", Direction.INPUT),
                TagSpec(f"evse{i}.ev.target_soc", TagType.FLOAT, "", Direction.INPUT),
            ]
        super().__init__(site, [self.req, self.alloc, Bypass(site, self.req)], [self.conn], plant=plant)
        self.period_us = period_ms * 1000
        self.building = 0.0
        self.power = {i: 0.0 for i in self.ids}
        self.soc = {i: 0.5 for i in self.ids}
        self.comms = {i: True for i in self.ids}
        self.meter_ok = True
        self.extra: list[TagUpdate] = []
        self.slow: set[int] = set()
        self.pending = {i: 0.0 for i in self.ids}
        self.departure: dict[int, tuple[float, float]] = {}  # EVSE -> (leaves at, s of cycle clock; target SoC)

    def inputs(self) -> list[TagUpdate]:
        ups = [
            TagUpdate(
                "meter.power", self.building + sum(self.power.values()), Quality.GOOD if self.meter_ok else Quality.BAD
            )
        ]
        for i in self.ids:
            q = Quality.GOOD if self.comms[i] else Quality.BAD
            ups += [
                TagUpdate(f"evse{i}.inverter.power", self.power[i], q),
                TagUpdate(f"evse{i}.ev.soc", self.soc[i], q),
                TagUpdate(f"evse{i}.ev.capacity_wh", CAPACITY_WH, q),
            ]
            if i in self.departure:  # the charger reports the time left, as ISO 15118-20 DepartureTime does
                at, target = self.departure[i]
                ups += [
                    TagUpdate(f"evse{i}.ev.departure_s", max(0.0, at - self.now_us / 1e6), q),
                    TagUpdate(f"evse{i}.ev.target_soc", target, q),
                ]
        ups, self.extra = ups + self.extra, []
        return ups

    def departs(self, n: int, in_s: float, target_soc: float) -> None:
        """The fleet schedule says EVSE n's EV leaves in ``in_s`` with ``target_soc``."""
        self.departure[n] = (self.now_us / 1e6 + in_s, target_soc)

    def step_once(self) -> StepResult:
        res = self.step(self.inputs())
        for i in self.ids:  # the chargers follow within a cycle; a charger without comms stops (reversion)
            now = res.outputs[f"evse{i}.inverter.setpoint"] if self.comms[i] else 0.0
            # a slow link: this charger takes the set point of the cycle before (a write still on its way)
            self.power[i], self.pending[i] = (self.pending[i], now) if i in self.slow else (now, now)
        self.advance(self.period_us)
        return res

    def settle(self, cycles: int = 3) -> StepResult:
        res = self.step_once()
        for _ in range(cycles - 1):
            res = self.step_once()
        return res

    def setpoints(self, res: StepResult) -> dict[int, float]:
        return {i: res.outputs[f"evse{i}.inverter.setpoint"] for i in self.ids}

    def image(self, name: str) -> Any:
        assert self.last is not None
        return self.last.image[name].value

    def site_import(self) -> float:
        """What the plant's meter reads after the chargers followed the last commit."""
        return self.building + sum(self.power.values())
