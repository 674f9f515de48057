"""A limit changes state only when its cause does (issue 14 item 15): one ramp into a thermal prediction
gives one limit event and a monotone set point; SNR and SoC noise at a threshold give one event, not one
per sample. Both power signs and zero; long runs in simulated time through Engine.step."""

from __future__ import annotations

import itertools

import pytest

from runtime.api import Event
from tests.safety.rig import Rig

THERMAL = {"tau_s": 600.0, "derate_start_c": 70.0, "ambient_c": 40.0}


def _entered(events: list[Event], name: str) -> int:
    """How many times ``name`` joined the set of active limits."""
    n, active = 0, False
    for e in events:
        if e.kind == "limit":
            now = name in e.data["limits"]
            n += now and not active
            active = now
    return n


def _limit_events(events: list[Event]) -> list[Event]:
    return [e for e in events if e.kind == "limit"]


@pytest.mark.parametrize("target_w", [-11000.0, 0.0, 11000.0])
def test_one_ramp_into_the_thermal_prediction_gives_one_event_and_a_monotone_set_point(target_w: float) -> None:
    """A first-order heat sink (tau 600 s, 5 degC/kW over 40 degC) that settles at the derating start at
    6 kW; the request ramps to 11 kW in 300 s (an enter-service ramp), then holds for three hours."""
    rig = Rig(thermal=THERMAL)
    rig.settle()
    rig.event_log.clear()
    temp, sps = 40.0, []
    for s in range(3 * 3600):
        rig.req.setpoint = target_w * min(1.0, s / 300.0)
        p = abs(rig.values["inverter.power"])
        temp += (40.0 + 5.0 * p / 1000.0 - temp) / 600.0  # 1 s step
        rig.set(inverter__temperature=temp)
        res = rig.step(advance_us=1_000_000)
        assert res.outputs["safety.trip"] == ""
        sps.append(res.outputs["inverter.setpoint"])
    steps = [b - a for a, b in itertools.pairwise(sps)]
    if target_w > 0:
        assert min(steps) >= -1e-6, "the set point went down during the ramp"
    elif target_w < 0:
        assert max(steps) <= 1e-6, "the discharge set point went back up during the ramp"
    else:
        assert set(sps) == {0.0}
    if target_w == 0.0:
        assert _limit_events(rig.event_log) == []
        return
    assert _entered(rig.event_log, "thermal_prediction") == 1
    assert len(_limit_events(rig.event_log)) == 1  # no "limits: none" in between, no re-entry
    assert abs(sps[-1]) == pytest.approx(6000.0, rel=0.03) and temp < 71.0


@pytest.mark.parametrize("target_w", [-11000.0, 11000.0])
def test_a_step_into_the_thermal_prediction_gives_one_event_and_one_cut(target_w: float) -> None:
    """As at --speed 400, where dispatch's ramp fits in one cycle: the cap engages once, cuts once, and
    from then on the set point moves one way only."""
    rig = Rig(thermal=THERMAL)
    rig.settle()
    rig.event_log.clear()
    rig.req.setpoint = target_w
    temp, sps = 40.0, []
    for _ in range(3 * 3600):
        p = abs(rig.values["inverter.power"])
        temp += (40.0 + 5.0 * p / 1000.0 - temp) / 600.0
        rig.set(inverter__temperature=temp)
        sps.append(abs(rig.step(advance_us=1_000_000).outputs["inverter.setpoint"]))
    assert _entered(rig.event_log, "thermal_prediction") == 1 and len(_limit_events(rig.event_log)) == 1
    cuts = [i for i, (a, b) in enumerate(itertools.pairwise(sps)) if b < a - 1e-6]
    assert cuts, "the cap never cut"
    after = sps[cuts[0] + 1 :]
    assert all(b >= a - 1e-6 for a, b in itertools.pairwise(after)) or all(
        b <= a + 1e-6 for a, b in itertools.pairwise(after)
    )
    assert sps[-1] == pytest.approx(6000.0, rel=0.05)


@pytest.mark.parametrize("request_w", [-7000.0, 0.0, 7000.0])
def test_snr_noise_at_the_threshold_gives_one_event(request_w: float) -> None:
    rig = Rig(comms={"snr_min_db": 10.0, "snr_hysteresis_db": 2.0})
    rig.req.setpoint = request_w
    rig.settle()
    rig.event_log.clear()
    sps = []
    for i in range(500):  # 10 s of a link alternating 9.6 / 10.4 / 11.5 dB
        rig.set(plc__snr=(9.6, 10.4, 11.5)[i % 3])
        sps.append(rig.step().outputs["inverter.setpoint"])
    assert _entered(rig.event_log, "plc") == 1 and len(_limit_events(rig.event_log)) == 1
    if request_w < 0:  # the discharge ramps down, never back up while the link is doubtful
        assert all(b >= a for a, b in itertools.pairwise(sps)) and sps[-1] == 0.0
    else:
        assert set(sps) == {request_w}  # charging is not limited by the link
    rig.set(plc__snr=12.5)  # healthy: above the hysteresis
    rig.run(0.1)
    assert _entered(rig.event_log, "plc") == 1 and len(_limit_events(rig.event_log)) == 2
    assert "plc" not in rig.event_log[-1].data.get("limits", ["plc"])


@pytest.mark.parametrize("request_w", [-7000.0, 7000.0])
def test_soc_noise_at_the_taper_edge_gives_one_event(request_w: float) -> None:
    """SoC wobbling across the edge of the taper band (soc_max 0.95 - band 0.02 = 0.93 for charge,
    reserve 0.20 + band 0.02 = 0.22 for discharge): the power follows the continuous taper, the limit
    is announced once."""
    edge = 0.93 if request_w > 0 else 0.22
    rig = Rig()
    rig.req.setpoint = request_w
    rig.set(ev__soc=edge + (-0.01 if request_w > 0 else 0.01))
    rig.settle()
    rig.event_log.clear()
    for i in range(300):
        rig.set(ev__soc=edge + (0.001 if i % 2 else -0.001))
        rig.step()
    assert _entered(rig.event_log, "battery") == 1 and len(_limit_events(rig.event_log)) == 1
    rig.set(ev__soc=edge + (-0.01 if request_w > 0 else 0.01))  # back out of the band by more than 0.005
    rig.step()
    assert len(_limit_events(rig.event_log)) == 2 and "battery" not in rig.event_log[-1].data["limits"]
    assert rig.out["inverter.setpoint"] == request_w
