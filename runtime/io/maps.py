"""I/O maps: the YAML that turns a device's registers into tags, and the codec that does the arithmetic.

A map is data (``io_maps/*.yaml``), validated like the site file so an error names file, line and key.
Everything device-specific lives here, never in program code: the sign convention (``scale: -1`` or
``negate: true`` for a generation-positive device), scale factors (SunSpec ``*_SF`` registers, value =
raw x 10^SF), not-implemented sentinels (SunSpec: int16 0x8000, uint16 0xFFFF, int32 0x80000000,
uint32 0xFFFFFFFF; "acc" counters 0), word order, and which write restarts the device's reversion timer.

Addresses are 0-based protocol addresses (what goes on the wire). A manual's "register 40001" in
1-based mbpoll notation is ``address: 40000``.
"""

from __future__ import annotations

import enum
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from runtime.api import Params
from runtime.tags import TAG_NAME, Direction, TagSpec, TagType
from runtime.yamlload import ConfigError, ConfigIssue, load_yaml, validate

IO_MAPS_DIR = Path(__file__).resolve().parents[2] / "io_maps"

Table = Literal["holding", "input", "coil", "discrete"]
WordOrder = Literal["big", "little"]

# Registers per value; 0 = given by ``size`` (string, bitfield, enum may choose 1 or 2 registers).
TYPE_SIZE: dict[str, int] = {
    "int16": 1,
    "uint16": 1,
    "int32": 2,
    "uint32": 2,
    "int64": 4,
    "uint64": 4,
    "float32": 2,
    "float64": 4,
    "string": 0,
    "bitfield": 0,
    "enum": 0,
    "bool": 1,
}
SIGNED = {"int16", "int32", "int64"}

# SunSpec "not implemented" values (SunSpec Information Model Specification, "Unimplemented registers").
SUNSPEC_NI: dict[str, tuple[int, ...]] = {
    "int16": (0x8000,),
    "uint16": (0xFFFF,),
    "int32": (0x80000000,),
    "uint32": (0xFFFFFFFF,),
    "int64": (0x8000000000000000,),
    "uint64": (0xFFFFFFFFFFFFFFFF,),
    "enum": (0xFFFF, 0xFFFFFFFF),
    "bitfield": (0xFFFF, 0xFFFFFFFF),
}

MODBUS_MAX_READ_REGS = 125  # FC3/FC4 (Modbus Application Protocol V1.1b3, 6.3/6.4)
MODBUS_MAX_WRITE_REGS = 123  # FC16 (6.12)
MODBUS_MAX_READ_BITS = 2000  # FC1/FC2 (6.1/6.2)
MODBUS_MAX_WRITE_BITS = 1968  # FC15 (6.11)


class PollClass(str, enum.Enum):
    FAST = "fast"  # every scan cycle
    NORMAL = "normal"
    SLOW = "slow"


class PollPeriods(Params):
    normal_s: float = Field(1.0, gt=0, le=3600)
    slow_s: float = Field(30.0, gt=0, le=86400)


class StaleLimits(Params):
    """Default staleness per poll class; a point may set its own ``stale_after_s``."""

    fast: float = Field(1.0, gt=0)
    normal: float = Field(5.0, gt=0)
    slow: float = Field(120.0, gt=0)


class Discovery(Params):
    """SunSpec discovery: ``SunS`` at one of ``bases``, then the model chain (ID, L) to ID 0xFFFF."""

    type: Literal["sunspec"] = "sunspec"
    bases: list[int] = Field(default_factory=lambda: [40000, 0, 50000], min_length=1)
    table: Literal["holding"] = "holding"
    models: list[int] = Field(min_length=1, description="models this map reads; each must be present")


class Reversion(Params):
    """Which write restarts the device's communication-loss (reversion) timer, and the refresh period
    that keeps it from expiring while the scan runs (refresh_s must be well inside timeout_s)."""

    restarted_by: list[str] = Field(min_length=1, description="point ids whose write restarts the timer")
    timeout_s: float = Field(gt=0, description="device's reversion timeout as this map configures it")
    timeout_point: str | None = Field(None, description="writable point holding the timeout in seconds")
    note: str = ""


