"""``TagSpec.coerce`` takes a value already of the tag's own type at once (issue 15, session 6): the fast
paths must answer exactly as the full rule does, for every type and every kind of value, bad ones
included; and the output image a program writes through coerces and refuses as before."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from runtime.api import Outputs
from runtime.tags import Direction, TagSpec, TagType


def full_rule(spec: TagSpec, value: Any) -> Any:
    """The rule without fast paths: None stays None; a bool tag takes bools and 0/1; a number tag never
    a bool; otherwise the type's constructor, and a float must be finite."""
    if value is None:
        return None
    if spec.type is TagType.BOOL and not isinstance(value, bool):
        if value in (0, 1):
            return bool(value)
        raise ValueError("bool")
    if spec.type in (TagType.FLOAT, TagType.INT) and isinstance(value, bool):
        raise ValueError("bool for a number")
    conv: dict[TagType, Callable[[Any], Any]] = {
        TagType.FLOAT: float,
        TagType.INT: int,
        TagType.BOOL: bool,
        TagType.STR: str,
        TagType.JSON: lambda v: v,
    }
    try:
        out = conv[spec.type](value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueError("type") from exc
    if spec.type is TagType.FLOAT and not math.isfinite(out):
        raise ValueError("non-finite")
    return out


class Text(str):
    """A str subclass: not the tag's own type, so it takes the full rule (and comes out a plain str)."""


VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from(["1.5", "nan", "inf", "-0", "7", "true", ""]),
    st.builds(Text, st.text(max_size=4)),
    st.lists(st.integers(), max_size=2),
)


@given(st.sampled_from(list(TagType)), VALUES)
@example(TagType.FLOAT, float("nan"))
@example(TagType.FLOAT, float("-inf"))
@example(TagType.INT, True)
@example(TagType.BOOL, 1)
@example(TagType.STR, Text("x"))
def test_coerce_answers_as_the_full_rule(t: TagType, value: Any) -> None:
    spec = TagSpec("dev.x", t)
    try:
        want: Any = ("ok", full_rule(spec, value))
    except ValueError:
        want = ("error",)
    try:
        got: Any = ("ok", spec.coerce(value))
    except ValueError:
        got = ("error",)
    assert got[0] == want[0]
    if got[0] == "ok":
        assert type(got[1]) is type(want[1])
        assert got[1] == want[1] or (got[1] != got[1] and want[1] != want[1])


SPECS = {
    "inverter.setpoint": TagSpec("inverter.setpoint", TagType.FLOAT, "W", Direction.OUTPUT, 0.0),
    "inverter.enable": TagSpec("inverter.enable", TagType.BOOL, "", Direction.OUTPUT, False),
    "mode.state": TagSpec("mode.state", TagType.STR, "", Direction.MEMORY, "idle"),
}


@pytest.mark.parametrize("value", [-7000, 0, 7000, -7000.5, 0.0, 7000.5])
def test_a_write_coerces_both_signs_and_zero(value: float) -> None:
    values = {n: s.default for n, s in SPECS.items()}
    out = Outputs(SPECS, values, frozenset(SPECS))
    out["inverter.setpoint"] = value
    assert values["inverter.setpoint"] == float(value) and type(values["inverter.setpoint"]) is float
    assert out.dirty == {"inverter.setpoint"}


def test_a_bad_write_is_refused_and_changes_nothing() -> None:
    values = {n: s.default for n, s in SPECS.items()}
    out = Outputs(SPECS, values, frozenset(SPECS))
    with pytest.raises(KeyError, match=r"'ev\.soc' is not an output or memory tag of this site"):
        out["ev.soc"] = 0.5
    for bad in (float("nan"), float("inf"), True, "a lot"):
        with pytest.raises(ValueError):
            out["inverter.setpoint"] = bad
    with pytest.raises(ValueError):
        out["inverter.enable"] = 2
    assert values == {n: s.default for n, s in SPECS.items()} and out.dirty == set()
