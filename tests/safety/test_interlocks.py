"""Thermal, battery, divergence, communications, runtime health, limits, settings verification, operator
reset and persistence, each driven through Engine.step. Both power signs and zero throughout."""

from __future__ import annotations

import pytest

from runtime.api import Command, SiteInfo
from runtime.tags import Direction, Quality, TagSpec, TagType, TagUpdate
from tests.safety.rig import Memory, Rig

RESET = (Command("reset_trip"),)


def _rig(sp: float, **kw) -> Rig:
    rig = Rig(**kw)
    rig.req.setpoint = sp
    rig.settle()
    return rig


# -- thermal -------------------------------------------------------------------------------------
@pytest.mark.parametrize("sp", [-10000.0, 10000.0])
def test_thermal_derating_both_directions(sp: float) -> None:
    rig = _rig(sp, thermal={"derate_start_c": 70.0, "tau_s": None})
    rig.set(inverter__temperature=77.5)  # half-way from 70 to 85 degC
    res = rig.step()
    assert res.outputs["safety.limit_charge"] == pytest.approx(5500.0)
    assert res.outputs["safety.limit_discharge"] == pytest.approx(5500.0)
    assert res.outputs["inverter.setpoint"] == pytest.approx(5500.0 if sp > 0 else -5500.0)


@pytest.mark.parametrize("sp", [-10000.0, 0.0, 10000.0])
def test_over_temperature_trip_latches_until_cool_and_cooldown(sp: float) -> None:
    rig = _rig(sp, thermal={"reset_c": 75.0, "cooldown_s": 60.0, "tau_s": None})
    rig.set(inverter__temperature=85.0)
    res = rig.step()
    assert res.outputs["safety.trip"] == "over_temperature"
    assert res.outputs["inverter.setpoint"] == 0.0 and res.outputs["inverter.enable"] is False
    rig.set(inverter__temperature=70.0)  # cool, but the cool-down has not passed
    rig.run(50.0, step_s=1.0)
    assert rig.out["safety.trip"] == "over_temperature"
    rig.run(11.0, step_s=1.0)
    assert rig.out["safety.trip"] == ""
    # recovery along the ramp, without the grid delay: both directions
    assert abs(rig.out["inverter.setpoint"]) < abs(sp) or sp == 0.0
    rig.run(301.0, step_s=1.0)
    assert rig.out["inverter.setpoint"] == sp


def test_thermal_prediction_caps_before_the_derating_curve() -> None:
    rig = _rig(10000.0, thermal={"tau_s": 600.0, "derate_start_c": 70.0, "ambient_c": 40.0})
    temp = 50.0
    for _ in range(60):  # rising 0.05 degC/s at 10 kW: settles at 50 + 600 * 0.05 = 80 degC
        temp += 0.05
        rig.set(inverter__temperature=temp)
        rig.run(1.0, step_s=1.0)
    assert temp < 70.0
    lim = rig.out["safety.limit_charge"]
    assert lim < 10000.0 and lim == rig.out["safety.limit_discharge"]
    assert rig.out["inverter.setpoint"] == pytest.approx(lim)


# -- battery -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "soc,sp,want",
    [(0.19, -5000.0, 0.0), (0.19, 5000.0, 5000.0), (0.96, 5000.0, 0.0), (0.96, -5000.0, -5000.0), (0.5, 0.0, 0.0)],
)
def test_soc_window(soc: float, sp: float, want: float) -> None:
    rig = _rig(sp)
    rig.set(ev__soc=soc)
    assert rig.step().outputs["inverter.setpoint"] == want


def test_soh_guardrail_limits_depth_and_power() -> None:
    rig = _rig(-10000.0)
    rig.set(ev__soh=0.7, ev__soc=0.6)
    res = rig.step()
    assert res.outputs["safety.limit_discharge"] == pytest.approx(5500.0)
    assert res.outputs["inverter.setpoint"] == pytest.approx(-5500.0)
    rig.set(ev__soc=0.39)  # below the guarded reserve (0.40)
    assert rig.step().outputs["inverter.setpoint"] == 0.0


def test_unknown_soc_means_no_discharge() -> None:
    rig = _rig(-5000.0)
    rig.engine  # noqa: B018
    res = rig.engine.step(rig.now_us, [TagUpdate("ev.soc", 0.5, Quality.BAD)])
    assert res.outputs["inverter.setpoint"] == 0.0
    assert res.outputs["safety.limit_discharge"] == 0.0 and res.outputs["safety.limit_charge"] > 0


