"""OCPP 2.1 V2X against the local CSMS speaking 2.1 (the `ocpp` package's v21 schemas validate every
message both ways): the operation modes of a profile become mode requests to the scan (sent with the
right arguments: the scan's side is the mode authority's), and what is in force is published as tags."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from runtime.tasks.ocpp.local_csms import LocalCsms
from runtime.tasks.ocpp.smart import stamp
from tests.ocpp.harness import START, Harness, params, plugged, until
from tests.ports import free_port

PW = "0123456789abcdef-operator"
BOTH = ("ocpp2.1", "ocpp2.0.1")


def v2x_profile(periods: list[dict[str, Any]], pid: int = 1, **extra: Any) -> dict[str, Any]:
    return {
        "id": pid, "stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile", "chargingProfileKind": "Absolute",
        "chargingSchedule": [{"id": 1, "startSchedule": stamp(START), "chargingRateUnit": "W", "duration": 7200,
                              "chargingSchedulePeriod": periods}],
        **extra,
    }  # fmt: skip


async def _online(tmp_path: Path, **kw: Any) -> tuple[LocalCsms, Harness]:
    csms = await LocalCsms("127.0.0.1", free_port(), passwords={"CP-1": PW}, subprotocols=BOTH).start()
    h = await Harness(params(csms.url, tmp_path / "s", **kw)).start()
    await h.publish()
    await until(lambda: "CP-1" in csms.stations and bool(csms.actions("StatusNotification")))
    return csms, h


def modes(h: Harness) -> list[dict[str, Any]]:
    return [args for kind, args in h.commands if kind == "mode_request"]


def test_a_session_over_2_1_is_schema_valid_both_ways(tmp_path: Path) -> None:
    async def main() -> None:
        csms, h = await _online(tmp_path, variables={"TxUpdatedInterval": 1})
        try:
            assert h.station.version.subprotocol == "ocpp2.1"
            await h.publish(**plugged())
            for _ in range(3):
                await h.publish(**plugged())
            await h.publish(ev__connected=False, inverter__power=0.0)
            await until(lambda: len(h.station.queue) == 0 and len(csms.actions("TransactionEvent")) >= 4)
            link = csms.stations["CP-1"]
            res = await link.request("GetBaseReport", {"requestId": 3, "reportBase": "FullInventory"})
            assert res["status"] == "Accepted"
            await until(lambda: bool(csms.actions("NotifyReport")))
            sched = await link.request("GetCompositeSchedule", {"duration": 600, "evseId": 1})
            assert sched["status"] == "Accepted"
            # a 2.1-only action the station does not support gets NotSupported, one unknown to 2.1 NotImplemented
            for action, code in (("UsePriorityCharging", "NotSupported"), ("FlyToTheMoon", "NotImplemented")):
                with pytest.raises(Exception) as err:
                    await link.request(
                        action, {"transactionId": "t", "activate": True} if action != "FlyToTheMoon" else {}
                    )
                assert code in repr(err.value) or type(err.value).__name__.startswith(code)
        finally:
            await h.stop()
            await csms.close()
        report = csms.actions("NotifyReport")[0].payload["reportData"]
        v2x = {d["variable"]["name"]: d["variableAttribute"][0].get("value") for d in report
               if d["component"]["name"] == "V2XChargingCtrlr"}  # fmt: skip
        assert v2x["Enabled"] == "true" and "CentralSetpoint" in v2x["SupportedOperationModes"]
        assert "AC_BPT" in v2x["SupportedEnergyTransferModes"]
        events = [r.payload["eventType"] for r in csms.actions("TransactionEvent")]
        assert events[0] == "Started" and events[-1] == "Ended"

    asyncio.run(main())


@pytest.mark.parametrize("setpoint", [-5000.0, 0.0, 4000.0, -9000.0])
def test_central_setpoint_asks_the_scan_and_publishes_the_limits(tmp_path: Path, setpoint: float) -> None:
    async def main() -> None:
        csms, h = await _online(tmp_path)
        try:
            periods = [
                {"startPeriod": 0, "operationMode": "CentralSetpoint", "setpoint": setpoint, "limit": 7000.0,
                 "dischargeLimit": -6000.0},
                {"startPeriod": 3600, "operationMode": "ChargingOnly", "limit": 3000.0},
            ]  # fmt: skip
            res = await csms.stations["CP-1"].request(
                "SetChargingProfile", {"evseId": 1, "chargingProfile": v2x_profile(periods)}
            )
            assert res["status"] == "Accepted"
            await h.publish()
            await until(lambda: bool(modes(h)))
            (first,) = modes(h)
            assert first["mode"] == "remote" and first["setpoint_w"] == max(setpoint, -6000.0)  # clamped
            assert 3590 < first["expiry_s"] <= 3599  # the period ends at START + 1 h
            assert h.writes["ocpp.operation_mode"] == "CentralSetpoint"
            assert h.writes["ocpp.limit_charge"] == 7000.0 and h.writes["ocpp.limit_discharge"] == 6000.0
            res = await csms.stations["CP-1"].request("GetCompositeSchedule", {"duration": 7200, "evseId": 1})
            p0, p1, p2 = res["schedule"]["chargingSchedulePeriod"]  # the profile ends at START + 2 h
            assert p0["operationMode"] == "CentralSetpoint" and p0["setpoint"] == max(setpoint, -6000.0)
            assert p0["limit"] == 7000.0 and p0["dischargeLimit"] == -6000.0
            assert p1["operationMode"] == "ChargingOnly" and p1["dischargeLimit"] == 0.0 and p1["limit"] == 3000.0
            assert p2 == {"startPeriod": p2["startPeriod"], "limit": 11000.0}  # the rating, no mode
            await h.publish(dt_s=3600.0)  # the next period: ChargingOnly, the local plan within 3 kW, no discharge
            await until(lambda: len(modes(h)) == 2)
            assert modes(h)[1] == {"mode": "local"}
            assert h.writes["ocpp.operation_mode"] == "ChargingOnly"
            assert h.writes["ocpp.limit_charge"] == 3000.0 and h.writes["ocpp.limit_discharge"] == 0.0
            await h.publish(dt_s=3600.0)  # the profile ended: nothing in force, nothing new to hand back
            assert h.writes["ocpp.operation_mode"] == "" and h.writes["ocpp.limit_discharge"] == 11000.0
            assert len(modes(h)) == 2
        finally:
            await h.stop()
            await csms.close()

    asyncio.run(main())


def test_frequency_mode_sends_the_curve_and_baseline_and_idle_zero(tmp_path: Path) -> None:
    async def main() -> None:
        csms, h = await _online(tmp_path)
        try:
            curve = [{"frequency": 60.5, "power": -6000.0}, {"frequency": 59.5, "power": 6000.0},
                     {"frequency": 60.0, "power": 0.0}]  # fmt: skip
            periods = [
                {"startPeriod": 0, "operationMode": "CentralFrequency", "setpoint": 1000.0, "v2xBaseline": 500.0,
                 "v2xFreqWattCurve": curve},
                {"startPeriod": 600, "operationMode": "Idle"},
            ]  # fmt: skip
            res = await csms.stations["CP-1"].request(
                "SetChargingProfile", {"evseId": 1, "chargingProfile": v2x_profile(periods)}
            )
            assert res["status"] == "Accepted"
            await h.publish()
            await until(lambda: bool(modes(h)))
            freq = modes(h)[0]
            assert freq["mode"] == "frequency" and freq["baseline_w"] == 500.0
            assert freq["curve"] == [[59.5, 6000.0], [60.0, 0.0], [60.5, -6000.0]]  # by frequency
            await h.publish(dt_s=600.0)
            await until(lambda: len(modes(h)) == 2)
            assert modes(h)[1]["mode"] == "remote" and modes(h)[1]["setpoint_w"] == 0.0  # Idle: zero power
        finally:
            await h.stop()
            await csms.close()

    asyncio.run(main())


def test_invalid_v2x_periods_are_rejected(tmp_path: Path) -> None:
    async def main() -> None:
        csms, h = await _online(tmp_path)
        try:
            link = csms.stations["CP-1"]
            for periods in (
                [{"startPeriod": 0, "operationMode": "CentralSetpoint"}],  # no setpoint
                [{"startPeriod": 0, "operationMode": "LocalFrequency",
                  "v2xFreqWattCurve": [{"frequency": 70.0, "power": 0.0}, {"frequency": 71.0, "power": 1.0}]}],
                [{"startPeriod": 0, "operationMode": "CentralFrequency", "setpoint": 0.0,
                  "v2xFreqWattCurve": [{"frequency": 60.0, "power": 0.0}]}],  # one point is no curve
            ):  # fmt: skip
                res = await link.request("SetChargingProfile", {"evseId": 1, "chargingProfile": v2x_profile(periods)})
                assert res["status"] == "Rejected" and res["statusInfo"]["reasonCode"] == "InvalidSchedule", periods
            assert h.station.profiles.items == []
        finally:
            await h.stop()
            await csms.close()

    asyncio.run(main())


@pytest.mark.parametrize("invalid_after", [False, True])
def test_max_offline_duration_ends_the_central_mode(tmp_path: Path, invalid_after: bool) -> None:
    async def main() -> None:
        csms, h = await _online(tmp_path, variables={"RetryBackOffWaitMinimum": 60})
        try:
            periods = [{"startPeriod": 0, "operationMode": "CentralSetpoint", "setpoint": -3000.0}]
            profile = v2x_profile(periods, maxOfflineDuration=120, invalidAfterOfflineDuration=invalid_after)
            res = await csms.stations["CP-1"].request("SetChargingProfile", {"evseId": 1, "chargingProfile": profile})
            assert res["status"] == "Accepted"
            await h.publish()
            await until(lambda: bool(modes(h)))
            await csms.close()
            await csms.drop_connections()
            await until(lambda: h.writes.get("ocpp.connected") is False)
            await h.publish(dt_s=100.0)
            assert h.writes["ocpp.operation_mode"] == "CentralSetpoint"  # within maxOfflineDuration
            assert len(modes(h)) == 1  # and not asked again while the CSMS is away
            await h.publish(dt_s=30.0)
            await until(lambda: len(modes(h)) == 2)
            assert modes(h)[1] == {"mode": "local"} and h.writes["ocpp.operation_mode"] == ""
            assert (h.station.profiles.items == []) is invalid_after  # gone for good, or until the link is back
        finally:
            await h.stop()

    asyncio.run(main())


def test_charging_needs_from_the_ev_tags_when_they_change_materially(tmp_path: Path) -> None:
    async def main() -> None:
        csms, h = await _online(tmp_path)
        try:
            ev = {"ev__capacity_wh": 60000.0, "plan__reserve_soc": 0.3}
            await h.publish(**plugged(ev__soc=0.5), **ev)
            await until(lambda: len(csms.actions("NotifyEVChargingNeeds")) == 1)
            await h.publish(**plugged(ev__soc=0.505), **ev)  # 300 Wh: no news
            await h.publish(**plugged(ev__soc=0.52), **ev)  # 1.2 kWh since the last one sent
            await until(lambda: len(csms.actions("NotifyEVChargingNeeds")) == 2)
            await h.publish(**plugged(ev__soc=0.521), **ev)
            await h.publish(ev__connected=False, inverter__power=0.0)
            await until(lambda: len(h.station.queue) == 0 and len(csms.actions("TransactionEvent")) >= 2)
        finally:
            await h.stop()
            await csms.close()
        first, second = (r.payload["chargingNeeds"] for r in csms.actions("NotifyEVChargingNeeds"))
        v = first["v2xChargingParameters"]
        assert first["requestedEnergyTransfer"] == "AC_BPT"
        assert v["maxChargePower"] == 11000.0 and v["maxDischargePower"] == 11000.0  # magnitudes
        assert v["evTargetEnergyRequest"] == 18000.0 and v["evMaxV2XEnergyRequest"] == 24000.0
        assert v["evMinV2XEnergyRequest"] == -12000.0 and v["targetSoC"] == 80  # down to the reserve may go
        assert second["v2xChargingParameters"]["evTargetEnergyRequest"] == 16800.0

    asyncio.run(main())


def test_dynamic_profile_updated_and_pulled(tmp_path: Path) -> None:
    async def main() -> None:
        csms, h = await _online(tmp_path)
        link = csms.stations["CP-1"]
        try:
            prof = {"id": 5, "stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile",
                    "chargingProfileKind": "Dynamic", "dynUpdateInterval": 60,
                    "chargingSchedule": [{"id": 1, "chargingRateUnit": "W", "chargingSchedulePeriod": [
                        {"startPeriod": 0, "operationMode": "CentralSetpoint", "setpoint": -1000.0}]}]}  # fmt: skip
            assert (await link.request("SetChargingProfile", {"evseId": 1, "chargingProfile": prof}))[
                "status"
            ] == "Accepted"
            res = await link.request(
                "UpdateDynamicSchedule", {"chargingProfileId": 5, "scheduleUpdate": {"setpoint": -3000.0}}
            )
            assert res["status"] == "Accepted"
            await h.publish()
            await until(lambda: bool(modes(h)))
            assert modes(h)[-1]["setpoint_w"] == -3000.0  # the update, not the profile's first value
            unknown = await link.request("UpdateDynamicSchedule", {"chargingProfileId": 99, "scheduleUpdate": {}})
            assert unknown["status"] == "Rejected"
            csms.dynamic_updates[5] = {"setpoint": 2000.0}
            await h.publish(dt_s=61.0)  # dynUpdateInterval ran out: the station pulls
            await until(lambda: bool(csms.actions("PullDynamicScheduleUpdate")))
            await h.publish()
            await until(lambda: modes(h)[-1].get("setpoint_w") == 2000.0)
            await h.publish(dt_s=10.0)
            assert len(csms.actions("PullDynamicScheduleUpdate")) == 1  # the next one a whole interval later
        finally:
            await h.stop()
            await csms.close()

    asyncio.run(main())


# (period, charge limit W, discharge limit W, set point W) on the harness's site: 1 phase at 240 V, 11 kW
PHASE_CASES: list[tuple[dict[str, Any], float, float, float]] = [
    # W, all three phases given: the field is L1; the single-phase site counts L1 only
    ({"limit": 4000.0, "limit_L2": 1000.0, "limit_L3": 2000.0, "setpoint": 3000.0, "setpoint_L2": 500.0,
      "setpoint_L3": 500.0, "dischargeLimit": -2500.0, "dischargeLimit_L2": -100.0, "dischargeLimit_L3": -100.0},
     4000.0, 2500.0, 3000.0),
    ({"limit": 4000.0, "setpoint": -2000.0, "dischargeLimit": -5000.0}, 4000.0, 5000.0, -2000.0),  # sums
]  # fmt: skip


@pytest.mark.parametrize(("extra", "charge", "discharge", "setpoint"), PHASE_CASES)
def test_per_phase_values_compose_as_the_2_1_schema_says(
    tmp_path: Path, extra: dict[str, Any], charge: float, discharge: float, setpoint: float
) -> None:
    async def main() -> None:
        csms, h = await _online(tmp_path)
        try:
            period = {"startPeriod": 0, "operationMode": "CentralSetpoint", **extra}
            res = await csms.stations["CP-1"].request(
                "SetChargingProfile", {"evseId": 1, "chargingProfile": v2x_profile([period])}
            )
            assert res["status"] == "Accepted"
            await h.publish()
            await until(lambda: bool(modes(h)))
            assert modes(h)[0]["setpoint_w"] == setpoint
            assert h.writes["ocpp.limit_charge"] == charge and h.writes["ocpp.limit_discharge"] == discharge
        finally:
            await h.stop()
            await csms.close()

    asyncio.run(main())


def test_setpoint_reactive_and_half_given_phases_are_refused_with_their_reason(tmp_path: Path) -> None:
    async def main() -> None:
        csms, h = await _online(tmp_path)
        try:
            link = csms.stations["CP-1"]
            for key in ("setpointReactive", "setpointReactive_L2"):
                period = {"startPeriod": 0, "operationMode": "CentralSetpoint", "setpoint": 1000.0, key: 500.0}
                res = await link.request("SetChargingProfile", {"evseId": 1, "chargingProfile": v2x_profile([period])})
                assert res["status"] == "Rejected" and res["statusInfo"]["reasonCode"] == "UnsupportedParam"
                assert key in res["statusInfo"]["additionalInfo"] and "reactive" in res["statusInfo"]["additionalInfo"]
            half = {"startPeriod": 0, "operationMode": "CentralSetpoint", "setpoint": 1000.0, "setpoint_L2": 500.0}
            res = await link.request("SetChargingProfile", {"evseId": 1, "chargingProfile": v2x_profile([half])})
            assert res["status"] == "Rejected" and res["statusInfo"]["reasonCode"] == "InvalidSchedule"
            assert h.station.profiles.items == [] and not modes(h)
        finally:
            await h.stop()
            await csms.close()

    asyncio.run(main())


def test_afrr_signal_drives_the_signal_watt_curve_from_its_timestamp(tmp_path: Path) -> None:
    """LocalFrequency with aFRR's v2xSignalWattCurve (Q08): both curves go to the scan with the mode request, each
    AFRRSignal is published as ``ocpp.afrr_signal`` from its timestamp on; without a signal curve in force
    a signal is Rejected with the reason."""

    async def main() -> None:
        csms, h = await _online(tmp_path)
        try:
            link = csms.stations["CP-1"]
            res = await link.request("AFRRSignal", {"timestamp": stamp(START), "signal": 10})
            assert res["status"] == "Rejected" and res["statusInfo"]["reasonCode"] == "NoSignalWattCurve"
            signal_curve = [{"signal": 100, "power": 5000.0}, {"signal": -100, "power": -5000.0}]
            periods = [
                {"startPeriod": 0, "operationMode": "LocalFrequency", "v2xBaseline": 1000.0,
                 "v2xFreqWattCurve": [{"frequency": 59.5, "power": -4000.0}, {"frequency": 60.5, "power": 4000.0}],
                 "v2xSignalWattCurve": signal_curve},
                {"startPeriod": 600, "operationMode": "ChargingOnly", "limit": 3000.0},
            ]  # fmt: skip
            res = await link.request("SetChargingProfile", {"evseId": 1, "chargingProfile": v2x_profile(periods)})
            assert res["status"] == "Accepted"
            await h.publish()
            await until(lambda: bool(modes(h)))
            req = modes(h)[0]
            assert req["mode"] == "frequency" and req["baseline_w"] == 1000.0
            assert req["curve"] == [[59.5, -4000.0], [60.5, 4000.0]]
            assert req["signal_curve"] == [[-100, -5000.0], [100, 5000.0]]  # by signal
            now = START + dt.timedelta(seconds=1)
            res = await link.request("AFRRSignal", {"timestamp": stamp(now), "signal": 40})
            assert res["status"] == "Accepted" and h.writes["ocpp.afrr_signal"] == 40
            later = now + dt.timedelta(seconds=10)
            res = await link.request("AFRRSignal", {"timestamp": stamp(later), "signal": -60})
            assert res["status"] == "Accepted" and h.writes["ocpp.afrr_signal"] == 40  # not yet active
            await h.publish(dt_s=10.0)
            assert h.writes["ocpp.afrr_signal"] == -60
            await h.publish(dt_s=600.0)  # the period ends: the scan is handed back, the signal moves nothing
            await until(lambda: modes(h)[-1] == {"mode": "local"})
            late = START + dt.timedelta(seconds=700)
            res = await link.request("AFRRSignal", {"timestamp": stamp(late), "signal": 5})
            assert res["status"] == "Rejected"
        finally:
            await h.stop()
            await csms.close()

    asyncio.run(main())


def test_local_load_balancing_publishes_the_connection_limits_and_hands_back(tmp_path: Path) -> None:
    async def main() -> None:
        csms, h = await _online(tmp_path)
        try:
            periods = [
                {"startPeriod": 0, "operationMode": "CentralSetpoint", "setpoint": 2000.0},
                {"startPeriod": 60, "operationMode": "LocalLoadBalancing", "limit": 8000.0, "dischargeLimit": -3000.0},
                {"startPeriod": 120, "operationMode": "ChargingOnly", "limit": 5000.0},
            ]  # fmt: skip
            res = await csms.stations["CP-1"].request(
                "SetChargingProfile", {"evseId": 1, "chargingProfile": v2x_profile(periods)}
            )
            assert res["status"] == "Accepted"
            await h.publish()
            assert h.writes["ocpp.connection_import_w"] == h.writes["ocpp.connection_export_w"] == 1e8
            await h.publish(dt_s=60.0)
            await until(lambda: modes(h)[-1] == {"mode": "local"})  # the local plan asks, the allocator cuts
            assert h.writes["ocpp.operation_mode"] == "LocalLoadBalancing"
            assert h.writes["ocpp.connection_import_w"] == 8000.0 and h.writes["ocpp.connection_export_w"] == 3000.0
            assert h.writes["ocpp.limit_charge"] == 11000.0 and h.writes["ocpp.limit_discharge"] == 11000.0
            await h.publish(dt_s=60.0)
            assert h.writes["ocpp.connection_import_w"] == 1e8 and h.writes["ocpp.limit_charge"] == 5000.0
        finally:
            await h.stop()
            await csms.close()

    asyncio.run(main())


def test_local_frequency_without_its_curve_is_rejected_no_freq_watt_curve(tmp_path: Path) -> None:
    """Q08.FR.03: a LocalFrequency period needs a v2xFreqWattCurve; aFRR's signal curve alone is not one."""

    async def main() -> None:
        csms, h = await _online(tmp_path)
        try:
            sig = [{"signal": -100, "power": -5000.0}, {"signal": 100, "power": 5000.0}]
            for period in ({"startPeriod": 0, "operationMode": "LocalFrequency", "v2xBaseline": 0.0},
                           {"startPeriod": 0, "operationMode": "LocalFrequency", "v2xSignalWattCurve": sig}):  # fmt: skip
                res = await csms.stations["CP-1"].request(
                    "SetChargingProfile", {"evseId": 1, "chargingProfile": v2x_profile([period])}
                )
                assert res["status"] == "Rejected" and res["statusInfo"]["reasonCode"] == "NoFreqWattCurve"
            assert h.station.profiles.items == []
        finally:
            await h.stop()
            await csms.close()

    asyncio.run(main())
