"""Fuzzing register decoding (hypothesis, bounded budget): random register words for every data type,
word order, scale factor and sentinel, through the codec and through the driver's decode path; random
garbage frames through the TCP client's receive path. Never an exception escapes; bad data turns tags
bad, never into a number that is not finite or not of the tag's type."""

from __future__ import annotations

import asyncio
import math
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from runtime.io.maps import TYPE_SIZE, DecodeError, IOMap, decode, shipped_maps
from runtime.io.modbus_common import NoAnswer
from runtime.tags import Quality, TagType
from tests.io.helpers import tcp_driver

BUDGET = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
WORD = st.integers(0, 0xFFFF)
SF = st.one_of(st.none(), st.integers(-32768, 32767))


@st.composite
def point_and_words(draw: st.DrawFn) -> tuple[IOMap, dict[str, int | None], list[int]]:
    """A one-point map of a random type, word order, scale, sentinel scheme and scale factor."""
    t = draw(st.sampled_from([t for t in TYPE_SIZE if t != "bool"]))
    point: dict[str, Any] = {"tag": "x.value", "address": 0, "type": t}
    if t in ("string", "bitfield", "enum"):
        point["size"] = draw(st.integers(1, 2)) if t != "string" else draw(st.integers(1, 8))
    if t == "enum" and draw(st.booleans()):
        point["enum"] = {i: f"s{i}" for i in draw(st.sets(st.integers(0, 5), min_size=1))}
    if t == "enum" and "enum" not in point:
        point["tag_type"] = draw(st.sampled_from(["int", "bool", "str"]))
    if t not in ("string", "bitfield", "enum"):
        point["word_order"] = draw(st.sampled_from(["big", "little"]))
        point["scale"] = draw(st.sampled_from([1.0, -1.0, 0.1, 1e-3, 1e3, 1e30]))
        point["offset"] = draw(st.sampled_from([0.0, -40.0, 1e300]))
        point["tag_type"] = draw(st.sampled_from(["float", "int", "bool"]))
        if draw(st.booleans()):
            point["sf"] = "SF"
    if draw(st.booleans()):
        point["not_implemented"] = draw(st.lists(st.integers(0, 0xFFFF), max_size=2))
    m = IOMap.model_validate(
        {
            "name": "fuzz",
            "sentinels": draw(st.sampled_from(["sunspec", "none"])),
            "points": [point, {"id": "SF", "address": 900, "type": "int16"}],
        }
    )
    n = m.points[0].count
    words = draw(st.lists(WORD, min_size=n, max_size=n) | st.lists(WORD, max_size=n + 2))
    return m, {"SF": draw(SF)}, words


def check_value(vt: TagType, value: Any) -> None:
    if vt is TagType.FLOAT:
        assert isinstance(value, float) and math.isfinite(value), value
    elif vt is TagType.INT:
        assert isinstance(value, int) and not isinstance(value, bool), value
    elif vt is TagType.BOOL:
        assert isinstance(value, bool), value
    else:
        assert isinstance(value, str), value


def _regression(tag_type: str) -> tuple[IOMap, dict[str, int | None], list[int]]:
    """Found by this fuzzer: float64 near its maximum x 1000 overflowed (a good inf; OverflowError as int)."""
    point = {"tag": "x.value", "address": 0, "type": "float64", "scale": 1e3, "tag_type": tag_type}
    m = IOMap.model_validate({"name": "fuzz", "points": [point, {"id": "SF", "address": 900, "type": "int16"}]})
    return m, {"SF": None}, [0x7FEF, 0xFFFF, 0xFFFF, 0xFFFF]


@BUDGET
@given(case=point_and_words())
@example(case=_regression("float"))
@example(case=_regression("int"))
def test_codec_never_raises_anything_but_decode_error(case: tuple[IOMap, dict[str, int | None], list[int]]) -> None:
    m, sf, words = case
    p = m.points[0]
    try:
        value = decode(m, p, words, sf)
    except DecodeError:
        return
    check_value(p.value_tag_type, value)


