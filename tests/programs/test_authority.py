"""Mode authority cycle by cycle: who is in charge, for how long, and that the site follows (and stops).

Every command is made by the scan's own gate (``runtime.commands.Gate``) from a request as a task or the
control socket sends it, so the programs see exactly what a running site hands them. The programs run on
the shared cycle rig in site order (authority, modes, dispatch) on a simulated clock.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import pytest

from programs.authority import Authority, AuthorityParams
from programs.dispatch import Dispatch, DispatchParams
from programs.modes import ModeParams, Modes
from runtime.api import PROGRAMS, Command
from runtime.commands import CONTROL, CommandsSection, Gate, Refused, Request
from runtime.tags import US, Direction, TagSpec, TagType
from tests.programs.conftest import GOOD, SITE, Rig

# task name -> task type, as a site file's tasks: section gives them to the gate
TASKS = {"backoffice": "ocpp", "ems": "localapi_modbus", "mqtt": "localapi_mqtt", "hmi": "hmi", "planner": "planner"}
CLASS = {"backoffice": "ocpp", "ems": "localapi", "mqtt": "localapi", "hmi": "operator", CONTROL: "operator"}
GRID = TagSpec("grid.frequency", TagType.FLOAT, "Hz")
OCPP = (
    TagSpec("ocpp.accepted", TagType.BOOL, "", Direction.SHARED, stale_after_s=60),
    TagSpec("ocpp.operation_mode", TagType.STR, "", Direction.SHARED, stale_after_s=60),
)
BASE: dict[str, Any] = {
    **GOOD,
    "grid.frequency": 60.0,
    "ocpp.accepted": True,
    "ocpp.operation_mode": "ExternalSetpoint",
}
NO_OCPP = {k: v for k, v in BASE.items() if not k.startswith("ocpp.")}
_ids = itertools.count()


def gate() -> Gate:
    allow = {t: ["mode_request"] for t in set(TASKS.values())}
    return Gate(TASKS, CommandsSection.model_validate({"allow": allow, "max_per_minute": 6000}), False, 20_000)


GATE = gate()


def ask(source: str, mode: str, **args: Any) -> Command:
    """A mode_request as the gate passes it to the scan (source_type added)."""
    return GATE.check(Request(str(next(_ids)), "mode_request", source, f"{source}-user", {"mode": mode, **args}), 0)


def site(ocpp: bool = True, ramp: float = 1e7, **authority: Any) -> Rig:
    progs = [
        Authority("authority", AuthorityParams(**authority), SITE),
        Modes("modes", ModeParams(), SITE),
        Dispatch("dispatch", DispatchParams(ramp_w_per_s=ramp, plan_soc_tag=None), SITE),
    ]
    return Rig(progs, extra=(GRID, *(OCPP if ocpp else ())))


def sp(r: Rig) -> float:
    v = r.value("inverter.setpoint")
    assert not (v == 0 and math.copysign(1.0, v) < 0), "setpoint is -0.0"
    return float(v)


def run(r: Rig, values: dict[str, Any], *commands: Command, stale: Sequence[str] = ()) -> None:
    r.step(values, commands=commands, stale=stale)


def authority_events(r: Rig) -> list[str]:
    assert r.last is not None
    return [e.message for e in r.last.events if e.kind == "authority"]


# -- priority -----------------------------------------------------------------------------------------

# (higher, lower): every pair of ranks, the operator through both of its doors
PAIRS = [
    ("hmi", "backoffice"),
    (CONTROL, "backoffice"),
    ("hmi", "ems"),
    (CONTROL, "ems"),
    ("backoffice", "ems"),
]


@pytest.mark.parametrize("first_high", [True, False], ids=["high-first", "low-first"])
@pytest.mark.parametrize("pair", PAIRS, ids=[f"{a}>{b}" for a, b in PAIRS])
def test_priority_matrix(pair: tuple[str, str], first_high: bool) -> None:
    """The higher rank is in charge whatever the order of arrival; when it hands back, the lower one takes
    over in that same cycle, across zero (the signed state is kept, no pass through idle)."""
    high, low = pair
    r = site()
    asks = [ask(high, "remote", setpoint_w=4000.0), ask(low, "remote", setpoint_w=-6000.0)]
    for c in asks if first_high else asks[::-1]:
        run(r, BASE, c)
    assert r.value("authority.source") == CLASS[high]
    assert r.value("mode.state") == "remote" and sp(r) == 4000.0
    run(r, BASE, ask(high, "local"))
    assert r.value("authority.source") == CLASS[low]
    assert r.value("mode.state") == "remote" and sp(r) == -6000.0
    run(r, BASE, ask(low, "local"))
    assert r.value("authority.source") == "plan" and r.value("mode.state") == "idle" and sp(r) == 0.0
    run(r, BASE)  # the plan (5 kW charging) takes over on the next scan
    assert r.value("mode.state") == "charge" and sp(r) == 5000.0


def test_same_rank_latest_wins() -> None:
    r = site()
    run(r, BASE, ask("ems", "remote", setpoint_w=3000.0))
    run(r, BASE, ask("mqtt", "remote", setpoint_w=-2000.0))
    assert r.value("authority.requester") == "mqtt (mqtt-user)" and sp(r) == -2000.0
    run(r, BASE, ask("mqtt", "local"))
    assert r.value("authority.requester") == "ems (ems-user)" and sp(r) == 3000.0


def test_release_only_by_the_same_source() -> None:
    r = site()
    run(r, BASE, ask("hmi", "remote", setpoint_w=-1000.0))
    run(r, BASE, ask("backoffice", "local"))  # another source's hand-back releases nothing of the operator's
    assert r.value("authority.source") == "operator" and sp(r) == -1000.0
    assert any("backoffice" in m and "held nothing" in m for m in authority_events(r))
    run(r, BASE, ask("hmi", "local"))
    assert r.value("authority.source") == "plan" and r.value("mode.state") == "idle"
    assert r.transitions()[0]["data"]["trigger"] == "authority_ended"


def test_a_new_request_replaces_the_same_sources_old_one() -> None:
    r = site()
    run(r, BASE, ask("hmi", "remote", setpoint_w=-1000.0, expiry_s=10))
    run(r, BASE, ask("hmi", "remote", setpoint_w=2500.0, expiry_s=1))
    assert sp(r) == 2500.0 and len(r.value("authority.requests")) == 1


def test_a_source_type_without_rank_is_ignored() -> None:
    r = site()
    run(r, BASE, ask("planner", "remote", setpoint_w=-9000.0))
    assert r.value("authority.source") == "plan" and r.value("authority.requests") == []
    assert any("ignored" in m for m in authority_events(r))


# -- expiry ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("expiry_s", [2.0, None], ids=["expiry_s", "default-900s"])
def test_expiry_drops_the_request_with_an_event(expiry_s: float | None) -> None:
    r = site()
    args = {"expiry_s": expiry_s} if expiry_s else {}
    t0 = r.now_us
    run(r, BASE, ask("hmi", "remote", setpoint_w=-4000.0, **args))
    life_us = round((expiry_s or 900.0) * US)
    assert r.value("authority.expires_us") == t0 + life_us
    r.advance(t0 + life_us - r.now_us - SITE.period_us)  # the last cycle before the expiry
    run(r, BASE)
    assert r.value("mode.state") == "remote" and sp(r) == -4000.0
    run(r, BASE)  # the expiry cycle
    assert any(m.startswith("request expired") for m in authority_events(r))
    assert r.value("authority.source") == "plan" and r.value("authority.requests") == []
    assert r.value("mode.state") == "idle" and sp(r) == 0.0
    assert r.transitions()[0]["data"]["trigger"] == "authority_ended"


# -- delegation --------------------------------------------------------------------------------------

# (ocpp.operation_mode, stale, the local EMS in charge)
DELEGATION = [
    ("ExternalSetpoint", False, True),
    ("ExternalLimits", False, True),
    ("CentralSetpoint", False, False),
    ("ChargingOnly", False, False),
    ("", False, False),
    ("ExternalSetpoint", True, False),  # a delegation nobody maintains is none
]


@pytest.mark.parametrize("row", DELEGATION, ids=[f"{m or 'none'}{'-stale' if s else ''}" for m, s, _ in DELEGATION])
def test_local_ems_only_while_the_csms_delegates(row: tuple[str, bool, bool]) -> None:
    mode, stale, in_charge = row
    r = site()
    values = {**BASE, "ocpp.operation_mode": mode}
    run(r, values, ask("ems", "remote", setpoint_w=-3000.0), stale=("ocpp.operation_mode",) if stale else ())
    assert r.value("authority.source") == ("localapi" if in_charge else "plan")
    assert sp(r) == (-3000.0 if in_charge else 5000.0)  # else the plan's 5 kW
    if not in_charge:
        assert "not delegated" in r.value("authority.reason")


@pytest.mark.parametrize("local_control", [True, False])
def test_no_ocpp_task_local_control_decides(local_control: bool) -> None:
    r = site(ocpp=False, local_control=local_control)
    run(r, NO_OCPP, ask("ems", "remote", setpoint_w=2000.0))
    assert r.value("authority.source") == ("localapi" if local_control else "plan")
    if local_control:
        assert r.value("mode.state") == "remote" and sp(r) == 2000.0
    else:
        assert "local_control is off" in r.value("authority.reason")


def test_local_control_does_not_bypass_the_csms() -> None:
    """With an OCPP task on the site, local_control changes nothing: only the CSMS delegates."""
    r = site(local_control=True)
    run(r, {**BASE, "ocpp.operation_mode": "CentralSetpoint"}, ask("ems", "remote", setpoint_w=2000.0))
    assert r.value("authority.source") == "plan"


# -- the back-office link ----------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["false", "stale"])
def test_backoffice_link_lost_hands_down_and_back(how: str) -> None:
    r = site()
    run(r, BASE, ask("backoffice", "remote", setpoint_w=-5000.0))
    assert r.value("mode.state") == "remote" and sp(r) == -5000.0
    down = {**BASE, "ocpp.accepted": False} if how == "false" else BASE
    run(r, down, stale=("ocpp.accepted",) if how == "stale" else ())
    assert r.value("authority.source") == "plan" and "back-office link down" in r.value("authority.reason")
    assert r.value("mode.state") == "idle" and sp(r) == 0.0
    assert "back-office link down" in r.value("mode.reason")
    run(r, BASE)  # the link is back and the request has not expired: the CSMS is in charge again
    assert r.value("authority.source") == "ocpp" and r.value("mode.state") == "remote" and sp(r) == -5000.0


def test_operator_does_not_depend_on_the_backoffice_link() -> None:
    r = site()
    run(r, {**BASE, "ocpp.accepted": False}, ask("hmi", "remote", setpoint_w=-2000.0))
    assert r.value("authority.source") == "operator" and sp(r) == -2000.0


# -- signs, zero and the ramp -------------------------------------------------------------------------


def test_remote_crosses_zero_in_one_cycle_both_signs_and_zero() -> None:
    r = site()
    seen = []
    for w in (5000.0, -5000.0, 0.0, -7000.0, 3000.0):
        run(r, BASE, ask("hmi", "remote", setpoint_w=w))
        seen.append((r.value("mode.state"), sp(r), r.value("inverter.enable")))
    assert seen == [
        ("remote", 5000.0, True),
        ("remote", -5000.0, True),
        ("remote", 0.0, True),
        ("remote", -7000.0, True),
        ("remote", 3000.0, True),
    ]
    assert len(r.transitions()) == 0  # stayed in remote: only the first cycle moved the machine


def test_remote_ramps_frequency_does_not() -> None:
    """Dispatch's ramp (1 kW/s = 20 W a cycle here) applies in remote, never in frequency."""
    r = site(ramp=1000.0)
    run(r, BASE, ask("hmi", "remote", setpoint_w=-4000.0))
    assert sp(r) == -20.0 and r.value("dispatch.limit") == "ramp"
    r = site(ramp=1000.0)
    run(r, BASE, ask("hmi", "frequency", curve=[[59.0, 4000.0], [61.0, -4000.0]]))
    assert sp(r) == 0.0
    run(r, {**BASE, "grid.frequency": 60.5})
    assert sp(r) == -2000.0 and r.value("dispatch.limit") == ""


