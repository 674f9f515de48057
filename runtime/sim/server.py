"""The virtual plant: physics plus one pymodbus TCP server per port, serving the shipped I/O maps.

Two clocks: ``advance(dt)`` steps simulated time (tests, long durations in no time), and
``run_realtime(speed)`` steps it from the monotonic clock x speed (``python -m runtime.sim``). The plant
is always a separate peer of the runtime: in production a process of its own
(docs/design.md#processes-and-the-task-channel), in tests at most a server on the test's own loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from runtime.api import Params, SiteFile
from runtime.io.maps import load_map, resolve_map_path
from runtime.sim.devices import Fault, SimModbusDevice
from runtime.sim.physics import SETTABLE, PhysicsParams, Plant
from runtime.yamlload import ConfigError, ConfigIssue, load_yaml, validate

log = logging.getLogger("v2g_plc.sim")


class PlantDevice(Params):
    name: str = Field(min_length=1)
    map: str = Field(description="I/O map served (path relative to the site file, or a shipped map's name)")
    port: int = Field(ge=0, le=65535, description="TCP port; devices on one port are units of one gateway")
    unit: int = Field(1, ge=1, le=247)
    sunspec_base: Literal[0, 40000, 50000] = Field(40000, description="SunSpec maps: where the SunS marker is")


class ScenarioEvent(Params):
    t: float = Field(ge=0, le=3.2e7, description="seconds of simulated time (a year at most)")
    set: str | None = Field(None, description=f"quantity to change: one of {sorted(SETTABLE)}")
    to: float | None = Field(None, ge=-1e9, le=1e9, description="the new value (its own unit: V, Hz, W, degC, dB)")
    ramp_s: float = Field(0.0, ge=0, le=86400)
    event: Literal["grid_loss", "grid_restore", "plug_in", "depart"] | None = None
    soc: float | None = Field(None, ge=0, le=1, description="plug_in: SoC of the arriving EV")
    trip_wh: float | None = Field(None, ge=0, le=1e7, description="depart: energy the drive takes out of the battery")

    @model_validator(mode="after")
    def _one(self) -> ScenarioEvent:
        if (self.set is None) == (self.event is None):
            raise ValueError("an event has either set: (with to:) or event:")
        if self.set is not None:
            if self.set not in SETTABLE:
                raise ValueError(f"set: {self.set!r} is not one of {sorted(SETTABLE)}")
            if self.to is None:
                raise ValueError("set: needs to:")
        return self


class Scenario(Params):
    name: str = ""
    description: str = ""
    events: list[ScenarioEvent] = Field(default_factory=list)


class VirtualPlantParams(PhysicsParams):
    host: str = "127.0.0.1"
    step_s: float = Field(0.05, gt=0, le=1, description="physics step (simulated seconds)")
    devices: list[PlantDevice] = Field(min_length=1)
    scenario: SiteFile | None = Field(None, description="YAML file of timed events (relative to the site file)")
    events: list[ScenarioEvent] = Field(default_factory=list, description="inline events (added to scenario)")
    csms_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="also serve a local OCPP 2.0.1 back office on this loopback port (the demo's CSMS: it "
        "accepts every station and logs what it receives); None: none",
    )

    @model_validator(mode="after")
    def _unique(self) -> VirtualPlantParams:
        names = [d.name for d in self.devices]
        if len(set(names)) != len(names):
            raise ValueError("plant device names must be unique")
        ids = [(d.port, d.unit) for d in self.devices if d.port]
        if len(set(ids)) != len(ids):
            raise ValueError("two plant devices share a port and unit")
        return self


def load_scenario(path: str | Path) -> Scenario:
    doc = load_yaml(path)
    return validate(Scenario, doc.data, doc)


class VirtualPlant:
    def __init__(self, params: VirtualPlantParams, base_dir: Path = Path(".")):
        self.params = params
        self.plant = Plant.create(params)
        inv = params.inverter
        clamp = {"inverter.setpoint": (-inv.max_discharge_w, inv.max_charge_w)}
        self.devices: dict[str, SimModbusDevice] = {}
        self.ports: dict[str, int] = {}
        for d in params.devices:
            path = resolve_map_path(d.map, base_dir)
            if not path.exists():
                raise ConfigError(
                    [
                        ConfigIssue(
                            str(base_dir), None, f"plant.params.devices[{d.name}].map", f"I/O map {d.map!r} not found"
                        )
                    ]
                )
            m = load_map(path)
            self.devices[d.name] = SimModbusDevice(d.name, m, d.unit, d.sunspec_base, clamp=clamp)
            self.ports[d.name] = d.port
        events = list(params.events)
        if params.scenario:
            p = Path(params.scenario)
            events += load_scenario(p if p.is_absolute() else base_dir / p).events
        self.events = sorted(events, key=lambda e: e.t)
        self._next = 0
        self.servers: list[Any] = []
        self._publish()

    # -- simulated time --------------------------------------------------------------------------
    @property
    def t(self) -> float:
        return self.plant.t

    def advance(self, dt: float) -> None:
        """Step the plant ``dt`` simulated seconds (in ``step_s`` pieces), firing scenario events."""
        end = self.plant.t + dt
        while self.plant.t < end - 1e-12:
            self._fire_events()
            h = min(self.params.step_s, end - self.plant.t)
            self.plant.step(h)
            for dev in self.devices.values():
                if dev.check_reversion(self.plant.t):
                    for tag, v in dev.outputs.items():
                        self.plant.command(tag, v)
        self._fire_events()
        self._publish()

    def _fire_events(self) -> None:
        while self._next < len(self.events) and self.events[self._next].t <= self.plant.t + 1e-9:
            e = self.events[self._next]
            self._next += 1
            if e.set is not None:
                assert e.to is not None
                self.plant.set(e.set, e.to, e.ramp_s)
                log.info("t=%.2f: %s -> %s over %.1f s", self.plant.t, e.set, e.to, e.ramp_s)
            else:
                assert e.event is not None
                kw = {k: v for k, v in (("soc", e.soc), ("trip_wh", e.trip_wh)) if v is not None}
                self.plant.event(e.event, **kw)
                log.info("t=%.2f: %s", self.plant.t, e.event)

    def _publish(self) -> None:
        values = self.plant.values()
        for dev in self.devices.values():
            dev.publish(values, self.plant.t)

    def inject(self, device: str, fault: Fault | None) -> None:
        self.devices[device].fault = fault

    # -- servers ---------------------------------------------------------------------------------
    def _action(self, dev: SimModbusDevice) -> Callable[..., Any]:
        from pymodbus.constants import ExcCodes

        async def action(
            function_code: int,
            start_address: int,
            address: int,
            count: int,
            current_registers: list[int],
            set_values: list[int] | None,
        ) -> Any:
            f = dev.fault
            if f is not None:
                hit = f.addresses is None or any(a in f.addresses for a in range(address, address + count))
                if hit and (set_values is not None or not f.on_write_only):
                    if f.delay_s:
                        await asyncio.sleep(f.delay_s)
                    if f.silent:
                        await asyncio.sleep(3600)
                    if f.exception is not None:
                        return ExcCodes(f.exception)
            if function_code in (1, 2, 5, 15):
                return ExcCodes.ILLEGAL_FUNCTION  # the simulated devices have no coils
            if set_values is not None:
                code = dev.write(address, list(set_values), self.plant.t)
                if code is not None:
                    return ExcCodes(code)
                for tag, v in dev.outputs.items():
                    self.plant.command(tag, v)
                values = dev.read(address, count)
                set_values[:] = values  # the device may hold a clamped value
                current_registers[address - start_address : address - start_address + count] = values
                return None
            current_registers[address - start_address : address - start_address + count] = dev.read(address, count)
            return None

        return action

    async def start(self) -> None:
        """Listen on every port (returns when all listen)."""
        from pymodbus.server import ModbusTcpServer
        from pymodbus.simulator import DataType, SimData, SimDevice

        by_port: dict[int, list[SimModbusDevice]] = {}
        for name, dev in self.devices.items():
            if self.ports[name]:
                by_port.setdefault(self.ports[name], []).append(dev)
        for port, devs in by_port.items():
            sims = [
                SimDevice(
                    dev.unit,
                    simdata=[SimData(a, count=n, values=0, datatype=DataType.REGISTERS) for a, n in dev.blocks],
                    action=self._action(dev),
                )
                for dev in devs
            ]

            def trace(sending: bool, data: bytes, devs: list[SimModbusDevice] = devs) -> bytes:
                if sending and any(d.fault is not None and d.fault.truncate for d in devs):
                    return data[:-2]
                return data

            server = ModbusTcpServer(sims, address=(self.params.host, port), trace_packet=trace)
            await server.serve_forever(background=True)
            self.servers.append(server)

    async def start_serial(self, devices: list[str], port: str, baudrate: int = 9600, parity: str = "E") -> None:
        """Serve these devices as slaves of one Modbus RTU line on a serial device (a pty in tests)."""
        from pymodbus.server import ModbusSerialServer
        from pymodbus.simulator import DataType, SimData, SimDevice

        devs = [self.devices[n] for n in devices]
        sims = [
            SimDevice(
                dev.unit,
                simdata=[SimData(a, count=n, values=0, datatype=DataType.REGISTERS) for a, n in dev.blocks],
                action=self._action(dev),
            )
            for dev in devs
        ]
        server = ModbusSerialServer(
            sims, port=port, baudrate=baudrate, parity=parity, stopbits=1, bytesize=8, ignore_missing_devices=True
        )
        await server.serve_forever(background=True)
        self.servers.append(server)

    async def stop(self) -> None:
        for s in self.servers:
            await s.shutdown()
        self.servers.clear()

    async def run_realtime(self, speed: float = 1.0, stop: asyncio.Event | None = None) -> None:
        """Step physics from the monotonic clock x speed until ``stop`` is set (or cancelled)."""
        t0 = time.monotonic()
        sim0 = self.plant.t
        stop = stop or asyncio.Event()
        while not stop.is_set():
            target = sim0 + (time.monotonic() - t0) * speed
            if target > self.plant.t:
                self.advance(target - self.plant.t)
            try:
                async with asyncio.timeout(self.params.step_s / speed):  # not wait_for: it may swallow a cancel
                    await stop.wait()
            except TimeoutError:
                pass
