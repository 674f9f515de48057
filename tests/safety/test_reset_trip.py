"""An operator-reset trip on a real running runtime: it latches, survives a restart (persisted state),
and `v2g-plc reset-trip` clears it through the control socket once its cause is gone."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from tests.runtime.helpers import cli, read_tag, start_cli, wait_for

SITE = """\
site: {{name: reset-trip, nominal_voltage: 240.0, nominal_frequency: 60}}
scan: {{period_ms: 20, overrun_fault_after: 50}}
devices:
  - name: dev
    type: memory
    params:
      poll_s: 0.05
      echo: {{inverter.power: inverter.setpoint}}
      tags:
        - {{name: grid.voltage, unit: V, value: 240.0, stale_after_s: 1.0}}
        - {{name: grid.frequency, unit: Hz, value: 60.0, stale_after_s: 1.0}}
        - {{name: ev.soc, value: 0.5, stale_after_s: 1.0}}
        - {{name: inverter.power, unit: W, value: 0.0, stale_after_s: 1.0}}
        - {{name: inverter.write_mismatch, type: bool, value: {mismatch}, stale_after_s: 1.0}}
        - {{name: inverter.setpoint, unit: W, direction: output, value: 0.0}}
        - {{name: inverter.enable, type: bool, direction: output, value: false}}
programs:
  - {{type: example_copy, name: ask, params: {{source: ev.soc, target: inverter.setpoint, gain: 10000, declare_target: false}}}}
safety:
  - type: v2g_safety
    name: safety
    params:
      category: III
      rated_charge_w: 11000
      rated_discharge_w: 11000
      comms: {{required_tags: [grid.voltage, grid.frequency, inverter.power], snr_tag: null, write_mismatch_s: 0.5}}
      islanding: {{loss_tag: null}}
      thermal: {{tag: null}}
      battery: {{soh_tag: null}}
      limits: {{rating_charge_tag: null, rating_discharge_tag: null}}
"""


def _trip(sock: Path) -> str | None:
    tag = read_tag(sock, "safety.trip")
    return None if tag is None else tag["value"]


def test_latched_trip_survives_restart_and_resets_over_the_socket(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    sock = tmp_path / "var" / "control.sock"
    site.write_text(SITE.format(mismatch="true"))
    p = start_cli("run", str(site), "--for", "60")
    try:
        wait_for(lambda: _trip(sock) == "write_mismatch", 30, "the write_mismatch trip")
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=30) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    state = json.loads((tmp_path / "var" / "state.json").read_text())
    assert "write_mismatch" in json.dumps(state)

    site.write_text(SITE.format(mismatch="false"))  # the device obeys again
    p = start_cli("run", str(site), "--for", "60")
    try:
        wait_for(lambda: _trip(sock) == "write_mismatch", 30, "the persisted trip after restart")
        enable = read_tag(sock, "inverter.enable")
        assert enable is not None and enable["value"] is False
        res = cli("reset-trip", str(site))
        assert res.returncode == 0, res.stderr
        wait_for(lambda: _trip(sock) == "", 10, "the trip to clear after reset-trip")
        wait_for(
            lambda: (read_tag(sock, "inverter.setpoint") or {}).get("value") == 5000.0,
            10,
            "charging to resume (no grid delay for charging)",
        )
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=30)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()

    # A third start after the reset: the cleared latch left nothing behind that breaks a start.
    p = start_cli("run", str(site), "--for", "60")
    try:
        wait_for(
            lambda: (read_tag(sock, "inverter.setpoint") or {}).get("value") == 5000.0,
            30,
            "a clean start after the reset",
        )
        assert _trip(sock) == ""
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=30)


def test_unreadable_persisted_state_refuses_to_start(tmp_path: Path) -> None:
    """It may hold a latched operator trip: forgetting it silently would be unsafe."""
    site = tmp_path / "site.yaml"
    site.write_text(SITE.format(mismatch="false"))
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "state.json").write_text('{"safety": {"latched": [["write_mis')
    res = cli("run", str(site), "--for", "5")
    assert res.returncode == 2 and "state.json is unreadable" in res.stderr
