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
from runtime.tasks.localapi.vendor_model import (
    CMD_STATES,
    CONNECTION_ID,
    DEFINITIONS,
    TRIPS,
    VENDOR_ID,
    mode_value,
    trip_value,
)

BASE = 40000  # protocol address of "SunS" (SunSpec Modbus spec: 40000, 0-based)
MARKER = (0x5375, 0x6E53)
END = (0xFFFF, 0)
MODEL_IDS = (1, 701, 702, 704, 713, VENDOR_ID)  # one charger: a single site's unit 1, a depot's EVSE units
SITE_MODEL_IDS = (1, 701, 702, CONNECTION_ID)  # a depot's site unit: the meter, the aggregate, the connection

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
    (CONNECTION_ID, "W_SF"): 0,  # uint32/int32 W: 2 GW, past any connection
    (CONNECTION_ID, "WH_SF"): 0,
}
# A depot's site unit carries the whole connection on 701's int16 W and 702's uint16 ratings: 100 W steps
# hold +-3.2 MW (SunSpec scale factors are the device's to choose; a client reads them).
SITE_SCALE: dict[tuple[int, str], int] = {**SCALE, (701, "W_SF"): 2, (702, "W_SF"): 2}

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
    Measure(VENDOR_ID, "PrcDA", "prices.day_ahead", price_now, "the interval that holds now", timed=True),
    Measure(VENDOR_ID, "PrcRT", "prices.real_time", _same, "currency/MWh"),
    Measure(VENDOR_ID, "PrcPlan", "plan.price", _same, "currency/MWh"),
)
# A depot's site unit: the site meter at the point of common coupling (import-positive, so negated).
SITE_MEASURES: tuple[Measure, ...] = (
    Measure(701, "W", "meter.power", _neg, "the site meter, negated: + = export"),
    Measure(701, "LLV", "meter.voltage", _same, "the site meter"),
    Measure(701, "Hz", "meter.frequency", _same, "the site meter"),
    Measure(701, "TotWhInj", "meter.energy_export", _same, "accumulator: 0 reads as not implemented"),
    Measure(701, "TotWhAbs", "meter.energy_import", _same, "accumulator: 0 reads as not implemented"),
)
CONNECTION_MEASURES: tuple[Measure, ...] = (
    Measure(CONNECTION_ID, "Bldg", "connection.building_w", _same, "+ = import"),
    Measure(CONNECTION_ID, "FleetSt", "fleet.status", _text, ""),
    Measure(CONNECTION_ID, "FleetRsn", "fleet.reason", _text, "truncated to 32 bytes"),
    Measure(CONNECTION_ID, "ShortWh", "fleet.shortfall_kwh", lambda v: 1000.0 * float(v), "kWh as Wh"),
    Measure(CONNECTION_ID, "ConnRsn", "connection.reason", _text, "truncated to 32 bytes"),
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
DEVICE_BUSY = 0x06  # Modbus Application Protocol V1.1b3 7: SERVER DEVICE BUSY, the client retries later


@dataclass(frozen=True)
class ConnectionWrite:
    """A client wrote the connection's limits (64902 ``ImpLim``/``ExpLim``/``LimRvrtTms``): the values it
    wrote, None where it wrote nothing. The task applies it at once (connection.py); the scan is not asked."""

    by: str
    import_w: float | None = None
    export_w: float | None = None
    expiry_s: float | None = None


Rating = tuple[float, float]  # the connection's (import, export) rating: the range of the 64902 limits


def connection_controls(rating: Rating) -> dict[str, Control]:
    """The 64902 points a client may write (W magnitudes; the site file's rating bounds them)."""
    return {
        "ImpLim": Control("ImpLim", 0, rating[0], "W, 0..the import rating (connection.import_limit_w)"),
        "ExpLim": Control("ExpLim", 0, rating[1], "W, 0..the export rating (connection.export_limit_w)"),
        "LimRvrtTms": Control("LimRvrtTms", 1, 86_400, "s the limits hold without a write, then the ratings"),
    }


class SunSpecImage:
    """The register image of one unit: one charger (a single site's unit 1, or a depot's EVSE by its tag
    prefix) or a depot's site aggregate (``evses`` set, no 704/713/64901: the site has no one set point).

    A tag name resolves as the renaming view of runtime/evses.py does: the unit's own ``<prefix><tag>``
    when the image has it, the site's ``<tag>`` otherwise (prices, a depot's site meter). The connection
    model 64902 is there on a depot's site unit, and on a single site's unit 1 when the interface carries
    the connection limit (``connection`` set: the rating; its points are then writable)."""

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
        evses: tuple[int, ...] | None = None,
        evse_unit_offset: int | None = None,
        connection: Rating | None = None,
    ):
        import sunspec2.device as ssd  # task process only

        self.prefix = prefix
        self.aggregate = evses is not None  # a depot's site unit
        self.evses = evses or ()
        mids = SITE_MODEL_IDS if self.aggregate else MODEL_IDS + ((CONNECTION_ID,) if connection else ())
        self.model_ids = mids
        self.scale = SITE_SCALE if self.aggregate else SCALE
        self.measures = tuple(
            m for m in (*(SITE_MEASURES if self.aggregate else MEASURES), *CONNECTION_MEASURES) if m.model in mids
        )
        self.models = {
            mid: ssd.Model(model_def=DEFINITIONS[mid]) if mid in DEFINITIONS else ssd.Model(model_id=mid)
            for mid in mids
        }
        self.address: dict[int, int] = {}  # model id -> address of its ID register
        addr = BASE + len(MARKER)
        for mid in mids:
            self.address[mid] = addr
            addr += len(self.models[mid].get_mb()) // 2
        self.end = addr + len(END)
        self.controls: dict[tuple[int, str], Control] = {}
        if 704 in mids:
            self.controls.update({(704, n): c for n, c in controls(max_charge_w, max_discharge_w).items()})
        if connection is not None:
            self.controls.update({(CONNECTION_ID, n): c for n, c in connection_controls(connection).items()})
        self._writable: dict[int, tuple[int, str]] = {}  # register address -> the control point it belongs to
        for mid, name in self.controls:
            p = self.models[mid].points[name]
            for i in range(p.len):
                self._writable[self.address[mid] + p.offset + i] = (mid, name)
        self.trip_reset_address = (
            self.address[VENDOR_ID] + self.models[VENDOR_ID].points["TripRst"].offset if VENDOR_ID in mids else -1
        )
        self.trip_reset = trip_reset
        for (mid, name), sf in self.scale.items():
            if mid in self.models:
                self.models[mid].points[name].value = sf
        common = self.models[1].points
        common["Mn"].value = "v2g-plc"
        common["Md"].value = "V2G site" if not prefix else f"V2G site {prefix.rstrip('.')}"
        common["Vr"].value = version[:16]
        common["SN"].value = serial[:32]
        common["DA"].value = unit
        m701 = self.models[701].points
        m701["ACType"].value = 1  # SPLIT_PHASE: the voltage basis is line-to-line (docs/architecture.md)
        n = max(1, len(self.evses))  # a depot's site unit: the aggregate DER rating (IEEE 1547 applies to it)
        self._set(702, "WMaxRtg", n * max(max_charge_w, max_discharge_w))
        self._set(702, "WChaRteMaxRtg", n * max_charge_w)
        self._set(702, "WDisChaRteMaxRtg", n * max_discharge_w)
        self._set(702, "VNomRtg", nominal_voltage)
        if CONNECTION_ID in mids:
            self._set(CONNECTION_ID, "NEvse", n)
            self._set(CONNECTION_ID, "EvseUnitOfs", evse_unit_offset)
            if connection is not None:  # the limits in force are the server's to show (show_connection)
                self._set(CONNECTION_ID, "ImpRtg", connection[0])
                self._set(CONNECTION_ID, "ExpRtg", connection[1])
        if 704 in mids:
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
        if VENDOR_ID in mids:
            self.models[VENDOR_ID].points["TripRst"].value = 0
            self.answer("none", "")
        self.accepted = self.control_values()  # what the scan last accepted (or the defaults)
        self._regs: list[int] | None = None

    def _sf(self, mid: int, name: str) -> int:
        sf_name = self.models[mid].points[name].pdef.get("sf")
        return self.scale.get((mid, sf_name), 0) if sf_name else 0

    def _set(self, mid: int, name: str, value: Any) -> None:
        p = self.models[mid].points[name]
        if p.pdef["type"] == "string":
            p.value = None if value is None else str(value).encode()[: 2 * p.len].decode(errors="ignore")
            return
        p.value = None if value is None else _raw(p.pdef["type"], float(value), self._sf(mid, name))

    def _get(self, mid: int, name: str) -> float | None:
        p = self.models[mid].points[name]
        return None if p.value is None else float(p.value) * 10 ** self._sf(mid, name)

    # -- reads ---------------------------------------------------------------------------------------
    def _tag(self, image: Image, tag: str) -> Any:
        own = self.prefix + tag
        return image.tag(own if own in image else tag)

    def update(self, image: Image, now: dt.datetime | None = None) -> None:
        """Fill every measured point from the image: good tags give values, others the sentinel. ``now``
        (aware, the site clock) places the day-ahead price; without it that point reads not implemented."""
        for m in self.measures:
            tv = self._tag(image, m.tag)
            value = None
            if tv.good and tv.value is not None:
                try:
                    value = m.convert(tv.value, now) if m.timed else m.convert(tv.value)
                except (TypeError, ValueError, KeyError):
                    value = None
            self._set(m.model, m.point, value)
        if CONNECTION_ID in self.models:
            evses = [f"evse{n}." for n in self.evses] or [self.prefix]
            self._set(CONNECTION_ID, "NTrip", sum(1 for e in evses if image.value(e + "safety.trip")))
            self._set(CONNECTION_ID, "NCut", sum(1 for e in evses if image.value(e + "alloc.cut")))
        self._regs = None

    def show_connection(self, import_w: float, export_w: float, expiry_s: float) -> None:
        """Show the connection limits in force (64902), as connection.py holds them."""
        self._set(CONNECTION_ID, "ImpLim", import_w)
        self._set(CONNECTION_ID, "ExpLim", export_w)
        self._set(CONNECTION_ID, "LimRvrtTms", expiry_s)
        self._regs = None

    def registers(self) -> list[int]:
        """The whole image from BASE to the end marker (encoded by pysunspec2)."""
        if self._regs is None:
            regs = list(MARKER)
            for mid in self.model_ids:
                mb = self.models[mid].get_mb()
                regs.extend(int.from_bytes(mb[i : i + 2], "big") for i in range(0, len(mb), 2))
            regs.extend(END)
            self._regs = regs
        return self._regs

    # -- writes --------------------------------------------------------------------------------------
    def control_values(self) -> dict[str, int | None]:
        """The raw values of the 704 controls (to restore after a refusal)."""
        return {name: self.models[704].points[name].value for mid, name in self.controls if mid == 704}

    def restore(self, values: Mapping[str, int | None]) -> None:
        for name, raw in values.items():
            self.models[704].points[name].value = raw
        self._regs = None

    def answer(self, state: str, reason: str) -> None:
        """Show the scan's answer to the last write (vendor CmdSt, CmdRsn)."""
        if VENDOR_ID not in self.models:
            return
        self.models[VENDOR_ID].points["CmdSt"].value = CMD_STATES.index(state)
        self._set(VENDOR_ID, "CmdRsn", reason)
        self._regs = None

    def write(self, address: int, values: list[int], source: str) -> ModeRequest | TripReset | ConnectionWrite:
        """Check a client write; on success hold the new control values and return the request they make.
        Raises :class:`WriteRefused` with the Modbus exception code otherwise (nothing is changed)."""
        end = address + len(values)
        if address == self.trip_reset_address and self.trip_reset:
            if len(values) != 1 or values[0] != 1:
                raise WriteRefused(ILLEGAL_VALUE, "TripRst: write the single value 1")
            return TripReset(source)
        keys = [self._writable.get(a) for a in range(address, end)]
        if None in keys:
            raise WriteRefused(ILLEGAL_ADDRESS, f"write to {address}..{end - 1}: not a writable control point")
        new: dict[tuple[int, str], int] = {}
        for key in dict.fromkeys(keys):
            assert key is not None
            mid, name = key
            p = self.models[mid].points[name]
            first = self.address[mid] + p.offset
            if first < address or first + p.len > end:
                raise WriteRefused(ILLEGAL_ADDRESS, f"write covers part of {mid} {name}: write whole points")
            raw = _decode(p.pdef["type"], values[first - address : first - address + p.len])
            c = self.controls[key]
            value = raw * 10 ** self._sf(mid, name)
            if not c.lo <= value <= c.hi:
                raise WriteRefused(ILLEGAL_VALUE, f"{mid} {name} = {value:g} outside {c.lo:g}..{c.hi:g} ({c.note})")
            new[key] = raw
        if all(mid == CONNECTION_ID for mid, _ in new):
            got = {name: float(raw) * 10 ** self._sf(CONNECTION_ID, name) for (_, name), raw in new.items()}
            return ConnectionWrite(source, got.get("ImpLim"), got.get("ExpLim"), got.get("LimRvrtTms"))
        for (mid, name), raw in new.items():
            self.models[mid].points[name].value = raw
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


