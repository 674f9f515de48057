"""Smart charging: the CSMS's charging profiles, stored, and the limit they compose to at an instant.

Composition (OCPP 2.0.1 part 2, K "SmartCharging", K01 and the "Smart Charging" chapter 3): per purpose
the valid profile with the highest ``stackLevel`` whose schedule covers the instant gives the limit (a
schedule that has ended leaves the next lower level in force); a TxProfile of the running transaction
overrides the TxDefaultProfile; the ChargingStationMaxProfile caps the result. Amperes are converted with
the site's nominal voltage and phases. What is published is a magnitude in W within [0, rating]: no
profile in force is the charger's rating (docs/design.md "Limits from outside"), zero means zero, an
expired profile stops limiting.

OCPP 2.1 (V2X) adds to a period ``operationMode``, a signed ``setpoint`` (+ into the EV), ``dischargeLimit``
(<= 0), ``v2xBaseline`` and ``v2xFreqWattCurve``, and to a profile ``maxOfflineDuration`` /
``invalidAfterOfflineDuration``. The operation mode, set point and curve come from the Tx(Default)Profile
in force; the discharge limit is the smallest magnitude of the station maximum's and the Tx(Default)'s;
on a profile set over 2.1 a Tx(Default) period without ``operationMode`` is ChargingOnly (no discharge),
while a profile set over 2.0.1 (which has no discharge) limits charging only.

LocalLoadBalancing (2.1): the station balances its own load against a connection limit. On this site that
is the depot allocator with one EVSE (docs/design.md): the period's ``limit`` and ``dischargeLimit`` become
the connection's import and export limits (``InForce.connection``, published as
``ocpp.connection_import_w``/``ocpp.connection_export_w`` for the allocator's limit tags), not the EV's; the
EV's own limits are the station maximum's alone, and the local plan asks while the allocator keeps the site
meter within the period's limits with the EV as the flexible load.

A depot (docs/depot.md "Back office"): one station, EVSE n = evseId n. Profiles of evseId n limit EVSE n,
those of evseId 0 every EVSE (a TxDefaultProfile) or the station (ChargingStationMaxProfile). The station
maximum is then not each EV's cap but the whole station's, which this site holds where it holds the
connection: it becomes the allocator's import and export limits at the site meter (``InForce.connection``,
as LocalLoadBalancing's). The meter also carries the building, so that is the conservative reading.

Per-phase values (2.1): ``limit``, ``dischargeLimit`` and ``setpoint`` are the sum of all phases, "unless
values are provided for L2 and L3, in which case this field represents phase L1" (2.1 schemas,
ChargingSchedulePeriodType; both ``_L2`` and ``_L3``, or neither). This site's converter takes one set
point for all its phases and shares it evenly, so per-phase limits compose to the site's phase count
times the tightest phase (no phase is ever asked above its own limit), and per-phase set points to their
sum; a site with fewer phases counts its first phases only. ``setpointReactive`` (and its ``_L2``/``_L3``)
is refused: no inverter map of this project writes a reactive power set point (io_maps/), so the
station could not follow it and says so (Rejected, UnsupportedParam) instead of ignoring it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.tasks.ocpp.variables import _write_atomic

SCHEMA = 1
PURPOSES = ("ChargingStationMaxProfile", "TxDefaultProfile", "TxProfile")
_RECUR = {"Daily": dt.timedelta(days=1), "Weekly": dt.timedelta(days=7)}
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
COMPOSITE_MAX_S = 7 * 86_400  # GetCompositeSchedule answers at most a week: the walk must stay short
log = logging.getLogger("v2g_plc.ocpp")


def parse_time(s: str) -> dt.datetime:
    t = dt.datetime.fromisoformat(s.replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def _bad_times(profile: dict[str, Any]) -> str:
    """What is wrong with a profile's date-times (empty: nothing), so that no bad one is ever stored."""
    fields = [(k, profile.get(k)) for k in ("validFrom", "validTo")]
    fields += [("startSchedule", s.get("startSchedule")) for s in profile.get("chargingSchedule", [])]
    for key, value in fields:
        if value is None:
            continue
        try:
            parse_time(str(value))
        except ValueError:
            return f"{key} {value!r} is not a date-time"
    return ""


