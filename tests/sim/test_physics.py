"""Physics of the virtual plant in simulated time (no sockets): response, ramp, battery, meter, thermal,
grid events, PLC link, plug-in and departure. Both power signs and zero."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from runtime.sim.physics import PhysicsParams, Plant
from runtime.sim.server import VirtualPlant, VirtualPlantParams, load_scenario
from runtime.yamlload import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def run(pl: Plant, seconds: float, dt: float = 0.01) -> None:
    for _ in range(round(seconds / dt)):
        pl.step(dt)


def running(setpoint: float, **kw) -> Plant:  # type: ignore[no-untyped-def]
    pl = Plant.create(PhysicsParams.model_validate(kw))
    pl.command("inverter.setpoint", setpoint)
    pl.command("inverter.enable", True)
    return pl


@pytest.mark.parametrize("w", [-7000.0, 0.0, 7000.0])
def test_first_order_response(w: float) -> None:
    pl = running(w, inverter={"tau_s": 0.5, "ramp_w_per_s": 1e9})
    run(pl, 0.5)
    assert pl.power_w == pytest.approx(w * (1 - math.exp(-1)), rel=0.02, abs=1e-6)
    run(pl, 5.0)
    assert pl.power_w == pytest.approx(w, abs=1)


@pytest.mark.parametrize("w", [-11000.0, 11000.0])
def test_ramp_limit(w: float) -> None:
    pl = running(w, inverter={"tau_s": 0.01, "ramp_w_per_s": 2000})
    run(pl, 1.0)
    assert abs(pl.power_w) == pytest.approx(2000, rel=0.02)
    assert math.copysign(1, pl.power_w) == math.copysign(1, w)


@pytest.mark.parametrize("w", [-20000.0, 20000.0])
def test_setpoint_clamped_to_ratings(w: float) -> None:
    pl = running(w, inverter={"max_charge_w": 11000, "max_discharge_w": 9000})
    run(pl, 5)
    assert pl.power_w == pytest.approx(11000 if w > 0 else -9000, abs=1)


def test_disabled_or_unplugged_gives_zero() -> None:
    pl = running(7000.0)
    pl.command("inverter.enable", False)
    run(pl, 3)
    assert pl.power_w == pytest.approx(0.0, abs=1)
    pl = running(7000.0)
    run(pl, 3)
    pl.event("depart")
    pl.step(0.01)
    assert pl.power_w == 0.0 and pl.values()["ev.soc"] is None


@pytest.mark.parametrize("w", [-6000.0, 0.0, 6000.0])
def test_battery_energy_with_efficiencies(w: float) -> None:
    p = {
        "ev": {"capacity_wh": 60000, "soh": 0.9, "soc": 0.5, "charge_efficiency": 0.95, "discharge_efficiency": 0.9},
        "inverter": {"tau_s": 0.001, "ramp_w_per_s": 1e9},
    }
    pl = running(w, **p)
    run(pl, 3600, dt=0.5)
    usable = 60000 * 0.9
    grid_wh = w  # one hour
    stored = grid_wh * 0.95 if w > 0 else grid_wh / 0.9
    assert pl.soc == pytest.approx(0.5 + stored / usable, abs=2e-4)


def test_soc_limits_stop_power() -> None:
    pl = running(11000.0, ev={"soc": 0.999})
    run(pl, 120, dt=0.1)
    assert pl.soc == 1.0 and pl.power_w == pytest.approx(0.0, abs=1)
    pl = running(-11000.0, ev={"soc": 0.001})
    run(pl, 120, dt=0.1)
    assert pl.soc == 0.0 and pl.power_w == pytest.approx(0.0, abs=1)


@pytest.mark.parametrize("w", [-5000.0, 0.0, 5000.0])
def test_meter_counters(w: float) -> None:
    pl = running(
        w,
        meter={"load_w": 1000, "energy_import_wh": 5000, "energy_export_wh": 7000},
        inverter={"tau_s": 0.001, "ramp_w_per_s": 1e9},
    )
    v0 = pl.values()
    assert v0["meter.energy_import"] > 0 and v0["meter.energy_export"] > 0  # never 0: "not implemented"
    run(pl, 3600, dt=0.5)
    site = w + 1000
    assert pl.values()["meter.power"] == pytest.approx(site, abs=1)
    assert pl.e_import_wh == pytest.approx(5000 + max(site, 0), abs=2)
    assert pl.e_export_wh == pytest.approx(7000 + max(-site, 0), abs=2)


def test_thermal_heats_with_power_either_sign_and_cools() -> None:
    for w in (-11000.0, 11000.0):
        pl = running(w, thermal={"ambient_c": 20, "tau_s": 60, "k_per_kw": 3})
        run(pl, 60, dt=0.1)
        assert 20 + 0.5 * 33 < pl.t_igbt < 20 + 33  # inertia: not yet at steady state
        run(pl, 600, dt=0.5)
        assert pl.t_igbt == pytest.approx(20 + 33, abs=0.5)
        pl.command("inverter.setpoint", 0.0)
        run(pl, 900, dt=0.5)
        assert pl.t_igbt == pytest.approx(20, abs=0.5)


def test_grid_loss_stops_power_at_once() -> None:
    pl = running(-7000.0)
    run(pl, 3)
    pl.event("grid_loss")
    pl.step(0.01)
    v = pl.values()
    assert pl.power_w == 0.0 and v["grid.loss"] is True and v["grid.voltage"] == 0.0
    pl.event("grid_restore")
    run(pl, 3)
    assert pl.power_w == pytest.approx(-7000, abs=5)


def test_plc_snr_noise_and_attenuation() -> None:
    pl = Plant.create(PhysicsParams.model_validate({"plc": {"snr_db": 30, "noise_db": 0.5}, "seed": 3}))
    snrs = []
    for _ in range(400):
        pl.step(0.1)
        snrs.append(pl.snr_db)
    mean = sum(snrs) / len(snrs)
    sd = (sum((s - mean) ** 2 for s in snrs) / len(snrs)) ** 0.5
    assert mean == pytest.approx(30, abs=0.15) and 0.3 < sd < 0.7
    pl.set("plc.attenuation_extra", 12)
    pl.step(0.1)
    assert pl.snr_db == pytest.approx(18, abs=3) and pl.values()["plc.attenuation"] == pytest.approx(22 + 12)


def test_scenario_steps_ramps_and_events(tmp_path: Path) -> None:
    f = tmp_path / "sc.yaml"
    f.write_text(
        "events:\n"
        "  - {t: 1, set: grid.voltage, to: 264, ramp_s: 0}\n"
        "  - {t: 2, set: grid.frequency, to: 59.0, ramp_s: 10}\n"
        "  - {t: 3, event: depart}\n"
        "  - {t: 4, event: plug_in, soc: 0.2}\n"
    )
    vp = VirtualPlant(
        VirtualPlantParams.model_validate(
            {"devices": [{"name": "m", "map": "site_meter_tcp", "port": 0}], "scenario": str(f)}
        ),
        ROOT,
    )
    vp.advance(0.9)
    assert vp.plant.grid_v == 240.0
    vp.advance(0.2)
    assert vp.plant.grid_v == 264.0
    vp.advance(5.9)  # t = 7: 5 s into a 10 s ramp
    assert vp.plant.grid_f == pytest.approx(59.5, abs=0.01)
    assert vp.plant.connected and vp.plant.soc == pytest.approx(0.2)
    vp.advance(10)
    assert vp.plant.grid_f == 59.0


def test_bundled_scenario_loads() -> None:
    sc = load_scenario(ROOT / "runtime/sites/sim_plant.yaml")
    assert sc.events and sc.events[0].event == "plug_in"


def test_bad_scenario_names_file_line_key(tmp_path: Path) -> None:
    f = tmp_path / "sc.yaml"
    f.write_text("events:\n  - {t: 1, set: grid.voltage}\n  - {t: 2, set: grid.colour, to: 1}\n")
    with pytest.raises(ConfigError, match=r"sc.yaml:2: events\[0\]"):
        load_scenario(f)


@pytest.mark.parametrize("speed", [1, 20, 300])
@pytest.mark.parametrize("w", [-7000.0, 0.0, 7000.0])
def test_a_time_lapsed_power_stage_answers_at_its_real_pace(speed: int, w: float) -> None:
    """At --speed N the physics run N x faster than real time, the power stage does not: its time constant
    and ramp stretch N x in the plant's time, while the battery integrates in the plant's time as ever."""
    pl = running(w, inverter={"tau_s": 0.5, "ramp_w_per_s": 1e9}, ev={"soc": 0.5})
    pl.response_scale = speed
    run(pl, 0.5 * speed, dt=0.01 * speed)
    assert pl.power_w == pytest.approx(w * (1 - math.exp(-1)), rel=0.02, abs=1e-6)
    run(pl, 5.0 * speed, dt=0.01 * speed)
    assert pl.power_w == pytest.approx(w, abs=1)
    moved = pl.soc - 0.5
    assert moved == 0.0 if w == 0 else (moved > 0) == (w > 0)
    pl = running(w, inverter={"tau_s": 0.01, "ramp_w_per_s": 2000})
    pl.response_scale = speed
    run(pl, 1.0 * speed, dt=0.01 * speed)
    assert abs(pl.power_w) == pytest.approx(min(2000, abs(w)), rel=0.02, abs=1e-6)  # 2 kW per real second


def test_the_plant_time_lapses_every_charger_of_a_depot_and_nothing_else() -> None:
    vp = VirtualPlant(
        VirtualPlantParams.model_validate(
            {
                "devices": [{"name": "meter", "map": "site_meter_tcp", "port": 1504}],
                "inverter": {"tau_s": 0.3, "ramp_w_per_s": 1e9},  # the time constant alone
                "depot": {
                    "chargers": 3,
                    "charger_port": 1502,
                    "session_map": "depot_ev_map.yaml",
                    "session_port": 1503,
                    "fleet": {"seed": 3, "days": 1, "arrive_s": 10, "arrive_sd_s": 0},
                },
            }
        ),
        ROOT / "runtime" / "sites",
    )
    vp.time_lapse(40)
    assert [p.response_scale for p in (vp.plant, *vp.evse.values())] == [40] * 4
    vp.advance(20)  # the vans arrived at 10 s of the plant's time: the scenario is not stretched
    assert all(ev.connected for ev in vp.evse.values())
    ev = vp.evse[2]
    ev.command("inverter.enable", True)
    ev.command("inverter.setpoint", 11_000.0)
    vp.advance(0.3)  # one real time constant would be 12 s of the plant's
    assert 0 < ev.power_w < 0.1 * 11_000
    vp.advance(0.3 * 40)
    assert ev.power_w == pytest.approx(11_000 * (1 - math.exp(-1)), rel=0.05)
    assert vp.plant.p.thermal.tau_s == 120.0  # heat and charge stay physics: on the plant's clock
