"""Dispatch honours the EV's own power limits (``ev.max_charge_w`` / ``ev.max_discharge_w``): requests are
clamped to them in every mode that transfers power, both signs and zero; None is no EV limit.

The EV's limits are inputs of the rig here (on a site ``ev_source`` writes them as memory tags before
dispatch); the mode comes from the real mode machine, and in ``remote`` / ``frequency`` from a request the
scan's own gate passed, as in tests/programs/test_authority.py."""

from __future__ import annotations

import math
from typing import Any

import pytest

from programs.authority import Authority, AuthorityParams
from programs.dispatch import Dispatch, DispatchParams
from programs.modes import ModeParams, Modes
from runtime.api import Command
from runtime.commands import CONTROL, CommandsSection, Gate, Request
from runtime.tags import TagSpec, TagType
from tests.programs.conftest import GOOD, SITE, Rig

EV = (TagSpec("ev.max_charge_w", TagType.FLOAT, "W"), TagSpec("ev.max_discharge_w", TagType.FLOAT, "W"))
GRID = TagSpec("grid.frequency", TagType.FLOAT, "Hz")
EV_TAGS = {"ev_max_charge_tag": "ev.max_charge_w", "ev_max_discharge_tag": "ev.max_discharge_w"}
GATE = Gate({}, CommandsSection.model_validate({"allow": {}}), False, 20_000)


def ask(mode: str, **args: Any) -> Command:
    return GATE.check(Request("1", "mode_request", CONTROL, "operator", {"mode": mode, **args}), 0)


def rig(state: str | None = None, **params: Any) -> Rig:
    """Authority, modes, dispatch in site order; ``state`` puts the mode machine there directly."""
    m = Modes("modes", ModeParams(), SITE)
    if state is not None:
        m.machine.set_state(state, m.model)
    d = Dispatch("dispatch", DispatchParams(**({"ramp_w_per_s": 1e7, "plan_soc_tag": None} | EV_TAGS | params)), SITE)
    return Rig([Authority("authority", AuthorityParams(), SITE), m, d], extra=(*EV, GRID))


def sp(r: Rig) -> float:
    v = float(r.value("inverter.setpoint"))
    assert not (v == 0 and math.copysign(1.0, v) < 0), "setpoint is -0.0"
    return v


ROW = {**GOOD, "grid.frequency": 60.0}

# (state, plan W, EV charge limit, EV discharge limit, set point, dispatch.limit)
PLANNED = [
    ("charge", 9000.0, 6000.0, 3000.0, 6000.0, "ev"),
    ("charge", 5000.0, 6000.0, 0.0, 5000.0, ""),  # under the EV's limit; the other direction's is irrelevant
    ("charge", 9000.0, 0.0, 3000.0, 0.0, "ev"),  # the EV takes nothing now
    ("charge", 9000.0, None, None, 9000.0, ""),  # None: the EV gives no limit
    ("charge", 20000.0, 15000.0, None, 11000.0, "rating"),  # the EV allows more than the charger can
    ("discharge", -9000.0, 6000.0, 3000.0, -3000.0, "ev"),
    ("discharge", -2000.0, 0.0, 3000.0, -2000.0, ""),
    ("discharge", -9000.0, 6000.0, 0.0, 0.0, "ev"),
    ("discharge", -9000.0, None, None, -9000.0, ""),
    ("discharge", -9000.0, 6000.0, -4000.0, -4000.0, "ev"),  # a signed discharge limit is its magnitude
]


@pytest.mark.parametrize("row", PLANNED)
def test_plan_requests_are_clamped_to_the_ev_limits(row: tuple) -> None:
    state, plan, lc, ld, expected, limit = row
    r = rig(state)
    r.step({**ROW, "plan.power": plan, "ev.max_charge_w": lc, "ev.max_discharge_w": ld})
    assert r.value("mode.state") == state
    assert sp(r) == expected
    assert r.value("dispatch.limit") == limit
    assert r.value("inverter.enable") is True


# (remote set point W, EV charge limit, EV discharge limit, set point)
REMOTE = [
    (8000.0, 5000.0, 2000.0, 5000.0),
    (-8000.0, 5000.0, 2000.0, -2000.0),
    (0.0, 5000.0, 2000.0, 0.0),
    (8000.0, 0.0, 0.0, 0.0),
    (-8000.0, 0.0, 0.0, 0.0),
    (-8000.0, None, None, -8000.0),
]


@pytest.mark.parametrize("row", REMOTE)
def test_remote_requests_are_clamped_to_the_ev_limits(row: tuple) -> None:
    """The operator (or the back office) asks in remote: the EV's own limits still bound it."""
    w, lc, ld, expected = row
    r = rig()
    r.step({**ROW, "ev.max_charge_w": lc, "ev.max_discharge_w": ld}, commands=[ask("remote", setpoint_w=w)])
    assert r.value("mode.state") == "remote"
    assert sp(r) == expected
    assert r.value("dispatch.limit") == ("ev" if abs(expected) < abs(w) else "")


@pytest.mark.parametrize("hz, expected", [(59.0, 2500.0), (61.0, -1500.0), (60.0, 0.0)])
def test_frequency_response_is_clamped_to_the_ev_limits(hz: float, expected: float) -> None:
    r = rig()
    curve = [[59.0, 10000.0], [60.0, 0.0], [61.0, -10000.0]]
    ev = {"ev.max_charge_w": 2500.0, "ev.max_discharge_w": 1500.0}
    r.step({**ROW, **ev, "grid.frequency": hz}, commands=[ask("frequency", curve=curve)])
    assert r.value("mode.state") == "frequency"
    assert sp(r) == expected


def test_a_lower_ev_limit_acts_at_once_and_the_ramp_climbs_back() -> None:
    """Less power is never the unsafe direction: the EV lowering its limit takes effect in the cycle it
    arrives; raising it again climbs at dispatch's ramp (1 kW/s = 20 W per 20 ms cycle)."""
    r = rig("charge", ramp_w_per_s=1000.0)
    for _ in range(500):  # 10 s: ramped up to the plan
        r.step({**ROW, "plan.power": 6000.0, "ev.max_charge_w": 11000.0})
    assert sp(r) == 6000.0
    r.step({**ROW, "plan.power": 6000.0, "ev.max_charge_w": 1000.0})
    assert sp(r) == 1000.0 and r.value("dispatch.limit") == "ev"
    r.step({**ROW, "plan.power": 6000.0, "ev.max_charge_w": 11000.0})
    assert sp(r) == 1020.0 and r.value("dispatch.limit") == "ramp"


def test_without_ev_limit_tags_dispatch_is_unchanged() -> None:
    """A site without ``ev_source`` (the bundled one) configures no EV limit tags: nothing is read."""
    d = Dispatch("dispatch", DispatchParams(), SITE)
    assert not {"ev.max_charge_w", "ev.max_discharge_w"} & set(d.requires())
    with_tags = Dispatch("dispatch", DispatchParams(**EV_TAGS), SITE)
    assert {"ev.max_charge_w", "ev.max_discharge_w"} <= set(with_tags.requires())
