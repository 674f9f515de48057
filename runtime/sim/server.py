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
from runtime.sim.depot import Departure, DepotModel, DepotStats, visits
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
    evse: int | None = Field(None, ge=1, le=200, description="a depot: the EVSE whose EV arrives or leaves")

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
    devices: list[PlantDevice] = Field(default_factory=list, description="site devices (a depot adds its chargers)")
    depot: DepotModel | None = Field(None, description="a depot's chargers, fleet and building (docs/depot.md)")
    report: str | None = Field(
        None, description="a depot: write the meter's peaks and every departure's SoC here as JSON (site-relative)"
    )
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
        if not self.devices and self.depot is None:
            raise ValueError("a plant serves at least one device (devices:, or a depot:)")
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
        self.base_dir = base_dir
        self.plant = Plant.create(params)  # the site: grid, building load, meter (and a site's one charger)
        self.evse: dict[int, Plant] = {}  # a depot: EVSE n's charger and EV
        inv = params.inverter
        clamp = {"inverter.setpoint": (-inv.max_discharge_w, inv.max_charge_w)}
        self.devices: dict[str, SimModbusDevice] = {}
        self.ports: dict[str, int] = {}
        self.owner: dict[str, Plant] = {}  # device -> the plant behind it
        self.evse_of: dict[str, int] = {}
        devices: list[tuple[PlantDevice, Plant, int | None]] = [(d, self.plant, None) for d in params.devices]
        dm = params.depot
        events = list(params.events)
        self.stats = DepotStats(import_limit_w=None if dm is None else dm.import_limit_w)
        self.next_departure: dict[int, float | None] = {}
        if dm is not None:
            for n in range(1, dm.chargers + 1):
                ev = self.evse[n] = Plant.create(params)
                ev.connected = False
                ev.load_w = 0.0
                self.next_departure[n] = None
                for kind, map_name, port in (
                    ("charger", dm.charger_map, dm.charger_port),
                    ("session", dm.session_map, dm.session_port),
                ):
                    devices.append(
                        (
                            PlantDevice(
                                name=f"evse{n}.{kind}", map=map_name, port=port, unit=n, sunspec_base=dm.sunspec_base
                            ),
                            ev,
                            n,
                        )
                    )
            for n, stays in visits(dm).items():
                for v in stays:
                    events.append(ScenarioEvent(t=v.arrive, event="plug_in", soc=v.soc, evse=n))
                    events.append(ScenarioEvent(t=v.depart, event="depart", trip_wh=v.trip_wh, evse=n))
            self.plant.load_w = dm.building_at(0.0)
        for d, owner, evse in devices:
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
            self.owner[d.name] = owner
            if evse is not None:
                self.evse_of[d.name] = evse
        if params.scenario:
            p = Path(params.scenario)
            events += load_scenario(p if p.is_absolute() else base_dir / p).events
        for e in events:
            if e.evse is not None and e.evse not in self.evse:
                raise ValueError(f"scenario event at t={e.t:g} names EVSE {e.evse}, which the depot does not have")
        self.events = sorted(events, key=lambda e: e.t)
        self._next = 0
        self.servers: list[Any] = []
        self.requests = {"reads": 0, "writes": 0}  # Modbus requests served (the depot's I/O load)
        self._stale: set[str] = set()  # devices whose registers lag the physics (encoded on the next request)
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
            if self.evse:
                self._step_depot(h)
            for name, dev in self.devices.items():
                if dev.check_reversion(self.plant.t):
                    for tag, v in dev.outputs.items():
                        self.owner[name].command(tag, v)
        self._fire_events()
        if self.servers:  # serving: each device encodes its registers when a request comes (see _action)
            self._stale = set(self.devices)
        else:
            self._publish()

    def _step_depot(self, h: float) -> None:
        """The chargers see the site's grid; the meter reads the building plus every charger."""
        site = self.plant
        assert self.params.depot is not None
        site.load_w = self.params.depot.building_at(site.t)
        total = 0.0
        for ev in self.evse.values():
            ev.grid_v, ev.grid_f, ev.grid_lost = site.grid_v, site.grid_f, site.grid_lost
            ev.step(h)
            total += ev.power_w
        wh = total * h / 3600.0
        if wh > 0:
            site.e_import_wh += wh
        else:
            site.e_export_wh -= wh
        self.stats.sample(site.t, site.load_w + site.power_w + total)

    def _fire_events(self) -> None:
        while self._next < len(self.events) and self.events[self._next].t <= self.plant.t + 1e-9:
            e = self.events[self._next]
            self._next += 1
            target = self.plant if e.evse is None else self.evse[e.evse]
            if e.set is not None:
                assert e.to is not None
                target.set(e.set, e.to, e.ramp_s)
                log.info("t=%.2f: %s -> %s over %.1f s", self.plant.t, e.set, e.to, e.ramp_s)
            else:
                assert e.event is not None
                kw = {k: v for k, v in (("soc", e.soc), ("trip_wh", e.trip_wh)) if v is not None}
                if e.evse is not None:
                    self._depot_visit(e.evse, e.event, target)
                target.event(e.event, **kw)
                log.info("t=%.2f: %s%s", self.plant.t, e.event, "" if e.evse is None else f" (EVSE {e.evse})")

    def _depot_visit(self, n: int, event: str, ev: Plant) -> None:
        """Book a depot vehicle's arrival (its departure becomes known) or departure (its SoC is judged)."""
        assert self.params.depot is not None
        if event == "plug_in":
            later = [x for x in self.events[self._next :] if x.evse == n and x.event == "depart"]
            self.next_departure[n] = later[0].t if later else None
        elif event == "depart" and ev.connected:
            need = self.params.depot.fleet.need_soc
            self.stats.departures.append(Departure(n, self.plant.t, ev.soc, need))
            self.next_departure[n] = None
            self.write_report()

    def _publish(self) -> None:
        values = self.site_values()
        per = {n: self.evse_values(n) for n in self.evse}
        for name, dev in self.devices.items():
            n = self.evse_of.get(name)
            dev.publish(values if n is None else per[n], self.plant.t)
        self._stale = set()

    def _publish_one(self, name: str) -> None:
        """One device's registers from the physics now: a depot of 20 chargers stepped every few ms would
        spend its time encoding registers nobody reads before the next step."""
        n = self.evse_of.get(name)
        self.devices[name].publish(self.site_values() if n is None else self.evse_values(n), self.plant.t)
        self._stale.discard(name)

    def site_values(self) -> dict[str, Any]:
        """What the site's devices show; at a depot the meter reads the building plus every charger."""
        values = self.plant.values()
        if self.evse:
            w = values["meter.power"] + sum(ev.power_w for ev in self.evse.values())
            v = values["meter.voltage"]
            values = {**values, "meter.power": w, "meter.current": w / v if v > 0 else 0.0}
        return values

    def evse_values(self, n: int) -> dict[str, Any]:
        """What EVSE n's devices show (plain tag names): its charger, its EV and the EV's departure."""
        assert self.params.depot is not None
        ev = self.evse[n]
        out = ev.values()
        dep = self.next_departure.get(n)
        on = ev.connected and dep is not None
        out["ev.departure_s"] = max(0.0, dep - self.plant.t) if on and dep is not None else None
        out["ev.target_soc"] = self.params.depot.fleet.need_soc if on else None
        return out

    def write_report(self) -> None:
        """The depot's proof, where the site asks for it: written whole each time (a reader never sees half)."""
        if self.params.report is None:
            return
        import json
        import os

        path = Path(self.params.report)
        path = path if path.is_absolute() else self.base_dir / path
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps({**self.stats.as_json(), "modbus_requests": self.requests}))
        os.replace(tmp, path)

    def inject(self, device: str, fault: Fault | None) -> None:
        self.devices[device].fault = fault

    # -- servers ---------------------------------------------------------------------------------
    def _action(self, dev: SimModbusDevice) -> Callable[..., Any]:
        from pymodbus.constants import ExcCodes

        owner = self.owner[dev.name]
        counts = self.requests

        async def action(
            function_code: int,
            start_address: int,
            address: int,
            count: int,
            current_registers: list[int],
            set_values: list[int] | None,
        ) -> Any:
            counts["writes" if set_values is not None else "reads"] += 1
            if dev.name in self._stale:
                self._publish_one(dev.name)
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
                    owner.command(tag, v)
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
        self.write_report()
        for s in self.servers:
            await s.shutdown()
        self.servers.clear()

    def time_lapse(self, speed: float) -> None:
        """Run as the real site time-lapsed: the physics (the EVs' charge, heat, the building, the scenario)
        ``speed`` x faster than real time, and the chargers' power stages (``inverter.tau_s``,
        ``ramp_w_per_s``) at their real pace, ``speed`` x slower in the plant's time.

        Why: the runtime's scan and its Modbus rounds keep their real pace at --speed N (docs/depot.md
        "At --speed"), and on a real site a power stage (0.3 s) is slow beside one round of reads (a few
        ms), so the reads of one cycle see one state of the plant. Time-lapsed with the physics, the power
        stage settled N x faster than a round at N = 300: a cycle read chargers and the site meter
        half-way through different steps, and the allocator's building estimate was whole chargers wrong.
        A device's response is the device's, like the wire's timing, so the plant keeps it in real time."""
        for plant in (self.plant, *self.evse.values()):
            plant.response_scale = speed

    async def run_realtime(self, speed: float = 1.0, stop: asyncio.Event | None = None) -> None:
        """Step physics from the monotonic clock x speed until ``stop`` is set (or cancelled), time-lapsed
        (``time_lapse``)."""
        self.time_lapse(speed)
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
