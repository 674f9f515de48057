"""Turn a validated site file into live objects: drivers, programs, interlocks, tasks, tag table, engine.

``run``, ``replay``, ``check``, the task process and the tests all build a site here, and ``run`` and
``check`` both add ``preflight`` (what run needs of the host), so a site that passes ``check`` is exactly
the site that runs. Every section is built the same way (``runtime.api.Plugin``). Problems found while
building (a tag declared twice, a tag a program needs that no device provides, a file that is not there)
are reported like schema errors: file, line, key.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from runtime.api import ParamError, Params, Plugin, Program, SiteInfo, site_files
from runtime.config import LoadedSite, check_components, components, evse_instances, load_site, task_groups
from runtime.engine import RUNTIME_TAGS, Engine
from runtime.evses import EvseComponent, prefix_of
from runtime.io.driver import Driver
from runtime.registry import SECTIONS
from runtime.tags import TagSpec, TagTable
from runtime.taskproc import group_alive_specs
from runtime.tasks.base import Task
from runtime.yamlload import ConfigError, ConfigIssue, Path_

MAX_SOCKET_PATH = 107  # bytes: sun_path is 108 bytes with the terminating NUL (unix(7))


@dataclass
class BuiltSite:
    loaded: LoadedSite
    info: SiteInfo
    tags: TagTable
    parts: dict[str, list[Any]] = field(default_factory=lambda: {reg.section: [] for reg in SECTIONS})
    speed: int = 1

    @property
    def drivers(self) -> list[Driver]:
        return cast(list[Driver], self.parts["devices"])

    @property
    def programs(self) -> list[Program]:
        return cast(list[Program], self.parts["programs"])

    @property
    def interlocks(self) -> list[Program]:
        return cast(list[Program], self.parts["safety"])

    @property
    def tasks(self) -> list[Task]:
        return cast(list[Task], self.parts["tasks"])

    def engine(self, *, age_inputs: bool = True) -> Engine:
        return Engine(self.info, self.tags, self.programs, self.interlocks, age_inputs=age_inputs, age_scale=self.speed)

    @property
    def path(self) -> Path:
        return self.loaded.path


def site_info(loaded: LoadedSite, speed: int = 1) -> SiteInfo:
    """``speed`` > 1 runs a simulated site faster than real time: each cycle covers ``speed`` periods."""
    c = loaded.config
    return SiteInfo(
        c.site.name,
        c.site.nominal_voltage,
        c.site.nominal_frequency,
        c.scan.period_us * speed,
        c.site.phases,
        loaded.base_dir,
        speed,
    )


def build_site(path_or_loaded: str | Path | LoadedSite, *, speed: int = 1) -> BuiltSite:
    """Validate a site and build every component, as ``run`` does before its first cycle, without
    starting a process or touching the network. Every problem found is collected into one ConfigError."""
    loaded = path_or_loaded if isinstance(path_or_loaded, LoadedSite) else load_site(path_or_loaded)
    params = check_components(loaded)
    cfg, doc = loaded.config, loaded.doc
    info = site_info(loaded, speed)
    built = BuiltSite(loaded, info, TagTable(), speed=speed)
    issues: list[ConfigIssue] = []

    def add(specs: Iterable[TagSpec], owner: str, where: Path_) -> None:
        for s in specs:
            try:
                built.tags.add(s, owner)
            except ValueError as exc:
                issues.append(doc.issue(where, str(exc)))

    add(RUNTIME_TAGS, "runtime", ())
    add(group_alive_specs(list(task_groups(cfg.tasks))), "runtime", ())  # runtime.tasks.<group>.alive
    for reg in SECTIONS:
        for i, comp in enumerate(components(cfg, reg.section)):
            where = (reg.section, i)
            issues += _file_issues(loaded, params[where], (*where, "params"))
            try:
                obj: Plugin = reg[comp.type](comp.label, params[where], info)
                specs = obj.declare()
            except ConfigError as exc:
                issues.extend(exc.issues)
                continue
            except ParamError as exc:
                issues.append(doc.issue((*where, "params", *exc.key), exc.message))
                continue
            except (ValueError, OSError) as exc:
                issues.append(doc.issue(where, str(exc)))
                continue
            built.parts[reg.section].append(obj)
            add(specs, f"{reg.section}[{i}] {comp.label!r}", where)
    _build_evses(built, loaded, info, add, issues)
    for j, decl in enumerate(cfg.tags):
        add([decl.spec()], f"tags[{j}]", ("tags", j))
    for reg in SECTIONS:
        for i, obj in enumerate(built.parts[reg.section]):
            if isinstance(obj, EvseComponent):
                continue  # checked below, once their names are bound to their EVSE
            for name in obj.requires():
                if name not in built.tags:
                    issues.append(
                        doc.issue(
                            (reg.section, i, "params"),
                            f"needs tag {name!r}, which no device, program or task provides",
                        )
                    )
    for part in (*built.programs, *built.interlocks):
        if isinstance(part, EvseComponent):
            part.bind(frozenset(n for n in built.tags.specs if n.startswith(part.prefix)))
    missing: dict[tuple[str, str], list[int]] = {}  # (component, plain tag) -> EVSEs: one line per cause
    for part in (*built.programs, *built.interlocks):
        if isinstance(part, EvseComponent):
            for plain, name in zip(part.inner.requires(), part.requires(), strict=True):
                if name not in built.tags:
                    missing.setdefault((part.inner.name, plain), []).append(part.evse)
    for (label, plain), evses in missing.items():
        more = f" and {len(evses) - 1} more" if len(evses) > 1 else ""
        named = f"as {prefix_of(evses[0])}{plain} for EVSE {evses[0]}{more}"
        issues.append(
            doc.issue(
                ("evses", "template"),
                f"{label} needs tag {plain!r} ({named}), which no device, program or task provides",
            )
        )
    issues += _plant_issues(loaded)
    sock = loaded.control_socket
    if len(bytes(sock)) > MAX_SOCKET_PATH:
        key = ("control_socket",) if cfg.control_socket else ("state_dir",)
        issues.append(doc.issue(key, f"control socket path {str(sock)!r} is longer than {MAX_SOCKET_PATH} bytes"))
    if issues:
        raise ConfigError(issues)
    return built


def _build_evses(
    built: BuiltSite,
    loaded: LoadedSite,
    info: SiteInfo,
    add: Callable[[Iterable[TagSpec], str, Path_], None],
    issues: list[ConfigIssue],
) -> None:
    """Each EVSE's devices, programs and interlocks from the template. Per-EVSE programs and interlocks run
    before the site's own (EVSE by EVSE, in template order), so a site program such as the allocator sees
    every EVSE's request of this cycle and a site interlock such as the connection limit has the last word."""
    doc = loaded.doc
    evse_parts: dict[str, list[Any]] = {reg.section: [] for reg in SECTIONS}
    for inst in evse_instances(loaded, issues):
        reg = next(r for r in SECTIONS if r.section == inst.section)
        where = inst.where
        issues.extend(_file_issues(loaded, inst.params, (*where, "params")))
        try:
            if inst.section == "devices":
                obj: Plugin = reg[inst.comp.type](prefix_of(inst.evse) + inst.comp.label, inst.params, info)
            else:
                obj = EvseComponent(reg[inst.comp.type](inst.comp.label, inst.params, info), inst.evse)
            specs = obj.declare()
        except ConfigError as exc:
            issues.extend(exc.issues)
            continue
        except ParamError as exc:
            issues.append(doc.issue((*where, "params", *exc.key), f"EVSE {inst.evse}: {exc.message}"))
            continue
        except (ValueError, OSError) as exc:
            issues.append(doc.issue(where, f"EVSE {inst.evse}: {exc}"))
            continue
        evse_parts[inst.section].append(obj)
        add(specs, f"EVSE {inst.evse} {inst.section} {inst.comp.label!r}", where)
    for section, objs in evse_parts.items():
        built.parts[section][:0] = objs


