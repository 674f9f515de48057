"""The soak's verdict is real: memory growth, an overrun trip and an event storm each fail a phase, and an
honest run passes (the soak itself is `make soak`, an hour and more, outside the test tiers)."""

from __future__ import annotations

from typing import Any

from tests.soak.soak import GROWTH_MB, STORM_PER_SIM_HOUR, judge


def samples(scan_mb: list[float]) -> list[dict[str, Any]]:
    return [
        {"t": i * 5.0, "rss_kb": {"scan": int(mb * 1024), "task": 70 * 1024, "plant": 40 * 1024}, "status": {"k": i}}
        for i, mb in enumerate(scan_mb)
    ]


def events(per_hour: int, hours: int = 3, trip: str | None = None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [
        {"k": 0, "t": h * 3600.0 + i, "kind": "limit", "message": "limits: none"}
        for h in range(hours)
        for i in range(per_hour)
    ]
    if trip:
        out.append({"k": 1, "t": 10.0, "kind": "trip", "message": f"trip {trip}", "data": {"code": trip}})
    return out


def verdict(mem: list[float], ev: list[dict[str, Any]], rc: int | None = 0, hung: bool = False) -> dict[str, Any]:
    return judge("t", 1, 60.0, 61.0, rc, hung, samples(mem), ev, {"cycles": 3000, "overruns": 0})


def test_a_flat_run_with_few_events_passes() -> None:
    r = verdict([45.0] * 12 + [45.5] * 38, events(20, trip="islanding"))  # warm-up ends at sample 10
    assert r["ok"], r["failures"]
    assert r["trips"] == {"islanding": 1} and r["memory"]["scan"]["growth_mb"] == 0.5


def test_memory_growth_beyond_the_bound_fails() -> None:
    growing = [45.0 + 0.05 * i * GROWTH_MB for i in range(50)]  # +2.5 x GROWTH_MB over the phase
    r = verdict(growing, events(5))
    assert not r["ok"] and any(f.startswith("scan: RSS grew") for f in r["failures"])


def test_an_overrun_trip_fails() -> None:
    r = verdict([45.0] * 50, events(5, trip="overrun"))
    assert r["failures"] == ["overrun trip 1 time(s)"]


def test_an_event_storm_fails_and_an_early_exit_fails() -> None:
    r = verdict([45.0] * 50, events(STORM_PER_SIM_HOUR + 1, hours=1))
    assert len(r["failures"]) == 1 and r["failures"][0].startswith("event storm")
    assert verdict([45.0] * 50, events(5), rc=1)["failures"] == ["v2g-plc run exited with 1"]
    assert "did not end" in verdict([45.0] * 50, events(5), rc=None, hung=True)["failures"][0]