# -- divergence ----------------------------------------------------------------------------------
@pytest.mark.parametrize("sp,measured", [(-5000.0, 5000.0), (5000.0, -5000.0), (0.0, -4000.0), (3000.0, 9000.0)])
def test_power_divergence_fault_reports_both_values(sp: float, measured: float) -> None:
    rig = _rig(sp, follow=False, divergence={"time_s": 1.0})
    rig.set(inverter__power=measured)
    got = None
    for res in rig.run(1.5):
        if res.outputs["safety.trip"] and got is None:
            got = res
    assert got is not None and got.outputs["safety.trip"] == "power_divergence"
    assert f"measured {measured:.0f} W" in got.outputs["safety.reason"] and "expected" in got.outputs["safety.reason"]
    # operator reset needed, once the device obeys again
    rig.set(inverter__power=0.0)
    rig.run(1.0)
    assert rig.out["safety.trip"] == "power_divergence"
    rig.step(RESET)
    assert rig.out["safety.trip"] == ""


def test_shortfall_is_a_warning_not_a_trip() -> None:
    rig = _rig(10000.0, follow=False, divergence={"time_s": 1.0})
    rig.set(inverter__power=4000.0)  # battery taper
    rig.run(3.0)
    assert rig.out["safety.trip"] == ""
    assert any(e.kind == "warning" and "shortfall" in e.message for e in rig.event_log)


# -- communications and runtime health -------------------------------------------------------------
@pytest.mark.parametrize("tag", ["grid.voltage", "inverter.power", "meter.power"])
@pytest.mark.parametrize("quality", [Quality.BAD, Quality.STALE])
def test_bad_or_stale_io_trips_from_the_cycle_that_sees_it(tag: str, quality: Quality) -> None:
    rig = _rig(-5000.0)
    res = rig.engine.step(rig.now_us, [TagUpdate(tag, 1.0, quality)])
    assert res.outputs["safety.trip"] == "comms_lost"
    assert res.outputs["inverter.setpoint"] == 0.0 and res.outputs["inverter.enable"] is False
    rig.now_us += rig.period_us
    rig.set(**{tag.replace(".", "__"): 240.0 if tag == "grid.voltage" else 0.0})
    rig.step()
    assert rig.out["safety.trip"] == ""  # recovers by itself, along the ramp, no grid delay
    rig.run(301.0, step_s=1.0)
    assert rig.out["inverter.setpoint"] == -5000.0


def test_startup_waits_for_first_reads_without_tripping() -> None:
    rig = Rig()
    res = rig.engine.step(0, [])
    assert res.outputs["safety.trip"] == ""
    assert res.outputs["inverter.enable"] is False and "not ready" in res.outputs["safety.reason"]


@pytest.mark.parametrize("sp", [-7000.0, 7000.0])
def test_weak_plc_link_ramps_discharge_down(sp: float) -> None:
    rig = _rig(sp, comms={"snr_min_db": 10.0, "snr_ramp_w_per_s": 1000.0})
    rig.set(plc__snr=5.0)
    rig.run(2.0)
    if sp < 0:
        assert -6000.0 < rig.out["inverter.setpoint"] < -4500.0  # graceful, not a step
        rig.run(6.0)
        assert rig.out["inverter.setpoint"] == 0.0
    else:
        assert rig.out["inverter.setpoint"] == sp  # charging unaffected
    rig.req.setpoint = -2000.0  # no new discharge
    rig.run(0.1)
    assert rig.out["inverter.setpoint"] == 0.0  # whichever direction ran before


def test_overrun_fault_trips_and_recovers() -> None:
    rig = _rig(-5000.0)
    rig.set(runtime__overrun_fault=True)
    assert rig.step().outputs["safety.trip"] == "overrun"
    rig.set(runtime__overrun_fault=False)
    assert rig.step().outputs["safety.trip"] == ""


def test_write_mismatch_needs_operator_reset() -> None:
    rig = _rig(5000.0)
    rig.set(inverter__write_mismatch=True)
    rig.run(1.1)
    assert rig.out["safety.trip"] == "write_mismatch"
    rig.step(RESET)
    assert rig.out["safety.trip"] == "write_mismatch"  # still mismatching: reset refused
    rig.set(inverter__write_mismatch=False)
    rig.step()
    rig.step(RESET)
    assert rig.out["safety.trip"] == ""