def test_limit_pct_scales_the_rating() -> None:
    r = site()
    run(r, BASE, ask("ems", "remote", setpoint_w=-9000.0, limit_pct=50))
    assert sp(r) == -5500.0 and r.value("dispatch.limit") == "limit_pct"


@pytest.mark.parametrize("w", [5000.0, -5000.0])
def test_soc_window_clamps_without_leaving_remote(w: float) -> None:
    r = site()
    soc = 0.95 if w > 0 else 0.15
    run(r, {**BASE, "ev.soc": soc}, ask("hmi", "remote", setpoint_w=w))
    assert r.value("mode.state") == "remote" and sp(r) == 0.0 and r.value("mode.clamp") != ""
    run(r, {**BASE, "ev.soc": soc}, ask("hmi", "remote", setpoint_w=-w))  # the other sign is open
    assert sp(r) == -w and r.value("mode.clamp") == ""


# -- frequency response ------------------------------------------------------------------------------

# A droop with a dead band: +-0.1 Hz around 60 Hz nothing, 10 kW at +-0.5 Hz; baseline 1 kW.
CURVE = [[59.5, 10000.0], [59.9, 0.0], [60.1, 0.0], [60.5, -10000.0]]
# (frequency, committed set point)
STEPS = [
    (60.0, 1000.0),
    (60.3, -4000.0),  # over-frequency: discharge (1000 - 5000)
    (59.7, 6000.0),  # under-frequency: charge harder, across zero in one cycle
    (60.05, 1000.0),  # dead band: the baseline
    (60.14, 0.0),  # 1000 - 1000: zero
    (61.0, -9000.0),  # beyond the last point: held at its end value
    (59.0, 11000.0),  # beyond the first point: 11 kW, the rating
]


