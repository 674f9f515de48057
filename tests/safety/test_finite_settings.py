"""Every numeric safety setting is finite and in a stated range (issue 14 item 8): NaN fails every
comparison and infinity passes a one-sided bound, and either would switch a protection off (an SNR
minimum of NaN never fires, an infinite divergence threshold never trips, an infinite rating limits
nothing). The fields are found by walking the model, so a new one cannot be forgotten."""

from __future__ import annotations

import copy
import math
import types
import typing
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from safety.settings import MAX_POWER_W, SafetyParams
from tests.safety.test_settings import FIFTY

BASE: dict[str, Any] = {"category": "III", "rated_charge_w": 11000.0, "rated_discharge_w": 11000.0}
REQUIRED: dict[type, dict[str, Any]] = {}  # required fields of list items, filled in below


def _leaves(model: type[BaseModel], path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], type]]:
    """(path, type) of every numeric field; a list of models contributes its item (index 0)."""
    for name, f in model.model_fields.items():
        ann = f.annotation
        args = [a for a in typing.get_args(ann) if a is not type(None)] if _is_union(ann) else [ann]
        for a in args:
            origin = typing.get_origin(a)
            if a in (float, int):
                yield (*path, name), a
            elif isinstance(a, type) and issubclass(a, BaseModel):
                yield from _leaves(a, (*path, name))
            elif origin is list and isinstance(typing.get_args(a)[0], type):
                item = typing.get_args(a)[0]
                if issubclass(item, BaseModel):
                    yield from _leaves(item, (*path, name, 0))


def _is_union(ann: Any) -> bool:
    return typing.get_origin(ann) in (typing.Union, types.UnionType)


LEAVES = list(_leaves(SafetyParams))


def _with(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {**BASE}
    node: Any = doc
    for i, key in enumerate(path[:-1]):
        nxt = path[i + 1]
        if isinstance(nxt, int):
            node[key] = [{"name": "x"}]  # ExternalLimit.name is required
            node = node[key]
        elif isinstance(key, int):
            node = node[key]
        else:
            node = node.setdefault(key, {})
    node[path[-1]] = value
    return doc


def test_the_walk_finds_the_settings() -> None:
    names = {".".join(map(str, p)) for p, _ in LEAVES}
    for expected in ("rated_charge_w", "comms.snr_min_db", "divergence.abs_w", "voltage.ov1.threshold"):
        assert expected in names
    assert len(LEAVES) > 40


@pytest.mark.parametrize("path", [p for p, _ in LEAVES], ids=lambda p: ".".join(map(str, p)))
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_values_are_rejected_naming_the_key(path: tuple[Any, ...], bad: float) -> None:
    with pytest.raises(ValidationError) as err:
        SafetyParams.model_validate(_with(path, bad))
    assert any(tuple(e["loc"][: len(path)]) == path or not e["loc"] for e in err.value.errors()), err.value


def _bounds(schema: dict[str, Any]) -> tuple[bool, bool]:
    opts = schema.get("anyOf", [schema])
    lo = all(("minimum" in o or "exclusiveMinimum" in o) for o in opts if o.get("type") in ("number", "integer"))
    hi = all(("maximum" in o or "exclusiveMaximum" in o) for o in opts if o.get("type") in ("number", "integer"))
    return lo, hi


def test_every_numeric_setting_states_its_range_in_the_schema() -> None:
    schema = SafetyParams.model_json_schema()
    defs = schema.get("$defs", {})
    missing = []

    def walk(s: dict[str, Any], where: str) -> None:
        for name, prop in s.get("properties", {}).items():
            ref = prop.get("$ref") or next((o["$ref"] for o in prop.get("anyOf", []) if "$ref" in o), None)
            items = prop.get("items", {}).get("$ref")
            if ref or items:
                walk(defs[(ref or items).split("/")[-1]], f"{where}{name}.")
                continue
            if "enum" in prop or "const" in prop:
                continue  # a choice among stated values (frequency_basis_hz: 50 or 60)
            if any(o.get("type") in ("number", "integer") for o in prop.get("anyOf", [prop])):
                lo, hi = _bounds(prop)
                if not (lo and hi):
                    missing.append(where + name)

    walk(schema, "")
    assert missing == [], f"numeric settings without both bounds: {missing}"


@pytest.mark.parametrize(
    "doc,what",
    [
        ({"rated_charge_w": MAX_POWER_W * 2}, "rated_charge_w"),
        ({"comms": {"snr_min_db": -5.0}}, "snr_min_db"),
        ({"divergence": {"abs_w": 20000.0}}, "not below the rating"),
        ({"phase_nominal_voltage": 5.0}, "phase_nominal_voltage"),
    ],
)
def test_out_of_range_values_are_rejected(doc: dict[str, Any], what: str) -> None:
    with pytest.raises(ValidationError, match=what):
        SafetyParams.model_validate({**BASE, **doc})


def test_a_50_hz_site_stays_inside_the_per_unit_envelope() -> None:
    fifty = copy.deepcopy(FIFTY)  # the 50 Hz site of tests/safety/test_settings.py
    SafetyParams.model_validate({**BASE, **fifty})
    fifty["frequency"]["of2"] = {"threshold": 58.0, "clearing_s": 0.1}  # 1.16 pu: beyond 66 Hz at 60 Hz
    with pytest.raises(ValidationError, match="per unit of 50 Hz"):
        SafetyParams.model_validate({**BASE, **fifty})