class InitWrite(Params):
    point: str
    value: float | int | bool | str


class Point(Params):
    id: str | None = Field(None, description="unique within the map; defaults to the tag name")
    tag: str | None = Field(None, description="tag produced (relative to the device's prefix); none = internal")
    direction: Literal["input", "output"] = "input"
    table: Table = "holding"
    address: int | None = Field(None, ge=0, le=65535, description="0-based protocol address")
    model: int | None = Field(None, description="SunSpec model id (address found by discovery)")
    model_offset: int | None = Field(None, ge=0, description="registers from the model's ID register")
    type: str = "uint16"
    size: int | None = Field(None, ge=1, le=125, description="registers (string, bitfield, enum)")
    word_order: WordOrder | None = None
    scale: float = 1.0
    offset: float = 0.0
    negate: bool = False
    sf: str | None = Field(None, description="id of an int16 scale-factor point: value = raw * 10^sf")
    unit: str = ""
    tag_type: TagType | None = None
    access: Literal["r", "rw"] = "r"
    poll: PollClass = PollClass.NORMAL
    stale_after_s: float | None = Field(None, gt=0)
    not_implemented: list[int] | None = None
    enum: dict[int, str] | None = None
    bits: dict[str, int] | None = Field(None, description="bool tag per bit (bitfield)")
    nonvolatile: bool = Field(False, description="stored in EEPROM/flash: written on change only, never refreshed")
    readback: bool = False
    readback_tag: str | None = None
    tolerance: float = Field(0.0, ge=0)
    default: Any = None
    description: str = ""

    @field_validator("type")
    @classmethod
    def _type(cls, v: str) -> str:
        if v not in TYPE_SIZE:
            raise ValueError(f"unknown type {v!r} (known: {', '.join(TYPE_SIZE)})")
        return v

    @field_validator("tag", "readback_tag")
    @classmethod
    def _tag(cls, v: str | None) -> str | None:
        if v is not None and not TAG_NAME.match(v):
            raise ValueError(f"tag {v!r} is not of the form device.quantity (lower case)")
        return v

    @model_validator(mode="after")
    def _check(self) -> Point:
        if self.id is None and self.tag is None:
            raise ValueError("a point needs an id or a tag")
        if (self.address is None) == (self.model is None):
            raise ValueError("give either address or model + model_offset")
        if self.model is not None and self.model_offset is None:
            raise ValueError("model needs model_offset")
        if self.type in ("string",) and self.size is None:
            raise ValueError("a string needs size (registers)")
        if self.type in ("bitfield", "enum") and self.size not in (None, 1, 2):
            raise ValueError("bitfield/enum size is 1 or 2 registers")
        if self.table in ("coil", "discrete") and self.type != "bool":
            raise ValueError("coils and discrete inputs are type bool")
        if self.type == "bool" and self.table not in ("coil", "discrete"):
            raise ValueError("type bool is for coils and discrete inputs (use tag_type: bool on a register)")
        if self.direction == "output":
            if self.access != "rw":
                raise ValueError("an output point must have access: rw")
            if self.tag is None:
                raise ValueError("an output point needs a tag")
            if self.table in ("input", "discrete"):
                raise ValueError("input registers and discrete inputs cannot be written")
        if self.readback and self.direction != "output":
            raise ValueError("readback applies to output points")
        if self.enum is not None and self.type != "enum":
            raise ValueError("enum: needs type enum")
        if self.bits is not None:
            if self.type != "bitfield":
                raise ValueError("bits: needs type bitfield")
            for name, bit in self.bits.items():
                if not TAG_NAME.match(name):
                    raise ValueError(f"bit tag {name!r} is not of the form device.quantity")
                if not 0 <= bit < 16 * (self.size or 1):
                    raise ValueError(f"bit {bit} of {name} outside the field")
        if self.scale == 0:
            raise ValueError("scale must not be 0")
        return self

    @property
    def key(self) -> str:
        return self.id or self.tag  # type: ignore[return-value]

    @property
    def count(self) -> int:
        """Registers (or bits) the value occupies."""
        return TYPE_SIZE[self.type] or self.size or 1

    @property
    def value_tag_type(self) -> TagType:
        if self.tag_type is not None:
            return self.tag_type
        if self.type == "bool":
            return TagType.BOOL
        if self.type in ("string", "enum"):
            return TagType.STR
        if self.type == "bitfield":
            return TagType.INT
        return TagType.FLOAT

    @property
    def factor(self) -> float:
        return -self.scale if self.negate else self.scale