def test_frequency_step_reaches_the_committed_setpoint_in_the_same_cycle() -> None:
    """The cycle that sees a frequency step commits the curve's answer: 0 cycles of delay, well within
    the one or two cycles a frequency service asks for; both signs, zero, across zero."""
    r = site()
    run(r, BASE, ask("backoffice", "frequency", curve=CURVE, baseline_w=1000.0))
    assert r.value("mode.state") == "frequency"
    for hz, expected in STEPS:
        run(r, {**BASE, "grid.frequency": hz})
        assert r.last is not None
        assert sp(r) == pytest.approx(expected, abs=1e-6), hz
        assert r.last.outputs["inverter.setpoint"] == pytest.approx(expected, abs=1e-6)  # what drivers are sent
        assert r.value("mode.state") == "frequency"
    run(r, {**BASE, "grid.frequency": 60.0}, ask("backoffice", "frequency", curve=CURVE, baseline_w=0.0))
    assert sp(r) == 0.0 and r.value("inverter.enable") is True  # exactly zero, permit held


def test_frequency_not_good_means_zero() -> None:
    r = site()
    run(r, BASE, ask("hmi", "frequency", curve=CURVE, baseline_w=1000.0))
    r.step(BASE, bad=("grid.frequency",))
    assert sp(r) == 0.0 and "not good: 0 W" in r.value("authority.reason")


