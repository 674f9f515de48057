"""One EVSE of a depot out of service, stopped or started (docs/depot.md "Back office"): the engine holds that
EVSE's outputs at their safe values (0 W, permit withdrawn) while the others go on; availability persists
across a restart through the state file. Cycle tables through Engine.step on the shared depot harness."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from runtime import statefile
from runtime.api import Command
from runtime.commands import CONTROL, Refused, Request
from runtime.config import load_site
from runtime.engine import AVAILABILITY, Availability
from runtime.iothread import ControlServer
from tests.depot.drive import Drive
from tests.depot.test_ocpp_commands import ask, depot, gate_of
from tests.runtime.helpers import cli, wait_for

SIGNS = [-4000.0, 0.0, 4000.0]  # discharge, zero and charge requests for EVSE 2


def command(d: Drive, c: Command, settle_s: float = 1.0) -> None:
    """One command applied at the next cycle boundary, then ``settle_s`` of cycles."""
    d.engine.step(d.now_us, d.updates(), [c])
    d.now_us += d.period_us
    d.run(settle_s)


def override(d: Drive, n: int, setpoint: float) -> None:
    """An operator's remote set point for EVSE ``n``: what it would do if nothing held it."""
    r = Request("op", "mode_request", CONTROL, "operator", {"mode": "remote", "setpoint_w": setpoint, "evse": n})
    command(d, gate_of(d.built).check(r, d.now_us))


def held(d: Drive, n: int) -> bool:
    assert d.last is not None
    return d.setpoints()[n] == 0.0 and d.last.outputs[f"evse{n}.inverter.enable"] is False


def others_go_on(d: Drive) -> None:
    for n in (1, 3):
        assert d.setpoints()[n] > 0  # their own fallback: charging toward fallback_soc
        assert d.last is not None and d.last.outputs[f"evse{n}.inverter.enable"] is True


@pytest.mark.parametrize("setpoint", SIGNS)
def test_evse_2_out_of_service_holds_it_safe_while_1_and_3_go_on_and_back_in_service(
    tmp_path: Path, setpoint: float
) -> None:
    built = depot(tmp_path)
    d = Drive(built, [1, 2, 3])
    d.run(1.0)
    override(d, 2, setpoint)
    assert d.setpoints()[2] == setpoint  # the request would be followed
    g = gate_of(built)
    command(d, ask(g, "availability", operative=False, evse=2))
    for res in d.run(2.0):  # every cycle, not only the last
        assert res.outputs["evse2.inverter.setpoint"] == 0.0 and res.outputs["evse2.inverter.enable"] is False
    others_go_on(d)
    assert d.engine.availability.operative is True and d.engine.availability.out == {2: "CSMS"}
    assert json.loads(d.engine.availability.evses_out()) == [2]
    command(d, ask(g, "availability", operative=True, evse=2))
    assert d.setpoints()[2] == setpoint  # back in service: the request it still has is followed again
    assert d.engine.availability.out == {} and d.engine.availability.persist() is None
    others_go_on(d)


@pytest.mark.parametrize("setpoint", SIGNS)
def test_a_remote_stop_of_evse_2_holds_it_until_its_start(tmp_path: Path, setpoint: float) -> None:
    built = depot(tmp_path)
    d = Drive(built, [1, 2, 3])
    d.run(1.0)
    override(d, 2, setpoint)
    g = gate_of(built)
    command(d, ask(g, "stop", evse=2))
    assert held(d, 2) and d.engine.stopped_evses == {2: "CSMS"} and d.engine.stopped_by is None
    others_go_on(d)
    command(d, ask(g, "start", evse=3))  # a start of another EVSE does not release EVSE 2
    assert held(d, 2)
    command(d, ask(g, "start", evse=2, remote_id=7))
    assert d.setpoints()[2] == setpoint and d.engine.stopped_evses == {}
    others_go_on(d)


def test_the_whole_site_out_of_service_still_holds_every_evse(tmp_path: Path) -> None:
    built = depot(tmp_path)
    d = Drive(built, [1, 2, 3])
    d.run(1.0)
    g = gate_of(built)
    command(d, ask(g, "availability", operative=False, evse=2))
    command(d, ask(g, "availability", operative=False))  # OCPP's station (no EVSE, or 0)
    assert all(held(d, n) for n in (1, 2, 3))
    command(d, ask(g, "availability", operative=True))  # the station back: EVSE 2 stays out on its own
    assert held(d, 2)
    others_go_on(d)


