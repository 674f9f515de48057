"""The depot's station against the independent back office (ocpp-rpc, Node, strict mode: every message both
ways validated against the official OCPP 2.1 schemas): statuses and transactions of several EVSEs, a
profile per evseId and the answers naming an EVSE the depot lacks."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tests.ocpp.depot_rig import DepotOcpp, ocpp_depot_site
from tests.ocpp.test_node_peer import NodeCsms, _need_peer


def test_a_depot_of_three_evses_under_the_strict_peer(tmp_path: Path) -> None:
    _need_peer()

    async def main() -> None:
        csms = await NodeCsms.start("--protocols", "ocpp2.1,ocpp2.0.1")
        rig = await DepotOcpp(ocpp_depot_site(tmp_path, csms.port, identity="CP-1")).start()
        try:
            await rig.run_until(lambda: len(csms.calls("StatusNotification")) >= 3, 30, "statuses")
            for n in (1, 2, 3):
                rig.drive.evse[n]["ev.connected"] = True
                await rig.run(2.0)
            await rig.run(17.0)
            rig.drive.evse[3]["ev.connected"] = False

            def ended() -> bool:
                return any(c["params"]["eventType"] == "Ended" for c in csms.calls("TransactionEvent"))

            await rig.run_until(ended, 20, "EVSE 3's transaction ends")
            limit = {"evseId": 2, "chargingProfile": {
                "id": 5, "stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile", "chargingProfileKind": "Absolute",
                "chargingSchedule": [{"id": 5, "startSchedule": "2027-01-04T00:00:00Z", "chargingRateUnit": "W",
                                      "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 3000.0,
                                                                  "operationMode": "ExternalLimits"}]}]}}  # fmt: skip
            asked = asyncio.ensure_future(csms.request("SetChargingProfile", limit))
            while not asked.done():
                await rig.step()
                await asyncio.sleep(0.005)
            assert asked.result()["status"] == "Accepted"
            await rig.run_until(lambda: rig.value("evse2.ocpp.limit_charge") == 3000.0, 10, "EVSE 2's limit")
            await rig.run(2.0)
            assert rig.drive.setpoints()[2] <= 3000.0 < rig.drive.setpoints()[1]
            bad: dict[str, Any] = {**limit, "evseId": 7}
            asked = asyncio.ensure_future(csms.request("SetChargingProfile", bad))
            while not asked.done():
                await rig.step()
                await asyncio.sleep(0.005)
            assert asked.result()["status"] == "Rejected"
            assert asked.result()["statusInfo"]["reasonCode"] == "UnknownEvse"
            events = [c["params"] for c in csms.calls("TransactionEvent")]
            assert {e["evse"]["id"] for e in events} == {1, 2, 3}
            assert {c["params"]["evseId"] for c in csms.calls("StatusNotification")} == {1, 2, 3}
            assert csms.invalid() == []  # every message and answer valid against the 2.1 schemas
        finally:
            await rig.stop()
            await csms.stop()

    asyncio.run(main())
