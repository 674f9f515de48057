"""RequestStartTransaction authorizes its idToken with the CSMS (AuthCtrlr.AuthorizeRemoteStart, F01.FR.02)
before the scan is asked to start: a blocked token is Rejected and the scan never hears of it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from runtime.tasks.ocpp.local_csms import LocalCsms
from tests.ocpp.harness import Harness, params, plugged, until
from tests.ports import free_port

PW = "0123456789abcdef-operator"


def test_remote_start_authorizes_the_id_token(tmp_path: Path) -> None:
    async def main() -> None:
        csms = LocalCsms("127.0.0.1", free_port(), passwords={"CP-1": PW}, blocked_tokens=frozenset({"BAD"}))
        await csms.start()
        h = await Harness(params(csms.url, tmp_path / "s")).start()
        try:
            await h.publish()
            await until(lambda: "CP-1" in csms.stations and bool(csms.actions("StatusNotification")))
            link = csms.stations["CP-1"]
            bad = {"idToken": {"idToken": "BAD", "type": "Central"}, "remoteStartId": 1}
            res = await link.request("RequestStartTransaction", bad)
            assert res["status"] == "Rejected" and res["statusInfo"]["reasonCode"] == "InvalidIdToken"
            assert "Blocked" in res["statusInfo"]["additionalInfo"]
            assert not any(kind == "start" for kind, _ in h.commands)  # the scan never heard of it
            good = {"idToken": {"idToken": "GOOD", "type": "Central"}, "remoteStartId": 2}
            assert (await link.request("RequestStartTransaction", good))["status"] == "Accepted"
            assert ("start", {"remote_id": 2}) in h.commands
            await h.publish(**plugged())
            await until(lambda: bool(csms.actions("TransactionEvent")))
        finally:
            await h.stop()
            await csms.close()
        assert [r.payload["idToken"]["idToken"] for r in csms.actions("Authorize")] == ["BAD", "GOOD"]
        started = csms.actions("TransactionEvent")[0].payload
        assert started["idToken"] == {"idToken": "GOOD", "type": "Central"}
        assert started["transactionInfo"]["remoteStartId"] == 2

    asyncio.run(main())
