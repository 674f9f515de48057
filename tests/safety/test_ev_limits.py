"""The EV's own limits as the safety layer's last word (``ev_limits``), cycle by cycle with the real
``v2g_safety`` supervisor before it and the real ``secc_link`` after it, as a site lists them: both signs
and zero, no session, limits the EV does not give, a stale or forced SECC, and the ``remote`` and
``frequency`` states, where the back office is in charge and still cannot push the EV past its limits."""

from __future__ import annotations

from typing import Any

import pytest

from programs.authority import Authority, AuthorityParams
from programs.dispatch import Dispatch, DispatchParams
from programs.modes import ModeParams, Modes
from runtime.api import Command
from runtime.commands import CONTROL, CommandsSection, Gate, Request
from runtime.secc.link import SeccLink, SeccLinkParams
from runtime.tags import Direction, TagSpec, TagType
from safety.ev_limits import EvLimits, EvLimitsParams, ev_bounds
from tests.safety.rig import Rig

HEARD_S = 3.0  # the SECC device's heartbeat_s: its inputs' age limit
SECC = (
    TagSpec("secc.session", TagType.BOOL, "", Direction.INPUT, None, HEARD_S),
    TagSpec("secc.ev_max_charge_w", TagType.FLOAT, "W", Direction.INPUT, None, HEARD_S),
    TagSpec("secc.ev_max_discharge_w", TagType.FLOAT, "W", Direction.INPUT, None, HEARD_S),
    *(
        TagSpec(f"secc.{k}", t, "", Direction.OUTPUT, d)
        for k, t, d in (
            ("setpoint_w", TagType.FLOAT, 0.0),
            ("enable", TagType.BOOL, False),
            ("terminate", TagType.BOOL, False),
            ("max_charge_w", TagType.FLOAT, 0.0),
            ("max_discharge_w", TagType.FLOAT, 0.0),
            ("contactor", TagType.STR, "unknown"),
            ("isolation", TagType.STR, "unknown"),
            ("cp_state", TagType.STR, "unknown"),
        )
    ),
)
PLANT = (
    TagSpec("ev.connected", TagType.BOOL),
    TagSpec("plan.power", TagType.FLOAT, "W"),
    TagSpec("plan.reserve_soc", TagType.FLOAT),
)
GATE = Gate({}, CommandsSection.model_validate({"allow": {}}), False, 20_000)


def ask(mode: str, **args: Any) -> Command:
    return GATE.check(Request("1", "mode_request", CONTROL, "operator", {"mode": mode, **args}), 0)


def rig(programs: bool = False, margin_pct: float = 2.0) -> Rig:
    """The requester (or authority, modes and dispatch) -> v2g_safety -> ev_limits -> secc_link, settled
    through start-up enter service with an EV in session that gives no limits."""
    probe = Rig(thermal={"tau_s": None})
    progs = []
    if programs:  # dispatch deliberately without the EV's limits: the interlock alone must hold
        d = DispatchParams(ramp_w_per_s=1e7, plan_soc_tag=None, plan_end_tag=None)
        progs = [
            Authority("authority", AuthorityParams(), probe.site),
            Modes("modes", ModeParams(), probe.site),
            Dispatch("dispatch", d, probe.site),
        ]
    r = Rig(extra_inputs=(*SECC, *PLANT), programs=progs, thermal={"tau_s": None})
    # The rig builds the site's interlock list with the supervisor alone; these two follow it, as a site
    # file lists them (their tags are the rig's plant tags above).
    r.engine.interlocks += [
        EvLimits("ev_limits", EvLimitsParams(margin_pct=margin_pct), r.site),
        SeccLink("secc_link", SeccLinkParams(), r.site),
    ]
    r.set(ev__connected=True, plan__power=0.0, plan__reserve_soc=0.2)
    r.set(secc__session=True, secc__ev_max_charge_w=None, secc__ev_max_discharge_w=None)
    r.settle()
    return r


def committed(r: Rig) -> float:
    return float(r.out["inverter.setpoint"]) if r.out["inverter.enable"] else 0.0


def tag(r: Rig, name: str) -> Any:
    assert r.last is not None
    return r.last.image[name].value


# (asked W, EV charge limit, EV discharge limit, committed W): margin 2 %
TABLE = [
    (9000.0, 6000.0, 3000.0, 5880.0),
    (-9000.0, 6000.0, 3000.0, -2940.0),
    (0.0, 6000.0, 3000.0, 0.0),
    (5000.0, 6000.0, 3000.0, 5000.0),  # inside the EV's limit less the margin: untouched
    (-2000.0, 6000.0, 3000.0, -2000.0),
    (9000.0, 0.0, 3000.0, 0.0),  # the EV takes nothing now
    (-9000.0, 6000.0, 0.0, 0.0),
    (-9000.0, 6000.0, -3000.0, -2940.0),  # a signed discharge limit counts as its magnitude
    (9000.0, None, None, 9000.0),  # the EV gives no limit: only the others bound it
    (-9000.0, None, None, -9000.0),
]


