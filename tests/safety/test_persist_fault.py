"""A latched state change that is not durable on disk holds the site safe (issue 14 item 3, safety side):
``runtime.persist_fault`` true trips ``persist_fault`` (set point 0, permit withdrawn); once the state is
written the trip clears by itself and power comes back along the ramp, without the grid delay."""

from __future__ import annotations

import pytest

from runtime.api import SiteInfo
from tests.safety.rig import PERSIST, Memory, Rig


def _rig(request_w: float) -> tuple[Rig, Memory]:
    mem = Memory(SiteInfo("rig", 240.0, 60, 20_000, 1), {PERSIST: False})
    rig = Rig(programs=[mem])
    rig.req.setpoint = request_w
    rig.settle()
    return rig, mem


@pytest.mark.parametrize("request_w", [-6000.0, 0.0, 6000.0])
def test_unsaved_latched_state_trips_and_clears_by_itself(request_w: float) -> None:
    rig, _mem = _rig(request_w)
    assert rig.out["safety.trip"] == "" and rig.out["inverter.setpoint"] == request_w
    rig.set(runtime__persist_fault=True)  # the runner feeds it every cycle, an input
    res = rig.step()
    assert res.outputs["safety.trip"] == "persist_fault" and PERSIST in res.outputs["safety.reason"]
    assert res.outputs["inverter.setpoint"] == 0.0 and res.outputs["inverter.enable"] is False
    rig.run(30.0, step_s=1.0)
    assert rig.out["safety.trip"] == "persist_fault" and rig.out["inverter.enable"] is False
    rig.set(runtime__persist_fault=False)
    rig.run(2.0)
    assert rig.out["safety.trip"] == ""
    # along the recovery ramp in both directions, no 300 s enter-service delay
    assert abs(rig.out["inverter.setpoint"]) < abs(request_w) or request_w == 0.0
    assert rig.out["inverter.enable"] is True
    rig.run(300.0, step_s=1.0)
    assert rig.out["inverter.setpoint"] == request_w
    kinds = [(e.kind, e.data.get("code")) for e in rig.event_log if e.data.get("code") == "persist_fault"]
    assert kinds == [("trip", "persist_fault"), ("reset", "persist_fault")]


def test_a_site_without_the_tag_runs_without_the_cause() -> None:
    """Before the runtime declares it (or on a replay of an older recording): no trip, no error."""
    rig = Rig()
    assert PERSIST not in rig.tags or rig.tags[PERSIST].default in (False, None)
    rig.req.setpoint = -3000.0
    rig.settle()
    assert rig.out["safety.trip"] == "" and rig.out["inverter.setpoint"] == -3000.0
