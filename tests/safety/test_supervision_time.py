"""Time-based detectors count like the tags' age limits (issue 14 item 4, safety side).

On a simulated site run N times faster than real time (``v2g-plc run --speed N``) each cycle covers N
periods of the cycle clock, while the drivers still write, poll and read back in real time: one real
poll round is N periods. The age limits of the tags stretch N times (``Engine(age_scale=N)``), and so do
the supervision times (``comms.write_mismatch_s``, ``divergence.time_s``): a device answer that lags by
rounds adding up to less than the setting in real time is no fault at any speed; one that persists for
the setting in real time still trips. Both power signs and zero.
"""

from __future__ import annotations

import pytest

from runtime.tags import US, Quality, TagUpdate
from tests.safety.rig import Rig

ROUND_MS = 20  # one real poll round: the scan period
MISMATCH_S = 1.0  # comms.write_mismatch_s
DIVERGENCE_S = 3.0  # divergence.time_s


def _settled(speed: int, request_w: float, **kw) -> Rig:
    rig = Rig(period_ms=ROUND_MS, speed=speed, **kw)
    rig.req.setpoint = request_w
    rig.settle()
    rig.follow = False  # from here the test says what the inverter measures
    assert rig.out["safety.trip"] == "" and rig.out["inverter.setpoint"] == request_w
    return rig


def _lag_rounds(speed: int) -> int:
    """At speed N, a read-back lagging by N real poll rounds, as long as that stays inside the setting's
    real time (40 rounds = 0.8 s of the 1 s here)."""
    return min(speed, 40)


@pytest.mark.parametrize("speed", [1, 10, 40, 400])
@pytest.mark.parametrize("new_w", [-7000.0, 0.0, 7000.0])
def test_a_lagging_read_back_is_not_a_mismatch(speed: int, new_w: float) -> None:
    rig = _settled(speed, 3000.0)
    for _ in range(3):  # every set point change takes lag rounds to be read back
        rig.req.setpoint = new_w if rig.req.setpoint != new_w else 3000.0
        rig.set(inverter__write_mismatch=True)
        for _ in range(_lag_rounds(speed)):
            rig.set(inverter__power=rig.out["inverter.setpoint"])
            assert rig.step().outputs["safety.trip"] == ""
        rig.set(inverter__write_mismatch=False, inverter__power=rig.out["inverter.setpoint"])
        assert rig.step().outputs["safety.trip"] == ""
    assert rig.out["inverter.setpoint"] == rig.req.setpoint


@pytest.mark.parametrize("speed", [1, 10, 400])
@pytest.mark.parametrize("request_w", [-7000.0, 0.0, 7000.0])
def test_a_persistent_mismatch_trips_after_the_setting_in_real_time(speed: int, request_w: float) -> None:
    rig = _settled(speed, request_w)
    rig.set(inverter__write_mismatch=True)
    rounds = round(MISMATCH_S * 1000 / ROUND_MS)  # 50 real poll rounds, whatever the speed
    for _ in range(rounds):
        assert rig.step().outputs["safety.trip"] == ""
    res = rig.step()
    assert res.outputs["safety.trip"] == "write_mismatch"
    assert res.outputs["inverter.setpoint"] == 0.0 and res.outputs["inverter.enable"] is False


@pytest.mark.parametrize("speed", [1, 10, 40, 400])
@pytest.mark.parametrize("request_w", [-11000.0, 11000.0])
def test_power_lagging_a_stop_is_not_a_divergence(speed: int, request_w: float) -> None:
    """charge (or discharge) -> idle: the measured power follows the zero set point lag rounds later."""
    rig = _settled(speed, request_w)
    rig.req.setpoint = 0.0
    for _ in range(_lag_rounds(speed)):
        assert rig.step().outputs["safety.trip"] == ""  # inverter.power still reads request_w
    rig.set(inverter__power=0.0)
    rig.run(10 * rig.period_us / US)
    assert rig.out["safety.trip"] == "" and rig.out["inverter.setpoint"] == 0.0


@pytest.mark.parametrize("speed", [1, 10, 400])
@pytest.mark.parametrize("request_w", [-5000.0, 0.0, 5000.0])
def test_a_persistent_divergence_trips_after_the_setting_in_real_time(speed: int, request_w: float) -> None:
    rig = _settled(speed, request_w)
    rig.set(inverter__power=request_w + (9000.0 if request_w <= 0 else -12000.0))  # wrong sign or beyond
    rounds = round(DIVERGENCE_S * 1000 / ROUND_MS)
    for _ in range(rounds):
        assert rig.step().outputs["safety.trip"] == ""
    res = rig.step()
    assert res.outputs["safety.trip"] == "power_divergence"
    assert res.outputs["inverter.setpoint"] == 0.0 and res.outputs["inverter.enable"] is False


@pytest.mark.parametrize("quality", [Quality.BAD, Quality.STALE])
@pytest.mark.parametrize("request_w", [-5000.0, 0.0, 5000.0])
def test_a_bad_read_back_is_a_comms_fault_never_a_mismatch(quality: Quality, request_w: float) -> None:
    """An undecodable or failed read-back (the driver marks it bad) trips comms_lost, which clears by
    itself; it never counts toward write_mismatch, and it restarts a mismatch count in progress."""
    rig = _settled(1, request_w)
    rig.set(inverter__power=request_w)
    rig.set(inverter__write_mismatch=True)
    for _ in range(40):  # 0.8 s of a mismatch ...
        rig.step()
    ups = [TagUpdate(n, v) for n, v in rig.values.items() if n != "inverter.write_mismatch"]
    res = rig.engine.step(rig.now_us, [*ups, TagUpdate("inverter.write_mismatch", None, quality)])
    rig.now_us += rig.period_us
    assert res.outputs["safety.trip"] == "comms_lost" and "inverter.write_mismatch" in res.outputs["safety.reason"]
    assert res.outputs["inverter.setpoint"] == 0.0 and res.outputs["inverter.enable"] is False
    for _ in range(40):  # ... then 0.8 s more: not 1 s in a row, so no mismatch trip
        assert rig.step().outputs["safety.trip"] == ""
    assert "write_mismatch" not in rig.safety.latches
    rig.set(inverter__write_mismatch=False)
    rig.step()
    assert rig.out["safety.trip"] == ""


@pytest.mark.parametrize("speed", [1, 20, 400])
def test_the_built_site_gives_the_interlock_its_speed(speed: int) -> None:
    """What `v2g-plc run --speed N` builds: the supervision times stretch with the speed, as the age limits
    do (review finding: the rig had its own speed-carrying SiteInfo while the runtime's had none)."""
    from runtime.site import build_site, bundled_site

    built = build_site(bundled_site(), speed=speed)
    (safety,) = built.interlocks
    assert built.info.speed == speed
    assert safety.mismatch_us == round(safety.params.comms.write_mismatch_s * 1e6) * speed
