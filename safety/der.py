"""The CSMS's DER controls (OCPP 2.1 SetDERControl) as an overlay on the site's safety settings.

Why an overlay and not new settings: the site file holds the base (one owner per layer, docs/design.md);
what the back office asks for sits on top of it, persisted beside the latched trips, and a ClearDERControl
removes it, leaving the base exactly as the file says. Pure: OCPP control objects in (camelCase, as on the
wire), validated settings or a refusal with its reason out; no clock, no tags.

What may be accepted (docs/safety.md "DER controls"): only what is inside the IEEE 1547-2018 ranges for
the site's category **and** loosens nothing the inverter enforces. The bundled maps carry no writable
SunSpec 707-710 trip curves, so a trip curve is accepted only where it is at least as strict as the base
the inverter was verified against (a threshold no wider, a clearing time no longer): the supervisor then
trips earlier than the inverter would. Enter service is this layer's alone (the inverter is told nothing
of it), so any value in the standard's ranges is accepted. Frequency droop belongs to the frequency-watt
program: stored, range-checked and published, never a trip setting.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from safety.settings import Category, SafetyParams, resolve

# OCPP 2.1 DERControlEnumType values this layer implements (SetDERControlRequest.json); every other
# type is refused as not supported, so the CSMS learns it instead of believing it applied.
TRIP_CURVES: dict[str, tuple[str, str, str]] = {
    # control type -> (settings group, stage 2 (the more extreme), stage 1)
    "HVMustTrip": ("voltage", "ov2", "ov1"),
    "LVMustTrip": ("voltage", "uv2", "uv1"),
    "HFMustTrip": ("frequency", "of2", "of1"),
    "LFMustTrip": ("frequency", "uf2", "uf1"),
}
SUPPORTED = (*TRIP_CURVES, "EnterService", "LimitMaxDischarge", "FreqDroop")
# Which control type a trip or a cessation belongs to (NotifyDERAlarm's controlType).
TRIP_CONTROL = {
    "ov1": "HVMustTrip",
    "ov2": "HVMustTrip",
    "uv1": "LVMustTrip",
    "uv2": "LVMustTrip",
    "of1": "HFMustTrip",
    "of2": "HFMustTrip",
    "uf1": "LFMustTrip",
    "uf2": "LFMustTrip",
}

# IEEE 1547-2018 Table 24 (frequency droop), per category: (dbOF/dbUF Hz, kOF/kUF per unit, open-loop
# response time s), each (low, high) of the ranges of allowable settings (docs/reference.md).
DROOP_RANGES: dict[str, tuple[tuple[float, float], tuple[float, float], tuple[float, float]]] = {
    "I": ((0.017, 1.0), (0.03, 0.05), (1.0, 10.0)),
    "II": ((0.017, 1.0), (0.03, 0.05), (1.0, 10.0)),
    "III": ((0.017, 1.0), (0.02, 0.05), (0.2, 10.0)),
}
EPS = 1e-9


class DERRefused(ValueError):
    """A DER control this layer will not apply; ``str()`` is the reason told back to the CSMS."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One control as the CSMS sent it; ``since_us`` is when a scheduled one took effect (cycle clock)."""

    control_id: str
    control_type: str
    is_default: bool
    ocpp: Mapping[str, Any]
    since_us: int = 0

    @property
    def priority(self) -> int:
        return int(self.ocpp.get("priority", 0))

    def in_force(self, now_us: int) -> bool:
        """Defaults last until cleared; a scheduled control lasts ``duration`` s from when it took effect
        (the OCPP task holds UTC and sends it at its ``startTime``)."""
        if self.is_default:
            return True
        return now_us - self.since_us < round(float(self.ocpp["duration"]) * 1_000_000)

    def as_json(self) -> dict[str, Any]:
        return {"control_type": self.control_type, "is_default": self.is_default, "ocpp": dict(self.ocpp)}


def _num(obj: Mapping[str, Any], key: str, what: str) -> float:
    v = obj.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or v in (float("inf"), float("-inf")):
        raise DERRefused(f"{what}: {key} must be a finite number")
    return float(v)


