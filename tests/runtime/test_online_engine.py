"""Online change inside the engine: a ``reconfigure`` command applies new params at one cycle boundary, all
or nothing, keeping latches and timers; the safety layer takes only tightened trip settings, inside the
IEEE 1547-2018 ranges, and never while a trip is being timed."""

from __future__ import annotations

from typing import Any

import pytest

from runtime.api import Command, Cycle, NotLive, Program, SiteInfo
from runtime.engine import RECONFIGURE, RUNTIME_TAGS, Engine, tag_table
from runtime.online.plan import classify, diff_values
from runtime.tags import Direction, TagSpec, TagType
from tests.safety.rig import Rig

NOMINAL = 240.0


def reconfigure(rig: Rig, revision: str = "r2", **safety: Any) -> tuple[bool, str, list[Any]]:
    """One cycle carrying a change of the safety params; (applied, why, events of that cycle)."""
    params = {**rig.safety.params.model_dump(mode="json"), **safety}
    res = rig.step((Command(RECONFIGURE, {"revision": revision, "components": {"safety": params}, "by": "test"}),))
    ((rev, ok, why),) = rig.engine.reconfigured
    assert rev == revision
    return ok, why, [e for e in res.events if e.kind.startswith("reconfigure")]


def ov1(clearing_s: float | None = None, threshold: float | None = None) -> dict[str, Any]:
    return {"ov1": {"threshold": threshold, "clearing_s": clearing_s}}


def seconds_to_trip(rig: Rig, pu: float) -> float:
    rig.set(grid__voltage=pu * NOMINAL)
    t0 = rig.now_us
    while not rig.step().outputs["safety.trip"]:
        assert rig.now_us - t0 < 30_000_000, "no trip within 30 s"
    return (rig.now_us - t0) / 1e6


def test_a_tightened_clearing_time_applies_at_the_boundary_and_trips_sooner() -> None:
    rig = Rig()
    rig.settle()
    ok, why, events = reconfigure(rig, voltage=ov1(clearing_s=2.0))
    assert ok, why
    assert events[0].kind == "reconfigure"
    assert events[0].data["diff"] == {"safety.voltage.ov1.clearing_s": [None, 2.0]}
    assert rig.engine.revision == "r2"
    # OV1 at 1.12 pu: 2 s clearing minus the 0.06 s response allowance, not the Category III default 13 s
    assert seconds_to_trip(rig, 1.12) == pytest.approx(1.94, abs=0.03)
    assert rig.out["inverter.setpoint"] == 0.0 and rig.out["inverter.enable"] is False


@pytest.mark.parametrize("setpoint", [-5000.0, 0.0, 5000.0])
def test_a_change_keeps_the_state_of_a_trip_and_its_enter_service_delay(setpoint: float) -> None:
    """Twin rigs through an OV2 trip and its enter-service delay; one takes a change on the way. Kept state
    means identical outputs, both power signs and zero."""
    twins = [Rig(), Rig()]
    for rig in twins:
        rig.settle()
        rig.req.setpoint = setpoint
        assert seconds_to_trip(rig, 1.25) == pytest.approx(0.11, abs=0.02)  # OV2: 0.16 s - 0.06 s
        rig.set(grid__voltage=NOMINAL)
        rig.run(10.0)
        if setpoint < 0:  # discharge waits for the enter-service delay (IEEE 1547-2018 4.10); charge does not
            assert rig.out["inverter.setpoint"] == 0.0
    ok, why, _ = reconfigure(twins[1], voltage=ov1(clearing_s=5.0))
    assert ok, why
    twins[0].step()
    for _ in range(700):  # the enter-service delay (300 s) and ramp (300 s), in 1 s steps
        a, b = (rig.run(1.0, step_s=1.0)[-1].outputs for rig in twins)
        assert a == b
    assert a["inverter.setpoint"] == setpoint and a["inverter.enable"] is True  # back in service, both alike


def test_a_change_while_a_trip_is_timed_is_refused_with_when_to_retry() -> None:
    rig = Rig()
    rig.settle()
    rig.set(grid__voltage=1.12 * NOMINAL)
    rig.run(1.0)  # OV1 timing (13 s)
    ok, why, events = reconfigure(rig, voltage=ov1(clearing_s=2.0))
    assert not ok
    assert "a trip is being timed (ov1)" in why and "ask again in 13 s" in why
    assert events[0].kind == "reconfigure_refused" and rig.engine.revision == ""
    assert rig.safety.params.voltage.ov1.clearing_s is None  # nothing changed
    # the timer kept running through the refused change: the trip comes at 13 s - 0.06 s from the start
    rig.set(grid__voltage=NOMINAL)
    rig.run(0.1)
    ok, why, _ = reconfigure(rig, voltage=ov1(clearing_s=2.0))
    assert ok, why


