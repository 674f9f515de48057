"""The site as a SunSpec DER: one definition for the register image, the write checks and the docs.

Models 1 (common), 701 (AC measurement), 702 (capacity), 704 (AC controls), 713 (storage) and the vendor
model 64901 (vendor_model.py), encoded by pysunspec2 from the model definitions (the official SunSpec
JSON), so an EMS that speaks SunSpec finds the device by discovery at 40000 (``SunS``) without a vendor
map. Values come from the image the scan
publishes to the task process; a tag that is not good, or a value the register cannot hold, reads as the
point's not-implemented sentinel (SunSpec Information Model Specification: int16 0x8000, uint16 0xFFFF,
int32 0x80000000, uint32 0xFFFFFFFF, acc 0). SunSpec counts power positive for generation (701 W, 704
WSet), the opposite of this project's charge-positive convention: both are negated here and only here.

Writes to 704 are checked point by point (whole points only, enum values, range, the site's rating) and
become one :class:`~runtime.tasks.localapi.requests.ModeRequest`; a 1 written to the vendor model's
``TripRst`` (only where the interface opted in) becomes a :class:`TripReset`. Neither touches an output:
the server sends them to the scan, and the registers then show what the scan decided (``CmdSt``,
``CmdRsn``; a refused write's controls go back to the last accepted ones).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from runtime.tags import Image
from runtime.tasks.localapi.requests import ModeRequest
from runtime.tasks.localapi.vendor_model import CMD_STATES, TRIPS, VENDOR_ID, mode_value, trip_value
from runtime.tasks.localapi.vendor_model import DEFINITION as VENDOR_DEFINITION

BASE = 40000  # protocol address of "SunS" (SunSpec Modbus spec: 40000, 0-based)
MARKER = (0x5375, 0x6E53)
END = (0xFFFF, 0)
MODEL_IDS = (1, 701, 702, 704, 713, VENDOR_ID)

# Fixed scale factors (raw = value / 10^SF): chosen so the rating of a single site (up to ~320 kW on an
# int16 W with SF 1) fits; a value that does not fit reads as not implemented, never wraps.
SCALE: dict[tuple[int, str], int] = {
    (701, "W_SF"): 0,
    (701, "V_SF"): -1,
    (701, "Hz_SF"): -3,
    (701, "TotWh_SF"): 0,
    (701, "Tmp_SF"): -1,
    (702, "W_SF"): 0,
    (702, "V_SF"): -1,
    (704, "WSet_SF"): 0,
    (704, "WMaxLimPct_SF"): -1,
    (713, "WH_SF"): 1,
    (713, "Pct_SF"): -1,
    (VENDOR_ID, "W_SF"): 0,
    (VENDOR_ID, "Prc_SF"): -2,  # 0.01 per MWh; int32 holds +-21 million, far past any market's price cap
}

# 701 Alrm bits (SunSpec model 701 Alrm symbols) for the safety layer's trip codes.
ALARM_BITS: dict[str, int] = {
    "ov1": 10,
    "ov2": 10,
    "uv1": 11,
    "uv2": 11,
    "of1": 8,
    "of2": 8,
    "uf1": 9,
    "uf2": 9,
    "islanding": 4,
    "rocof": 4,
    "over_temperature": 7,
}
MANUFACTURER_ALARM = 16  # 701 Alrm MANUFACTURER_ALRM: every other trip code


def _alarm(trip: Any) -> int:
    if not trip:
        return 0
    return 1 << ALARM_BITS.get(str(trip), MANUFACTURER_ALARM)


@dataclass(frozen=True)
class Measure:
    """A read-only point filled from one tag of the published image."""

    model: int
    point: str
    tag: str
    convert: Callable[..., Any]  # to SunSpec units and sign; None = not implemented
    note: str
    site: bool = False  # a site-wide tag (prices): read without the unit's EVSE prefix
    timed: bool = False  # convert(value, now): the value depends on the site clock (UTC, None unknown)


def _same(v: Any) -> float:
    return float(v)


def _neg(v: Any) -> float:
    return -float(v)


def _pct(v: Any) -> float:
    return 100.0 * float(v)


def _flag(v: Any) -> int:
    return 1 if v else 0


def _text(v: Any) -> str:
    return str(v)


def price_now(curve: Any, now: dt.datetime | None) -> float | None:
    """The price of the interval of a day-ahead curve (runtime/tasks/prices.py's format) that holds ``now``."""
    if now is None or not isinstance(curve, list):
        return None
    for iv in curve:
        if dt.datetime.fromisoformat(iv["start"]) <= now < dt.datetime.fromisoformat(iv["end"]):
            return float(iv["price"])
    return None  # now is outside the known curve


_TRIP_NOTE = ", ".join(f"{i} {c or 'none'}" for i, c in enumerate(TRIPS)) + ", 0xFFFE other"

MEASURES: tuple[Measure, ...] = (
    Measure(701, "St", "inverter.enable", _flag, "1 ON while the committed permit is set"),
    Measure(701, "ConnSt", "inverter.connected", _flag, "1 CONNECTED"),
    Measure(701, "Alrm", "safety.trip", _alarm, "bit of the trip code (volt 10/11, freq 8/9, grid 4, temp 7, else 16)"),
    Measure(701, "W", "inverter.power", _neg, "negated: SunSpec counts discharge (export) positive"),
    Measure(701, "LLV", "grid.voltage", _same, "the voltage basis of the site (line-to-line on split phase)"),
    Measure(701, "Hz", "grid.frequency", _same, ""),
    Measure(701, "TotWhInj", "inverter.energy_export", _same, "accumulator: 0 reads as not implemented"),
    Measure(701, "TotWhAbs", "inverter.energy_import", _same, "accumulator: 0 reads as not implemented"),
    Measure(701, "TmpSw", "inverter.temperature", _same, ""),
    Measure(713, "WHRtg", "ev.capacity_wh", _same, ""),
    Measure(713, "WHAvail", "ev.energy_available", _same, ""),
    Measure(713, "SoC", "ev.soc", _pct, "tag is a fraction 0..1, SunSpec a percentage"),
    Measure(713, "SoH", "ev.soh", _pct, "tag is a fraction 0..1, SunSpec a percentage"),
    Measure(VENDOR_ID, "Mode", "mode.state", mode_value, "idle 0, charge 1, discharge 2, safe_state 3, remote 4"),
    Measure(VENDOR_ID, "Trip", "safety.trip", trip_value, _TRIP_NOTE),
    Measure(VENDOR_ID, "TripCode", "safety.trip", _text, ""),
    Measure(VENDOR_ID, "TripRsn", "safety.reason", _text, "truncated to 64 bytes"),
    Measure(VENDOR_ID, "Cess", "safety.cessation", _flag, ""),
    Measure(VENDOR_ID, "WLimCha", "safety.limit_charge", _same, "magnitude"),
    Measure(VENDOR_ID, "WLimDis", "safety.limit_discharge", _same, "magnitude"),
    Measure(VENDOR_ID, "WPlan", "plan.power", _neg, "negated: + = discharge"),
    Measure(VENDOR_ID, "WSetOut", "inverter.setpoint", _neg, "the committed set point, negated: + = discharge"),
    Measure(VENDOR_ID, "PrcDA", "prices.day_ahead", price_now, "the interval that holds now", site=True, timed=True),
    Measure(VENDOR_ID, "PrcRT", "prices.real_time", _same, "currency/MWh", site=True),
    Measure(VENDOR_ID, "PrcPlan", "plan.price", _same, "currency/MWh", site=True),
)


@dataclass(frozen=True)
class Control:
    """A writable 704 point: the engineering range a write must be in (SF applied; SunSpec sign)."""

    point: str
    lo: float
    hi: float
    note: str


def controls(max_charge_w: float, max_discharge_w: float) -> dict[str, Control]:
    """The 704 points a client may write, with ranges from the site's rating (SunSpec sign: + = discharge)."""
    return {
        "WSetEna": Control("WSetEna", 0, 1, "0 DISABLED (hand back to local), 1 ENABLED (remote set point)"),
        "WSetMod": Control("WSetMod", 1, 1, "only 1 WATTS is implemented"),
        "WSet": Control("WSet", -max_charge_w, max_discharge_w, "W, + = discharge (negated into the request)"),
        "WSetRvrtTms": Control("WSetRvrtTms", 1, 86_400, "s without a write -> back to local; 0 is refused"),
        "WMaxLimPctEna": Control("WMaxLimPctEna", 0, 1, "0/1"),
        "WMaxLimPct": Control("WMaxLimPct", 0, 100, "% of the rating, a cap on the power magnitude"),
    }


# (min, max) of a raw register value that is not a sentinel, per SunSpec type.
_RAW_RANGE: dict[str, tuple[int, int]] = {
    "int16": (-0x7FFF, 0x7FFF),
    "uint16": (0, 0xFFFE),
    "enum16": (0, 0xFFFE),
    "int32": (-0x7FFFFFFF, 0x7FFFFFFF),
    "uint32": (0, 0xFFFFFFFE),
    "bitfield32": (0, 0x7FFFFFFF),
    "uint64": (1, 0x7FFFFFFFFFFFFFFF),  # accumulators: 0 is the sentinel
    "acc64": (1, 0x7FFFFFFFFFFFFFFF),
}


def _raw(ptype: str, value: float, sf: int) -> int | None:
    """The raw register value of an engineering value, or None when it does not fit (reads as NI)."""
    if not math.isfinite(value):
        return None
    raw = round(value / 10**sf)
    lo, hi = _RAW_RANGE[ptype]
    return raw if lo <= raw <= hi else None


def _decode(ptype: str, regs: list[int]) -> int:
    v = 0
    for r in regs:
        v = (v << 16) | (r & 0xFFFF)
    if ptype.startswith("int"):
        bits = 16 * len(regs)
        if v >= 1 << (bits - 1):
            v -= 1 << bits
    return v


class WriteRefused(Exception):
    """A write the server answers with a Modbus exception (``code``) and logs (``reason``)."""

    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class TripReset:
    """A client asked for a trip reset (vendor model ``TripRst`` = 1)."""

    by: str


ILLEGAL_FUNCTION = 0x01
ILLEGAL_ADDRESS = 0x02
ILLEGAL_VALUE = 0x03


class SunSpecImage:
    """The register image of one unit (the site aggregate, or one EVSE by its tag prefix)."""

    def __init__(
        self,
        *,
        prefix: str,
        unit: int,
        serial: str,
        version: str,
        nominal_voltage: float,
        max_charge_w: float,
        max_discharge_w: float,
        reversion_s: float,
        trip_reset: bool = False,
    ):
        import sunspec2.device as ssd  # task process only

        self.prefix = prefix
        self.models = {
            mid: ssd.Model(model_def=VENDOR_DEFINITION) if mid == VENDOR_ID else ssd.Model(model_id=mid)
            for mid in MODEL_IDS
        }
        self.address: dict[int, int] = {}  # model id -> address of its ID register
        addr = BASE + len(MARKER)
        for mid in MODEL_IDS:
            self.address[mid] = addr
            addr += len(self.models[mid].get_mb()) // 2
        self.end = addr + len(END)
        self.controls = controls(max_charge_w, max_discharge_w)
        self._writable: dict[int, str] = {}  # register address -> 704 point it belongs to
        m704 = self.models[704]
        for name in self.controls:
            p = m704.points[name]
            for i in range(p.len):
                self._writable[self.address[704] + p.offset + i] = name
        self.trip_reset_address = self.address[VENDOR_ID] + self.models[VENDOR_ID].points["TripRst"].offset
        self.trip_reset = trip_reset
        for (mid, name), sf in SCALE.items():
            self.models[mid].points[name].value = sf
        common = self.models[1].points
        common["Mn"].value = "v2g-plc"
        common["Md"].value = "V2G site" if not prefix else f"V2G site {prefix.rstrip('.')}"
        common["Vr"].value = version[:16]
        common["SN"].value = serial[:32]
        common["DA"].value = unit
        m701 = self.models[701].points
        m701["ACType"].value = 1  # SPLIT_PHASE: the voltage basis is line-to-line (docs/architecture.md)
        self._set(702, "WMaxRtg", max(max_charge_w, max_discharge_w))
        self._set(702, "WChaRteMaxRtg", max_charge_w)
        self._set(702, "WDisChaRteMaxRtg", max_discharge_w)
        self._set(702, "VNomRtg", nominal_voltage)
        # What the controls read before any client wrote them: not enabled, watts mode, 0 W, the site's
        # reversion time, no cap.
        for name, value in (
            ("WSetEna", 0),
            ("WSetMod", 1),
            ("WSet", 0.0),
            ("WSetRvrtTms", reversion_s),
            ("WMaxLimPctEna", 0),
            ("WMaxLimPct", 100.0),
        ):
            self._set(704, name, value)
        self.models[VENDOR_ID].points["TripRst"].value = 0
        self.answer("none", "")
        self.accepted = self.control_values()  # what the scan last accepted (or the defaults)
        self._regs: list[int] | None = None

    def _set(self, mid: int, name: str, value: Any) -> None:
        p = self.models[mid].points[name]
        if p.pdef["type"] == "string":
            p.value = None if value is None else str(value).encode()[: 2 * p.len].decode(errors="ignore")
            return
        sf_name = p.pdef.get("sf")
        sf = SCALE.get((mid, sf_name), 0) if sf_name else 0
        p.value = None if value is None else _raw(p.pdef["type"], float(value), sf)

    def _get(self, mid: int, name: str) -> float | None:
        p = self.models[mid].points[name]
        if p.value is None:
            return None
        sf_name = p.pdef.get("sf")
        return float(p.value) * 10 ** (SCALE.get((mid, sf_name), 0) if sf_name else 0)

    # -- reads ---------------------------------------------------------------------------------------
    def update(self, image: Image, now: dt.datetime | None = None) -> None:
        """Fill every measured point from the image: good tags give values, others the sentinel. ``now``
        (aware, the site clock) places the day-ahead price; without it that point reads not implemented."""
        for m in MEASURES:
            tv = image.tag(m.tag if m.site else self.prefix + m.tag)
            value = None
            if tv.good and tv.value is not None:
                try:
                    value = m.convert(tv.value, now) if m.timed else m.convert(tv.value)
                except (TypeError, ValueError, KeyError):
                    value = None
            self._set(m.model, m.point, value)
        self._regs = None

    def registers(self) -> list[int]:
        """The whole image from BASE to the end marker (encoded by pysunspec2)."""
        if self._regs is None:
            regs = list(MARKER)
            for mid in MODEL_IDS:
                mb = self.models[mid].get_mb()
                regs.extend(int.from_bytes(mb[i : i + 2], "big") for i in range(0, len(mb), 2))
            regs.extend(END)
            self._regs = regs
        return self._regs

    # -- writes --------------------------------------------------------------------------------------
    def control_values(self) -> dict[str, int | None]:
        """The raw values of the 704 controls (to restore after a refusal)."""
        return {name: self.models[704].points[name].value for name in self.controls}

    def restore(self, values: Mapping[str, int | None]) -> None:
        for name, raw in values.items():
            self.models[704].points[name].value = raw
        self._regs = None

    def answer(self, state: str, reason: str) -> None:
        """Show the scan's answer to the last write (vendor CmdSt, CmdRsn)."""
        self.models[VENDOR_ID].points["CmdSt"].value = CMD_STATES.index(state)
        self._set(VENDOR_ID, "CmdRsn", reason)
        self._regs = None

    def write(self, address: int, values: list[int], source: str) -> ModeRequest | TripReset:
        """Check a client write; on success hold the new control values and return the request they make.
        Raises :class:`WriteRefused` with the Modbus exception code otherwise (nothing is changed)."""
        end = address + len(values)
        if address == self.trip_reset_address and self.trip_reset:
            if len(values) != 1 or values[0] != 1:
                raise WriteRefused(ILLEGAL_VALUE, "TripRst: write the single value 1")
            return TripReset(source)
        names = [self._writable.get(a) for a in range(address, end)]
        if None in names:
            raise WriteRefused(ILLEGAL_ADDRESS, f"write to {address}..{end - 1}: not a writable 704 control")
        m704 = self.models[704].points
        new: dict[str, int] = {}
        for name in dict.fromkeys(names):
            assert name is not None
            p = m704[name]
            first = self.address[704] + p.offset
            if first < address or first + p.len > end:
                raise WriteRefused(ILLEGAL_ADDRESS, f"write covers part of 704 {name}: write whole points")
            raw = _decode(p.pdef["type"], values[first - address : first - address + p.len])
            c = self.controls[name]
            sf_name = p.pdef.get("sf")
            value = raw * 10 ** (SCALE.get((704, sf_name), 0) if sf_name else 0)
            if not c.lo <= value <= c.hi:
                raise WriteRefused(ILLEGAL_VALUE, f"704 {name} = {value:g} outside {c.lo:g}..{c.hi:g} ({c.note})")
            new[name] = raw
        for name, raw in new.items():
            m704[name].value = raw
        self._regs = None
        return self.request(source)

    def request(self, source: str) -> ModeRequest:
        """The mode request the 704 controls stand for now (WSet negated into the charge-positive sign)."""
        wset = self._get(704, "WSet") or 0.0
        enabled = self._get(704, "WSetEna") == 1
        cap = self._get(704, "WMaxLimPct") if self._get(704, "WMaxLimPctEna") == 1 else None
        return ModeRequest(
            source=source,
            mode="remote" if enabled else "local",
            setpoint_w=0.0 - wset if enabled else None,  # 0.0 - 0.0 is 0.0, where -0.0 would show a sign
            expiry_s=self._get(704, "WSetRvrtTms"),
            limit_pct=cap,
        )


def register_map_markdown(
    max_charge_w: float = 11_000, max_discharge_w: float = 11_000, nominal_voltage: float = 240.0
) -> str:
    """The register map as a Markdown table, from the same definition the server encodes (docs)."""
    img = SunSpecImage(
        prefix="",
        unit=1,
        serial="site",
        version="0",
        nominal_voltage=nominal_voltage,
        max_charge_w=max_charge_w,
        max_discharge_w=max_discharge_w,
        reversion_s=60,
    )
    rows = [
        "| address | model | point | type | scale factor | access | source / range |",
        "|---|---|---|---|---|---|---|",
    ]
    rows.append(f"| {BASE} | - | SunS | 2 x uint16 | | R | marker 0x5375 0x6E53 |")
    measures: Mapping[tuple[int, str], Measure] = {(m.model, m.point): m for m in MEASURES}
    fixed = {
        (702, "WMaxRtg"): "site rating: max(charge, discharge)",
        (702, "WChaRteMaxRtg"): "site charge rating (`max_charge_w`)",
        (702, "WDisChaRteMaxRtg"): "site discharge rating (`max_discharge_w`)",
        (702, "VNomRtg"): "site nominal voltage",
        (1, "Mn"): '"v2g-plc"',
        (1, "Md"): '"V2G site"',
        (1, "Vr"): "package version",
        (1, "SN"): "site name",
        (1, "DA"): "Modbus unit id",
        (701, "ACType"): "1 SPLIT_PHASE",
    }
    for mid in MODEL_IDS:
        pts = img.models[mid].points
        for name, p in pts.items():
            key = (mid, name)
            access = "R"
            if name in ("ID", "L"):
                src = f"model id {mid}" if name == "ID" else f"length {pts['L'].value}"
            elif key in measures:
                m = measures[key]
                src = f"`{m.tag}`" + (f" ({m.note})" if m.note else "")
            elif key in SCALE:
                src = f"fixed {SCALE[key]}"
            elif key in fixed:
                src = fixed[key]
            elif mid == 704 and name in img.controls:
                c = img.controls[name]
                access = "RW"
                src = f"{c.lo:g}..{c.hi:g}: {c.note}"
            elif mid == VENDOR_ID and name == "CmdSt":
                src = "the scan's answer to the last write: " + ", ".join(f"{i} {n}" for i, n in enumerate(CMD_STATES))
            elif mid == VENDOR_ID and name == "CmdRsn":
                src = "the scan's reason for a refusal (truncated to 32 bytes)"
            elif mid == VENDOR_ID and name == "TripRst":
                access = "RW*"
                src = "write 1: trip reset (*only with `trip_reset: true`, else read-only); reads 0"
            else:
                continue  # not implemented: reads as the sentinel
            sf = p.pdef.get("sf") or ""
            rows.append(
                f"| {img.address[mid] + p.offset} | {mid} | {name} | {p.pdef['type']} | {sf} | {access} | {src} |"
            )
    rows.append(f"| {img.end - 2} | - | end | 2 x uint16 | | R | 0xFFFF 0 |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":  # python -m runtime.tasks.localapi.sunspec > the table in docs/local-api.md
    print(register_map_markdown(), end="")