@pytest.mark.parametrize("row", TABLE)
def test_the_committed_set_point_is_clamped_to_the_ev_limits_less_the_margin(row: tuple) -> None:
    asked, lc, ld, expected = row
    r = rig()
    r.set(secc__ev_max_charge_w=lc, secc__ev_max_discharge_w=ld)
    r.req.setpoint = asked
    for _ in range(3):
        r.step()
        assert committed(r) == pytest.approx(expected)
        assert r.out["secc.setpoint_w"] == pytest.approx(expected)  # the EV is told exactly that
        assert r.out["inverter.enable"] is True
    assert ("EV limits" in r.out["safety.reason"]) == (abs(expected) < abs(asked))  # said when it clamps
    assert tag(r, "safety.limit_charge") == 11000.0  # the supervisor's limits stay the supervisor's


@pytest.mark.parametrize("asked", [9000.0, -9000.0, 0.0])
def test_no_session_no_ev_limit(asked: float) -> None:
    r = rig()
    r.set(secc__session=False, secc__ev_max_charge_w=None, secc__ev_max_discharge_w=None)
    r.req.setpoint = asked
    r.step()
    assert committed(r) == asked and "EV limits" not in r.out["safety.reason"]


@pytest.mark.parametrize("asked", [9000.0, -9000.0, 0.0])
@pytest.mark.parametrize("which", ["secc.session", "secc.ev_max_charge_w", "secc.ev_max_discharge_w"])
def test_a_stale_secc_in_session_is_zero_and_no_permit_until_heard_again(asked: float, which: str) -> None:
    r = rig()
    r.set(secc__ev_max_charge_w=6000.0, secc__ev_max_discharge_w=3000.0)
    r.req.setpoint = asked
    r.step()
    assert committed(r) == {9000.0: 5880.0, -9000.0: -2940.0, 0.0: 0.0}[asked]
    heard = r.values.pop(which)  # the SECC stops reporting it: it turns stale after its age limit
    res = r.run(HEARD_S + 0.5, step_s=0.5)
    assert res[-1].image[which].quality.value == "stale"
    assert r.out["inverter.setpoint"] == 0.0 and r.out["inverter.enable"] is False
    assert r.out["secc.setpoint_w"] == 0.0 and r.out["secc.enable"] is False
    assert f"EV limits unknown ({which} is stale)" in r.out["safety.reason"]
    assert tag(r, "safety.trip") == ""  # doubt, not a trip: nothing latches
    r.values[which] = heard
    r.step()
    assert committed(r) == {9000.0: 5880.0, -9000.0: -2940.0, 0.0: 0.0}[asked]
    assert r.out["inverter.enable"] is True


@pytest.mark.parametrize("asked", [9000.0, -9000.0])
def test_an_secc_not_heard_outside_a_session_is_no_ev_limit(asked: float) -> None:
    """Never heard (start-up), or last heard idle and then silent: no EV is in a session, none can start
    without the service; the other interlocks decide."""
    r = rig()
    r.set(secc__session=False)
    r.req.setpoint = asked
    r.step()
    r.values.pop("secc.session")
    r.run(HEARD_S + 0.5, step_s=0.5)
    assert r.last is not None and r.last.image["secc.session"].quality.value == "stale"
    assert committed(r) == asked and r.out["inverter.enable"] is True
    assert "EV limits" not in r.out["safety.reason"]


def test_an_secc_never_heard_is_no_ev_limit() -> None:
    r = rig()
    assert r.last is not None
    lc, ld, doubt, session = ev_bounds(r.last.image, EvLimitsParams(session_tag="secc.never"), False)
    assert (lc, ld, doubt, session) == (float("inf"), float("inf"), "", False)


@pytest.mark.parametrize("value", [True, False])
def test_a_forced_session_input_is_doubt(value: bool) -> None:
    """Forcing the session input off must not hide a session from the EV's limits."""
    r = rig()
    r.set(secc__ev_max_charge_w=6000.0, secc__ev_max_discharge_w=3000.0)
    r.req.setpoint = 9000.0
    r.engine.force("secc.session", value)
    r.step()
    assert committed(r) == 0.0 and "secc.session is forced" in r.out["safety.reason"]


def test_the_reason_does_not_pile_up_where_nobody_rewrites_it() -> None:
    """On a site whose reason tag only this interlock writes (tests/secc/site.py), its reason replaces its
    own of the last cycle."""
    r = rig()
    r.set(secc__ev_max_charge_w=6000.0)
    r.req.setpoint = 9000.0
    lock = r.engine.interlocks[1]
    r.engine.interlocks.remove(r.safety)  # nobody else writes safety.reason now
    for w in (6000.0, 5000.0, 5000.0):
        r.set(secc__ev_max_charge_w=w)
        r.step()
    assert lock.name == "ev_limits"
    assert r.out["safety.reason"].count("EV limits") == 1 and "4900 W" in r.out["safety.reason"]
    r.set(secc__ev_max_charge_w=None)
    r.step()
    assert "EV limits" not in r.out["safety.reason"]


