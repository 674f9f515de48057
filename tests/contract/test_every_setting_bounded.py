"""Every number a site file can set is finite (``Params``) and in a stated range: both bounds, on every
component's settings, the virtual plant's included (issue 14 item 8). A new field without its range fails
here, naming the model and the field."""

from __future__ import annotations

import types
import typing

import annotated_types as at
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from runtime import registry
from runtime.sim.server import VirtualPlantParams


def _leaves(ann: typing.Any) -> list[tuple[typing.Any, list[typing.Any]]]:
    """(type, constraints) of every leaf of an annotation: unions, containers and Annotated unwrapped."""
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is typing.Annotated:
        return [(t, [*meta, *args[1:]]) for t, meta in _leaves(args[0])]
    if origin in (typing.Union, types.UnionType, list, tuple, dict):
        return [leaf for a in args if a is not Ellipsis for leaf in _leaves(a)]
    return [(ann, [])]


def _bounded(meta: list[typing.Any]) -> bool:
    flat = [m for x in meta for m in (x.metadata if isinstance(x, FieldInfo) else [x])]
    return any(isinstance(m, at.Ge | at.Gt) for m in flat) and any(isinstance(m, at.Le | at.Lt) for m in flat)


def _unbounded(model: type[BaseModel], seen: set[type]) -> list[str]:
    if model in seen:
        return []
    seen.add(model)
    out = []
    for name, f in model.model_fields.items():
        for t, meta in _leaves(f.annotation):
            if isinstance(t, type) and issubclass(t, BaseModel):
                out += _unbounded(t, seen)
            elif t in (int, float) and not _bounded([*f.metadata, *meta]):
                out.append(f"{model.__module__}.{model.__qualname__}.{name}")
    return out


def test_every_numeric_setting_of_every_component_states_its_range() -> None:
    seen: set[type] = set()
    missing = _unbounded(VirtualPlantParams, seen)
    for section in registry.SECTIONS:
        for type_name in section:
            missing += _unbounded(section[type_name].Params, seen)
    assert len(seen) > 30  # the walk reached the components' nested models
    assert not missing, f"numeric settings without both bounds: {sorted(set(missing))}"