MAPS = [p for p in shipped_maps()]


@BUDGET
@given(data=st.data())
def test_driver_decode_path_turns_bad_data_bad(data: st.DataObject) -> None:
    """Every shipped map: random words (right or wrong length) for every point the driver reads, some
    requests failed; each tag delivered is good with a value of its type, or bad with None."""
    path = data.draw(st.sampled_from(MAPS), label="map")
    drv = tcp_driver(1, str(path))
    u = drv.units[0]
    specs = {s.name: s for s in drv.declare()}
    raw: dict[str, list[int]] = {}
    failed: dict[str, str] = {}
    for p in u.map.points:
        if data.draw(st.integers(0, 9)) == 0:
            failed[p.key] = "fuzz: no answer"
        else:
            n = p.count
            raw[p.key] = data.draw(st.lists(WORD, min_size=n, max_size=n) | st.lists(WORD, max_size=n + 1))
    out = drv._decode(u, raw, failed, 0, 0.0)
    for upd in out:
        spec = specs[upd.name]
        if upd.quality is Quality.BAD:
            assert upd.value is None
        else:
            check_value(spec.type, upd.value)
            assert spec.coerce(upd.value) == upd.value


FRAME = st.builds(
    lambda tid, pid, length_delta, unit, fc, body: (
        tid.to_bytes(2, "big")
        + pid.to_bytes(2, "big")
        + max(0, len(body) + 2 + length_delta).to_bytes(2, "big")
        + bytes([unit, fc])
        + body
    ),
    tid=st.sampled_from([7, 0, 8, 0xFFFF]),
    pid=st.sampled_from([0, 0, 0, 1]),
    length_delta=st.sampled_from([0, 0, 0, -1, 1, 300]),
    unit=st.sampled_from([1, 1, 2]),
    fc=st.sampled_from([3, 4, 16, 0x83, 0x90, 0x80, 1, 2, 43, 0]),
    body=st.binary(max_size=12) | st.builds(lambda n, b: bytes([n]) + b, st.integers(0, 255), st.binary(max_size=10)),
)


@BUDGET
@given(chunks=st.lists(FRAME | st.binary(min_size=1, max_size=40), min_size=1, max_size=4))
def test_garbage_frames_never_escape_the_client(chunks: list[bytes]) -> None:
    """A read (FC3, 2 registers, transaction id 7) answered by random frames and bytes: pymodbus's receive
    path behind the driver's framing screen raises nothing, and whatever answer it hands over is either
    valid for that read or refused by the driver's check (NoAnswer)."""

    async def feed() -> None:
        drv = tcp_driver(1, "site_meter_tcp")
        client = drv.make_client()
        ctx = client.ctx
        ctx.request_dev_id, ctx.request_transaction_id = 1, 7
        ctx.trace_packet(True, b"\x00\x07\x00\x00\x00\x06\x01\x03\x00\x00\x00\x02")
        ctx.response_future = asyncio.get_running_loop().create_future()
        for c in chunks:
            ctx.datagram_received(c, None)
        if ctx.response_future.done():
            rr = ctx.response_future.result()
            assert rr.transaction_id == 7
            try:
                code = drv._check_answer(rr, 3, 2)
            except NoAnswer:
                return
            assert code is not None or len(rr.registers) == 2

    asyncio.run(feed())


@BUDGET
@given(case=point_and_words(), value=st.floats() | st.integers(-(2**70), 2**70) | st.booleans() | st.text(max_size=4))
def test_encode_refuses_with_value_error_only(case: tuple[IOMap, dict[str, int | None], list[int]], value: Any) -> None:
    """A set point the register cannot hold is a ValueError (reported, the read-back then mismatches),
    never another exception that would end the unit's task; what encodes decodes without error."""
    from runtime.io.maps import encode

    m, sf, _ = case
    p = m.points[0]
    try:
        regs = encode(m, p, value, sf)
    except (ValueError, DecodeError):
        return
    assert len(regs) == p.count and all(0 <= r <= 0xFFFF for r in regs)
