"""The interface between the scan engine and the logic it runs (programs and interlocks).

``programs/`` and ``safety/`` import only this module and ``runtime.tags``. A program is a plain class:
each cycle it sees a frozen input image and the output image so far, and writes outputs. It never does
I/O, never sleeps and never reads a clock; ``Cycle.now_us`` is the only time there is. That is what
makes a cycle replayable byte for byte.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from runtime.tags import TAG_NAME, US, Image, TagSpec, TagType


def _tag_name(v: str) -> str:
    if not TAG_NAME.match(v):
        raise ValueError("tag names are device.quantity, lower case")
    return v


def _time_zone(v: str) -> str:
    try:
        ZoneInfo(v)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown IANA timezone {v!r}") from exc
    return v


TagName = Annotated[str, AfterValidator(_tag_name)]
"""A tag name in a parameter model: ``device.quantity``, lower case."""
TimeZoneName = Annotated[str, AfterValidator(_time_zone)]
"""An IANA time zone name (``Europe/Berlin``), checked against the zone database at load."""


class Params(BaseModel):
    """Base for program/interlock/task parameters: unknown keys are errors, never silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class TagFields(Params):
    """What a site file says about a tag it declares itself (site ``tags:``, the memory device)."""

    name: TagName
    type: TagType = TagType.FLOAT
    unit: str = ""
    stale_after_s: float | None = Field(None, gt=0)


@dataclass(frozen=True)
class SiteInfo:
    """Site facts every program may need (from the site file's ``site:`` section)."""

    name: str
    nominal_voltage: float  # V, the basis of grid.voltage (docs/design.md#voltage-basis)
    nominal_frequency: float  # Hz
    period_us: int
    phases: int = 1


@dataclass(frozen=True)
class Event:
    """One line of the event log: mode transitions, trips, cessations, limit changes, forces."""

    k: int
    t_us: int
    kind: str  # "transition", "trip", "cessation", "limit", "force", "reset", "fault", "command", ...
    source: str
    message: str
    data: Mapping[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "t": self.t_us / US,
            "kind": self.kind,
            "source": self.source,
            "message": self.message,
            **({"data": dict(self.data)} if self.data else {}),
        }


@dataclass(frozen=True)
class Command:
    """An operator command (from the control socket) delivered to one cycle, e.g. ``reset_trip``."""

    name: str
    args: Mapping[str, Any] = field(default_factory=dict)


class Outputs:
    """The output image of one cycle. Programs write requests; interlocks read and overwrite them.

    Only declared output/memory tags may be written; the engine coerces values to the tag's type.
    """

    __slots__ = ("_specs", "_values", "_writable", "dirty")

    def __init__(self, specs: Mapping[str, TagSpec], values: dict[str, Any], writable: frozenset[str]):
        self._specs = specs
        self._values = values
        self._writable = writable
        self.dirty: set[str] = set()  # written this cycle: only these can have changed

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self._values.get(name, default)

    def __setitem__(self, name: str, value: Any) -> None:
        if name not in self._writable:
            raise KeyError(f"{name!r} is not an output or memory tag of this site")
        self._values[name] = self._specs[name].coerce(value)
        self.dirty.add(name)

    def __contains__(self, name: object) -> bool:
        return name in self._values

    def snapshot(self) -> dict[str, Any]:
        return dict(self._values)


@dataclass
class Cycle:
    """Everything one cycle shows a program: the cycle number, its time, the frozen inputs, the outputs."""

    k: int
    now_us: int
    period_us: int
    inputs: Image
    out: Outputs
    site: SiteInfo
    commands: tuple[Command, ...] = ()
    _events: list[Event] = field(default_factory=list)
    _source: str = ""

    @property
    def now(self) -> float:
        """Seconds of the cycle clock (for display and rates; compare times in ``now_us``)."""
        return self.now_us / US

    @property
    def dt(self) -> float:
        return self.period_us / US

    def event(self, kind: str, message: str, **data: Any) -> None:
        self._events.append(Event(self.k, self.now_us, kind, self._source, message, data))


class Program:
    """Base class of programs (phase PROGRAM) and interlocks (phase SAFETY).

    Subclasses set ``Params`` to a pydantic model of their settings, declare the tags they own in
    ``declare()`` and do their work in ``scan()``. State that must survive a restart (a latched trip)
    goes through ``persist()``/``restore()``; the runner stores it whenever it changes.
    """

    Params: ClassVar[type[Params]] = Params

    def __init__(self, name: str, params: Params, site: SiteInfo):
        self.name = name
        self.params = params
        self.site = site

    def declare(self) -> list[TagSpec]:
        return []

    def requires(self) -> list[str]:
        """Tags this program cannot work without; a site that provides none of them does not load."""
        return []

    def scan(self, cx: Cycle) -> None:
        raise NotImplementedError

    def persist(self) -> Mapping[str, Any] | None:
        return None

    def restore(self, state: Mapping[str, Any]) -> None:
        return None


P = TypeVar("P", bound=type[Program])

PROGRAMS: dict[str, type[Program]] = {}
INTERLOCKS: dict[str, type[Program]] = {}


def _registrar(registry: dict[str, type[Program]], kind: str) -> Callable[[str], Callable[[P], P]]:
    def register(type_name: str) -> Callable[[P], P]:
        def deco(cls: P) -> P:
            if type_name in registry and registry[type_name] is not cls:
                raise ValueError(f"{kind} type {type_name!r} registered twice")
            registry[type_name] = cls
            return cls

        return deco

    return register


register_program = _registrar(PROGRAMS, "program")
register_interlock = _registrar(INTERLOCKS, "interlock")
