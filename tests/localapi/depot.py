"""A depot as a local API task sees it, for the depot tests of every interface: three EVSEs' tags in the
site's names, and the scan's side of the channel that keeps every command and shared-tag write."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any

from runtime.tasks.base import TaskContext
from tests.localapi.test_modbus_server import GOOD_TAGS

RATING = {"import_limit_w": 100_000.0, "export_limit_w": 60_000.0, "expiry_s": 60.0}


class Recorder:
    """The scan's side for a task on its own: every command accepted and kept, every shared-tag write kept.
    (Not the real gate: until runtime/commands.py knows ``evse``, the gate refuses it as unknown.)"""

    def __init__(self) -> None:
        self.commands: list[tuple[str, dict[str, Any], str]] = []
        self.writes: list[tuple[str, Any]] = []

    async def __call__(self, source: str, kind: str, args: Mapping[str, Any], by: str) -> tuple[bool, str]:
        self.commands.append((kind, dict(args), by))
        return True, ""

    def context(self, name: str = "modbus", events: bool = False) -> TaskContext:
        return TaskContext(
            name,
            lambda tag, value, q: self.writes.append((tag, value)),
            dt.datetime(2027, 1, 4),
            logging.getLogger("t"),
            command=self,
            events=events,
        )

    def last(self, tag: str) -> Any:
        return next((v for t, v in reversed(self.writes) if t == tag), None)


def depot_tags() -> dict[str, Any]:
    """Three EVSEs: 1 charging 7 kW, 2 discharging 4 kW, 3 idle at 0 W; EVSE 2 tripped, EVSE 1 cut."""
    tags: dict[str, Any] = {
        "meter.power": 48_000.0,
        "meter.voltage": 240.5,
        "meter.frequency": 60.01,
        "connection.building_w": 45_000.0,
        "fleet.status": "optimal",
        "fleet.reason": "",
        "fleet.shortfall_kwh": 1.5,
        "prices.real_time": 95.67,
    }
    for n, power in ((1, 7000.0), (2, -4000.0), (3, 0.0)):
        for name, value in GOOD_TAGS.items():
            if not name.startswith("prices."):
                tags[f"evse{n}.{name}"] = value
        tags[f"evse{n}.inverter.power"] = power
        tags[f"evse{n}.inverter.setpoint"] = power
        tags[f"evse{n}.ev.soc"] = 0.1 * n
        tags[f"evse{n}.alloc.cut"] = "import" if n == 1 else ""
    tags["evse2.safety.trip"] = "comms_lost"
    return tags