class IOMap(Params):
    name: str
    description: str = ""
    word_order: WordOrder = "big"
    sentinels: Literal["sunspec", "none"] = "none"
    discovery: Discovery | None = None
    poll: PollPeriods = Field(default_factory=PollPeriods)
    stale_after_s: StaleLimits = Field(default_factory=StaleLimits)
    max_gap: int = Field(16, ge=0, le=124, description="unused registers a read may bridge")
    holes: list[tuple[int, int]] = Field(
        default_factory=list, description="[first, last] holding/input addresses the device rejects"
    )
    refresh_s: float = Field(5.0, gt=0, description="periodic rewrite of volatile outputs")
    reversion: Reversion | None = None
    mismatch_tag: str | None = None
    init: list[InitWrite] = Field(default_factory=list, description="non-volatile writes once per connect")
    points: list[Point] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> IOMap:
        by_key: dict[str, Point] = {}
        tags: set[str] = set()
        for p in self.points:
            if p.key in by_key:
                raise ValueError(f"point id {p.key!r} appears twice")
            by_key[p.key] = p
            for t in point_tags(p):
                if t in tags:
                    raise ValueError(f"tag {t!r} produced twice")
                tags.add(t)
        for p in self.points:
            if p.sf is not None:
                sfp = by_key.get(p.sf)
                if sfp is None:
                    raise ValueError(f"point {p.key}: scale factor {p.sf!r} is not a point of this map")
                if sfp.type != "int16":
                    raise ValueError(f"point {p.key}: scale factor {p.sf!r} must be int16")
            if p.model is not None and (self.discovery is None or p.model not in self.discovery.models):
                raise ValueError(f"point {p.key}: model {p.model} needs discovery listing it")
        for w in self.init:
            wp = by_key.get(w.point)
            if wp is None or wp.access != "rw":
                raise ValueError(f"init: {w.point!r} is not a writable point of this map")
        if self.reversion is not None:
            for k in self.reversion.restarted_by:
                if k not in by_key or by_key[k].access != "rw":
                    raise ValueError(f"reversion.restarted_by: {k!r} is not a writable point")
            tp = self.reversion.timeout_point
            if tp is not None and (tp not in by_key or by_key[tp].access != "rw"):
                raise ValueError(f"reversion.timeout_point: {tp!r} is not a writable point")
            if self.refresh_s >= self.reversion.timeout_s / 2:
                raise ValueError("refresh_s must be under half the reversion timeout")
        if self.mismatch_tag is not None and not TAG_NAME.match(self.mismatch_tag):
            raise ValueError("mismatch_tag is not of the form device.quantity")
        if any(p.readback for p in self.points) and self.mismatch_tag is None:
            raise ValueError("a map with readback points needs mismatch_tag")
        return self

    def point(self, key: str) -> Point:
        for p in self.points:
            if p.key == key:
                return p
        raise KeyError(key)

    def not_implemented(self, p: Point) -> tuple[int, ...]:
        if p.not_implemented is not None:
            return tuple(p.not_implemented)
        if self.sentinels == "sunspec":
            if p.type in ("enum", "bitfield"):
                return (0xFFFF,) if p.count == 1 else (0xFFFFFFFF,)
            return SUNSPEC_NI.get(p.type, ())
        return ()

    def stale_limit(self, p: Point) -> float:
        return p.stale_after_s or getattr(self.stale_after_s, p.poll.value)


def point_tags(p: Point) -> list[str]:
    out = []
    if p.tag is not None:
        out.append(p.tag)
    if p.bits:
        out.extend(p.bits)
    if p.readback:
        out.append(readback_name(p))
    return out