def _curve(control_type: str, ocpp: Mapping[str, Any], basis_hz: int) -> dict[str, Any]:
    """A must-trip curve as two trip stages: x = clearing time s, y = voltage in % of nominal
    (yUnit PctEffectiveV) or frequency in Hz (yUnit Not_Applicable), as IEEE 1547-2018 has two stages a
    direction (OV1/OV2, UV1/UV2, OF1/OF2, UF1/UF2)."""
    group, s2, s1 = TRIP_CURVES[control_type]
    unit = "PctEffectiveV" if group == "voltage" else "Not_Applicable"
    if ocpp.get("yUnit") != unit:
        raise DERRefused(
            f"{control_type}: yUnit must be {unit} ({'% of nominal voltage' if group == 'voltage' else 'Hz'})"
        )
    points = ocpp.get("curveData")
    if not isinstance(points, list) or len(points) != 2 or not all(isinstance(p, Mapping) for p in points):
        raise DERRefused(
            f"{control_type}: curveData must have 2 points, one per IEEE 1547-2018 trip stage ({s1}, {s2})"
        )
    pts = [(_num(p, "x", control_type), _num(p, "y", control_type)) for p in points]
    over = control_type[0] == "H"
    outer, inner = sorted(pts, key=lambda p: p[1], reverse=over)
    if outer[1] == inner[1]:
        raise DERRefused(f"{control_type}: the two points need different thresholds")
    scale = 100.0 if group == "voltage" else 1.0
    if group == "frequency" and basis_hz != 60:
        raise DERRefused(f"{control_type}: IEEE 1547-2018 frequency ranges are for 60 Hz; this site is {basis_hz} Hz")
    return {
        group: {
            s2: {"threshold": outer[1] / scale, "clearing_s": outer[0]},
            s1: {"threshold": inner[1] / scale, "clearing_s": inner[0]},
        }
    }


def _enter_service(ocpp: Mapping[str, Any], basis_hz: int) -> dict[str, Any]:
    """EnterServiceType: voltages in % of nominal, frequencies in Hz, delay and rampRate in s."""
    what = "EnterService"
    if basis_hz != 60:
        raise DERRefused(f"{what}: IEEE 1547-2018 enter-service ranges are for 60 Hz; this site is {basis_hz} Hz")
    if ocpp.get("randomDelay") not in (None, 0, 0.0):
        raise DERRefused(f"{what}: randomDelay is not supported (enter service ramps instead)")
    es: dict[str, Any] = {
        "v_low_pu": _num(ocpp, "lowVoltage", what) / 100.0,
        "v_high_pu": _num(ocpp, "highVoltage", what) / 100.0,
        "f_low_hz": _num(ocpp, "lowFreq", what),
        "f_high_hz": _num(ocpp, "highFreq", what),
    }
    if ocpp.get("delay") is not None:
        es["delay_s"] = _num(ocpp, "delay", what)
    if ocpp.get("rampRate") is not None:
        es["ramp_s"] = _num(ocpp, "rampRate", what)
    return {"enter_service": es}


def limit_max_discharge(ocpp: Mapping[str, Any]) -> float:
    """LimitMaxDischargeType: the fraction of the rated discharge power allowed (0-1)."""
    what = "LimitMaxDischarge"
    if ocpp.get("powerMonitoringMustTrip") is not None:
        raise DERRefused(f"{what}: powerMonitoringMustTrip is not supported")
    if ocpp.get("pctMaxDischargePower") is None:
        raise DERRefused(f"{what}: pctMaxDischargePower is required")
    pct = _num(ocpp, "pctMaxDischargePower", what)
    if not 0.0 <= pct <= 100.0:
        raise DERRefused(f"{what}: pctMaxDischargePower {pct:g} is outside 0-100 %")
    return pct / 100.0


def freq_droop(ocpp: Mapping[str, Any], category: Category, basis_hz: int) -> dict[str, float]:
    """FreqDroopType checked against IEEE 1547-2018 Table 24 for the category: the dead bands
    (overFreq - nominal, nominal - underFreq), the droops and the open-loop response time."""
    what = "FreqDroop"
    db, k, t = DROOP_RANGES[category]
    vals = {key: _num(ocpp, key, what) for key in ("overFreq", "underFreq", "overDroop", "underDroop", "responseTime")}
    checks = [
        ("overFreq - nominal", vals["overFreq"] - basis_hz, db, "Hz"),
        ("nominal - underFreq", basis_hz - vals["underFreq"], db, "Hz"),
        ("overDroop", vals["overDroop"], k, "pu"),
        ("underDroop", vals["underDroop"], k, "pu"),
        ("responseTime", vals["responseTime"], t, "s"),
    ]
    for name, x, (lo, hi), unit in checks:
        if not lo - EPS <= x <= hi + EPS:
            raise DERRefused(
                f"{what}: {name} {x:.3f} {unit} is outside the IEEE 1547-2018 Category {category} range "
                f"{lo:g}-{hi:g} {unit}"
            )
    return vals


