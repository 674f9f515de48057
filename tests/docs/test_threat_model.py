"""The security boundary of docs/threat-model.md: what the network-facing task process can never do.

The task process talks to networks (price feeds, MQTT, the back office), so everything it sends is
treated as hostile data. These tests drive the scan side of the task channel and the engine with the
messages a compromised task process could send, and check that none of them reaches an output, a
command or a protection setting.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from runtime.api import Cycle, Program, SiteInfo
from runtime.engine import RUNTIME_TAGS, Engine, tag_table
from runtime.site import build_site, bundled_site
from runtime.tags import Direction, TagSpec, TagType, TagUpdate
from runtime.taskproc import TaskChannel
from tests.safety.rig import Rig

SITE = SiteInfo("threat", 240.0, 60.0, 20_000)


@pytest.fixture
def channel_pair() -> Iterator[tuple[TaskChannel, socket.socket, frozenset[str]]]:
    """The scan's end of the channel, allowing what the bundled site's tasks declare (as the runner does),
    and the socket a task process would hold."""
    built = build_site(bundled_site())
    shared = frozenset(s.name for t in built.tasks for s in t.declare() if s.direction is Direction.SHARED)
    assert shared, "the bundled site's tasks declare shared tags"
    scan_end, task_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ch = TaskChannel(shared)
    ch.attach(scan_end)
    try:
        yield ch, task_end, shared
    finally:
        task_end.close()
        ch.detach()


def _send(sock: socket.socket, msg: Any) -> None:
    sock.send(json.dumps(msg).encode())


def test_task_writes_to_outputs_memory_and_inputs_are_refused(channel_pair) -> None:
    ch, task_end, shared = channel_pair
    built = build_site(bundled_site())
    others = sorted(n for n in built.tags.specs if n not in shared)
    assert {"inverter.setpoint", "inverter.enable", "safety.trip", "runtime.fault", "grid.voltage"} <= set(others)
    one_shared = sorted(shared)[0]
    _send(task_end, ["w", [[n, 0, "good"] for n in others] + [[one_shared, 1.0, "good"]]])
    got = ch.drain()
    assert [u.name for u in got] == [one_shared]


@pytest.mark.parametrize(
    "msg",
    [
        ["force", [["inverter.setpoint", -7000.0]]],
        ["reset_trip", {"by": "a task"}],
        ["settings", {"safety": {"voltage": {"ov1": {"threshold": 1.2}}}}],
        ["cmd", "unforce", "ev.soc"],
        {"w": [["inverter.enable", True, "good"]]},
        "w",
    ],
    ids=["force", "reset_trip", "settings", "cmd", "dict", "bare"],
)
def test_the_task_channel_carries_no_commands_and_no_settings(channel_pair, msg: Any) -> None:
    """Only shared-tag writes exist on the channel today; anything else is dropped whole, and the scan
    side goes on reading the next message."""
    ch, task_end, shared = channel_pair
    _send(task_end, msg)
    name = sorted(shared)[0]
    _send(task_end, ["w", [[name, 2.0, "good"]]])
    assert [(u.name, u.value) for u in ch.drain()] == [(name, 2.0)]


class Asks(Program):
    """A program asking for a fixed set point and permit: what the scan decided, not the task."""

    def __init__(self, setpoint: float) -> None:
        super().__init__("asks", Program.Params(), SITE)
        self.setpoint = setpoint

    def declare(self) -> list[TagSpec]:
        return [TagSpec("asks.note", TagType.STR, "", Direction.MEMORY, "")]

    def scan(self, cx: Cycle) -> None:
        cx.out["inverter.setpoint"] = self.setpoint
        cx.out["inverter.enable"] = True
        cx.out["asks.note"] = "mine"


@pytest.mark.parametrize("setpoint", [-7000.0, 0.0, 7000.0])
def test_staged_writes_never_land_on_outputs_or_memory(setpoint: float) -> None:
    """Second layer: even a write the channel let through cannot touch an output or a memory tag; the
    engine applies staged updates to inputs only."""
    outs = [
        TagSpec("inverter.setpoint", TagType.FLOAT, "W", Direction.OUTPUT, 0.0),
        TagSpec("inverter.enable", TagType.BOOL, "", Direction.OUTPUT, False),
    ]
    prog = Asks(setpoint)
    eng = Engine(SITE, tag_table(("rt", RUNTIME_TAGS), ("outs", outs), ("asks", prog.declare())), [prog])
    hostile = [
        TagUpdate("inverter.setpoint", -setpoint or 11000.0),
        TagUpdate("inverter.enable", False),
        TagUpdate("asks.note", "theirs"),
        TagUpdate("runtime.fault", "cleared by a task"),
    ]
    for k in range(3):
        res = eng.step(k * SITE.period_us, hostile)
        assert res.outputs == {"inverter.setpoint": setpoint, "inverter.enable": True}
        assert res.image["asks.note"].value == "mine"
        assert res.image["runtime.fault"].value == ""


def _limit_rig() -> Rig:
    ext = [
        TagSpec("backoffice.limit_charge", unit="W", direction=Direction.SHARED, stale_after_s=5.0),
        TagSpec("backoffice.limit_discharge", unit="W", direction=Direction.SHARED, stale_after_s=5.0),
    ]
    lim = {"name": "backoffice", "charge_tag": ext[0].name, "discharge_tag": ext[1].name}
    rig = Rig(extra_inputs=ext, limits={"external": [lim]})
    rig.set(backoffice__limit_charge=0.0, backoffice__limit_discharge=0.0)
    rig.settle()
    return rig


@pytest.mark.parametrize("request_w", [-11000.0, 0.0, 11000.0])
def test_an_external_limit_from_a_task_only_tightens(request_w: float) -> None:
    """A task publishes external limits (the back office). However large the value it sends, the limit
    in force never exceeds the ratings; a negative value is not a limit but a fault (fallback 0 W)."""
    rig = _limit_rig()
    rig.req.setpoint = request_w
    rig.set(backoffice__limit_charge=1e12, backoffice__limit_discharge=1e12, inverter__max_charge_w=8000.0)
    res = rig.run(0.1)[-1]
    assert res.outputs["safety.limit_charge"] == 8000.0  # the device's own rating, not the task's number
    assert res.outputs["safety.limit_discharge"] == 11000.0
    assert res.outputs["inverter.setpoint"] == max(-11000.0, min(8000.0, request_w))
    rig.set(backoffice__limit_charge=-5.0, backoffice__limit_discharge=-5.0)
    res = rig.run(0.1)[-1]
    assert res.outputs["safety.limit_charge"] == 0.0 and res.outputs["safety.limit_discharge"] == 0.0
    sp = res.outputs["inverter.setpoint"]
    assert sp == 0.0 and str(sp) == "0.0"  # exactly zero, never -0.0