def test_a_forced_ev_limit_is_no_evidence() -> None:
    r = rig()
    r.set(secc__ev_max_charge_w=6000.0, secc__ev_max_discharge_w=3000.0)
    r.req.setpoint = 9000.0
    r.engine.force("secc.ev_max_charge_w", 6000.0)  # even its own value: a force is not the EV's word
    r.step()
    assert committed(r) == 0.0 and r.out["inverter.enable"] is False
    assert "secc.ev_max_charge_w is forced" in r.out["safety.reason"]
    r.engine.unforce("secc.ev_max_charge_w")
    r.step()
    assert committed(r) == pytest.approx(5880.0)


def test_a_trip_is_not_loosened() -> None:
    r = rig()
    r.set(secc__ev_max_charge_w=6000.0, secc__ev_max_discharge_w=3000.0)
    r.req.setpoint = -9000.0
    r.step()
    r.set(grid__voltage=1.25 * 240.0)  # above OV2 (IEEE 1547-2018 Table 13, Cat III: 1.20 pu, 0.16 s)
    r.run(0.5)
    assert tag(r, "safety.trip") == "ov2"
    assert committed(r) == 0.0 and r.out["secc.terminate"] is True


def test_margin_zero_clamps_at_the_limit_itself() -> None:
    r = rig(margin_pct=0.0)
    r.set(secc__ev_max_charge_w=6000.0, secc__ev_max_discharge_w=3000.0)
    r.req.setpoint = -9000.0
    r.step()
    assert committed(r) == -3000.0


def test_limit_events_say_when_it_starts_and_stops_acting_not_every_new_number() -> None:
    r = rig()
    before = r.events["limit"]
    r.req.setpoint = 9000.0
    r.set(secc__ev_max_charge_w=6000.0, secc__ev_max_discharge_w=None)
    r.step()
    for w in (5000.0, 4000.0, 3000.0):  # the EV moves its limit: the same limit, new numbers
        r.set(secc__ev_max_charge_w=w)
        r.step()
        assert committed(r) == pytest.approx(w * 0.98)
    r.set(secc__ev_max_charge_w=None)
    r.step()
    mine = [e for e in r.event_log if e.kind == "limit" and e.source == "ev_limits"]
    assert [e.message for e in mine] == [
        "EV limits: charge 5880 W (the EV's own less 2 %)",
        "EV limits no longer acting",
    ]
    assert r.events["limit"] - before == 2


# -- whoever is in charge: remote and frequency -----------------------------------------------------------


@pytest.mark.parametrize("w, expected", [(9000.0, 5880.0), (-9000.0, -2940.0), (0.0, 0.0)])
def test_the_back_office_in_remote_cannot_push_the_ev_past_its_limits(w: float, expected: float) -> None:
    r = rig(programs=True)
    r.set(secc__ev_max_charge_w=6000.0, secc__ev_max_discharge_w=3000.0)
    for i in range(5):  # the first cycle too: dispatch has not seen the lowered safety limits yet
        r.step((ask("remote", setpoint_w=w),) if i == 0 else ())
        assert tag(r, "mode.state") == "remote"
        assert committed(r) == pytest.approx(expected)
        assert r.out["secc.setpoint_w"] == pytest.approx(expected)


@pytest.mark.parametrize("hz, expected", [(59.5, 5880.0), (60.5, -2940.0), (60.0, 0.0)])
def test_a_frequency_service_cannot_push_the_ev_past_its_limits(hz: float, expected: float) -> None:
    r = rig(programs=True)
    r.set(secc__ev_max_charge_w=6000.0, secc__ev_max_discharge_w=3000.0)
    r.set(grid__frequency=hz)
    curve = [[59.5, 10000.0], [59.9, 0.0], [60.1, 0.0], [60.5, -10000.0]]
    for i in range(5):  # the first cycle too: dispatch has not seen the lowered safety limits yet
        r.step((ask("frequency", curve=curve),) if i == 0 else ())
        assert tag(r, "mode.state") == "frequency"
        assert committed(r) == pytest.approx(expected)


def test_ev_bounds_is_pure_and_says_none_as_inf() -> None:
    r = rig()
    r.set(secc__ev_max_charge_w=None, secc__ev_max_discharge_w=1000.0)
    r.step()
    assert r.last is not None
    lc, ld, doubt, session = ev_bounds(r.last.image, EvLimitsParams(), True)
    assert (lc, ld, doubt, session) == (float("inf"), pytest.approx(980.0), "", True)
