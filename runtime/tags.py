"""Tags: the only vocabulary programs, interlocks, drivers and tasks share.

A tag is named ``device.quantity`` (lower case), carries an SI unit and, for inputs, a quality and the
time it was read (see docs/design.md#tags). Time inside the runtime is integer microseconds of the cycle
clock, so that replay and live runs compute identical ages.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

TAG_NAME = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$")

US = 1_000_000  # microseconds per second


class Quality(str, enum.Enum):
    GOOD = "good"
    BAD = "bad"
    STALE = "stale"


class Direction(str, enum.Enum):
    INPUT = "input"  # read from the field by a driver, or written by the runner (runtime.*)
    OUTPUT = "output"  # written by programs/safety, committed to drivers
    MEMORY = "memory"  # internal state visible to others
    SHARED = "shared"  # written by a task in the task process, applied at the next cycle start


class TagType(str, enum.Enum):
    FLOAT = "float"
    INT = "int"
    BOOL = "bool"
    STR = "str"
    JSON = "json"  # structured value (a plan); must be JSON-serialisable and is treated as immutable


# enum members as module constants: ``TagType.FLOAT`` is a slow class-attribute lookup (Python 3.11)
_FLOAT, _INT, _STR, _BOOL = TagType.FLOAT, TagType.INT, TagType.STR, TagType.BOOL
_GOOD = Quality.GOOD

_COERCE: dict[TagType, Callable[[Any], Any]] = {
    TagType.FLOAT: float,
    TagType.INT: int,
    TagType.BOOL: bool,
    TagType.STR: str,
    TagType.JSON: lambda v: v,
}


@dataclass(frozen=True, slots=True)
class TagSpec:
    """Static description of a tag. ``stale_after_s`` applies to inputs and shared tags only."""

    name: str
    type: TagType = TagType.FLOAT
    unit: str = ""
    direction: Direction = Direction.INPUT
    default: Any = None
    stale_after_s: float | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if not TAG_NAME.match(self.name):
            raise ValueError(f"tag name {self.name!r} is not of the form device.quantity (lower case)")
        if self.stale_after_s is not None and not self.stale_after_s > 0:
            raise ValueError(f"tag {self.name}: stale_after_s must be > 0")

    def coerce(self, value: Any) -> Any:
        """Convert a value to the tag's type; NaN/inf floats and wrong types raise ValueError."""
        # The common cases first: a value already of the tag's own type is itself (v - v is NaN for inf
        # and NaN). Every output write of every scan comes through here.
        cls = value.__class__
        if cls is float:
            if self.type is _FLOAT and value - value == 0.0:
                return value
        elif cls is str:
            if self.type is _STR:
                return value
        elif cls is bool and self.type is _BOOL:
            return value
        if value is None:
            return None
        t = self.type
        if t is _BOOL and not isinstance(value, bool):
            if value in (0, 1):
                return bool(value)
            raise ValueError(f"{self.name}: expected bool, got {value!r}")
        if (t is _FLOAT or t is _INT) and isinstance(value, bool):
            raise ValueError(f"{self.name}: expected number, got bool")
        try:
            out = _COERCE[t](value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ValueError(f"{self.name}: expected {t.value}, got {value!r}") from exc
        if t is _FLOAT and not math.isfinite(out):
            raise ValueError(f"{self.name}: non-finite value {value!r}")
        return out

    @property
    def is_input(self) -> bool:
        return self.direction in (Direction.INPUT, Direction.SHARED)


class TagValue(NamedTuple):
    """A tag's value as a cycle sees it. ``t_us`` is when it was read (cycle clock).

    A NamedTuple, not a dataclass: the engine makes one per update per cycle, and tuple construction is
    several times cheaper (it matters at 2,000 tags).
    """

    value: Any
    quality: Quality = Quality.GOOD
    t_us: int = 0
    forced: bool = False

    @property
    def good(self) -> bool:
        return self.quality is _GOOD

    def good_value(self, default: Any = None) -> Any:
        """The value if it is good, else ``default``: the fail-safe way to read an input."""
        return self.value if self.quality is _GOOD else default


class TagUpdate(NamedTuple):
    """A finished read or a task write, staged until the next cycle start."""

    name: str
    value: Any
    quality: Quality = Quality.GOOD
    t_us: int | None = None  # None: read at the cycle that applies it


MISSING = TagValue(None, Quality.BAD, 0)


class Image(Mapping[str, TagValue]):
    """Read-only snapshot of tag values. Unknown names read as ``bad`` rather than raising, so a
    program that asks for an absent input fails safe instead of stopping the scan.

    Read-only by its interface: the dict behind it is its own (a copy, or one handed over by ``adopt``)
    and no method changes it. Not wrapped in a ``MappingProxyType``: every read of every scan would pay
    for the proxy's forwarding (about 15 ns of 35 per lookup, some thirty lookups a scan)."""

    __slots__ = ("_d",)

    _d: Mapping[str, TagValue]

    def __init__(self, values: Mapping[str, TagValue]):
        self._d = dict(values)

    @classmethod
    def adopt(cls, values: dict[str, TagValue]) -> Image:
        """Wrap a dict the caller hands over and never touches again (no copy: the engine's fast path)."""
        img = cls.__new__(cls)
        img._d = values
        return img

    def __getitem__(self, name: str) -> TagValue:
        return self._d[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)

    def tag(self, name: str) -> TagValue:
        return self._d.get(name, MISSING)

    def value(self, name: str, default: Any = None) -> Any:
        """Value if good, else ``default``."""
        tv = self._d.get(name)
        return tv[0] if tv is not None and tv[1] is _GOOD else default

    def good(self, *names: str) -> bool:
        d = self._d
        for n in names:
            tv = d.get(n)
            if tv is None or tv[1] is not _GOOD:
                return False
        return True


@dataclass
class TagTable:
    """All tag specs of a site, keyed by name. Duplicate declarations are a configuration error."""

    specs: dict[str, TagSpec] = field(default_factory=dict)
    owners: dict[str, str] = field(default_factory=dict)

    def add(self, spec: TagSpec, owner: str) -> None:
        if spec.name in self.specs:
            raise ValueError(f"duplicate tag {spec.name!r}: declared by {self.owners[spec.name]} and by {owner}")
        self.specs[spec.name] = spec
        self.owners[spec.name] = owner

    def __contains__(self, name: object) -> bool:
        return name in self.specs

    def __getitem__(self, name: str) -> TagSpec:
        return self.specs[name]

    def by_direction(self, *directions: Direction) -> list[TagSpec]:
        return [s for s in self.specs.values() if s.direction in directions]
