"""Replay conformance in the spirit of IEEE 1547.1: every trip of every category, just inside and just
outside its threshold, shorter and longer than its clearing time and ride-through, driven cycle by cycle
through Engine.step in simulated time. The trip time read from the outputs must be within one cycle of
the commanded time (clearing time minus the response allowance), never inside the ride-through owed and
never after the clearing time."""

from __future__ import annotations

import pytest

from safety import tables as T
from safety.settings import resolve
from tests.safety.rig import Rig

CATS = ("I", "II", "III")
V_TRIPS = ("ov2", "ov1", "uv1", "uv2")
F_TRIPS = ("of2", "of1", "uf1", "uf2")
DV, DF = 0.005, 0.02  # pu / Hz: "just" inside or outside


def _rig(cat: str) -> Rig:
    rig = Rig(category=cat)
    rig.req.setpoint = -5000.0  # exporting: the case a trip matters most for
    rig.settle()
    assert rig.out["inverter.setpoint"] == -5000.0 and rig.out["safety.trip"] == ""
    return rig


def _approach_frequency(rig: Rig, target: float) -> None:
    """Move the frequency at 0.25 Hz/s, inside every category's ROCOF ride-through (0.5 Hz/s, Cat I)."""
    f = rig.values["grid.frequency"]
    while abs(target - f) > 1e-9:
        f = f + max(-0.025, min(0.025, target - f))
        rig.set(grid__frequency=f)
        rig.run(0.1)


def _excursion(rig: Rig, code: str, outside: bool) -> None:
    t = rig.safety.r.trips[code]
    sign = (1 if t.over else -1) * (1 if outside else -1)
    if t.quantity == "v":
        rig.set(grid__voltage=(t.threshold + sign * DV) * 240.0)
    else:
        rig.set(grid__frequency=t.threshold + sign * DF)


def _first_trip_us(rig: Rig, seconds: float, code: str) -> int | None:
    """Run in coarse steps up to 1 s before the expected time, then cycle by cycle; first trip time."""
    t = rig.safety.r.trips[code]
    start = rig.now_us
    coarse = max(0.0, t.trip_after_us / 1e6 - 1.0)
    if coarse > 0:
        for res in rig.run(min(coarse, seconds), step_s=0.5):
            if res.outputs["safety.trip"]:
                return res.now_us - start
    for res in rig.run(seconds - min(coarse, seconds)):
        if res.outputs["inverter.setpoint"] == 0.0 and rig.ceased_us is None:
            rig.ceased_us = res.now_us - start
        if res.outputs["safety.trip"]:
            assert res.outputs["safety.trip"] == code, rig.out["safety.reason"]
            assert res.outputs["inverter.setpoint"] == 0.0 and res.outputs["inverter.enable"] is False
            return res.now_us - start
    return None


@pytest.mark.parametrize("cat", CATS)
@pytest.mark.parametrize("code", V_TRIPS + F_TRIPS)
def test_trip_just_outside_longer_than_clearing(cat: str, code: str) -> None:
    rig = _rig(cat)
    t = rig.safety.r.trips[code]
    if t.quantity == "f":
        _approach_frequency(rig, t.threshold - (DF if t.over else -DF))
    _excursion(rig, code, outside=True)
    rig.ceased_us = None
    got = _first_trip_us(rig, t.clearing_s + 1.0, code)
    assert got is not None, f"{cat} {code} did not trip"
    period = rig.period_us
    assert t.trip_after_us <= got < t.trip_after_us + period  # within one cycle of the commanded time
    assert got <= round(t.clearing_s * 1e6)  # never after the clearing time
    owed = t.ride_through_s if t.ride_through_s <= t.clearing_s else 0.0
    assert got >= owed * 1e6  # never inside the ride-through owed
    ceased = got if rig.ceased_us is None else min(got, rig.ceased_us)
    assert ceased <= t.cease_after_us + period - 1  # output zero by clearing minus the allowance


