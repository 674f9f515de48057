"""The site file: pydantic models of every section, validated with file, line and key in each error.

Components (devices, programs, interlocks, tasks) are ``{type, name, params}``; their ``params`` are
validated against the ``Params`` model their type registers, with the same line-exact errors. Nothing
that a user could get wrong is silently defaulted: the cycle period, nominal voltage and frequency and the
list of interlocks must be written down.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from runtime.api import Params, TagFields, TimeZoneName
from runtime.commands import CommandsSection
from runtime.registry import SECTIONS, TASKS
from runtime.tags import Direction, TagSpec
from runtime.yamlload import ConfigError, ConfigIssue, YamlDoc, load_yaml, validate


class SiteSection(Params):
    name: str = Field(min_length=1)
    nominal_voltage: float = Field(gt=0, le=100_000, description="V; the basis of grid.voltage")
    nominal_frequency: Literal[50, 60] = Field(description="Hz")
    phases: Literal[1, 3] = 1
    timezone: TimeZoneName = Field("UTC", description="IANA zone of the site's local clock (prices, plug-in times)")
    start: dt.datetime | None = Field(
        None, description="simulated sites: local calendar time of cycle-clock zero; omit for the wall clock"
    )


class ScanSection(Params):
    period_ms: float = Field(ge=1, le=1000, description="cycle period; 20 ms default in the bundled site")
    overrun_fault_after: int = Field(
        5, ge=1, le=1000, description="consecutive overruns that raise runtime.overrun_fault"
    )
    realtime_priority: int | None = Field(
        None, ge=1, le=99, description="SCHED_FIFO priority the scan thread asks for; omit for none"
    )
    spin_us: int = Field(500, ge=0, le=5000, description="wait out the last part of each period spinning")

    @property
    def period_us(self) -> int:
        return round(self.period_ms * 1000)

    @model_validator(mode="after")
    def _whole_us(self) -> ScanSection:
        if abs(self.period_ms * 1000 - round(self.period_ms * 1000)) > 1e-6:
            raise ValueError("period_ms must be a whole number of microseconds")
        return self


class Component(Params):
    type: str = Field(min_length=1)
    name: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.name or self.type


class TagDecl(TagFields):
    """A site-level tag (memory or shared) that no component declares."""

    direction: Direction = Direction.MEMORY
    default: Any = None

    @model_validator(mode="after")
    def _default_fits(self) -> TagDecl:
        self.spec()  # a default of the wrong type, NaN or infinite is an error at its line, not at run
        return self

    def spec(self) -> TagSpec:
        spec = TagSpec(self.name, self.type, self.unit, self.direction, None, self.stale_after_s)
        return TagSpec(self.name, self.type, self.unit, self.direction, spec.coerce(self.default), self.stale_after_s)


class HardwareWatchdog(Params):
    device: str = "/dev/watchdog"
    timeout_s: int = Field(10, ge=1, le=600)


class WatchdogSection(Params):
    systemd: bool = True
    hardware: HardwareWatchdog | None = None


class TaskProcessSection(Params):
    heartbeat_s: float = Field(
        2.0,
        ge=1.0,
        le=60,
        description="task process counts as hung after this silence "
        "(it sends a heartbeat every 0.5 s, so at least 1 s)",
    )
    startup_grace_s: float = Field(
        60.0,
        ge=5,
        le=600,
        description="a new task process counts as hung only after this long without its first word (imports "
        "and the site build: about 1 s of CPU, far more wall time on a loaded machine)",
    )
    restart_backoff_s: float = Field(1.0, gt=0, le=60)
    restart_backoff_max_s: float = Field(30.0, gt=0, le=600)


PROCESS_NAME = r"^[a-z][a-z0-9_]{0,23}$"  # becomes part of a tag name: runtime.tasks.<process>.alive


class TaskComponent(Component):
    """A task, and the supervised task process it runs in (docs/architecture.md#task-processes)."""

    process: str | None = Field(
        None,
        pattern=PROCESS_NAME,
        description="task process group (a-z, 0-9, _; at most 24); default by type: ocpp -> backoffice, "
        "localapi_* and hmi -> local, anything else -> planning",
    )

    @property
    def group(self) -> str:
        """The task process this task runs in: one hung integration never takes another group's down."""
        if self.process is not None:
            return self.process
        if self.type == "ocpp":
            return "backoffice"
        if self.type == "hmi" or self.type.startswith("localapi_"):
            return "local"
        return "planning"


def task_groups(tasks: list[TaskComponent]) -> dict[str, list[str]]:
    """Task process group -> the labels of its tasks, groups in order of their first task."""
    out: dict[str, list[str]] = {}
    for t in tasks:
        out.setdefault(t.group, []).append(t.label)
    return out


class EvseTemplate(Params):
    """The devices, programs and interlocks of one EVSE, written once with plain tag names."""

    devices: list[Component] = Field(default_factory=list)
    programs: list[Component] = Field(default_factory=list)
    safety: list[Component] = Field(default_factory=list)


class EvseEntry(Params):
    id: int = Field(ge=1, le=999, description="EVSE n: OCPP evseId n, tag prefix evse<n>.")
    params: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="component name -> params laid over the template's for this EVSE"
    )


