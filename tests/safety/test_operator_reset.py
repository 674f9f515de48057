"""An operator reset is accepted only when the cause is provably gone (issue 14 item 13, safety side):
``reset-trip`` of ``power_divergence`` while the inverter is offline (its power bad, stale or forced), or
while it still diverges, leaves the trip latched and says why; a good measurement that agrees clears it."""

from __future__ import annotations

import pytest

from runtime.api import Command
from runtime.tags import Quality, TagUpdate
from tests.safety.rig import Rig

RESET = (Command("reset_trip"),)


def _tripped(request_w: float, measured_w: float) -> Rig:
    rig = Rig()
    rig.req.setpoint = request_w
    rig.settle()
    rig.follow = False
    rig.set(inverter__power=measured_w)
    rig.run(3.1)
    assert rig.out["safety.trip"] == "power_divergence"
    return rig


def _reset_with(rig: Rig, quality: Quality) -> None:
    """One reset command in a cycle where the inverter's power reads with ``quality``."""
    ups = [TagUpdate(n, v) for n, v in rig.values.items() if n != "inverter.power"]
    ups.append(TagUpdate("inverter.power", 0.0, quality))
    rig.last = rig.engine.step(rig.now_us, ups, RESET)
    rig.event_log.extend(rig.last.events)
    rig.now_us += rig.period_us


@pytest.mark.parametrize("request_w,measured_w", [(-5000.0, 5000.0), (5000.0, -5000.0), (0.0, 4000.0)])
@pytest.mark.parametrize("quality", [Quality.BAD, Quality.STALE])
def test_reset_refused_while_the_inverter_is_offline(request_w: float, measured_w: float, quality: Quality) -> None:
    rig = _tripped(request_w, measured_w)
    _reset_with(rig, quality)
    assert rig.out["safety.trip"] != "" and "power_divergence" in [
        e.data.get("code") for e in rig.event_log if e.kind == "warning" and "refused" in e.message
    ]
    assert rig.out["inverter.setpoint"] == 0.0 and rig.out["inverter.enable"] is False
    rig.set(inverter__power=0.0)  # back online and obeying
    rig.step()
    rig.step(RESET)
    assert rig.out["safety.trip"] == ""


@pytest.mark.parametrize("request_w,measured_w", [(-5000.0, 5000.0), (5000.0, -5000.0), (0.0, 4000.0)])
def test_reset_refused_while_still_diverging_or_forced(request_w: float, measured_w: float) -> None:
    rig = _tripped(request_w, measured_w)
    rig.step(RESET)  # still measuring power although the permit is withdrawn
    assert rig.out["safety.trip"] == "power_divergence"
    assert rig.out["inverter.setpoint"] == 0.0 and rig.out["inverter.enable"] is False
    assert any("reset of power_divergence refused: measured" in e.message for e in rig.event_log)
    rig.engine.force("inverter.power", 0.0)  # a force is no evidence that the device obeys
    rig.step(RESET)
    assert "power_divergence" in rig.safety.latches
    rig.engine.unforce("inverter.power")
    rig.set(inverter__power=0.0)
    rig.step()
    rig.step(RESET)
    assert rig.out["safety.trip"] == ""
