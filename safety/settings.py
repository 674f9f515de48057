"""The safety layer's settings: what a site may adjust, and only inside the ranges the standard allows.

A setting outside its IEEE 1547-2018 range is a pydantic validation error, which the site loader turns
into ``file:line: key: message``. Numbers that are not from a standard are engineering defaults and
say so. Tag names are settings too, so a site whose maps name things differently can point us at them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationInfo, field_validator, model_validator

from runtime.api import Params, TagName
from safety import tables as T

Category = Literal["I", "II", "III"]

# Every numeric setting is finite and bounded: NaN fails every comparison and infinity passes a one-sided
# bound, and either would switch a protection off. Where IEEE 1547-2018 gives a range it is used; the
# other bounds are stated here.
MAX_POWER_W = 1_000_000.0  # 1 MW: above any one inverter or charger this layer supervises
# Frequencies of a 50 or 60 Hz system, Hz; per unit of the basis inside the envelope of IEEE 1547-2018's
# frequency ranges (50.0-66.0 Hz at 60 Hz, tables.FREQUENCY_RANGES), checked at load for 50 Hz sites.
F_ANY_HZ = (40.0, 70.0)
F_ENVELOPE_PU = (50.0 / 60.0, 66.0 / 60.0)


class TripSetting(Params):
    """One trip: threshold (per unit of nominal voltage, or Hz) and clearing time; omitted -> default."""

    threshold: float | None = Field(
        None, ge=0, le=F_ANY_HZ[1], description="pu (voltage) or Hz (frequency); the category's range applies"
    )
    clearing_s: float | None = Field(
        None, gt=0, le=1000.0, description="s; IEEE 1547-2018's longest clearing time is 1000 s"
    )


class VoltageTrips(Params):
    ov2: TripSetting = TripSetting()
    ov1: TripSetting = TripSetting()
    uv1: TripSetting = TripSetting()
    uv2: TripSetting = TripSetting()


class FrequencyTrips(Params):
    """Hz. At 60 Hz every omitted value takes the IEEE 1547-2018 default; a 50 Hz site states them all."""

    of2: TripSetting = TripSetting()
    of1: TripSetting = TripSetting()
    uf1: TripSetting = TripSetting()
    uf2: TripSetting = TripSetting()
    continuous_low_hz: float | None = Field(None, ge=F_ANY_HZ[0], le=F_ANY_HZ[1])
    continuous_high_hz: float | None = Field(None, ge=F_ANY_HZ[0], le=F_ANY_HZ[1])
    ride_through_low_hz: float | None = Field(None, ge=F_ANY_HZ[0], le=F_ANY_HZ[1])
    ride_through_high_hz: float | None = Field(None, ge=F_ANY_HZ[0], le=F_ANY_HZ[1])


class EnterService(Params):
    # IEEE 1547-2018 clause 4.10 enter service, defaults and ranges (docs/reference.md#enter-service).
    v_low_pu: float = Field(T.ES_V_LOW[0], ge=T.ES_V_LOW[1][0], le=T.ES_V_LOW[1][1])
    v_high_pu: float = Field(T.ES_V_HIGH[0], ge=T.ES_V_HIGH[1][0], le=T.ES_V_HIGH[1][1])
    f_low_hz: float | None = Field(
        None, ge=F_ANY_HZ[0], le=F_ANY_HZ[1], description="default 59.5 Hz at 60 Hz; required at 50 Hz"
    )
    f_high_hz: float | None = Field(
        None, ge=F_ANY_HZ[0], le=F_ANY_HZ[1], description="default 60.1 Hz at 60 Hz; required at 50 Hz"
    )
    delay_s: float = Field(T.ES_DELAY_S[0], ge=T.ES_DELAY_S[1][0], le=T.ES_DELAY_S[1][1])
    ramp_s: float = Field(T.ES_RAMP_S[0], ge=T.ES_RAMP_S[1][0], le=T.ES_RAMP_S[1][1])
    gate_charging: bool = Field(False, description="the enter-service delay and ramp gate charging too")


class Islanding(Params):
    loss_tag: TagName | None = Field("grid.loss", description="bool loss-of-grid status (meter or inverter)")
    rocof_hz_per_s: float | None = Field(
        None,
        gt=0,
        le=10,
        description="trip above this |df/dt|; default and minimum: the category's "
        "ROCOF ride-through (0.5/2.0/3.0 Hz/s)",
    )
    rocof_window_s: float = Field(
        0.1, ge=0.02, le=1.0, description="df/dt from samples at least this far apart (engineering default)"
    )
    confirm_s: float = Field(
        0.1, ge=0.0, le=1.0, description="ROCOF must persist this long (engineering default; cease within 2 s)"
    )

    @model_validator(mode="after")
    def _detects_within_2_s(self) -> Islanding:
        """A trip needs an estimate whose window lies wholly after the onset (up to two windows) and then
        estimates, one window apart, spanning ``confirm_s``: that must fit the 2 s within which an island
        ceases (IEEE 1547-2018 clause 8.1), or a slow window quietly turns the protection off."""
        windows = 2 + math.ceil(round(self.confirm_s / self.rocof_window_s, 9))
        if windows * self.rocof_window_s > T.ISLANDING_CLEAR_S:
            raise ValueError(
                f"rocof_window_s {self.rocof_window_s:g} with confirm_s {self.confirm_s:g} detects a ROCOF only "
                f"after {windows * self.rocof_window_s:.2f} s, beyond the {T.ISLANDING_CLEAR_S:g} s an island must "
                "cease within"
            )
        return self


class Thermal(Params):
    tag: TagName | None = Field("inverter.temperature", description="degC; None disables the interlock")
    derate_start_c: float = Field(70.0, ge=20, lt=85, description="engineering default")
    trip_c: float = Field(85.0, gt=20, le=85, description="zero power and trip at or above (issue 4: 85 degC)")
    reset_c: float = Field(75.0, ge=0, lt=85, description="latched trip resets below this ...")
    cooldown_s: float = Field(300.0, ge=0, le=7200, description="... and after at least this long")
    tau_s: float | None = Field(600.0, gt=0, le=36000, description="thermal time constant; None: no prediction")
    ambient_c: float = Field(40.0, ge=-40, le=60, description="assumed ambient; higher is more conservative")
    slope_window_s: float = Field(10.0, ge=1, le=600, description="dT/dt from samples this far apart")

    @model_validator(mode="after")
    def _order(self) -> Thermal:
        if not self.derate_start_c < self.trip_c:
            raise ValueError("derate_start_c must be below trip_c")
        if not self.reset_c < self.trip_c:
            raise ValueError("reset_c must be below trip_c (a latched trip needs the temperature to fall)")
        return self


class Battery(Params):
    soc_tag: TagName = "ev.soc"
    soh_tag: TagName | None = "ev.soh"
    temperature_tag: TagName | None = Field(None, description="battery temperature degC, when the site has it")
    soc_reserve: float = Field(0.20, ge=0, le=1, description="no discharge at or below (engineering default)")
    soc_max: float = Field(0.95, ge=0, le=1, description="no charge at or above (engineering default)")
    soc_band: float = Field(0.02, ge=0, le=0.2, description="linear taper to the SoC limits (no chatter)")
    soc_hysteresis: float = Field(
        0.005, ge=0, le=0.05, description="a SoC limit is shown until SoC is this far back out of the taper band"
    )
    soh_low: float = Field(0.80, ge=0, le=1, description="below: the SoH guardrail applies")
    soc_reserve_guarded: float = Field(0.40, ge=0, le=1, description="reserve under the guardrail")
    discharge_fraction_guarded: float = Field(0.5, ge=0, le=1, description="of rating, under the guardrail")
    hot_c: float = Field(45.0, ge=0, le=80, description="battery above this: the guardrail applies")

    @model_validator(mode="after")
    def _order(self) -> Battery:
        if not self.soc_reserve < self.soc_max:
            raise ValueError("soc_reserve must be below soc_max")
        if self.soc_reserve_guarded < self.soc_reserve:
            raise ValueError("soc_reserve_guarded must not be below soc_reserve (a guardrail only tightens)")
        return self


class Divergence(Params):
    measured_tag: TagName = "inverter.power"
    abs_w: float = Field(
        500.0,
        gt=0,
        le=MAX_POWER_W,
        description="tolerance = abs_w + rel * |expected| (engineering default); below the rating",
    )
    rel: float = Field(0.10, ge=0, le=1)
    time_s: float = Field(3.0, gt=0, le=60, description="divergence must last this long")
    ramp_w_per_s: float | None = Field(
        None, gt=0, le=MAX_POWER_W, description="the inverter's ramp limit, W/s; None: immediate"
    )


class Comms(Params):
    required_tags: list[TagName] = Field(
        default_factory=lambda: ["grid.voltage", "grid.frequency", "inverter.power", "meter.power"],
        description="inverter/meter inputs: bad or stale -> trip comms_lost",
    )
    snr_tag: TagName | None = "plc.snr"
    snr_min_db: float = Field(
        10.0, ge=0, le=60, description="PLC link below this -> limit (engineering default; 0-60 dB: a modem's SNR)"
    )
    snr_ramp_w_per_s: float = Field(
        1000.0, gt=0, le=MAX_POWER_W, description="graceful discharge ramp-down on a weak link, W/s"
    )
    snr_hysteresis_db: float = Field(
        2.0, ge=0, le=20, description="a weak link counts as healthy again at snr_min_db plus this (no chatter)"
    )
    handshake_timeouts_tag: TagName | None = Field(
        None,
        description="ISO 15118 handshake timeouts in a row (the SECC device's secc.handshake_timeouts); None: not read",
    )
    handshake_timeouts_weak: int = Field(
        3,
        ge=1,
        le=100,
        description="this many in a row with the SNR under snr_min_db + snr_hysteresis_db: a weak PLC link",
    )
    rtt_tag: TagName | None = Field(None, description="measured back-office round trip, s")
    rtt_max_s: float = Field(0.5, gt=0, le=0.5, description="above: leave grid services (issue 4: 500 ms)")
    external_tags: list[TagName] = Field(
        default_factory=list,
        description="shared tags of the task process: each must be good, and a bool one true (a link flag)",
    )
    mode_tag: TagName = "mode.state"
    external_modes: list[str] = Field(
        default_factory=list, description="modes that follow external commands (zeroed when unhealthy)"
    )
    overrun_tag: TagName = "runtime.overrun_fault"
    fault_tag: TagName = "runtime.fault"
    persist_fault_tag: TagName | None = Field(
        "runtime.persist_fault",
        description="true while a latched state change is not durable on disk: trip persist_fault; absent: none",
    )
    write_mismatch_tag: TagName | None = "inverter.write_mismatch"
    write_mismatch_s: float = Field(1.0, ge=0, le=60, description="mismatch must last this long to trip")


class ExternalLimit(Params):
    """A limit from outside (grid operator, back office) as a magnitude, W >= 0. Not good (bad, stale) or
    negative: charge falls back to the last good charge limit (persisted, so a restart keeps it; 0 W if
    none was ever seen) and discharge to 0 W, so departure charging goes on and nobody discharges on a
    limit no one stands behind (docs/safety.md)."""

    name: str
    charge_tag: TagName | None = None
    discharge_tag: TagName | None = None


class DeviceTrip(Params):
    """Where the inverter publishes one of its own trip settings (SunSpec 707-710)."""

    threshold_tag: TagName
    time_tag: TagName
    unit: Literal["pu", "percent", "V", "Hz"] = "pu"


class Verify(Params):
    ratings: list[str] = Field(default_factory=list, description="SunSpec 702 tags that must read good")
    trips: dict[Literal["ov2", "ov1", "uv1", "uv2", "of2", "of1", "uf1", "uf2"], DeviceTrip] = Field(
        default_factory=dict
    )
    reversion_tag: TagName | None = Field(None, description="SunSpec 704 reversion timeout, s")
    reversion_max_s: float = Field(10.0, gt=0, le=600, description="the inverter must revert within this")


class Limits(Params):
    rating_charge_tag: TagName | None = "inverter.max_charge_w"
    rating_discharge_tag: TagName | None = "inverter.max_discharge_w"
    external: list[ExternalLimit] = Field(default_factory=list)


class TagNames(Params):
    voltage: TagName = "grid.voltage"
    voltage_phases: list[TagName] = Field(
        default_factory=lambda: ["grid.voltage_l1", "grid.voltage_l2", "grid.voltage_l3"]
    )
    frequency: TagName = "grid.frequency"
    setpoint: TagName = "inverter.setpoint"
    enable: TagName = "inverter.enable"


class SafetyParams(Params):
    category: Category = Field(description="IEEE 1547-2018 abnormal operating performance category")
    frequency_basis_hz: Literal[50, 60] = Field(
        60, description="the system frequency these settings are for; must equal the site's"
    )
    rated_charge_w: float = Field(gt=0, le=MAX_POWER_W, description="charger rating, W")
    rated_discharge_w: float = Field(ge=0, le=MAX_POWER_W, description="discharge rating, W")
    response_allowance_s: float = Field(
        0.06,
        ge=0,
        le=0.15,
        description="command a trip this much before the clearing time (Modbus write + "
        "inverter reaction; engineering default)",
    )
    phase_nominal_voltage: float | None = Field(
        None, ge=50, le=1000, description="basis of grid.voltage_l1..l3 (3-phase), V: a low-voltage phase"
    )
    voltage: VoltageTrips = VoltageTrips()
    frequency: FrequencyTrips = FrequencyTrips()
    enter_service: EnterService = EnterService()
    islanding: Islanding = Islanding()
    thermal: Thermal = Thermal()
    battery: Battery = Battery()
    divergence: Divergence = Divergence()
    comms: Comms = Comms()
    limits: Limits = Limits()
    verify: Verify = Verify()
    tags: TagNames = TagNames()
    trust_forced_inputs: bool = Field(False, description="act on forced protective inputs (commissioning only)")

    @field_validator("voltage")
    @classmethod
    def _voltage_ranges(cls, v: VoltageTrips, info: ValidationInfo) -> VoltageTrips:
        cat = info.data.get("category")
        if cat is None:
            return v
        for code in ("ov2", "ov1", "uv1", "uv2"):
            s: TripSetting = getattr(v, code)
            (tlo, thi), (clo, chi) = T.VOLTAGE_RANGES[cat][code]
            if s.threshold is not None and not tlo <= s.threshold <= thi:
                raise ValueError(
                    f"{code}.threshold {s.threshold} pu is outside the IEEE 1547-2018 Category "
                    f"{cat} range {tlo}-{thi} pu"
                )
            if s.clearing_s is not None and not clo <= s.clearing_s <= chi:
                raise ValueError(
                    f"{code}.clearing_s {s.clearing_s} s is outside the IEEE 1547-2018 Category "
                    f"{cat} range {clo}-{chi} s"
                )
        return v

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> SafetyParams:
        """Frequency basis, 50 Hz completeness, ranges, ordering and timing conflicts, all at load."""
        ctx = info.context if isinstance(info.context, dict) else {}
        site_f = ctx.get("nominal_frequency")
        if site_f is not None and int(site_f) != self.frequency_basis_hz:
            raise ValueError(
                f"the site is {site_f} Hz but these safety settings are for {self.frequency_basis_hz} Hz: "
                "IEEE 1547 defaults are 60 Hz; a 50 Hz site states frequency_basis_hz: 50 and its own "
                "frequency thresholds from its grid code (e.g. EN 50549-1)"
            )
        f = self.frequency
        if self.frequency_basis_hz == 60:
            for code in ("of2", "of1", "uf1", "uf2"):
                s: TripSetting = getattr(f, code)
                (tlo, thi), (clo, chi) = T.FREQUENCY_RANGES[code]
                if s.threshold is not None and not tlo <= s.threshold <= thi:
                    raise ValueError(
                        f"frequency.{code}.threshold {s.threshold} Hz is outside the IEEE 1547-2018 "
                        f"range {tlo}-{thi} Hz"
                    )
                if s.clearing_s is not None and not clo <= s.clearing_s <= chi:
                    raise ValueError(
                        f"frequency.{code}.clearing_s {s.clearing_s} s is outside the IEEE 1547-2018 "
                        f"range {clo}-{chi} s"
                    )
            es = self.enter_service
            lo, hi = T.ES_F_LOW_60[1], T.ES_F_HIGH_60[1]
            if es.f_low_hz is not None and not lo[0] <= es.f_low_hz <= lo[1]:
                raise ValueError(f"enter_service.f_low_hz {es.f_low_hz} is outside {lo[0]}-{lo[1]} Hz")
            if es.f_high_hz is not None and not hi[0] <= es.f_high_hz <= hi[1]:
                raise ValueError(f"enter_service.f_high_hz {es.f_high_hz} is outside {hi[0]}-{hi[1]} Hz")
        else:
            missing = [
                f"frequency.{c}.{k}"
                for c in ("of2", "of1", "uf1", "uf2")
                for k in ("threshold", "clearing_s")
                if getattr(getattr(f, c), k) is None
            ]
            missing += [
                f"frequency.{k}"
                for k in ("continuous_low_hz", "continuous_high_hz", "ride_through_low_hz", "ride_through_high_hz")
                if getattr(f, k) is None
            ]
            missing += [
                f"enter_service.{k}" for k in ("f_low_hz", "f_high_hz") if getattr(self.enter_service, k) is None
            ]
            if missing:
                raise ValueError(
                    "a 50 Hz site must state its own frequency settings (IEEE 1547 defaults are for "
                    "60 Hz); missing: " + ", ".join(missing)
                )
        r = resolve(self)
        for trip in r.trips.values():
            if trip.trip_after_us > trip.cease_after_us and not trip.permissive:
                raise ValueError(
                    f"{trip.code}: clearing time {trip.clearing_s:g} s minus response_allowance_s "
                    f"{self.response_allowance_s:g} s falls inside the {trip.ride_through_s:g} s of mandatory "
                    "ride-through owed; lengthen the clearing time or shorten the allowance"
                )
        t, fn = r.trips, self.frequency_basis_hz
        if not (t["uv2"].threshold <= t["uv1"].threshold and t["ov1"].threshold <= t["ov2"].threshold):
            raise ValueError("voltage settings out of order: need uv2 <= uv1 and ov1 <= ov2")
        if not (
            t["uf2"].threshold <= t["uf1"].threshold < fn < t["of1"].threshold <= t["of2"].threshold
            and r.f_continuous[0] < fn < r.f_continuous[1]
            and r.f_ride_through[0] <= r.f_continuous[0]
            and r.f_continuous[1] <= r.f_ride_through[1]
        ):
            raise ValueError(
                "frequency settings out of order: need uf2 <= uf1 < nominal < of1 <= of2 and "
                "ride_through_low <= continuous_low < nominal < continuous_high <= ride_through_high"
            )
        f_lo, f_hi = (x * fn for x in F_ENVELOPE_PU)
        freqs = {
            **{f"frequency.{c}.threshold": t[c].threshold for c in ("of2", "of1", "uf1", "uf2")},
            "frequency continuous range": r.f_continuous[0],
            "frequency continuous range ": r.f_continuous[1],
            "frequency ride-through range": r.f_ride_through[0],
            "frequency ride-through range ": r.f_ride_through[1],
            "enter_service frequency window": r.es_f[0],
            "enter_service frequency window ": r.es_f[1],
        }
        for key, x in freqs.items():
            if not f_lo - 1e-9 <= x <= f_hi + 1e-9:
                raise ValueError(
                    f"{key.strip()}: {x:g} Hz is outside {f_lo:.2f}-{f_hi:.2f} Hz (the IEEE 1547-2018 frequency "
                    f"ranges per unit of {fn} Hz)"
                )
        if not self.divergence.abs_w < max(self.rated_charge_w, self.rated_discharge_w):
            raise ValueError(
                f"divergence.abs_w {self.divergence.abs_w:g} W is not below the rating: no divergence could trip"
            )
        if not r.es_f[0] < self.frequency_basis_hz < r.es_f[1]:
            raise ValueError("enter_service frequency window must contain the nominal frequency")
        if (
            self.islanding.rocof_hz_per_s is not None
            and self.islanding.rocof_hz_per_s < T.ROCOF_RIDE_THROUGH[self.category]
        ):
            raise ValueError(
                f"islanding.rocof_hz_per_s {self.islanding.rocof_hz_per_s} is inside the Category "
                f"{self.category} ROCOF ride-through ({T.ROCOF_RIDE_THROUGH[self.category]} Hz/s)"
            )
        return self


@dataclass(frozen=True, slots=True)
class Trip:
    """A resolved trip: the cycle-clock delay from the first sample beyond the threshold to the command."""

    code: str
    quantity: Literal["v", "f"]
    over: bool
    threshold: float
    clearing_s: float
    ride_through_s: float  # owed at the threshold (never trip before)
    trip_after_us: int  # trip commanded this long after the first sample beyond the threshold
    cease_after_us: int  # output zero from here (clearing time minus the response allowance)
    permissive: bool  # the band beyond the threshold allows ceasing to energize before the trip

    def beyond(self, x: float) -> bool:
        return x >= self.threshold if self.over else x <= self.threshold


@dataclass(frozen=True, slots=True)
class Resolved:
    trips: dict[str, Trip]
    f_continuous: tuple[float, float]
    f_ride_through: tuple[float, float]
    es_v: tuple[float, float]
    es_f: tuple[float, float]
    rocof_hz_per_s: float


def _timing(clearing_s: float, owed_s: float, allowance_s: float) -> tuple[int, int]:
    """(cease_after_us, trip_after_us): output stops no later than clearing minus the allowance; the trip
    is commanded then too, but never inside the ride-through owed.

    Where a site set the clearing time below the ride-through table's duration (the standard lets trip
    settings take precedence), the trip setting wins and nothing is owed beyond it. Where the two meet
    (Category II UV2: 0.16 s clearing, 0.16 s permissive ride-through at 0.30-0.45 pu), output ceases at
    clearing minus the allowance - permissive operation allows that - and the trip latches at the end of
    the ride-through.
    """
    owed = owed_s if owed_s <= clearing_s else 0.0
    cease = max(clearing_s - allowance_s, 0.0)
    return round(cease * 1_000_000), round(max(cease, owed) * 1_000_000)


def resolve(p: SafetyParams) -> Resolved:
    """Fill category defaults and compute when each trip is commanded."""
    cat = p.category
    eps = 1e-9
    trips: dict[str, Trip] = {}
    for code, (dthr, dclr) in T.VOLTAGE_DEFAULTS[cat].items():
        s: TripSetting = getattr(p.voltage, code)
        thr = dthr if s.threshold is None else s.threshold
        clr = dclr if s.clearing_s is None else s.clearing_s
        over = code in T.OVER
        beyond = thr + eps if over else thr - eps
        owed = T.voltage_ride_through_s(cat, beyond)
        cease, after = _timing(clr, owed, p.response_allowance_s)
        trips[code] = Trip(
            code,
            "v",
            over,
            thr,
            clr,
            owed,
            after,
            cease,
            T.voltage_ride_through_permissive(cat, beyond) or T.cessation(cat, beyond),
        )
    f = p.frequency
    fc = (f.continuous_low_hz or T.F_CONTINUOUS_60[0], f.continuous_high_hz or T.F_CONTINUOUS_60[1])
    frt = (f.ride_through_low_hz or T.F_RIDE_THROUGH_60[0], f.ride_through_high_hz or T.F_RIDE_THROUGH_60[1])
    for code, (dthr, dclr) in T.FREQUENCY_DEFAULTS.items():
        s = getattr(f, code)
        thr = dthr if s.threshold is None else s.threshold
        clr = dclr if s.clearing_s is None else s.clearing_s
        over = code in T.OVER
        owed = T.frequency_ride_through_s(thr + eps if over else thr - eps, fc, frt)
        cease, after = _timing(clr, owed, p.response_allowance_s)
        trips[code] = Trip(code, "f", over, thr, clr, owed, after, cease, False)  # frequency: mandatory
    es = p.enter_service
    es_f = (
        es.f_low_hz if es.f_low_hz is not None else T.ES_F_LOW_60[0],
        es.f_high_hz if es.f_high_hz is not None else T.ES_F_HIGH_60[0],
    )
    rocof = p.islanding.rocof_hz_per_s or T.ROCOF_RIDE_THROUGH[cat]
    return Resolved(trips, fc, frt, (es.v_low_pu, es.v_high_pu), es_f, rocof)


def plain(model: Params) -> Any:
    """The settings of ``model`` as plain attributes, sub-models and lists of them too: for the interlock's scan,
    which reads a setting some sixty times a cycle, and a field of a pydantic model takes about 40 ns more to
    read than an attribute of a plain object (Python 3.11). The values are the model's own objects: a copy,
    never another value."""

    def conv(v: Any) -> Any:
        if isinstance(v, BaseModel):
            return SimpleNamespace(**{k: conv(x) for k, x in v.__dict__.items()})
        if isinstance(v, list | tuple | set | frozenset):
            return type(v)(conv(x) for x in v)
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v

    return conv(model)
