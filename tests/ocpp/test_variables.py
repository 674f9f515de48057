"""Device-model variables (Get/SetVariables, GetBaseReport -> NotifyReport), persistence, the Basic auth
password set by the CSMS, and OCPP-J Table 8 error codes, against a real CSMS."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from runtime.tasks.ocpp.local_csms import LocalCsms, StationLink
from runtime.tasks.ocpp.variables import DeviceModel
from tests.ocpp.harness import Harness, params, until
from tests.ports import free_port

PW = "0123456789abcdef-operator"
NEW_PW = "a-new-password-from-the-csms"


def _var(component: str, name: str, instance: str | None = None) -> dict:
    v: dict = {"name": name}
    if instance:
        v["instance"] = instance
    return {"component": {"name": component}, "variable": v}


async def _raw(cp: StationLink, action: str, payload: dict[str, Any]) -> list[Any]:
    """A CALL the station's schema layer cannot know: sent as text, the answer read as text."""
    await cp._send(json.dumps([2, "raw-1", action, payload]))
    resp = await cp._get_specific_response("raw-1", 5)
    return [resp.message_type_id, resp.error_code] if resp.message_type_id == 4 else [resp.message_type_id]


def test_variables_report_password_and_table_8(tmp_path: Path) -> None:
    passwords = {"CP-1": PW}
    state = tmp_path / "s"

    async def main() -> None:
        csms = await LocalCsms("127.0.0.1", free_port(), passwords=passwords).start()
        h = await Harness(params(csms.url, state)).start()
        try:
            await h.publish()
            await until(lambda: "CP-1" in csms.stations and bool(csms.actions("StatusNotification")))
            cp = csms.stations["CP-1"]
            res = await cp.request("GetVariables", {"getVariableData": [
                _var("SampledDataCtrlr", "TxUpdatedInterval"), _var("OCPPCommCtrlr", "MessageAttempts", "TransactionEvent"),
                _var("SecurityCtrlr", "BasicAuthPassword"), _var("NoSuchCtrlr", "X"), _var("OCPPCommCtrlr", "Nope")]})  # fmt: skip
            got = [(r["attributeStatus"], r.get("attributeValue")) for r in res["getVariableResult"]]
            assert got == [
                ("Accepted", "15"),
                ("Accepted", "5"),
                ("Rejected", None),
                ("UnknownComponent", None),
                ("UnknownVariable", None),
            ]
            res = await cp.request("SetVariables", {"setVariableData": [
                {**_var("SampledDataCtrlr", "TxUpdatedInterval"), "attributeValue": "60"},
                {**_var("OCPPCommCtrlr", "HeartbeatInterval"), "attributeValue": "0"},  # below the stated range
                {**_var("SecurityCtrlr", "SecurityProfile"), "attributeValue": "3"}]})  # fmt: skip
            assert [r["attributeStatus"] for r in res["setVariableResult"]] == ["Accepted", "Rejected", "Rejected"]
            assert (await cp.request("GetBaseReport", {"requestId": 3, "reportBase": "FullInventory"}))[
                "status"
            ] == "Accepted"
            await until(lambda: bool(csms.actions("NotifyReport")))
            report = {
                (d["component"]["name"], d["variable"]["name"]): d
                for d in csms.actions("NotifyReport")[0].payload["reportData"]
            }
            assert report[("SampledDataCtrlr", "TxUpdatedInterval")]["variableAttribute"][0]["value"] == "60"
            assert "value" not in report[("SecurityCtrlr", "BasicAuthPassword")]["variableAttribute"][0]
            # Table 8: unknown action -> NotImplemented, known but unsupported -> NotSupported
            assert await _raw(cp, "FlyToTheMoon", {}) == [4, "NotImplemented"]
            assert await _raw(cp, "UnlockConnector", {"evseId": 1, "connectorId": 1}) == [4, "NotSupported"]
            # a payload that breaks the schema gets the schema's error, and the station carries on
            assert await _raw(cp, "SetChargingProfile", {"evseId": 1}) == [4, "ProtocolError"]  # incomplete
            code = await _raw(cp, "GetVariables", {"getVariableData": "not a list"})
            assert code[0] == 4 and code[1] in ("TypeConstraintViolation", "FormatViolation", "FormationViolation")
            res = await cp.request("GetTransactionStatus", {})
            assert res == {"messagesInQueue": False}
            # a new password: stored, and the station reconnects with it
            passwords["CP-1"] = NEW_PW
            res = await cp.request(
                "SetVariables",
                {"setVariableData": [{**_var("SecurityCtrlr", "BasicAuthPassword"), "attributeValue": NEW_PW}]},
            )
            assert res["setVariableResult"][0]["attributeStatus"] == "Accepted"
            await until(lambda: csms.connects == 2 and "CP-1" in csms.stations, timeout_s=15)
            assert csms.refusals == []
            kinds = lambda: [r.payload["type"] for r in csms.actions("SecurityEventNotification")]  # noqa: E731
            await until(lambda: kinds() == ["StartupOfTheDevice", "ReconfigurationOfSecurityParameters"])
        finally:
            await h.stop()
            await csms.close()

    asyncio.run(main())
    dm = DeviceModel(params("ws://127.0.0.1:1/ocpp", state), state)  # a restart keeps what the CSMS set
    assert dm["TxUpdatedInterval"] == 60 and dm.password() == NEW_PW
    assert (state / "password").stat().st_mode & 0o777 == 0o600
    # the site file's own value changes: the file wins, the stored override is dropped
    dm2 = DeviceModel(params("ws://127.0.0.1:1/ocpp", state, variables={"TxUpdatedInterval": 30}), state)
    assert dm2["TxUpdatedInterval"] == 30
