"""Frequency response without OCPP and under a DER control: the site file's standing frequency service and
the FreqDroop the safety layer publishes, cycle by cycle on the shared rig (authority, modes, dispatch).

The site's service ranks below every live request and never expires; a FreqDroop in force is the curve of
every frequency request (docs/modes.md "Frequency response")."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from programs import authority
from programs.authority import Authority, AuthorityParams, LocalFrequency
from programs.dispatch import Dispatch, DispatchParams
from programs.modes import ModeParams, Modes
from runtime import commands
from runtime.site import build_site
from runtime.tags import Direction, TagSpec, TagType
from runtime.yamlload import ConfigError
from tests.programs.conftest import SITE, Rig
from tests.programs.test_authority import BASE, GRID, NO_OCPP, OCPP, ask, run, sp
from tests.runtime.helpers import BASE_SITE, write_site

# A service with its power rising with frequency (+ into the EV): 10 kW at +-0.5 Hz, linear, 0.1 Hz band
LOCAL = {"curve": [[59.5, -10000.0], [60.5, 10000.0]], "deadband_hz": 0.1, "baseline_w": 1000.0}
DROOP_TAG = TagSpec("safety.der_freq_droop", TagType.STR, "", Direction.SHARED, "")  # safety writes it
# IEEE 1547-2018 Table 24 (Category III) inside its ranges: 0.036 Hz band, 5 % droop
DROOP = {"overFreq": 60.036, "underFreq": 59.964, "overDroop": 0.05, "underDroop": 0.05, "responseTime": 5.0}


def site(ocpp: bool = False, **authority: Any) -> Rig:
    progs = [
        Authority("authority", AuthorityParams(**authority), SITE),
        Modes("modes", ModeParams(), SITE),
        Dispatch("dispatch", DispatchParams(ramp_w_per_s=1e7, plan_soc_tag=None), SITE),
    ]
    return Rig(progs, extra=(GRID, DROOP_TAG, *(OCPP if ocpp else ())))


# (frequency, committed set point): baseline 1 kW, the curve seen through the 0.1 Hz dead band
LOCAL_STEPS = [
    (60.0, 1000.0),
    (60.1, 1000.0),  # the band's edge: still nominal
    (59.95, 1000.0),
    (60.3, 5000.0),  # over-frequency: 0.2 Hz past the band -> +4 kW, charge harder
    (59.7, -3000.0),  # under-frequency: -4 kW, across zero into discharge in one cycle
    (59.65, -4000.0),
    (59.55, -6000.0),
    (60.15, 2000.0),
    (59.85, 0.0),  # 1000 - 1000: exactly zero
    (61.0, 11000.0),  # beyond the end: held, and the rating
    (58.0, -9000.0),
]


def test_the_site_files_frequency_service_runs_without_ocpp_both_signs_and_zero() -> None:
    r = site(local_frequency=LOCAL)
    run(r, NO_OCPP)
    assert r.value("mode.state") == "frequency" and r.value("authority.source") == "site"
    assert r.value("authority.curve_from") == "site" and r.value("authority.expires_us") == 0
    for hz, expected in LOCAL_STEPS:
        run(r, {**NO_OCPP, "grid.frequency": hz})
        assert sp(r) == pytest.approx(expected, abs=1e-6), hz
        assert r.value("mode.state") == "frequency"
    r.step(NO_OCPP, bad=("grid.frequency",))
    assert sp(r) == 0.0 and "not good: 0 W" in r.value("authority.reason")


def test_a_live_request_overrides_the_standing_service_and_hands_back_to_it() -> None:
    r = site(ocpp=True, local_frequency=LOCAL)
    run(r, {**BASE, "grid.frequency": 60.3})
    assert sp(r) == pytest.approx(5000.0)
    run(r, BASE, ask("backoffice", "remote", setpoint_w=-2500.0, expiry_s=1))
    assert r.value("authority.source") == "ocpp" and sp(r) == -2500.0
    run(r, BASE, ask("hmi", "remote", setpoint_w=0.0))
    assert r.value("authority.source") == "operator" and sp(r) == 0.0
    run(r, BASE, ask("hmi", "local"))
    run(r, {**BASE, "ocpp.accepted": False})  # back-office link down: its request waits
    assert r.value("authority.source") == "site" and sp(r) == 1000.0
    r.advance(2 * 1_000_000)  # the CSMS's request expires: the site's service, not the plan
    run(r, BASE)
    assert r.value("authority.source") == "site" and r.value("mode.state") == "frequency"


def test_a_local_ems_ranks_above_the_standing_service() -> None:
    r = site(local_control=True, local_frequency=LOCAL)
    run(r, NO_OCPP, ask("ems", "remote", setpoint_w=-1500.0))
    assert r.value("authority.source") == "localapi" and sp(r) == -1500.0


@pytest.mark.parametrize(
    ("service", "words"),
    [
        ({"curve": [[59.5, 10000.0], [60.5, -10000.0]]}, "power falls"),
        ({"curve": [[60.0, 0.0]]}, "at least 2 items"),
        ({"curve": [[45.0 + i, 0.0] for i in range(11)]}, "at most 10 items"),
        ({"curve": [[60.0, 0.0], [59.0, 1.0]]}, "increase strictly"),
        ({"curve": [[44.0, 0.0], [60.0, 1.0]]}, "greater than or equal to 45"),
        ({"curve": [[59.0, 0.0], [66.0, 1.0]]}, "less than or equal to 65"),
        ({"curve": [[59.0, 0.0], [61.0, 2e6]]}, "less than or equal to 1000000"),
        ({"curve": [[59.0, 0.0], [61.0, float("inf")]]}, "finite"),
        ({"curve": [[59.0, 0.0], [61.0, 1.0]], "deadband_hz": 1.5}, "less than or equal to 1"),
        ({"curve": [[59.0, 0.0], [61.0, 1.0]], "deadband_hz": float("nan")}, "finite"),
        ({"curve": [[59.0, 0.0], [61.0, 1.0]], "baseline_w": 2e6}, "less than or equal to"),
        ({"curve": [[59.0, 0.0], [61.0, 1.0]], "ramp": 1}, "Extra inputs"),
    ],
)
def test_a_bad_service_is_refused_with_its_reason(service: dict[str, Any], words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        AuthorityParams(local_frequency=service)


def test_the_site_files_curve_and_a_mode_requests_have_one_contract() -> None:
    """Stated twice because programs/ may not import the command gate: the numbers must agree."""
    assert (authority.CURVE_POINTS, authority.CURVE_HZ) == (commands.CURVE_POINTS, commands.CURVE_HZ)
    assert authority.MAX_SETPOINT_W == commands.MAX_SETPOINT_W


def test_a_flat_curve_is_a_valid_service() -> None:
    assert LocalFrequency(curve=[(59.0, 0.0), (61.0, 0.0)]).baseline_w == 0.0


# (frequency, committed set point) under DROOP with the 11 kW rating: 11 kW per 3 Hz past the band
DROOP_STEPS = [
    (60.0, 500.0),
    (60.036, 500.0),  # the band's edge
    (60.336, 500.0 + 1100.0),
    (59.664, 500.0 - 1100.0),  # across zero
    (60.0, 500.0),
    (63.5, 11000.0),  # held at the rating beyond full response (dispatch's 11 kW bounds the sum)
    (56.5, -10500.0),
]


@pytest.mark.parametrize("who", ["backoffice", "site"])
def test_a_freq_droop_in_force_is_the_curve_of_every_frequency_request(who: str) -> None:
    r = site(ocpp=True, local_frequency=LOCAL | {"baseline_w": 500.0})
    other = (ask("backoffice", "frequency", curve=[[59.0, 9000.0], [61.0, -9000.0]], baseline_w=500.0),)
    run(r, BASE, *(other if who == "backoffice" else ()))
    run(r, {**BASE, "grid.frequency": 60.336})
    assert r.value("authority.curve_from") == ("request" if who == "backoffice" else "site")
    with_droop = {**BASE, "safety.der_freq_droop": json.dumps(DROOP)}
    for hz, expected in DROOP_STEPS:
        run(r, {**with_droop, "grid.frequency": hz})
        assert sp(r) == pytest.approx(expected, abs=1e-6), hz
        assert r.value("authority.curve_from") == "der_freq_droop"
    run(r, {**BASE, "grid.frequency": 60.336, "safety.der_freq_droop": ""})  # cleared: the request's own again
    assert r.value("authority.curve_from") == ("request" if who == "backoffice" else "site")


def test_an_unreadable_droop_leaves_the_requests_curve() -> None:
    r = site(ocpp=True, local_frequency=LOCAL)
    run(r, {**BASE, "grid.frequency": 60.3, "safety.der_freq_droop": "{not json"})
    assert r.value("authority.curve_from") == "site" and sp(r) == pytest.approx(5000.0)


def test_no_droop_without_a_frequency_request() -> None:
    r = site(ocpp=True)
    run(r, {**BASE, "grid.frequency": 60.3, "safety.der_freq_droop": json.dumps(DROOP)})
    assert r.value("authority.mode") == "plan" and r.value("authority.curve_from") == ""


SIGNAL_TAG = TagSpec("ocpp.afrr_signal", TagType.INT, "", Direction.SHARED, None, 10.0)
SIGNAL_CURVE = [[-100, -5000.0], [100, 5000.0]]
# (signal, committed set point): baseline 1 kW + 50 W per unit of signal, held beyond +-100
SIGNAL_STEPS = [(0, 1000.0), (40, 3000.0), (-60, -2000.0), (-20, 0.0), (500, 6000.0), (-500, -4000.0)]


def signal_site() -> Rig:
    progs = [
        Authority("authority", AuthorityParams(), SITE),
        Modes("modes", ModeParams(), SITE),
        Dispatch("dispatch", DispatchParams(ramp_w_per_s=1e7, plan_soc_tag=None), SITE),
    ]
    return Rig(progs, extra=(GRID, DROOP_TAG, SIGNAL_TAG, *OCPP))


def test_an_afrr_signal_reaches_the_committed_setpoint_in_the_cycle_that_sees_it() -> None:
    r = signal_site()
    run(
        r, {**BASE, "ocpp.afrr_signal": 0}, ask("backoffice", "frequency", signal_curve=SIGNAL_CURVE, baseline_w=1000.0)
    )
    assert r.value("mode.state") == "frequency"
    for signal, expected in SIGNAL_STEPS:
        run(r, {**BASE, "ocpp.afrr_signal": signal, "safety.der_freq_droop": json.dumps(DROOP)})
        assert sp(r) == pytest.approx(expected, abs=1e-6), signal  # a droop has no say over a signal curve
    r.step(BASE, bad=("ocpp.afrr_signal",))
    assert sp(r) == 0.0 and "ocpp.afrr_signal not good: 0 W" in r.value("authority.reason")


def test_frequency_and_signal_curves_add_up_on_the_baseline() -> None:
    r = signal_site()
    curve = [[59.5, -10000.0], [60.5, 10000.0]]
    run(r, {**BASE, "ocpp.afrr_signal": 40}, ask("backoffice", "frequency", curve=curve, signal_curve=SIGNAL_CURVE))
    run(r, {**BASE, "ocpp.afrr_signal": 40, "grid.frequency": 59.9})
    assert sp(r) == pytest.approx(2000.0 - 2000.0, abs=1e-6)
    run(r, {**BASE, "ocpp.afrr_signal": -40, "grid.frequency": 59.9})
    assert sp(r) == pytest.approx(-4000.0, abs=1e-6)
    r.step({**BASE, "ocpp.afrr_signal": 40}, bad=("grid.frequency",))
    assert sp(r) == 0.0


@pytest.mark.parametrize(
    ("signal_curve", "words"),
    [
        ([[1.5, 0.0], [2, 1.0]], "not an integer"),
        ([[2, 0.0], [1, 1.0]], "signals must increase strictly"),
        ([[0, 0.0]], "2-10"),
        ([[0, 0.0], [2**31, 1.0]], "outside"),
    ],
)
def test_a_bad_signal_curve_is_refused_at_the_gate(signal_curve: list[list[float]], words: str) -> None:
    with pytest.raises(Exception, match=words):
        ask("backoffice", "frequency", signal_curve=signal_curve)


def test_a_bad_service_in_the_site_file_names_file_line_and_key(tmp_path: Path) -> None:

    text = BASE_SITE.format(period_ms=20).replace(
        "programs:\n",
        "programs:\n  - type: authority\n    name: authority\n    params:\n      local_frequency:\n"
        "        curve: [[59.5, 10000], [60.5, -10000]]\n        deadband_hz: 0.036\n",
    )
    site = write_site(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        build_site(site)
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "curve: [[59.5" in t)
    assert any(
        i.file == str(site)
        and i.line == line
        and i.key == "programs[0].params.local_frequency.curve"
        and "power falls" in i.message
        for i in err.value.issues
    ), str(err.value)
