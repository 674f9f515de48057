"""The safety layer keeps the last word over whoever is in charge: the real ``v2g_safety`` supervisor after
the authority, the mode machine and dispatch, on the safety tests' cycle rig (the inverter follows the
committed set point)."""

from __future__ import annotations

from typing import Any

import pytest

from programs.allocator import Allocator, AllocatorParams
from programs.authority import Authority, AuthorityParams
from programs.dispatch import Dispatch, DispatchParams
from programs.modes import ModeParams, Modes
from runtime.api import Command, Program
from runtime.commands import CONTROL, CommandsSection, Gate, Request
from runtime.tags import TagSpec, TagType
from tests.safety.rig import Rig

GATE = Gate({"hmi": "hmi"}, CommandsSection.model_validate({"allow": {"hmi": ["mode_request"]}}), False, 20_000)
PLANT = (
    TagSpec("ev.connected", TagType.BOOL),
    TagSpec("plan.power", TagType.FLOAT, "W"),
    TagSpec("plan.reserve_soc", TagType.FLOAT),
)


def ask(mode: str, **args: Any) -> Command:
    return GATE.check(Request("1", "mode_request", CONTROL, "operator", {"mode": mode, **args}), 0)


def site(
    authority: dict[str, Any] | None = None,
    extra: tuple[TagSpec, ...] = (),
    allocator: dict[str, Any] | None = None,
    **safety: Any,
) -> Rig:
    safety.setdefault("thermal", {"tau_s": None})
    probe = Rig(**safety)  # only for the site facts the programs need
    progs: list[Program] = [
        Authority("authority", AuthorityParams(**(authority or {})), probe.site),
        Modes("modes", ModeParams(), probe.site),
        Dispatch("dispatch", DispatchParams(ramp_w_per_s=1e7, plan_soc_tag=None, plan_end_tag=None), probe.site),
    ]
    if allocator is not None:
        progs.append(Allocator("allocator", AllocatorParams(**allocator), probe.site))
    r = Rig(extra_inputs=(*PLANT, *extra), programs=progs, **safety)
    r.set(ev__connected=True, plan__power=0.0, plan__reserve_soc=0.2)
    r.settle()  # through start-up enter service
    return r


def tag(r: Rig, name: str) -> Any:
    assert r.last is not None
    return r.last.image[name].value


def committed(r: Rig) -> float:
    return float(r.out["inverter.setpoint"]) if r.out["inverter.enable"] else 0.0


@pytest.mark.parametrize("w", [-9000.0, 9000.0])
def test_thermal_derate_clamps_a_remote_setpoint(w: float) -> None:
    r = site()
    r.step((ask("remote", setpoint_w=w),))
    r.step()
    assert tag(r, "mode.state") == "remote" and committed(r) == w
    r.set(inverter__temperature=80.0)  # inside the derate band (70-85 degC)
    for _ in range(3):
        r.step()
    limit = tag(r, "safety.limit_discharge" if w < 0 else "safety.limit_charge")
    assert 0 < limit < abs(w)
    assert abs(committed(r)) <= limit + 1e-9 and committed(r) * w > 0
    assert tag(r, "mode.state") == "remote"  # the authority still asks; safety bounds what is sent


@pytest.mark.parametrize("mode", ["remote", "frequency"])
def test_a_trip_zeroes_the_output_in_its_cycle_and_the_machine_follows(mode: str) -> None:
    r = site()
    args = {"setpoint_w": -6000.0} if mode == "remote" else {"curve": [[59.0, 6000.0], [61.0, -6000.0]]}
    r.step((ask(mode, **args),))
    r.set(grid__frequency=60.5 if mode == "frequency" else 60.0)
    r.step()
    assert tag(r, "mode.state") == mode and committed(r) == (-6000.0 if mode == "remote" else -3000.0)
    r.set(grid__voltage=1.25 * 240.0)  # above OV2 (1.20 pu): cease at once, trip at its clearing time
    for _ in range(50):  # 1 s: OV2 clears in 0.16 s (IEEE 1547-2018 Table 13, Category III)
        r.step()
        assert committed(r) == 0.0  # from the cycle that sees the over-voltage on, whoever asks
        if tag(r, "mode.state") == "safe_state":
            break
    assert tag(r, "mode.state") == "safe_state" and tag(r, "safety.trip") != ""
    assert tag(r, "authority.mode") == mode  # the request is still held: leaving is the machine's and safety's


def test_frequency_step_reaches_the_inverter_within_two_cycles_through_safety() -> None:
    """From the cycle that sees a frequency step to the committed set point, with the safety layer in the
    path: both signs and zero."""
    r = site()
    r.step((ask("frequency", curve=[[59.5, 10000.0], [59.9, 0.0], [60.1, 0.0], [60.5, -10000.0]]),))
    for hz, expected in ((60.3, -5000.0), (59.7, 5000.0), (60.0, 0.0), (60.4, -7500.0)):
        r.set(grid__frequency=hz)
        got = [committed(r) for _ in range(2) if r.step()]
        assert got[-1] == pytest.approx(expected, abs=1e-6), (hz, got)
        assert got[0] == pytest.approx(expected, abs=1e-6), f"{hz} Hz: took two cycles ({got})"


