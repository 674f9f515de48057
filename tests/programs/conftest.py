"""Shared helpers of the program and price tests: a site rig on a simulated clock, a mosquitto broker.

Rig: the shared cycle rig (backtest/rig.py) stepped cycle by cycle (OpenEMS style), with the rest of
the site's tags as inputs a test sets row by row."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from backtest.rig import CycleRig
from runtime.api import Command, Program, SiteInfo
from runtime.engine import StepResult
from runtime.tags import Direction, Quality, TagSpec, TagType, TagUpdate
from tests.peers import MOSQUITTO as MOSQUITTO_INSTALL
from tests.peers import require
from tests.ports import free_port

SITE = SiteInfo("test", 240.0, 60.0, 20_000)  # 20 ms cycle


@pytest.fixture(autouse=True)
def _backtest_cache_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The backtest command's cache of reference runs goes to the test's own directory, never ~/.cache."""
    monkeypatch.setenv("V2G_PLC_CACHE_DIR", str(tmp_path / "backtest-cache"))


# What the rest of the site (drivers, safety, planner, back office) declares, all as inputs here, so a
# table row sets them directly.
INPUTS: tuple[TagSpec, ...] = (
    TagSpec("ev.connected", TagType.BOOL),
    TagSpec("ev.soc", TagType.FLOAT),
    TagSpec("plc.snr", TagType.FLOAT, "dB"),
    TagSpec("plan.power", TagType.FLOAT, "W", Direction.SHARED, stale_after_s=900),
    TagSpec("plan.soc_target", TagType.FLOAT, "", Direction.SHARED, stale_after_s=900),
    TagSpec("plan.interval_end", TagType.FLOAT, "s", Direction.SHARED, stale_after_s=900),
    TagSpec("plan.reserve_soc", TagType.FLOAT, "", Direction.SHARED, stale_after_s=900),
    TagSpec("safety.trip", TagType.STR),
    TagSpec("safety.limit_charge", TagType.FLOAT, "W"),
    TagSpec("safety.limit_discharge", TagType.FLOAT, "W"),
)
OUTPUTS: tuple[TagSpec, ...] = (
    TagSpec("inverter.setpoint", TagType.FLOAT, "W", Direction.OUTPUT, 0.0),
    TagSpec("inverter.enable", TagType.BOOL, "", Direction.OUTPUT, False),
)

GOOD: dict[str, Any] = {
    "ev.connected": True,
    "ev.soc": 0.5,
    "plc.snr": 20.0,
    "plan.power": 5000.0,
    "plan.reserve_soc": 0.2,
    "safety.trip": "",
    "safety.limit_charge": 11000.0,
    "safety.limit_discharge": 11000.0,
}


class Rig(CycleRig):
    """One scan per ``step``, one period apart; a row's values, bad and stale tags as updates."""

    def __init__(
        self,
        programs: Sequence[Program],
        interlocks: Sequence[Program] = (),
        inputs: Sequence[TagSpec] = INPUTS,
        extra: Sequence[TagSpec] = (),
    ):
        super().__init__(SITE, programs, interlocks, (*inputs, *OUTPUTS, *extra))

    def step(  # type: ignore[override]
        self,
        values: Mapping[str, Any] = {},
        bad: Sequence[str] = (),
        stale: Sequence[str] = (),
        commands: Sequence[Command] = (),
    ) -> StepResult:
        ups = [TagUpdate(n, v) for n, v in values.items()]
        ups += [TagUpdate(n, None, Quality.BAD) for n in bad]
        ups += [TagUpdate(n, values.get(n, 0), Quality.STALE) for n in stale]
        res = super().step(ups, commands)
        self.advance()
        return res

    def value(self, name: str) -> Any:
        assert self.last is not None
        return self.last.image[name].value

    def transitions(self) -> list[dict[str, Any]]:
        assert self.last is not None
        return [e.as_json() for e in self.last.events if e.kind == "transition"]


# -- a real MQTT broker ----------------------------------------------------------------------------------


MOSQUITTO = "/usr/sbin/mosquitto"


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[int]:
    """A mosquitto broker on a free loopback port; yields the port once it accepts connections."""
    require("mosquitto", Path(MOSQUITTO).exists(), MOSQUITTO_INSTALL)
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while True:  # poll for readiness with a deadline, no fixed sleep
        if proc.poll() is not None:
            raise RuntimeError(f"mosquitto exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("mosquitto did not accept connections within 10 s") from None
            time.sleep(0.01)  # poll interval of the readiness loop
    try:
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
