"""The mode machine's guards read the authority's tags under the names of the params running now: an
online change of ``authority`` (its tag prefix, which no tag declaration pins) takes effect at the
boundary, in both directions, and no name of the old params lingers in a guard."""

from __future__ import annotations

import pytest

from programs.modes import ModeParams, Modes
from runtime.api import Command
from runtime.engine import RECONFIGURE
from runtime.tags import TagSpec, TagType
from tests.programs.conftest import GOOD, SITE, Rig

EMS = (TagSpec("ems.mode", TagType.STR), TagSpec("ems.setpoint_w", TagType.FLOAT, "W"))


def prefix(modes: Modes, authority: str | None) -> Command:
    params = {**modes.params.model_dump(mode="json"), "authority": authority}
    return Command(RECONFIGURE, {"revision": str(authority), "components": {"modes": params}, "by": "test"})


@pytest.mark.parametrize("setpoint_w", [-3000.0, 0.0, 3000.0])
def test_a_live_change_of_the_authority_prefix_moves_every_guard(setpoint_w: float) -> None:
    modes = Modes("modes", ModeParams(authority=None, reserve_tag=None), SITE)
    rig = Rig([modes], extra=EMS)
    row = {**GOOD, "ems.mode": "remote", "ems.setpoint_w": setpoint_w}
    for _ in range(3):
        rig.step(row)
    assert rig.value("mode.state") == "charge"  # no authority on this site: the plan's 5 kW
    rig.step(row, commands=(prefix(modes, "ems"),))  # applied at the boundary, before this scan's guards
    assert rig.engine.reconfigured[-1][1] is True
    assert rig.value("mode.state") == "remote"
    assert rig.transitions()[0]["data"]["trigger"] == "enter_remote"
    rig.step(row)
    assert rig.value("mode.state") == "remote"
    assert rig.value("mode.request") == setpoint_w
    rig.step(row, commands=(prefix(modes, None),))
    assert rig.value("mode.state") == "idle"
    assert rig.transitions()[0]["data"]["trigger"] == "authority_ended"