def readback_name(p: Point) -> str:
    return p.readback_tag or f"{p.tag}_readback"


# ---- loading ------------------------------------------------------------------------------------------


def resolve_map_path(ref: str, base_dir: Path) -> Path:
    """A map reference: a path (relative to the site file) or a bare name of a shipped map."""
    p = Path(ref)
    if p.is_absolute():
        return p
    cand = base_dir / p
    if cand.exists():
        return cand
    shipped = IO_MAPS_DIR / (ref if ref.endswith(".yaml") else ref + ".yaml")
    return shipped if shipped.exists() else cand


@cache
def _load_map_cached(path: str, mtime_ns: int) -> IOMap:
    doc = load_yaml(path)
    if not isinstance(doc.data, dict):
        raise ConfigError([doc.issue((), "an I/O map is a mapping with name:, points:, ...")])
    return validate(IOMap, doc.data, doc)


def load_map(path: str | Path) -> IOMap:
    """Load and validate a map file; errors are ConfigError naming file:line: key."""
    path = Path(path)
    try:
        mtime = path.stat().st_mtime_ns
    except OSError as exc:
        raise ConfigError([ConfigIssue(str(path), None, "", f"cannot read I/O map: {exc.strerror or exc}")]) from exc
    return _load_map_cached(str(path), mtime)


def shipped_maps() -> list[Path]:
    return sorted(IO_MAPS_DIR.glob("*.yaml"))


# ---- naming (one map, several devices) -------------------------------------------------------------


@dataclass(frozen=True)
class Naming:
    """Tag renaming of one device entry: ``rename`` (full names) first, then ``prefix`` prepended."""

    prefix: str = ""
    rename: Mapping[str, str] | None = None

    def __call__(self, tag: str) -> str:
        if self.rename and tag in self.rename:
            tag = self.rename[tag]
        return f"{self.prefix}{tag}" if self.prefix else tag


def tag_specs(m: IOMap, naming: Naming = Naming()) -> list[TagSpec]:
    """Every tag a device with this map delivers or accepts (full names after renaming)."""
    out: list[TagSpec] = []
    for p in m.points:
        stale = m.stale_limit(p)
        if p.tag is not None:
            if p.direction == "output":
                spec = TagSpec(naming(p.tag), p.value_tag_type, p.unit, Direction.OUTPUT, None, None, p.description)
                out.append(
                    TagSpec(
                        spec.name, spec.type, spec.unit, Direction.OUTPUT, spec.coerce(p.default), None, p.description
                    )
                )
            else:
                out.append(
                    TagSpec(naming(p.tag), p.value_tag_type, p.unit, Direction.INPUT, None, stale, p.description)
                )
        for b in p.bits or {}:
            out.append(TagSpec(naming(b), TagType.BOOL, "", Direction.INPUT, None, stale, f"bit of {p.key}"))
        if p.readback:
            out.append(
                TagSpec(
                    naming(readback_name(p)),
                    p.value_tag_type,
                    p.unit,
                    Direction.INPUT,
                    None,
                    stale,
                    f"{p.tag} as read back from the device",
                )
            )
    if m.mismatch_tag:
        out.append(
            TagSpec(
                naming(m.mismatch_tag),
                TagType.BOOL,
                "",
                Direction.INPUT,
                None,
                max(m.stale_limit(p) for p in m.points if p.readback),
                "a written setpoint did not read back as written",
            )
        )
    return out


# ---- codec ----------------------------------------------------------------------------------------


class DecodeError(ValueError):
    """Register data that cannot be a value (not implemented, unknown enum, bad SF): quality bad."""


@cache
def _dt(name: str) -> Any:
    from pymodbus.client.mixin import ModbusClientMixin

    return ModbusClientMixin.DATATYPE[name.upper()]


def _conv() -> Any:
    from pymodbus.client.mixin import ModbusClientMixin

    return ModbusClientMixin


def _raw_type(p: Point) -> str:
    if p.type in ("bitfield", "enum"):
        return "uint16" if p.count == 1 else "uint32"
    return p.type


