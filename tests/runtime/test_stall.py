"""End to end: a stalled scan starves both watchdogs; an on-time scan feeds them again."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

from tests.runtime.helpers import control, read_tag, start_cli, wait_for, write_site

SITE = """\
site: {{name: stall, nominal_voltage: 240.0, nominal_frequency: 60}}
scan: {{period_ms: 20, overrun_fault_after: 3}}
devices:
  - name: dev
    type: memory
    params:
      tags:
        - {{name: test.stall, type: bool, value: false}}
        - {{name: inverter.setpoint, unit: W, direction: output, value: 0.0}}
programs:
  - {{type: example_stall, name: stall, params: {{tag: test.stall, ms: 50}}}}
safety:
  - {{type: example_clamp, name: clamp, params: {{tag: inverter.setpoint, limit: 11000}}}}
watchdog:
  systemd: true
  hardware: {{device: {hw}, timeout_s: 1}}
"""


def test_stalled_scan_starves_the_watchdogs(tmp_path: Path) -> None:
    notify = tmp_path / "n"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify))
    sock.setblocking(False)
    hw = tmp_path / "watchdog"
    hw.write_bytes(b"")
    site = write_site(tmp_path, SITE.format(hw=hw), extra="commissioning: true\n")
    env = {"NOTIFY_SOCKET": str(notify), "WATCHDOG_USEC": "200000"}  # keepalive every 0.1 s
    proc = start_cli("run", str(site), env=env)
    ctl = tmp_path / "var" / "control.sock"

    def drain() -> list[str]:
        got = []
        while True:
            try:
                got.append(sock.recv(4096).decode())
            except BlockingIOError:
                return got

    def overruns() -> int:
        return read_tag(ctl, "runtime.overruns")["value"]

    try:
        msgs: list[str] = []
        wait_for(lambda: (msgs.extend(drain()) or True) and msgs.count("WATCHDOG=1") >= 3, what="keepalives")
        assert "READY=1" in msgs
        fed = hw.stat().st_size
        assert fed > 0
        assert control(ctl, {"cmd": "force", "tag": "test.stall", "value": True})["ok"]
        wait_for(lambda: read_tag(ctl, "runtime.overrun_fault")["value"] is True, what="overrun fault")
        drain()
        size = hw.stat().st_size
        n0 = overruns()
        wait_for(lambda: overruns() >= n0 + 10, what="ten more stalled cycles (> 0.5 s)")
        assert "WATCHDOG=1" not in drain()  # hungry while stalled
        assert hw.stat().st_size == size
        assert control(ctl, {"cmd": "unforce", "tag": "test.stall"})["ok"]
        wait_for(lambda: "WATCHDOG=1" in drain(), what="keepalives again")
        wait_for(lambda: hw.stat().st_size > size, what="hardware fed again")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        sock.close()
    assert hw.read_bytes().endswith(b"V")  # clean stop disarms