@pytest.mark.parametrize(
    ("change", "expect"),
    [
        ({"voltage": ov1(clearing_s=5.0)}, "loosened"),  # from 2 s: longer clearing
        ({"voltage": ov1(clearing_s=2.0, threshold=1.15)}, "loosened"),  # higher over-voltage threshold
        ({"trust_forced_inputs": True}, "trust_forced_inputs"),
        ({"comms": {"required_tags": ["grid.voltage", "grid.frequency"]}}, "comms"),  # an input removed
        ({"rated_charge_w": 12000.0}, "rated_charge_w"),
        ({"frequency": {"continuous_high_hz": 61.0}}, "ride-through"),
    ],
)
def test_a_weakened_or_structural_safety_change_needs_a_restart(change: dict[str, Any], expect: str) -> None:
    rig = Rig(voltage=ov1(clearing_s=2.0))
    rig.settle()
    before = rig.safety.params
    ok, why, events = reconfigure(rig, **change)
    assert not ok
    assert expect in why and why.endswith("needs a restart")
    assert rig.safety.params is before
    assert events[0].data["diff"]  # the refusal says what was asked for


def test_outside_the_ieee_1547_range_is_refused() -> None:
    rig = Rig()
    rig.settle()
    ok, why, _ = reconfigure(rig, voltage=ov1(clearing_s=0.5))  # Category III OV1: 1-13 s
    assert not ok and "invalid setting" in why


class Gain(Program):
    """A program that takes new params live (the contract's opt-in) and one that does not."""

    class Params(Program.Params):
        gain: float = 1.0

    def declare(self) -> list[TagSpec]:
        return [TagSpec(f"{self.name}.out", TagType.FLOAT, "", Direction.MEMORY, 0.0)]

    def scan(self, cx: Cycle) -> None:
        cx.out[f"{self.name}.out"] = self.params.gain  # type: ignore[attr-defined]

    def reconfigure(self, params: Program.Params) -> Any:
        return lambda: None


class Fixed(Gain):
    reconfigure = Program.reconfigure  # the default: not live-changeable


def test_all_or_nothing_and_the_default_is_not_live() -> None:
    site = SiteInfo("t", 240.0, 60.0, 20_000)
    live, fixed = Gain("live", Gain.Params(), site), Fixed("fixed", Gain.Params(), site)
    tags = tag_table(("runtime", RUNTIME_TAGS), *((p.name, p.declare()) for p in (live, fixed)))
    engine = Engine(site, tags, [live, fixed])
    both = {"live": {"gain": 2.0}, "fixed": {"gain": 3.0}}
    res = engine.step(0, (), (Command(RECONFIGURE, {"revision": "a", "components": both}),))
    assert res.outputs == {} and res.image.tag("live.out").value == 1.0  # nothing applied, not even "live"
    assert "does not change its params while running" in engine.reconfigured[0][2]
    with pytest.raises(NotLive):
        fixed.reconfigure(Gain.Params(gain=3.0))
    res = engine.step(20_000, (), (Command(RECONFIGURE, {"revision": "b", "components": {"live": {"gain": 2.0}}}),))
    assert res.image.tag("live.out").value == 2.0  # applied before the programs of the same cycle ran
    assert engine.revision == "b"


def test_diff_and_classify_are_plain_data() -> None:
    assert diff_values({"a": {"b": 1, "c": [1, 2]}}, {"a": {"b": 2, "c": [1, 3], "d": 0}}) == {
        "a.b": [1, 2],
        "a.c.1": [2, 3],
        "a.d": [None, 0],
    }
    comp = {"name": "x", "type": "t", "params": {"p": 1}, "files": {}}
    base = {
        "revision": "1",
        "config": {"scan": {"period_ms": 20}},
        "components": {"devices": [], "programs": [comp], "safety": [], "tasks": []},
        "tags": {"a.b": ["float"]},
    }
    new = {**base, "revision": "2", "components": {**base["components"], "programs": [{**comp, "params": {"p": 2}}]}}
    plan = classify(base, new)
    assert plan.live and plan.components == {"x": {"p": 2}}
    plan = classify(base, {**new, "config": {"scan": {"period_ms": 10}}, "tags": {}})
    assert not plan.live
    assert plan.restart == ("scan.period_ms changed (20 -> 10)", "the tag set changed: removed a.b")


def test_a_file_a_component_reads_restarts_its_task_or_needs_a_restart() -> None:
    def site(prices: str, table: str) -> dict[str, Any]:
        task = {"name": "prices", "type": "prices_csv", "params": {}, "files": {"p.csv": prices}}
        prog = {"name": "curve", "type": "t", "params": {}, "files": {"c.csv": table}}
        comps = {"devices": [], "programs": [prog], "safety": [], "tasks": [task]}
        return {"revision": prices + table, "config": {}, "components": comps, "tags": {}}

    plan = classify(site("a", "x"), site("b", "x"))
    assert plan.live and plan.tasks == ("prices",) and plan.diff == {"tasks.prices.file p.csv": ["a", "b"]}
    plan = classify(site("a", "x"), site("a", "y"))
    assert plan.restart == ("programs 'curve': its file c.csv changed",)
