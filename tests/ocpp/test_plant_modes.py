"""Every OCPP 2.1 operation mode end to end, as far as the virtual plant's inverter.

A CSMS (the `ocpp` package's v21 central system, runtime/tasks/ocpp/local_csms.py, real WebSockets on a
free port) sends one charging profile per operation mode to a real ``v2g-plc run`` of the bundled site
(its authority, modes, dispatch and safety as `make run` has them). The virtual plant runs on the test's
own loop (``--no-plant`` for the runtime: the plant is a Modbus peer either way), so the test reads what
the runtime wrote into the inverter's set point register (``Plant.setpoint_w``) and what the power stage
then does (``Plant.power_w``), and steps the plant itself: the grid frequency, the EV's SoC.

What tests/ocpp/test_commands.py already proves (a CentralSetpoint of both signs and zero reaching the
committed ``inverter.setpoint``, handed back on link loss) is not repeated tag by tag; here every mode is
followed to the register: CentralSetpoint with its sign and the SoC window's clamp, Idle, ChargingOnly and
ExternalLimits (the local plan within the CSMS's limits), ExternalSetpoint with a SunSpec EMS's request
over the local API, CentralFrequency and LocalFrequency following a frequency step in the plant, and the
fallback when the CSMS goes away and ``maxOfflineDuration`` runs out.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sunspec2.modbus.client as ssc
import yaml

from runtime.sim.config import load_plant
from runtime.sim.server import VirtualPlant
from runtime.tasks.ocpp.local_csms import LocalCsms
from tests.ocpp.test_commands import PW, bundled_site_on, tag
from tests.ports import free_port
from tests.runtime.helpers import ROOT

BOTH = ("ocpp2.1", "ocpp2.0.1")
DIAGNOSE = (
    "mode.state",
    "mode.clamp",
    "authority.reason",
    "safety.reason",
    "ocpp.operation_mode",
    "ocpp.limit_charge",
    "ocpp.limit_discharge",
    "plan.reserve_soc",
)  # what a failure prints beside the plant's register
TOL_W = 2.0  # the SunSpec WSet register holds whole watts (W_SF 0): a value crosses it rounded

# An IEEE 1547-style frequency-watt curve (OCPP 2.1 v2xFreqWattCurve): a dead band of +-0.036 Hz around
# 60 Hz (IEEE 1547-2018 Table 24, db default), 6 kW of discharge at 59.5 Hz and of charge at 60.5 Hz.
CURVE = [{"frequency": 59.5, "power": -6000.0}, {"frequency": 59.964, "power": 0.0},
         {"frequency": 60.036, "power": 0.0}, {"frequency": 60.5, "power": 6000.0}]  # fmt: skip


def curve_at(hz: float) -> float:
    """The curve above, by hand: linear between its points, held beyond them."""
    pts = [(p["frequency"], p["power"]) for p in CURVE]
    if hz <= pts[0][0]:
        return pts[0][1]
    if hz >= pts[-1][0]:
        return pts[-1][1]
    for (f0, w0), (f1, w1) in itertools.pairwise(pts):
        if f0 <= hz <= f1:
            return w0 + (w1 - w0) * (hz - f0) / (f1 - f0)
    raise AssertionError("unreachable")


def profile(pid: int, period: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A TxDefaultProfile with one period from the transaction's start (Relative: on the site's calendar,
    which is the plant's), stack level 0: each new one with the same id replaces the previous."""
    return {"id": pid, "stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile", "chargingProfileKind": "Relative",
            "chargingSchedule": [{"id": 1, "chargingRateUnit": "W",
                                  "chargingSchedulePeriod": [{"startPeriod": 0, **period}]}], **extra}  # fmt: skip