class EvsesSection(Params):
    """A depot: EVSE n's components are the template's, run on the tags under ``evse<n>.`` (docs/depot.md)."""

    template: EvseTemplate
    each: list[EvseEntry] = Field(min_length=1, max_length=200)

    @model_validator(mode="after")
    def _distinct(self) -> EvsesSection:
        ids = [e.id for e in self.each]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"EVSE ids must be distinct: {dup} given twice")
        names = {c.label for sec in ("devices", "programs", "safety") for c in getattr(self.template, sec)}
        for e in self.each:
            unknown = sorted(set(e.params) - names)
            if unknown:
                raise ValueError(f"EVSE {e.id}: params for {unknown}, which the template does not name")
        return self

    @property
    def ids(self) -> list[int]:
        return [e.id for e in self.each]


class SiteConfig(Params):
    site: SiteSection
    scan: ScanSection
    devices: list[Component] = Field(default_factory=list)
    programs: list[Component] = Field(default_factory=list)
    safety: list[Component] = Field(description="interlocks in evaluation order; the last word on outputs")
    tasks: list[TaskComponent] = Field(default_factory=list)
    tags: list[TagDecl] = Field(default_factory=list)
    evses: EvsesSection | None = Field(None, description="a depot's EVSEs; omit for a site of one charger")
    plant: Component | None = Field(None, description="virtual plant started beside the runtime")
    watchdog: WatchdogSection = Field(default_factory=WatchdogSection)
    task_process: TaskProcessSection = Field(default_factory=TaskProcessSection)
    state_dir: str = Field("var", description="latched trips and other persisted state (relative: to the site file)")
    control_socket: str | None = Field(
        None, description="Unix socket for reset-trip/force; default state_dir/control.sock"
    )
    commissioning: bool = Field(False, description="forces allowed (control socket or operator HMI); never in service")
    commands: CommandsSection = Field(
        default_factory=CommandsSection, description="typed commands each task type may send to the scan"
    )


class LoadedSite:
    """A validated site file and the validated params of each component, with the source kept for errors."""

    def __init__(self, path: Path, doc: YamlDoc, config: SiteConfig):
        self.path = path
        self.doc = doc
        self.config = config
        self.base_dir = path.parent

    def resolve(self, rel: str) -> Path:
        p = Path(rel)
        return p if p.is_absolute() else self.base_dir / p

    @property
    def state_dir(self) -> Path:
        return self.resolve(self.config.state_dir)

    @property
    def control_socket(self) -> Path:
        """Where the runtime listens for operator commands (``control_socket``, or state_dir/control.sock)."""
        c = self.config.control_socket
        return self.resolve(c) if c else self.state_dir / "control.sock"


def load_site(path: str | Path) -> LoadedSite:
    """Load and validate a site file and every component's params. Raises ConfigError."""
    path = Path(path)
    doc = load_yaml(path)
    if not isinstance(doc.data, dict):
        raise ConfigError([doc.issue((), "a site file is a mapping with site:, scan:, devices:, ...")])
    config = validate(SiteConfig, doc.data, doc)
    site = LoadedSite(path, doc, config)
    check_components(site)
    return site


def _unique(doc: YamlDoc, section: str, comps: list[Component], issues: list[ConfigIssue]) -> None:
    seen: dict[str, int] = {}
    for i, c in enumerate(comps):
        if c.label in seen:
            issues.append(
                doc.issue((section, i, "name"), f"duplicate name {c.label!r} (also {section}[{seen[c.label]}])")
            )
        seen[c.label] = i


