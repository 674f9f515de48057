"""Watchdog supervision against the real thing: an AF_UNIX datagram NOTIFY_SOCKET the test binds, and a
FIFO or regular file standing in for /dev/watchdog. Time is driven with explicit now_ns values: no sleeps.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.config import HardwareWatchdog, WatchdogSection
from runtime.watchdog import Supervisor, WatchdogError

S = 1_000_000_000  # ns
MS = 1_000_000
PERIOD = 20 * MS  # the bundled site's 20 ms scan


class FakeClock:
    """Monotonic ns the test sets by hand (rate-limits STATUS)."""

    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


class NotifySocket:
    """What systemd listens on: a bound AF_UNIX datagram socket; read() drains what arrived."""

    def __init__(self, address: str, bind_to: str | bytes):
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(bind_to)
        self.sock.setblocking(False)

    def read(self) -> list[str]:
        got: list[str] = []
        while True:
            try:
                got.append(self.sock.recv(4096).decode("utf-8"))
            except BlockingIOError:
                return got

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    path = tmp_path / "notify"
    if len(str(path)) > 100:  # sun_path holds 108 bytes
        pytest.skip("temporary directory path too long for an AF_UNIX socket")
    ns = NotifySocket(str(path), str(path))
    yield ns
    ns.close()


@pytest.fixture
def abstract_notify_socket() -> Iterator[NotifySocket]:
    name = f"v2g-plc-test-{uuid.uuid4().hex}"
    ns = NotifySocket("@" + name, b"\0" + name.encode())
    yield ns
    ns.close()


def make(
    env: dict[str, str],
    *,
    systemd: bool = True,
    hardware: HardwareWatchdog | None = None,
    clock: FakeClock | None = None,
    log: logging.Logger | None = None,
) -> Supervisor:
    cfg = WatchdogSection(systemd=systemd, hardware=hardware)
    return Supervisor(cfg, log or logging.getLogger("test.watchdog"), env, clock=clock or FakeClock())


def run_cycles(
    sup: Supervisor, start_ns: int, end_ns: int, ns: NotifySocket | None = None, period: int = PERIOD
) -> list[tuple[int, str]]:
    """Healthy cycles every `period` from start (inclusive) to end (exclusive); (now_ns, message) pairs."""
    seen: list[tuple[int, str]] = []
    for t in range(start_ns, end_ns, period):
        sup.healthy_cycle(t)
        if ns is not None:
            seen.extend((t, m) for m in ns.read())
    return seen


# -- systemd notification protocol -----------------------------------------------------------------------


def test_ready_is_sent_once(notify_socket: NotifySocket) -> None:
    sup = make({"NOTIFY_SOCKET": notify_socket.address})
    assert notify_socket.read() == []  # nothing before the first good cycle
    sup.ready()
    sup.ready()
    sup.ready()
    assert notify_socket.read() == ["READY=1"]
    sup.close(clean=True)


def test_abstract_namespace_address(abstract_notify_socket: NotifySocket) -> None:
    sup = make({"NOTIFY_SOCKET": abstract_notify_socket.address})
    sup.ready()
    sup.stopping()
    assert abstract_notify_socket.read() == ["READY=1", "STOPPING=1"]
    sup.close(clean=True)


def test_status_is_rate_limited_to_one_per_second_and_the_latest_text_wins(notify_socket: NotifySocket) -> None:
    clock = FakeClock()
    sup = make({"NOTIFY_SOCKET": notify_socket.address}, clock=clock)
    sup.status("mode=idle")
    assert notify_socket.read() == ["STATUS=mode=idle"]
    clock.now = 300 * MS
    sup.status("mode=charging")
    clock.now = 600 * MS
    sup.status("mode=discharging")
    assert notify_socket.read() == []  # held back: less than 1 s since the last
    clock.now = 999 * MS
    sup.healthy_cycle(clock.now)
    assert notify_socket.read() == []
    clock.now = 1000 * MS
    sup.healthy_cycle(clock.now)  # a healthy cycle flushes the held text once due
    assert notify_socket.read() == ["STATUS=mode=discharging"]
    clock.now = 5 * S
    sup.status("mode=discharging")  # unchanged text: nothing to say
    assert notify_socket.read() == []
    sup.status("mode=idle")
    assert notify_socket.read() == ["STATUS=mode=idle"]
    sup.close(clean=True)


def test_status_is_one_line_of_utf8(notify_socket: NotifySocket) -> None:
    sup = make({"NOTIFY_SOCKET": notify_socket.address})
    sup.status("trip: over-temperature 81 °C\nREADY=1")
    # the newline must not smuggle a second assignment into the datagram
    assert notify_socket.read() == ["STATUS=trip: over-temperature 81 °C READY=1"]
    sup.close(clean=True)


def test_watchdog_keepalive_at_half_of_watchdog_usec(notify_socket: NotifySocket) -> None:
    env = {"NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": "2000000"}  # WatchdogSec=2s
    sup = make(env)
    assert sup.systemd_watchdog_interval_ns == 1 * S
    t0 = 7 * S  # any monotonic origin
    seen = run_cycles(sup, t0, t0 + 5 * S, notify_socket)
    assert [m for _, m in seen] == ["WATCHDOG=1"] * 5
    assert [t - t0 for t, _ in seen] == [0, 1 * S, 2 * S, 3 * S, 4 * S]
    sup.close(clean=True)


def test_keepalive_cadence_with_a_period_that_does_not_divide_the_interval(notify_socket: NotifySocket) -> None:
    env = {"NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": "3000000"}  # 1.5 s cadence
    sup = make(env)
    period = 7 * MS
    seen = run_cycles(sup, 0, 30 * S, notify_socket, period=period)
    times = [t for t, _ in seen]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(times) == 20
    assert all(1500 * MS <= g < 1500 * MS + period for g in gaps)  # never later than half + one cycle
    sup.close(clean=True)


def test_no_keepalive_while_the_scan_is_stalled(notify_socket: NotifySocket) -> None:
    env = {"NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": "2000000"}
    sup = make(env)
    sup.ready()
    assert notify_socket.read() == ["READY=1"]
    assert len(run_cycles(sup, 0, 3 * S, notify_socket)) == 3
    # The scan is stuck from 3 s to 10 s: healthy_cycle is not called, so nothing is sent, and systemd
    # (WatchdogSec=2s) would see no keepalive for 7 s and abort/restart the service.
    assert notify_socket.read() == []
    # Late cycles (overruns) are not healthy either: the runner does not call healthy_cycle for them.
    seen = run_cycles(sup, 10 * S, 12 * S, notify_socket)
    assert seen[0] == (10 * S, "WATCHDOG=1")  # back on time: keepalive at once
    sup.close(clean=True)


@pytest.mark.parametrize("pid_value, expect", [("1", 0), ("999999999", 0), ("self", 2)])
def test_watchdog_pid_must_name_this_process(notify_socket: NotifySocket, pid_value: str, expect: int) -> None:
    pid = str(os.getpid()) if pid_value == "self" else pid_value
    env = {"NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": pid}
    sup = make(env)
    sup.ready()
    msgs = [m for _, m in run_cycles(sup, 0, 2 * S)] + notify_socket.read()
    assert msgs.count("WATCHDOG=1") == expect
    assert "READY=1" in msgs  # the watchdog belongs to another process, notification still works
    sup.close(clean=True)


@pytest.mark.parametrize("usec", ["0", "soon", "-5"])
def test_bad_or_zero_watchdog_usec_sends_no_keepalive(notify_socket: NotifySocket, usec: str) -> None:
    sup = make({"NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": usec})
    assert sup.systemd_watchdog_interval_ns is None
    assert run_cycles(sup, 0, 3 * S, notify_socket) == []
    sup.close(clean=True)


def test_without_watchdog_usec_no_keepalive(notify_socket: NotifySocket) -> None:
    sup = make({"NOTIFY_SOCKET": notify_socket.address})
    assert run_cycles(sup, 0, 3 * S, notify_socket) == []
    sup.close(clean=True)


def test_missing_notify_socket_is_logged_once_and_everything_is_a_no_op(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="test.watchdog")
    sup = make({"WATCHDOG_USEC": "2000000"})
    sup.ready()
    sup.status("mode=idle")
    run_cycles(sup, 0, 3 * S)
    sup.stopping()
    sup.close(clean=True)
    notes = [r.getMessage() for r in caplog.records if "NOTIFY_SOCKET" in r.getMessage()]
    assert len(notes) == 1 and "not set" in notes[0]


def test_systemd_disabled_in_config_sends_nothing(notify_socket: NotifySocket) -> None:
    sup = make({"NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": "2000000"}, systemd=False)
    sup.ready()
    sup.status("x")
    run_cycles(sup, 0, 3 * S)
    sup.stopping()
    assert notify_socket.read() == []
    sup.close(clean=True)


def test_send_failure_is_logged_once_and_never_raises(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "notify"
    ns = NotifySocket(str(path), str(path))
    sup = make({"NOTIFY_SOCKET": ns.address, "WATCHDOG_USEC": "2000000"})
    sup.ready()
    assert ns.read() == ["READY=1"]
    ns.close()  # systemd went away: sends now fail with ECONNREFUSED
    caplog.set_level(logging.INFO, logger="test.watchdog")
    run_cycles(sup, 0, 5 * S)
    sup.status("still running")
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "failed" in errors[0].getMessage()
    sup.close(clean=True)


def test_unconnectable_notify_socket_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="test.watchdog")
    sup = make({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    sup.ready()
    sup.close(clean=True)
    assert any("cannot connect NOTIFY_SOCKET" in r.getMessage() for r in caplog.records)


def test_full_notify_queue_does_not_block_the_scan(notify_socket: NotifySocket) -> None:
    """systemd not reading (wedged): sends fail with EAGAIN at once instead of blocking the scan thread."""
    clock = FakeClock()
    sup = make({"NOTIFY_SOCKET": notify_socket.address}, clock=clock)
    for i in range(5000):  # far past the receiver's queue length (net.unix.max_dgram_qlen)
        clock.now = i * S
        sup.status(f"n={i}")
    assert 0 < len(notify_socket.read()) < 5000
    sup.close(clean=True)


# -- hardware watchdog against a device path the test provides -------------------------------------------


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """A FIFO as /dev/watchdog, with the test holding the reading end (non-blocking)."""
    path = tmp_path / "watchdog"
    os.mkfifo(path)
    rfd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    yield str(path), rfd
    os.close(rfd)


def drain(rfd: int) -> bytes:
    out = b""
    while True:
        try:
            chunk = os.read(rfd, 4096)
        except BlockingIOError:
            return out
        if not chunk:  # writer closed
            return out
        out += chunk


def test_hardware_keepalives_while_healthy_none_while_stalled_and_magic_close(
    fifo: tuple[str, int], caplog: pytest.LogCaptureFixture
) -> None:
    path, rfd = fifo
    caplog.set_level(logging.INFO, logger="test.watchdog")
    sup = make({}, hardware=HardwareWatchdog(device=path, timeout_s=4))  # fed every 1 s
    assert sup.hardware_timeout_s == 4
    assert any(
        "not a character device" in r.getMessage() and "WDIOC_SETTIMEOUT skipped" in r.getMessage()
        for r in caplog.records
    )
    assert drain(rfd) == b""  # opened (armed), not fed before a healthy cycle
    fed = []
    for t in range(0, 3 * S, PERIOD):
        sup.healthy_cycle(t)
        if drain(rfd):
            fed.append(t)
    assert fed == [0, 1 * S, 2 * S]  # every timeout/4, not every cycle
    # Stalled from 3 s to 20 s: nothing feeds it (the scan is the only caller).
    assert drain(rfd) == b""
    sup.healthy_cycle(20 * S)
    data = drain(rfd)
    assert len(data) == 1 and b"V" not in data
    sup.close(clean=True)
    assert drain(rfd) == b"V"  # magic close, then the writer is gone
    assert os.read(rfd, 1) == b""  # EOF: the device was closed


def test_hardware_unclean_close_leaves_it_armed(tmp_path: Path) -> None:
    dev = tmp_path / "watchdog.bin"
    dev.write_bytes(b"")
    sup = make({}, hardware=HardwareWatchdog(device=str(dev), timeout_s=8))  # fed every 2 s
    run_cycles(sup, 0, 10 * S)
    sup.close(clean=False)
    data = dev.read_bytes()
    assert len(data) == 5 and b"V" not in data  # 0, 2, 4, 6, 8 s and no magic close
    sup.close(clean=True)  # idempotent: already closed, writes nothing
    assert dev.read_bytes() == data


def test_hardware_and_systemd_together(notify_socket: NotifySocket, tmp_path: Path) -> None:
    dev = tmp_path / "watchdog.bin"
    dev.write_bytes(b"")
    env = {"NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": "10000000"}  # 5 s cadence
    sup = make(env, hardware=HardwareWatchdog(device=str(dev), timeout_s=2))  # 0.5 s cadence
    seen = run_cycles(sup, 0, 10 * S, notify_socket)
    assert [t for t, _ in seen] == [0, 5 * S]
    assert len(dev.read_bytes()) == 20
    sup.stopping()
    sup.close(clean=True)
    assert notify_socket.read() == ["STOPPING=1"]
    assert dev.read_bytes().endswith(b"V")


def test_hardware_device_missing_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-watchdog"
    with pytest.raises(WatchdogError, match=f"{missing}.*cannot open"):
        make({}, hardware=HardwareWatchdog(device=str(missing)))


def test_hardware_fifo_without_reader_fails_instead_of_hanging(tmp_path: Path) -> None:
    path = tmp_path / "watchdog"
    os.mkfifo(path)
    with pytest.raises(WatchdogError, match="cannot open"):
        make({}, hardware=HardwareWatchdog(device=str(path)))


def test_character_device_that_is_not_a_watchdog_is_refused() -> None:
    """/dev/null is a real character device: WDIOC_SETTIMEOUT is tried on it and fails with ENOTTY."""
    if not os.path.exists("/dev/null"):
        pytest.skip("no /dev/null")
    with pytest.raises(WatchdogError, match="not a watchdog device"):
        make({}, hardware=HardwareWatchdog(device="/dev/null"))


def test_status_from_another_thread_never_breaks_the_scan(notify_socket: NotifySocket) -> None:
    """The runner's status loop calls status() on the I/O thread while the scan runs healthy cycles."""
    import threading

    clock = FakeClock()
    sup = make({"NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": "2000000"}, clock=clock)
    errors: list[BaseException] = []
    received: list[str] = []

    def status_loop() -> None:
        try:
            for i in range(3000):
                sup.status(f"k={i}")
        except BaseException as exc:  # pragma: no cover - the assertion below reports it
            errors.append(exc)

    th = threading.Thread(target=status_loop)
    th.start()
    t = 0
    while th.is_alive():
        t += PERIOD
        clock.now = t
        sup.healthy_cycle(t)
        received += notify_socket.read()
    th.join()
    sup.healthy_cycle(t + 2 * S)
    received += notify_socket.read()
    sup.close(clean=True)
    assert errors == []
    assert received and all(m == "WATCHDOG=1" or m.startswith("STATUS=k=") for m in received)