FREQUENCY_MODES = ("CentralFrequency", "LocalFrequency")
SETPOINT_MODES = ("CentralSetpoint", "CentralFrequency")  # need a setpoint (2.1 part 2, Q "V2X")
# LocalLoadBalancing without a limit in a direction, and every other mode: the CSMS does not lower the
# connection's own limit (the allocator takes the smaller of its own and this; 1e8 W is its MAX_W).
NO_LIMIT_W = 1e8
PHASED = ("limit", "dischargeLimit", "setpoint")
NO_FREQ_WATT_CURVE = (
    "LocalFrequency without a v2xFreqWattCurve of at least 2 points"  # the fields with _L2/_L3 this site composes
)
REACTIVE = ("setpointReactive", "setpointReactive_L2", "setpointReactive_L3")


def unsupported(profile: dict[str, Any]) -> str:
    """Why this site cannot follow a 2.1 profile at all (empty: it can), for statusInfo.additionalInfo."""
    for sched in profile.get("chargingSchedule", []):
        for q in sched.get("chargingSchedulePeriod", []):
            found = [k for k in REACTIVE if k in q]
            if found:
                return (
                    f"{found[0]} (period at {q.get('startPeriod')} s): this site's inverter map has no reactive "
                    "power set point, so it cannot follow one"
                )
    return ""


@dataclass(frozen=True)
class InForce:
    """What the CSMS's profiles make of one instant. Limits are magnitudes in W within [0, rating]."""

    charge_w: float
    discharge_w: float
    mode: str = ""  # OperationModeEnumType of the Tx(Default)Profile set over 2.1; "" without one
    setpoint_w: float | None = None  # signed, + into the EV, within [-discharge_w, charge_w]
    baseline_w: float | None = None  # v2xBaseline
    curve: tuple[tuple[float, float], ...] = ()  # v2xFreqWattCurve: (Hz, W signed), by frequency
    signal_curve: tuple[tuple[float, float], ...] = ()  # v2xSignalWattCurve: (AFRR signal, W signed), by signal
    until: dt.datetime | None = None  # when the period in force ends (None: not within a day)
    connection: tuple[float, float] | None = None  # LocalLoadBalancing: (import, export) limit at the meter, W


def _bad_v2x(sched: dict[str, Any]) -> str:
    """What is wrong with a 2.1 schedule's V2X fields (empty: nothing)."""
    for q in sched["chargingSchedulePeriod"]:
        if any(k in q for k in REACTIVE):
            return "a setpointReactive (no reactive power set point on this site)"
        for key in PHASED:
            if (f"{key}_L2" in q) != (f"{key}_L3" in q) or (f"{key}_L2" in q and key not in q):
                return f"{key}_L2/_L3 given without all of {key}, {key}_L2 and {key}_L3"
        if any(q.get(f"limit{ph}", 0) < 0 for ph in ("_L2", "_L3")):
            return "a negative per-phase limit"
        if q.get("limit", 0) < 0:
            return "a negative limit"
        if q.get("dischargeLimit", 0) > 0:
            return "a positive dischargeLimit (it is <= 0)"
        mode = q.get("operationMode", "ChargingOnly")
        if mode in SETPOINT_MODES and "setpoint" not in q:
            return f"{mode} without a setpoint"
        if mode in FREQUENCY_MODES:
            # the mode_request contract: 2-10 points at distinct frequencies within 45-65 Hz or distinct
            # signals (sent sorted). LocalFrequency needs its frequency-watt curve (Q08.FR.03: reason
            # NoFreqWattCurve) and may add aFRR's signal-watt curve; CentralFrequency needs one of them.
            hz = [pt["frequency"] for pt in q.get("v2xFreqWattCurve", [])]
            sig = [pt["signal"] for pt in q.get("v2xSignalWattCurve", [])]
            if sig and (not 2 <= len(sig) <= 10 or len(set(sig)) != len(sig)):
                return "a v2xSignalWattCurve needs 2-10 points at distinct signals"
            if mode == "LocalFrequency" and len(hz) < 2:
                return NO_FREQ_WATT_CURVE
            if (hz or not sig) and (
                not 2 <= len(hz) <= 10 or len(set(hz)) != len(hz) or not all(45 <= f <= 65 for f in hz)
            ):
                return f"{mode} needs a v2xFreqWattCurve of 2-10 points at distinct frequencies within 45-65 Hz"
    return ""


