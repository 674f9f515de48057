"""One EVSE's software failing takes that EVSE safe and the rest of the depot runs on; a site-level
component failing keeps the engine's rule (the whole site safe). Cycle tables through Engine.step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runtime.api import Cycle, Program
from runtime.evses import EvseComponent
from runtime.site import build_site
from tests.depot.drive import Drive
from tests.depot.sites import depot_site

IDS = [1, 2, 3]


class Boom(RuntimeError):
    pass


def _charging(tmp_path: Path) -> Drive:
    d = Drive(build_site(depot_site(tmp_path, import_w=60_000, period_ms=100)), IDS)
    d.run(4.0)  # enter service done, every EVSE charging at its 11 kW
    assert d.setpoints() == {1: 11_000.0, 2: 11_000.0, 3: 11_000.0}
    return d


def _component(d: Drive, name: str) -> Program:
    return next(p for p in (*d.built.programs, *d.built.interlocks) if p.name == name)


def _break(part: Program) -> dict[str, Any]:
    """Make a component raise from now on, after it wrote a full-power charge request: a failure half-way
    through its scan. Returns the switch that heals it."""
    target = part.inner if isinstance(part, EvseComponent) else part
    healthy = target.scan
    state = {"broken": True}

    def scan(cx: Cycle) -> None:
        if not state["broken"]:
            healthy(cx)
            return
        if "inverter.setpoint" in cx.out:
            cx.out["inverter.setpoint"] = 11_000.0
        raise Boom("injected")

    target.scan = scan  # type: ignore[method-assign]
    return state


def _faults(d: Drive) -> list[tuple[str, str]]:
    assert d.last is not None
    return [(e.source, e.message) for e in d.last.events if e.kind == "fault"]


@pytest.mark.parametrize(
    ("component", "safe_evses", "trip"),
    [
        # per EVSE: that EVSE alone, 0 W and permit withdrawn; its own interlocks trip program_fault
        ("evse2.modes", {2}, "program_fault"),
        ("evse2.dispatch", {2}, "program_fault"),
        ("evse2.safety", {2}, None),  # the interlock that raised cannot trip: the view took its outputs safe
        # site level: the engine's rule, every EVSE safe
        ("allocator", {1, 2, 3}, "program_fault"),
        ("connection", {1, 2, 3}, None),
    ],
)
def test_a_component_raising_takes_its_own_scope_safe(
    tmp_path: Path, component: str, safe_evses: set[int], trip: str | None
) -> None:
    d = _charging(tmp_path)
    state = _break(_component(d, component))
    for res in d.run(1.0):  # every cycle of the failure, not only the last
        sp = d.setpoints(res)
        for i in IDS:
            if i in safe_evses:
                assert sp[i] == 0.0 and res.outputs[f"evse{i}.inverter.enable"] is False, (i, res.k)
            else:
                assert sp[i] == 11_000.0 and res.outputs[f"evse{i}.inverter.enable"] is True, (i, res.k)
    faults = _faults(d)
    assert faults and all(src == component for src, _ in faults), faults
    assert all("Boom: injected" in msg for _, msg in faults)
    site_fault = d.value("runtime.fault")
    if component.startswith("evse"):
        assert site_fault == ""  # the site's fault tag stays clear: no other EVSE's safety sees it
        assert {e.data["evse"] for e in d.last.events if e.kind == "fault"} == {2}  # type: ignore[union-attr]
    else:
        assert component in site_fault
    for i in IDS:
        expected = trip if (i in safe_evses and trip is not None) else ""
        assert d.value(f"evse{i}.safety.trip") == expected, i
    # healed: the program fault clears by itself and the EVSE charges again (through enter service: the
    # interlock that raised gave no verdict, and the trip that cleared returns along the ramp)
    state["broken"] = False
    d.run(5.0)
    assert d.setpoints() == {1: 11_000.0, 2: 11_000.0, 3: 11_000.0}
    assert all(d.value(f"evse{i}.safety.trip") == "" for i in IDS)
    assert not _faults(d)


def test_each_evse_failing_alone_leaves_the_room_to_the_others(tmp_path: Path) -> None:
    """A 20 kW connection shared by three: EVSE 1's dispatch failing gives its share to EVSEs 2 and 3."""
    d = Drive(build_site(depot_site(tmp_path, import_w=20_000, period_ms=100)), IDS)
    d.run(4.0)
    assert sum(d.setpoints().values()) == pytest.approx(20_000)
    _break(_component(d, "evse1.dispatch"))
    d.run(2.0)
    sp = d.setpoints()
    assert sp[1] == 0.0
    assert sp[2] == pytest.approx(10_000) and sp[3] == pytest.approx(10_000)
    assert d.building + sum(d.power.values()) <= 20_000 + 1e-6
    assert d.value("evse1.alloc.cut").startswith("out of service")