def decode_raw(p: Point, regs: Sequence[int], word_order: WordOrder) -> int | float | str:
    """Registers to the raw number/string, through pymodbus's converter."""
    if len(regs) != p.count:
        raise DecodeError(f"{p.key}: expected {p.count} registers, got {len(regs)}")
    t = _raw_type(p)
    if t == "string":
        data = b"".join(int(r).to_bytes(2, "big") for r in regs)
        return data.rstrip(b"\x00").decode("utf-8", errors="replace")
    return _conv().convert_from_registers(list(regs), _dt(t), word_order=p.word_order or word_order)


def encode_raw(p: Point, raw: int | float | str, word_order: WordOrder) -> list[int]:
    t = _raw_type(p)
    if t == "string":
        data = str(raw).encode("utf-8")[: 2 * p.count].ljust(2 * p.count, b"\x00")
        return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
    return _conv().convert_to_registers(raw, _dt(t), word_order=p.word_order or word_order)


def _int_range(t: str) -> tuple[int, int]:
    bits = {"16": 16, "32": 32, "64": 64}[t[-2:]]
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if t in SIGNED else (0, (1 << bits) - 1)


def sf_exponent(m: IOMap, p: Point, sf_values: Mapping[str, int | None]) -> int:
    """10-exponent of the point's scale factor (0 without one). A missing or not-implemented SF is an
    error: a value without its scale is not a value."""
    if p.sf is None:
        return 0
    v = sf_values.get(p.sf)
    if v is None:
        raise DecodeError(f"{p.key}: scale factor {p.sf} unknown or not implemented")
    if not -10 <= v <= 10:  # SunSpec sunssf range is -10..10
        raise DecodeError(f"{p.key}: scale factor {p.sf}={v} outside -10..10")
    return v


@dataclass(frozen=True, slots=True)
class _Compiled:
    """What decoding one point needs, computed once (decode runs for every point of every poll)."""

    count: int
    mask: int
    ni: frozenset[int]
    raw_type: str
    word_order: WordOrder
    factor: float
    vt: TagType


_COMPILED: dict[int, tuple[IOMap, Point, _Compiled]] = {}


def _compile(m: IOMap, p: Point) -> _Compiled:
    e = _COMPILED.get(id(p))
    if e is not None and e[0] is m and e[1] is p:
        return e[2]
    mask = (1 << (16 * p.count)) - 1
    c = _Compiled(
        p.count,
        mask,
        frozenset(v & mask for v in m.not_implemented(p)),
        _raw_type(p),
        p.word_order or m.word_order,
        p.factor,
        p.value_tag_type,
    )
    _COMPILED[id(p)] = (m, p, c)  # holding m and p keeps id(p) from being reused
    return c


def decode(m: IOMap, p: Point, regs: Sequence[int], sf_values: Mapping[str, int | None]) -> Any:
    """Registers (or, for bool points, a list with one bit) to the tag value; DecodeError -> bad."""
    if p.type == "bool":
        return bool(regs[0])
    c = _compile(m, p)
    if len(regs) != c.count:
        raise DecodeError(f"{p.key}: expected {c.count} registers, got {len(regs)}")
    if c.raw_type == "string":
        raw_s = decode_raw(p, regs, c.word_order)
        if m.sentinels == "sunspec" and raw_s == "":
            raise DecodeError(f"{p.key}: not implemented (empty string)")
        return raw_s
    if c.raw_type == "uint16":  # one register: no word order, and 8x faster than the generic converter
        raw: int | float = regs[0]
    elif c.raw_type == "int16":
        raw = regs[0] - 0x10000 if regs[0] & 0x8000 else regs[0]
    else:
        raw = _conv().convert_from_registers(list(regs), _dt(c.raw_type), word_order=c.word_order)
    if isinstance(raw, int) and raw & c.mask in c.ni:
        raise DecodeError(f"{p.key}: not implemented (0x{raw & c.mask:X})")
    if p.type == "enum":
        assert isinstance(raw, int)
        if p.enum is None:
            return bool(raw) if c.vt is TagType.BOOL else int(raw) if c.vt is TagType.INT else str(raw)
        if raw not in p.enum:
            raise DecodeError(f"{p.key}: value {raw} is not one of the map's enumeration")
        return p.enum[raw]
    if p.type == "bitfield":
        return raw
    if isinstance(raw, float) and not math.isfinite(raw):
        raise DecodeError(f"{p.key}: non-finite float")
    exp = sf_exponent(m, p, sf_values) if p.sf is not None else 0
    # Divide for negative exponents: 950 * 0.01 / 10 is 0.95, 950 * 0.01 * 0.1 is 0.9500000000000001.
    if isinstance(raw, int) and c.factor == 1 and exp == 0 and p.offset == 0:
        value: int | float = raw  # exact: 64-bit counters must not pass through a float
    else:
        value = (raw * c.factor / 10.0**-exp if exp < 0 else raw * c.factor * 10.0**exp) + p.offset
        if not math.isfinite(value):  # a huge raw value x scale x 10^SF overflows: no number to deliver
            raise DecodeError(f"{p.key}: scaled value overflows")
    if c.vt is TagType.BOOL:
        return value != 0
    if c.vt is TagType.INT:
        return value if isinstance(value, int) else round(value)
    return float(value)


