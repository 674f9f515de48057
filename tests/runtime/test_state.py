"""Persisted state: its shape, trips nobody claims, failed writes, atomic writes."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from runtime import statefile
from runtime.runner import Runner, RunOptions
from runtime.site import build_site
from tests.runtime.helpers import ROOT, cli, wait_for
from tests.safety.test_reset_trip import SITE as TRIP_SITE

LATCHED = {"latched": [["write_mismatch", "the inverter's setpoint read-back differs from what was written"]]}


def trip_site(tmp: Path, mismatch: bool, name: str = "safety") -> Path:
    site = tmp / "site.yaml"
    site.write_text(TRIP_SITE.format(mismatch="true" if mismatch else "false").replace("name: safety", f"name: {name}"))
    return site


def write_state(tmp: Path, content: Any) -> Path:
    path = tmp / "var" / "state.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


@pytest.mark.parametrize(
    "content",
    [
        "[1, 2, 3]",
        '"a string"',
        '{"version": 1, "components": {"safety": 5}}',
        '{"version": 7, "components": {}}',
        '{"version": 1, "components": {}, "extra": true}',
        '{"safety": {"latched": 5}}',  # the old shape, but a latch list that is not one
        "{not json",
    ],
)
def test_a_state_file_of_the_wrong_shape_refuses_the_start_with_exit_2(tmp_path: Path, content: str) -> None:
    site = trip_site(tmp_path, mismatch=False)
    write_state(tmp_path, content)
    res = cli("run", str(site), "--for", "1")
    assert res.returncode == 2, res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    assert "persisted state" in res.stderr and "state.json" in res.stderr


def test_the_state_file_before_its_schema_version_still_restores(tmp_path: Path) -> None:
    site = trip_site(tmp_path, mismatch=False)
    write_state(tmp_path, {"safety": LATCHED})  # what the runtime wrote before the schema version
    built = build_site(site)
    runner = Runner(built, RunOptions())
    states = runner.restore_state()
    assert states == {"safety": LATCHED}
    assert "write_mismatch" in built.interlocks[0].latches


@pytest.mark.parametrize("shape", ["versioned", "before the version"])
def test_a_trip_latched_under_a_renamed_interlock_refuses_the_start_until_cleared(tmp_path: Path, shape: str) -> None:
    site = trip_site(tmp_path, mismatch=False, name="protection")  # was "safety" when it latched
    write_state(
        tmp_path, {"version": 1, "components": {"safety": LATCHED}} if shape == "versioned" else {"safety": LATCHED}
    )
    res = cli("run", str(site), "--for", "1")
    assert res.returncode == 2, res.stderr[-2000:]
    assert "Traceback" not in res.stderr and "restored" not in res.stderr
    assert "'safety'" in res.stderr and "write_mismatch" in res.stderr and "'protection'" in res.stderr
    assert f"{statefile.CLEAR_COMMAND} {site}" in res.stderr  # how to clear it

    # The way the message names: offline, and only while no runtime runs.
    out = subprocess.run(
        [sys.executable, "-m", "runtime.statefile", "reset-trip", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "cleared 'safety'" in out.stdout and "write_mismatch" in out.stdout
    assert statefile.load(tmp_path / "var" / "state.json") == {}
    res = cli("run", str(site), "--for", "1")
    assert res.returncode == 0, res.stderr[-2000:]


def test_offline_reset_keeps_what_the_site_claims_unless_told_all(tmp_path: Path) -> None:
    site = trip_site(tmp_path, mismatch=False)
    state = write_state(tmp_path, {"version": 1, "components": {"safety": LATCHED, "gone": LATCHED}})
    lines: list[str] = []
    assert statefile.reset_offline(site, out=lines.append) == 0
    assert statefile.load(state) == {"safety": LATCHED}
    assert statefile.reset_offline(site, everything=True, out=lines.append) == 0
    assert statefile.load(state) == {}


def test_a_state_that_does_not_fit_its_component_refuses_the_start(tmp_path: Path) -> None:
    site = trip_site(tmp_path, mismatch=False)
    write_state(tmp_path, {"version": 1, "components": {"safety": {"latched": [["write_mismatch"]]}}})
    res = cli("run", str(site), "--for", "1")
    assert res.returncode == 2 and "Traceback" not in res.stderr and "does not fit" in res.stderr


# -- failed writes ---------------------------------------------------------------------------------------


class FailingDisk:
    """The state write fails at the call (root ignores file modes, so a read-only directory proves
    nothing here) until ``heal()``; every attempt is counted."""

    def __init__(self, err: int) -> None:
        self.err = err
        self.broken = True
        self.attempts = 0

    def __call__(self, path: Path, components: Mapping[str, Mapping[str, Any]]) -> None:
        self.attempts += 1
        if self.broken:
            raise OSError(self.err, os.strerror(self.err))
        statefile.write_atomic(path, components)


@pytest.fixture
def notify(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A stand-in for systemd's notification socket, for the in-process runner."""
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