@pytest.mark.parametrize("cat", CATS)
@pytest.mark.parametrize("code", V_TRIPS + F_TRIPS)
def test_no_trip_just_inside(cat: str, code: str) -> None:
    rig = _rig(cat)
    t = rig.safety.r.trips[code]
    if t.quantity == "f":
        _approach_frequency(rig, t.threshold + (-DF if t.over else DF))
    _excursion(rig, code, outside=False)
    for res in rig.run(t.clearing_s + 1.0, step_s=0.1 if t.clearing_s > 5 else None):
        assert res.outputs["safety.trip"] == "", res.outputs["safety.reason"]


@pytest.mark.parametrize("cat", CATS)
@pytest.mark.parametrize("code", V_TRIPS + F_TRIPS)
def test_no_trip_shorter_than_clearing(cat: str, code: str) -> None:
    """Outside the threshold for one cycle less than the commanded trip time, then back: no trip."""
    rig = _rig(cat)
    t = rig.safety.r.trips[code]
    if t.quantity == "f":
        _approach_frequency(rig, t.threshold - (DF if t.over else -DF))
    _excursion(rig, code, outside=True)
    dur = (t.trip_after_us - rig.period_us) / 1e6
    for res in rig.run(dur, step_s=0.1 if dur > 5 else None):
        assert res.outputs["safety.trip"] == "", res.outputs["safety.reason"]
    rig.set(grid__voltage=240.0)
    if t.quantity == "f":
        rig.set(grid__frequency=t.threshold - (DF if t.over else -DF))
    for res in rig.run(0.5):
        assert res.outputs["safety.trip"] == ""


@pytest.mark.parametrize("cat", CATS)
def test_ride_through_band_does_not_trip(cat: str) -> None:
    """Inside the voltage ride-through band (just outside continuous operation) for the full ride-through
    the category owes: no trip (a mandatory-operation band in every category)."""
    rig = _rig(cat)
    v = {"I": 0.75, "II": 0.75, "III": 0.80}[cat]
    owed = T.voltage_ride_through_s(cat, v)  # type: ignore[arg-type]
    rig.set(grid__voltage=v * 240.0)
    uv1 = rig.safety.r.trips["uv1"]
    hold = min(owed, uv1.trip_after_us / 1e6 - 0.02) if uv1.beyond(v) else owed
    for res in rig.run(hold, step_s=0.1):
        assert res.outputs["safety.trip"] == "", res.outputs["safety.reason"]
        assert res.outputs["safety.cessation"] is False
        assert res.outputs["inverter.setpoint"] == -5000.0  # mandatory operation: keeps exporting


@pytest.mark.parametrize(
    "cat,v,ceases",
    [
        ("III", 1.095, False),
        ("III", 1.12, True),
        ("III", 0.49, True),
        ("III", 0.51, False),
        ("I", 1.15, False),
        ("I", 1.21, True),
        ("I", 0.49, True),
        ("II", 0.31, False),
        ("II", 0.29, True),
    ],
)
def test_momentary_cessation(cat: str, v: float, ceases: bool) -> None:
    rig = _rig(cat)
    rig.set(grid__voltage=v * 240.0)
    res = rig.step()  # from the cycle that sees it
    assert res.outputs["safety.cessation"] is ceases
    if ceases:
        assert res.outputs["inverter.setpoint"] == 0.0
        assert res.outputs["safety.trip"] == ""
    rig.set(grid__voltage=240.0)
    res = rig.step()
    assert res.outputs["safety.cessation"] is False
    assert res.outputs["inverter.setpoint"] == -5000.0  # restored at once (within 0.4 s), no trip