# -- persistence -------------------------------------------------------------------------------------


def test_requests_survive_a_restart_with_the_time_they_had_left() -> None:
    r = site()
    run(r, BASE, ask("hmi", "remote", setpoint_w=-3000.0, expiry_s=600))
    assert r.last is not None and "authority" in r.last.persist
    writes = 0
    for _ in range(int(61 / SITE.period_us * US / 50)):  # 61 s in steps of 50 cycles
        r.advance(49 * SITE.period_us)
        run(r, BASE)
        writes += "authority" in r.last.persist
    assert writes == 1  # once a minute, not every cycle
    prog = r.engine.programs[0]
    state = prog.persist()
    assert state is not None and state["requests"][0]["left_s"] == 540  # 600 - 61 s, rounded up to the minute

    fresh = site()
    fresh.engine.restore({"authority": state})
    run(fresh, BASE)
    assert fresh.value("authority.source") == "operator" and sp(fresh) == -3000.0
    assert fresh.value("authority.expires_us") == 540 * US
    assert any("restored after a restart" in m for m in authority_events(fresh))


def test_a_request_restored_without_time_left_expires_at_once() -> None:
    fresh = site()
    prog = fresh.engine.programs[0]
    prog.restore({"requests": [{**_persisted(), "left_s": 0}]})
    run(fresh, BASE)
    assert fresh.value("authority.source") == "plan"
    assert any(m.startswith("request expired") for m in authority_events(fresh))


