"""Encode/decode round trips of every data type and word order, sentinels, scale factors, sign."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.io.maps import DecodeError, IOMap, Point, decode, decode_raw, encode, encode_raw
from runtime.tags import TagType

INT_TYPES = {"int16": 16, "uint16": 16, "int32": 32, "uint32": 32, "int64": 64, "uint64": 64}


def one(point: dict[str, Any], **map_kw: Any) -> tuple[IOMap, Point]:
    m = IOMap.model_validate({"name": "t", "points": [point, {"id": "SF", "address": 900, "type": "int16"}], **map_kw})
    return m, m.points[0]


@pytest.mark.parametrize("word_order", ["big", "little"])
@pytest.mark.parametrize("t", sorted(INT_TYPES))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_int_round_trip(t: str, word_order: str, data: st.DataObject) -> None:
    bits = INT_TYPES[t]
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if t.startswith("int") else (0, (1 << bits) - 1)
    v = data.draw(st.integers(lo, hi))
    m, p = one({"tag": "x.y", "address": 0, "type": t, "word_order": word_order, "tag_type": "int"})
    regs = encode_raw(p, v, m.word_order)
    assert len(regs) == bits // 16 and all(0 <= r <= 0xFFFF for r in regs)
    assert decode_raw(p, regs, m.word_order) == v
    assert decode(m, p, regs, {}) == v


def test_word_order_is_applied() -> None:
    _, big = one({"tag": "x.y", "address": 0, "type": "uint32", "word_order": "big"})
    _, little = one({"tag": "x.y", "address": 0, "type": "uint32", "word_order": "little"})
    assert encode_raw(big, 0x12345678, "big") == [0x1234, 0x5678]
    assert encode_raw(little, 0x12345678, "big") == [0x5678, 0x1234]


@pytest.mark.parametrize("word_order", ["big", "little"])
@pytest.mark.parametrize("t", ["float32", "float64"])
@settings(max_examples=60, deadline=None)
@given(v=st.floats(allow_nan=False, allow_infinity=False, width=32))
def test_float_round_trip(t: str, word_order: str, v: float) -> None:
    m, p = one({"tag": "x.y", "address": 0, "type": t, "word_order": word_order})
    got = decode(m, p, encode(m, p, v, {}), {})
    assert got == pytest.approx(v, rel=1e-7, abs=0) or (v == 0 and got == 0)


def test_nan_float_is_bad() -> None:
    m, p = one({"tag": "x.y", "address": 0, "type": "float32"})
    with pytest.raises(DecodeError):
        decode(m, p, encode_raw(p, math.nan, "big"), {})


@settings(max_examples=60, deadline=None)
@given(s=st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=16))
def test_string_round_trip(s: str) -> None:
    m, p = one({"tag": "x.y", "address": 0, "type": "string", "size": 8})
    regs = encode(m, p, s, {})
    assert len(regs) == 8
    assert decode(m, p, regs, {}) == s.rstrip("\x00")


@settings(max_examples=60, deadline=None)
@given(field=st.integers(0, 0xFFFF))
def test_bitfield_and_bits(field: int) -> None:
    from runtime.io.maps import bits_of

    m, p = one({"id": "st", "address": 0, "type": "bitfield", "bits": {"a.b": 0, "a.c": 15}})
    assert decode(m, p, encode(m, p, field, {}), {}) == field
    assert bits_of(p, field) == {"a.b": bool(field & 1), "a.c": bool(field & 0x8000)}


def test_enum() -> None:
    m, p = one({"tag": "x.y", "address": 0, "type": "enum", "enum": {0: "off", 1: "on"}})
    assert decode(m, p, [1], {}) == "on"
    assert encode(m, p, "off", {}) == [0]
    with pytest.raises(DecodeError, match="enumeration"):
        decode(m, p, [7], {})
    with pytest.raises(ValueError):
        encode(m, p, "maybe", {})
    m, p = one({"tag": "x.y", "address": 0, "type": "enum", "tag_type": "bool"})
    assert decode(m, p, [1], {}) is True and encode(m, p, False, {}) == [0]


@pytest.mark.parametrize("w", [-7000.0, 0.0, 7000.0])
@pytest.mark.parametrize("sf", [-2, 0, 1])
def test_scale_factor_and_negation(w: float, sf: int) -> None:
    """SunSpec: value = raw x 10^SF; generation-positive registers are negated in the map."""
    m, p = one(
        {"tag": "inverter.power", "address": 0, "type": "int32", "sf": "SF", "negate": True}, sentinels="sunspec"
    )
    regs = encode(m, p, w, {"SF": sf})
    raw = decode_raw(p, regs, "big")
    assert raw == pytest.approx(-w / 10**sf)  # on the wire: generation positive
    assert decode(m, p, regs, {"SF": sf}) == pytest.approx(w)


def test_scale_offset() -> None:
    m, p = one({"tag": "t.c", "address": 0, "type": "int16", "scale": 0.1, "offset": -40.0})
    assert decode(m, p, [652], {}) == pytest.approx(25.2)
    assert encode(m, p, 25.2, {}) == [652]
    m, p = one({"tag": "ev.soc", "address": 0, "type": "uint16", "sf": "SF", "scale": 0.01})
    assert decode(m, p, [950], {"SF": -1}) == 0.95  # percent -> fraction, exact


@pytest.mark.parametrize(
    "t,raw",
    [
        ("int16", [0x8000]),
        ("uint16", [0xFFFF]),
        ("int32", [0x8000, 0]),
        ("uint32", [0xFFFF, 0xFFFF]),
        ("uint64", [0xFFFF] * 4),
    ],
)
def test_sunspec_not_implemented_is_bad(t: str, raw: list[int]) -> None:
    m, p = one({"tag": "x.y", "address": 0, "type": t}, sentinels="sunspec")
    with pytest.raises(DecodeError, match="not implemented"):
        decode(m, p, raw, {})
    m, p = one({"tag": "x.y", "address": 0, "type": t})  # without sentinels it is a number
    assert isinstance(decode(m, p, raw, {}), float)


def test_missing_or_ni_scale_factor_is_bad() -> None:
    m, p = one({"tag": "x.y", "address": 0, "type": "int16", "sf": "SF"}, sentinels="sunspec")
    with pytest.raises(DecodeError, match="scale factor"):
        decode(m, p, [100], {"SF": None})
    with pytest.raises(DecodeError, match="outside"):
        decode(m, p, [100], {"SF": 40})


def test_explicit_sentinels_and_acc_zero() -> None:
    m, p = one({"tag": "m.e", "address": 0, "type": "uint32", "not_implemented": [0]})
    with pytest.raises(DecodeError):
        decode(m, p, [0, 0], {})
    assert decode(m, p, [0, 5], {}) == 5.0


@pytest.mark.parametrize("v", [40000.0, -40000.0])
def test_out_of_range_write_is_refused(v: float) -> None:
    m, p = one({"tag": "inverter.setpoint", "direction": "output", "access": "rw", "address": 0, "type": "int16"})
    with pytest.raises(ValueError, match="does not fit"):
        encode(m, p, v, {})


def test_tag_types() -> None:
    _, p = one({"tag": "x.y", "address": 0, "type": "uint16", "tag_type": "bool"})
    assert p.value_tag_type is TagType.BOOL
    _, p = one({"tag": "x.y", "address": 0, "type": "string", "size": 2})
    assert p.value_tag_type is TagType.STR


@pytest.mark.parametrize("tag_type", ["float", "int", "bool"])
def test_overflowing_scaled_value_is_bad(tag_type: str) -> None:
    """Found by tests/faults/test_fuzz_decode.py: float64 near its maximum x scale 1000 is infinite (it
    was delivered as a good inf, and raised OverflowError for an int tag)."""
    m, p = one({"tag": "x.v", "address": 0, "type": "float64", "scale": 1e3, "tag_type": tag_type})
    with pytest.raises(DecodeError, match="overflows"):
        decode(m, p, [0x7FEF, 0xFFFF, 0xFFFF, 0xFFFF], {})


@pytest.mark.parametrize("t", ["int32", "float32"])
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, 1e308])
def test_non_finite_write_is_refused_not_raised(t: str, value: float) -> None:
    """A value that is (or scales to) infinity or NaN, or beyond float32, is a ValueError the driver
    reports, never an OverflowError that would end the unit's task."""
    m, p = one({"tag": "x.v", "address": 0, "type": t, "scale": 0.001, "direction": "output", "access": "rw"})
    with pytest.raises(ValueError):
        encode(m, p, value, {})