def test_category_iii_cessation_then_ov1_trip() -> None:
    """1.15 pu, Category III: momentary cessation for the 12 s ride-through, then OV1 at 13 s - allowance."""
    rig = _rig("III")
    rig.set(grid__voltage=1.15 * 240.0)
    start = rig.now_us
    trip_at = None
    for res in rig.run(13.5):
        if not res.outputs["safety.trip"]:
            assert res.outputs["safety.cessation"] and res.outputs["inverter.setpoint"] == 0.0
        elif trip_at is None:
            trip_at = res.now_us - start
    assert trip_at == resolve(rig.params).trips["ov1"].trip_after_us
    assert 12.0e6 <= trip_at <= 13.0e6


def test_three_phase_uses_highest_and_lowest_phase() -> None:
    from runtime.tags import Direction, TagSpec

    phases = [TagSpec(f"grid.voltage_l{i}", unit="V", direction=Direction.INPUT) for i in (1, 2, 3)]
    rig = Rig(nominal_v=400.0, phases=3, phase_nominal_voltage=230.0, extra_inputs=phases)
    rig.set(grid__voltage=400.0, grid__voltage_l1=230.0, grid__voltage_l2=230.0, grid__voltage_l3=230.0)
    rig.req.setpoint = 3000.0
    rig.settle()
    assert rig.out["safety.trip"] == ""
    rig.set(grid__voltage_l2=230.0 * 1.25)  # one phase over: OV2 on the highest phase
    rig.run(0.2)
    assert rig.out["safety.trip"] == "ov2"
    rig.set(grid__voltage_l2=230.0)
    rig.run(0.1)
    assert rig.out["safety.trip"] == ""
    rig.set(grid__voltage_l3=230.0 * 0.45)  # one phase low: cessation (< 0.50 pu, Cat III) on the lowest
    assert rig.step().outputs["safety.cessation"] is True


@pytest.mark.parametrize("code,value", [("uv1", 0.88 * 240.0), ("of1", 61.2)])
def test_value_exactly_at_threshold_trips_and_stays_tripped(code: str, value: float) -> None:
    """Category III UV1 (0.88 pu) and OF1 (61.2 Hz) sit on the edge of the continuous range: a value
    exactly there trips (the conservative edge) and the trip does not clear while it stays there."""
    rig = _rig("III")
    t = rig.safety.r.trips[code]
    if code == "of1":
        _approach_frequency(rig, value)
        rig.set(grid__frequency=value)  # exactly, not the float sum of the approach
    else:
        rig.set(grid__voltage=value)
    rig.run(t.trip_after_us / 1e6 + 0.1, step_s=0.5)
    assert rig.out["safety.trip"] == code
    rig.run(2.0)
    assert rig.out["safety.trip"] == code and rig.out["inverter.enable"] is False


@pytest.mark.parametrize("request_w", [7000.0, -7000.0, 0.0])
@pytest.mark.parametrize("lost", ["grid.voltage_l3", "grid.voltage", "grid.frequency"])
def test_losing_one_grid_measurement_trips_instead_of_ending_protection(lost: str, request_w: float) -> None:
    """A phase voltage or the frequency that goes bad after a first good read is a comms trip: the grid
    trips stand on it, so protection must not quietly stop (review finding, 2026-11-25)."""
    from runtime.tags import Direction, TagSpec

    phases = [TagSpec(f"grid.voltage_l{i}", unit="V", direction=Direction.INPUT) for i in (1, 2, 3)]
    rig = Rig(nominal_v=400.0, phases=3, phase_nominal_voltage=230.0, extra_inputs=phases)
    rig.set(grid__voltage=400.0, grid__voltage_l1=230.0, grid__voltage_l2=230.0, grid__voltage_l3=230.0)
    rig.req.setpoint = request_w
    rig.settle()
    assert rig.out["safety.trip"] == ""
    rig.set(grid__voltage=400.0 * 1.25)  # the grid goes beyond OV2 ...
    rig.set(**{lost.replace(".", "__"): "garbage"})  # ... while one measurement reads bad
    res = rig.step()
    assert res.outputs["safety.trip"] in ("comms_lost", "ov2")
    assert res.outputs["inverter.setpoint"] == 0.0 and res.outputs["inverter.enable"] is False
