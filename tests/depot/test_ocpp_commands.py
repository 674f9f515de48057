"""Commands per EVSE on a depot (docs/depot.md "Back office"): ``evse: n`` in a command's args names the EVSE
it is for; the gate refuses an EVSE the site does not have and a per-EVSE kind naming none, before the scan;
availability, stop and start naming an EVSE hold or release that EVSE alone (tests/depot/test_evse_hold.py);
the EVSE view hands EVSE n only its own commands and the site's. A site of one charger is EVSE 1."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runtime.api import Command
from runtime.commands import CONTROL, CommandsSection, Gate, Refused, Request
from runtime.site import BuiltSite, build_site
from tests.depot.drive import Drive
from tests.depot.sites import depot_site
from tests.runtime.helpers import bundled_site_copy

ALLOW = {"ocpp": ["availability", "start", "stop", "reset", "mode_request", "der_control", "reset_trip"]}


def depot(tmp: Path, n: int = 3) -> BuiltSite:
    """The test depot with the mode authority in each EVSE's template (a mode request has a reader)."""
    path = depot_site(tmp, n)
    text = path.read_text().replace("    programs:\n", "    programs:\n      - {type: authority, name: authority}\n", 1)
    path.write_text(text)
    return build_site(path)


def gate_of(built: BuiltSite) -> Gate:
    """The gate as the runner makes it: task types, the commands section, and every interlock's verdict."""
    g = Gate({"backoffice": "ocpp"}, CommandsSection.model_validate({"allow": ALLOW}), False, built.info.period_us)
    g.validators = [f for f in (getattr(i, "check_command", None) for i in built.interlocks) if f]
    return g


def ask(g: Gate, kind: str, **args: Any) -> Command:
    return g.check(Request("1", kind, "backoffice", "CSMS", args), 0)


def refused(g: Gate, kind: str, **args: Any) -> str:
    with pytest.raises(Refused) as e:
        ask(g, kind, **args)
    return str(e.value)


def test_the_gate_knows_the_depots_evses_and_refuses_others(tmp_path: Path) -> None:
    g = gate_of(depot(tmp_path))
    assert g.evses == {1, 2, 3}
    c = ask(g, "mode_request", mode="remote", setpoint_w=-3000.0, evse=2)
    assert c.args["evse"] == 2 and c.args["setpoint_w"] == -3000.0
    assert refused(g, "mode_request", mode="remote", setpoint_w=1.0, evse=7) == "no EVSE 7 on this site (EVSEs 1-3)"
    assert "must name its EVSE" in refused(g, "mode_request", mode="local")
    for bad in (True, "2", 2.0, -1, 1000):
        assert "evse must be an EVSE number" in refused(g, "mode_request", mode="local", evse=bad)
    assert "evse must be an EVSE number 1.." in refused(g, "mode_request", mode="local", evse=0)


def test_site_kinds_take_no_evse_or_station_zero_and_per_evse_holds_are_accepted(tmp_path: Path) -> None:
    g = gate_of(depot(tmp_path))
    assert "evse" not in ask(g, "availability", operative=False).args
    assert "evse" not in ask(g, "availability", operative=False, evse=0).args  # OCPP's station: the site
    assert ask(g, "reset_trip", evse=3).args["evse"] == 3
    for kind, args in (("availability", {"operative": False}), ("stop", {}), ("start", {})):
        assert ask(g, kind, evse=2, **args).args["evse"] == 2  # the engine holds EVSE 2 alone
        assert refused(g, kind, evse=4, **args) == "no EVSE 4 on this site (EVSEs 1-3)"
    assert "unknown argument 'evse'" in refused(g, "reset", evse=1)


def test_a_site_of_one_charger_is_evse_1(tmp_path: Path) -> None:
    built = build_site(bundled_site_copy(tmp_path))
    g = gate_of(built)
    assert g.evses == frozenset()
    assert ask(g, "mode_request", mode="remote", setpoint_w=0.0).args["mode"] == "remote"
    assert ask(g, "stop", evse=1).args["evse"] == 1
    assert refused(g, "stop", evse=2) == "no EVSE 2 on this site (a site of one charger is EVSE 1)"


@pytest.mark.parametrize("setpoint", [-4000.0, 0.0, 4000.0])
def test_a_mode_request_for_evse_2_reaches_evse_2_only(tmp_path: Path, setpoint: float) -> None:
    built = depot(tmp_path)
    d = Drive(built, [1, 2, 3])
    d.run(1.0)
    c = gate_of(built).check(
        Request("1", "mode_request", CONTROL, "operator", {"mode": "remote", "setpoint_w": setpoint, "evse": 2}), 0
    )
    d.engine.step(d.now_us, d.updates(), [c])
    d.now_us += d.period_us
    d.run(1.0)
    assert d.value("evse2.authority.mode") == "remote"
    assert d.value("evse2.authority.setpoint_w") == setpoint
    assert d.setpoints()[2] == setpoint  # the committed set point, both signs and zero, through safety
    for n in (1, 3):
        assert d.value(f"evse{n}.authority.mode") == "plan"
        assert d.setpoints()[n] > 0  # their own fallback: charging toward fallback_soc
