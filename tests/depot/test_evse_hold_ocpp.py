"""One EVSE of a depot out of service or stopped through OCPP (docs/ocpp.md "A depot"): ChangeAvailability,
RequestStopTransaction and RequestStartTransaction for EVSE 2 hold or release EVSE 2 alone, and the station
reports Unavailable for EVSE 2 only. Simulated time through Engine.step, a real WebSocket to a real CSMS."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from runtime.engine import StepResult
from runtime.tasks.ocpp.local_csms import LocalCsms
from tests.ocpp.depot_rig import PW, DepotOcpp, ocpp_depot_site
from tests.ports import free_port

ID = "DEPOT-1"


class Rig(DepotOcpp):
    """The depot rig with the runner's own availability feed: ``runtime.available`` and ``runtime.evses_out``
    from the engine's hold, each cycle (runtime/runner.py)."""

    async def step(self) -> StepResult:
        a = self.drive.engine.availability
        self.drive.site["runtime.available"] = a.operative
        self.drive.site["runtime.evses_out"] = a.evses_out()
        return await super().step()


def run(tmp: Path, body: Callable[[LocalCsms, Rig], Awaitable[None]]) -> None:
    async def main() -> None:
        csms = await LocalCsms(
            "127.0.0.1", free_port(), passwords={ID: PW}, subprotocols=("ocpp2.1", "ocpp2.0.1")
        ).start()
        rig = Rig(ocpp_depot_site(tmp, csms.port))
        await rig.start()
        try:
            await rig.run_until(lambda: ID in csms.stations and rig.station is not None and rig.station.online, 30)
            for n in (1, 2, 3):
                rig.drive.evse[n]["ev.connected"] = True
            await rig.run(3.0)
            await body(csms, rig)
        finally:
            await rig.stop()
            await csms.close()

    asyncio.run(main())


async def request(rig: Rig, csms: LocalCsms, action: str, payload: dict[str, Any]) -> dict[str, Any]:
    """A CSMS request whose answer waits for the scan's verdict: the scan steps until it is answered."""
    asked = asyncio.ensure_future(csms.stations[ID].request(action, payload))
    await rig.run_until(asked.done, 10, f"{action} answered")
    res: dict[str, Any] = asked.result()
    return res


def statuses(csms: LocalCsms) -> dict[int, str]:
    """The last connector status the CSMS has of each EVSE."""
    return {r.payload["evseId"]: r.payload["connectorStatus"] for r in csms.actions("StatusNotification")}


def held(rig: Rig, n: int) -> bool:
    return rig.value(f"evse{n}.inverter.setpoint") == 0.0 and rig.value(f"evse{n}.inverter.enable") is False


def charging(rig: Rig, n: int) -> bool:
    return rig.value(f"evse{n}.inverter.setpoint") > 0 and rig.value(f"evse{n}.inverter.enable") is True


def test_evse_2_inoperative_is_held_and_reported_unavailable_alone(tmp_path: Path) -> None:
    async def body(csms: LocalCsms, rig: Rig) -> None:
        assert all(charging(rig, n) for n in (1, 2, 3))
        req: dict[str, Any] = {"operationalStatus": "Inoperative", "evse": {"id": 2}}
        assert (await request(rig, csms, "ChangeAvailability", req))["status"] == "Accepted"
        await rig.run_until(lambda: statuses(csms).get(2) == "Unavailable", 10, "EVSE 2 Unavailable")
        await rig.run(2.0)
        assert held(rig, 2)
        assert charging(rig, 1) and charging(rig, 3)
        assert rig.value("runtime.available") is True
        assert statuses(csms)[1] != "Unavailable" and statuses(csms)[3] != "Unavailable"
        assert rig.station is not None and rig.station.available  # one EVSE out: the station stays operative
        start = {"idToken": {"idToken": "X", "type": "Central"}, "remoteStartId": 6, "evseId": 2}
        answer = await request(rig, csms, "RequestStartTransaction", start)
        assert answer["status"] == "Rejected" and answer["statusInfo"]["reasonCode"] == "Unavailable"
        req["operationalStatus"] = "Operative"
        assert (await request(rig, csms, "ChangeAvailability", req))["status"] == "Accepted"
        await rig.run_until(lambda: statuses(csms).get(2) not in (None, "Unavailable"), 10, "EVSE 2 back")
        await rig.run(2.0)
        assert all(charging(rig, n) for n in (1, 2, 3))

    run(tmp_path, body)


def test_a_remote_stop_of_evse_2_holds_it_alone_until_its_remote_start(tmp_path: Path) -> None:
    async def body(csms: LocalCsms, rig: Rig) -> None:
        assert rig.station is not None
        tx = rig.station.evses[2].tx.st.tx_id
        assert (await request(rig, csms, "RequestStopTransaction", {"transactionId": tx}))["status"] == "Accepted"
        await rig.run(2.0)
        assert held(rig, 2) and rig.drive.engine.stopped_evses == {2: f"CSMS of {ID}"}
        assert charging(rig, 1) and charging(rig, 3)
        start = {"idToken": {"idToken": "X", "type": "Central"}, "remoteStartId": 5, "evseId": 2}
        assert (await request(rig, csms, "RequestStartTransaction", start))["status"] == "Accepted"
        await rig.run(2.0)
        assert rig.drive.engine.stopped_evses == {}
        assert all(charging(rig, n) for n in (1, 2, 3))

    run(tmp_path, body)
