"""Enter service (IEEE 1547-2018 clause 4.10; test criteria of IEEE 1547.1): no export before 98.5 % of
the delay, rated power not before 98.5 % of delay + ramp; charging resumes with the continuous range."""

from __future__ import annotations

import pytest

from tests.safety.rig import Rig


def _trip_and_return(rig: Rig) -> None:
    rig.set(grid__voltage=1.25 * 240.0)
    rig.run(0.2)
    assert rig.out["safety.trip"] == "ov2"
    rig.set(grid__voltage=240.0)


@pytest.mark.parametrize("delay,ramp", [(300.0, 300.0), (20.0, 5.0), (0.0, 1.0)])
def test_export_timing_after_trip(delay: float, ramp: float) -> None:
    rig = Rig(enter_service={"delay_s": delay, "ramp_s": ramp})
    rig.req.setpoint = -11000.0
    rig.settle()
    _trip_and_return(rig)
    start = rig.now_us
    first_export = rated = None
    # cycle resolution near the two instants, coarse elsewhere
    total = delay + ramp + 2.0
    while rig.now_us - start < total * 1e6:
        t = (rig.now_us - start) / 1e6
        near = abs(t - delay) < 0.5 or abs(t - delay - ramp) < 0.5 or t < 0.5
        res = rig.step(advance_us=None if near else 100_000)
        sp = res.outputs["inverter.setpoint"]
        if sp < 0 and first_export is None:
            first_export = res.now_us - start
        if sp == -11000.0 and rated is None:
            rated = res.now_us - start
    assert first_export is not None and rated is not None
    assert first_export >= 0.985 * delay * 1e6
    assert rated >= 0.985 * (delay + ramp) * 1e6
    assert rated <= (delay + ramp) * 1e6 + 2 * rig.period_us


def test_startup_is_enter_service_too() -> None:
    rig = Rig(enter_service={"delay_s": 10.0, "ramp_s": 10.0})
    rig.req.setpoint = -11000.0
    for res in rig.run(9.8, step_s=0.1):
        assert res.outputs["inverter.setpoint"] == 0.0
    rig.run(21.0, step_s=0.1)
    assert rig.out["inverter.setpoint"] == -11000.0


def test_charging_resumes_in_continuous_range_unless_gated() -> None:
    rig = Rig(enter_service={"delay_s": 60.0, "ramp_s": 10.0})
    rig.req.setpoint = 6000.0
    rig.settle()
    _trip_and_return(rig)
    assert rig.step().outputs["inverter.setpoint"] == 6000.0  # charging at once; export still gated
    assert rig.out["safety.limit_discharge"] == 0.0

    gated = Rig(enter_service={"delay_s": 60.0, "ramp_s": 10.0, "gate_charging": True})
    gated.req.setpoint = 6000.0
    gated.settle()
    _trip_and_return(gated)
    for res in gated.run(59.0, step_s=0.5):
        assert res.outputs["inverter.setpoint"] == 0.0
    gated.run(11.5, step_s=0.1)
    assert gated.out["inverter.setpoint"] == 6000.0


def test_delay_restarts_when_the_window_is_left() -> None:
    rig = Rig(enter_service={"delay_s": 30.0, "ramp_s": 1.0})
    rig.req.setpoint = -3000.0
    rig.settle()
    _trip_and_return(rig)
    rig.run(20.0, step_s=0.5)
    rig.set(grid__voltage=1.07 * 240.0)  # continuous, but outside the 1.05 pu enter-service limit
    rig.run(5.0, step_s=0.5)
    assert rig.out["safety.trip"] == "" and rig.out["inverter.setpoint"] == 0.0
    rig.set(grid__voltage=240.0)
    for res in rig.run(29.0, step_s=0.5):
        assert res.outputs["inverter.setpoint"] == 0.0
    rig.run(3.0, step_s=0.1)
    assert rig.out["inverter.setpoint"] == -3000.0


def test_frequency_outside_window_blocks_enter_service() -> None:
    rig = Rig(enter_service={"delay_s": 5.0, "ramp_s": 1.0})
    rig.req.setpoint = -3000.0
    rig.set(grid__frequency=60.2)  # continuous, outside 59.5-60.1 Hz
    rig.run(20.0, step_s=0.1)
    assert rig.out["inverter.setpoint"] == 0.0
    rig.set(grid__frequency=60.0)
    rig.run(7.0, step_s=0.1)
    assert rig.out["inverter.setpoint"] == -3000.0