def component_params(doc: YamlDoc, section: str, i: int, comp: Component, registry: Mapping[str, Any]) -> Params:
    cls = registry.get(comp.type)
    if cls is None:
        known = ", ".join(sorted(registry)) or "none"
        raise ConfigError([doc.issue((section, i, "type"), f"unknown {section} type {comp.type!r} (known: {known})")])
    return validate(cls.Params, comp.params, doc, (section, i, "params"))


def components(config: SiteConfig, section: str) -> list[Component]:
    """The entries of one component section (``devices``, ``programs``, ``safety``, ``tasks``)."""
    entries: list[Component] = getattr(config, section)
    return entries


@dataclass(frozen=True)
class EvseInstance:
    """One template component of one EVSE, with that EVSE's params (overrides laid over, ``${id}`` set)."""

    evse: int
    section: str
    index: int  # in the template's section
    comp: Component
    params: Params

    @property
    def where(self) -> tuple[str, ...]:
        return ("evses", "template", self.section, self.index)  # type: ignore[return-value]


def evse_instances(site: LoadedSite, issues: list[ConfigIssue]) -> list[EvseInstance]:
    """Every EVSE's components, validated against their types; problems are added to ``issues`` (once
    each: a template error is the same for every EVSE)."""
    from runtime.evses import merge, prefix_device_params, prefix_of, substitute

    ev = site.config.evses
    if ev is None:
        return []
    doc = site.doc
    out: list[EvseInstance] = []
    seen: set[ConfigIssue] = set()

    def note(issue: ConfigIssue) -> None:
        if issue not in seen:
            seen.add(issue)
            issues.append(issue)

    for reg in SECTIONS:
        if reg.section == "tasks":
            continue
        comps: list[Component] = getattr(ev.template, reg.section)
        local: list[ConfigIssue] = []
        _unique(doc, reg.section, comps, local)
        for issue in local:
            note(doc.issue(("evses", "template", reg.section), issue.message))
        for j, comp in enumerate(comps):
            where = ("evses", "template", reg.section, j)
            cls = reg.get(comp.type)
            if cls is None:
                known = ", ".join(sorted(reg)) or "none"
                note(doc.issue((*where, "type"), f"unknown {reg.section} type {comp.type!r} (known: {known})"))
                continue
            for e in ev.each:
                data = substitute(merge(comp.params, e.params.get(comp.label, {})), e.id)
                try:
                    if reg.section == "devices":
                        data = prefix_device_params(data, prefix_of(e.id))
                except ValueError as exc:
                    note(doc.issue(where, str(exc)))
                    continue
                try:
                    params = validate(cls.Params, data, doc, (*where, "params"))
                except ConfigError as exc:
                    for issue in exc.issues:
                        note(issue)
                    continue
                out.append(EvseInstance(e.id, reg.section, j, comp, params))
    return out


def with_evses(cfg: SiteConfig, comp: Component, registry: Mapping[str, Any]) -> Component:
    """A site component whose params have an ``evses`` list (the allocator, the site interlock) serves every
    EVSE of the site unless it names them itself."""
    cls = registry.get(comp.type)
    if cfg.evses is None or cls is None or "evses" not in cls.Params.model_fields or "evses" in comp.params:
        return comp
    return comp.model_copy(update={"params": {**comp.params, "evses": cfg.evses.ids}})


def check_components(site: LoadedSite) -> dict[tuple[str, int], Params]:
    """Validate every component's params against its registered type; collect all errors at once."""
    doc, cfg = site.doc, site.config
    issues: list[ConfigIssue] = []
    out: dict[tuple[str, int], Params] = {}
    for reg in SECTIONS:
        comps = components(cfg, reg.section)
        _unique(doc, reg.section, comps, issues)
        for i, comp in enumerate(comps):
            try:
                out[(reg.section, i)] = component_params(doc, reg.section, i, with_evses(cfg, comp, reg), reg)
            except ConfigError as exc:
                issues.extend(exc.issues)
    for source in cfg.commands.allow:
        if source not in TASKS:
            known = ", ".join(sorted(TASKS)) or "none"
            issues.append(doc.issue(("commands", "allow", source), f"unknown task type {source!r} (known: {known})"))
    evse_instances(site, issues)
    if not cfg.safety:
        issues.append(doc.issue(("safety",), "a site needs at least one interlock: safety has the last word"))
    if issues:
        raise ConfigError(issues)
    return out
