"""A charging profile the CSMS gets wrong never takes the station down (review findings): a date-time the
schema lets through but that does not parse is refused at SetChargingProfile and dropped (logged) from a
stored file, so it cannot kill the task at every start; GetCompositeSchedule answers at most a week, so a
huge duration cannot block the task process past its heartbeat."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runtime.tasks.ocpp.smart import COMPOSITE_MAX_S, Profiles
from tests.ocpp.test_smart import at, profile


@pytest.mark.parametrize("field", ["validFrom", "validTo", "startSchedule"])
def test_an_unparsable_date_time_is_refused_and_never_stored(tmp_path: Path, field: str) -> None:
    pr = Profiles(tmp_path / "p.json", (1,), 240.0, 1, 11000.0)
    bad = profile(1, "TxDefaultProfile", 0, [(0, 6000.0)])
    if field == "startSchedule":
        bad["chargingSchedule"][0]["startSchedule"] = "not-a-date"
    else:
        bad[field] = "not-a-date"
    assert pr.set(1, bad, None) == ("Rejected", "InvalidSchedule")
    assert pr.items == [] and pr.limit_w(at(10)) == 11000.0


def test_a_stored_unparsable_profile_is_dropped_and_the_good_ones_kept(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    pr = Profiles(path, (1,), 240.0, 1, 11000.0)
    assert pr.set(1, profile(1, "TxDefaultProfile", 0, [(0, 6000.0)]), None)[0] == "Accepted"
    doc = json.loads(path.read_text())
    broken = profile(2, "TxDefaultProfile", 1, [(0, 1000.0)], validFrom="not-a-date")
    doc["profiles"].append({"evseId": 1, "profile": broken})
    path.write_text(json.dumps(doc))
    again = Profiles(path, (1,), 240.0, 1, 11000.0)
    assert [it["profile"]["id"] for it in again.items] == [1]
    assert again.limit_w(at(10)) == 6000.0


def test_a_huge_composite_duration_is_answered_for_a_week(tmp_path: Path) -> None:
    pr = Profiles(tmp_path / "p.json", (1,), 240.0, 1, 11000.0)
    periods = [(i * 60, 1000.0 + (i % 2) * 500.0) for i in range(1024)]
    assert pr.set(1, profile(1, "TxDefaultProfile", 0, periods, kind="Recurring", recurrencyKind="Daily"), None)[0] == (
        "Accepted"
    )
    sched = pr.composite(at(0), 2**31 - 1, "W")
    assert sched["duration"] == COMPOSITE_MAX_S
    assert sched["chargingSchedulePeriod"][-1]["startPeriod"] < COMPOSITE_MAX_S
