"""The vendor SunSpec models: 64901 "V2G site", what SunSpec's DER models lack for one charger (mode, trip,
limits, plan, prices, the scan's answer to the last write, a trip reset); 64902 "V2G connection", the grid
connection a depot's chargers share (its rating, the local API's limits, the building, the fleet).

SunSpec reserves model ids 64000-65535 for vendors. The definitions below are in pysunspec2's JSON model
format (the same as the official models), so an EMS using pysunspec2 reads them by name once the JSON is on
its model path: ``python -m runtime.tasks.localapi.vendor_model 64901 > model_64901.json`` (and 64902).
Power here follows SunSpec's sign like 701/704 (positive = discharge); limits are magnitudes (W >= 0).
"""

from __future__ import annotations

import json
from typing import Any

VENDOR_ID = 64901
MODES: tuple[str, ...] = ("idle", "charge", "discharge", "safe_state", "remote")  # enum value = index
TRIPS: tuple[str, ...] = (
    "",  # 0: no trip
    "ov2",
    "ov1",
    "uv1",
    "uv2",
    "of2",
    "of1",
    "uf1",
    "uf2",
    "islanding",
    "rocof",
    "over_temperature",
    "comms_lost",
    "overrun",
    "program_fault",
    "power_divergence",
    "write_mismatch",
)
CMD_STATES: tuple[str, ...] = ("none", "pending", "accepted", "refused")  # CmdSt enum value = index
OTHER_TRIP = 0xFFFE  # a trip code this table does not know (its text is in TripCode)


def _point(name: str, typ: str, size: int, desc: str, **kw: Any) -> dict[str, Any]:
    return {"name": name, "type": typ, "size": size, "desc": desc, "label": name, **kw}


def _symbols(names: tuple[str, ...]) -> list[dict[str, Any]]:
    return [{"name": (n or "NONE").upper(), "value": i, "label": n or "none"} for i, n in enumerate(names)]


POINTS: list[dict[str, Any]] = [
    _point("ID", "uint16", 1, "Model ID", value=VENDOR_ID, static="S", mandatory="M"),
    _point("L", "uint16", 1, "Model length", static="S", mandatory="M"),
    _point("Mode", "enum16", 1, "Operating mode (mode.state)", symbols=_symbols(MODES)),
    _point("Trip", "enum16", 1, "Latched trip (safety.trip); 0xFFFE: see TripCode", symbols=_symbols(TRIPS)),
    _point("TripCode", "string", 8, "Trip code as text (safety.trip)"),
    _point("TripRsn", "string", 32, "Why the safety layer acts (safety.reason), truncated to 64 bytes"),
    _point("Cess", "enum16", 1, "Momentary cessation (safety.cessation)", symbols=_symbols(("off", "on"))),
    _point("WLimCha", "uint32", 2, "Charge limit in force, W (safety.limit_charge)", sf="W_SF", units="W"),
    _point("WLimDis", "uint32", 2, "Discharge limit in force, W (safety.limit_discharge)", sf="W_SF", units="W"),
    _point("WPlan", "int32", 2, "Planned power, W, + = discharge (plan.power negated)", sf="W_SF", units="W"),
    _point("WSetOut", "int32", 2, "Committed set point, W, + = discharge (inverter.setpoint negated)", sf="W_SF"),
    _point(
        "CmdSt", "enum16", 1, "The scan's answer to the last write (mode or trip reset)", symbols=_symbols(CMD_STATES)
    ),
    _point("CmdRsn", "string", 16, "Why the scan refused the last write, truncated to 32 bytes"),
    _point("TripRst", "uint16", 1, "Write 1: ask for a trip reset (only with trip_reset: true); reads 0", access="RW"),
    _point("W_SF", "sunssf", 1, "Scale factor of the W points"),
    # Prices in the feed's currency per MWh (runtime/tasks/prices.py), signed: negative prices happen.
    _point("PrcDA", "int32", 2, "Day-ahead price of the interval now (prices.day_ahead)", sf="Prc_SF", units="/MWh"),
    _point("PrcRT", "int32", 2, "Real-time price of the interval now (prices.real_time)", sf="Prc_SF", units="/MWh"),
    _point(
        "PrcPlan", "int32", 2, "Price the plan assumed for the interval now (plan.price)", sf="Prc_SF", units="/MWh"
    ),
    _point("Prc_SF", "sunssf", 1, "Scale factor of the price points"),
]
POINTS[1]["value"] = sum(p["size"] for p in POINTS[2:])

