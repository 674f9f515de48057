"""The task process: killed or hung, it never stops the scan; its tags turn stale; it comes back."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.runtime.helpers import control, read_tag, start_cli, wait_for, write_site

TASKS = """\
commissioning: true
task_process:
  heartbeat_s: 1.0
  restart_backoff_s: 0.2
  restart_backoff_max_s: 1.0
tasks:
  - type: example_counter
    name: counter
    params: {prefix: counter, interval_s: 0.05, stale_after_s: 0.5}
"""


@pytest.fixture
def running(tmp_path: Path):
    site = write_site(tmp_path, extra=TASKS)
    proc = start_cli("run", str(site))
    sock = tmp_path / "var" / "control.sock"
    yield proc, sock
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=20)
    except Exception:
        proc.kill()
        _, err = proc.communicate()
    print(err[-4000:])  # shown by pytest when the test failed


def good_pid(sock: Path) -> int | None:
    t = read_tag(sock, "counter.pid")
    return t["value"] if t and t["quality"] == "good" and t["value"] else None


def alive(sock: Path) -> tuple[bool, bool]:
    """The site-wide alive tag and the planning group's, from one cycle's image."""
    tags = control(sock, {"cmd": "read", "tags": ["runtime.task_process_alive", "runtime.tasks.planning.alive"]})[
        "tags"
    ]
    return tags["runtime.task_process_alive"]["value"], tags["runtime.tasks.planning.alive"]["value"]


def cycle(sock: Path) -> int:
    return read_tag(sock, "runtime.overruns")["k"]


@pytest.mark.parametrize("how", ["kill", "hang"])
def test_task_process_death_or_hang_keeps_the_scan_and_stales_its_tags(running, how: str) -> None:
    proc, sock = running
    pid = wait_for(lambda: good_pid(sock), what="the task process to write its tags")
    assert pid != proc.pid  # tasks run in a process of their own
    # the task sees the scan's published image: it echoes the cycle clock back
    wait_for(lambda: (read_tag(sock, "counter.seen_k") or {}).get("value", 0) > 0, what="image publication")
    os.kill(pid, signal.SIGKILL if how == "kill" else signal.SIGSTOP)
    try:
        k0 = cycle(sock)
        wait_for(lambda: read_tag(sock, "counter.count")["quality"] == "stale", what="shared tags to turn stale")
        wait_for(lambda: alive(sock) == (False, False), what="alive=false, and its group's (the only one)")
        assert cycle(sock) > k0  # the scan kept running
        assert proc.poll() is None
        new = wait_for(lambda: (p := good_pid(sock)) and p != pid and p, timeout=30, what="a restarted task process")
        assert new != pid
        wait_for(lambda: read_tag(sock, "counter.count")["quality"] == "good", what="fresh tags again")
        wait_for(lambda: alive(sock) == (True, True), what="alive again")
    finally:
        if how == "hang":
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_failing_task_is_restarted_inside_the_task_process(tmp_path: Path) -> None:
    site = write_site(tmp_path, extra=TASKS.replace("stale_after_s: 0.5}", "stale_after_s: 0.5, fail_every: 3}"))
    proc = start_cli("run", str(site), "--for", "8")
    sock = tmp_path / "var" / "control.sock"
    pid = wait_for(lambda: good_pid(sock), what="first writes")
    # count goes 1,2,3 then the task raises and restarts from 1: the count never exceeds 3
    seen = set()

    def restarted() -> bool:
        t = read_tag(sock, "counter.count")
        if t:
            seen.add(t["value"])
        return len(seen) >= 3 and 1 in seen

    wait_for(restarted, what="counts across a restart")
    assert max(seen) <= 3
    # same process: the task was restarted, not the process (between restarts its tags may be stale)
    assert wait_for(lambda: good_pid(sock), 10, "a good pid") == pid
    _, err = proc.communicate(timeout=30)
    assert "task counter failed; restarting" in err


def test_control_socket_rejects_bad_commands_and_forces_are_visible(running) -> None:
    _proc, sock = running
    wait_for(lambda: read_tag(sock, "ev.soc") is not None, what="control socket")
    assert control(sock, {"cmd": "launch_missiles"})["ok"] is False
    assert control(sock, {"cmd": "force", "tag": "no.such", "value": 1})["ok"] is False
    assert control(sock, {"cmd": "force", "tag": "ev.soc", "value": "abc"})["ok"] is False
    assert control(sock, {"cmd": "force", "tag": "ev.soc", "value": 2.0})["ok"] is True
    t = wait_for(
        lambda: (t := read_tag(sock, "inverter.setpoint")) and t["value"] == 11000.0 and t,
        what="forced input to reach the output through safety's clamp",
    )
    assert read_tag(sock, "ev.soc")["forced"] is True
    assert control(sock, {"cmd": "unforce", "tag": "ev.soc"})["ok"] is True
    wait_for(lambda: read_tag(sock, "inverter.setpoint")["value"] == 5000.0, what="force released")
    assert t["value"] == 11000.0


@pytest.mark.parametrize("how", ["kill", "hang"])
def test_shared_tags_turn_stale_at_once_when_the_task_process_is_lost(tmp_path: Path, how: str) -> None:
    """Age limits of shared tags are minutes for a plan or a price: far too long for safety to learn that
    nobody maintains them. With a 300 s age limit, the tags must still turn stale within seconds."""
    site = write_site(tmp_path, extra=TASKS.replace("stale_after_s: 0.5", "stale_after_s: 300"))
    proc = start_cli("run", str(site))
    sock = tmp_path / "var" / "control.sock"
    pid = None
    try:
        pid = wait_for(lambda: good_pid(sock), what="the task process to write its tags")
        k0 = wait_for(lambda: read_tag(sock, "counter.count"), what="a count")["k"]
        os.kill(pid, signal.SIGKILL if how == "kill" else signal.SIGSTOP)
        # heartbeat_s is 1 s: the supervisor notices within about that; ageing would take 300 s
        stale = wait_for(
            lambda: (t := read_tag(sock, "counter.count")) and t["quality"] == "stale" and t, 15, "stale tags"
        )
        assert stale["k"] > k0 and stale["value"] is not None  # the last value is kept, marked stale
        assert read_tag(sock, "counter.pid")["quality"] == "stale"
        wait_for(lambda: (p := good_pid(sock)) and p != pid, 30, "a restarted task process")
        wait_for(lambda: read_tag(sock, "counter.count")["quality"] == "good", 10, "fresh tags again")
    finally:
        if pid is not None and how == "hang":
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=20)
        except Exception:
            proc.kill()
            proc.communicate()
