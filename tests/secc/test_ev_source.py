"""The EV data selector: one writer of ``ev.*``, from the SECC or from the charger's map, per the site."""

from __future__ import annotations

from typing import Any

import pytest

from programs.ev_source import EvSource, EvSourceParams
from runtime.tags import TagSpec, TagType
from tests.programs.conftest import SITE, Rig

SECC_IN = (
    TagSpec("secc.soc", TagType.FLOAT, "%"),
    TagSpec("secc.departure_time", TagType.FLOAT, "s"),
    TagSpec("secc.target_energy_wh", TagType.FLOAT, "Wh"),
    TagSpec("secc.min_energy_wh", TagType.FLOAT, "Wh"),
    TagSpec("secc.ev_max_charge_w", TagType.FLOAT, "W"),
    TagSpec("secc.ev_max_discharge_w", TagType.FLOAT, "W"),
    TagSpec("secc.session", TagType.BOOL),
    TagSpec("charger.ev_soc", TagType.FLOAT),
)
SESSION = {
    "secc.soc": 45.0,
    "secc.departure_time": 1_800_000_000.0,
    "secc.target_energy_wh": 20_000.0,
    "secc.min_energy_wh": 5_000.0,
    "secc.ev_max_charge_w": 11_000.0,
    "secc.ev_max_discharge_w": 7_000.0,
    "secc.session": True,
    "charger.ev_soc": 0.30,
}


def rig(source: str) -> Rig:
    return Rig([EvSource("ev", EvSourceParams(source=source, target_prefix="evx"), SITE)], inputs=SECC_IN)


def test_from_the_secc_soc_is_a_fraction_and_the_rest_passes_through() -> None:
    r = rig("secc")
    r.step(SESSION)
    assert r.value("evx.soc") == pytest.approx(0.45)
    assert r.value("evx.departure_time") == 1_800_000_000.0
    assert r.value("evx.energy_request_wh") == 20_000.0
    assert r.value("evx.max_charge_w") == 11_000.0 and r.value("evx.max_discharge_w") == 7_000.0
    assert r.value("evx.in_session") is True


@pytest.mark.parametrize("how", ["stale", "bad"])
def test_a_secc_that_is_not_good_gives_unknown_never_zero(how: str) -> None:
    r = rig("secc")
    r.step(SESSION)
    kw: dict[str, Any] = {how: list(SESSION)}
    r.step({}, **kw)
    assert r.value("evx.soc") is None and r.value("evx.max_discharge_w") is None


def test_from_the_charger_only_its_soc_and_nothing_from_the_secc() -> None:
    r = rig("charger")
    r.step(SESSION)
    assert r.value("evx.soc") == pytest.approx(0.30)
    assert r.value("evx.departure_time") is None and r.value("evx.max_charge_w") is None