DER_GATE = Gate(
    {"backoffice": "ocpp"}, CommandsSection.model_validate({"allow": {"ocpp": ["der_control"]}}), False, 20_000
)
# IEEE 1547-2018 Table 24, Category III: 0.036 Hz band, 5 % droop (11 kW per 3 Hz at the 11 kW rating)
DROOP = {"priority": 0, "overFreq": 60.036, "underFreq": 59.964, "overDroop": 0.05, "underDroop": 0.05}


def test_a_freq_droop_set_as_a_der_control_drives_frequency_response_through_safety() -> None:
    """The CSMS's FreqDroop reaches the safety layer as a DER control; from the next cycle on it is the
    curve of the frequency request, and the committed set point follows it: both signs and zero."""
    r = site()
    r.step((ask("frequency", curve=[[59.0, 9000.0], [61.0, -9000.0]]),))
    setc = {"action": "set", "control_type": "FreqDroop", "control_id": "fd", "is_default": True}
    c = DER_GATE.check(
        Request("d", "der_control", "backoffice", "csms", {**setc, "ocpp": DROOP | {"responseTime": 5.0}}), 0
    )
    r.set(grid__frequency=60.336)
    r.step((c,))  # applied by the safety layer in this cycle, published for the next
    for hz, expected in ((60.336, 1100.0), (59.664, -1100.0), (60.0, 0.0), (60.636, 2200.0)):
        r.set(grid__frequency=hz)
        r.step()
        assert tag(r, "authority.curve_from") == "der_freq_droop"
        assert committed(r) == pytest.approx(expected, abs=1e-6), hz


@pytest.mark.parametrize(("hz", "expected"), [(60.3, 5000.0), (59.7, -3000.0), (59.85, 0.0)])
def test_the_sites_own_frequency_service_passes_through_safety(hz: float, expected: float) -> None:
    lf = {"curve": [[59.5, -10000.0], [60.5, 10000.0]], "deadband_hz": 0.1, "baseline_w": 1000.0}
    r = site({"local_frequency": lf})
    r.set(grid__frequency=hz)
    r.step()
    assert tag(r, "authority.source") == "site" and committed(r) == pytest.approx(expected, abs=1e-6)
    r.set(grid__voltage=1.25 * 240.0)  # over-voltage: the safety layer ceases whatever the service asks
    r.step()
    assert committed(r) == 0.0


def test_an_afrr_signal_request_passes_through_safety_both_signs_and_zero() -> None:
    """A CentralFrequency period's signal-watt curve with the real safety layer in the path: the
    committed set point follows the AFRR signal in the cycle that sees it; a signal that is not good is
    0 W; an over-voltage ceases whatever the signal asks."""
    r = site(extra=(TagSpec("ocpp.afrr_signal", TagType.INT),))
    r.set(ocpp__afrr_signal=0)
    r.step()
    r.step((ask("frequency", signal_curve=[[-100, -5000.0], [100, 5000.0]], baseline_w=1000.0),))
    for signal, expected in ((40, 3000.0), (-60, -2000.0), (-20, 0.0)):
        r.set(ocpp__afrr_signal=signal)
        r.step()
        assert committed(r) == pytest.approx(expected, abs=1e-6), signal
    r.set(grid__voltage=1.25 * 240.0)
    r.step()
    assert committed(r) == 0.0


LLB = {
    "import_limit_w": 60_000.0,
    "export_limit_w": 60_000.0,
    "import_limit_tags": ["ocpp.connection_import_w"],
    "export_limit_tags": ["ocpp.connection_export_w"],
}
LLB_TAGS = (
    TagSpec("ocpp.connection_import_w", TagType.FLOAT, "W"),
    TagSpec("ocpp.connection_export_w", TagType.FLOAT, "W"),
    TagSpec("ev.capacity_wh", TagType.FLOAT, "Wh"),
)


@pytest.mark.parametrize(
    ("plan", "building", "imp", "exp", "expected"),
    [(11_000.0, 5_000.0, 8_000.0, 1e8, 3_000.0), (-11_000.0, 1_000.0, 1e8, 4_000.0, -5_000.0),
     (11_000.0, 9_000.0, 8_000.0, 1e8, 0.0)],
)  # fmt: skip
def test_local_load_balancing_through_safety(
    plan: float, building: float, imp: float, exp: float, expected: float
) -> None:
    """LocalLoadBalancing's limits at the meter through the allocator, with the real safety layer after it:
    both signs and zero; an over-voltage ceases whatever the allocator granted."""
    r = site(extra=LLB_TAGS, allocator=LLB)
    r.set(plan__power=plan, ocpp__connection_import_w=imp, ocpp__connection_export_w=exp, ev__capacity_wh=6e4)
    for _ in range(40):  # the charger follows (the rig), the meter reads building + charger
        r.set(meter__power=building + float(r.values["inverter.power"]))
        r.step()
    assert committed(r) == pytest.approx(expected, abs=1e-6)
    r.set(grid__voltage=1.25 * 240.0)
    r.step()
    assert committed(r) == 0.0