def test_external_limits_and_stale_fallback() -> None:
    """The short story (tests/safety/test_external_limits.py has the tables): limits are magnitudes; stale
    means the last good charge limit and 0 W discharge; a negative magnitude is a fault: 0 W both ways."""
    ext = [
        TagSpec("backoffice.limit_charge", unit="W", direction=Direction.SHARED, stale_after_s=5.0),
        TagSpec("backoffice.limit_discharge", unit="W", direction=Direction.SHARED, stale_after_s=5.0),
    ]
    lim = {"name": "backoffice", "charge_tag": ext[0].name, "discharge_tag": ext[1].name}
    rig = Rig(extra_inputs=ext, limits={"external": [lim]}, comms={"external_tags": [ext[0].name, ext[1].name]})
    rig.set(backoffice__limit_charge=4000.0, backoffice__limit_discharge=0.0)
    rig.req.setpoint = -6000.0
    rig.settle()
    assert rig.out["inverter.setpoint"] == 0.0  # zero limit: zero, never a flip
    rig.req.setpoint = 6000.0
    assert rig.step().outputs["inverter.setpoint"] == 4000.0
    assert rig.out["safety.external_ok"] is True
    rig.values.pop("backoffice.limit_charge")  # stops arriving: stale after 5 s
    rig.values.pop("backoffice.limit_discharge")
    rig.run(6.0)
    assert rig.out["inverter.setpoint"] == 4000.0 and rig.out["safety.external_ok"] is False
    assert rig.out["safety.limit_discharge"] == 0.0
    rig.set(backoffice__limit_charge=-5.0, backoffice__limit_discharge=2000.0)
    assert rig.step().outputs["inverter.setpoint"] == 0.0


def test_slow_back_office_leaves_grid_services() -> None:
    rtt = [
        TagSpec("ocpp.round_trip", unit="s", direction=Direction.SHARED),
        TagSpec("mode.state", TagType.STR, direction=Direction.INPUT),
    ]
    rig = Rig(extra_inputs=rtt, comms={"rtt_tag": "ocpp.round_trip", "external_modes": ["grid_service"]})
    rig.set(ocpp__round_trip=0.2, mode__state="grid_service")
    rig.req.setpoint = -4000.0
    rig.settle()
    assert rig.out["inverter.setpoint"] == -4000.0
    rig.set(ocpp__round_trip=0.6)
    res = rig.step()
    assert res.outputs["inverter.setpoint"] == 0.0 and res.outputs["safety.external_ok"] is False
    rig.set(mode__state="discharge")  # own decision, not external: followed
    assert rig.step().outputs["inverter.setpoint"] == -4000.0


# -- ratings ------------------------------------------------------------------------------------
@pytest.mark.parametrize("sp", [-20000.0, 20000.0])
def test_clamped_to_device_rating(sp: float) -> None:
    rig = _rig(sp)
    rig.set(inverter__max_charge_w=7400.0, inverter__max_discharge_w=6000.0)
    assert rig.step().outputs["inverter.setpoint"] == (7400.0 if sp > 0 else -6000.0)


# -- settings verification -------------------------------------------------------------------------
def test_weaker_inverter_trip_setting_withholds_permit() -> None:
    dev = [
        TagSpec("inverter.trip_ov2_v", unit="V", direction=Direction.INPUT),
        TagSpec("inverter.trip_ov2_s", unit="s", direction=Direction.INPUT),
        TagSpec("inverter.reversion_s", unit="s", direction=Direction.INPUT),
    ]
    rig = Rig(
        extra_inputs=dev,
        verify={
            "ratings": ["inverter.max_charge_w"],
            "reversion_tag": "inverter.reversion_s",
            "trips": {"ov2": {"threshold_tag": "inverter.trip_ov2_v", "time_tag": "inverter.trip_ov2_s", "unit": "V"}},
        },
    )
    rig.set(inverter__trip_ov2_v=300.0, inverter__trip_ov2_s=0.16, inverter__reversion_s=5.0)
    rig.req.setpoint = 3000.0
    rig.run(1.0)
    assert rig.out["inverter.enable"] is False and "weaker" in rig.out["safety.reason"]
    rig.set(inverter__trip_ov2_v=288.0)  # 1.20 pu of 240 V
    rig.run(0.1)
    assert rig.out["inverter.enable"] is True and rig.out["inverter.setpoint"] == 3000.0


# -- operator reset and persistence ------------------------------------------------------------------
def test_latched_trip_survives_restart() -> None:
    rig = _rig(-5000.0, follow=False, divergence={"time_s": 0.5})
    rig.set(inverter__power=5000.0)
    rig.run(1.0)
    assert rig.out["safety.trip"] == "power_divergence"
    state = rig.safety.persist()
    assert state

    again = Rig()
    again.engine.restore({"safety": state})
    again.req.setpoint = -5000.0
    again.settle()
    assert again.out["safety.trip"] == "power_divergence" and again.out["inverter.enable"] is False
    again.step(RESET)
    assert again.out["safety.trip"] == ""


def test_program_fault_zeroes_output() -> None:
    rig = _rig(-5000.0)
    rig.req.fail = True
    res = rig.step()
    assert res.outputs["safety.trip"] == "program_fault" and res.outputs["inverter.setpoint"] == 0.0
    rig.req.fail = False
    assert rig.step().outputs["safety.trip"] == ""