@dataclass
class Rig:
    csms: LocalCsms
    plant: VirtualPlant
    proc: subprocess.Popen[bytes]
    sock: Path
    api_port: int

    async def send(self, prof: dict[str, Any]) -> None:
        res = await self.csms.stations["CP-RT"].request("SetChargingProfile", {"evseId": 1, "chargingProfile": prof})
        assert res["status"] == "Accepted", res

    async def tag(self, name: str) -> Any:
        return await tag(self.sock, name)

    async def register_becomes(self, want: float, within_s: float = 20.0, what: str = "") -> None:
        """The inverter's set point register holds ``want`` (the runtime wrote it over Modbus)."""
        await self.until(lambda: abs(self.plant.plant.setpoint_w - want) <= TOL_W, within_s, f"WSet {want} {what}")

    async def power_becomes(self, want: float, within_s: float = 10.0) -> None:
        """The power stage follows its register (first order, 0.3 s, on the plant's clock)."""
        await self.until(lambda: abs(self.plant.plant.power_w - want) < 50.0, within_s, f"power {want}")

    async def tag_becomes(self, name: str, want: Any, within_s: float) -> None:
        end = asyncio.get_running_loop().time() + within_s
        while (got := await self.tag(name)) != want:
            assert asyncio.get_running_loop().time() < end, f"{name} is {got!r}, expected {want!r}"
            await asyncio.sleep(0.05)

    async def until(self, pred: Callable[[], bool], within_s: float, what: str) -> None:
        end = asyncio.get_running_loop().time() + within_s
        while not pred():
            if asyncio.get_running_loop().time() > end:
                p = self.plant.plant
                seen = {n: await self.tag(n) for n in DIAGNOSE}
                raise AssertionError(
                    f"{what}: plant setpoint {p.setpoint_w} power {p.power_w:.0f} enabled {p.enabled}; {seen}"
                )
            await asyncio.sleep(0.02)

    async def holds(self, lo: float, hi: float, seconds: float) -> list[float]:
        """The register stays within [lo, hi] for ``seconds`` (sampled every 20 ms); what it held."""
        seen: list[float] = []
        end = asyncio.get_running_loop().time() + seconds
        while asyncio.get_running_loop().time() < end:
            w = self.plant.plant.setpoint_w
            assert lo - TOL_W <= w <= hi + TOL_W, f"plant set point {w} outside [{lo}, {hi}]"
            seen.append(w)
            await asyncio.sleep(0.02)
        return seen


def site_for(tmp: Path, csms_port: int, api_port: int) -> Path:
    """The bundled site on free ports, its back office at ``csms_port``, and a local EMS that may write
    (SunSpec 704 WSet over the local API's Modbus server: docs/local-api.md) and ask for a mode."""
    path = bundled_site_on(tmp, csms_port)
    site = yaml.safe_load(path.read_text())
    for t in site["tasks"]:
        if t["type"] == "localapi_modbus":
            t["params"].update(port=api_port, allow=[{"address": "127.0.0.1", "role": "read_write"}])
        if t["type"] == "ocpp":  # a returning CSMS is found within a second or two, not after a long back-off
            t["params"]["variables"] = {"RetryBackOffWaitMinimum": 1, "RetryBackOffRandomRange": 0,
                                        "RetryBackOffRepeatTimes": 0}  # fmt: skip
    site["commands"]["allow"]["localapi_modbus"] = ["mode_request"]
    # Not the HMI or the metrics: no mode goes through them, and a task process importing everything missed
    # its 20 s start-up grace again and again at a load average of 30 (task_process.startup_grace_s, now 60 s by default).
    site["tasks"] = [t for t in site["tasks"] if t["type"] not in ("hmi", "localapi_metrics")]
    # A steady plant (the EV plugged in, as the plant starts): the test steps it itself. The bundled scenario's
    # own frequency ramp, run at x20 beside a loaded machine's jitter, tripped the ROCOF protection once.
    site["plant"]["params"].pop("scenario", None)
    # A task process that imports slowly on a loaded machine is not hung (the default 2 s killed it twice in
    # a row at a load average of 30 on two CPUs, and the station never reached the CSMS within a minute).
    site["task_process"] = {"heartbeat_s": 30.0}
    path.write_text(yaml.safe_dump(site, sort_keys=False))
    return path


@contextlib.asynccontextmanager
async def plant_site(tmp: Path, speed: int = 1) -> AsyncIterator[Rig]:
    """The CSMS, the plant (on this loop) and the runtime (its own process, ``--no-plant``), all stopped in
    bounded time whatever happens."""
    csms = await LocalCsms("127.0.0.1", free_port(), passwords={"CP-RT": PW}, subprotocols=BOTH).start()
    api_port = free_port()
    site = site_for(tmp, csms.port, api_port)
    plant = load_plant(site)
    await plant.start()
    stop = asyncio.Event()
    stepper = asyncio.create_task(plant.run_realtime(speed, stop))
    log = tmp / "stderr.log"  # a file: the bundled site logs more than a pipe holds unread
    with log.open("w") as errf:
        cmd = [sys.executable, "-m", "runtime.cli", "run", str(site), "--no-watch", "--no-plant", "--speed", str(speed)]
        proc = subprocess.Popen(cmd, cwd=ROOT, stderr=errf)
    rig = Rig(csms, plant, proc, tmp / "var" / "control.sock", api_port)
    try:
        await csms.wait_for(lambda: "CP-RT" in csms.stations and bool(csms.actions("TransactionEvent")), 180)
        yield rig
    except BaseException as e:
        raise AssertionError(f"{e}\n--- runtime stderr ---\n{log.read_text()[-4000:]}") from e
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(proc.wait, 30)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.wait, 10)
        stop.set()
        await asyncio.wait_for(stepper, 5)
        await plant.stop()
        await csms.close()


