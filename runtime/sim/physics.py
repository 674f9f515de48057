"""Physics of the virtual plant, stepped in simulated time: no sockets, no clock, no threads.

The plant is described by tags in the same vocabulary the I/O maps use (``grid.voltage``,
``inverter.power``, ...), so each simulated Modbus device simply serves the plant's values through its
map. Power follows the project's sign convention: positive into the EV battery.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field

from runtime.api import Params


class InverterModel(Params):
    max_charge_w: float = Field(11000.0, gt=0, le=1e6)
    max_discharge_w: float = Field(11000.0, gt=0, le=1e6)
    tau_s: float = Field(0.3, gt=0, le=60, description="first-order power response time constant")
    ramp_w_per_s: float = Field(22000.0, gt=0, le=1e10, description="ramp limit of the power stage")
    manufacturer: str = "v2g-plc sim"
    model: str = "BIDI-11"
    serial: str = "SIM0001"


class EvModel(Params):
    connected: bool = True
    capacity_wh: float = Field(60000.0, gt=0, le=1e7, description="nameplate (new) capacity")
    soh: float = Field(0.95, gt=0, le=1)
    soc: float = Field(0.5, ge=0, le=1)
    charge_efficiency: float = Field(0.95, gt=0, le=1)
    discharge_efficiency: float = Field(0.95, gt=0, le=1)


class GridModel(Params):
    voltage: float = Field(240.0, gt=0, le=1000, description="line-to-line, split-phase")
    frequency: float = Field(60.0, ge=40, le=70)


class MeterModel(Params):
    # An installed meter never reads 0: SunSpec-style devices take 0 for "not implemented".
    energy_import_wh: float = Field(12_345_670.0, gt=0, le=1e12)
    energy_export_wh: float = Field(2_345_670.0, gt=0, le=1e12)
    load_w: float = Field(600.0, ge=-1e6, le=1e6, description="site consumption besides the charger (import-positive)")


class ThermalModel(Params):
    ambient_c: float = Field(25.0, ge=-50, le=70)
    tau_s: float = Field(120.0, gt=0, le=36000, description="heat sink time constant")
    k_per_kw: float = Field(2.5, ge=0, le=100, description="steady-state rise above ambient per kW of |power|")
    coolant_tau_s: float = Field(300.0, gt=0, le=36000)
    coolant_k_per_kw: float = Field(1.2, ge=0, le=100)


class PlcModel(Params):
    snr_db: float = Field(32.0, ge=-20, le=80)
    attenuation_db: float = Field(22.0, ge=0, le=100)
    noise_db: float = Field(0.5, ge=0, le=20, description="standard deviation of SNR noise")


class PhysicsParams(Params):
    inverter: InverterModel = Field(default_factory=InverterModel)
    ev: EvModel = Field(default_factory=EvModel)
    grid: GridModel = Field(default_factory=GridModel)
    meter: MeterModel = Field(default_factory=MeterModel)
    thermal: ThermalModel = Field(default_factory=ThermalModel)
    plc: PlcModel = Field(default_factory=PlcModel)
    seed: int = Field(1, ge=0, le=2**32 - 1)


@dataclass
class Ramp:
    start: float
    target: float
    t0: float
    duration: float

    def at(self, t: float) -> float:
        if self.duration <= 0 or t >= self.t0 + self.duration:
            return self.target
        return self.start + (self.target - self.start) * max(0.0, t - self.t0) / self.duration


# Quantities a scenario may set (step or ramp): name -> attribute of Plant.
SETTABLE = {
    "grid.voltage": "grid_v",
    "grid.frequency": "grid_f",
    "plc.attenuation_extra": "plc_extra_db",
    "temperature.ambient": "ambient_c",
    "site.load": "load_w",
    "ev.soc": "soc",
}


@dataclass
class Plant:
    """State of everything behind the Modbus devices, and its step function."""

    p: PhysicsParams
    t: float = 0.0
    grid_v: float = 240.0
    grid_f: float = 60.0
    grid_lost: bool = False
    setpoint_w: float = 0.0  # commanded, charge-positive
    enabled: bool = False
    power_w: float = 0.0  # actual AC power at the charger
    connected: bool = True
    soc: float = 0.5
    e_import_wh: float = 0.0
    e_export_wh: float = 0.0
    inv_import_wh: float = 0.0
    inv_export_wh: float = 0.0
    load_w: float = 0.0
    ambient_c: float = 25.0
    t_igbt: float = 25.0
    t_coolant: float = 25.0
    plc_extra_db: float = 0.0
    snr_db: float = 0.0
    ramps: dict[str, Ramp] = field(default_factory=dict)
    rng: random.Random = field(default_factory=random.Random)
    # A plant run time-lapsed (``--speed N``) answers like a device, in real time: its power stage's time
    # constant and ramp stretch N x in the plant's time (VirtualPlant.time_lapse).
    response_scale: float = 1.0

    @classmethod
    def create(cls, p: PhysicsParams) -> Plant:
        pl = cls(p)
        pl.grid_v, pl.grid_f = p.grid.voltage, p.grid.frequency
        pl.connected, pl.soc = p.ev.connected, p.ev.soc
        pl.e_import_wh, pl.e_export_wh = p.meter.energy_import_wh, p.meter.energy_export_wh
        pl.inv_import_wh, pl.inv_export_wh = 1_000_000.0, 900_000.0  # a used charger: counters non-zero
        pl.load_w = p.meter.load_w
        pl.ambient_c = pl.t_igbt = pl.t_coolant = p.thermal.ambient_c
        pl.rng = random.Random(p.seed)
        pl.snr_db = p.plc.snr_db
        return pl

    # -- commands from the Modbus side ---------------------------------------------------------
    def command(self, tag: str, value: Any) -> None:
        if tag == "inverter.setpoint":
            self.setpoint_w = float(value)
        elif tag == "inverter.enable":
            self.enabled = bool(value)

    # -- scenario --------------------------------------------------------------------------------
    def set(self, name: str, to: float, ramp_s: float = 0.0) -> None:
        attr = SETTABLE[name]
        if ramp_s > 0:
            self.ramps[attr] = Ramp(getattr(self, attr), to, self.t, ramp_s)
        else:
            self.ramps.pop(attr, None)
            setattr(self, attr, to)

    def event(self, name: str, **kw: Any) -> None:
        if name == "grid_loss":
            self.grid_lost = True
        elif name == "grid_restore":
            self.grid_lost = False
        elif name == "plug_in":
            self.connected = True
            if "soc" in kw:
                self.soc = float(kw["soc"])
        elif name == "depart":
            self.connected = False
            if "trip_wh" in kw:  # the drive, booked at departure: the EV comes back with less
                self.soc = max(0.0, self.soc - float(kw["trip_wh"]) / self.usable_wh)
        else:
            raise ValueError(f"unknown plant event {name!r}")

    # -- physics ---------------------------------------------------------------------------------
    @property
    def usable_wh(self) -> float:
        return self.p.ev.capacity_wh * self.p.ev.soh

    def target_w(self) -> float:
        """What the power stage aims for: the setpoint within ratings, zero when it may not run."""
        inv = self.p.inverter
        if not (self.enabled and self.connected and not self.grid_lost):
            return 0.0
        w = max(-inv.max_discharge_w, min(inv.max_charge_w, self.setpoint_w))
        if (w > 0 and self.soc >= 1.0) or (w < 0 and self.soc <= 0.0):
            return 0.0
        return w

    def step(self, dt: float) -> None:
        if dt <= 0:
            return
        self.t += dt
        for attr, r in list(self.ramps.items()):
            setattr(self, attr, r.at(self.t))
            if self.t >= r.t0 + r.duration:
                del self.ramps[attr]
        inv = self.p.inverter
        # First-order response toward the target, limited by the ramp rate (IEEE 1547 ramp, 4.6.x).
        target = self.target_w()
        dp = (target - self.power_w) * (1.0 - math.exp(-dt / (inv.tau_s * self.response_scale)))
        lim = inv.ramp_w_per_s / self.response_scale * dt
        dp = max(-lim, min(lim, dp))
        if self.grid_lost or not self.connected:
            dp = -self.power_w  # anti-islanding / contactor open: stop at once
        self.power_w += dp
        if abs(self.power_w) < 1e-6:
            self.power_w = 0.0
        # EV battery: losses on the way in and on the way out.
        ev = self.p.ev
        e_wh = self.power_w * dt / 3600.0
        if self.connected:
            stored = e_wh * ev.charge_efficiency if e_wh > 0 else e_wh / ev.discharge_efficiency
            self.soc = min(1.0, max(0.0, self.soc + stored / self.usable_wh))
        if e_wh > 0:
            self.inv_import_wh += e_wh
        else:
            self.inv_export_wh -= e_wh
        # Site meter: charger plus the rest of the site.
        site_wh = (self.power_w + self.load_w) * dt / 3600.0
        if site_wh > 0:
            self.e_import_wh += site_wh
        else:
            self.e_export_wh -= site_wh
        # Thermal: heats with |P|, cools to ambient (first order with inertia).
        th = self.p.thermal
        kw = abs(self.power_w) / 1000.0
        self.t_igbt += (self.ambient_c + th.k_per_kw * kw - self.t_igbt) * (1 - math.exp(-dt / th.tau_s))
        self.t_coolant += (self.ambient_c + th.coolant_k_per_kw * kw - self.t_coolant) * (
            1 - math.exp(-dt / th.coolant_tau_s)
        )
        # PLC link: SNR degrades with extra attenuation, with measurement noise.
        self.snr_db = self.p.plc.snr_db - self.plc_extra_db + self.rng.gauss(0.0, self.p.plc.noise_db)

    # -- what the devices show ------------------------------------------------------------------
    def values(self) -> dict[str, Any]:
        """Every quantity by tag name (map-relative names); devices pick what their map serves."""
        inv, ev = self.p.inverter, self.p.ev
        v = 0.0 if self.grid_lost else self.grid_v
        f = 0.0 if self.grid_lost else self.grid_f
        site_w = self.power_w + self.load_w
        return {
            "grid.voltage": v,
            "grid.frequency": f,
            "grid.loss": self.grid_lost,
            "inverter.power": self.power_w,
            "inverter.connected": not self.grid_lost,
            "inverter.alarm_over_temp": self.t_igbt > 90.0,
            "inverter.fault": False,
            "inverter.temperature": self.t_igbt,
            "inverter.energy_import": self.inv_import_wh,
            "inverter.energy_export": self.inv_export_wh,
            "inverter.max_charge_w": inv.max_charge_w,
            "inverter.max_discharge_w": inv.max_discharge_w,
            "inverter.manufacturer": inv.manufacturer,
            "inverter.model": inv.model,
            "inverter.serial": inv.serial,
            "ev.connected": self.connected,
            "ev.soc": self.soc if self.connected else None,
            "ev.soh": ev.soh if self.connected else None,
            "ev.capacity_wh": ev.capacity_wh if self.connected else None,
            "ev.energy_available": self.soc * self.usable_wh if self.connected else None,
            "meter.power": site_w,
            "meter.voltage": v,
            "meter.frequency": f,
            "meter.current": site_w / v if v > 0 else 0.0,
            "meter.energy_import": self.e_import_wh,
            "meter.energy_export": self.e_export_wh,
            # The charger's own state for the SECC's hooks (io_maps/vendor_bidi_charger.yaml 40112-40114): the
            # contactor closes with the permit to energize, the CP is C2 then (B2 plugged in, A1 unplugged).
            "charger.contactor_closed": self.connected and self.enabled and not self.grid_lost,
            "charger.isolation": "valid" if self.connected else "invalid",
            "charger.cp_state": ("C2" if self.enabled else "B2") if self.connected else "A1",
            "plc.snr": self.snr_db if self.connected else None,
            "plc.attenuation": self.p.plc.attenuation_db + self.plc_extra_db if self.connected else None,
            "plc.slac_matched": self.connected,
            "plc.tone_maps": 2 if self.connected else 0,
            "temperature.igbt": self.t_igbt,
            "temperature.coolant": self.t_coolant,
            "temperature.ambient": self.ambient_c,
        }