def _masked_ni(m: IOMap, p: Point) -> tuple[int, ...]:
    bits = 16 * p.count
    return tuple(v & ((1 << bits) - 1) for v in m.not_implemented(p))


def bits_of(p: Point, field: int) -> dict[str, bool]:
    return {name: bool((field >> bit) & 1) for name, bit in (p.bits or {}).items()}


def encode(m: IOMap, p: Point, value: Any, sf_values: Mapping[str, int | None]) -> list[int]:
    """Tag value to registers (bool points: [0|1]). Out-of-range values are an error, not a wrap: a
    ValueError (or DecodeError for a missing scale factor), never another exception."""
    try:
        return _encode(m, p, value, sf_values)
    except (OverflowError, struct.error, TypeError) as exc:  # beyond the register type's range
        raise ValueError(f"{p.key}: {value!r} does not fit {p.type}") from exc


def _encode(m: IOMap, p: Point, value: Any, sf_values: Mapping[str, int | None]) -> list[int]:
    if p.type == "bool":
        return [1 if value else 0]
    if p.type == "string":
        return encode_raw(p, str(value), m.word_order)
    if p.type == "enum":
        if p.enum is not None and not isinstance(value, int):
            inv = {v: k for k, v in p.enum.items()}
            if str(value) not in inv:
                raise ValueError(f"{p.key}: {value!r} is not one of {sorted(inv)}")
            raw_e: int = inv[str(value)]
        else:
            raw_e = int(value)
        return encode_raw(p, raw_e, m.word_order)
    if isinstance(value, bool):
        value = 1.0 if value else 0.0
    exp = sf_exponent(m, p, sf_values)
    t = _raw_type(p)
    if isinstance(value, int) and p.factor == 1 and exp == 0 and p.offset == 0 and not t.startswith("float"):
        raw: int | float = value
    else:
        raw = (float(value) - p.offset) / p.factor * (10.0**-exp if exp < 0 else 1.0) / (10.0**exp if exp > 0 else 1.0)
    if not math.isfinite(raw):
        raise ValueError(f"{p.key}: {value!r} is not a finite value for the register")
    if t.startswith("float"):
        return encode_raw(p, raw, m.word_order)
    iraw = round(raw)
    lo, hi = _int_range(t)
    if not lo <= iraw <= hi or iraw & ((1 << (16 * p.count)) - 1) in _masked_ni(m, p):
        raise ValueError(f"{p.key}: {value!r} does not fit {p.type} (raw {iraw})")
    return encode_raw(p, iraw, m.word_order)


def quantum(m: IOMap, p: Point, sf_values: Mapping[str, int | None]) -> float:
    """Smallest step the register can hold, in tag units (read-back comparison tolerance)."""
    if p.type.startswith("float") or p.type in ("string", "enum", "bool"):
        return 0.0
    try:
        return abs(p.factor) * 10.0 ** sf_exponent(m, p, sf_values)
    except DecodeError:
        return 0.0