# -- end to end: the real runner under a real NOTIFY_SOCKET ------------------------------------------------


@pytest.mark.slow
def test_runner_with_dead_field_devices_still_feeds_both_watchdogs(notify_socket: NotifySocket, tmp_path: Path) -> None:
    """`v2g-plc run` of the bundled site without its virtual plant: every Modbus device is dead (a field
    fault), yet the scan is alive and on time, so systemd gets READY=1 and keepalives and the hardware
    watchdog is fed, then disarmed on the clean stop. A dead meter gives bad tags and a trip, not a
    restart or a reboot loop."""
    import json
    import subprocess
    import sys

    exe = Path(sys.executable).parent / "v2g-plc"
    if not exe.exists():
        pytest.skip("the v2g-plc console script is not installed in this environment")
    from tests.runtime.helpers import bundled_site_copy

    dev = tmp_path / "watchdog.bin"
    dev.write_bytes(b"")
    # free ports: with the plant off, the devices must be dead, not another checkout's plant on 15502
    site_file = bundled_site_copy(
        tmp_path,
        state_dir=str(tmp_path / "state"),
        watchdog={"systemd": True, "hardware": {"device": str(dev), "timeout_s": 4}},
    )
    tags_file = tmp_path / "tags.json"
    env = {k: v for k, v in os.environ.items() if k not in ("WATCHDOG_PID", "NOTIFY_SOCKET", "WATCHDOG_USEC")}
    env.update(NOTIFY_SOCKET=notify_socket.address, WATCHDOG_USEC="1000000")
    proc = subprocess.run(
        [str(exe), "run", str(site_file), "--no-plant", "--for", "2", "--dump-tags", str(tags_file)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    msgs = notify_socket.read()
    assert msgs.count("READY=1") == 1
    assert msgs[-1] == "STOPPING=1"
    assert "WATCHDOG=1" in msgs
    assert set(msgs) <= {"READY=1", "WATCHDOG=1", "STOPPING=1"} | {m for m in msgs if m.startswith("STATUS=")}
    fed = dev.read_bytes()
    assert fed.endswith(b"V") and len(fed) >= 2 and b"V" not in fed[:-1]
    tags = json.loads(tags_file.read_text())["tags"]
    assert tags["meter.power"]["quality"] != "good"  # the field fault is visible where it belongs