DEFINITION: dict[str, Any] = {
    "id": VENDOR_ID,
    "group": {
        "name": "V2GSite",
        "label": "V2G site (v2g-plc)",
        "desc": "Operating mode, trip, limits and plan of a v2g-plc site",
        "type": "group",
        "points": POINTS,
    },
}


CONNECTION_ID = 64902
_CONNECTION_POINTS: list[dict[str, Any]] = [
    _point("ID", "uint16", 1, "Model ID", value=CONNECTION_ID, static="S", mandatory="M"),
    _point("L", "uint16", 1, "Model length", static="S", mandatory="M"),
    _point("ImpRtg", "uint32", 2, "Import rating of the connection (site file), W", sf="W_SF", units="W"),
    _point("ExpRtg", "uint32", 2, "Export rating of the connection (site file), W", sf="W_SF", units="W"),
    _point("ImpLim", "uint32", 2, "Import limit set by the local API, W (0..ImpRtg)", sf="W_SF", access="RW"),
    _point("ExpLim", "uint32", 2, "Export limit set by the local API, W (0..ExpRtg)", sf="W_SF", access="RW"),
    _point("LimRvrtTms", "uint32", 2, "s the limits hold after the last write; then the ratings", access="RW"),
    _point("Bldg", "int32", 2, "Building load at the PCC, W, + = import (connection.building_w)", sf="W_SF"),
    _point("NEvse", "uint16", 1, "EVSEs of the site"),
    _point("EvseUnitOfs", "uint16", 1, "EVSE n is Modbus unit n + EvseUnitOfs"),
    _point("NTrip", "uint16", 1, "EVSEs with a trip latched"),
    _point("NCut", "uint16", 1, "EVSEs the allocator cut"),
    _point("FleetSt", "string", 8, "Fleet plan status (fleet.status)"),
    _point("FleetRsn", "string", 16, "Why the fleet plan is in fallback (fleet.reason), truncated to 32 bytes"),
    _point("ShortWh", "uint32", 2, "Energy the fleet plan's departures miss (fleet.shortfall_kwh), Wh", sf="WH_SF"),
    _point("ConnRsn", "string", 16, "Why the connection interlock acts (connection.reason), truncated"),
    _point("W_SF", "sunssf", 1, "Scale factor of the W points"),
    _point("WH_SF", "sunssf", 1, "Scale factor of the Wh points"),
]
_CONNECTION_POINTS[1]["value"] = sum(p["size"] for p in _CONNECTION_POINTS[2:])

CONNECTION_DEFINITION: dict[str, Any] = {
    "id": CONNECTION_ID,
    "group": {
        "name": "V2GConnection",
        "label": "V2G grid connection (v2g-plc)",
        "desc": "The grid connection a v2g-plc site's EVSEs share: rating, local limits, building, fleet",
        "type": "group",
        "points": _CONNECTION_POINTS,
    },
}
DEFINITIONS: dict[int, dict[str, Any]] = {VENDOR_ID: DEFINITION, CONNECTION_ID: CONNECTION_DEFINITION}


def mode_value(v: Any) -> int | None:
    return MODES.index(v) if v in MODES else None


def trip_value(v: Any) -> int:
    return TRIPS.index(v) if v in TRIPS else OTHER_TRIP


if __name__ == "__main__":  # python -m runtime.tasks.localapi.vendor_model [64901|64902]
    import sys

    print(json.dumps(DEFINITIONS[int(sys.argv[1]) if len(sys.argv) > 1 else VENDOR_ID], indent=2))
