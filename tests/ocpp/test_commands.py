"""The CSMS's commands through the real runtime: the station (in the real task process) turns
ChangeAvailability, RequestStop/StartTransaction and Reset into typed commands to the scan and answers
with what the scan decided; the outputs follow through safety's last word, for both power signs and zero."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import signal
from pathlib import Path
from typing import Any

import pytest

from runtime.tasks.base import TaskContext
from runtime.tasks.ocpp.local_csms import LocalCsms
from runtime.tasks.ocpp.smart import stamp
from tests.ocpp.harness import START, Harness, params, until
from tests.ocpp.test_in_runtime import SITE as OCPP_SITE
from tests.ports import free_port
from tests.runtime.helpers import ROOT, bundled_site_copy, read_tag, start_cli, stop_cli, write_site

PW = "0123456789abcdef-operator"
ALL = "[availability, start, stop, reset]"


def site_text(port: int, soc: float, allow: str) -> str:
    text = OCPP_SITE.format(port=port).replace("{name: ev.soc, value: 0.5,", f"{{name: ev.soc, value: {soc},")
    program = """\
programs:
  - type: example_copy
    name: follow
    params: {source: ev.soc, target: inverter.setpoint, gain: 10000, declare_target: false}
safety:"""
    return text.replace("safety:", program, 1) + f"commands:\n  allow:\n    ocpp: {allow}\n"


async def tag(sock: Path, name: str) -> Any:
    t = await asyncio.to_thread(read_tag, sock, name)
    return None if not t else t["value"]


async def setpoint_becomes(sock: Path, want: float, within_s: float = 15) -> None:
    end = asyncio.get_running_loop().time() + within_s
    while (got := await tag(sock, "inverter.setpoint")) != want:
        if asyncio.get_running_loop().time() > end:
            raise AssertionError(f"inverter.setpoint {got}, expected {want}")
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("soc", [-0.5, 0.0, 0.5])
def test_availability_stop_start_and_reset_from_the_csms(tmp_path: Path, soc: float) -> None:
    asked = soc * 10000

    async def main() -> tuple[int | None, str]:
        csms = await LocalCsms("127.0.0.1", free_port(), passwords={"CP-RT": PW}).start()
        (tmp_path / "password").write_text(PW + "\n")
        site = write_site(tmp_path, site_text(csms.port, soc, ALL))
        sock = tmp_path / "var" / "control.sock"
        proc = start_cli("run", str(site), env={"V2G_RESET_EXIT": "1"})
        try:
            await csms.wait_for(lambda: "CP-RT" in csms.stations and csms.actions("TransactionEvent"), 30)
            link = csms.stations["CP-RT"]
            await setpoint_becomes(sock, asked)
            res = await link.request("ChangeAvailability", {"operationalStatus": "Inoperative"})
            assert res == {"status": "Accepted"}
            await setpoint_becomes(sock, 0.0)  # 0 W both ways while Inoperative
            await csms.wait_for(
                lambda: csms.actions("StatusNotification")[-1].payload["connectorStatus"] == "Unavailable"
            )
            assert await tag(sock, "runtime.available") is False
            res = await link.request("ChangeAvailability", {"operationalStatus": "Operative"})
            assert res == {"status": "Accepted"}
            await setpoint_becomes(sock, asked)
            tx = csms.actions("TransactionEvent")[0].payload["transactionInfo"]["transactionId"]
            res = await link.request("RequestStopTransaction", {"transactionId": "no-such-transaction"})
            assert res["status"] == "Rejected" and res["statusInfo"]["reasonCode"] == "TxNotFound"
            assert (await link.request("RequestStopTransaction", {"transactionId": tx}))["status"] == "Accepted"
            await setpoint_becomes(sock, 0.0)
            await csms.wait_for(lambda: csms.actions("TransactionEvent")[-1].payload["eventType"] == "Ended")
            ended = csms.actions("TransactionEvent")[-1].payload
            assert ended["triggerReason"] == "RemoteStop" and ended["transactionInfo"]["stoppedReason"] == "Remote"
            start = {"idToken": {"idToken": "CENTRAL-1", "type": "Central"}, "remoteStartId": 42}
            assert (await link.request("RequestStartTransaction", start))["status"] == "Accepted"
            await setpoint_becomes(sock, asked)
            await csms.wait_for(
                lambda: any(
                    r.payload["eventType"] == "Started" and r.payload["transactionInfo"].get("remoteStartId") == 42
                    for r in csms.actions("TransactionEvent")
                )
            )
            assert (await link.request("Reset", {"type": "Immediate"})) == {"status": "Accepted"}
            code = await asyncio.to_thread(proc.wait, 30)
            return code, ""
        finally:
            err = stop_cli(proc)
            await csms.close()
            print(err[-4000:])

    code, _ = asyncio.run(main())
    assert code == 75  # RestartForceExitStatus=75 in the unit


def test_a_command_the_site_does_not_allow_is_rejected_with_the_reason(tmp_path: Path) -> None:
    async def main() -> None:
        csms = await LocalCsms("127.0.0.1", free_port(), passwords={"CP-RT": PW}).start()
        (tmp_path / "password").write_text(PW + "\n")
        site = write_site(tmp_path, site_text(csms.port, 0.5, "[start, stop]"))
        sock = tmp_path / "var" / "control.sock"
        proc = start_cli("run", str(site))
        try:
            await csms.wait_for(lambda: "CP-RT" in csms.stations and csms.actions("TransactionEvent"), 30)
            link = csms.stations["CP-RT"]
            await setpoint_becomes(sock, 5000.0)
            res = await link.request("ChangeAvailability", {"operationalStatus": "Inoperative"})
            assert res["status"] == "Rejected"
            assert "availability not allowed for ocpp" in res["statusInfo"]["additionalInfo"]
            assert (await link.request("Reset", {"type": "Immediate"}))["status"] == "Rejected"
            assert await tag(sock, "inverter.setpoint") == 5000.0
            assert proc.poll() is None
        finally:
            err = stop_cli(proc)
            await csms.close()
        assert "command availability from backoffice refused (asked by CSMS of CP-RT)" in err

    asyncio.run(main())


def test_notify_event_comes_from_the_event_stream_even_for_a_trip_no_image_showed(tmp_path: Path) -> None:
    """A trip that started and cleared between two publications: the images never show it; the event
    stream does, and the CSMS gets both NotifyEvents. Images no longer raise NotifyEvents of their own."""

    async def main() -> None:
        csms = await LocalCsms("127.0.0.1", free_port(), passwords={"CP-1": PW}).start()
        h = Harness(params(csms.url, tmp_path / "s"))
        h.cx = TaskContext("ocpp", h._send, START, logging.getLogger("test.ocpp"), None, events=True)
        await h.start()
        try:
            await h.publish()
            await until(lambda: bool(csms.actions("StatusNotification")))
            base = {"k": 7, "t": 0.14, "source": "safety"}
            h.cx._event({"seq": 0, "kind": "trip", "message": "trip ov2", "data": {"code": "ov2"}, **base})
            h.cx._event({"seq": 1, "kind": "reset", "message": "trip ov2 cleared", "data": {"code": "ov2"}, **base})
            h.cx._event({"seq": 2, "kind": "force", "message": "not for the CSMS", **base})
            await until(lambda: len(csms.actions("NotifyEvent")) == 2)
            await h.publish(safety__trip="uv1")  # an image diff alone: no NotifyEvent (the stream has it)
            await until(lambda: csms.actions("StatusNotification")[-1].payload["connectorStatus"] == "Faulted")
        finally:
            await h.stop()
            await csms.close()
        raised, cleared = (r.payload["eventData"][0] for r in csms.actions("NotifyEvent"))
        assert (raised["actualValue"], raised["cleared"]) == ("ov2", False)
        assert (cleared["actualValue"], cleared["cleared"]) == ("ov2", True)
        assert len(csms.actions("NotifyEvent")) == 2

    asyncio.run(main())


def test_a_central_setpoint_profile_reaches_the_scan_as_a_mode_request(tmp_path: Path) -> None:
    """End to end over OCPP 2.1: a CSMS profile with operationMode CentralSetpoint becomes a mode request
    that the real scan accepts (its allowlist and validation), and the mode in force is a shared tag. What
    the mode authority then does with it is its own test (the set point follows there)."""

    async def main() -> str:
        csms = LocalCsms("127.0.0.1", free_port(), passwords={"CP-RT": PW}, subprotocols=("ocpp2.1", "ocpp2.0.1"))
        await csms.start()
        (tmp_path / "password").write_text(PW + "\n")
        site = write_site(tmp_path, site_text(csms.port, 0.5, "[mode_request]"))
        sock = tmp_path / "var" / "control.sock"
        proc = start_cli("run", str(site))
        try:
            await csms.wait_for(lambda: "CP-RT" in csms.stations and csms.actions("TransactionEvent"), 30)
            periods = [{"startPeriod": 0, "operationMode": "CentralSetpoint", "setpoint": -4000.0,
                        "dischargeLimit": -5000.0}]  # fmt: skip
            now = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(seconds=5)
            prof = {"id": 9, "stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile",
                    "chargingProfileKind": "Absolute",
                    "chargingSchedule": [{"id": 1, "chargingRateUnit": "W", "startSchedule": stamp(now),
                                          "duration": 600, "chargingSchedulePeriod": periods}]}  # fmt: skip
            res = await csms.stations["CP-RT"].request("SetChargingProfile", {"evseId": 1, "chargingProfile": prof})
            assert res["status"] == "Accepted"
            end = asyncio.get_running_loop().time() + 15
            while await tag(sock, "ocpp.operation_mode") != "CentralSetpoint":
                assert asyncio.get_running_loop().time() < end, "ocpp.operation_mode never CentralSetpoint"
                await asyncio.sleep(0.05)
            assert await tag(sock, "ocpp.limit_discharge") == 5000.0
        finally:
            err = stop_cli(proc)
            await csms.close()
        return err

    err = asyncio.run(main())
    line = next((ln for ln in err.splitlines() if "mode request" in ln), "")
    assert "'mode': 'remote', 'setpoint_w': -4000.0" in line and "accepted by the scan" in line, err[-3000:]


def bundled_site_on(tmp: Path, csms_port: int) -> Path:
    """The bundled site (its authority, modes and safety as `make run` has them), its back office pointed at
    ``csms_port``. Enter service without the 300 s default delay (IEEE 1547-2018 Table 39 allows 0-600 s, ramp
    1-1000 s), so that discharge is possible within the test."""
    import yaml

    path = bundled_site_copy(tmp)
    site = yaml.safe_load(path.read_text())
    (tmp / "password").write_text(PW + "\n")
    for t in site["tasks"]:
        if t["type"] == "ocpp":
            t["params"].update(csms_url=f"ws://127.0.0.1:{csms_port}/ocpp", identity="CP-RT")
            t["params"]["password_file"] = str(tmp / "password")
    for s in site["safety"]:
        if s["type"] == "v2g_safety":
            s["params"]["enter_service"] = {"delay_s": 0.0, "ramp_s": 1.0}
    path.write_text(yaml.safe_dump(site, sort_keys=False))
    return path


def central_setpoint(w: float) -> dict[str, Any]:
    """A TxDefaultProfile whose one period is CentralSetpoint at ``w`` (OCPP 2.1 part 2, 2.12
    ChargingSchedulePeriodType: setpoint signed, + = charging), limits wide enough not to bind. Relative:
    from the transaction's start, on the site's own calendar (the bundled site's clock is the plant's)."""
    periods = [{"startPeriod": 0, "operationMode": "CentralSetpoint", "setpoint": w, "limit": 11000.0,
                "dischargeLimit": -11000.0}]  # fmt: skip
    return {"id": 9, "stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile", "chargingProfileKind": "Relative",
            "chargingSchedule": [{"id": 1, "chargingRateUnit": "W", "chargingSchedulePeriod": periods}]}  # fmt: skip


def test_a_central_setpoint_moves_the_bundled_sites_setpoint_and_link_loss_hands_it_back(tmp_path: Path) -> None:
    """End to end through the bundled site's own programs: a real CSMS's CentralSetpoint profile becomes a
    mode request, the authority hands the remote source the site, modes follows it, the safety layer lets
    it through, and the committed ``inverter.setpoint`` is the CSMS's value, for charge, zero and
    discharge. Then the link drops: the set point leaves the remote value (the safety layer zeroes a mode
    that follows a lost back office, and the authority falls back to the local plan)."""
    import subprocess
    import sys

    async def main() -> list[float]:
        csms = LocalCsms("127.0.0.1", free_port(), passwords={"CP-RT": PW}, subprotocols=("ocpp2.1", "ocpp2.0.1"))
        await csms.start()
        site = bundled_site_on(tmp_path, csms.port)
        sock = tmp_path / "var" / "control.sock"
        log = tmp_path / "stderr.log"  # a file: the bundled site logs more than a pipe holds unread
        with log.open("w") as errf:
            proc = subprocess.Popen(
                [sys.executable, "-m", "runtime.cli", "run", str(site), "--no-watch"], cwd=ROOT, stderr=errf
            )
        seen: list[float] = []
        try:
            await csms.wait_for(lambda: "CP-RT" in csms.stations and csms.actions("TransactionEvent"), 60)
            for w in (3000.0, 0.0, -4000.0):  # both signs and zero
                res = await csms.stations["CP-RT"].request(
                    "SetChargingProfile", {"evseId": 1, "chargingProfile": central_setpoint(w)}
                )
                assert res["status"] == "Accepted", res
                await setpoint_becomes(sock, w, 30)
                seen.append(w)
            await csms.close()  # the link is lost
            end = asyncio.get_running_loop().time() + 30
            while (got := await tag(sock, "inverter.setpoint")) == -4000.0:
                assert asyncio.get_running_loop().time() < end, "the set point kept the remote value after link loss"
                await asyncio.sleep(0.05)
            seen.append(got)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
            await csms.close()
        return seen

    try:
        seen = asyncio.run(main())
    except AssertionError as e:
        raise AssertionError(f"{e}\n{(tmp_path / 'stderr.log').read_text()[-4000:]}") from e
    assert seen[:3] == [3000.0, 0.0, -4000.0] and seen[3] != -4000.0
