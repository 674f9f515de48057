"""A test rig: the real Engine with the real safety supervisor and a program that asks for a setpoint.

The plant is the simplest honest one: the inverter's measured power is the setpoint committed by the
previous cycle (zero without the permit), so divergence stays quiet unless a test wants otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from backtest.rig import CycleRig
from runtime.api import Command, Cycle, Program, SiteInfo
from runtime.engine import RUNTIME_TAGS, StepResult
from runtime.tags import US, Direction, TagSpec, TagType, TagUpdate
from safety.settings import SafetyParams
from safety.supervisor import SafetySupervisor

INPUTS: dict[str, tuple[TagType, str, Any]] = {
    "grid.voltage": (TagType.FLOAT, "V", 240.0),
    "grid.frequency": (TagType.FLOAT, "Hz", 60.0),
    "grid.loss": (TagType.BOOL, "", False),
    "inverter.power": (TagType.FLOAT, "W", 0.0),
    "meter.power": (TagType.FLOAT, "W", 0.0),
    "inverter.temperature": (TagType.FLOAT, "degC", 40.0),
    "inverter.write_mismatch": (TagType.BOOL, "", False),
    "inverter.max_charge_w": (TagType.FLOAT, "W", 11000.0),
    "inverter.max_discharge_w": (TagType.FLOAT, "W", 11000.0),
    "ev.soc": (TagType.FLOAT, "", 0.5),
    "ev.soh": (TagType.FLOAT, "", 0.95),
    "plc.snr": (TagType.FLOAT, "dB", 30.0),
}


class Requester(Program):
    """Asks for whatever the test says: the program side of the scan."""

    def __init__(self, site: SiteInfo):
        super().__init__("request", Program.Params(), site)
        self.setpoint = 0.0
        self.enable = True
        self.fail = False

    def scan(self, cx: Cycle) -> None:
        if self.fail:
            raise RuntimeError("boom")
        cx.out["inverter.setpoint"] = self.setpoint
        cx.out["inverter.enable"] = self.enable


PERSIST = "runtime.persist_fault"
# The runtime declares runtime.persist_fault once the scan core has it; until then a site declares it.
PERSIST_SPEC = next((s for s in RUNTIME_TAGS if s.name == PERSIST), None)


class Memory(Program):
    """A program owning memory tags other parts read: the mode (as the modes program does) and, where the
    runtime does not declare it yet, ``runtime.persist_fault``."""

    def __init__(self, site: SiteInfo, values: dict[str, Any]):
        super().__init__("memory", Program.Params(), site)
        self.values = values

    def declare(self) -> list[TagSpec]:
        types = {str: TagType.STR, bool: TagType.BOOL}
        return [
            TagSpec(n, types[type(v)], "", Direction.MEMORY, v)
            for n, v in self.values.items()
            if not (n == PERSIST and PERSIST_SPEC is not None)
        ]

    def scan(self, cx: Cycle) -> None:
        for n, v in self.values.items():
            if n in cx.out:
                cx.out[n] = v


class Rig(CycleRig):
    """The shared cycle rig (backtest.rig) around ``v2g_safety``: a requester program in front, the plant's
    inputs fed fresh every cycle, and (``follow``) the inverter's power following the committed set point."""

    def __init__(
        self,
        period_ms: int = 20,
        nominal_v: float = 240.0,
        nominal_f: int = 60,
        phases: int = 1,
        follow: bool = True,
        extra_inputs: Iterable[TagSpec] = (),
        supervisor: type[SafetySupervisor] = SafetySupervisor,
        programs: Iterable[Program] = (),
        speed: int = 1,
        **params: Any,
    ):
        params.setdefault("category", "III")
        params.setdefault("rated_charge_w", 11000.0)
        params.setdefault("rated_discharge_w", 11000.0)
        self.site = SiteInfo(
            name="rig",
            nominal_voltage=nominal_v,
            nominal_frequency=nominal_f,
            period_us=period_ms * 1000 * speed,
            phases=phases,
            speed=speed,
        )
        self.params = SafetyParams.model_validate(params)
        self.safety = supervisor("safety", self.params, self.site)
        self.req = Requester(self.site)
        specs = [TagSpec(n, t, u, Direction.INPUT, None) for n, (t, u, _) in INPUTS.items()]
        specs += list(extra_inputs)
        outs = [
            TagSpec("inverter.setpoint", TagType.FLOAT, "W", Direction.OUTPUT, 0.0),
            TagSpec("inverter.enable", TagType.BOOL, "", Direction.OUTPUT, False),
        ]
        super().__init__(self.site, [self.req, *programs], [self.safety], plant=[*specs, *outs], age_scale=speed)
        self.values: dict[str, Any] = {n: d for n, (_, _, d) in INPUTS.items()}
        self.values["runtime.overrun_fault"] = False
        self.follow = follow
        self.period_us = self.site.period_us
        self.ceased_us: int | None = None  # scratch for tests that time the output reaching zero

    def set(self, **values: Any) -> None:
        for k, v in values.items():
            name = k.replace("__", ".")
            self.values[name] = v

    def step(self, commands: tuple[Command, ...] = (), advance_us: int | None = None) -> StepResult:
        ups = [TagUpdate(n, v) for n, v in self.values.items()]  # every input freshly read, as a poller does
        res = super().step(ups, commands)
        if self.follow:
            p = res.outputs["inverter.setpoint"] if res.outputs["inverter.enable"] else 0.0
            self.values["inverter.power"] = p
        self.advance(advance_us or self.period_us)
        return res

    def run(self, seconds: float, step_s: float | None = None) -> list[StepResult]:
        """Run ``seconds`` of simulated time; coarse steps where a test does not need cycle resolution."""
        end = self.now_us + round(seconds * US)
        adv = (
            self.period_us
            if step_s is None
            else max(self.period_us, round(step_s * US) // self.period_us * self.period_us)
        )
        out = []
        while self.now_us < end:
            out.append(self.step(advance_us=min(adv, max(self.period_us, end - self.now_us))))
        return out

    def settle(self) -> None:
        """Through start-up enter service (delay + ramp) in coarse steps, then a few fine cycles."""
        es = self.params.enter_service
        self.run(es.delay_s + es.ramp_s + 2, step_s=1.0)
        self.run(0.1)

    @property
    def out(self) -> dict[str, Any]:
        assert self.last is not None
        return self.last.outputs


# The three Modbus devices of the virtual-plant tests, as site-file text: ``devices:`` of the runtime and
# the ``devices:`` the plant serves, on ports {p1}, {p2}, {p3} (format-string fragments, braces doubled).
MODBUS_DEVICES = """\
devices:
  - {{name: inverter, type: modbus_tcp, params: {{host: 127.0.0.1, port: {p1}, units: [{{unit: 1, map: sunspec_der_inverter}}], timeout_s: 0.5, retries: 1}}}}
  - {{name: meter, type: modbus_tcp, params: {{host: 127.0.0.1, port: {p2}, units: [{{unit: 1, map: site_meter_tcp}}], timeout_s: 0.5, retries: 1}}}}
  - {{name: modem, type: modbus_tcp, params: {{host: 127.0.0.1, port: {p3}, units: [{{unit: 1, map: plc_modem}}], timeout_s: 0.5, retries: 1}}}}
"""
PLANT_DEVICES = """\
    devices:
      - {{name: inverter, map: sunspec_der_inverter, port: {p1}, unit: 1}}
      - {{name: meter, map: site_meter_tcp, port: {p2}, unit: 1}}
      - {{name: modem, map: plc_modem, port: {p3}, unit: 1}}
"""
