"""A depot and its OCPP station in simulated time: the engine stepped through Engine.step (tests/depot/drive.py:
every charger follows its committed set point), the station of the site's ``ocpp`` task fed every cycle's
image through a real TaskContext and linked over a real WebSocket to a real CSMS on a free loopback port.

What the task channel carries is carried here the same way: the station's shared-tag writes land at the
next cycle start, and its commands pass the runner's gate (task types, ``commands.allow``, the EVSE check,
every interlock's verdict) before they reach the step that applies them; the answer follows that step.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from runtime.api import Command
from runtime.commands import CONTROL, Gate, Refused, Request
from runtime.engine import StepResult
from runtime.site import BuiltSite, build_site
from runtime.tags import Quality, TagUpdate
from runtime.tasks.base import TaskContext
from runtime.tasks.ocpp.protocol import VERSIONS
from runtime.tasks.ocpp.station import Station
from runtime.tasks.ocpp.task import OcppTask
from tests.depot.drive import Drive
from tests.depot.sites import depot_site

START = dt.datetime(2027, 1, 4, 17, 0, tzinfo=dt.UTC)
PW = "0123456789abcdef-operator"
ALLOW = "[availability, start, stop, reset, mode_request, der_control]"


def ocpp_depot_site(
    tmp: Path, csms_port: int, n: int = 3, import_w: float = 30_000, export_w: float = 20_000, identity: str = "DEPOT-1"
) -> Path:
    """tests/depot/sites.py's depot with the mode authority in each EVSE's programs, the back office's
    limits in each EVSE's safety (``ocpp.limit_*``, EVSE n's own through the EVSE view), the allocator on
    the back office's connection limits, and one OCPP station for the whole depot."""
    path = depot_site(tmp, n, import_w=import_w, export_w=export_w)
    text = path.read_text()
    text = text.replace("    programs:\n", "    programs:\n      - {type: authority, name: authority}\n", 1)
    text = text.replace(
        "          thermal: {tag: null}\n",
        "          thermal: {tag: null}\n"
        "          limits: {external: [{name: ocpp, charge_tag: ocpp.limit_charge, discharge_tag: ocpp.limit_discharge}]}\n",
        1,
    )
    text = text.replace(
        f"params: {{import_limit_w: {import_w}, export_limit_w: {export_w}}}\nsafety:",
        f"params: {{import_limit_w: {import_w}, export_limit_w: {export_w}, margin_w: 0,\n"
        "             import_limit_tags: [ocpp.connection_import_w], export_limit_tags: [ocpp.connection_export_w]}\nsafety:",
        1,
    )
    (tmp / "password").write_text(PW + "\n")
    text += f"""\
tasks:
  - type: ocpp
    name: backoffice
    params:
      csms_url: ws://127.0.0.1:{csms_port}/ocpp
      identity: {identity}
      security_profile: 1
      password_file: password
      state_dir: {tmp / "ocpp"}
      sample_floor_s: 0
      call_timeout_s: 5
      tags: {{energy_import: inverter.energy_import, energy_export: inverter.energy_export}}
      variables: {{RetryBackOffWaitMinimum: 1, RetryBackOffRandomRange: 0, RetryBackOffRepeatTimes: 0}}
commands:
  allow:
    ocpp: {ALLOW}
"""
    path.write_text(text)
    return path


