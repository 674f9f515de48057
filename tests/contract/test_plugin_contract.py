"""One plug-in contract: devices, programs, interlocks and tasks register, declare and build one way."""

from __future__ import annotations

import inspect
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from runtime.api import ParamError, Params, Plugin, Program, TagName
from runtime.io.driver import Driver
from runtime.registry import DRIVERS, INTERLOCKS, PROGRAMS, SECTIONS, TASKS, Registry
from runtime.site import build_site
from runtime.tags import TAG_NAME
from runtime.tasks.base import Task
from runtime.yamlload import ConfigError
from tests.runtime.helpers import BASE_SITE, write_site

BASES: dict[str, type[Plugin]] = {"devices": Driver, "programs": Program, "safety": Program, "tasks": Task}
PLUGINS = [(reg.section, type_name, reg[type_name]) for reg in SECTIONS for type_name in reg]


def test_the_four_sections_are_one_registry_type() -> None:
    assert [reg.section for reg in SECTIONS] == ["devices", "programs", "safety", "tasks"]
    assert all(type(reg) is Registry for reg in (DRIVERS, PROGRAMS, INTERLOCKS, TASKS))
    assert {reg.section for reg in SECTIONS} == set(BASES)


@pytest.mark.parametrize("reg", SECTIONS, ids=[r.section for r in SECTIONS])
def test_a_second_class_under_a_taken_type_name_is_refused_in_every_section(reg: Registry) -> None:
    type_name = next(iter(reg))
    owner = reg[type_name]
    impostor = type("Impostor", (BASES[reg.section],), {})
    with pytest.raises(ValueError, match=f"{reg.kind} type {type_name!r} registered twice"):
        reg.register(type_name)(impostor)
    assert reg[type_name] is owner  # the first registration stands
    assert reg.register(type_name)(owner) is owner  # the same class again (a module re-imported) is no clash


@pytest.mark.parametrize(("section", "type_name", "cls"), PLUGINS, ids=[f"{s}:{t}" for s, t, _ in PLUGINS])
def test_every_plugin_has_one_constructor_and_one_declaration_method(
    section: str, type_name: str, cls: type[Plugin]
) -> None:
    assert issubclass(cls, BASES[section])
    assert list(inspect.signature(cls.__init__).parameters) == ["self", "name", "params", "site"]
    assert issubclass(cls.Params, Params)
    assert not hasattr(cls, "tag_specs"), "tags are declared by declare(), the one declaration method"


def _fields(model: type[BaseModel], prefix: str = "") -> typing.Iterator[tuple[str, typing.Any, typing.Any]]:
    for name, f in model.model_fields.items():
        yield prefix + name, f, f.default
        for t in (f.annotation, *typing.get_args(f.annotation)):
            for inner in (t, *typing.get_args(t)):
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    yield from _fields(inner, f"{prefix}{name}.")


def _is_tag_name(f: typing.Any) -> bool:
    """TagName itself, or inside ``| None`` / ``list[...]``."""
    validator = typing.get_args(TagName)[1]
    if validator in f.metadata:
        return True

    def inside(ann: typing.Any) -> bool:
        return validator in getattr(ann, "__metadata__", ()) or any(inside(a) for a in typing.get_args(ann))

    return inside(f.annotation)


def _holds_tag_names(name: str, default: typing.Any) -> bool:
    leaf = name.rsplit(".", 1)[-1]
    if leaf.endswith(("tag", "tags")):
        return True
    values = default if isinstance(default, (list, tuple)) else [default]
    return bool(values) and all(isinstance(v, str) and TAG_NAME.match(v) for v in values)


@pytest.mark.parametrize(("section", "type_name", "cls"), PLUGINS, ids=[f"{s}:{t}" for s, t, _ in PLUGINS])
def test_every_parameter_that_holds_a_tag_name_is_validated_as_one(
    section: str, type_name: str, cls: type[Plugin]
) -> None:
    plain = [
        name
        for name, f, default in _fields(cls.Params)
        if _holds_tag_names(name, default) and not _is_tag_name(f) and _is_str(f.annotation)
    ]
    assert not plain, f"{type_name}: plain str for tag names: {plain}"


def _is_str(ann: typing.Any) -> bool:
    return ann is str or any(_is_str(a) for a in typing.get_args(ann))


def test_a_bad_tag_name_in_params_is_refused_at_its_line(tmp_path: Path) -> None:
    text = BASE_SITE.format(period_ms=20).replace("source: grid.voltage", "source: Grid Voltage")
    site = write_site(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        build_site(site)
    line = next(i for i, s in enumerate(text.splitlines(), 1) if "Grid Voltage" in s)
    assert [(i.line, i.key) for i in err.value.issues] == [(line, "programs[1].params.source")]
    assert "device.quantity" in str(err.value)


class _FussyParams(Params):
    files: list[str] = Field(default_factory=list)


class _Fussy(Task):
    """A task that refuses, at construction, a file it does not like: the error names the key."""

    Params = _FussyParams
    params: _FussyParams

    def __init__(self, name: str, params: _FussyParams, site: typing.Any):
        super().__init__(name, params, site)
        for i, f in enumerate(params.files):
            if f.endswith(".bad"):
                raise ParamError(("files", i), f"{f}: not a price file")


def test_a_construction_error_names_the_parameter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(TASKS._classes, "test_fussy", _Fussy)
    extra = "tasks:\n  - type: test_fussy\n    params:\n      files:\n        - a.csv\n        - b.bad\n"
    site = write_site(tmp_path, extra=extra)
    with pytest.raises(ConfigError) as err:
        build_site(site)
    lines = site.read_text().splitlines()
    assert [(i.line, i.key, i.message) for i in err.value.issues] == [
        (lines.index("        - b.bad") + 1, "tasks[0].params.files[1]", "b.bad: not a price file")
    ]


def test_the_site_folder_reaches_every_component(tmp_path: Path) -> None:
    built = build_site(write_site(tmp_path))
    parts = [*built.drivers, *built.programs, *built.interlocks, *built.tasks]
    assert parts and all(p.site is built.info and p.base_dir == tmp_path for p in parts)