FIXED_NOTES: dict[tuple[int, str], str] = {
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
    (CONNECTION_ID, "ImpRtg"): "`connection.import_limit_w` of the interface that carries the limits",
    (CONNECTION_ID, "ExpRtg"): "`connection.export_limit_w`",
    (CONNECTION_ID, "NEvse"): "EVSEs of the site (1 on a single site)",
    (CONNECTION_ID, "EvseUnitOfs"): "EVSE n is unit n + EvseUnitOfs (`evse_unit_offset`)",
    (CONNECTION_ID, "NTrip"): "EVSEs whose `safety.trip` is set",
    (CONNECTION_ID, "NCut"): "EVSEs whose `alloc.cut` is set",
}
DEPOT_NOTES: dict[tuple[int, str], str] = {
    (702, "WMaxRtg"): "aggregate rating: EVSEs x max(charge, discharge)",
    (702, "WChaRteMaxRtg"): "EVSEs x `max_charge_w`",
    (702, "WDisChaRteMaxRtg"): "EVSEs x `max_discharge_w`",
    (1, "Md"): '"V2G site"',
}


def register_map_markdown(
    max_charge_w: float = 11_000,
    max_discharge_w: float = 11_000,
    nominal_voltage: float = 240.0,
    depot: bool = False,
) -> str:
    """The register map as a Markdown table, from the same definition the server encodes (docs): a single
    site's unit 1 (a depot's EVSE units are the same), or with ``depot`` a depot's site unit."""
    img = SunSpecImage(
        prefix="",
        unit=1,
        serial="site",
        version="0",
        nominal_voltage=nominal_voltage,
        max_charge_w=max_charge_w,
        max_discharge_w=max_discharge_w,
        reversion_s=60,
        evses=(1, 2) if depot else None,
        evse_unit_offset=1 if depot else None,
        connection=(100_000.0, 60_000.0) if depot else None,
    )
    rows = [
        "| address | model | point | type | scale factor | access | source / range |",
        "|---|---|---|---|---|---|---|",
    ]
    rows.append(f"| {BASE} | - | SunS | 2 x uint16 | | R | marker 0x5375 0x6E53 |")
    measures: Mapping[tuple[int, str], Measure] = {(m.model, m.point): m for m in img.measures}
    fixed = {**FIXED_NOTES, **(DEPOT_NOTES if depot else {})}
    for mid in img.model_ids:
        pts = img.models[mid].points
        for name, p in pts.items():
            key = (mid, name)
            access = "R"
            if name in ("ID", "L"):
                src = f"model id {mid}" if name == "ID" else f"length {pts['L'].value}"
            elif key in measures:
                m = measures[key]
                src = f"`{m.tag}`" + (f" ({m.note})" if m.note else "")
            elif key in img.controls:
                c = img.controls[key]
                access = "RW"
                rng = "0..rating" if mid == CONNECTION_ID and name != "LimRvrtTms" else f"{c.lo:g}..{c.hi:g}"
                src = f"{rng}: {c.note}"
            elif key in img.scale:
                src = f"fixed {img.scale[key]}"
            elif key in fixed:
                src = fixed[key]
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


if __name__ == "__main__":  # python -m runtime.tasks.localapi.sunspec [depot] > the tables in docs/local-api.md
    import sys

    print(register_map_markdown(depot=sys.argv[1:] == ["depot"]), end="")