class DepotOcpp:
    def __init__(self, site: Path, runtime_id: str = "runtime-1") -> None:
        self.built: BuiltSite = build_site(site)
        self.task = next(t for t in self.built.tasks if isinstance(t, OcppTask))
        self.ids = list(self.task.params.evses)
        self.drive = Drive(self.built, self.ids)
        for n in self.ids:
            self.drive.evse[n].update(
                {"ev.connected": False, "inverter.energy_import": 0.0, "inverter.energy_export": 0.0}
            )
        self.drive.building = 5_000.0
        self.gate = Gate({"backoffice": "ocpp"}, self.built.loaded.config.commands, False, self.drive.period_us)
        self.gate.validators = [f for f in (getattr(i, "check_command", None) for i in self.built.interlocks) if f]
        self.writes: dict[str, tuple[Any, Quality]] = {}
        self.pending: list[tuple[Command, asyncio.Future[tuple[bool, str]]]] = []
        self.refusals: list[str] = []
        self.runtime_id = runtime_id
        self.station: Station | None = None
        self.cx: TaskContext | None = None
        self._task: asyncio.Task[None] | None = None

    # -- the task channel
    def _send(self, tag: str, value: Any, quality: Quality) -> None:
        self.writes[tag] = (value, quality)

    async def _command(self, source: str, kind: str, args: Mapping[str, Any], by: str) -> tuple[bool, str]:
        return await self.ask(Request(str(len(self.pending)), kind, source, by, dict(args)))

    async def ask(self, r: Request) -> tuple[bool, str]:
        try:
            c = self.gate.check(r, self.drive.now_us)
        except Refused as exc:
            self.refusals.append(f"{r.kind} {dict(r.args)}: {exc}")
            logging.getLogger("v2g_plc.runner").warning("command %s from %s refused: %s", r.kind, r.source, exc)
            return False, str(exc)
        done: asyncio.Future[tuple[bool, str]] = asyncio.get_running_loop().create_future()
        self.pending.append((c, done))
        return await done

    async def operator(self, **args: Any) -> None:
        """An operator's mode request from the control socket (outranks the back office)."""
        asked = asyncio.ensure_future(self.ask(Request("op", "mode_request", CONTROL, "operator", args)))
        while not asked.done():  # applied by the next step, as the runner applies a control-socket command
            await self.step()
        ok, why = asked.result()
        assert ok, why

    # -- the station
    async def start(self) -> DepotOcpp:
        self.cx = TaskContext(
            "backoffice", self._send, START, logging.getLogger("test.ocpp"), self._command, False, self.runtime_id
        )
        self.station = Station(
            self.task.params, self.task.state_dir(), 240.0, 1, list(VERSIONS.values())
        )  # 2.1 first, then 2.0.1
        self._task = asyncio.create_task(self.station.run(self.cx))
        for _ in range(3):
            await asyncio.sleep(0)
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._task, 5)
        self._task = None

    # -- the scan
    async def step(self) -> StepResult:
        d = self.drive
        cmds, self.pending = self.pending, []
        shared = [TagUpdate(k, v, q) for k, (v, q) in self.writes.items()]
        self.writes = {}
        ups = d.updates() + shared
        res = d.engine.step(d.now_us, ups, [c for c, _ in cmds])
        for n in self.ids:  # the chargers follow; their energy registers count
            on = res.outputs[f"evse{n}.inverter.enable"]
            p = d.power[n] = res.outputs[f"evse{n}.inverter.setpoint"] if on else 0.0
            key = "inverter.energy_import" if p > 0 else "inverter.energy_export"
            d.evse[n][key] += abs(p) * d.period_us / 3.6e9
        d.now_us += d.period_us
        d.last = res
        for _, done in cmds:
            if not done.done():
                done.set_result((True, ""))
        assert self.cx is not None
        await self.cx._publish(res.image, d.now_us)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return res

    async def run(self, seconds: float) -> StepResult:
        res = None
        for _ in range(round(seconds * 1e6 / self.drive.period_us)):
            res = await self.step()
        assert res is not None
        return res

    async def run_until(self, pred: Any, within_s: float, what: str = "condition") -> None:
        """Step (simulated time) until ``pred()`` holds, giving the WebSocket real time between cycles."""
        loop = asyncio.get_running_loop()
        end = loop.time() + within_s
        while not pred():
            if loop.time() > end:
                raise AssertionError(f"{what} not met within {within_s} s")
            await self.step()
            await asyncio.sleep(0.002)

    def value(self, name: str) -> Any:
        return self.drive.value(name)

    def site_import(self) -> float:
        return self.drive.building + sum(self.drive.power.values())
