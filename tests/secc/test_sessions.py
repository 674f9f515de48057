"""ISO 15118-20 sessions against the runtime's SECC, between two network namespaces (docs/iso15118.md).

Each test runs the real runtime (`v2g-plc run`) with the SECC device, and the `iso15118` package's own EV
simulator on the other end of a veth pair: what the EV decodes is read from its message log.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.runtime.helpers import control, read_tag, start_cli, stop_cli, wait_for
from tests.secc import netns, site

SESSION_S = 90.0  # a -20 session takes ~15 s here with the bounded JVM; generous for a loaded CI machine


def _tag(sock: Path, name: str) -> Any:
    t = read_tag(sock, name)
    return None if t is None else t.get("value")


def _quality(sock: Path, name: str) -> str | None:
    t = read_tag(sock, name)
    return None if t is None else t.get("quality")


def start_runtime(path: Path) -> subprocess.Popen[str]:
    """`v2g-plc run SITE` (runtime.secc is one of the registry's plug-in packages)."""
    return start_cli("run", str(path))


def _run(tmp_path: Path, pair: netns.Pair, **kw: Any) -> tuple[Any, Path]:
    path = site.write(tmp_path, pair, **kw)
    proc = start_runtime(path)
    sock = tmp_path / "control.sock"
    try:
        wait_for(lambda: proc.poll() is not None or _tag(sock, "secc.state") == "Idle", 180, "the SECC to listen")
        assert proc.poll() is None
    except AssertionError:
        err = stop_cli(proc)
        raise AssertionError(f"SECC never came up:\n{err[-3000:]}") from None
    return proc, sock


@pytest.mark.parametrize(
    ("config", "protocol", "loop_res"),
    [
        ("-20 DC BPT", "ISO_15118_20_DC", "DC_ChargeLoopRes"),
        ("-20 AC BPT", "ISO_15118_20_AC", "AC_ChargeLoopRes"),
    ],
)
def test_bpt_session_completes_and_the_ev_gets_the_discharge_setpoint(
    tmp_path: Path, pair: netns.Pair, config: str, protocol: str, loop_res: str
) -> None:
    proc, sock = _run(tmp_path, pair, request_w=-7000.0)
    ev_log = tmp_path / "ev.log"
    ev = netns.start_ev(pair, netns.ev_config(config, tmp_path), ev_log)
    try:
        # EV data lands in the tags while the session runs
        wait_for(lambda: _tag(sock, "secc.session") is True, SESSION_S, "a session")
        wait_for(lambda: _tag(sock, "secc.soc") is not None, SESSION_S, "the EV's SoC")
        assert _tag(sock, "secc.protocol") == protocol
        assert _tag(sock, "secc.ev_setpoint_w") == -7000.0
        wait_for(lambda: ev.poll() is not None, SESSION_S, "the EV to finish its session")
        assert ev.returncode == 0
        # cleared at session end, and the end is reported with its reason
        wait_for(lambda: _tag(sock, "secc.session") is False, 10, "the session's end")
        assert _tag(sock, "secc.soc") is None and _tag(sock, "secc.protocol") == ""
        assert _tag(sock, "secc.ev_max_charge_w") is None and _tag(sock, "secc.ev_max_discharge_w") is None
        assert "terminated" in (_tag(sock, "secc.end_reason") or "").lower()
        assert _tag(sock, "secc.sessions") == 1
    finally:
        netns.stop(ev)
        err = stop_cli(proc)
    loops = netns.decoded(ev_log, loop_res)
    assert loops, f"the EV never decoded a {loop_res}:\n{err[-2000:]}"
    for res in loops:  # every charge loop answer the EV got carried the scan's -7000 W
        if protocol.endswith("DC"):
            mode = (
                res["BPT_Scheduled_DC_CLResControlMode"]
                if "BPT_Scheduled_DC_CLResControlMode" in res
                else res["BPT_Dynamic_DC_CLResControlMode"]
            )
            assert netns.rational(mode["EVSEMaximumDischargePower"]) == 7000.0
            assert netns.rational(mode["EVSEMinimumDischargePower"]) == 7000.0
            assert netns.rational(mode["EVSEMaximumChargePower"]) == 0.0
        else:
            mode = res.get("BPT_Scheduled_AC_CLResControlMode") or res["BPT_Dynamic_AC_CLResControlMode"]
            assert netns.rational(mode["EVSETargetActivePower"]) == -7000.0


def _in_charge_loop(sock: Path) -> bool:
    return "ChargeLoop" in str(_tag(sock, "secc.state"))


def test_a_trip_mid_session_zeroes_the_setpoint_and_ends_the_session(tmp_path: Path, pair: netns.Pair) -> None:
    proc, sock = _run(tmp_path, pair, request_w=-7000.0)
    ev_log = tmp_path / "ev.log"
    # a long charge loop, so that the trip lands inside it
    ev = netns.start_ev(pair, netns.ev_config("-20 DC BPT", tmp_path, chargeLoopCycle=1000), ev_log)
    try:
        wait_for(lambda: _in_charge_loop(sock), SESSION_S, "the DC charge loop")
        assert _tag(sock, "secc.setpoint_w") == -7000.0
        control(sock, {"cmd": "force", "tag": "test.trip", "value": "over_voltage"})
        # the scan zeroes what the EV is told at once; the EV is told to stop and ends the session itself
        wait_for(lambda: _tag(sock, "secc.terminate") is True, 5, "the trip to reach the SECC's outputs")
        assert _tag(sock, "secc.setpoint_w") == 0.0 and _tag(sock, "secc.enable") is False
        wait_for(lambda: ev.poll() is not None, 60, "the EV to end its session")
        assert ev.returncode == 0
        wait_for(lambda: _tag(sock, "secc.session") is False, 10, "the session's end")
    finally:
        netns.stop(ev)
        stop_cli(proc)
    loops = netns.decoded(ev_log, "DC_ChargeLoopRes")
    told = [r for r in loops if r.get("EVSEStatus", {}).get("EVSENotification") == "Terminate"]
    assert told, "the EV was never told to terminate"
    after = loops[loops.index(told[0]) :]
    for res in after:
        assert netns.rational(res["BPT_Scheduled_DC_CLResControlMode"]["EVSEMaximumDischargePower"]) == 0.0
    stops = netns.decoded(ev_log, "SessionStopRes")
    assert stops and stops[-1]["ResponseCode"] == "OK"


def _bridge_pid(iface: str) -> int | None:
    """The SECC service of this test's interface (unique per test), from /proc."""
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            argv = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(a.endswith(b"services/secc/bridge.py") for a in argv) and iface.encode() in argv:
            return int(d.name)
    return None


def test_the_service_killed_mid_session_is_restarted_and_its_tags_were_stale(tmp_path: Path, pair: netns.Pair) -> None:
    proc, sock = _run(tmp_path, pair, request_w=-7000.0)
    ev = netns.start_ev(pair, netns.ev_config("-20 DC BPT", tmp_path, chargeLoopCycle=1000), tmp_path / "ev.log")
    try:
        wait_for(lambda: _in_charge_loop(sock), SESSION_S, "the DC charge loop")
        assert _quality(sock, "secc.soc") == "good"
        pid = _bridge_pid(pair.secc_if)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: _quality(sock, "secc.soc") == "stale", 5, "the SECC's tags to turn stale")
        assert _tag(sock, "secc.alive") is False
        # restarted with backoff, a new process, reporting again (no session: the EV's was cut)
        wait_for(lambda: _tag(sock, "secc.alive") is True, 60, "the restarted SECC's first report")
        wait_for(lambda: _tag(sock, "secc.state") == "Idle", 90, "the restarted SECC to listen")
        assert _bridge_pid(pair.secc_if) not in (None, pid)
        assert _quality(sock, "secc.session") == "good" and _tag(sock, "secc.session") is False
    finally:
        netns.stop(ev)
        stop_cli(proc)


