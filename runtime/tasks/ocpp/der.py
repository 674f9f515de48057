"""OCPP 2.1 DER control (part 2, R "DER control") onto the scan's ``der_control`` command: pure, no I/O.

The station validates nothing of IEEE 1547 itself: the scan's safety layer checks a control against the
standard's ranges for the site's category, applies it at a cycle boundary, persists it and answers; the
station maps that answer to the CSMS (a refusal is Rejected with the reason in statusInfo). What is in
force comes back as the shared tag ``safety.der_overlay`` (JSON: control_id -> {control_type, is_default,
ocpp}), which answers GetDERControl (ReportDERControl) and drives NotifyDERStartStop. Controls stay as
camelCase dicts, exactly as on the wire: the ``ocpp`` package's v21 conversion would break their field
names (docs/reference.md "OCPP").

A scheduled control (``isDefault`` false) ends at its absolute time, ``startTime`` + ``duration``, across a
runtime restart too: the station stamps ``startTime`` (now) on one that comes without it, so the persisted
overlay carries its end; the safety layer, which has no calendar, counts ``duration`` on the cycle clock
from when it applied the control and starts that count again after a restart. So after a runtime start the
station puts each restored scheduled control back with what is left of it (``resume``), or clears it when
its end has passed while the runtime was down.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

from runtime.tasks.ocpp.smart import parse_time, stamp

# DERControlEnumType -> the request's field that carries it, for the IEEE 1547 functions the safety layer
# implements: must-trip curves, momentary cessation, enter service, limit max discharge, frequency droop
OBJECT_KEY: dict[str, str] = {
    "HVMustTrip": "curve",
    "LVMustTrip": "curve",
    "HFMustTrip": "curve",
    "LFMustTrip": "curve",
    "HVMomCess": "curve",
    "LVMomCess": "curve",
    "EnterService": "enterService",
    "LimitMaxDischarge": "limitMaxDischarge",
    "FreqDroop": "freqDroop",
}

# The safety layer's trip codes (IEEE 1547-2018 table 11/12 names) as DER alarms: controlType, gridEventFault
TRIP_ALARMS: dict[str, tuple[str, str]] = {
    **{c: ("HVMustTrip", "OverVoltage") for c in ("ov1", "ov2")},
    **{c: ("LVMustTrip", "UnderVoltage") for c in ("uv1", "uv2")},
    **{c: ("HFMustTrip", "OverFrequency") for c in ("of1", "of2")},
    **{c: ("LFMustTrip", "UnderFrequency") for c in ("uf1", "uf2")},
}
_CESSATION_PU = re.compile(r"voltage ([0-9.]+)/([0-9.]+) pu")


def overlay(text: Any) -> dict[str, dict[str, Any]]:
    """The ``safety.der_overlay`` tag's controls (empty when absent or unreadable)."""
    try:
        doc = json.loads(text) if isinstance(text, str) and text else {}
    except ValueError:
        return {}
    return {str(k): v for k, v in doc.items() if isinstance(v, dict)} if isinstance(doc, dict) else {}


def set_command(req: dict[str, Any], now: dt.datetime) -> tuple[dict[str, Any] | None, str, str]:
    """The ``der_control`` command for a SetDERControl, or None with the answer's status and why."""
    ctype = req["controlType"]
    key = OBJECT_KEY.get(ctype)
    if key is None:
        return None, "NotSupported", f"{ctype} is not a function this site's safety layer carries out"
    if key not in req:
        return None, "Rejected", f"a {ctype} control carries {key}"
    obj = req[key]
    if not req["isDefault"] and isinstance(obj, dict) and "duration" in obj and "startTime" not in obj:
        obj = {**obj, "startTime": stamp(now)}  # its absolute end, kept with it (module docstring)
    cmd = {
        "action": "set",
        "control_type": ctype,
        "control_id": req["controlId"],
        "is_default": bool(req["isDefault"]),
        "ocpp": obj,
    }
    return cmd, "Accepted", ""


def resume(controls: dict[str, dict[str, Any]], now: dt.datetime) -> list[dict[str, Any]]:
    """After a runtime start: the ``der_control`` commands that give each restored scheduled control only
    what is left of it (``startTime`` now, ``duration`` to its old end), or clear it when that end passed."""
    out: list[dict[str, Any]] = []
    for cid, c in sorted(controls.items()):
        obj = c.get("ocpp")
        if c.get("is_default") or not isinstance(obj, dict) or "startTime" not in obj or "duration" not in obj:
            continue
        try:
            end = parse_time(str(obj["startTime"])) + dt.timedelta(seconds=float(obj["duration"]))
        except (TypeError, ValueError, OverflowError):
            continue  # the safety layer checked duration; a startTime it cannot read keeps the full duration
        left = (end - now).total_seconds()
        if left <= 0:
            out.append({"action": "clear", "control_id": cid, "control_type": None})
        elif left < float(obj["duration"]):
            ocpp = {**obj, "startTime": stamp(now), "duration": round(left, 3)}
            out.append({"action": "set", "control_type": c.get("control_type"), "control_id": cid,
                        "is_default": False, "ocpp": ocpp})  # fmt: skip
    return out


def matching(controls: dict[str, dict[str, Any]], req: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The controls a Get/ClearDERControl selects (isDefault, controlType, controlId where given)."""
    return {
        cid: c
        for cid, c in controls.items()
        if ("isDefault" not in req or bool(c.get("is_default")) == req["isDefault"])
        and ("controlType" not in req or c.get("control_type") == req["controlType"])
        and ("controlId" not in req or cid == req["controlId"])
    }


def report(request_id: int, controls: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """ReportDERControlRequest for the selected controls (the Get*Type of each kind)."""
    out: dict[str, Any] = {"requestId": request_id}
    for cid, c in controls.items():
        ctype, default, obj = c.get("control_type"), bool(c.get("is_default")), c.get("ocpp")
        key = OBJECT_KEY.get(str(ctype))
        if key is None or not isinstance(obj, dict):
            continue
        if key == "curve":
            item = {"id": cid, "curveType": ctype, "isDefault": default, "isSuperseded": False, "curve": obj}
        elif key == "enterService":
            item = {"id": cid, "enterService": obj}
        else:
            item = {"id": cid, "isDefault": default, "isSuperseded": False, key: obj}
        out.setdefault(key, []).append(item)
    return out


def alarm(event: dict[str, Any], last_cessation: str) -> tuple[dict[str, Any] | None, str]:
    """NotifyDERAlarm fields (without timestamp) for a scan event, and the cessation type now in force."""
    kind, data = event.get("kind"), event.get("data") or {}
    if kind in ("trip", "reset") and str(data.get("code", "")) in TRIP_ALARMS:
        ctype, fault = TRIP_ALARMS[str(data["code"])]
        return {"controlType": ctype, "gridEventFault": fault, "alarmEnded": kind == "reset"}, last_cessation
    if kind == "cessation":
        if data.get("active"):
            m = _CESSATION_PU.search(str(event.get("message", "")))
            high = m is not None and max(float(m.group(1)), float(m.group(2))) > 1.0
            ctype = "HVMomCess" if high else "LVMomCess"
            fault = "OverVoltage" if high else "UnderVoltage"
            return {"controlType": ctype, "gridEventFault": fault, "alarmEnded": False}, ctype
        ctype = last_cessation or "LVMomCess"
        return {"controlType": ctype, "alarmEnded": True}, ""
    return None, last_cessation