def check(control_type: str, ocpp: Mapping[str, Any], is_default: bool, category: Category, basis_hz: int) -> None:
    """DERRefused unless the control on its own is one this layer implements and well formed; ranges
    and the comparison with the base follow in ``settings``."""
    if control_type not in SUPPORTED:
        raise DERRefused(f"{control_type} is not supported (supported: {', '.join(SUPPORTED)})")
    if not isinstance(ocpp, Mapping):
        raise DERRefused(f"{control_type}: the control object is missing")
    prio = ocpp.get("priority")
    if isinstance(prio, bool) or not isinstance(prio, int) or prio < 0:
        raise DERRefused(f"{control_type}: priority must be an integer >= 0")
    if not is_default:
        d = ocpp.get("duration")
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not 0 < d <= 1e9:
            raise DERRefused(f"{control_type}: a scheduled control (isDefault false) needs a duration > 0 s")
    if control_type in TRIP_CURVES:
        _curve(control_type, ocpp, basis_hz)
    elif control_type == "EnterService":
        _enter_service(ocpp, basis_hz)
    elif control_type == "LimitMaxDischarge":
        limit_max_discharge(ocpp)
    else:
        freq_droop(ocpp, category, basis_hz)


def in_force(entries: Mapping[str, Entry], now_us: int) -> dict[str, Entry]:
    """The control in force per type: a scheduled one over the default (OCPP 2.1: a default applies while
    no scheduled control of its type does), then the lowest priority number, then the latest."""
    best: dict[str, Entry] = {}
    for e in entries.values():
        if not e.in_force(now_us):
            continue
        cur = best.get(e.control_type)
        key = (not e.is_default, -e.priority, e.since_us)
        if cur is None or key > (not cur.is_default, -cur.priority, cur.since_us):
            best[e.control_type] = e
    return best


def _merge(base: dict[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in patch.items():
        out[k] = _merge(out.get(k) or {}, v) if isinstance(v, Mapping) else v
    return out


def settings(base: SafetyParams, controls: Mapping[str, Entry], context: Mapping[str, Any]) -> SafetyParams:
    """The base with the trip curves and enter service in force laid over it, validated as a site file
    is (IEEE 1547-2018 ranges for the category, order, ride-through conflicts) and no looser than the
    base on any trip; DERRefused naming what is wrong otherwise."""
    data = base.model_dump(exclude_unset=True)
    for e in controls.values():
        if e.control_type in TRIP_CURVES:
            data = _merge(data, _curve(e.control_type, e.ocpp, base.frequency_basis_hz))
        elif e.control_type == "EnterService":
            data = _merge(data, _enter_service(e.ocpp, base.frequency_basis_hz))
    try:
        eff = SafetyParams.model_validate(data, context=dict(context))
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(x) for x in err["loc"])
        raise DERRefused(f"{where + ': ' if where else ''}{err['msg'].removeprefix('Value error, ')}") from None
    rb, re_ = resolve(base).trips, resolve(eff).trips
    for code, t in re_.items():
        b = rb[code]
        wider = t.threshold > b.threshold + EPS if t.over else t.threshold < b.threshold - EPS
        if wider or t.clearing_s > b.clearing_s + EPS:
            raise DERRefused(
                f"{TRIP_CONTROL[code]}: {code} ({t.threshold:g}, {t.clearing_s:g} s) is looser than the site's "
                f"({b.threshold:g}, {b.clearing_s:g} s), which the inverter was verified against; with no "
                "writable SunSpec 707-710 curve in its map only a stricter setting is accepted"
            )
    return eff


def overlay_json(entries: Mapping[str, Entry]) -> str:
    """``safety.der_overlay``: control_id -> {control_type, is_default, ocpp}, for GetDERControl."""
    return json.dumps({cid: entries[cid].as_json() for cid in sorted(entries)}, separators=(",", ":"))