def _file_issues(loaded: LoadedSite, params: Params, where: Path_) -> list[ConfigIssue]:
    """Every ``SiteFile`` in a component's params must be there and readable when the site starts."""
    out = []
    for key, rel in site_files(params):
        path = loaded.resolve(rel)
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            out.append(loaded.doc.issue((*where, *key), f"cannot read {str(path)!r}: {exc.strerror or exc}"))
    return out


def _plant_issues(loaded: LoadedSite) -> list[ConfigIssue]:
    """The ``plant:`` section validates like every other (its own model, file:line: key)."""
    if loaded.config.plant is None:
        return []
    from runtime.sim.config import plant_params

    try:
        plant_params(loaded.path)
    except ConfigError as exc:
        return list(exc.issues)
    return []


def preflight(loaded: LoadedSite, *, plant: bool) -> None:
    """What ``run`` needs of this host before its first cycle, beyond the site build, checked without
    starting a process, touching the network or arming anything: the hardware watchdog device is there,
    and (``plant``) the virtual plant builds as its process will build it (maps, scenario)."""
    issues: list[ConfigIssue] = []
    hw = loaded.config.watchdog.hardware
    if hw is not None and not os.path.exists(hw.device):  # opening it would arm it: existence only
        issues.append(loaded.doc.issue(("watchdog", "hardware", "device"), f"no device {hw.device!r} on this host"))
    if plant and loaded.config.plant is not None:
        issues += _plant_build_issues(loaded)
    if issues:
        raise ConfigError(issues)


def _plant_build_issues(loaded: LoadedSite) -> list[ConfigIssue]:
    from runtime.sim.config import plant_params
    from runtime.sim.server import VirtualPlant

    params, base = plant_params(loaded.path)
    where: Path_ = ("plant", "params")
    issues = _file_issues(loaded, params, where)
    if issues:
        return issues
    try:
        VirtualPlant(params, base)
    except ConfigError as exc:
        return list(exc.issues)
    except ParamError as exc:
        return [loaded.doc.issue((*where, *exc.key), exc.message)]
    except (ValueError, OSError) as exc:
        return [loaded.doc.issue(("plant",), str(exc))]
    return []


def bundled_site() -> Path:
    """The simulated site that ``v2g-plc run`` runs without SITE."""
    return Path(__file__).parent / "sites" / "sim.yaml"
