"""The interface between the scan engine and the logic it runs (programs and interlocks).

``programs/`` and ``safety/`` import only this module and ``runtime.tags``. A program is a plain class:
each cycle it sees a frozen input image and the output image so far, and writes outputs. It never does
I/O, never sleeps and never reads a clock; ``Cycle.now_us`` is the only time there is. That is what
makes a cycle replayable byte for byte.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from runtime.registry import INTERLOCKS, PROGRAMS
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


_OWN: dict[TagType, type] = {TagType.FLOAT: float, TagType.INT: int, TagType.BOOL: bool, TagType.STR: str}
"""The Python type of a tag's values (a JSON tag has none: its values are taken as they come)."""

TagName = Annotated[str, AfterValidator(_tag_name)]
"""A tag name in a parameter model: ``device.quantity``, lower case."""
TimeZoneName = Annotated[str, AfterValidator(_time_zone)]
"""An IANA time zone name (``Europe/Berlin``), checked against the zone database at load."""


class _SiteFileMark:
    """Marks a parameter as a file the component reads (see ``SiteFile``)."""


SITE_FILE = _SiteFileMark()
SiteFile = Annotated[str, SITE_FILE]
"""A file a component reads, relative to the site file's folder. Building the site checks that it exists
and is readable, so ``check`` refuses a site whose file is missing, at the parameter's line, as ``run``
does."""

MAX_AGE_S = 7 * 86_400.0
EVSES_OUT = "runtime.evses_out"  # the EVSEs held out of service (a JSON list), fed by the runner like runtime.available
"""Upper bound of an age limit (``stale_after_s``): a value older than a week is no live input."""


