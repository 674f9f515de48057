"""The trip timers decide a sample inside every threshold with four comparisons (``TripTimers._band``);
here, sample by sample, they must time, fire and cease exactly as stepping every trip's timer does
(``TripTimers.time_every_trip``), on every category's trips and on settings retuned mid-excursion, with
samples on, just inside and just beyond each threshold."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.api import Command
from runtime.engine import RECONFIGURE
from safety import tables as T
from safety.grid import TripTimers
from safety.settings import SafetyParams, Trip, resolve
from tests.safety.rig import Rig


def _trips(cat: str, tight: bool) -> dict[str, Trip]:
    """A category's default trips, or (``tight``) every one at the tightest threshold and shortest clearing
    time IEEE 1547-2018 allows it."""
    p: dict[str, Any] = {"category": cat, "rated_charge_w": 7400.0, "rated_discharge_w": 7400.0}
    if tight:
        for group, ranges in (("voltage", T.VOLTAGE_RANGES[cat]), ("frequency", T.FREQUENCY_RANGES)):
            p[group] = {
                code: {"threshold": thr[0] if code.startswith("o") else thr[1], "clearing_s": clr[0]}
                for code, (thr, clr) in ranges.items()
            }
    return resolve(SafetyParams.model_validate(p)).trips


def _near(xs: list[float]) -> st.SearchStrategy[float]:
    """On a threshold, one ulp either side of it, or a little further."""
    return st.sampled_from(xs).flatmap(
        lambda x: st.sampled_from([x, math.nextafter(x, math.inf), math.nextafter(x, -math.inf), x + 0.01, x - 0.01])
    )


@st.composite
def runs(draw: st.DrawFn) -> tuple[str, list[tuple[int, float, float, float, bool]]]:
    cat = draw(st.sampled_from(["I", "II", "III"]))
    trips = {**_trips(cat, False), **_trips(cat, True)}
    vs = [1.0, *(t.threshold for t in trips.values() if t.quantity == "v")]
    fs = [60.0, *(t.threshold for t in trips.values() if t.quantity == "f")]
    samples = []
    now = 0
    for _ in range(draw(st.integers(1, 60))):
        now += draw(st.sampled_from([20_000, 100_000, 1_000_000, 3_000_000]))
        a, b = draw(_near(vs)), draw(_near(vs))
        samples.append((now, max(a, b), min(a, b), draw(_near(fs)), draw(st.booleans())))
    return cat, samples


@settings(max_examples=300, deadline=None)
@given(run=runs())
def test_the_band_times_every_trip_as_the_loop_does(
    run: tuple[str, list[tuple[int, float, float, float, bool]]],
) -> None:
    cat, samples = run
    plain, tight = _trips(cat, False), _trips(cat, True)
    # the reference steps every trip's timer on every sample, as the timers did before the band
    timers, ref = TripTimers(plain), TripTimers(plain)
    for now, vh, vl, f, swap in samples:
        if swap:  # new settings on a cycle boundary (a DER control): excursions under way keep their start
            trips = tight if timers.trips == list(plain.values()) else plain
            timers.retune(trips)
            ref.retune(trips)
        assert timers.update(now, vh, vl, f) == ref.time_every_trip(now, vh, vl, f)
        assert timers.ceasing == ref.ceasing
        starts = {t.code: ref.excursion_start(t.code) for t in ref.trips}
        assert all(timers.excursion_start(c) == s for c, s in starts.items())
        assert timers.any_beyond() == any(s is not None for s in starts.values())


@pytest.mark.parametrize("request_w", [-5000.0, 0.0, 5000.0])
def test_a_threshold_tightened_online_moves_the_band(request_w: float) -> None:
    """UV1 raised live from 0.70 to 0.80 pu (Category II): 0.75 pu, inside the old band, is now timed and
    trips at the new clearing time; the twin without the change rides through it."""
    changed, kept = Rig(category="II"), Rig(category="II")
    for rig in (changed, kept):
        rig.req.setpoint = request_w
        rig.settle()
    params = changed.safety.params.model_dump(mode="json")
    params["voltage"]["uv1"] = {"threshold": 0.80, "clearing_s": 2.0}
    changed.step((Command(RECONFIGURE, {"revision": "r2", "components": {"safety": params}, "by": "test"}),))
    assert changed.engine.reconfigured == [("r2", True, "")]
    for rig in (changed, kept):
        rig.set(grid__voltage=0.75 * 240.0)
        rig.run(2.5)
    assert changed.out["safety.trip"] == "uv1"
    assert changed.out["inverter.setpoint"] == 0.0 and changed.out["inverter.enable"] is False
    assert kept.out["safety.trip"] == "" and kept.out["inverter.setpoint"] == request_w
