"""Session failures provoked for real between two namespaces become counted tags and events with their
reason (docs/iso15118.md "Session failures"): an EV that finds the SECC and then says nothing, an EV
whose protocol list the SECC does not offer, and the link cut mid-session."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.runtime.helpers import read_jsonl, stop_cli, wait_for
from tests.secc import netns
from tests.secc.test_sessions import SESSION_S, _in_charge_loop, _run, _tag

SILENT_EV = Path(__file__).with_name("silent_ev.py")
# The SECC waits this long for SupportedAppProtocolReq once the EV's TCP connection is up (the package's
# Timeouts.V2G_EVCC_COMMUNICATION_SETUP_TIMEOUT, ISO 15118-2 [V2G2-723]: 20 s), then 2 s before it
# reports the end (comm_session.stop).
SETUP_TIMEOUT_S = 20.0


def start_silent_ev(pair: netns.Pair, log: Path, *args: str) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            ["ip", "netns", "exec", pair.ev_ns, sys.executable, str(SILENT_EV), pair.ev_if, *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def warnings(tmp: Path) -> list[dict[str, Any]]:
    path = tmp / "var" / "events.jsonl"
    if not path.exists():
        return []
    return [e for e in read_jsonl(path) if e["kind"] == "warning" and e["source"] == "secc_link"]


def test_an_ev_that_never_speaks_is_a_handshake_timeout_and_a_good_session_resets_the_run(
    tmp_path: Path, pair: netns.Pair
) -> None:
    proc, sock = _run(tmp_path, pair, request_w=7000.0)
    silent = start_silent_ev(pair, tmp_path / "silent.log")
    ev: subprocess.Popen[bytes] | None = None
    try:
        assert _tag(sock, "secc.failures") == 0 and _tag(sock, "secc.handshake_timeouts") == 0
        wait_for(lambda: _tag(sock, "secc.failures") == 1, SETUP_TIMEOUT_S + 40, "the handshake timeout")
        failure = _tag(sock, "secc.failure")
        assert failure.startswith("handshake_timeout: TimeoutError"), failure
        assert "SupportedAppProtocolReq" in failure
        assert _tag(sock, "secc.handshake_timeouts") == 1
        wait_for(lambda: warnings(tmp_path), 5, "the failure's event")
        (event,) = warnings(tmp_path)
        assert event["data"] == {"failure": "handshake_timeout", "handshake_timeouts": 1}
        assert "ISO 15118 session failed: handshake_timeout" in event["message"]
        # the next EV gets through: the run of handshake failures ends, the failure count stays
        netns.stop(silent)
        ev = netns.start_ev(pair, netns.ev_config("-20 DC BPT", tmp_path), tmp_path / "ev.log")
        wait_for(lambda: ev.poll() is not None, SESSION_S, "the EV to finish its session")
        assert ev.returncode == 0
        wait_for(lambda: _tag(sock, "secc.handshake_timeouts") == 0, 10, "the run of failures to end")
        assert _tag(sock, "secc.failures") == 1 and len(warnings(tmp_path)) == 1
    finally:
        netns.stop(silent)
        if ev is not None:
            netns.stop(ev)
        stop_cli(proc)


def test_an_ev_without_a_protocol_the_secc_offers_is_a_protocol_failure(tmp_path: Path, pair: netns.Pair) -> None:
    proc, sock = _run(tmp_path, pair, protocols=["DIN_SPEC_70121"])
    ev = netns.start_ev(pair, netns.ev_config("-20 DC BPT", tmp_path), tmp_path / "ev.log")  # -20 only
    try:
        wait_for(lambda: _tag(sock, "secc.failures") == 1, SESSION_S, "the failed negotiation")
        failure = _tag(sock, "secc.failure")
        assert failure.startswith("protocol: SupportedAppProtocol negotiation failed"), failure
        assert _tag(sock, "secc.handshake_timeouts") == 0  # the EV's protocols, not the link
        wait_for(lambda: warnings(tmp_path), 5, "the failure's event")
        assert warnings(tmp_path)[0]["data"]["failure"] == "protocol"
        wait_for(lambda: _tag(sock, "secc.session") is False, 10, "the status after the end")  # the next line
    finally:
        netns.stop(ev)
        stop_cli(proc)
    res = netns.decoded(tmp_path / "ev.log", "supportedAppProtocolRes")
    assert res and res[0]["ResponseCode"].startswith("Failed"), res  # ISO 15118-20 Failed_NoNegotiation


@pytest.mark.slow
def test_the_link_cut_mid_session_is_a_timeout_after_power_not_a_handshake_failure(
    tmp_path: Path, pair: netns.Pair
) -> None:
    proc, sock = _run(tmp_path, pair, request_w=-7000.0)
    ev = netns.start_ev(pair, netns.ev_config("-20 DC BPT", tmp_path, chargeLoopCycle=1000), tmp_path / "ev.log")
    try:
        wait_for(lambda: _in_charge_loop(sock), SESSION_S, "the DC charge loop")
        subprocess.run(["ip", "-n", pair.ev_ns, "link", "set", pair.ev_if, "down"], check=True, timeout=10)
        # the SECC waits a sequence timeout for the next request (ISO 15118-20: 60 s), then ends the session
        wait_for(lambda: _tag(sock, "secc.failures") == 1, 60 + 30, "the timeout")
        assert _tag(sock, "secc.failure").startswith("timeout: TimeoutError")
        assert _tag(sock, "secc.handshake_timeouts") == 0  # power transfer was under way: not a weak handshake
        wait_for(lambda: _tag(sock, "secc.session") is False, 10, "the status after the end")  # the next line
        assert _tag(sock, "secc.soc") is None
    finally:
        netns.stop(ev)
        stop_cli(proc)
