"""Against an independent back office not written in Python: ocpp-rpc (Node) in strict mode validates every
message the station sends, and every answer it gives, against the official OCPP 2.0.1 schemas."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.ocpp.certs import make_pki
from tests.ocpp.harness import Harness, params, plugged, until
from tests.peers import require

PEER = Path(__file__).parent / "peer"
PW = "0123456789abcdef-operator"
INSTALL = "cd tests/ocpp/peer && npm ci"


def _need_peer() -> None:
    found = shutil.which("node") is not None and (PEER / "node_modules" / "ocpp-rpc").exists()
    require("node with ocpp-rpc", found, INSTALL)


class NodeCsms:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.events: list[dict[str, Any]] = []
        self.port = 0
        self._n = 0
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, *extra: str) -> NodeCsms:
        proc = await asyncio.create_subprocess_exec(
            "node", str(PEER / "csms.js"), "--password", f"CP-1:{PW}", *extra,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=PEER,
        )  # fmt: skip
        self = cls(proc)
        await until(lambda: self.port > 0, timeout_s=20)
        return self

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            ev = json.loads(line)
            if ev["event"] == "listening":
                self.port = ev["port"]
            self.events.append(ev)

    def calls(self, method: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == "call" and e["method"] == method]

    def invalid(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == "invalid"]

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self._n += 1
        n = self._n
        assert self.proc.stdin is not None
        self.proc.stdin.write(
            (json.dumps({"id": n, "identity": "CP-1", "method": method, "params": params}) + "\n").encode()
        )
        await self.proc.stdin.drain()
        await until(lambda: any(e["event"] == "reply" and e["id"] == n for e in self.events), timeout_s=15)
        reply = next(e for e in self.events if e["event"] == "reply" and e["id"] == n)
        assert "error" not in reply, reply
        return reply["result"]

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        await asyncio.wait_for(self.proc.wait(), 10)
        self._reader.cancel()


@pytest.mark.parametrize("profile", [1, 2, 3])
def test_strict_peer_session_profiles_variables(tmp_path: Path, profile: int) -> None:
    _need_peer()

    async def main() -> None:
        extra: list[str] = []
        kw: dict[str, Any] = {}
        tls = profile > 1
        if tls:
            pki = make_pki(tmp_path / "pki")
            extra = ["--cert", str(pki.dir / "server.pem"), "--key", str(pki.dir / "server.key")]
            kw = {"security_profile": profile, "ca_file": str(pki.ca)}
            if profile == 3:  # mutual TLS: the station's certificate (CN CP-1), no password
                extra += ["--ca", str(pki.ca)]
                kw |= {"cert_file": str(pki.dir / "station.pem"), "key_file": str(pki.dir / "station.key")}
        csms = await NodeCsms.start(*extra)
        url = f"wss://localhost:{csms.port}/ocpp" if tls else f"ws://127.0.0.1:{csms.port}/ocpp"
        h = await Harness(params(url, tmp_path / "s", variables={"TxUpdatedInterval": 5}, **kw)).start()
        try:
            await h.publish()
            await until(lambda: bool(csms.calls("StatusNotification")), timeout_s=20)
            await h.publish(**plugged(inverter__power=0.0))
            for i in range(12):
                await h.publish(**plugged(inverter__power=7000.0, meter__energy_import=1000.0 + i))
            for i in range(12):
                await h.publish(
                    **plugged(inverter__power=-6000.0, inverter__setpoint=-6000.0, meter__energy_export=500.0 + i)
                )
            await h.publish(ev__connected=False, inverter__power=0.0)
            await until(lambda: any(c["params"]["eventType"] == "Ended" for c in csms.calls("TransactionEvent")))
            # the CSMS's side, validated by the peer before it leaves and by the station when it arrives
            prof = {"id": 1, "stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile", "chargingProfileKind": "Absolute",
                    "chargingSchedule": [{"id": 1, "chargingRateUnit": "A", "startSchedule": "2027-01-04T17:30:00Z",
                                          "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 10.0}]}]}  # fmt: skip
            assert (await csms.request("SetChargingProfile", {"evseId": 1, "chargingProfile": prof}))[
                "status"
            ] == "Accepted"
            res = await csms.request("GetCompositeSchedule", {"evseId": 1, "duration": 3600, "chargingRateUnit": "W"})
            assert res["schedule"]["chargingSchedulePeriod"][0]["limit"] == 2400.0  # 10 A x 240 V x 1 phase
            await h.publish(ev__connected=False)
            assert h.writes["ocpp.limit_charge"] == 2400.0
            res = await csms.request(
                "GetVariables",
                {
                    "getVariableData": [
                        {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}}
                    ]
                },
            )
            assert (
                res["getVariableResult"][0]["attributeValue"] == "120"
            )  # granted at boot by this CSMS (the site says 300)
            assert (await csms.request("GetBaseReport", {"requestId": 1, "reportBase": "FullInventory"}))[
                "status"
            ] == "Accepted"
            await until(lambda: bool(csms.calls("NotifyReport")))
            assert (await csms.request("GetTransactionStatus", {}))["messagesInQueue"] is False
        finally:
            await h.stop()
            await csms.stop()
        assert csms.invalid() == []
        tx = [c["params"] for c in csms.calls("TransactionEvent")]
        assert [t["seqNo"] for t in tx] == list(range(len(tx)))
        assert tx[0]["eventType"] == "Started" and tx[-1]["eventType"] == "Ended"

    asyncio.run(main())


def test_strict_peer_over_ocpp_2_1_v2x_and_der(tmp_path: Path) -> None:
    """The same independent peer with the official OCPP 2.1 schemas (strict both ways): the station and the
    CSMS select 2.1, a session, a V2X profile with a central set point, DER control and its report."""
    _need_peer()

    async def main() -> None:
        csms = await NodeCsms.start("--protocols", "ocpp2.1,ocpp2.0.1")
        h = Harness(params(f"ws://127.0.0.1:{csms.port}/ocpp", tmp_path / "s", variables={"TxUpdatedInterval": 5}))
        await h.start()
        try:
            await h.publish()
            await until(lambda: bool(csms.calls("StatusNotification")), timeout_s=20)
            assert [e["protocol"] for e in csms.events if e["event"] == "connected"] == ["ocpp2.1"]
            for i in range(8):
                await h.publish(**plugged(inverter__power=-6000.0, meter__energy_export=500.0 + i))
            await until(lambda: len(csms.calls("TransactionEvent")) >= 2)
            periods = [{"startPeriod": 0, "operationMode": "CentralSetpoint", "setpoint": -4000.0,
                        "dischargeLimit": -5000.0, "limit": 7000.0}]  # fmt: skip
            prof = {"id": 2, "stackLevel": 1, "chargingProfilePurpose": "TxDefaultProfile",
                    "chargingProfileKind": "Absolute", "maxOfflineDuration": 300,
                    "chargingSchedule": [{"id": 1, "chargingRateUnit": "W", "startSchedule": "2027-01-04T17:30:00Z",
                                          "chargingSchedulePeriod": periods}]}  # fmt: skip
            res = await csms.request("SetChargingProfile", {"evseId": 1, "chargingProfile": prof})
            assert res["status"] == "Accepted"
            await h.publish(**plugged(inverter__power=-4000.0))
            await until(lambda: any(k == "mode_request" for k, _ in h.commands))
            assert ("mode_request", {"mode": "remote", "setpoint_w": -4000.0, "expiry_s": 86400.0}) in h.commands
            assert h.writes["ocpp.limit_discharge"] == 5000.0
            curve = {"priority": 0, "yUnit": "Not_Applicable", "curveData": [{"x": 1.2, "y": 0.16}]}
            req = {"isDefault": True, "controlId": "hv", "controlType": "HVMustTrip", "curve": curve}
            assert (await csms.request("SetDERControl", req))["status"] == "Accepted"
            overlay = {"hv": {"control_type": "HVMustTrip", "is_default": True, "ocpp": curve}}
            await h.publish(**plugged(inverter__power=-4000.0), safety__der_overlay=json.dumps(overlay))
            assert (await csms.request("GetDERControl", {"requestId": 5}))["status"] == "Accepted"
            await until(lambda: bool(csms.calls("ReportDERControl")))
            await h.publish(ev__connected=False, inverter__power=0.0)
            await until(lambda: any(c["params"]["eventType"] == "Ended" for c in csms.calls("TransactionEvent")))
        finally:
            await h.stop()
            await csms.stop()
        assert csms.invalid() == []
        assert csms.calls("ReportDERControl")[0]["params"]["curve"][0]["curve"] == curve

    asyncio.run(main())


def test_strict_peer_over_ocpp_2_1_afrr_signal_per_phase_and_reactive(tmp_path: Path) -> None:
    """Strict 2.1 both ways: a CentralFrequency profile with a v2xSignalWattCurve and per-phase values, an
    AFRRSignal that the scan gets as ``ocpp.afrr_signal``, and a setpointReactive refused with its reason."""
    _need_peer()

    async def main() -> None:
        csms = await NodeCsms.start("--protocols", "ocpp2.1,ocpp2.0.1")
        h = Harness(params(f"ws://127.0.0.1:{csms.port}/ocpp", tmp_path / "s"))
        await h.start()
        try:
            await h.publish()
            await until(lambda: bool(csms.calls("StatusNotification")), timeout_s=20)
            periods = [{"startPeriod": 0, "operationMode": "CentralFrequency", "setpoint": 1000.0,
                        "setpoint_L2": 0.0, "setpoint_L3": 0.0, "limit": 7000.0, "limit_L2": 7000.0,
                        "limit_L3": 7000.0, "v2xSignalWattCurve": [{"signal": -100, "power": -5000.0},
                                                                 {"signal": 100, "power": 5000.0}]}]  # fmt: skip
            prof = {"id": 3, "stackLevel": 1, "chargingProfilePurpose": "TxDefaultProfile",
                    "chargingProfileKind": "Absolute",
                    "chargingSchedule": [{"id": 1, "chargingRateUnit": "W", "startSchedule": "2027-01-04T17:30:00Z",
                                          "chargingSchedulePeriod": periods}]}  # fmt: skip
            assert (await csms.request("SetChargingProfile", {"evseId": 1, "chargingProfile": prof}))[
                "status"
            ] == "Accepted"
            await h.publish()
            await until(lambda: any(k == "mode_request" for k, _ in h.commands))
            req = next(a for k, a in h.commands if k == "mode_request")
            assert req["signal_curve"] == [[-100, -5000.0], [100, 5000.0]] and req["baseline_w"] == 1000.0
            assert h.writes["ocpp.limit_charge"] == 7000.0  # the single-phase site counts L1
            res = await csms.request("AFRRSignal", {"timestamp": "2027-01-04T17:30:01Z", "signal": -30})
            assert res["status"] == "Accepted" and h.writes["ocpp.afrr_signal"] == -30
            periods[0]["setpointReactive"] = 300.0
            prof["id"] = 4
            res = await csms.request("SetChargingProfile", {"evseId": 1, "chargingProfile": prof})
            assert res["status"] == "Rejected" and res["statusInfo"]["reasonCode"] == "UnsupportedParam"
            assert "setpointReactive" in res["statusInfo"]["additionalInfo"]
        finally:
            await h.stop()
            await csms.stop()
        assert csms.invalid() == []

    asyncio.run(main())
