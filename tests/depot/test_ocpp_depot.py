"""OCPP on a depot (docs/depot.md "Back office"): one charging station whose EVSEs are the depot's, in simulated
time through Engine.step, over a real WebSocket to a real CSMS (tests/ocpp/depot_rig.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from runtime.tasks.ocpp.local_csms import LocalCsms
from tests.ocpp.depot_rig import PW, DepotOcpp, ocpp_depot_site
from tests.ports import free_port

ID = "DEPOT-1"


def run(tmp: Path, body: Callable[[LocalCsms, DepotOcpp], Awaitable[None]], **site: Any) -> None:
    async def main() -> None:
        csms = await LocalCsms(
            "127.0.0.1", free_port(), passwords={ID: PW}, subprotocols=("ocpp2.1", "ocpp2.0.1")
        ).start()
        rig = await DepotOcpp(ocpp_depot_site(tmp, csms.port, **site)).start()
        try:
            await rig.run_until(lambda: ID in csms.stations and rig.station is not None and rig.station.online, 30)
            await body(csms, rig)
        finally:
            await rig.stop()
            await csms.close()

    asyncio.run(main())


def tx_events(csms: LocalCsms) -> list[dict[str, Any]]:
    return [r.payload for r in csms.actions("TransactionEvent")]


def profile(pid: int, purpose: str, period: dict[str, Any], tx: str | None = None) -> dict[str, Any]:
    p: dict[str, Any] = {
        "id": pid, "stackLevel": 0, "chargingProfilePurpose": purpose, "chargingProfileKind": "Absolute",
        "chargingSchedule": [{"id": pid, "startSchedule": "2027-01-04T00:00:00Z", "chargingRateUnit": "W",
                              "chargingSchedulePeriod": [{"startPeriod": 0, **period}]}],
    }  # fmt: skip
    if tx is not None:
        p["transactionId"] = tx
    return p


def test_each_evse_has_its_own_transaction_evse_id_seqno_and_status(tmp_path: Path) -> None:
    async def body(csms: LocalCsms, rig: DepotOcpp) -> None:
        def statuses() -> dict[int, str]:
            return {r.payload["evseId"]: r.payload["connectorStatus"] for r in csms.actions("StatusNotification")}

        await rig.run_until(lambda: statuses() == {1: "Available", 2: "Available", 3: "Available"}, 20, "statuses")
        for n in (1, 2, 3):  # each plugs in at its own time
            rig.drive.evse[n]["ev.connected"] = True
            await rig.run(3.0)
        await rig.run_until(lambda: len({e["evse"]["id"] for e in tx_events(csms)}) == 3, 20, "three transactions")
        await rig.run(20.0)  # TxUpdatedInterval 15 s: periodic meter values of each
        rig.drive.evse[2]["ev.connected"] = False
        await rig.run_until(lambda: any(e["eventType"] == "Ended" for e in tx_events(csms)), 20, "EVSE 2 ends")
        await rig.run_until(lambda: statuses()[2] == "Available", 20, "EVSE 2 available again")
        by_tx: dict[str, list[dict[str, Any]]] = {}
        for e in tx_events(csms):
            by_tx.setdefault(e["transactionInfo"]["transactionId"], []).append(e)
        assert len(by_tx) == 3
        for events in by_tx.values():
            assert [e["seqNo"] for e in events] == list(range(len(events)))  # its own numbering, no gap
            assert len({e["evse"]["id"] for e in events}) == 1  # one EVSE per transaction
            assert events[0]["eventType"] == "Started" and len(events) >= 2
        evse_of = {e[0]["evse"]["id"]: e for e in by_tx.values()}
        assert sorted(evse_of) == [1, 2, 3]
        assert evse_of[2][-1]["eventType"] == "Ended" and evse_of[2][-1]["triggerReason"] == "EVDeparted"
        assert all(e[-1]["eventType"] != "Ended" for n, e in evse_of.items() if n != 2)

        # meter values from the EVSE's own tags: EVSE 1, plugged in first, has counted more energy than EVSE 3
        def energy(events: list[dict[str, Any]]) -> float:
            return max(
                sv["value"] for e in events for mv in e.get("meterValue", []) for sv in mv["sampledValue"]
                if sv["measurand"] == "Energy.Active.Import.Register"
            )  # fmt: skip

        assert energy(evse_of[1]) > energy(evse_of[3]) > 0

    run(tmp_path, body)


@pytest.mark.parametrize("setpoint", [6000.0, -6000.0])
@pytest.mark.parametrize("limit", [2500.0, 0.0])
def test_a_profile_on_evse_2_limits_evse_2_only(tmp_path: Path, setpoint: float, limit: float) -> None:
    async def body(csms: LocalCsms, rig: DepotOcpp) -> None:
        for n in (1, 2, 3):
            rig.drive.evse[n]["ev.connected"] = True
        for n in (1, 2):  # the operator asks the same of EVSEs 1 and 2
            await rig.operator(mode="remote", setpoint_w=setpoint, expiry_s=3600, evse=n)
        await rig.run(5.0)
        assert rig.drive.setpoints()[1] == rig.drive.setpoints()[2] == setpoint
        link = csms.stations[ID]
        period = {"operationMode": "ExternalLimits", "limit": limit, "dischargeLimit": -limit}
        res = await link.request(
            "SetChargingProfile", {"evseId": 2, "chargingProfile": profile(7, "TxDefaultProfile", period)}
        )
        assert res["status"] == "Accepted"
        await rig.run_until(lambda: rig.value("evse2.ocpp.limit_charge") == limit, 10, "EVSE 2's limit published")
        await rig.run(2.0)
        assert rig.value("evse2.ocpp.limit_discharge") == limit
        sp = rig.drive.setpoints()
        assert sp[2] == (limit if setpoint > 0 else -limit)  # EVSE 2's safety holds the back office's limit
        assert sp[1] == setpoint  # EVSE 1 asked the same and keeps it
        assert rig.value("evse1.ocpp.limit_charge") == rig.value("evse3.ocpp.limit_charge") == 11000.0
        sched = await link.request("GetCompositeSchedule", {"evseId": 2, "duration": 600, "chargingRateUnit": "W"})
        assert sched["schedule"]["chargingSchedulePeriod"][0]["limit"] == limit
        sched = await link.request("GetCompositeSchedule", {"evseId": 1, "duration": 600, "chargingRateUnit": "W"})
        assert sched["schedule"]["chargingSchedulePeriod"][0]["limit"] == 11000.0

    run(tmp_path, body, import_w=60_000)


@pytest.mark.parametrize("how", ["ChargingStationMaxProfile", "LocalLoadBalancing"])
def test_the_back_offices_connection_limit_lowers_the_allocators_and_the_site_import_follows(
    tmp_path: Path, how: str
) -> None:
    async def body(csms: LocalCsms, rig: DepotOcpp) -> None:
        for n in (1, 2, 3):
            rig.drive.evse[n]["ev.connected"] = True
        await rig.run(10.0)
        assert rig.site_import() > 25_000  # three vans charging inside the site file's 30 kW
        if how == "ChargingStationMaxProfile":
            req = {"evseId": 0, "chargingProfile": profile(1, how, {"limit": 15000.0})}
        else:
            period = {"operationMode": "LocalLoadBalancing", "limit": 15000.0, "dischargeLimit": -10000.0}
            req = {"evseId": 0, "chargingProfile": profile(2, "TxDefaultProfile", period)}
        assert (await csms.stations[ID].request("SetChargingProfile", req))["status"] == "Accepted"
        await rig.run_until(lambda: rig.value("ocpp.connection_import_w") == 15000.0, 10, "connection limit published")
        await rig.run(5.0)
        assert rig.site_import() <= 15000.0  # building 5 kW and the vans, at the plant's meter
        assert rig.site_import() > 10_000  # the vans share what is left, not nothing
        for n in (1, 2, 3):  # the station maximum is the connection's, not each van's
            assert rig.value(f"evse{n}.ocpp.limit_charge") == 11000.0

    run(tmp_path, body)


def test_a_request_for_an_evse_the_depot_lacks_is_rejected_with_unknown_evse_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def body(csms: LocalCsms, rig: DepotOcpp) -> None:
        link = csms.stations[ID]
        caplog.set_level(logging.WARNING, logger="v2g_plc.ocpp")
        res = await link.request(
            "SetChargingProfile", {"evseId": 9, "chargingProfile": profile(3, "TxDefaultProfile", {"limit": 1.0})}
        )
        assert res == {"status": "Rejected", "statusInfo": {"reasonCode": "UnknownEvse"}}
        start = {"idToken": {"idToken": "X", "type": "Central"}, "remoteStartId": 5, "evseId": 9}
        res = await link.request("RequestStartTransaction", start)
        assert res["status"] == "Rejected" and res["statusInfo"]["reasonCode"] == "UnknownEvse"
        res = await link.request("GetCompositeSchedule", {"evseId": 4, "duration": 60})
        assert res["status"] == "Rejected" and res["statusInfo"]["reasonCode"] == "UnknownEvse"
        res = await link.request("ChangeAvailability", {"operationalStatus": "Inoperative", "evse": {"id": 9}})
        assert res["status"] == "Rejected" and res["statusInfo"]["reasonCode"] == "UnknownEvse"
        assert rig.value("runtime.available") is True and rig.drive.engine.availability.out == {}
        logged = caplog.text
        assert "UnknownEvse" in logged and "no EVSE 9 here" in logged

    run(tmp_path, body)


def test_each_evses_transaction_continues_its_numbering_after_a_task_process_restart(tmp_path: Path) -> None:
    async def body(csms: LocalCsms, rig: DepotOcpp) -> None:
        for n in (1, 2):
            rig.drive.evse[n]["ev.connected"] = True
        await rig.run_until(lambda: len(tx_events(csms)) >= 2, 20, "two transactions")
        await rig.run(20.0)
        await rig.run_until(lambda: rig.station is not None and len(rig.station.queue) == 0, 20, "queue empty")
        before = {e["evse"]["id"]: (e["transactionInfo"]["transactionId"], e["seqNo"]) for e in tx_events(csms)}
        await rig.stop()  # the task process dies; the same runtime start: no BootNotification, no new transaction
        boots = len(csms.actions("BootNotification"))
        await rig.start()
        await rig.run_until(lambda: rig.station is not None and rig.station.online, 30, "reconnected")
        rig.drive.evse[1]["ev.connected"] = False
        await rig.run_until(
            lambda: any(e["eventType"] == "Ended" and e["evse"]["id"] == 1 for e in tx_events(csms)), 20, "EVSE 1 ends"
        )
        await rig.run(16.0)
        await rig.run_until(lambda: rig.station is not None and len(rig.station.queue) == 0, 20, "queue empty")
        assert len(csms.actions("BootNotification")) == boots
        for n in (1, 2):
            tx, last = before[n]
            after = [e for e in tx_events(csms) if e["transactionInfo"]["transactionId"] == tx]
            assert [e["seqNo"] for e in after] == list(range(len(after)))
            assert after[-1]["seqNo"] > last  # it went on where it was, under the same transaction

    run(tmp_path, body)


@pytest.mark.parametrize("setpoint", [-4000.0, 0.0, 4000.0])
def test_a_central_setpoint_on_evse_2_steers_evse_2_only(tmp_path: Path, setpoint: float) -> None:
    async def body(csms: LocalCsms, rig: DepotOcpp) -> None:
        for n in (1, 2, 3):
            rig.drive.evse[n]["ev.connected"] = True
        await rig.run(5.0)
        before = rig.drive.setpoints()
        assert before[1] > 0 and before[2] > 0  # every EVSE on its own plan's fallback: charging
        period = {"operationMode": "CentralSetpoint", "setpoint": setpoint}
        req = {"evseId": 2, "chargingProfile": profile(4, "TxDefaultProfile", period)}
        assert (await csms.stations[ID].request("SetChargingProfile", req))["status"] == "Accepted"
        await rig.run_until(lambda: rig.value("evse2.authority.mode") == "remote", 10, "EVSE 2 in remote")
        await rig.run(3.0)
        assert rig.value("evse2.ocpp.operation_mode") == "CentralSetpoint"
        assert rig.drive.setpoints()[2] == setpoint
        for n in (1, 3):
            assert rig.value(f"evse{n}.authority.mode") == "plan"
            assert rig.value(f"evse{n}.ocpp.operation_mode") == ""
            assert rig.drive.setpoints()[n] > 0

    run(tmp_path, body, import_w=60_000)
