"""Online change of the bundled programs (docs/online-change.md): thresholds and limits swap at one cycle
boundary through the engine's ``reconfigure`` command and the state the machine is in stays; a change
of a tag a program reads or writes is the site's tag set, which needs a restart."""

from __future__ import annotations

import pytest

from programs.dispatch import Dispatch, DispatchParams
from programs.modes import ModeParams, Modes
from runtime.api import Command, NotLive
from runtime.engine import RECONFIGURE
from tests.programs.conftest import GOOD, SITE, Rig


def change(components: dict[str, dict[str, object]]) -> Command:
    return Command(RECONFIGURE, {"revision": "r2", "components": components, "by": "test"})


@pytest.mark.parametrize("plan_w", [-6000.0, 0.0, 6000.0])
def test_a_live_limit_applies_at_the_boundary_and_the_mode_stays(plan_w: float) -> None:
    modes = Modes("modes", ModeParams(), SITE)
    dispatch = Dispatch("dispatch", DispatchParams(ramp_w_per_s=1e7, plan_soc_tag=None), SITE)
    rig = Rig([modes, dispatch])
    row = {**GOOD, "plan.power": plan_w}
    for _ in range(5):
        rig.step(row)
    state = rig.value("mode.state")
    assert state == {-6000.0: "discharge", 0.0: "idle", 6000.0: "charge"}[plan_w]
    before = rig.value("inverter.setpoint")
    assert before == plan_w
    limits = {**dispatch.params.model_dump(mode="json"), "max_charge_w": 4000.0, "max_discharge_w": 3000.0}
    res = rig.step(row, commands=(change({"dispatch": limits}),))
    assert rig.engine.reconfigured[-1][1] is True
    assert res.outputs.get("inverter.setpoint", before) == {-6000.0: -3000.0, 0.0: 0.0, 6000.0: 4000.0}[plan_w]
    assert rig.value("mode.state") == state  # the machine was not reset by the change


def test_a_mode_threshold_applies_live_and_a_tag_change_needs_a_restart() -> None:
    modes = Modes("modes", ModeParams(), SITE)
    rig = Rig([modes])
    for _ in range(3):
        rig.step({**GOOD, "ev.soc": 0.85})
    assert rig.value("mode.state") == "charge"
    lower = {**modes.params.model_dump(mode="json"), "soc_max": 0.80}
    rig.step({**GOOD, "ev.soc": 0.85}, commands=(change({"modes": lower}),))
    assert rig.engine.reconfigured[-1][1] is True
    rig.step({**GOOD, "ev.soc": 0.85})
    assert rig.value("mode.state") == "idle"  # full by the new ceiling
    with pytest.raises(NotLive, match="restart"):
        modes.reconfigure(ModeParams(soc_tag="ev.soc_other"))
    renamed = {**modes.params.model_dump(mode="json"), "soc_tag": "ev.soc_other"}
    rig.step({**GOOD, "ev.soc": 0.85}, commands=(change({"modes": renamed}),))
    ok, why = rig.engine.reconfigured[-1][1:]
    assert ok is False and "restart" in why and modes.params.soc_tag == "ev.soc"