def ems_write(port: int, **points: float) -> None:
    """A SunSpec EMS (pysunspec2, its own client) writes model 704's points on the local API."""
    d = ssc.SunSpecModbusClientDeviceTCP(slave_id=1, ipaddr="127.0.0.1", ipport=port, timeout=2)
    try:
        d.scan()
        ctl = d.models[704][0]
        for name, value in points.items():
            getattr(ctl, name).cvalue = value
        ctl.write()
    finally:
        d.close()


def test_every_operation_mode_reaches_the_plants_inverter(tmp_path: Path) -> None:
    """One site, one CSMS, the profiles one after the other; after each, the inverter's register (and for
    the set point modes its power) follows, with the sign, the clamps and the limits the mode asks for."""

    async def main() -> None:
        async with plant_site(tmp_path) as rig:
            p = rig.plant.plant
            # CentralSetpoint: the signed set point at the inverter, both signs and zero; the power follows
            for w in (3000.0, 0.0, -4000.0):
                await rig.send(profile(1, {"operationMode": "CentralSetpoint", "setpoint": w, "limit": 11000.0,
                                           "dischargeLimit": -11000.0}))  # fmt: skip
                await rig.register_becomes(w, what="CentralSetpoint")
                await rig.power_becomes(w)
            # ... clamped by the CSMS's own limit (the station sends the set point within it; the safety
            # layer's external limit has it too)
            await rig.send(profile(1, {"operationMode": "CentralSetpoint", "setpoint": 9000.0, "limit": 2500.0,
                                       "dischargeLimit": -11000.0}))  # fmt: skip
            await rig.register_becomes(2500.0, what="CentralSetpoint over the CSMS's limit")
            # ... and by the SoC window: at 95 % (above soc_max 0.9) no charging, discharge still open
            soc0 = p.soc
            p.soc = 0.95
            await rig.register_becomes(0.0, what="charging clamped at the SoC window's top")
            assert await rig.tag("mode.state") == "remote" and await rig.tag("mode.clamp")
            await rig.send(profile(1, {"operationMode": "CentralSetpoint", "setpoint": -3000.0, "limit": 11000.0,
                                       "dischargeLimit": -11000.0}))  # fmt: skip
            await rig.register_becomes(-3000.0, what="discharge open at the SoC window's top")
            p.soc = soc0
            # Idle: zero power, from discharging
            await rig.send(profile(1, {"operationMode": "Idle"}))
            await rig.register_becomes(0.0, what="Idle")
            await rig.holds(0.0, 0.0, 1.0)
            # ChargingOnly: the local plan within the limit, never a discharge (from -4000 W first)
            await rig.send(profile(1, {"operationMode": "CentralSetpoint", "setpoint": -4000.0}))
            await rig.register_becomes(-4000.0, what="discharging before ChargingOnly")
            await rig.send(profile(1, {"operationMode": "ChargingOnly", "limit": 2000.0}))
            # the limits reach the safety layer first (it clamps the remote -4000 W to 0 in that cycle), then
            # the station's hand-back reaches the authority: the plan is in charge from then on
            await rig.tag_becomes("authority.mode", "plan", 20)
            await rig.until(lambda: -TOL_W <= p.setpoint_w <= 2000.0 + TOL_W, 20, "ChargingOnly within [0, 2000]")
            assert await rig.tag("ocpp.limit_discharge") == 0.0
            await rig.holds(0.0, 2000.0, 2.0)
            # ExternalLimits: the local plan within limit and dischargeLimit (from +6000 W first)
            await rig.send(profile(1, {"operationMode": "CentralSetpoint", "setpoint": 6000.0}))
            await rig.register_becomes(6000.0, what="charging before ExternalLimits")
            await rig.send(profile(1, {"operationMode": "ExternalLimits", "limit": 1500.0, "dischargeLimit": -1000.0}))
            await rig.tag_becomes("authority.mode", "plan", 20)
            await rig.until(lambda: -1000.0 - TOL_W <= p.setpoint_w <= 1500.0 + TOL_W, 20, "ExternalLimits")
            await rig.holds(-1000.0, 1500.0, 2.0)
            # ExternalSetpoint: the local EMS's request (SunSpec WSet + = discharge) within the CSMS's limits
            await asyncio.to_thread(ems_write, rig.api_port, WSetRvrtTms=600, WSet=4000, WSetEna=1)
            await rig.send(profile(1, {"operationMode": "ExternalSetpoint", "limit": 11000.0,
                                       "dischargeLimit": -2500.0}))  # fmt: skip
            await rig.tag_becomes("authority.source", "localapi", 20)
            await rig.register_becomes(-2500.0, what="the EMS's 4 kW discharge within the CSMS's 2.5 kW")
            await asyncio.to_thread(ems_write, rig.api_port, WSet=-1200)
            await rig.register_becomes(1200.0, what="the EMS's 1.2 kW charge")
            # CentralFrequency and LocalFrequency: baseline + the curve at the plant's frequency, each step
            for mode in ("CentralFrequency", "LocalFrequency"):
                await rig.send(profile(1, {"operationMode": mode, "setpoint": 0.0, "v2xBaseline": 1000.0,
                                           "v2xFreqWattCurve": CURVE}))  # fmt: skip
                await rig.tag_becomes("ocpp.operation_mode", mode, 20)
                for hz in (60.0, 59.8, 59.3, 60.02, 60.25, 61.0, 60.0):
                    # ramped at 1 Hz/s, as a grid moves: a step of 0.5 Hz is a ROCOF of 5 Hz/s over the safety
                    # layer's 0.1 s window, beyond the Category III ride-through (3 Hz/s): an islanding trip
                    p.set("grid.frequency", hz, ramp_s=abs(hz - p.grid_f))
                    await rig.register_becomes(1000.0 + curve_at(hz), what=f"{mode} at {hz} Hz")
                assert await rig.tag("mode.state") == "frequency"

    asyncio.run(main())


