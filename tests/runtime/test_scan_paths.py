"""The scan's cheaper paths (issue 15, session 7) answer exactly as the general ones: a write of a value
already of the tag's own type skips ``TagSpec.coerce`` and must store what it would have returned (and
refuse what it refuses); ``runtime.fault`` is written only when a fault is there to clear, and must still
read empty from the cycle after the fault on, in the committed image and in what changed."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from runtime.api import Cycle, Outputs, Program
from runtime.tags import Direction, TagSpec, TagType, TagUpdate
from tests.runtime.test_engine import SITE, P, make
from tests.runtime.test_tag_coerce import VALUES, Text, full_rule


@given(st.sampled_from(list(TagType)), VALUES)
@example(TagType.FLOAT, float("nan"))
@example(TagType.FLOAT, float("inf"))
@example(TagType.FLOAT, -0.0)
@example(TagType.INT, True)
@example(TagType.INT, 7)
@example(TagType.BOOL, 1)
@example(TagType.STR, Text("x"))
@example(TagType.JSON, [1, 2])
def test_a_write_stores_what_the_full_rule_answers(t: TagType, value: Any) -> None:
    spec = TagSpec("dev.x", t, direction=Direction.MEMORY)
    values: dict[str, Any] = {"dev.x": "before"}
    out = Outputs({"dev.x": spec}, values, frozenset({"dev.x"}))
    try:
        want: Any = ("ok", full_rule(spec, value))
    except ValueError:
        want = ("error",)
    try:
        out["dev.x"] = value
        got: Any = ("ok", values["dev.x"])
    except ValueError:
        got = ("error",)
    assert got[0] == want[0]
    if got[0] == "ok":
        assert type(got[1]) is type(want[1]) and got[1] == want[1]
        assert out.dirty == {"dev.x"}
    else:  # refused: nothing stored, nothing marked written
        assert values == {"dev.x": "before"} and out.dirty == set()


class FailsOnce(Program):
    """Raises in the cycles listed, writes its request in the others."""

    def __init__(self, fail_at: set[int], request_w: float):
        super().__init__("fails_once", Program.Params(), SITE)
        self.fail_at, self.request_w = fail_at, request_w

    def scan(self, cx: Cycle) -> None:
        if cx.k in self.fail_at:
            raise RuntimeError("boom")
        cx.out["inverter.setpoint"] = self.request_w


@pytest.mark.parametrize("request_w", [-7000.0, 0.0, 7000.0])
def test_a_fault_reads_empty_again_from_the_next_cycle_on(request_w: float) -> None:
    e = make([FailsOnce({1, 3}, request_w)])
    seen = []
    for k in range(6):
        res = e.step(k * P, [TagUpdate("a.x", 1.0)])
        seen.append((res.image["runtime.fault"].value, "runtime.fault" in res.changed))
    boom = "fails_once: RuntimeError: boom"
    assert seen == [("", True), (boom, True), ("", True), (boom, True), ("", True), ("", False)]
    assert res.outputs["inverter.setpoint"] == request_w
