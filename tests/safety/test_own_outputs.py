"""The interlock writes its own outputs only when the output image holds something else
(an unchanged value costs no write). The image, not what the interlock wrote last, is what it compares
against: a force on one of its outputs, written before the interlocks run, must still be overwritten on
every cycle by what safety decides, although safety's own value has not changed."""

from __future__ import annotations

from typing import Any

import pytest

from tests.safety.rig import Rig

OWN = {
    "safety.trip": "forced trip",
    "safety.reason": "forced reason",
    "safety.cessation": True,
    "safety.external_ok": False,
    "safety.der_overlay": '{"x": 1}',
    "safety.der_freq_droop": '{"y": 2}',
    "safety.limit_charge": 1.0,
    "safety.limit_discharge": 2.0,
}


@pytest.mark.parametrize("request_w", [-5000.0, 0.0, 5000.0])
@pytest.mark.parametrize(("tag", "forced"), sorted(OWN.items()))
def test_a_forced_own_output_is_overwritten_every_cycle(tag: str, forced: Any, request_w: float) -> None:
    rig = Rig()
    rig.req.setpoint = request_w
    rig.settle()
    decided = rig.out[tag]
    assert decided != forced and rig.out["safety.trip"] == ""
    rig.engine.force(tag, forced)
    for _ in range(3):  # the force is written again before the interlocks on every cycle
        rig.step()
        assert rig.out[tag] == decided
        assert rig.out["inverter.setpoint"] == request_w
    rig.engine.unforce(tag)
    rig.step()
    assert rig.out[tag] == decided
