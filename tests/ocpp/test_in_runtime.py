"""The ocpp task inside the real runtime: the task process runs it from the site file, the station boots at
the local CSMS (its own process), starts a transaction from the scan's image and publishes its shared tags."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

from tests.ports import free_port
from tests.runtime.helpers import ROOT, read_tag, start_cli, wait_for, write_site

SITE = """\
site: {{name: ocpp-site, nominal_voltage: 240.0, nominal_frequency: 60}}
scan: {{period_ms: 20, overrun_fault_after: 5}}
devices:
  - name: dev
    type: memory
    params:
      poll_s: 0.05
      tags:
        - {{name: grid.voltage, unit: V, value: 240.0, stale_after_s: 1.0}}
        - {{name: ev.soc, value: 0.5, stale_after_s: 1.0}}
        - {{name: ev.connected, type: bool, value: true, stale_after_s: 1.0}}
        - {{name: inverter.power, unit: W, value: 7000.0, stale_after_s: 1.0}}
        - {{name: meter.energy_import, unit: Wh, value: 1234.0, stale_after_s: 1.0}}
        - {{name: meter.energy_export, unit: Wh, value: 56.0, stale_after_s: 1.0}}
        - {{name: inverter.setpoint, unit: W, direction: output, value: 0.0}}
safety:
  - type: example_clamp
    name: clamp
    params: {{tag: inverter.setpoint, limit: 11000}}
tasks:
  - type: ocpp
    name: backoffice
    params:
      csms_url: ws://127.0.0.1:{port}/ocpp
      identity: CP-RT
      security_profile: 1
      password_file: password
      variables: {{TxUpdatedInterval: 1}}
"""


def test_ocpp_task_in_the_task_process(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "password").write_text("0123456789abcdef-operator\n")
    site = write_site(tmp_path, SITE.format(port=port))
    csms = subprocess.Popen(
        [sys.executable, "-m", "runtime.tasks.ocpp.local_csms", "--port", str(port)],
        cwd=ROOT, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines: list[str] = []
    assert csms.stderr is not None
    reader = threading.Thread(target=lambda: lines.extend(iter(csms.stderr.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    proc = start_cli("run", str(site))
    sock = tmp_path / "var" / "control.sock"
    try:
        wait_for(lambda: any("BootNotification from CP-RT" in ln for ln in lines), what="boot at the CSMS")
        wait_for(
            lambda: any("Started seqNo 0" in ln and "Energy.Active.Import.Register=1234.0" in ln for ln in lines),
            what="Started",
        )
        wait_for(lambda: any("MeterValuePeriodic" in ln for ln in lines), what="periodic meter values")
        assert (read_tag(sock, "ocpp.connected") or {}).get("value") is True
        lim = wait_for(lambda: read_tag(sock, "ocpp.limit_charge"), what="the limit tag")
        assert lim["value"] == 11000.0 and lim["quality"] == "good"
        assert (tmp_path / "var" / "ocpp" / "queue.sqlite").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        print(err[-4000:], "".join(lines)[-2000:])  # shown when the test failed
        csms.terminate()
        csms.wait(timeout=10)


def test_check_reports_a_missing_password_file_and_a_wrong_scheme(tmp_path: Path) -> None:
    from tests.runtime.helpers import cli

    site = write_site(tmp_path, SITE.format(port=1))
    r = cli("check", str(site))
    assert r.returncode == 2 and "password_file" in r.stderr and "site.yaml:" in r.stderr, r.stderr
    site.write_text(SITE.format(port=1).replace("security_profile: 1", "security_profile: 2"))
    (tmp_path / "password").write_text("0123456789abcdef-operator\n")
    r = cli("check", str(site))
    assert r.returncode == 2 and "needs a wss:// csms_url" in r.stderr, r.stderr


def test_check_shows_the_effective_variables_a_csms_changed(tmp_path: Path) -> None:
    """`v2g-plc check` shows the values in force: the site file's, or the CSMS's where it set one."""
    from runtime.site import build_site
    from runtime.tasks.ocpp.variables import VARDEFS, DeviceModel
    from tests.runtime.helpers import cli

    site = write_site(tmp_path, SITE.format(port=1))
    (tmp_path / "password").write_text("0123456789abcdef-operator\n")
    r = cli("check", str(site))
    assert r.returncode == 0, r.stderr
    assert "SampledDataCtrlr.TxUpdatedInterval=1," in r.stdout  # the site file says 1
    (task,) = build_site(site).tasks
    d = next(v for v in VARDEFS if v.variable == "TxUpdatedInterval")
    assert DeviceModel(task.params, task.state_dir()).write(d, "5") == "Accepted"  # as SetVariables does
    r = cli("check", str(site))
    assert r.returncode == 0 and "SampledDataCtrlr.TxUpdatedInterval=5" in r.stdout, r.stdout


def test_runtime_start_boots_task_process_restart_does_not_at_speed(tmp_path: Path) -> None:
    """At --speed the cycle clock runs minutes ahead while a task process starts: the runtime id, not the
    clock, tells a runtime start (BootNotification PowerUp, then ApplicationReset) from a task-process
    restart (a reconnect, no BootNotification)."""
    import os
    import re

    port = free_port()
    (tmp_path / "password").write_text("0123456789abcdef-operator\n")
    site = write_site(tmp_path, SITE.format(port=port))
    csms = subprocess.Popen(
        [sys.executable, "-m", "runtime.tasks.ocpp.local_csms", "--port", str(port)],
        cwd=ROOT, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines: list[str] = []
    assert csms.stderr is not None
    threading.Thread(target=lambda: lines.extend(iter(csms.stderr.readline, "")), daemon=True).start()  # type: ignore[union-attr]

    def boots() -> list[str]:
        return [m.group(1) for ln in lines if (m := re.search(r"BootNotification from CP-RT \(v2g-plc, (\w+)\)", ln))]

    def connects() -> int:
        return sum("CP-RT connected" in ln for ln in lines)

    err: list[str] = []
    proc = start_cli("run", str(site), "--speed", "50")
    assert proc.stderr is not None
    threading.Thread(target=lambda: err.extend(iter(proc.stderr.readline, "")), daemon=True).start()  # type: ignore[union-attr]
    try:
        wait_for(lambda: boots() == ["PowerUp"], what="the first boot")
        wait_for(lambda: any("Started seqNo 0" in ln for ln in lines), what="Started")
        pid = wait_for(
            lambda: next(
                (int(m.group(1)) for ln in err if (m := re.search(r"task process started \(pid (\d+)\)", ln))), None
            ),
            what="the task process's pid",
        )
        os.kill(pid, signal.SIGKILL)  # the task process alone dies; the supervisor starts another
        wait_for(lambda: connects() >= 2, what="the reconnect of the new task process")
        n = sum("seqNo" in ln for ln in lines)
        wait_for(lambda: sum("seqNo" in ln for ln in lines) > n, what="transaction messages after the restart")
        assert boots() == ["PowerUp"]  # no BootNotification for a task-process restart
        assert not any("Ended" in ln for ln in lines)  # and the transaction goes on
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        proc = start_cli("run", str(site), "--speed", "50")  # a runtime start on the same machine boot
        wait_for(lambda: boots() == ["PowerUp", "ApplicationReset"], what="the second runtime's boot")
        wait_for(lambda: any("Ended" in ln and "Reboot" in ln for ln in lines), what="the open transaction ended")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        print("".join(err)[-4000:], "".join(lines)[-3000:])  # shown when the test failed
        csms.terminate()
        csms.wait(timeout=10)
