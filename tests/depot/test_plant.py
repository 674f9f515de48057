"""The depot's virtual plant: N chargers and EVs, a building, one meter that reads them all."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from runtime.sim.depot import DepotModel, visits
from runtime.sim.server import VirtualPlant, VirtualPlantParams
from runtime.yamlload import ConfigError

SITES = Path(__file__).resolve().parents[2] / "runtime" / "sites"


def _plant(tmp_path: Path, **depot: object) -> VirtualPlant:
    dm = {
        "chargers": 3,
        "charger_port": 1502,
        "session_map": "depot_ev_map.yaml",
        "session_port": 1503,
        "building_w": [[0, 10_000], [3_600, 30_000]],
        "fleet": {"seed": 3, "days": 2, "arrive_s": 600, "arrive_sd_s": 0, "depart_s": 7_200, "depart_sd_s": 0},
        **depot,
    }
    params = VirtualPlantParams.model_validate(
        {"devices": [{"name": "meter", "map": "site_meter_tcp", "port": 1504}], "depot": dm, "report": "r.json"}
    )
    plant = VirtualPlant(params, SITES)
    plant.params = params.model_copy(update={"report": str(tmp_path / "r.json")})
    return plant


def test_the_meter_reads_the_building_plus_every_charger(tmp_path: Path) -> None:
    p = _plant(tmp_path)
    p.advance(700)  # every van arrived at 600 s
    assert all(ev.connected for ev in p.evse.values())
    p.evse[1].command("inverter.enable", True)
    p.evse[1].command("inverter.setpoint", 8_000.0)
    p.evse[3].command("inverter.enable", True)
    p.evse[3].command("inverter.setpoint", -5_000.0)
    p.advance(30)
    site = p.site_values()
    assert site["meter.power"] == pytest.approx(10_000 + 8_000 - 5_000)
    assert p.evse_values(1)["inverter.power"] == pytest.approx(8_000)
    assert p.evse_values(2)["inverter.power"] == 0.0
    p.advance(3_600)  # the building's evening step
    assert p.site_values()["meter.power"] == pytest.approx(30_000 + 8_000 - 5_000)
    assert p.stats.peak_import_w == pytest.approx(33_000)


def test_each_ev_reports_its_departure_and_each_departure_is_judged(tmp_path: Path) -> None:
    p = _plant(tmp_path)
    p.advance(1_000)
    v = p.evse_values(2)
    assert v["ev.connected"] is True
    assert v["ev.departure_s"] == pytest.approx(7_200 - 1_000, abs=1.0)
    assert v["ev.target_soc"] == 0.8
    p.evse[2].command("inverter.enable", True)
    p.evse[2].command("inverter.setpoint", 11_000.0)
    p.advance(6_500)  # past 7 200 s: every van left
    assert not any(ev.connected for ev in p.evse.values())
    assert p.evse_values(2)["ev.departure_s"] is None and p.evse_values(2)["ev.soc"] is None
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["departures"] == 3
    met = {d.evse: d.met for d in p.stats.departures}
    assert met[2] is True and met[1] is False  # van 2 charged for 1.7 h at 11 kW; van 1 never did
    assert [m["evse"] for m in report["missed"]] == [1, 3]


def test_the_fleet_is_reproducible_and_visits_never_overlap() -> None:
    dm = DepotModel.model_validate(
        {
            "chargers": 5,
            "charger_port": 1,
            "session_map": "x",
            "session_port": 2,
            "fleet": {"seed": 9, "days": 5, "arrive_sd_s": 20_000, "depart_sd_s": 20_000},
        }
    )
    a, b = visits(dm), visits(dm)
    assert a == b
    for stays in a.values():
        for s in stays:
            assert s.depart > s.arrive and 0.2 <= s.soc <= 0.5
        for s, t in itertools.pairwise(stays):
            assert t.arrive >= s.depart


def test_depot_settings_are_checked() -> None:
    base = {"chargers": 2, "charger_port": 1, "session_map": "x", "session_port": 2}
    with pytest.raises(ValueError, match="differ"):
        DepotModel.model_validate({**base, "session_port": 1})
    with pytest.raises(ValueError, match="strictly increasing"):
        DepotModel.model_validate({**base, "building_w": [[100, 1], [50, 2]]})
    with pytest.raises(ValueError, match="low <= high"):
        DepotModel.model_validate({**base, "fleet": {"soc_on_arrival": [0.6, 0.3]}})
    with pytest.raises(ValueError):
        DepotModel.model_validate({**base, "building_w": [[90_000, 1]]})


def test_a_scenario_event_for_an_evse_the_depot_lacks_is_an_error(tmp_path: Path) -> None:
    with pytest.raises((ValueError, ConfigError), match="EVSE 9"):
        VirtualPlant(
            VirtualPlantParams.model_validate(
                {
                    "devices": [{"name": "meter", "map": "site_meter_tcp", "port": 1504}],
                    "depot": {"chargers": 2, "charger_port": 1, "session_map": "depot_ev_map.yaml", "session_port": 2},
                    "events": [{"t": 5, "event": "plug_in", "evse": 9}],
                }
            ),
            SITES,
        )