def stamp(t: dt.datetime) -> str:
    """OCPP date-time: UTC with a Z (part 2, "Primitive datatypes")."""
    return t.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Profiles:
    def __init__(
        self, path: Path, evses: Collection[int], voltage: float, phases: int, rating_w: float, depot: bool = False
    ) -> None:
        """``evses``: the station's EVSE ids (the first is the default of every per-EVSE question);
        ``depot``: the station maximum limits the connection, not each EV (module docstring)."""
        self.path = path
        self.evses = tuple(evses)
        self.evse_id = self.evses[0]
        self.depot = depot
        self.voltage = voltage
        self.phases = phases
        self.rating = rating_w
        self.items: list[dict[str, Any]] = []  # {"evseId": n, "profile": {...}}
        if path.exists():
            doc = json.loads(path.read_text())
            if doc.get("schema") != SCHEMA:
                raise ValueError(f"{path}: schema {doc.get('schema')!r}, this runtime reads {SCHEMA}")
            for it in doc["profiles"]:  # one unreadable profile must not stop the station at every start
                bad = _bad_times(it.get("profile", {}))
                if bad:
                    log.error("%s: profile %s dropped: %s", path, it.get("profile", {}).get("id"), bad)
                else:
                    self.items.append(it)

    def _save(self) -> None:
        _write_atomic(self.path, json.dumps({"schema": SCHEMA, "profiles": self.items}, indent=1).encode(), 0o600)

    # ---- SetChargingProfile / ClearChargingProfile / GetChargingProfiles (K01, K10, K09)

    def set(self, evse_id: int, profile: dict[str, Any], tx_id: str | None, version: str = "2.0.1") -> tuple[str, str]:
        """(status, reason code for statusInfo); ``version``: the OCPP version of the link it came over."""
        purpose = profile["chargingProfilePurpose"]
        if purpose not in PURPOSES:
            return "Rejected", "UnsupportedPurpose"
        if evse_id != 0 and evse_id not in self.evses:
            return "Rejected", "UnknownEvse"
        if purpose == "ChargingStationMaxProfile" and evse_id != 0:
            return "Rejected", "InvalidEvse"  # K01.FR.38
        if purpose == "TxProfile":
            if evse_id == 0:
                return "Rejected", "InvalidEvse"  # K01.FR.16
            if tx_id is None or profile.get("transactionId") != tx_id:
                return "Rejected", "TxNotFound"  # K01.FR.03, K01.FR.09
        if _bad_times(profile):  # the schema does not check date-time formats: parse them here, once
            return "Rejected", "InvalidSchedule"
        for sched in profile["chargingSchedule"]:
            periods = [p["startPeriod"] for p in sched["chargingSchedulePeriod"]]
            if periods[0] != 0 or periods != sorted(set(periods)):
                return "Rejected", "InvalidSchedule"  # K01.FR.31: the first period starts at 0
            if version == "2.1" and (why := _bad_v2x(sched)):
                log.info("ocpp: profile %s rejected: %s", profile["id"], why)
                return "Rejected", "NoFreqWattCurve" if why == NO_FREQ_WATT_CURVE else "InvalidSchedule"
            if any(p.get("limit", 0) < 0 for p in sched["chargingSchedulePeriod"]):
                return "Rejected", "InvalidSchedule"
        # K01.FR.05: the same id, or the same stackLevel + purpose + EVSE, is replaced
        self.items = [
            it
            for it in self.items
            if it["profile"]["id"] != profile["id"]
            and not (
                it["evseId"] == evse_id
                and it["profile"]["stackLevel"] == profile["stackLevel"]
                and it["profile"]["chargingProfilePurpose"] == purpose
            )
        ]
        self.items.append({"evseId": evse_id, "profile": profile, "ocpp": version})
        self._save()
        return "Accepted", ""

    def clear(self, profile_id: int | None, criteria: dict[str, Any] | None) -> bool:
        """ClearChargingProfile (K10): by id, or by every criterion given; True when something went."""

        def match(it: dict[str, Any]) -> bool:
            p = it["profile"]
            if profile_id is not None:
                return bool(p["id"] == profile_id)
            c = criteria or {}
            return (
                ("evseId" not in c or c["evseId"] == it["evseId"])
                and ("chargingProfilePurpose" not in c or c["chargingProfilePurpose"] == p["chargingProfilePurpose"])
                and ("stackLevel" not in c or c["stackLevel"] == p["stackLevel"])
            )

        keep = [it for it in self.items if not match(it)]
        gone = len(keep) != len(self.items)
        if gone:
            self.items = keep
            self._save()
        return gone

    def update_dynamic(self, profile_id: int, update: dict[str, Any], now: dt.datetime) -> str:
        """UpdateDynamicSchedule / a PullDynamicScheduleUpdate's answer: the new values replace those of
        the profile's period in force (a dynamic schedule has one); the ChargingProfileStatusEnumType."""
        for it in self.items:
            p = it["profile"]
            if p["id"] != profile_id or p["chargingProfileKind"] != "Dynamic":
                continue
            period = p["chargingSchedule"][0]["chargingSchedulePeriod"][0]
            trial = {**period, **{k: v for k, v in update.items() if k != "customData"}}
            if _bad_v2x({"chargingSchedulePeriod": [trial]}):
                return "Rejected"
            period.clear()
            period.update(trial)
            p["dynUpdateTime"] = stamp(now)
            self._save()
            return "Accepted"
        return "Rejected"

    def end_transaction(self, tx_id: str) -> None:
        """A TxProfile lives as long as its transaction (K01.FR.?? "TxProfile ... for the duration of the
        transaction")."""
        keep = [it for it in self.items if it["profile"].get("transactionId") != tx_id]
        if len(keep) != len(self.items):
            self.items = keep
            self._save()

    def matching(self, evse_id: int | None, criteria: dict[str, Any]) -> list[dict[str, Any]]:
        """GetChargingProfiles (K09)."""
        out = []
        for it in self.items:
            p = it["profile"]
            if evse_id is not None and it["evseId"] != evse_id:
                continue
            if "chargingProfileId" in criteria and p["id"] not in criteria["chargingProfileId"]:
                continue
            if (
                "chargingProfilePurpose" in criteria
                and p["chargingProfilePurpose"] != criteria["chargingProfilePurpose"]
            ):
                continue
            if "stackLevel" in criteria and p["stackLevel"] != criteria["stackLevel"]:
                continue
            out.append(it)
        return out

    # ---- composition

    def _watts(self, limit: float, unit: str, phases: int | None) -> float:
        if unit == "W":
            return float(limit)
        n = min(phases or self.phases, self.phases)
        return float(limit) * self.voltage * n

    def _total(self, q: dict[str, Any], key: str, unit: str) -> float:
        """A period's ``key`` (limit, dischargeLimit or setpoint) in W for all phases (module docstring)."""
        if f"{key}_L2" not in q:
            return self._watts(q[key], unit, q.get("numberPhases"))
        n = min(q.get("numberPhases") or self.phases, self.phases)
        per = [self._watts(v, unit, 1) for v in (q[key], q[f"{key}_L2"], q[f"{key}_L3"])[:n]]
        if key == "setpoint":
            return sum(per)
        return n * (min(per) if key == "limit" else max(per))  # dischargeLimit <= 0: the smallest magnitude

    def _starts(
        self, profile: dict[str, Any], sched: dict[str, Any], t: dt.datetime, tx_start: dt.datetime | None
    ) -> dt.datetime | None:
        kind = profile["chargingProfileKind"]
        if kind == "Relative":
            return tx_start
        if kind == "Dynamic" and "startSchedule" not in sched:
            return _EPOCH  # in force from the moment it was set, its values replaced by updates
        start = parse_time(sched["startSchedule"]) if "startSchedule" in sched else None
        if start is None:
            return None
        if kind == "Recurring":
            step = _RECUR.get(profile.get("recurrencyKind", "Daily"), _RECUR["Daily"])
            if t >= start:
                start += step * ((t - start) // step)
        return start

    def _period(self, it: dict[str, Any], t: dt.datetime, tx_start: dt.datetime | None) -> tuple[Any, str] | None:
        """The period of a profile in force at ``t`` and its schedule's unit, or None."""
        p = it["profile"]
        if "validFrom" in p and t < parse_time(p["validFrom"]):
            return None
        if "validTo" in p and t >= parse_time(p["validTo"]):
            return None
        for sched in p["chargingSchedule"]:
            start = self._starts(p, sched, t, tx_start)
            if start is None or t < start:
                continue
            elapsed = (t - start).total_seconds()
            if "duration" in sched and elapsed >= sched["duration"]:
                continue
            active = [q for q in sched["chargingSchedulePeriod"] if q["startPeriod"] <= elapsed]
            if active:
                return active[-1], sched["chargingRateUnit"]
        return None

    def _top(
        self,
        purpose: str,
        t: dt.datetime,
        tx_id: str | None,
        tx_start: dt.datetime | None,
        offline_s: float,
        evse: int,
    ) -> tuple[dict[str, Any], Any, str] | None:
        """The item, period and unit of the highest stack level of ``purpose`` in force at ``t`` for ``evse``
        (its own profiles and the station's, evseId 0; ``evse`` 0: the station's only)."""
        cands = [
            it
            for it in self.items
            if it["profile"]["chargingProfilePurpose"] == purpose
            and it["evseId"] in (0, evse)
            and (purpose != "TxProfile" or (tx_id is not None and it["profile"].get("transactionId") == tx_id))
            and offline_s <= it["profile"].get("maxOfflineDuration", float("inf"))
        ]
        for it in sorted(cands, key=lambda i: -i["profile"]["stackLevel"]):
            got = self._period(it, t, tx_start)
            if got is not None:
                return it, got[0], got[1]
        return None

    def expire_offline(self, offline_s: float) -> None:
        """A profile with ``invalidAfterOfflineDuration`` whose ``maxOfflineDuration`` ran out while offline
        is gone for good (2.1 K01); without it, it only stops counting until the link is back (``_top``)."""
        keep = [
            it
            for it in self.items
            if not (
                it["profile"].get("invalidAfterOfflineDuration")
                and offline_s > it["profile"].get("maxOfflineDuration", float("inf"))
            )
        ]
        if len(keep) != len(self.items):
            log.warning(
                "ocpp: %d profiles invalid after %.0f s offline: removed", len(self.items) - len(keep), offline_s
            )
            self.items = keep
            self._save()

    def in_force(
        self,
        t: dt.datetime,
        tx_id: str | None = None,
        tx_start: dt.datetime | None = None,
        offline_s: float = 0.0,
        until: bool = True,
        evse: int | None = None,
    ) -> InForce:
        """What the profiles make of the instant ``t`` for ``evse`` (default: the first; 0 the station's own
        profiles) (``offline_s``: how long the CSMS has been away; ``until``: also find when the period
        ends, a walk over a day of breakpoints)."""
        n = self.evse_id if evse is None else evse
        station = self._top("ChargingStationMaxProfile", t, tx_id, tx_start, offline_s, n)
        tx = self._top("TxProfile", t, tx_id, tx_start, offline_s, n) or self._top(
            "TxDefaultProfile", t, tx_id, tx_start, offline_s, n
        )
        connection = None
        if self.depot and n != 0:  # the station maximum is the connection's, not this EV's (module docstring)
            connection = None if station is None else self._limits(station, NO_LIMIT_W, NO_LIMIT_W)
            station = None
        charge, discharge = self._limits(station, self.rating, self.rating)
        v21 = tx is not None and tx[0].get("ocpp") == "2.1"
        if tx is not None and v21 and tx[1].get("operationMode") == "LocalLoadBalancing":
            imp, exp = self._limits(tx, NO_LIMIT_W, NO_LIMIT_W)  # the meter's limits, not the EV's
            if connection is not None:
                imp, exp = min(imp, connection[0]), min(exp, connection[1])
            return InForce(
                charge, discharge, "LocalLoadBalancing", until=self._next_change(t, tx_start) if until else None,
                connection=(imp, exp),
            )  # fmt: skip
        charge, discharge = self._limits(tx, charge, discharge)
        if tx is None or not v21:
            end = self._next_change(t, tx_start) if until else None
            return InForce(charge, discharge, until=end, connection=connection)
        _, q, unit = tx
        mode = q.get("operationMode", "ChargingOnly")
        if mode == "ChargingOnly":
            discharge = 0.0
        sp = q.get("setpoint")
        setpoint = None if sp is None else min(charge, max(-discharge, self._total(q, "setpoint", unit)))
        base = q.get("v2xBaseline")
        curve = tuple(sorted((float(pt["frequency"]), float(pt["power"])) for pt in q.get("v2xFreqWattCurve", [])))
        signal = tuple(sorted((float(pt["signal"]), float(pt["power"])) for pt in q.get("v2xSignalWattCurve", [])))
        return InForce(
            charge, discharge, mode, setpoint, None if base is None else float(base), curve, signal,
            self._next_change(t, tx_start) if until else None, connection,
        )  # fmt: skip

    def _limits(
        self, got: tuple[dict[str, Any], Any, str] | None, charge: float, discharge: float
    ) -> tuple[float, float]:
        """``charge``/``discharge`` (W magnitudes) lowered by the period's limit and dischargeLimit, >= 0."""
        if got is not None:
            _, q, unit = got
            if "limit" in q:
                charge = min(charge, self._total(q, "limit", unit))
            if "dischargeLimit" in q:
                discharge = min(discharge, -self._total(q, "dischargeLimit", unit))
        return max(0.0, charge), max(0.0, discharge)

    def _next_change(self, t: dt.datetime, tx_start: dt.datetime | None) -> dt.datetime | None:
        later = [b for b in self._breakpoints(t, t + dt.timedelta(days=1), tx_start) if b > t]
        return min(later) if later else None

    def limit_w(
        self, t: dt.datetime, tx_id: str | None = None, tx_start: dt.datetime | None = None, evse: int | None = None
    ) -> float:
        """The charging limit in force at ``t``: W in [0, rating]."""
        return self.in_force(t, tx_id, tx_start, until=False, evse=evse).charge_w

    def _breakpoints(self, t0: dt.datetime, t1: dt.datetime, tx_start: dt.datetime | None) -> Iterator[dt.datetime]:
        yield t0
        for it in self.items:
            p = it["profile"]
            for key in ("validFrom", "validTo"):
                if key in p:
                    yield parse_time(p[key])
            for sched in p["chargingSchedule"]:
                t = t0
                while t < t1:
                    start = self._starts(p, sched, t, tx_start)
                    if start is None:
                        break
                    for q in sched["chargingSchedulePeriod"]:
                        yield start + dt.timedelta(seconds=q["startPeriod"])
                    if "duration" in sched:
                        yield start + dt.timedelta(seconds=sched["duration"])
                    if p["chargingProfileKind"] != "Recurring":
                        break
                    t = start + _RECUR.get(p.get("recurrencyKind", "Daily"), _RECUR["Daily"])
                    yield t

    def composite(
        self,
        t0: dt.datetime,
        duration_s: int,
        unit: str,
        tx_id: str | None = None,
        tx_start: dt.datetime | None = None,
        v2x: bool = False,
        evse: int | None = None,
    ) -> dict[str, Any]:
        """GetCompositeSchedule (K08): the limit over [t0, t0 + duration) as periods, in W or A; a duration
        beyond a week is answered for a week (the ``duration`` field says so). ``v2x`` (a 2.1 link): each
        period also carries the operation mode in force, its set point and discharge limit (<= 0). ``evse``:
        whose schedule (default the first EVSE; 0 the station's own profiles)."""
        duration_s = min(duration_s, COMPOSITE_MAX_S)
        t1 = t0 + dt.timedelta(seconds=duration_s)
        points = sorted({b for b in self._breakpoints(t0, t1, tx_start) if t0 <= b < t1})
        scale = 1.0 if unit == "W" else 1.0 / (self.voltage * self.phases)
        periods: list[dict[str, Any]] = []
        for b in points:
            inf = self.in_force(b, tx_id, tx_start, until=False, evse=evse)
            period: dict[str, Any] = {"limit": round(inf.charge_w * scale, 1)}
            if v2x and inf.mode:
                period["operationMode"] = inf.mode
                period["dischargeLimit"] = -round(inf.discharge_w * scale, 1) or 0.0
                if inf.setpoint_w is not None:
                    period["setpoint"] = round(inf.setpoint_w * scale, 1)
            if periods and {k: v for k, v in periods[-1].items() if k != "startPeriod"} == period:
                continue
            periods.append({"startPeriod": int((b - t0).total_seconds()), **period})
        return {
            "evseId": self.evse_id if evse is None else evse,
            "duration": duration_s,
            "scheduleStart": stamp(t0),
            "chargingRateUnit": unit,
            "chargingSchedulePeriod": periods,
        }
