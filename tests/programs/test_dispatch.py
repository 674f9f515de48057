"""Dispatch cycle by cycle: ramp, SoC correction, limits of both signs and zero, zero outside charge and
discharge. The mode comes from the ``modes`` program running before it, as on a site."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest

from programs.dispatch import Dispatch, DispatchParams
from programs.modes import ModeParams, Modes
from tests.programs.conftest import GOOD, SITE, Rig


def rig(state: str = "idle", **params: Any) -> Rig:
    m = Modes("modes", ModeParams(), SITE)
    m.machine.set_state(state, m.model)
    defaults: dict[str, Any] = {
        "plan_soc_tag": None,
    }
    return Rig([m, Dispatch("dispatch", DispatchParams(**(defaults | params)), SITE)])


def sp(r: Rig) -> float:
    v = r.value("inverter.setpoint")
    assert not (v == 0 and math.copysign(1.0, v) < 0), "setpoint is -0.0"
    return v


@pytest.mark.parametrize("power", [7000.0, -7000.0])
def test_ramp_both_signs(power: float) -> None:
    r = rig(ramp_w_per_s=1000.0)  # 20 W per 20 ms cycle
    got = []
    for _ in range(400):
        r.step({**GOOD, "plan.power": power})
        got.append(sp(r))
    sign = 1.0 if power > 0 else -1.0
    # cycle 0: idle -> charge/discharge, and dispatch already ramps from 0 in the same cycle
    assert got[:2] == [sign * 20.0, sign * 40.0]
    steps = [abs(b - a) for a, b in itertools.pairwise(got)]
    assert max(steps) <= 20.0 + 1e-9
    assert got[-1] == power
    assert all(sign * g >= 0 for g in got)


def test_ramp_down_is_immediate() -> None:
    r = rig("charge", ramp_w_per_s=1e6)
    r.step({**GOOD, "plan.power": 9000.0})
    assert sp(r) == 9000.0
    r.step({**GOOD, "plan.power": 2000.0})
    assert sp(r) == 2000.0
    assert r.value("dispatch.limit") == ""


@pytest.mark.parametrize(
    "state, power",
    [("idle", 5000.0), ("idle", -5000.0), ("idle", 0.0), ("safe_state", 5000.0), ("safe_state", -5000.0)],
)
def test_zero_outside_charge_and_discharge(state: str, power: float) -> None:
    r = rig(state)
    trip = "OV2" if state == "safe_state" else ""
    r.step({**GOOD, "plan.power": power, "safety.trip": trip, "ev.connected": state == "safe_state"})
    assert r.value("mode.state") == state
    assert sp(r) == 0.0 and r.value("inverter.enable") is False


@pytest.mark.parametrize(
    "soc, target, expected",
    [
        (0.50, 0.51, 5000.0 + 2000.0),  # behind plan: 0.01 * 60 kWh over 900 s = 2400 W, bounded to 2000
        (0.50, 0.5025, 5000.0 + 600.0),  # 150 Wh over 900 s = 600 W
        (0.50, 0.50, 5000.0),
        (0.50, 0.4975, 5000.0 - 600.0),  # ahead of plan
    ],
)
def test_soc_correction_charge(soc: float, target: float, expected: float) -> None:
    r = rig("charge", ramp_w_per_s=1e6, plan_soc_tag="plan.soc_target", soc_deadband=0.0)
    r.step({**GOOD, "ev.soc": soc, "plan.power": 5000.0, "plan.soc_target": target})
    assert sp(r) == pytest.approx(expected)
    assert r.value("dispatch.correction") == pytest.approx(expected - 5000.0)


@pytest.mark.parametrize(
    "soc, target, expected",
    [
        (0.50, 0.4975, -5000.0 - 600.0),  # discharge behind plan: discharge harder
        (0.50, 0.5025, -5000.0 + 600.0),
        (0.50, 0.60, 0.0),  # correction larger than the request: zero, never the other sign
    ],
)
def test_soc_correction_discharge(soc: float, target: float, expected: float) -> None:
    r = rig("discharge", ramp_w_per_s=1e6, plan_soc_tag="plan.soc_target", max_correction_w=1e5, soc_deadband=0.0)
    power = -5000.0 if expected != 0.0 else -1000.0
    r.step({**GOOD, "ev.soc": soc, "plan.power": power, "plan.soc_target": target})
    assert r.value("mode.state") == "discharge"
    assert sp(r) == pytest.approx(expected)


@pytest.mark.parametrize("target, expected", [(0.51, 5000.0), (0.49, 5000.0), (0.5125, 5600.0), (0.4875, 4400.0)])
def test_soc_correction_deadband(target: float, expected: float) -> None:
    """One whole percent (ISO 15118-2 SoC resolution) is ignored; beyond it only the excess corrects."""
    r = rig("charge", ramp_w_per_s=1e6, plan_soc_tag="plan.soc_target")
    r.step({**GOOD, "ev.soc": 0.5, "plan.power": 5000.0, "plan.soc_target": target})
    assert sp(r) == pytest.approx(expected)


@pytest.mark.parametrize(
    "power, soc, expected_corr",
    [
        (6000.0, 0.5, 0.0),  # on plan: the end target minus the planned energy to come is exactly now
        (6000.0, 0.495, 1200.0),  # 0.005 behind: 300 Wh over 900 s
        (-6000.0, 0.5, 0.0),
        (-6000.0, 0.505, -1200.0),  # discharge, 0.005 behind (SoC too high): discharge harder
    ],
)
def test_soc_correction_toward_interval_end(power: float, soc: float, expected_corr: float) -> None:
    """plan.soc_target is the SoC at plan.interval_end (the planner task's contract)."""
    state = "charge" if power > 0 else "discharge"
    r = rig(state, ramp_w_per_s=1e7, plan_soc_tag="plan.soc_target", soc_deadband=0.0, max_correction_w=1e5)
    rest_s = 600.0
    batt = power * 0.933 if power > 0 else power / 0.933
    soc_end = 0.5 + batt * rest_s / 3600.0 / 60_000.0
    r.step({**GOOD, "ev.soc": soc, "plan.power": power, "plan.soc_target": soc_end, "plan.interval_end": rest_s})
    assert r.value("dispatch.correction") == pytest.approx(expected_corr, abs=1e-6)
    assert sp(r) == pytest.approx(power + expected_corr)


def test_soc_correction_bad_target_ignored() -> None:
    r = rig("charge", ramp_w_per_s=1e6, plan_soc_tag="plan.soc_target")
    r.step({**GOOD, "plan.power": 5000.0}, bad=("plan.soc_target",))
    assert sp(r) == 5000.0 and r.value("dispatch.correction") == 0.0


# (state, plan, safety charge, safety discharge, expected, limit)
LIMITS = [
    ("charge", 9000.0, 4000.0, 11000.0, 4000.0, "safety"),
    ("charge", 9000.0, 0.0, 11000.0, 0.0, "safety"),
    ("charge", 9000.0, 11000.0, 0.0, 9000.0, ""),  # the other direction's limit is irrelevant
    ("charge", 20000.0, 11000.0, 11000.0, 11000.0, "rating"),
    ("discharge", -9000.0, 11000.0, 4000.0, -4000.0, "safety"),
    ("discharge", -9000.0, 11000.0, 0.0, 0.0, "safety"),
    ("discharge", -9000.0, 0.0, 11000.0, -9000.0, ""),
    ("discharge", -20000.0, 11000.0, 11000.0, -11000.0, "rating"),
]


@pytest.mark.parametrize("row", LIMITS)
def test_limits(row: tuple) -> None:
    state, plan, lc, ld, expected, limit = row
    r = rig(state, ramp_w_per_s=1e7)
    r.step({**GOOD, "plan.power": plan, "safety.limit_charge": lc, "safety.limit_discharge": ld})
    assert r.value("mode.state") == state
    assert sp(r) == expected
    assert r.value("dispatch.limit") == limit
    assert r.value("inverter.enable") is True


@pytest.mark.parametrize("state, plan", [("charge", 5000.0), ("discharge", -5000.0)])
def test_safety_limit_not_good_means_zero(state: str, plan: float) -> None:
    r = rig(state, ramp_w_per_s=1e7)
    r.step({**GOOD, "plan.power": plan}, bad=("safety.limit_charge", "safety.limit_discharge"))
    assert sp(r) == 0.0


def test_ramp_restarts_from_committed_setpoint() -> None:
    """After safety clamped the setpoint, the ramp climbs from what was really sent."""
    r = rig("charge", ramp_w_per_s=1000.0)
    r.step({**GOOD, "plan.power": 5000.0, "safety.limit_charge": 0.0})
    assert sp(r) == 0.0
    r.step({**GOOD, "plan.power": 5000.0})
    assert sp(r) == 20.0
    assert r.value("dispatch.limit") == "ramp"