@pytest.mark.slow  # two more runtimes of the bundled site: about a minute each on a loaded machine
@pytest.mark.parametrize("invalid_after", [False, True])
def test_the_csms_going_away_ends_the_central_mode_at_the_inverter(tmp_path: Path, invalid_after: bool) -> None:
    """CentralSetpoint -3000 W with maxOfflineDuration 60 s, then the CSMS goes away: the inverter leaves
    the central set point at once (the safety layer's back-office supervision zeroes a mode that follows a
    lost link), the profile stays in force until maxOfflineDuration has run out on the cycle clock (the site
    runs at x20), then the site is the local plan's. When the CSMS comes back, a profile without
    invalidAfterOfflineDuration is obeyed again; with it, the profile is gone for good."""

    async def main() -> None:
        async with plant_site(tmp_path, speed=20) as rig:
            await rig.send(profile(1, {"operationMode": "CentralSetpoint", "setpoint": -3000.0}, maxOfflineDuration=60,
                                   invalidAfterOfflineDuration=invalid_after))  # fmt: skip
            await rig.register_becomes(-3000.0, what="CentralSetpoint")
            await rig.csms.close()  # the back office is gone: no reconnect succeeds
            await rig.csms.drop_connections()
            await rig.until(lambda: rig.plant.plant.setpoint_w != -3000.0, 10, "the inverter leaves -3000 W")
            assert await rig.tag("ocpp.operation_mode") == "CentralSetpoint"  # still within maxOfflineDuration
            await rig.tag_becomes("ocpp.operation_mode", "", 30)
            await rig.tag_becomes("authority.mode", "plan", 10)
            assert await rig.tag("mode.state") != "remote" and rig.plant.plant.setpoint_w != -3000.0
            # the back office returns on its address
            back = LocalCsms("127.0.0.1", rig.csms.port, passwords={"CP-RT": PW}, subprotocols=BOTH)
            rig.csms = await back.start()
            await back.wait_for(lambda: "CP-RT" in back.stations, 60)
            if invalid_after:
                res = await back.stations["CP-RT"].request("GetChargingProfiles", {"requestId": 1,
                                                           "chargingProfile": {"chargingProfilePurpose": "TxDefaultProfile"}})  # fmt: skip
                assert res["status"] == "NoProfiles", res  # removed for good when maxOfflineDuration ran out
                assert await rig.tag("ocpp.operation_mode") == "" and await rig.tag("authority.mode") == "plan"
                assert rig.plant.plant.setpoint_w != -3000.0
            else:
                await rig.register_becomes(-3000.0, what="the kept profile in force again")

    asyncio.run(main())
