"""Online change on a depot: the EVSEs' components are described by their template's types, a change of
a template parameter is one live change for every EVSE, and the runtime's start (which describes the
running revision) works on the example depot."""

from __future__ import annotations

from pathlib import Path

from runtime.online.plan import classify
from runtime.online.validate import validate_site

DEPOT = Path(__file__).resolve().parents[2] / "runtime" / "sites" / "depot.yaml"


def test_the_depot_is_described_with_its_template_types_and_a_template_change_is_live_for_every_evse() -> None:
    running = validate_site(DEPOT)
    assert running["ok"], running.get("errors")
    programs = {c["name"]: c["type"] for c in running["components"]["programs"]}
    assert programs["evse1.modes"] == "modes" and programs["evse20.dispatch"] == "dispatch"
    assert programs["allocator"] == "allocator"
    text = DEPOT.read_text()
    assert text.count("max_charge_w: 11000") >= 1
    edited = validate_site(DEPOT, text.replace("max_charge_w: 11000", "max_charge_w: 10000", 1))
    assert edited["ok"], edited.get("errors")
    plan = classify(running, edited)
    assert plan.live, plan.restart
    changed = sorted(plan.components)
    assert changed == sorted(f"evse{n}.dispatch" for n in range(1, 21))
