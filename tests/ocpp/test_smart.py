"""Charging profiles: composition (stack levels, purposes, W and A), zero, expiry, persistence; and over the
wire: Set/Clear/GetChargingProfiles and GetCompositeSchedule from a real CSMS, the limit published."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

from runtime.tasks.ocpp.local_csms import LocalCsms
from runtime.tasks.ocpp.smart import Profiles, stamp
from tests.ocpp.harness import START, Harness, params, until
from tests.ports import free_port

PW = "0123456789abcdef-operator"
T0 = START


def profile(
    pid: int, purpose: str, level: int, periods: list[tuple[int, float]], unit: str = "W", **kw: Any
) -> dict[str, Any]:
    sched: dict[str, Any] = {
        "id": pid,
        "chargingRateUnit": unit,
        "startSchedule": stamp(kw.pop("start", T0)),
        "chargingSchedulePeriod": [{"startPeriod": s, "limit": lim} for s, lim in periods],
    }
    if "duration" in kw:
        sched["duration"] = kw.pop("duration")
    return {"id": pid, "stackLevel": level, "chargingProfilePurpose": purpose,
            "chargingProfileKind": kw.pop("kind", "Absolute"), "chargingSchedule": [sched], **kw}  # fmt: skip


def at(s: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=s)


def test_composition_stacking_purposes_units_zero_and_expiry(tmp_path: Path) -> None:
    pr = Profiles(tmp_path / "p.json", (1,), 240.0, 1, 11000.0)
    assert pr.limit_w(at(0)) == 11000.0  # no profile: the rating, never infinity
    assert pr.set(1, profile(1, "TxDefaultProfile", 0, [(0, 6000.0)]), None) == ("Accepted", "")
    assert pr.set(1, profile(2, "TxDefaultProfile", 1, [(0, 4000.0), (600, 0.0)], duration=1200), None)[0] == "Accepted"
    assert pr.limit_w(at(10)) == 4000.0  # the higher stack level wins
    assert pr.limit_w(at(700)) == 0.0  # zero means zero
    assert pr.limit_w(at(1300)) == 6000.0  # level 1 has ended: level 0 is in force again
    # the station maximum caps, in A: 20 A x 240 V x 1 phase = 4800 W
    assert pr.set(0, profile(3, "ChargingStationMaxProfile", 0, [(0, 20.0)], unit="A"), None)[0] == "Accepted"
    assert pr.limit_w(at(1300)) == 4800.0
    # a TxProfile needs its transaction; it overrides TxDefault (still under the station max)
    assert pr.set(1, profile(4, "TxProfile", 0, [(0, 9000.0)], transactionId="tx-1"), None) == (
        "Rejected",
        "TxNotFound",
    )
    assert pr.set(1, profile(4, "TxProfile", 0, [(0, 3000.0)], transactionId="tx-1"), "tx-1")[0] == "Accepted"
    assert pr.limit_w(at(10), "tx-1") == 3000.0 and pr.limit_w(at(10), None) == 4000.0
    # expiry: validTo passed -> it stops limiting
    assert (
        pr.set(0, profile(3, "ChargingStationMaxProfile", 0, [(0, 1000.0)], validTo=stamp(at(50))), None)[0]
        == "Accepted"
    )
    assert pr.limit_w(at(10)) == 1000.0 and pr.limit_w(at(60)) == 4000.0
    # max profile on an EVSE is invalid; a limit above the rating is the rating
    assert pr.set(1, profile(9, "ChargingStationMaxProfile", 1, [(0, 1.0)]), None) == ("Rejected", "InvalidEvse")
    pr.set(1, profile(2, "TxDefaultProfile", 1, [(0, 50000.0)]), None)
    assert pr.limit_w(at(10)) == 1000.0 and pr.limit_w(at(60)) == 11000.0
    # persisted: a new instance (a restart) composes the same
    again = Profiles(tmp_path / "p.json", (1,), 240.0, 1, 11000.0)
    assert [again.limit_w(at(s), "tx-1") for s in (10, 60, 700)] == [pr.limit_w(at(s), "tx-1") for s in (10, 60, 700)]
    assert again.clear(None, {"chargingProfilePurpose": "TxProfile"}) and not again.clear(4, None)
    pr.end_transaction("tx-1")
    assert all(it["profile"]["id"] != 4 for it in pr.items)


def test_recurring_daily_and_composite_schedule(tmp_path: Path) -> None:
    pr = Profiles(tmp_path / "p.json", (1,), 230.0, 3, 22000.0)
    # every day from 17:30: 2 h at 16 A (3 x 230 V x 16 A = 11040 W), then unlimited
    pr.set(
        1,
        profile(
            1, "TxDefaultProfile", 0, [(0, 16.0)], unit="A", kind="Recurring", recurrencyKind="Daily", duration=7200
        ),
        None,
    )
    assert pr.limit_w(at(86400 + 60)) == 11040.0 and pr.limit_w(at(86400 + 7300)) == 22000.0
    comp = pr.composite(at(3600), 7200, "W")
    assert comp["chargingSchedulePeriod"] == [
        {"startPeriod": 0, "limit": 11040.0},
        {"startPeriod": 3600, "limit": 22000.0},
    ]
    amps = pr.composite(at(3600), 7200, "A")
    assert amps["chargingSchedulePeriod"][0]["limit"] == 16.0


def test_profiles_over_the_wire_publish_the_limit(tmp_path: Path) -> None:
    async def main() -> None:
        csms = await LocalCsms("127.0.0.1", free_port(), passwords={"CP-1": PW}).start()
        h = await Harness(params(csms.url, tmp_path / "s")).start()
        try:
            await h.publish()
            await until(lambda: "CP-1" in csms.stations and len(csms.actions("StatusNotification")) == 1)
            cp = csms.stations["CP-1"]
            p = profile(7, "TxDefaultProfile", 0, [(0, 0.0)], start=START)
            assert (await cp.request("SetChargingProfile", {"evseId": 1, "chargingProfile": p}))["status"] == "Accepted"
            await h.publish()
            assert h.writes["ocpp.limit_charge"] == 0.0  # zero means zero
            bad = profile(8, "ChargingStationMaxProfile", 0, [(0, 0.0)])
            res = await cp.request("SetChargingProfile", {"evseId": 1, "chargingProfile": bad})
            assert res["status"] == "Rejected"
            res = await cp.request("GetCompositeSchedule", {"evseId": 1, "duration": 600, "chargingRateUnit": "W"})
            assert res["status"] == "Accepted" and res["schedule"]["chargingSchedulePeriod"][0]["limit"] == 0.0
            res = await cp.request(
                "GetChargingProfiles",
                {"requestId": 5, "chargingProfile": {"chargingProfilePurpose": "TxDefaultProfile"}},
            )
            assert res["status"] == "Accepted"
            await until(lambda: bool(csms.actions("ReportChargingProfiles")))
            assert csms.actions("ReportChargingProfiles")[0].payload["chargingProfile"][0]["id"] == 7
            res = await cp.request("ClearChargingProfile", {"chargingProfileId": 7})
            assert res["status"] == "Accepted"
            await h.publish()
            assert h.writes["ocpp.limit_charge"] == 11000.0  # nothing in force: the rating
        finally:
            await h.stop()
            await csms.close()

    asyncio.run(main())


def test_per_phase_limits_bind_the_tightest_phase_and_set_points_add_up(tmp_path: Path) -> None:
    """A three-phase site at 230 V: limits compose to 3 x the tightest phase (the converter shares evenly),
    set points to their sum; in A each phase is converted with the phase voltage."""
    pr = Profiles(tmp_path / "p.json", (1,), 230.0, 3, 22000.0)
    period = {"startPeriod": 0, "operationMode": "CentralSetpoint", "limit": 6000.0, "limit_L2": 4000.0,
              "limit_L3": 5000.0, "dischargeLimit": -3000.0, "dischargeLimit_L2": -1000.0,
              "dischargeLimit_L3": -2000.0, "setpoint": 1000.0, "setpoint_L2": 1200.0, "setpoint_L3": 800.0}  # fmt: skip
    p = profile(1, "TxDefaultProfile", 0, [(0, 0.0)])
    p["chargingSchedule"][0]["chargingSchedulePeriod"] = [period]
    assert pr.set(1, p, None, "2.1") == ("Accepted", "")
    inf = pr.in_force(at(1), until=False)
    assert (inf.charge_w, inf.discharge_w, inf.setpoint_w) == (12000.0, 3000.0, 3000.0)
    amps = {"startPeriod": 0, "operationMode": "CentralSetpoint", "limit": 10.0, "limit_L2": 8.0, "limit_L3": 16.0,
            "setpoint": -2.0, "setpoint_L2": -2.0, "setpoint_L3": -2.0, "dischargeLimit": -10.0}  # fmt: skip
    p = profile(2, "TxDefaultProfile", 1, [(0, 0.0)], unit="A")
    p["chargingSchedule"][0]["chargingSchedulePeriod"] = [amps]
    assert pr.set(1, p, None, "2.1") == ("Accepted", "")
    inf = pr.in_force(at(1), until=False)
    assert inf.charge_w == 3 * 8.0 * 230.0 and inf.discharge_w == 10.0 * 230.0 * 3
    assert inf.setpoint_w == -6.0 * 230.0


def test_a_negative_per_phase_limit_or_a_reactive_set_point_is_never_stored(tmp_path: Path) -> None:
    pr = Profiles(tmp_path / "p.json", (1,), 230.0, 3, 22000.0)
    for period in (
        {"startPeriod": 0, "limit": 6000.0, "limit_L2": -1.0, "limit_L3": 1.0},
        {"startPeriod": 0, "limit": 6000.0, "setpointReactive": 100.0},
        {"startPeriod": 0, "limit_L2": 1.0, "limit_L3": 1.0},  # L1 missing
    ):
        p = profile(1, "TxDefaultProfile", 0, [(0, 0.0)])
        p["chargingSchedule"][0]["chargingSchedulePeriod"] = [period]
        assert pr.set(1, p, None, "2.1") == ("Rejected", "InvalidSchedule"), period
    assert pr.items == []


def test_local_load_balancing_makes_the_periods_limits_the_connections(tmp_path: Path) -> None:
    """LocalLoadBalancing: limit and dischargeLimit bound the site meter (for the allocator), not the EV,
    whose limits stay the station maximum's; another mode has no connection limit."""
    pr = Profiles(tmp_path / "p.json", (1,), 230.0, 1, 11000.0)
    llb = {"startPeriod": 0, "operationMode": "LocalLoadBalancing", "limit": 8000.0, "dischargeLimit": -4000.0}
    p = profile(1, "TxDefaultProfile", 0, [(0, 0.0)], duration=600)
    p["chargingSchedule"][0]["chargingSchedulePeriod"] = [llb]
    assert pr.set(1, p, None, "2.1") == ("Accepted", "")
    assert pr.set(0, profile(2, "ChargingStationMaxProfile", 0, [(0, 9000.0)]), None)[0] == "Accepted"
    inf = pr.in_force(at(1), until=False)
    assert inf.mode == "LocalLoadBalancing" and inf.connection == (8000.0, 4000.0)
    assert (inf.charge_w, inf.discharge_w) == (9000.0, 11000.0)
    assert pr.in_force(at(601), until=False).connection is None  # the profile ended