def drain(sock: socket.socket) -> list[str]:
    got = []
    while True:
        try:
            got.append(sock.recv(65536).decode())
        except BlockingIOError:
            return got


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EROFS, errno.EPERM])
def test_a_latched_trip_that_cannot_be_persisted_holds_the_site_safe_until_it_is(
    tmp_path: Path, notify: socket.socket, err: int
) -> None:
    site = trip_site(tmp_path, mismatch=True)
    disk = FailingDisk(err)
    runner = Runner(build_site(site), RunOptions(for_s=120, status_line=False))
    runner.state_writer = disk  # type: ignore[assignment]
    t = threading.Thread(target=runner.run, daemon=True)
    t.start()
    try:
        res = wait_for(
            lambda: runner.last is not None and runner.last.image["runtime.persist_fault"].value and runner.last,
            30,
            "runtime.persist_fault",
        )
        assert res.image["safety.trip"].value == "write_mismatch"
        wait_for(lambda: disk.attempts >= 3, 30, "retries")  # retried, with backoff
        res = runner.last
        assert res.outputs["inverter.setpoint"] == 0.0 and res.outputs["inverter.enable"] is False
        status = runner.status()
        assert status["persist_fault"] is True and os.strerror(err) in status["persist_error"]
        wait_for(lambda: any("PERSIST FAULT" in m for m in drain(notify)), 15, "systemd STATUS= line")
        events = tmp_path / "var" / "events.jsonl"
        wait_for(lambda: events.exists() and '"kind": "persist_fault"' in events.read_text(), 10, "the event")
        assert not (tmp_path / "var" / "state.json").exists()

        disk.broken = False  # the disk heals: the trip is written and the hold released
        wait_for(lambda: not runner.last.image["runtime.persist_fault"].value, 30, "the write to succeed")
        assert "write_mismatch" in (tmp_path / "var" / "state.json").read_text()
        assert runner.status()["persist_fault"] is False
        wait_for(lambda: '"kind": "persist_ok"' in events.read_text(), 10, "the event of the release")
        assert runner.last.image["safety.trip"].value == "write_mismatch"  # still latched: operator reset
    finally:
        runner.stop()
        t.join(30)
    assert not t.is_alive()


def test_persister_retries_with_backoff_and_merges_what_came_meanwhile(tmp_path: Path) -> None:
    loop = asyncio.new_event_loop()
    th = threading.Thread(target=loop.run_forever, daemon=True)
    th.start()
    flips: list[bool] = []
    disk = FailingDisk(errno.ENOSPC)
    path = tmp_path / "state.json"
    p = statefile.Persister(path, {}, loop, write=disk, on_change=flips.append, backoff_s=(0.01, 0.04))
    try:
        p.submit({"a": {"latched": [["x", "y"]]}})
        wait_for(lambda: disk.attempts >= 4, 10, "retries")
        assert p.fault and flips == [True] and "No space left" in (p.error or "")
        p.submit({"b": {"n": 1}})
        p.submit({"a": None})  # a reset while the disk is full: only the latest state is written
        disk.broken = False
        wait_for(lambda: not p.fault, 10, "a successful write")
        assert flips == [True, False]
        assert statefile.load(path) == {"b": {"n": 1}}
    finally:
        loop.call_soon_threadsafe(p.close)
        loop.call_soon_threadsafe(loop.stop)
        th.join(5)


KILL_WRITER = """
import sys
from pathlib import Path
from runtime.statefile import write_atomic
path = Path(sys.argv[1])
big = "x" * 20000
n = 0
while True:
    n += 1
    write_atomic(path, {"safety": {"latched": [["write_mismatch", big]], "n": n}})
"""


@pytest.mark.slow
def test_kill_9_during_state_writes_never_leaves_a_half_written_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    rng = random.Random(14)
    for _ in range(50):
        proc = subprocess.Popen([sys.executable, "-c", KILL_WRITER, str(path)], cwd=ROOT)
        try:
            wait_for(lambda: path.exists(), 30, "a first write")
            threading.Event().wait(rng.uniform(0.0, 0.05))  # a random moment inside the write loop
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        state = statefile.load(path)  # whole and valid, or this raises
        assert state["safety"]["latched"][0][0] == "write_mismatch"


@pytest.mark.parametrize("request_w", [7000.0, -7000.0, 0.0])
def test_the_engine_holds_every_output_safe_while_state_is_not_durable(request_w: float) -> None:
    from tests.safety.rig import Rig

    rig = Rig()
    rig.settle()
    rig.req.setpoint = request_w
    rig.run(0.2)
    assert rig.out["inverter.setpoint"] == request_w and rig.out["inverter.enable"] is True
    rig.set(runtime__persist_fault=True)
    res = rig.step()
    assert [e.kind for e in res.events if e.source == "runtime"] == ["persist_fault"]
    for held in [res, *rig.run(2.0)]:
        assert held.outputs["inverter.setpoint"] == 0.0 and held.outputs["inverter.enable"] is False
    rig.set(runtime__persist_fault=False)
    res = rig.step()
    assert [e.kind for e in res.events if e.source == "runtime"] == ["persist_ok"]
    rig.run(400.0, step_s=1.0)  # whatever ramp safety asks for on the way back
    assert rig.out["inverter.setpoint"] == request_w and rig.out["inverter.enable"] is True


@pytest.mark.slow
def test_kill_9_of_the_runtime_keeps_a_latched_trip(tmp_path: Path) -> None:
    """kill -9 at random moments after a trip latched: every restart starts tripped, outputs safe."""
    from tests.runtime.helpers import read_tag, start_cli

    site = trip_site(tmp_path, mismatch=True)
    sock = tmp_path / "var" / "control.sock"
    state = tmp_path / "var" / "state.json"
    rng = random.Random(9)
    for i in range(3):
        if i == 1:
            site = trip_site(tmp_path, mismatch=False)  # the cause is gone: only the latch keeps the trip
        proc = start_cli("run", str(site))
        try:
            trip = wait_for(lambda: (t := read_tag(sock, "safety.trip")) and t["value"] and t, 30, "a trip")
            assert trip["value"] == "write_mismatch"
            assert read_tag(sock, "inverter.enable")["value"] is False
            wait_for(lambda: state.exists() and "write_mismatch" in state.read_text(), 10, "the trip on disk")
            threading.Event().wait(rng.uniform(0.0, 0.5))
        finally:
            proc.kill()
            proc.communicate(timeout=30)
        assert "write_mismatch" in json.dumps(statefile.load(state))
