"""Settings: adjustable only inside the IEEE 1547-2018 ranges; errors name file, line and key; a 50 Hz site
must state its own frequency settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from runtime.api import SiteInfo
from runtime.config import load_site
from runtime.yamlload import ConfigError
from safety.settings import SafetyParams, resolve
from safety.supervisor import SafetySupervisor

BASE = {"category": "III", "rated_charge_w": 11000.0, "rated_discharge_w": 11000.0}
FIFTY = {
    "frequency_basis_hz": 50,
    "frequency": {
        "of2": {"threshold": 52.0, "clearing_s": 0.1},
        "of1": {"threshold": 51.5, "clearing_s": 5.0},
        "uf1": {"threshold": 47.5, "clearing_s": 5.0},
        "uf2": {"threshold": 47.0, "clearing_s": 0.1},
        "continuous_low_hz": 49.0,
        "continuous_high_hz": 51.0,
        "ride_through_low_hz": 47.5,
        "ride_through_high_hz": 51.5,
    },
    "enter_service": {"f_low_hz": 49.9, "f_high_hz": 50.1},
}


@pytest.mark.parametrize(
    "cat,key,val",
    [
        ("III", {"voltage": {"ov2": {"threshold": 1.25}}}, "fixed"),
        ("III", {"voltage": {"ov1": {"threshold": 1.09}}}, "range"),
        ("III", {"voltage": {"uv1": {"clearing_s": 20.0}}}, "range"),
        ("I", {"voltage": {"uv2": {"clearing_s": 2.5}}}, "range"),
        ("II", {"frequency": {"of1": {"clearing_s": 100.0}}}, "range"),
        ("I", {"frequency": {"uf2": {"threshold": 57.5}}}, "range"),
        ("III", {"enter_service": {"delay_s": 700.0}}, "range"),
        ("III", {"enter_service": {"v_low_pu": 0.96}}, "range"),
        ("III", {"enter_service": {"f_high_hz": 61.5}}, "range"),
        ("III", {"islanding": {"rocof_hz_per_s": 2.0}}, "inside the Category III ROCOF ride-through"),
        ("III", {"thermal": {"trip_c": 90.0}}, "range"),
        ("III", {"response_allowance_s": 0.5}, "range"),
        ("III", {"comms": {"rtt_max_s": 1.0}}, "range"),
    ],
)
def test_out_of_range_is_a_validation_error(cat: str, key: dict, val: str) -> None:
    with pytest.raises(ValidationError):
        SafetyParams.model_validate({**BASE, "category": cat, **key})


def test_in_range_adjustment_is_used() -> None:
    r = resolve(SafetyParams.model_validate({**BASE, "voltage": {"ov1": {"threshold": 1.15, "clearing_s": 12.5}}}))
    assert r.trips["ov1"].threshold == 1.15 and r.trips["ov1"].clearing_s == 12.5
    assert r.trips["ov1"].trip_after_us == round((12.5 - 0.06) * 1e6)


def test_defaults_per_category() -> None:
    for cat, uv1 in (("I", (0.70, 2.0)), ("II", (0.70, 10.0)), ("III", (0.88, 21.0))):
        t = resolve(SafetyParams.model_validate({**BASE, "category": cat})).trips["uv1"]
        assert (t.threshold, t.clearing_s) == uv1


def test_fifty_hz_site_refuses_sixty_hz_defaults() -> None:
    p = SafetyParams.model_validate(BASE)
    with pytest.raises(ValueError, match="60 Hz"):
        SafetySupervisor("safety", p, SiteInfo("s", 230.0, 50, 20_000))
    with pytest.raises(ValidationError, match="must state its own frequency"):
        SafetyParams.model_validate({**BASE, "frequency_basis_hz": 50})
    ok = SafetyParams.model_validate({**BASE, **FIFTY})
    sup = SafetySupervisor("safety", ok, SiteInfo("s", 230.0, 50, 20_000))
    assert sup.r.trips["of2"].threshold == 52.0 and sup.r.es_f == (49.9, 50.1)


def test_site_file_error_names_file_line_and_key(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(
        "site: {name: t, nominal_voltage: 240.0, nominal_frequency: 60}\n"
        "scan: {period_ms: 20}\n"
        "safety:\n"
        "  - type: v2g_safety\n"
        "    params:\n"
        "      category: III\n"
        "      rated_charge_w: 11000\n"
        "      rated_discharge_w: 11000\n"
        "      voltage:\n"
        "        uv1: {threshold: 0.9}\n"
    )
    with pytest.raises(ConfigError) as exc:
        load_site(site)
    msg = str(exc.value)
    assert f"{site}:9" in msg and "safety[0].params.voltage" in msg and "0.88" in msg


def test_fifty_hz_site_file_with_sixty_hz_defaults_does_not_load(tmp_path: Path) -> None:
    from runtime.site import build_site

    site = tmp_path / "site.yaml"
    site.write_text(
        "site: {name: t, nominal_voltage: 230.0, nominal_frequency: 50}\n"
        "scan: {period_ms: 20}\n"
        "devices:\n"
        "  - name: dev\n"
        "    type: memory\n"
        "    params:\n"
        "      tags:\n"
        "        - {name: grid.voltage, unit: V, value: 230.0}\n"
        "        - {name: grid.frequency, unit: Hz, value: 50.0}\n"
        "        - {name: inverter.setpoint, unit: W, direction: output, value: 0.0}\n"
        "        - {name: inverter.enable, type: bool, direction: output, value: false}\n"
        "safety:\n"
        "  - type: v2g_safety\n"
        "    params: {category: II, rated_charge_w: 7400, rated_discharge_w: 7400}\n"
    )
    with pytest.raises(ConfigError) as exc:
        build_site(site)
    msg = str(exc.value)
    assert f"{site}:13" in msg and "60 Hz" in msg and "frequency_basis_hz: 50" in msg


def test_fifty_hz_site_trips_on_its_own_settings() -> None:
    from tests.safety.rig import Rig

    rig = Rig(
        nominal_v=230.0,
        nominal_f=50,
        category="II",
        enter_service={"delay_s": 1.0, "ramp_s": 1.0, "f_low_hz": 49.9, "f_high_hz": 50.1},
        **{k: v for k, v in FIFTY.items() if k != "enter_service"},
    )
    rig.set(grid__voltage=230.0, grid__frequency=50.0)
    rig.req.setpoint = -3000.0
    rig.run(3.0, step_s=0.1)
    assert rig.out["inverter.setpoint"] == -3000.0
    rig.set(grid__frequency=51.0)  # continuous at 50 Hz, far outside the 60 Hz defaults' logic
    rig.run(1.0)
    assert rig.out["safety.trip"] == ""
    rig.set(grid__frequency=51.6)  # beyond this site's OF1 (51.5 Hz, 5 s)
    got = None
    for res in rig.run(6.0):
        if res.outputs["safety.trip"] and got is None:
            got = res
    assert got is not None and got.outputs["safety.trip"] == "of1"
