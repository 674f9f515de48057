"""Forces never reach the runtime's own diagnostics, and take only values of the tag's own type."""

from __future__ import annotations

import pytest

from runtime.api import Command
from runtime.engine import RUNTIME_TAGS
from runtime.runner import apply_force
from tests.safety.rig import Rig


@pytest.mark.parametrize("request_w", [7000.0, -7000.0, 0.0])
def test_forcing_runtime_fault_cannot_clear_a_program_fault(request_w: float) -> None:
    rig = Rig()
    rig.settle()
    rig.req.setpoint = request_w
    rig.run(0.2)
    assert rig.out["inverter.enable"] is True and rig.out["inverter.setpoint"] == request_w
    rig.req.fail = True  # the program raises every cycle from now on
    rig.step()
    assert rig.last is not None and rig.last.image["safety.trip"].value == "program_fault"
    # The operator's way: refused at the engine, with a clear reason.
    with pytest.raises(ValueError, match="runtime diagnostic"):
        rig.engine.force("runtime.fault", "")
    # The replay's way: a recorded force command is refused the same way, and nothing is forced.
    assert apply_force(rig.engine, Command("force", {"tag": "runtime.fault", "value": ""})) is True
    assert rig.engine.forces == {}
    for res in rig.run(1.0):
        assert res.image["safety.trip"].value == "program_fault"
        assert res.outputs["inverter.setpoint"] == 0.0 and res.outputs["inverter.enable"] is False
        assert not res.image["runtime.fault"].forced and "boom" in res.image["runtime.fault"].value


@pytest.mark.parametrize("name", [s.name for s in RUNTIME_TAGS])
def test_no_runtime_diagnostic_is_forceable(name: str) -> None:
    rig = Rig()
    spec = rig.tags[name]
    value = {"float": 0.0, "int": 0, "bool": False, "str": ""}[spec.type.value]
    with pytest.raises(ValueError, match="cannot be forced"):
        rig.engine.force(name, value)


@pytest.mark.parametrize(
    ("tag", "value", "ok"),
    [
        ("inverter.setpoint", "7000", False),  # a number in a string
        ("inverter.setpoint", True, False),
        ("inverter.setpoint", 7000, True),
        ("inverter.setpoint", -7000.5, True),
        ("inverter.setpoint", float("nan"), False),
        ("inverter.enable", 1, False),
        ("inverter.enable", "true", False),
        ("inverter.enable", False, True),
        ("ev.soc", [0.5], False),
    ],
)
def test_forces_take_only_values_of_the_tags_type(tag: str, value: object, ok: bool) -> None:
    rig = Rig()
    if ok:
        rig.engine.force(tag, value)
        assert rig.engine.forces[tag] == value
    else:
        with pytest.raises(ValueError):
            rig.engine.force(tag, value)
        assert tag not in rig.engine.forces
