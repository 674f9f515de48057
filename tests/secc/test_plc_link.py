"""The PLC-link supervision of the safety layer with the SECC's failed handshakes (docs/iso15118.md
"Session failures"): ISO 15118 handshakes failing in a row while the SNR is marginal make the link weak,
so no new discharge starts and a running one ramps down; a strong SNR or a run below the threshold does
not. Pure: the real engine and safety supervisor in simulated time (tests/safety/rig.py)."""

from __future__ import annotations

import pytest

from runtime.tags import Direction, TagSpec, TagType
from safety.settings import Comms, SafetyParams
from tests.safety.rig import Rig

FAILS = "secc.handshake_timeouts"

COMMS = Comms(snr_min_db=10.0, snr_hysteresis_db=2.0, snr_ramp_w_per_s=1000.0, handshake_timeouts_tag=FAILS)
WEAK = COMMS.handshake_timeouts_weak


def _rig(sp: float, snr: float, fails: int) -> Rig:
    rig = Rig(extra_inputs=[TagSpec(FAILS, TagType.INT, "", Direction.INPUT, None)], comms=COMMS)
    assert isinstance(rig.params, SafetyParams) and rig.params.comms is COMMS
    rig.set(plc__snr=snr, secc__handshake_timeouts=fails)
    rig.req.setpoint = sp
    rig.settle()
    return rig


@pytest.mark.parametrize("sp", [-7000.0, 0.0, 7000.0])
def test_handshakes_failing_at_a_marginal_snr_make_the_link_weak(sp: float) -> None:
    rig = _rig(sp, snr=15.0, fails=0)
    assert rig.out["inverter.setpoint"] == sp and "plc" not in rig.out["safety.reason"].lower()
    rig.set(plc__snr=11.0)  # healthy on its own (>= 10 dB) ...
    rig.run(1.0)
    assert rig.out["inverter.setpoint"] == sp
    rig.set(secc__handshake_timeouts=WEAK)  # ... but the handshakes keep failing
    rig.run(2.0)
    if sp < 0:
        assert -6000.0 < rig.out["inverter.setpoint"] < -4500.0  # the ramp of a weak link, not a step
        assert "3 ISO 15118 handshakes timed out in a row at 11.0 dB" in rig.out["safety.reason"]
        rig.run(6.0)
    assert rig.out["inverter.setpoint"] == max(sp, 0.0)  # charging is not touched; zero stays zero
    assert rig.out["safety.trip"] == ""
    rig.req.setpoint = -2000.0  # no new discharge either
    rig.run(0.1)
    assert rig.out["inverter.setpoint"] == 0.0
    # a session gets through (the run ends) and the SNR is past the hysteresis: discharge again
    rig.set(secc__handshake_timeouts=0, plc__snr=12.5)
    rig.run(0.1)
    assert rig.out["inverter.setpoint"] < 0.0


@pytest.mark.parametrize(
    ("snr", "fails"),
    [(20.0, 10), (11.0, WEAK - 1)],
    ids=["strong link: the failures are not the link's", "below the run that counts"],
)
def test_failures_alone_or_a_short_run_leave_discharge_alone(snr: float, fails: int) -> None:
    rig = _rig(-7000.0, snr=snr, fails=fails)
    rig.run(5.0)
    assert rig.out["inverter.setpoint"] == -7000.0
    assert "plc" not in rig.out["safety.reason"].lower()
