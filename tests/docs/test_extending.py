"""The program example in docs/extending.md is real code: it imports, registers, validates its params and
runs in the engine with the behaviour the page describes. A guide whose example does not run teaches the
wrong contract."""

from __future__ import annotations

import re
from typing import Any

import pytest

from runtime import api
from runtime.api import SiteInfo
from runtime.engine import RUNTIME_TAGS, Engine, tag_table
from runtime.tags import Direction, Quality, TagSpec, TagUpdate
from tests.docs.refs import ROOT

SITE = SiteInfo("extending", 240.0, 60.0, 20_000)


def example_program() -> type[api.Program]:
    text = (ROOT / "docs" / "extending.md").read_text(encoding="utf-8")
    code = re.search(r"```python\n(.*?)```", text, re.S)
    assert code is not None, "docs/extending.md has a python example"
    src = code.group(1)
    deco = re.search(r"^@(\w+)\(\"(\w+)\"\)$", src, re.M)
    assert deco is not None and hasattr(api, deco.group(1)), "the example registers with a decorator of runtime.api"
    # Run it without touching the process-wide registry (the real one refuses a second registration).
    ns: dict[str, Any] = {"__name__": "extending_example"}
    exec(compile(src.replace(deco.group(0), ""), "docs/extending.md", "exec", dont_inherit=True), ns)
    cls = next(v for v in ns.values() if isinstance(v, type) and issubclass(v, api.Program) and v is not api.Program)
    return cls


@pytest.mark.parametrize(
    "plan,quality,expected",
    [
        (9000.0, Quality.GOOD, 7000.0),
        (-9000.0, Quality.GOOD, -7000.0),
        (0.0, Quality.GOOD, 0.0),
        (3000.0, Quality.BAD, 0.0),
        (-3000.0, Quality.STALE, 0.0),
    ],
)
def test_the_example_program_runs_as_described(plan: float, quality: Quality, expected: float) -> None:
    cls = example_program()
    prog = cls("cap", cls.Params(), SITE)
    assert prog.requires() == ["plan.power"]
    tags = tag_table(
        ("rt", RUNTIME_TAGS),
        ("plan", [TagSpec("plan.power", unit="W", direction=Direction.SHARED)]),
        (prog.name, prog.declare()),
    )
    eng = Engine(SITE, tags, [prog])
    res = eng.step(0, [TagUpdate("plan.power", plan, quality)])
    got = res.image["cap.request"].value
    assert got == expected and str(got) == str(expected)  # both signs, and zero is 0.0, never -0.0


def test_the_example_refuses_unknown_and_out_of_range_settings() -> None:
    cls = example_program()
    with pytest.raises(ValueError):
        cls.Params.model_validate({"limit_w": -1})
    with pytest.raises(ValueError):
        cls.Params.model_validate({"limt_w": 5000})
    with pytest.raises(ValueError):
        cls.Params.model_validate({"source": "Not A Tag"})
