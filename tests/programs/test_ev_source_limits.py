"""The EV's power limits leave ``ev_source`` as magnitudes (W >= 0), whatever sign the EV used: ISO 15118-20
carries ``EVMaximumDischargePower`` as a signed RationalNumber and EVs differ in the sign they send, while
dispatch and the safety layer read a limit as a magnitude."""

from __future__ import annotations

import pytest

from programs.ev_source import EvSource, EvSourceParams
from tests.programs.conftest import SITE, Rig
from tests.secc.test_ev_source import SECC_IN, SESSION


@pytest.mark.parametrize("charge, discharge", [(11_000.0, -7_000.0), (11_000.0, 7_000.0), (0.0, -0.0)])
def test_limits_are_magnitudes(charge: float, discharge: float) -> None:
    r = Rig([EvSource("ev", EvSourceParams(source="secc"), SITE)], inputs=SECC_IN)
    r.step({**SESSION, "secc.ev_max_charge_w": charge, "secc.ev_max_discharge_w": discharge})
    assert r.value("ev.max_charge_w") == abs(charge)
    assert r.value("ev.max_discharge_w") == abs(discharge)
    assert r.value("ev.max_discharge_w") >= 0.0


def test_a_limit_the_ev_does_not_give_stays_none() -> None:
    r = Rig([EvSource("ev", EvSourceParams(source="secc"), SITE)], inputs=SECC_IN)
    r.step({**SESSION, "secc.ev_max_discharge_w": None})
    assert r.value("ev.max_discharge_w") is None
    assert r.value("ev.max_charge_w") == SESSION["secc.ev_max_charge_w"]
