"""Transactions, meter values and connector status from the scan's published image: pure, no I/O.

One transaction per plug-in (OCPP 2.0.1 part 2, E "Transactions", TxStartPoint/TxStopPoint = EVConnected):
Started when the cable is plugged in, Updated when the charging state changes and every TxUpdatedInterval
(cycle clock), Ended when the EV departs; ``seqNo`` counts from 0 in every transaction without gaps
(E01). The state that numbered a
message is stored with it (queue.py), so a restart continues the numbering and never repeats it.

Charging state changes (ChargingStateChanged) are filtered: frequency response swings the power through
zero every few seconds, and each swing would be a persisted, numbered message to the CSMS (about 120 in
200 scans). OCPP leaves when a TransactionEvent with triggerReason ChargingStateChanged is sent to the
station ("the charging state changed": part 2, E "Transactions", TriggerReasonEnumType) and lets a station
report the state it stands by; so a change is reported at once when none was reported for ``hold_s``
before (a real start or stop after a quiet spell, and the first Charging of a transaction), at once when a
safety trip suspends the EVSE, and otherwise once the new state has held for ``hold_s`` of cycle clock. A
state the power only passes through is never reported; at most one change per ``hold_s`` while it swings.

Signs: the runtime's power is positive into the EV. OCPP's Power.Active.Import is power from the grid into
the EV and Power.Active.Export power from the EV to the grid, both >= 0 (part 2, appendix "Measurands");
the import and export registers are sent separately: V2G export is metered, never netted.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from runtime.tags import US

Message = tuple[str, dict[str, Any], bool]  # action, payload, periodic


@dataclass(frozen=True)
class Sample:
    """What one published image says about the EVSE (None: not known / not good)."""

    connected: bool | None
    power_w: float | None = None
    setpoint_w: float | None = None
    import_wh: float | None = None
    export_wh: float | None = None
    soc: float | None = None  # 0..1
    voltage: float | None = None
    trip: str = ""


def meter_value(s: Sample, stamp: str, context: str) -> dict[str, Any]:
    sv: list[dict[str, Any]] = []

    def add(value: float | None, measurand: str, unit: str, digits: int = 1) -> None:
        if value is not None:
            sv.append(
                {"value": round(float(value), digits), "measurand": measurand, "context": context,
                 "unitOfMeasure": {"unit": unit}}
            )  # fmt: skip

    add(s.import_wh, "Energy.Active.Import.Register", "Wh")
    add(s.export_wh, "Energy.Active.Export.Register", "Wh")
    if s.power_w is not None:
        add(max(0.0, s.power_w), "Power.Active.Import", "W")  # max(0.0, x): never a -0.0 on the wire
        add(max(0.0, -s.power_w), "Power.Active.Export", "W")
    add(None if s.soc is None else s.soc * 100.0, "SoC", "Percent")
    add(s.voltage, "Voltage", "V")
    return {"timestamp": stamp, "sampledValue": sv}


@dataclass
class TxState:
    """Persisted with every message (queue.py): enough to continue or end a transaction after a crash."""

    tx_id: str | None = None
    seq: int = 0
    charging: str = "Idle"
    charged: bool = False
    last_sample_us: int = 0
    started: str | None = None  # timestamp of Started: the origin of Relative charging profiles
    last: dict[str, Any] = field(default_factory=dict)  # the last sample, for an End after a crash
    changed_us: int | None = None  # when the last ChargingStateChanged was reported (None: none yet)
    wait_for_unplug: bool = False  # after a remote stop: no new transaction while the EV stays (restart too)

    def as_json(self) -> dict[str, Any]:
        return {
            "tx_id": self.tx_id,
            "seq": self.seq,
            "charging": self.charging,
            "charged": self.charged,
            "last_sample_us": self.last_sample_us,
            "started": self.started,
            "last": self.last,
            "changed_us": self.changed_us,
            "wait_for_unplug": self.wait_for_unplug,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any] | None) -> TxState:
        return cls(**d) if d else cls()


class Transactions:
    """Turns a stream of samples into TransactionEvent payloads, at most one per step."""

    def __init__(
        self, evse_id: int, connector_id: int, power_threshold_w: float, state: TxState, hold_s: float = 0.0
    ) -> None:
        self.evse = {"id": evse_id, "connectorId": connector_id}
        self.threshold = power_threshold_w
        self.hold_us = round(hold_s * US)  # ChargingStateChanged filter (module docstring)
        self.st = state
        self.pending: tuple[str, int] | None = None  # a changed state not reported yet, and since when
        self.remote_start_id: int | None = None  # RequestStartTransaction before the plug: for Started
        self.id_token: dict[str, Any] | None = None  # its authorized idToken, also for Started (E02)

    @property
    def wait_for_unplug(self) -> bool:
        """After a remote stop: no new transaction while the EV stays plugged in. Kept in the persisted
        state, so a restart neither starts an unauthorised transaction nor forgets to end the stop's hold."""
        return self.st.wait_for_unplug

    @wait_for_unplug.setter
    def wait_for_unplug(self, v: bool) -> None:
        self.st.wait_for_unplug = v

    @property
    def active(self) -> bool:
        return self.st.tx_id is not None

    def charging_state(self, s: Sample) -> str:
        """OCPP 2.0.1 ChargingStateEnumType from the committed image."""
        if not s.connected:
            return "Idle"
        if s.power_w is not None and abs(s.power_w) > self.threshold:
            return "Charging"  # 2.0.1 has no discharging state: energy transfer in either direction
        if not self.st.charged and not s.trip:
            return "EVConnected"
        if s.trip or s.setpoint_w is None or abs(s.setpoint_w) <= self.threshold:
            return "SuspendedEVSE"
        return "SuspendedEV"

    def _event(
        self, kind: str, trigger: str, stamp: str, offline: bool, info: dict[str, Any], mv: dict[str, Any] | None
    ) -> dict[str, Any]:
        p: dict[str, Any] = {
            "eventType": kind,
            "timestamp": stamp,
            "triggerReason": trigger,
            "seqNo": self.st.seq,
            "transactionInfo": {"transactionId": self.st.tx_id, **info},
            "evse": self.evse,
        }
        if offline:
            p["offline"] = True
        if mv is not None and mv["sampledValue"]:
            p["meterValue"] = [mv]
        self.st.seq += 1
        return p

    def step(self, s: Sample, now_us: int, stamp: str, interval_s: int, offline: bool) -> Message | None:
        if s.connected is None:
            return None  # unknown plug state: no conclusions
        st = self.st
        if not self.active:
            if not s.connected:
                self.wait_for_unplug = False
                return None
            if self.wait_for_unplug:
                return None
            st.tx_id, st.seq, st.charged, st.started = str(uuid.uuid4()), 0, False, stamp
            st.changed_us, self.pending = None, None
            st.charging = self.charging_state(s)
            st.charged = st.charging == "Charging"
            st.last_sample_us, st.last = now_us, _sample_json(s)
            mv = meter_value(s, stamp, "Transaction.Begin")
            info: dict[str, Any] = {"chargingState": st.charging}
            if self.remote_start_id is not None:
                info["remoteStartId"], self.remote_start_id = self.remote_start_id, None
            p = self._event("Started", "CablePluggedIn", stamp, offline, info, mv)
            if self.id_token is not None:
                p["idToken"], self.id_token = self.id_token, None
            return "TransactionEvent", p, False
        st.last = _sample_json(s) if s.connected else st.last
        if not s.connected:
            return self.end(stamp, offline, "EVDeparted", "EVDisconnected", s)
        state = self.charging_state(s)
        if state == st.charging:
            self.pending = None  # back to what the CSMS has: the swing was never news
        elif self._report(state, s, now_us):
            st.charging, st.changed_us, self.pending = state, now_us, None
            st.charged = st.charged or state == "Charging"
            st.last_sample_us = now_us
            mv = meter_value(s, stamp, "Trigger")
            return (
                "TransactionEvent",
                self._event("Updated", "ChargingStateChanged", stamp, offline, {"chargingState": state}, mv),
                False,
            )
        if now_us - st.last_sample_us >= interval_s * US:
            st.last_sample_us = now_us
            mv = meter_value(s, stamp, "Sample.Periodic")
            return "TransactionEvent", self._event("Updated", "MeterValuePeriodic", stamp, offline, {}, mv), True
        return None

    def _report(self, state: str, s: Sample, now_us: int) -> bool:
        """Whether a change to ``state`` is reported now (module docstring: the filter)."""
        if self.pending is None or self.pending[0] != state:
            self.pending = (state, now_us)
        quiet = self.st.changed_us is None or now_us - self.st.changed_us >= self.hold_us
        first_charge = state == "Charging" and not self.st.charged
        return quiet or first_charge or bool(s.trip) or now_us - self.pending[1] >= self.hold_us

    def triggered(self, s: Sample, stamp: str, offline: bool) -> Message:
        """TriggerMessage TransactionEvent (F06): an Updated with the current meter values."""
        mv = meter_value(s, stamp, "Trigger")
        info = {"chargingState": self.st.charging}
        return "TransactionEvent", self._event("Updated", "Trigger", stamp, offline, info, mv), False

    def clock_aligned(self, s: Sample, stamp: str, offline: bool) -> Message:
        """A clock-aligned sample inside the transaction (AlignedDataCtrlr, J01): MeterValueClock."""
        mv = meter_value(s, stamp, "Sample.Clock")
        return "TransactionEvent", self._event("Updated", "MeterValueClock", stamp, offline, {}, mv), True

    def end(self, stamp: str, offline: bool, trigger: str, reason: str, s: Sample | None = None) -> Message:
        """Ended with the last known meter values (also after a crash: ``s`` None uses the stored ones)."""
        last = s if s is not None else Sample(**self.st.last) if self.st.last else Sample(connected=False)
        mv = meter_value(last, stamp, "Transaction.End")
        payload = self._event("Ended", trigger, stamp, offline, {"chargingState": "Idle", "stoppedReason": reason}, mv)
        self.st.tx_id, self.st.charging, self.st.charged = None, "Idle", False
        return "TransactionEvent", payload, False


def _sample_json(s: Sample) -> dict[str, Any]:
    return {
        "connected": s.connected,
        "power_w": s.power_w,
        "setpoint_w": s.setpoint_w,
        "import_wh": s.import_wh,
        "export_wh": s.export_wh,
        "soc": s.soc,
        "voltage": s.voltage,
        "trip": s.trip,
    }


def connector_status(s: Sample, available: bool = True) -> str | None:
    """ConnectorStatusEnumType (OCPP 2.0.1 part 2, G01): None while the plug state is unknown."""
    if not available:
        return "Unavailable"
    if s.trip:
        return "Faulted"
    if s.connected is None:
        return None
    return "Occupied" if s.connected else "Available"
