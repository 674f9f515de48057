"""The SECC service's two guards, each on its own (docs/iso15118.md "The channel"): the runtime's
heartbeat watch (a service that stops answering is found after ``heartbeat_s``, its tags turn stale, it is
killed and restarted), and the service's own rule that a set point older than ``stale_s`` is 0 W."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from tests.runtime.helpers import stop_cli, wait_for
from tests.secc import netns
from tests.secc.test_sessions import _bridge_pid, _quality, _run, _tag

HEARTBEAT_S = 3.0  # the device's default


def _gone(pid: int) -> bool:
    """Not running: no such process, or a zombie its parent has not reaped yet."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_a_hung_service_is_found_after_heartbeat_s_killed_and_restarted(tmp_path: Path, pair: netns.Pair) -> None:
    proc, sock = _run(tmp_path, pair, heartbeat_s=HEARTBEAT_S)
    pid = _bridge_pid(pair.secc_if)
    assert pid is not None
    failed: AssertionError | None = None
    try:
        assert _quality(sock, "secc.state") == "good" and _tag(sock, "secc.alive") is True
        os.kill(pid, signal.SIGSTOP)  # hung: alive to the kernel, silent to the runtime
        t0 = time.monotonic()
        wait_for(lambda: _quality(sock, "secc.state") == "stale", HEARTBEAT_S + 10, "the SECC's tags to turn stale")
        assert time.monotonic() - t0 >= HEARTBEAT_S * 0.9  # not before a heartbeat was missed for heartbeat_s
        # the inputs age out and the device's watch gives up on the service, each after heartbeat_s
        wait_for(lambda: _tag(sock, "secc.alive") is False, 10, "the service to be declared hung")
        assert _quality(sock, "secc.session") == "stale"
        wait_for(lambda: _gone(pid), 10, "the hung service to be killed")
        wait_for(lambda: _bridge_pid(pair.secc_if) not in (None, pid), 30, "a new service")
        # (a stale tag keeps its last value: "Idle" counts only once it is good again)
        wait_for(
            lambda: _quality(sock, "secc.state") == "good" and _tag(sock, "secc.state") == "Idle",
            120,
            "the restarted SECC to listen",
        )
        assert _tag(sock, "secc.alive") is True and _quality(sock, "secc.session") == "good"
    except AssertionError as exc:
        failed = exc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        err = stop_cli(proc)
    assert failed is None, f"{failed}\nruntime log:\n{err[-3000:]}"
    assert f"silent for {HEARTBEAT_S:g} s (hung)" in err, err[-3000:]  # the watch, not an exit, ended the service


class Service:
    """The bridge on its own, on the runtime's end of its socket (as the driver starts it)."""

    def __init__(self, pair: netns.Pair, log: Path, stale_s: float) -> None:
        self.sock, theirs = socket.socketpair()
        cmd = ["ip", "netns", "exec", pair.secc_ns, str(netns.DEFAULT_PYTHON), str(netns.BRIDGE)]
        cmd += ["--fd", str(theirs.fileno()), "--iface", pair.secc_if, "--stale-s", str(stale_s)]
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(cmd, pass_fds=(theirs.fileno(),), stdout=out, stderr=subprocess.STDOUT)
        theirs.close()
        self.statuses: list[tuple[float, dict[str, Any]]] = []
        self.feeding = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._feed, daemon=True).start()

    def _read(self) -> None:
        with contextlib.suppress(OSError):  # the end: the socket closed under the reader
            for line in self.sock.makefile("rb"):
                msg = json.loads(line)
                if "status" in msg:
                    self.statuses.append((time.monotonic(), msg["status"]))

    def _feed(self) -> None:
        cmd = {"setpoint_w": -7000.0, "enable": True, "max_charge_w": 11000.0, "max_discharge_w": 11000.0}
        line = json.dumps(cmd).encode() + b"\n"
        while True:
            if self.feeding.wait(1.0):
                try:
                    self.sock.sendall(line)
                except OSError:
                    return
                time.sleep(0.1)  # the runtime's pace (it sends every cycle it changes, at least every 0.2 s)

    def setpoints_since(self, t: float) -> list[float]:
        return [st["setpoint_w"] for ts, st in list(self.statuses) if ts >= t]

    def close(self) -> None:
        self.sock.close()  # the service ends when the runtime's end closes
        netns.stop(self.proc)


def test_a_setpoint_older_than_stale_s_is_answered_as_0_w(tmp_path: Path, pair: netns.Pair) -> None:
    netns.require_peers()
    svc = Service(pair, tmp_path / "secc.log", stale_s=0.5)
    try:
        wait_for(lambda: svc.statuses, 30, "the service's first report")
        assert svc.setpoints_since(0.0)[-1] == 0.0  # nothing heard yet: 0 W
        svc.feeding.set()
        wait_for(lambda: -7000.0 in svc.setpoints_since(0.0), 10, "the fed set point")
        fresh = time.monotonic()
        wait_for(lambda: len(svc.setpoints_since(fresh)) >= 4, 10, "heartbeats while fed")
        assert set(svc.setpoints_since(fresh)) == {-7000.0}  # fed: the set point holds, beat after beat
        svc.feeding.clear()
        stopped = time.monotonic()
        wait_for(lambda: 0.0 in svc.setpoints_since(stopped), 10, "the unfed set point to age to 0 W")
        later = time.monotonic()
        wait_for(lambda: len(svc.setpoints_since(later)) >= 2, 10, "heartbeats after")
        assert set(svc.setpoints_since(later)) == {0.0}  # and stays 0 W while nothing is heard
        svc.feeding.set()  # heard again: the set point is back
        again = time.monotonic()
        wait_for(lambda: -7000.0 in svc.setpoints_since(again), 10, "the set point once fed again")
    finally:
        svc.close()
