"""External limits (grid operator, back office) as the safety layer applies them: magnitudes in W >= 0,
in both directions and at zero; stale -> the last good charge limit (persisted across a restart) and 0 W
discharge, so departure charging goes on; the back-office link failing zeroes an external mode at once."""

from __future__ import annotations

import json
from typing import Any

import pytest

from runtime.tags import Direction, TagSpec, TagType
from tests.safety.rig import Rig

LIMITS = {"external": [{"name": "ocpp", "charge_tag": "ocpp.limit_charge", "discharge_tag": "ocpp.limit_discharge"}]}


def _ext() -> list[TagSpec]:
    return [
        TagSpec("ocpp.limit_charge", unit="W", direction=Direction.SHARED, stale_after_s=5.0),
        TagSpec("ocpp.limit_discharge", unit="W", direction=Direction.SHARED, stale_after_s=5.0),
    ]


def _rig(**kw: Any) -> Rig:
    rig = Rig(extra_inputs=_ext(), limits=LIMITS, **kw)
    rig.set(ocpp__limit_charge=4000.0, ocpp__limit_discharge=3000.0)
    return rig


def _stop_arriving(rig: Rig) -> None:
    rig.values.pop("ocpp.limit_charge")
    rig.values.pop("ocpp.limit_discharge")
    rig.run(6.0)  # stale after 5 s


# request W, charge limit, discharge limit -> committed set point
@pytest.mark.parametrize(
    ("request_w", "charge_w", "discharge_w", "expected"),
    [
        (6000.0, 4000.0, 3000.0, 4000.0),  # charge clamped
        (-6000.0, 4000.0, 3000.0, -3000.0),  # discharge clamped
        (2000.0, 4000.0, 3000.0, 2000.0),  # inside: untouched
        (-2000.0, 4000.0, 3000.0, -2000.0),
        (6000.0, 0.0, 3000.0, 0.0),  # zero limit: zero, never a flip of sign
        (-6000.0, 4000.0, 0.0, 0.0),
        (0.0, 4000.0, 3000.0, 0.0),
        (6000.0, -5.0, 3000.0, 0.0),  # a negative magnitude is the publisher's fault: 0 W
        (-6000.0, 4000.0, -5.0, 0.0),
    ],
)
def test_limits_both_directions_and_zero(
    request_w: float, charge_w: float, discharge_w: float, expected: float
) -> None:
    rig = _rig()
    rig.set(ocpp__limit_charge=charge_w, ocpp__limit_discharge=discharge_w)
    rig.req.setpoint = request_w
    rig.settle()
    sp = rig.out["inverter.setpoint"]
    assert sp == expected and str(sp) != "-0.0"
    assert rig.out["safety.limit_charge"] == (max(charge_w, 0.0) if charge_w >= 0 else 0.0)


@pytest.mark.parametrize("request_w", [6000.0, -6000.0, 0.0])
def test_stale_limits_keep_charging_at_the_last_limit_and_stop_discharge(request_w: float) -> None:
    rig = _rig()
    rig.req.setpoint = request_w
    rig.settle()
    assert rig.out["inverter.setpoint"] == {6000.0: 4000.0, -6000.0: -3000.0, 0.0: 0.0}[request_w]
    _stop_arriving(rig)
    assert rig.out["inverter.setpoint"] == {6000.0: 4000.0, -6000.0: 0.0, 0.0: 0.0}[request_w]
    assert rig.out["safety.limit_charge"] == 4000.0 and rig.out["safety.limit_discharge"] == 0.0
    assert "ocpp charge limit 4000 W (fallback)" in rig.out["safety.reason"]


def test_stale_before_any_limit_was_seen_is_zero_both_ways() -> None:
    rig = Rig(extra_inputs=_ext(), limits=LIMITS)
    rig.req.setpoint = 6000.0
    rig.settle()
    assert rig.out["inverter.setpoint"] == 0.0 and rig.out["safety.limit_charge"] == 0.0
    rig.set(ocpp__limit_charge=5000.0, ocpp__limit_discharge=0.0)
    rig.step()
    assert rig.out["inverter.setpoint"] == 5000.0  # a first good limit releases charging at once


@pytest.mark.parametrize("request_w", [6000.0, -6000.0])
def test_restart_with_a_stale_limit_keeps_the_persisted_charge_limit(request_w: float) -> None:
    rig = _rig()
    rig.set(ocpp__limit_charge=3500.0)
    rig.req.setpoint = request_w
    rig.settle()
    state = json.loads(json.dumps(rig.safety.persist()))  # as state.json holds it
    assert state["external_charge_w"] == {"ocpp": 3500.0}

    again = Rig(extra_inputs=_ext(), limits=LIMITS)  # the back office has not published since the restart
    again.engine.restore({"safety": state})
    again.req.setpoint = request_w
    again.settle()
    assert again.out["inverter.setpoint"] == (3500.0 if request_w > 0 else 0.0)
    again.set(ocpp__limit_charge=2000.0, ocpp__limit_discharge=1000.0)
    again.step()
    assert again.out["inverter.setpoint"] == (2000.0 if request_w > 0 else -1000.0)
    assert again.safety.persist()["external_charge_w"] == {"ocpp": 2000.0}


def test_a_changed_limit_is_persisted_and_an_unchanged_one_is_not_rewritten() -> None:
    rig = _rig()
    rig.settle()
    res = rig.step()
    assert "safety" not in res.persist  # the same limit again: nothing to write
    rig.set(ocpp__limit_charge=4500.0)
    res = rig.step()
    assert res.persist["safety"]["external_charge_w"] == {"ocpp": 4500.0}


# -- the back-office link --------------------------------------------------------------------------
def _link_rig() -> Rig:
    extra = [
        *_ext(),
        TagSpec("ocpp.rtt", unit="s", direction=Direction.SHARED, stale_after_s=5.0),
        TagSpec("ocpp.accepted", TagType.BOOL, direction=Direction.SHARED, stale_after_s=5.0),
        TagSpec("mode.state", TagType.STR, direction=Direction.INPUT),
    ]
    rig = Rig(
        extra_inputs=extra,
        limits=LIMITS,
        comms={"rtt_tag": "ocpp.rtt", "external_tags": ["ocpp.accepted"], "external_modes": ["remote", "frequency"]},
    )
    rig.set(ocpp__limit_charge=11000.0, ocpp__limit_discharge=11000.0, ocpp__rtt=0.05, ocpp__accepted=True)
    return rig


@pytest.mark.parametrize("request_w", [-4000.0, 4000.0, 0.0])
@pytest.mark.parametrize("failure", [{"ocpp__accepted": False}, {"ocpp__rtt": 0.6}])
def test_link_failure_zeroes_a_remote_mode_in_the_same_cycle(request_w: float, failure: dict[str, Any]) -> None:
    rig = _link_rig()
    rig.set(mode__state="remote")
    rig.req.setpoint = request_w
    rig.settle()
    assert rig.out["inverter.setpoint"] == request_w and rig.out["safety.external_ok"] is True
    rig.set(**failure)
    res = rig.step()
    assert res.outputs["inverter.setpoint"] == 0.0 and res.outputs["safety.external_ok"] is False
    assert "external commands not followed" in res.outputs["safety.reason"]
    rig.set(mode__state="charge" if request_w >= 0 else "discharge")  # the mode machine leaves remote
    assert rig.step().outputs["inverter.setpoint"] == request_w  # its own decision: followed
    rig.set(mode__state="remote", ocpp__accepted=True, ocpp__rtt=0.05)  # link back
    assert rig.step().outputs["inverter.setpoint"] == request_w