def test_an_unreadable_persisted_request_is_dropped_with_an_event() -> None:
    fresh = site()
    good, bad = _persisted(), {**_persisted(), "source": "ems", "mode": "turbo"}
    fresh.engine.programs[0].restore({"requests": [bad, {"source": "x"}, good]})
    run(fresh, BASE)
    assert fresh.value("authority.source") == "operator" and sp(fresh) == -3000.0
    assert any("unreadable, dropped" in m and "turbo" in m for m in authority_events(fresh))


def test_nothing_persisted_without_live_requests() -> None:
    """No entry in the state file then: a site that later drops the program has nothing to clear."""
    r = site()
    run(r, BASE, ask("hmi", "remote", setpoint_w=1000.0))
    run(r, BASE, ask("hmi", "local"))
    assert r.last is not None and r.last.persist == {"authority": None}


def _persisted() -> dict[str, Any]:
    r = site()
    run(r, BASE, ask("hmi", "remote", setpoint_w=-3000.0))
    state = r.engine.programs[0].persist()
    assert state is not None
    return dict(state["requests"][0])


# -- the gate's checks of mode_request (runtime/commands.py) ------------------------------------------


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        ({"mode": "frequency"}, "mode frequency needs curve"),
        ({"mode": "frequency", "curve": [[60.0, 0.0]]}, "2-10"),
        ({"mode": "frequency", "curve": [[45.0 + i, 0.0] for i in range(11)]}, "2-10"),
        ({"mode": "frequency", "curve": [[60.0, 0.0], [60.0, 1.0]]}, "increase strictly"),
        ({"mode": "frequency", "curve": [[61.0, 0.0], [60.0, 1.0]]}, "increase strictly"),
        ({"mode": "frequency", "curve": [[44.9, 0.0], [60.0, 1.0]]}, "hz 44.9 outside"),
        ({"mode": "frequency", "curve": [[60.0, 0.0], [65.1, 1.0]]}, "hz 65.1 outside"),
        ({"mode": "frequency", "curve": [[60.0, float("nan")], [61.0, 1.0]]}, "w must be a finite"),
        ({"mode": "frequency", "curve": [[60.0, 2e6], [61.0, 1.0]]}, "w 2000000.0 outside"),
        ({"mode": "frequency", "curve": [[True, 0.0], [61.0, 1.0]]}, "hz must be a finite"),
        ({"mode": "frequency", "curve": [[60.0], [61.0, 1.0]]}, r"point 0 must be \[hz, w\]"),
        ({"mode": "frequency", "curve": "59,60"}, "curve must be a list"),
        ({"mode": "frequency", "curve": [[59.0, 0.0], [61.0, 1.0]], "baseline_w": math.inf}, "baseline_w"),
        ({"mode": "remote"}, "mode remote needs setpoint_w"),
        ({"mode": "remote", "setpoint_w": 1.0, "expiry_s": 86_401}, "expiry_s"),
    ],
)
def test_gate_refuses_bad_mode_requests(args: dict[str, Any], reason: str) -> None:
    with pytest.raises(Refused, match=reason):
        GATE.check(Request("1", "mode_request", "backoffice", "x", args), 0)


def test_gate_adds_the_source_type_and_lets_the_operator_ask() -> None:
    c = ask(CONTROL, "frequency", curve=[[59, -1], [61, 1]], baseline_w=0, expiry_s=30)
    assert c.args["source_type"] == "control" and c.args["curve"] == [[59.0, -1.0], [61.0, 1.0]]
    assert ask("hmi", "local").args["source_type"] == "hmi"
    assert ask("ems", "remote", setpoint_w=0).args["source_type"] == "localapi_modbus"


def test_registered() -> None:
    assert PROGRAMS["authority"] is Authority
