"""OCPP 2.1 DER control against the local CSMS speaking 2.1 (the `ocpp` package's v21 schemas check every
message both ways): SetDERControl / GetDERControl / ClearDERControl as ``der_control`` commands (the scan's
answer decides), ReportDERControl from the scan's ``safety.der_overlay``, NotifyDERStartStop, NotifyDERAlarm
from the event stream; the controls stay camelCase as on the wire."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path
from typing import Any

from ocpp.charge_point import camel_to_snake_case, snake_to_camel_case

from runtime.tasks.ocpp.local_csms import LocalCsms
from runtime.tasks.ocpp.smart import stamp
from tests.ocpp.harness import START, Harness, params, until
from tests.ports import free_port

PW = "0123456789abcdef-operator"
CURVE = {"priority": 0, "yUnit": "Not_Applicable", "curveData": [{"x": 1.2, "y": 0.16}, {"x": 1.1, "y": 13.0}]}
LIMIT = {"priority": 1, "pctMaxDischargePower": 50.0}


async def _online(tmp_path: Path, versions: tuple[str, ...] = ("ocpp2.1",)) -> tuple[LocalCsms, Harness]:
    csms = await LocalCsms("127.0.0.1", free_port(), passwords={"CP-1": PW}, subprotocols=versions).start()
    h = await Harness(params(csms.url, tmp_path / "s"), events=True).start()
    await h.publish()
    await until(lambda: "CP-1" in csms.stations and bool(csms.actions("StatusNotification")))
    return csms, h


def ders(h: Harness) -> list[dict[str, Any]]:
    return [a for k, a in h.commands if k == "der_control"]


def test_set_der_control_is_the_scans_decision(tmp_path: Path) -> None:
    async def main() -> None:
        csms, h = await _online(tmp_path)
        link = csms.stations["CP-1"]
        try:
            req = {"isDefault": False, "controlId": "ov-curve-1", "controlType": "HVMustTrip", "curve": CURVE}
            assert (await link.request("SetDERControl", req))["status"] == "Accepted"
            assert ders(h)[-1] == {"action": "set", "control_type": "HVMustTrip", "control_id": "ov-curve-1",
                                   "is_default": False, "ocpp": CURVE}  # fmt: skip
            why = "HVMustTrip 1.2 pu for 0.16 s is outside IEEE 1547-2018 table 11 (category II)"
            h.answer = lambda kind, args: (False, why)
            res = await link.request("SetDERControl", {**req, "controlId": "ov-curve-2"})
            assert res["status"] == "Rejected" and res["statusInfo"]["additionalInfo"] == why
            n = len(ders(h))
            vv = {"isDefault": True, "controlId": "vv", "controlType": "VoltVar", "curve": CURVE}
            assert (await link.request("SetDERControl", vv))["status"] == "NotSupported"
            missing = {"isDefault": True, "controlId": "ld", "controlType": "LimitMaxDischarge"}
            assert (await link.request("SetDERControl", missing))["status"] == "Rejected"
            assert len(ders(h)) == n  # neither reached the scan
        finally:
            await h.stop()
            await csms.close()

    asyncio.run(main())


def test_get_and_clear_der_control_and_start_stop_from_the_overlay(tmp_path: Path) -> None:
    async def main() -> None:
        csms, h = await _online(tmp_path)
        link = csms.stations["CP-1"]
        try:
            assert (await link.request("GetDERControl", {"requestId": 1}))["status"] == "NotFound"
            overlay = {
                "ov-curve-1": {"control_type": "HVMustTrip", "is_default": False, "ocpp": CURVE},
                "limit": {"control_type": "LimitMaxDischarge", "is_default": True, "ocpp": LIMIT},
            }
            await h.publish(safety__der_overlay=json.dumps(overlay))
            await until(lambda: bool(csms.actions("NotifyDERStartStop")))
            assert (await link.request("GetDERControl", {"requestId": 7}))["status"] == "Accepted"
            await until(lambda: bool(csms.actions("ReportDERControl")))
            only = await link.request("GetDERControl", {"requestId": 8, "controlType": "LimitMaxDischarge"})
            assert only["status"] == "Accepted"
            await until(lambda: len(csms.actions("ReportDERControl")) == 2)
            res = await link.request("ClearDERControl", {"isDefault": False, "controlId": "ov-curve-1"})
            assert res["status"] == "Accepted"
            assert ders(h)[-1] == {"action": "clear", "control_id": "ov-curve-1", "control_type": None}
            assert (await link.request("ClearDERControl", {"isDefault": False, "controlId": "nope"}))[
                "status"
            ] == "NotFound"
            del overlay["ov-curve-1"]
            await h.publish(safety__der_overlay=json.dumps(overlay))
            await until(lambda: len(csms.actions("NotifyDERStartStop")) == 2)
        finally:
            await h.stop()
            await csms.close()
        full, limited = (r.payload for r in csms.actions("ReportDERControl"))
        assert full["requestId"] == 7 and full["curve"] == [
            {"id": "ov-curve-1", "curveType": "HVMustTrip", "isDefault": False, "isSuperseded": False, "curve": CURVE}
        ]
        assert full["limitMaxDischarge"][0]["limitMaxDischarge"] == LIMIT
        assert "curve" not in limited and limited["limitMaxDischarge"][0]["id"] == "limit"
        started, stopped = (r.payload for r in csms.actions("NotifyDERStartStop"))
        assert (started["controlId"], started["started"]) == ("ov-curve-1", True)  # not the default one
        assert (stopped["controlId"], stopped["started"]) == ("ov-curve-1", False)

    asyncio.run(main())


def test_der_alarms_from_the_event_stream(tmp_path: Path) -> None:
    async def main() -> None:
        csms, h = await _online(tmp_path)
        try:
            base = {"k": 7, "t": 0.14, "source": "safety"}
            h.cx._event({"seq": 0, "kind": "trip", "message": "trip ov2", "data": {"code": "ov2"}, **base})
            h.cx._event({"seq": 1, "kind": "reset", "message": "trip ov2 cleared", "data": {"code": "ov2"}, **base})
            h.cx._event({"seq": 2, "kind": "cessation", "message": "momentary cessation: voltage 1.150/1.120 pu",
                         "data": {"active": True}, **base})  # fmt: skip
            h.cx._event({"seq": 3, "kind": "cessation", "message": "momentary cessation ended: output restored",
                         "data": {"active": False}, **base})  # fmt: skip
            h.cx._event({"seq": 4, "kind": "trip", "message": "trip islanding", "data": {"code": "islanding"}, **base})
            await until(lambda: len(csms.actions("NotifyDERAlarm")) == 4 and len(csms.actions("NotifyEvent")) >= 3)
        finally:
            await h.stop()
            await csms.close()
        got = [(r.payload["controlType"], r.payload.get("gridEventFault"), r.payload.get("alarmEnded"))
               for r in csms.actions("NotifyDERAlarm")]  # fmt: skip
        assert got == [
            ("HVMustTrip", "OverVoltage", False),
            ("HVMustTrip", "OverVoltage", True),
            ("HVMomCess", "OverVoltage", False),
            ("HVMomCess", None, True),
        ]  # islanding is no IEEE 1547 DER control: NotifyEvent only

    asyncio.run(main())


def test_der_control_is_unknown_over_2_0_1(tmp_path: Path) -> None:
    async def main() -> None:
        csms, h = await _online(tmp_path, ("ocpp2.0.1",))
        try:
            link = csms.stations["CP-1"]
            req = {"isDefault": True, "controlId": "x", "controlType": "HVMustTrip", "curve": CURVE}
            # sent as raw OCPP-J: the package itself refuses to send an action 2.0.1 does not have
            async with link._call_lock:
                await link._send(json.dumps([2, "der-1", "SetDERControl", req]))
                answer = await link._get_specific_response("der-1", 5)
            assert answer.message_type_id == 4 and answer.error_code == "NotImplemented"  # OCPP-J Table 8
        finally:
            await h.stop()
            await csms.close()

    asyncio.run(main())


def test_the_packages_name_conversion_would_break_v21_fields_ours_keeps_them(tmp_path: Path) -> None:
    """The `ocpp` package's snake/camel round trip breaks names such as ``maxDischargePower_L2``; the
    station never converts, so a NotifyEVChargingNeeds with them reaches a 2.1 CSMS intact and valid."""
    needs = {"evseId": 1, "chargingNeeds": {"requestedEnergyTransfer": "AC_BPT",
             "v2xChargingParameters": {"maxChargePower": 11000.0, "maxDischargePower": 11000.0,
                                       "maxDischargePower_L2": 3680.0}}}  # fmt: skip
    assert snake_to_camel_case(camel_to_snake_case(needs)) != needs  # what the package would send

    async def main() -> None:
        csms, h = await _online(tmp_path)
        try:
            assert h.station.peer is not None
            assert (await h.station.peer.request("NotifyEVChargingNeeds", needs))["status"] == "Accepted"
        finally:
            await h.stop()
            await csms.close()
        assert csms.actions("NotifyEVChargingNeeds")[0].payload == needs

    asyncio.run(main())


def _overlay(**controls: tuple[bool, dict[str, Any]]) -> str:
    return json.dumps(
        {cid: {"control_type": "LimitMaxDischarge", "is_default": d, "ocpp": o} for cid, (d, o) in controls.items()}
    )


def test_a_scheduled_control_keeps_its_absolute_end_across_a_runtime_start(tmp_path: Path) -> None:
    """SetDERControl stamps startTime on a scheduled control; after a runtime start the station gives each
    restored scheduled control only what is left of it, clears one whose end passed while the runtime was
    down, and leaves defaults alone; a task-process restart changes nothing."""

    async def main() -> None:
        csms, h = await _online(tmp_path)
        link = csms.stations["CP-1"]
        try:
            req = {"isDefault": False, "controlId": "s1", "controlType": "LimitMaxDischarge",
                   "limitMaxDischarge": {**LIMIT, "duration": 600.0}}  # fmt: skip
            assert (await link.request("SetDERControl", req))["status"] == "Accepted"
            assert ders(h)[-1]["ocpp"]["startTime"] == h.station.stamp()  # now: its end is kept with it
        finally:
            await h.stop()
            await csms.close()
        t = START + dt.timedelta(seconds=1)  # the first image's calendar time in a new Harness
        overlay = _overlay(
            left=(False, {**LIMIT, "startTime": stamp(t - dt.timedelta(seconds=100)), "duration": 300}),
            gone=(False, {**LIMIT, "startTime": stamp(t - dt.timedelta(seconds=400)), "duration": 300}),
            default=(True, LIMIT),
            legacy=(False, {**LIMIT, "duration": 300}),
        )
        for runtime_id, expect in (("runtime-2", True), ("runtime-2", False)):  # a start, then a task restart
            h2 = await Harness(params("ws://127.0.0.1:9/ocpp", tmp_path / "s"), runtime_id=runtime_id).start()
            try:
                await h2.publish(safety__der_overlay=overlay)
                if expect:
                    await until(lambda h2=h2: len(ders(h2)) == 2)
                    got = {c["control_id"]: c for c in ders(h2)}
                    assert got["gone"] == {"action": "clear", "control_id": "gone", "control_type": None}
                    assert got["left"]["ocpp"]["duration"] == 200.0 and got["left"]["ocpp"]["startTime"] == stamp(t)
                    assert got["left"]["is_default"] is False and got["left"]["control_type"] == "LimitMaxDischarge"
                else:
                    await h2.publish(safety__der_overlay=overlay)
                    assert ders(h2) == []
            finally:
                await h2.stop()

    asyncio.run(main())