def test_evse_2_stays_out_of_service_across_a_restart_through_the_state_file(tmp_path: Path) -> None:
    built = depot(tmp_path)
    d = Drive(built, [1, 2, 3])
    d.run(1.0)
    states: dict[str, Any] = {}
    c = ask(gate_of(built), "availability", operative=False, evse=2)
    res = d.engine.step(d.now_us, d.updates(), [c])
    states.update({k: v for k, v in res.persist.items() if v is not None})
    path = tmp_path / "state.json"
    statefile.write_atomic(path, states)
    assert json.loads(path.read_text())["components"][AVAILABILITY]["evses_out"] == {"2": "CSMS"}

    again = Drive(built, [1, 2, 3])  # a new engine of the same site: the runtime started again
    assert again.engine.restore(statefile.load(path)) == [AVAILABILITY]
    again.run(2.0)
    assert held(again, 2)
    others_go_on(again)


def test_an_old_state_file_without_evses_out_still_loads(tmp_path: Path) -> None:
    a = Availability(depot(tmp_path).info)
    a.restore({"operative": False, "by": "CS-1"})  # written before per-EVSE availability
    assert (a.operative, a.by, a.out) == (False, "CS-1", {})
    assert a.persist() == {
        "operative": False,
        "by": "CS-1",
        "evses_out": {},
        "stopped_by": None,
        "evses_stopped": {},
    }


def test_a_remote_stop_of_evse_2_survives_a_restart_until_its_start(tmp_path: Path) -> None:
    """The EV is still plugged in after a restart: the stop the back office asked for still holds, until a
    start (or the EV leaving, which the station turns into a start)."""
    built = depot(tmp_path)
    d = Drive(built, [1, 2, 3])
    d.run(1.0)
    c = ask(gate_of(built), "stop", evse=2)
    res = d.engine.step(d.now_us, d.updates(), [c])
    path = tmp_path / "state.json"
    statefile.write_atomic(path, {k: v for k, v in res.persist.items() if v is not None})
    assert json.loads(path.read_text())["components"][AVAILABILITY]["evses_stopped"] == {"2": "CSMS"}

    again = Drive(built, [1, 2, 3])
    assert again.engine.restore(statefile.load(path)) == [AVAILABILITY]
    again.run(2.0)
    assert held(again, 2) and again.engine.stopped_evses == {2: "CSMS"}
    others_go_on(again)
    command(again, ask(gate_of(built), "start", evse=2, remote_id=8))
    assert not held(again, 2) and again.engine.stopped_evses == {}


def test_a_site_of_one_charger_takes_evse_1_as_the_whole_site(tmp_path: Path) -> None:
    """On a site of one charger EVSE 1 is the site: naming it holds everything (its outputs have no prefix)."""
    from runtime.site import build_site
    from tests.runtime.helpers import bundled_site_copy

    built = build_site(bundled_site_copy(tmp_path))
    e = built.engine()
    g = gate_of(built)
    e.step(0, [], [ask(g, "availability", operative=False, evse=1)])
    assert e.availability.operative is False and e.availability.out == {}
    e.step(e.period_us, [], [ask(g, "stop", evse=1), ask(g, "availability", operative=True, evse=1)])
    assert e.stopped_by == "CSMS" and e.stopped_evses == {}
    res = e.step(2 * e.period_us, [])
    assert res.outputs["inverter.setpoint"] == 0.0 and res.outputs["inverter.enable"] is False


class Socket:
    """The runtime's own control socket server (runtime.iothread.ControlServer) on its own loop, staging
    what it accepts as the runner's control queue does."""

    def __init__(self, path: Path) -> None:
        self.staged: list[Command] = []
        self.path = path
        self.server = ControlServer(path, self.staged.append, lambda: {"k": 1}, lambda t, v: None, lambda n: {})
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.task = asyncio.run_coroutine_threadsafe(self.server.serve(), self.loop)
        wait_for(path.exists, 10, "the control socket")

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.task.cancel)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def test_v2g_plc_mode_evse_n_overrides_evse_n_alone_on_a_depot(tmp_path: Path) -> None:
    built = depot(tmp_path)
    sock = Socket(load_site(built.path).control_socket)
    try:
        res = cli("mode", "remote", "--setpoint-w", "-3000", "--evse", "2", "--site", str(built.path), timeout=60)
        assert res.returncode == 0 and json.loads(res.stdout) == {"ok": True}, res.stderr
        res = cli("mode", "local", "--site", str(built.path), timeout=60)  # no --evse: staged, the gate refuses
        assert res.returncode == 0, res.stderr
    finally:
        sock.close()
    named, unnamed = sock.staged
    g = gate_of(built)

    def request(c: Command) -> Request:  # as the runner takes a control command (Runner._commands)
        return Request("op", c.name, CONTROL, str(c.args["by"]), {k: v for k, v in c.args.items() if k != "by"})

    with pytest.raises(Refused, match="mode_request on a depot must name its EVSE"):
        g.check(request(unnamed), 0)
    d = Drive(built, [1, 2, 3])
    d.run(1.0)
    command(d, g.check(request(named), d.now_us))
    assert d.value("evse2.authority.mode") == "remote" and d.setpoints()[2] == -3000.0
    assert d.value("evse1.authority.mode") == "plan" and d.value("evse3.authority.mode") == "plan"
