"""The message layer is version-neutral: the same peer code speaks 2.0.1 and 2.1 (the next issue), answers
OCPP-J Table 8 codes the right way round in both, and validates against the selected version's schemas."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from runtime.tasks.ocpp import connection as conn
from runtime.tasks.ocpp.protocol import V201, Version, make_peer
from tests.ports import free_port

V21 = Version("2.1", "ocpp2.1", "ocpp.v21")


@pytest.mark.parametrize(("version", "known"), [(V201, "Reset"), (V21, "SetDERControl")])
def test_same_layer_answers_table_8_and_validates_per_version(version: Version, known: str) -> None:
    answers: dict[str, Any] = {}

    async def csms(ws: ServerConnection) -> None:
        assert ws.subprotocol == version.subprotocol
        for uid, action, payload in (
            ("1", "FlyToTheMoon", {}),
            ("2", known, {}),
            ("3", "GetTransactionStatus", {}),
            ("4", "GetTransactionStatus", {"transactionId": 7}),  # wrong type for the schema
        ):
            await ws.send(json.dumps([2, uid, action, payload]))
            answers[uid] = json.loads(await ws.recv())
        boot = json.loads(await ws.recv())  # and the station's own CALL, answered here
        answers["boot"] = boot
        await ws.send(
            json.dumps([3, boot[1], {"currentTime": "2027-01-04T17:30:00Z", "interval": 5, "status": "Accepted"}])
        )
        await ws.wait_closed()

    async def main() -> None:
        port = free_port()
        async with serve(csms, "127.0.0.1", port, subprotocols=[version.subprotocol]):  # type: ignore[list-item]
            ep = conn.Endpoint(f"ws://127.0.0.1:{port}/ocpp/CP-1", "CP-1", 1, "0123456789abcdef-operator")
            ws = await conn.open_link(ep, [version.subprotocol], 5)
            handlers = {"GetTransactionStatus": lambda req: {"messagesInQueue": False}}
            rtts: list[float] = []
            peer = make_peer(version, "CP-1", ws, handlers, timeout_s=5, on_rtt=lambda a, r: rtts.append(r))
            rx = asyncio.create_task(peer.start())
            while len(answers) < 4:
                await asyncio.sleep(0.01)
            cs = {"model": "m", "vendorName": "v"}
            res = await peer.request("BootNotification", {"reason": "PowerUp", "chargingStation": cs})
            assert res["status"] == "Accepted" and len(rtts) == 1
            rx.cancel()
            await ws.close()

    asyncio.run(asyncio.wait_for(main(), 20))
    assert answers["1"][0] == 4 and answers["1"][2] == "NotImplemented"
    assert answers["2"][0] == 4 and answers["2"][2] == "NotSupported"
    assert answers["3"] == [3, "3", {"messagesInQueue": False}]
    assert answers["4"][0] == 4 and answers["4"][2] in (
        "TypeConstraintViolation",
        "FormatViolation",
        "FormationViolation",
    )
    assert answers["boot"][2] == "BootNotification"
