"""Turn a validated site file into live objects: drivers, programs, interlocks, tasks, tag table, engine.

``run``, ``replay``, ``check`` and the tests all build a site here, so a site that passes ``check`` is
exactly the site that runs. Problems found while building (a tag declared twice, a tag a program needs
that no device provides) are reported like schema errors: file, line, key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from runtime import registry
from runtime.api import Program, SiteInfo
from runtime.config import LoadedSite, check_components, load_site
from runtime.engine import RUNTIME_TAGS, Engine
from runtime.io.driver import Driver
from runtime.tags import TagTable
from runtime.tasks.base import Task
from runtime.yamlload import ConfigError, ConfigIssue


@dataclass
class BuiltSite:
    loaded: LoadedSite
    info: SiteInfo
    tags: TagTable
    drivers: list[Driver] = field(default_factory=list)
    programs: list[Program] = field(default_factory=list)
    interlocks: list[Program] = field(default_factory=list)
    tasks: list[Task] = field(default_factory=list)
    speed: int = 1

    def engine(self, *, age_inputs: bool = True) -> Engine:
        return Engine(self.info, self.tags, self.programs, self.interlocks, age_inputs=age_inputs, age_scale=self.speed)

    @property
    def path(self) -> Path:
        return self.loaded.path


def site_info(loaded: LoadedSite, speed: int = 1) -> SiteInfo:
    """``speed`` > 1 runs a simulated site faster than real time: each cycle covers ``speed`` periods."""
    c = loaded.config
    return SiteInfo(
        c.site.name, c.site.nominal_voltage, c.site.nominal_frequency, c.scan.period_us * speed, c.site.phases
    )


def build_site(path_or_loaded: str | Path | LoadedSite, *, speed: int = 1) -> BuiltSite:
    loaded = path_or_loaded if isinstance(path_or_loaded, LoadedSite) else load_site(path_or_loaded)
    params = check_components(loaded)
    cfg, doc = loaded.config, loaded.doc
    info = site_info(loaded, speed)
    built = BuiltSite(loaded, info, TagTable(), speed=speed)
    issues: list[ConfigIssue] = []

    def add(specs, owner: str, where: tuple) -> None:
        for s in specs:
            try:
                built.tags.add(s, owner)
            except ValueError as exc:
                issues.append(doc.issue(where, str(exc)))

    add(RUNTIME_TAGS, "runtime", ())
    sections = (
        ("devices", cfg.devices, registry.drivers(), built.drivers),
        ("programs", cfg.programs, registry.programs(), built.programs),
        ("safety", cfg.safety, registry.interlocks(), built.interlocks),
        ("tasks", cfg.tasks, registry.tasks(), built.tasks),
    )
    for section, comps, reg, out in sections:
        for i, comp in enumerate(comps):
            cls = reg[comp.type]
            try:
                args = (comp.label, params[(section, i)], info)
                obj = cls(*args) if section in ("programs", "safety") else cls(*args, loaded.base_dir)
                specs = obj.tag_specs() if isinstance(obj, Driver) else obj.declare()
            except ConfigError as exc:
                issues.extend(exc.issues)
                continue
            except (ValueError, OSError) as exc:
                issues.append(doc.issue((section, i), str(exc)))
                continue
            out.append(obj)
            add(specs, f"{section}[{i}] {comp.label!r}", (section, i))
    for j, decl in enumerate(cfg.tags):
        try:
            add([decl.spec()], f"tags[{j}]", ("tags", j))
        except ValueError as exc:
            issues.append(doc.issue(("tags", j), str(exc)))
    for section, objs in (("programs", built.programs), ("safety", built.interlocks)):
        for i, obj in enumerate(objs):
            for name in obj.requires():
                if name not in built.tags:
                    issues.append(
                        doc.issue(
                            (section, i, "params"), f"needs tag {name!r}, which no device, program or task provides"
                        )
                    )
    if cfg.plant is not None:
        from runtime.sim.config import plant_params

        try:
            plant_params(loaded.path)  # the virtual plant validates its own section (and its scenario)
        except ConfigError as exc:
            issues.extend(exc.issues)
    if issues:
        raise ConfigError(issues)
    return built


def bundled_site() -> Path:
    """The simulated site that ``v2g-plc run`` runs without SITE."""
    return Path(__file__).parent / "sites" / "sim.yaml"