def test_forced_protective_input_is_not_evidence() -> None:
    rig = _rig(-5000.0)
    rig.engine.force("grid.voltage", 240.0)  # hides whatever the meter says
    res = rig.step()
    assert res.outputs["safety.trip"] == "comms_lost" and "forced" in res.outputs["safety.reason"]


def test_hot_battery_applies_the_guardrail() -> None:
    hot = [TagSpec("ev.battery_temperature", unit="degC", direction=Direction.INPUT)]
    rig = Rig(extra_inputs=hot, battery={"temperature_tag": "ev.battery_temperature", "hot_c": 45.0})
    rig.set(ev__battery_temperature=30.0, ev__soc=0.6)
    rig.req.setpoint = -10000.0
    rig.settle()
    assert rig.out["inverter.setpoint"] == -10000.0
    rig.set(ev__battery_temperature=50.0)
    assert rig.step().outputs["inverter.setpoint"] == pytest.approx(-5500.0)


def test_divergence_follows_the_inverter_ramp() -> None:
    """Expected power is the setpoint after the inverter's ramp limit: a slow inverter is not a fault."""
    rig = _rig(0.0, follow=False, divergence={"ramp_w_per_s": 2000.0, "time_s": 1.0})
    rig.req.setpoint = 6000.0
    measured = 0.0
    for _ in range(250):  # 5 s: the inverter ramps at 2 kW/s, one cycle behind
        res = rig.step()
        measured = min(res.outputs["inverter.setpoint"], measured + 2000.0 * 0.02)
        rig.set(inverter__power=measured)
        assert res.outputs["safety.trip"] == ""
    assert measured == 6000.0


def test_thermal_prediction_settles_instead_of_tripping() -> None:
    """A first-order inverter heat sink that would settle at 90 degC at full power (ambient 40, 5 degC/kW,
    tau 600 s): with the prediction the supervisor finds a power that settles near the derating start,
    without a trip and without cycling between full power and the cap."""
    rig = _rig(-10000.0, follow=True, thermal={"tau_s": 600.0, "derate_start_c": 70.0, "ambient_c": 40.0})
    temp, powers = 40.0, []
    for _ in range(3 * 3600):
        p = abs(rig.values["inverter.power"])
        temp += (40.0 + 5.0 * p / 1000.0 - temp) / 600.0  # 1 s step
        rig.set(inverter__temperature=temp)
        res = rig.step(advance_us=1_000_000)
        assert res.outputs["safety.trip"] == ""
        powers.append(abs(res.outputs["inverter.setpoint"]))
    assert temp < 80.0
    last_hour = powers[-3600:]
    assert min(last_hour) > 3000.0 and max(last_hour) - min(last_hour) < 1500.0


@pytest.mark.parametrize("request_w", [-5000.0, 5000.0, 0.0])
@pytest.mark.parametrize("tag,real,forced", [("grid.loss", True, False), ("inverter.write_mismatch", True, False)])
def test_forcing_any_protective_input_trips_instead_of_hiding_it(
    tag: str, real: bool, forced: bool, request_w: float
) -> None:
    """Not only required tags: a forced fault flag would hide the fault it reports (review, 2026-11-25)."""
    rig = _rig(request_w)
    rig.engine.force(tag, forced)
    rig.set(**{tag.replace(".", "__"): real})
    res = rig.step()
    assert res.outputs["safety.trip"] != "" and res.outputs["inverter.setpoint"] == 0.0
    assert res.outputs["inverter.enable"] is False


@pytest.mark.parametrize("request_w", [-4000.0, 4000.0])
def test_entering_an_external_mode_while_the_back_office_is_slow_zeroes_in_that_same_cycle(request_w: float) -> None:
    """The mode the programs chose this cycle counts, not last cycle's (review finding: one cycle of an
    external set point passed)."""
    rtt = [TagSpec("ocpp.round_trip", unit="s", direction=Direction.SHARED)]
    mem = Memory(SiteInfo("rig", 240.0, 60, 20_000, 1), {"mode.state": "discharge"})
    rig = Rig(
        extra_inputs=rtt,
        programs=[mem],
        comms={"rtt_tag": "ocpp.round_trip", "external_modes": ["grid_service"]},
    )
    rig.set(ocpp__round_trip=0.6)  # too slow for grid services from the start
    rig.req.setpoint = request_w
    rig.settle()
    assert rig.out["inverter.setpoint"] == request_w  # own decision: followed
    mem.values["mode.state"] = "grid_service"
    res = rig.step()
    assert res.image["mode.state"].value == "grid_service"
    assert res.outputs["inverter.setpoint"] == 0.0 and res.outputs["safety.external_ok"] is False
