"""Drive the OCPP station outside the task process: a real TaskContext fed with images (data, not a peer
mock), the station's real WebSocket to a real CSMS on a free loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runtime.tags import US, Image, Quality, TagValue
from runtime.tasks.base import TaskContext
from runtime.tasks.ocpp.protocol import VERSIONS
from runtime.tasks.ocpp.station import Station
from runtime.tasks.ocpp.variables import OcppParams

START = dt.datetime(2027, 1, 4, 17, 30, tzinfo=dt.UTC)

# A plugged-in EV charging at 7 kW: the tags the station reads, as the scan publishes them.
PLUGGED = {
    "ev.connected": True,
    "inverter.power": 7000.0,
    "inverter.setpoint": 7000.0,
    "meter.energy_import": 1000.0,
    "meter.energy_export": 500.0,
    "ev.soc": 0.5,
    "grid.voltage": 240.0,
    "safety.trip": "",
}


def params(url: str, state_dir: Path, **kw: Any) -> OcppParams:
    base: dict[str, Any] = {
        "csms_url": url,
        "identity": "CP-1",
        "security_profile": 1,
        "password_file": None,
        "state_dir": str(state_dir),
        "call_timeout_s": 5,
        "sample_floor_s": 0.0,  # images come faster than real time here
        "variables": {"RetryBackOffWaitMinimum": 1, "RetryBackOffRandomRange": 0, "RetryBackOffRepeatTimes": 0},
    }
    if "variables" in kw:
        base["variables"] = {**base["variables"], **kw.pop("variables")}
    base.update(kw)
    if base["security_profile"] in (1, 2) and base["password_file"] is None:
        pw = state_dir.parent / "operator-password"
        pw.parent.mkdir(parents=True, exist_ok=True)
        pw.write_text("0123456789abcdef-operator\n")
        base["password_file"] = str(pw)
    return OcppParams(**base)


class Harness:
    def __init__(
        self,
        p: OcppParams,
        voltage: float = 240.0,
        phases: int = 1,
        runtime_id: str = "runtime-1",
        events: bool = False,
    ) -> None:
        """``runtime_id``: the runtime start this station belongs to; a second Harness on the same state
        with the same id is a task-process restart, with another id a runtime start. ``events``: the
        station reads the event stream (fed by ``cx._event``)."""
        self.writes: dict[str, Any] = {}
        self.quality: dict[str, Quality] = {}
        # the commands the station asked the scan for, and the scan's answer to each (a test may change it)
        self.commands: list[tuple[str, dict[str, Any]]] = []
        self.answer: Callable[[str, dict[str, Any]], tuple[bool, str]] = lambda kind, args: (True, "")
        self.cx = TaskContext(
            "ocpp", self._send, START, logging.getLogger("test.ocpp"), self._command, events, runtime_id
        )
        self.station = Station(p, Path(p.state_dir), voltage, phases, list(VERSIONS.values()))  # 2.1, 2.0.1
        self.now_us = 0
        self.values = dict(PLUGGED, **{"ev.connected": False, "inverter.power": 0.0, "inverter.setpoint": 0.0})
        self._task: asyncio.Task[None] | None = None

    async def _command(self, source: str, kind: str, args: Any, by: str) -> tuple[bool, str]:
        self.commands.append((kind, dict(args)))
        return self.answer(kind, dict(args))

    def _send(self, tag: str, value: Any, quality: Quality) -> None:
        self.writes[tag] = value
        self.quality[tag] = quality

    async def start(self) -> Harness:
        self._task = asyncio.create_task(self.station.run(self.cx))
        for _ in range(3):  # let the image loop reach its wait: the scan publishes every cycle, we only once
            await asyncio.sleep(0)
        return self

    async def publish(self, dt_s: float = 1.0, **changes: Any) -> None:
        """One published image ``dt_s`` of cycle clock after the previous one."""
        self.values.update({k.replace("__", "."): v for k, v in changes.items()})
        self.now_us += int(dt_s * US)
        img = Image({k: TagValue(v, Quality.GOOD, self.now_us) for k, v in self.values.items()})
        await self.cx._publish(img, self.now_us)
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._task, 5)


async def until(pred: Callable[[], bool], timeout_s: float = 10.0, poll_s: float = 0.01) -> None:
    """Poll a condition with a bounded deadline (no sleep as synchronisation)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while not pred():
        if loop.time() > end:
            raise AssertionError(f"condition not met within {timeout_s:.1f} s")
        await asyncio.sleep(poll_s)


def plugged(**over: Any) -> dict[str, Any]:
    """Keyword arguments for ``Harness.publish``: the PLUGGED image with some tags changed."""
    return {**{k.replace(".", "__"): v for k, v in PLUGGED.items()}, **over}
