"""The mode machine as a table (OpenEMS style): start state + input image -> state, trigger, outputs.

Every row runs one cycle through ``runtime.engine.Engine`` on a simulated clock. Rows with a trigger are
the transitions; rows without are the blocked ones (the state must not move and no event is logged).
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from programs import modes_diagram
from programs.dispatch import Dispatch, DispatchParams
from programs.modes import REASONS, STATES, TRANSITIONS, ModeParams, Modes
from runtime.api import PROGRAMS, Cycle, Program
from runtime.tags import Direction, TagSpec, TagType
from tests.programs.conftest import GOOD, INPUTS, SITE, Rig


def modes(**params: Any) -> Modes:
    return Modes("modes", ModeParams(**params), SITE)


# The authority program's tags as inputs, so a row sets them directly (tests/programs/test_authority.py
# runs the program itself).
AUTHORITY = (
    TagSpec("authority.mode", TagType.STR),
    TagSpec("authority.setpoint_w", TagType.FLOAT, "W"),
    TagSpec("authority.reason", TagType.STR),
)
BASE = {**GOOD, "authority.mode": "plan", "authority.setpoint_w": 0.0, "authority.reason": "local plan"}
REMOTE = {"authority.mode": "remote", "authority.setpoint_w": -3000.0, "authority.reason": "operator control"}
FREQ = {"authority.mode": "frequency", "authority.setpoint_w": 2000.0, "authority.reason": "ocpp backoffice"}


# (id, start state, changes to the good image, bad-quality tags, expected state, expected trigger)
ROWS: list[tuple[str, str, dict[str, Any], tuple[str, ...], str, str | None]] = [
    # -- transitions ----------------------------------------------------------------------------
    ("idle-start_charge", "idle", {"plan.power": 5000.0}, (), "charge", "start_charge"),
    ("idle-start_discharge", "idle", {"plan.power": -5000.0}, (), "discharge", "start_discharge"),
    ("idle-trip", "idle", {"safety.trip": "OV2"}, (), "safe_state", "trip"),
    ("idle-trip-tag-bad", "idle", {}, ("safety.trip",), "safe_state", "trip"),
    ("charge-trip", "charge", {"safety.trip": "UF2"}, (), "safe_state", "trip"),
    ("discharge-trip", "discharge", {"plan.power": -5000.0, "safety.trip": "island"}, (), "safe_state", "trip"),
    ("safe-trip_cleared", "safe_state", {}, (), "idle", "trip_cleared"),
    ("charge-ev_disconnected", "charge", {"ev.connected": False}, (), "idle", "ev_disconnected"),
    ("charge-ev_connected-bad", "charge", {}, ("ev.connected",), "idle", "ev_disconnected"),
    (
        "discharge-ev_disconnected",
        "discharge",
        {"plan.power": -5000.0, "ev.connected": False},
        (),
        "idle",
        "ev_disconnected",
    ),
    ("charge-link_lost", "charge", {"plc.snr": 9.9}, (), "idle", "link_lost"),
    ("charge-link-bad", "charge", {}, ("plc.snr",), "idle", "link_lost"),
    ("discharge-link_lost", "discharge", {"plan.power": -5000.0, "plc.snr": 3.0}, (), "idle", "link_lost"),
    ("charge-soc_unknown", "charge", {}, ("ev.soc",), "idle", "soc_unknown"),
    ("discharge-soc_unknown", "discharge", {"plan.power": -5000.0}, ("ev.soc",), "idle", "soc_unknown"),
    ("charge-soc_full", "charge", {"ev.soc": 0.90}, (), "idle", "soc_full"),
    ("discharge-soc_empty", "discharge", {"plan.power": -5000.0, "ev.soc": 0.20}, (), "idle", "soc_empty"),
    ("charge-plan_stop-zero", "charge", {"plan.power": 0.0}, (), "idle", "plan_stop"),
    ("charge-plan_stop-reverse", "charge", {"plan.power": -5000.0}, (), "idle", "plan_stop"),
    # a plan that is not good: the fallback charges below fallback_soc (0.8) and stops above it
    ("charge-plan_stop-bad", "charge", {"ev.soc": 0.85}, ("plan.power",), "idle", "plan_stop"),
    ("charge-stay-plan-bad-fallback", "charge", {}, ("plan.power",), "charge", None),
    ("discharge-plan_stop-bad", "discharge", {"plan.power": -5000.0}, ("plan.power",), "idle", "plan_stop"),
    # the departure reserve: discharge only above a good plan.reserve_soc
    (
        "discharge-reserve_reached",
        "discharge",
        {"plan.power": -5000.0, "plan.reserve_soc": 0.5},
        (),
        "idle",
        "reserve_reached",
    ),
    ("discharge-reserve-bad", "discharge", {"plan.power": -5000.0}, ("plan.reserve_soc",), "idle", "reserve_reached"),
    ("discharge-plan_stop-zero", "discharge", {"plan.power": 0.0}, (), "idle", "plan_stop"),
    ("discharge-plan_stop-reverse", "discharge", {"plan.power": 5000.0}, (), "idle", "plan_stop"),
    # priority: one trigger per scan, the most protective one
    ("charge-trip-beats-disconnect", "charge", {"safety.trip": "OV1", "ev.connected": False}, (), "safe_state", "trip"),
    ("charge-disconnect-beats-soc", "charge", {"ev.connected": False, "ev.soc": 0.95}, (), "idle", "ev_disconnected"),
    ("safe-cleared-only-to-idle", "safe_state", {"plan.power": 5000.0}, (), "idle", "trip_cleared"),
    # -- blocked ---------------------------------------------------------------------------------
    ("idle-stay-plan-zero", "idle", {"plan.power": 0.0}, (), "idle", None),
    ("idle-stay-deadband+", "idle", {"plan.power": 100.0}, (), "idle", None),
    ("idle-stay-deadband-", "idle", {"plan.power": -100.0}, (), "idle", None),
    ("idle-stay-plan-bad", "idle", {"ev.soc": 0.85}, ("plan.power",), "idle", None),
    ("idle-fallback-charge-plan-bad", "idle", {}, ("plan.power",), "charge", "start_charge"),
    ("idle-discharge-blocked-reserve", "idle", {"plan.power": -5000.0, "plan.reserve_soc": 0.495}, (), "idle", None),
    ("idle-discharge-blocked-reserve-bad", "idle", {"plan.power": -5000.0}, ("plan.reserve_soc",), "idle", None),
    (
        "discharge-stay-above-reserve",
        "discharge",
        {"plan.power": -5000.0, "plan.reserve_soc": 0.499},
        (),
        "discharge",
        None,
    ),
    ("idle-charge-blocked-disconnected", "idle", {"ev.connected": False}, (), "idle", None),
    ("idle-charge-blocked-connected-bad", "idle", {}, ("ev.connected",), "idle", None),
    ("idle-charge-blocked-link", "idle", {"plc.snr": 9.9}, (), "idle", None),
    ("idle-charge-blocked-snr-bad", "idle", {}, ("plc.snr",), "idle", None),
    ("idle-charge-blocked-soc-hysteresis", "idle", {"ev.soc": 0.89}, (), "idle", None),
    ("idle-charge-blocked-soc-max", "idle", {"ev.soc": 0.95}, (), "idle", None),
    ("idle-charge-blocked-soc-bad", "idle", {}, ("ev.soc",), "idle", None),
    ("idle-discharge-blocked-disconnected", "idle", {"plan.power": -5000.0, "ev.connected": False}, (), "idle", None),
    ("idle-discharge-blocked-link", "idle", {"plan.power": -5000.0, "plc.snr": 0.0}, (), "idle", None),
    ("idle-discharge-blocked-soc-hysteresis", "idle", {"plan.power": -5000.0, "ev.soc": 0.21}, (), "idle", None),
    ("idle-discharge-blocked-soc-min", "idle", {"plan.power": -5000.0, "ev.soc": 0.1}, (), "idle", None),
    ("charge-stay", "charge", {"ev.soc": 0.89}, (), "charge", None),
    ("discharge-stay", "discharge", {"plan.power": -5000.0, "ev.soc": 0.21}, (), "discharge", None),
    ("safe-stay-trip", "safe_state", {"safety.trip": "OV2"}, (), "safe_state", None),
    ("safe-stay-trip-bad", "safe_state", {}, ("safety.trip",), "safe_state", None),
    # -- the signed states: the authority's remote set point and frequency response -----------------
    ("idle-enter_remote", "idle", REMOTE, (), "remote", "enter_remote"),
    ("charge-enter_remote", "charge", REMOTE, (), "remote", "enter_remote"),
    ("discharge-enter_remote", "discharge", {"plan.power": -5000.0, **REMOTE}, (), "remote", "enter_remote"),
    ("frequency-enter_remote", "frequency", REMOTE, (), "remote", "enter_remote"),
    ("idle-enter_frequency", "idle", FREQ, (), "frequency", "enter_frequency"),
    ("charge-enter_frequency", "charge", FREQ, (), "frequency", "enter_frequency"),
    ("discharge-enter_frequency", "discharge", {"plan.power": -5000.0, **FREQ}, (), "frequency", "enter_frequency"),
    ("remote-enter_frequency", "remote", FREQ, (), "frequency", "enter_frequency"),
    ("remote-authority_ended", "remote", {}, (), "idle", "authority_ended"),
    ("frequency-authority_ended", "frequency", {}, (), "idle", "authority_ended"),
    ("remote-authority-bad", "remote", {}, ("authority.mode",), "idle", "authority_ended"),
    ("remote-trip", "remote", {**REMOTE, "safety.trip": "OV2"}, (), "safe_state", "trip"),
    ("frequency-trip", "frequency", {**FREQ, "safety.trip": "OF2"}, (), "safe_state", "trip"),
    ("remote-ev_disconnected", "remote", {**REMOTE, "ev.connected": False}, (), "idle", "ev_disconnected"),
    ("frequency-ev_disconnected", "frequency", {**FREQ, "ev.connected": False}, (), "idle", "ev_disconnected"),
    ("remote-link_lost", "remote", {**REMOTE, "plc.snr": 3.0}, (), "idle", "link_lost"),
    ("frequency-link_lost", "frequency", {**FREQ, "plc.snr": 3.0}, (), "idle", "link_lost"),
    ("remote-soc_unknown", "remote", REMOTE, ("ev.soc",), "idle", "soc_unknown"),
    ("frequency-soc_unknown", "frequency", FREQ, ("ev.soc",), "idle", "soc_unknown"),
    (
        "remote-trip-beats-disconnect",
        "remote",
        {**REMOTE, "safety.trip": "OV2", "ev.connected": False},
        (),
        "safe_state",
        "trip",
    ),
    ("safe-cleared-only-to-idle-remote", "safe_state", REMOTE, (), "idle", "trip_cleared"),
    ("remote-stay", "remote", REMOTE, (), "remote", None),
    ("remote-stay-soc-full", "remote", {**REMOTE, "authority.setpoint_w": 5000.0, "ev.soc": 0.95}, (), "remote", None),
    ("remote-stay-soc-empty", "remote", {**REMOTE, "ev.soc": 0.1}, (), "remote", None),
    ("remote-stay-reserve-bad", "remote", REMOTE, ("plan.reserve_soc",), "remote", None),
    ("frequency-stay", "frequency", FREQ, (), "frequency", None),
    ("frequency-stay-plan-zero", "frequency", {**FREQ, "plan.power": 0.0}, (), "frequency", None),
    ("idle-remote-blocked-disconnected", "idle", {**REMOTE, "ev.connected": False}, (), "idle", None),
    ("idle-remote-blocked-link", "idle", {**REMOTE, "plc.snr": 3.0}, (), "idle", None),
    ("idle-remote-blocked-soc-bad", "idle", REMOTE, ("ev.soc",), "idle", None),
    ("idle-frequency-blocked-disconnected", "idle", {**FREQ, "ev.connected": False}, (), "idle", None),
]


@pytest.mark.parametrize("row", ROWS, ids=[r[0] for r in ROWS])
def test_table(row: tuple[str, str, dict[str, Any], tuple[str, ...], str, str | None]) -> None:
    _, start, changes, bad, expected, trigger = row
    prog = modes()
    prog.machine.set_state(start, prog.model)
    rig = Rig([prog], extra=AUTHORITY)
    values = {**BASE, **changes}
    rig.step({n: v for n, v in values.items() if n not in bad}, bad=bad)
    assert rig.value("mode.state") == expected
    events = rig.transitions()
    if trigger is None:
        assert events == []
        assert rig.value("mode.reason") == ""
    else:
        assert len(events) == 1
        assert events[0]["data"] == {"trigger": trigger, "source": start, "dest": expected}
        assert events[0]["source"] == "modes" and events[0]["k"] == 0
        assert rig.value("mode.reason").startswith(REASONS[trigger])
    if expected in ("idle", "safe_state"):  # entry/exit actions: zero and no permit
        assert rig.value("inverter.setpoint") == 0.0
        assert rig.value("inverter.enable") is False


def test_table_covers_every_transition() -> None:
    covered = {(r[1], r[5]) for r in ROWS if r[5]}
    for t in TRANSITIONS:
        for src in t["source"] if isinstance(t["source"], list) else [t["source"]]:
            assert (src, t["trigger"]) in covered, (src, t["trigger"])
    assert {r[1] for r in ROWS if r[5] is None} == set(STATES)  # a blocked row from every state


# (id, authority set point, SoC, plan.reserve_soc (None: not good), mode.request, mode.clamp)
SIGNED_ROWS: list[tuple[str, float, float, float | None, float, str]] = [
    ("charge", 5000.0, 0.5, 0.2, 5000.0, ""),
    ("discharge", -5000.0, 0.5, 0.2, -5000.0, ""),
    ("zero", 0.0, 0.5, 0.2, 0.0, ""),
    ("charge-at-soc_max", 5000.0, 0.90, 0.2, 0.0, REASONS["soc_full"]),
    ("discharge-at-soc_max", -5000.0, 0.90, 0.2, -5000.0, ""),  # the other sign stays open
    ("discharge-at-soc_min", -5000.0, 0.20, 0.1, 0.0, REASONS["soc_empty"]),
    ("charge-at-soc_min", 5000.0, 0.20, 0.1, 5000.0, ""),
    ("discharge-at-reserve", -5000.0, 0.5, 0.5, 0.0, REASONS["reserve_reached"]),
    ("discharge-reserve-stale", -5000.0, 0.5, None, 0.0, REASONS["reserve_reached"]),
    ("charge-reserve-stale", 5000.0, 0.5, None, 5000.0, ""),
]


@pytest.mark.parametrize("state", ["remote", "frequency"])
@pytest.mark.parametrize("row", SIGNED_ROWS, ids=[r[0] for r in SIGNED_ROWS])
def test_signed_request_bounded_by_soc_window_and_reserve(
    state: str, row: tuple[str, float, float, float | None, float, str]
) -> None:
    """In remote and frequency the SoC window and the departure reserve clamp the authority's set point
    (and say so in mode.clamp) without leaving the state: the other direction stays available."""
    _, setpoint, soc, reserve, request, clamp = row
    prog = modes()
    prog.machine.set_state(state, prog.model)
    rig = Rig([prog], extra=AUTHORITY)
    values = {**BASE, "authority.mode": state, "authority.setpoint_w": setpoint, "ev.soc": soc}
    if reserve is not None:
        values["plan.reserve_soc"] = reserve
    rig.step(values, stale=() if reserve is not None else ("plan.reserve_soc",))
    assert rig.value("mode.state") == state
    assert rig.value("mode.request") == request
    assert rig.value("mode.clamp") == clamp


def test_stale_plan_charges_only_to_the_fallback_soc() -> None:
    prog = modes()
    rig = Rig([prog])
    rig.step(GOOD)
    assert rig.value("mode.state") == "charge"
    rig.step(stale=("plan.power",), values={**GOOD, "plan.power": -5000.0})
    assert rig.value("mode.state") == "charge" and rig.value("mode.request") == 11000.0
    rig.step(stale=("plan.power",), values={**GOOD, "plan.power": -5000.0, "ev.soc": 0.8})
    assert rig.value("mode.state") == "idle" and rig.value("mode.request") == 0.0
    assert rig.value("mode.reason").startswith("plan requests no power")


def test_fixed_request_without_planner() -> None:
    inputs = [s for s in INPUTS if not s.name.startswith("plan.")]
    rig = Rig([modes(fixed_request_w=-3000.0, plan_tag=None, reserve_tag=None)], inputs=inputs)
    rig.step({n: v for n, v in GOOD.items() if not n.startswith("plan.")})
    assert rig.value("mode.state") == "discharge"


def test_no_plc_link_to_check() -> None:
    rig = Rig([modes(snr_tag=None)])
    rig.step({n: v for n, v in GOOD.items() if n != "plc.snr"})
    assert rig.value("mode.state") == "charge"


def test_no_safety_tag_means_safe_state() -> None:
    """safety.trip never written (no interlock answers): doubt is a trip."""
    rig = Rig([modes()])
    for _ in range(3):
        rig.step({n: v for n, v in GOOD.items() if n != "safety.trip"})
        assert rig.value("mode.state") == "safe_state"


def test_soc_window_param_checked() -> None:
    with pytest.raises(ValueError):
        ModeParams(soc_min=0.5, soc_max=0.5)


class _TripStub(Program):
    """Stands in for the safety layer: copies test.trip into safety.trip (committed for the next cycle)."""

    def declare(self) -> list[TagSpec]:
        return [
            TagSpec("safety.trip", TagType.STR, "", Direction.MEMORY, ""),
            TagSpec("safety.limit_charge", TagType.FLOAT, "W", Direction.MEMORY, 11000.0),
            TagSpec("safety.limit_discharge", TagType.FLOAT, "W", Direction.MEMORY, 11000.0),
        ]

    def scan(self, cx: Cycle) -> None:
        cx.out["safety.trip"] = cx.inputs.value("test.trip", "")
        if cx.out["safety.trip"]:
            cx.out["inverter.setpoint"] = 0.0
            cx.out["inverter.enable"] = False


def test_scenario_cycle_by_cycle_with_dispatch() -> None:
    """A run over simulated time: charge, stop, discharge, trip, recover. One trigger per scan."""
    mine = ("safety.trip", "safety.limit_charge", "safety.limit_discharge")
    inputs = [s for s in INPUTS if s.name not in mine]
    disp = Dispatch("dispatch", DispatchParams(ramp_w_per_s=50_000.0, plan_soc_tag=None), SITE)
    rig = Rig(
        [modes(), disp],
        [_TripStub("stub", None, SITE)],
        inputs=inputs,  # type: ignore[arg-type]
        extra=[TagSpec("test.trip", TagType.STR)],
    )
    base = {n: v for n, v in GOOD.items() if n not in mine} | {"test.trip": ""}
    seen: list[tuple[str, float]] = []

    def run(n: int, **changes: Any) -> None:
        for _ in range(n):
            rig.step({**base, **{k.replace("_", ".", 1): v for k, v in changes.items()}})
            seen.append((rig.value("mode.state"), rig.value("inverter.setpoint")))

    run(1, plan_power=5000.0)
    assert seen[-1] == ("charge", 1000.0)  # ramp 50 kW/s * 20 ms
    run(10, plan_power=5000.0)
    assert seen[-1] == ("charge", 5000.0)
    run(1, plan_power=-4000.0)
    assert seen[-1] == ("idle", 0.0)  # through idle, never straight across zero
    run(1, plan_power=-4000.0)
    assert seen[-1] == ("discharge", -1000.0)
    run(5, plan_power=-4000.0)
    assert seen[-1] == ("discharge", -4000.0)
    run(1, plan_power=-4000.0, test_trip="OV2")
    assert seen[-1] == ("discharge", 0.0)  # safety zeroes this cycle; the machine sees it next cycle
    run(1, plan_power=-4000.0, test_trip="OV2")
    assert seen[-1] == ("safe_state", 0.0)
    assert rig.value("mode.reason") == "safety trip active: OV2"
    run(1, plan_power=-4000.0)
    assert seen[-1] == ("safe_state", 0.0)  # the stub cleared safety.trip this cycle
    run(1, plan_power=-4000.0)
    assert seen[-1] == ("idle", 0.0)
    run(1, plan_power=-4000.0)
    assert seen[-1] == ("discharge", -1000.0)
    assert rig.value("inverter.enable") is True
    states = [s for s, _ in seen]
    changes = sum(a != b for a, b in itertools.pairwise(states))
    assert changes == 5  # charge>idle>discharge>safe_state>idle>discharge


def test_registered() -> None:
    assert PROGRAMS["modes"] is Modes and PROGRAMS["dispatch"] is Dispatch


def test_diagram_is_current() -> None:
    """docs/modes.md is what ``python -m programs.modes_diagram`` writes from the machine itself."""
    text = modes_diagram.render()
    assert "stateDiagram-v2" in text and "idle --> charge: start_charge" in text
    assert modes_diagram.main(["--check"]) == 0, "run: python -m programs.modes_diagram"
