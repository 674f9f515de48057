"""Sessions that the charger's own state decides, between two namespaces (docs/iso15118.md "Contactor, cable
check and CP state"): the SECC's contactor, cable check and CP hooks read the runtime's tags (memory inputs
here, standing for the charger map's points). A failed insulation verdict fails the DC cable check with the
protocol's code; an open contactor keeps the session out of power delivery; all good, the session runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.runtime.helpers import stop_cli, wait_for
from tests.secc import netns
from tests.secc.test_failures import warnings
from tests.secc.test_sessions import SESSION_S, _run, _tag

GOOD = {"contactor_closed": True, "isolation": "valid", "cp_state": "C2"}


def _failed(sock: Path) -> Any:
    return (_tag(sock, "secc.failures") or 0) >= 1


def test_a_dc_cable_check_fails_on_the_runtimes_isolation_fault(tmp_path: Path, pair: netns.Pair) -> None:
    proc, sock = _run(tmp_path, pair, request_w=7000.0, charger={**GOOD, "isolation": "fault"})
    ev_log = tmp_path / "ev.log"
    ev = netns.start_ev(pair, netns.ev_config("-20 DC BPT", tmp_path), ev_log)
    try:
        wait_for(lambda: _failed(sock), SESSION_S, "the failed cable check")
        failure = _tag(sock, "secc.failure")
        assert failure.startswith("evse: Isolation Failure: IsolationLevel.FAULT"), failure
        assert _tag(sock, "secc.handshake_timeouts") == 0  # the charger's, not the link's
        wait_for(lambda: warnings(tmp_path), 5, "the failure's event")
        assert warnings(tmp_path)[0]["data"]["failure"] == "evse"
    finally:
        netns.stop(ev)
        stop_cli(proc)
    checks = netns.decoded(ev_log, "DC_CableCheckRes")
    assert checks and checks[-1]["ResponseCode"] == "FAILED"  # ISO 15118-20: the cable check's own answer
    assert not netns.decoded(ev_log, "DC_PreChargeRes") and not netns.decoded(ev_log, "PowerDeliveryRes")


@pytest.mark.parametrize(
    ("config", "answer", "code", "reason"),
    [
        ("-20 DC BPT", "DC_CableCheckRes", "FAILED", "evse: Contactor didnt close for Cable Check"),
        ("-20 AC BPT", "PowerDeliveryRes", "FAILED_ContactorError", "evse: Contactor didn't close"),
    ],
)
def test_an_open_contactor_in_the_tags_keeps_the_session_out_of_power_delivery(
    tmp_path: Path, pair: netns.Pair, config: str, answer: str, code: str, reason: str
) -> None:
    proc, sock = _run(tmp_path, pair, request_w=-7000.0, charger={**GOOD, "contactor_closed": False})
    ev_log = tmp_path / "ev.log"
    ev = netns.start_ev(pair, netns.ev_config(config, tmp_path), ev_log)
    try:
        wait_for(lambda: _failed(sock), SESSION_S, "the session to fail on the contactor")
        assert _tag(sock, "secc.failure").startswith(reason), _tag(sock, "secc.failure")
    finally:
        netns.stop(ev)
        stop_cli(proc)
    answers = netns.decoded(ev_log, answer)
    assert answers and answers[-1]["ResponseCode"] == code
    assert not netns.decoded(ev_log, "DC_ChargeLoopRes") and not netns.decoded(ev_log, "AC_ChargeLoopRes")
    if config.endswith("DC BPT"):
        assert not netns.decoded(ev_log, "PowerDeliveryRes")  # never got as far as asking for power


def test_with_the_charger_ready_in_the_tags_a_dc_session_runs(tmp_path: Path, pair: netns.Pair) -> None:
    proc, sock = _run(tmp_path, pair, request_w=-7000.0, charger=GOOD)
    ev_log = tmp_path / "ev.log"
    ev = netns.start_ev(pair, netns.ev_config("-20 DC BPT", tmp_path), ev_log)
    try:
        wait_for(lambda: ev.poll() is not None, SESSION_S, "the EV to finish its session")
        assert ev.returncode == 0
        wait_for(lambda: _tag(sock, "secc.sessions") == 1 and _tag(sock, "secc.session") is False, 10, "its end")
        assert _tag(sock, "secc.failures") == 0
    finally:
        netns.stop(ev)
        stop_cli(proc)
    assert netns.decoded(ev_log, "DC_CableCheckRes")[-1]["EVSEProcessing"] == "Finished"
    loops = netns.decoded(ev_log, "DC_ChargeLoopRes")
    assert loops and netns.rational(loops[-1]["BPT_Scheduled_DC_CLResControlMode"]["EVSEMaximumDischargePower"]) == 7000