class Params(BaseModel):
    """Base of every settings model: unknown keys are errors, never silently ignored, and no number is
    NaN or infinite (either would switch a comparison, and so a protection, off without a word)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class TagFields(Params):
    """What a site file says about a tag it declares itself (site ``tags:``, the memory device)."""

    name: TagName
    type: TagType = TagType.FLOAT
    unit: str = ""
    stale_after_s: float | None = Field(None, gt=0, le=MAX_AGE_S)


@dataclass(frozen=True)
class SiteInfo:
    """Site facts every component may need (from the site file's ``site:`` section and its place)."""

    name: str
    nominal_voltage: float  # V, the basis of grid.voltage (docs/design.md#voltage-basis)
    nominal_frequency: float  # Hz
    period_us: int
    phases: int = 1
    base_dir: Path = Path(".")  # the site file's folder: relative paths in params resolve against it
    # ``v2g-plc run --speed N``: each cycle covers N periods of the cycle clock while drivers and tasks work
    # in real time, so detectors that time a device's answer (read-back, measured power) stretch with it.
    speed: int = 1


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

    __slots__ = ("_coerce", "_specs", "_values", "_writable", "dirty")

    def __init__(self, specs: Mapping[str, TagSpec], values: dict[str, Any], writable: frozenset[str]):
        self._specs = specs
        self._values = values
        self._writable = writable
        # One lookup per write instead of three: the tag's own Python type and its coercion.
        self._coerce: dict[str, tuple[Any, Callable[[Any], Any]]] = {
            n: (_OWN.get(specs[n].type), specs[n].coerce) for n in writable
        }
        self.dirty: set[str] = set()  # written this cycle: only these can have changed

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self._values.get(name, default)

    def __setitem__(self, name: str, value: Any) -> None:
        try:
            own, coerce = self._coerce[name]
        except KeyError:
            raise KeyError(f"{name!r} is not an output or memory tag of this site") from None
        # A value already of the tag's own type is itself (a float only if finite: v - v is NaN for inf
        # and NaN), as ``TagSpec.coerce`` answers, without the call: some twenty writes a scan.
        if value.__class__ is not own or (own is float and value - value != 0.0):
            value = coerce(value)
        self._values[name] = value
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


class ParamError(ValueError):
    """A component's params are valid on their own but not on this site (a file that is not there).

    ``key`` is the path below the component's ``params`` (``("path",)``, ``("units", 0, "map")``), so
    the error names the line of the site file to fix.
    """

    def __init__(self, key: tuple[str | int, ...], message: str):
        super().__init__(message)
        self.key = key
        self.message = message


ParamsModel = Params  # the base model under a name that ``Plugin.Params`` does not shadow


class NotLive(Exception):
    """A change of params that a running program or interlock cannot take now (docs/online-change.md).

    ``retry_s`` None: only a restart applies it (the default for every component, a loosened protection).
    A number: the change may be asked for again after about that many seconds (a trip being timed now).
    """

    def __init__(self, reason: str, retry_s: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.retry_s = retry_s


class Plugin:
    """The one contract of everything a site file names: devices, programs, interlocks and tasks.

    A plug-in class is registered under a type name in its section's registry, sets ``Params`` to the
    pydantic model of its ``params:``, and is built as ``cls(name, params, site)``. Building does every
    check that needs neither the network nor a process (maps load and parse); an error raised then stops
    ``check`` and ``run`` alike, at the line of the key a ``ParamError`` names, or of the component for a
    ``ValueError``/``OSError``. Files named by ``SiteFile`` parameters are checked by the site build.
    ``declare()`` lists the tags it owns, ``requires()`` those it cannot work without.
    """

    Params: ClassVar[type[ParamsModel]] = ParamsModel

    def __init__(self, name: str, params: ParamsModel, site: SiteInfo):
        self.name = name
        self.params = params
        self.site = site

    @property
    def base_dir(self) -> Path:
        """The site file's folder: relative paths in the params resolve against it."""
        return self.site.base_dir

    def declare(self) -> list[TagSpec]:
        """The tags this component owns (full names): what it reads from the field, writes, or publishes."""
        return []

    def requires(self) -> list[str]:
        """Tags this component cannot work without; a site that lacks one of them does not load."""
        return []


def _marked(annotation: Any) -> bool:
    """Whether an annotation is ``SiteFile`` (possibly inside ``| None``)."""
    if SITE_FILE in getattr(annotation, "__metadata__", ()):
        return True
    return any(_marked(a) for a in typing.get_args(annotation))


def site_files(model: BaseModel, key: tuple[str | int, ...] = ()) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """Every ``SiteFile`` value in a params model, nested models and lists included, with its key."""
    for name, f in type(model).model_fields.items():
        value = getattr(model, name)
        if value is None:
            continue
        if isinstance(value, str) and (SITE_FILE in f.metadata or _marked(f.annotation)):
            yield (*key, name), value
        elif isinstance(value, BaseModel):
            yield from site_files(value, (*key, name))
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                if isinstance(item, BaseModel):
                    yield from site_files(item, (*key, name, i))


class Program(Plugin):
    """Base class of programs (phase PROGRAM) and interlocks (phase SAFETY).

    Programs are pure: each cycle ``scan()`` sees frozen inputs and writes outputs, with no I/O and no
    clock. State that must survive a restart (a latched trip) goes through ``persist()``/``restore()``;
    the runner stores it whenever it changes.
    """

    def scan(self, cx: Cycle) -> None:
        raise NotImplementedError

    def persist(self) -> Mapping[str, Any] | None:
        return None

    def restore(self, state: Mapping[str, Any]) -> None:
        return None

    def reconfigure(self, params: ParamsModel) -> Callable[[], None]:
        """Online change: check, without changing anything, that ``params`` may replace the running
        ones now; return the swap, which the engine runs at a cycle boundary once every changed component
        has agreed (all or nothing). The swap keeps latches and running timers. Raises ``NotLive``.

        Why the default refuses: only the component knows which of its state a new setting would
        invalidate, so a component is live-changeable only where it says so."""
        raise NotLive(f"{type(self).__name__} {self.name!r} does not change its params while running")

    def check_same_tags(self, params: ParamsModel) -> None:
        """For a ``reconfigure`` that swaps plain numbers: the tags a component declares and requires are
        the site's tag set, which only a restart changes (docs/online-change.md). Raises ``NotLive``."""
        twin = type(self)(self.name, params, self.site)
        if sorted(twin.requires()) != sorted(self.requires()) or [
            (t.name, t.type, t.direction) for t in twin.declare()
        ] != [(t.name, t.type, t.direction) for t in self.declare()]:
            raise NotLive(f"{type(self).__name__} {self.name!r}: a tag it reads or writes changed (restart)")


register_program = PROGRAMS.register
register_interlock = INTERLOCKS.register