# The other shipped EV configurations: the fallbacks the SECC offers (-20 without BPT, -2, DIN). Slow tier.
@pytest.mark.slow
@pytest.mark.parametrize(
    ("config", "protocol"),
    [
        ("-20 DC", "ISO_15118_20_DC"),
        ("-20 AC", "ISO_15118_20_AC"),
        ("-2 DC", "ISO_15118_2"),
        ("-2 AC", "ISO_15118_2"),
        ("DIN", "DIN_SPEC_70121"),
    ],
)
def test_every_other_ev_configuration_completes_a_session(
    tmp_path: Path, pair: netns.Pair, config: str, protocol: str
) -> None:
    proc, sock = _run(tmp_path, pair, request_w=7000.0)
    ev = netns.start_ev(pair, netns.ev_config(config, tmp_path), tmp_path / "ev.log")
    try:
        wait_for(lambda: _tag(sock, "secc.session") is True, SESSION_S, "a session")
        wait_for(lambda: _tag(sock, "secc.protocol") != "", SESSION_S, "the protocol agreed")
        assert _tag(sock, "secc.protocol") == protocol
        wait_for(lambda: ev.poll() is not None, SESSION_S, "the EV to finish its session")
        assert ev.returncode == 0
        wait_for(lambda: _tag(sock, "secc.session") is False, 10, "the session's end")
        assert _tag(sock, "secc.sessions") == 1 and _tag(sock, "secc.soc") is None
    finally:
        netns.stop(ev)
        stop_cli(proc)
