"""``ev_limits`` as a site file lists it: a real ``v2g-plc run`` (scan, I/O thread, memory device) clamps
what a program asks to the EV's own limits, and ``v2g-plc check`` names what a site forgot.

The SECC's inputs come from a memory device here (the SECC service needs root and Java: tests/secc runs
it with this interlock on its site), so this runs everywhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.runtime.helpers import cli, read_tag, start_cli, stop_cli, wait_for, write_site

SITE = """\
site: {{name: ev-limits, nominal_voltage: 240.0, nominal_frequency: 60}}
scan: {{period_ms: 20}}
state_dir: {tmp}/var
control_socket: {tmp}/control.sock
devices:
  - name: dev
    type: memory
    params:
      poll_s: 0.05
      tags:
        - {{name: test.request_w, unit: W, value: {request_w}}}
{secc}
        - {{name: inverter.setpoint, unit: W, direction: output, value: 0.0}}
        - {{name: inverter.enable, type: bool, direction: output, value: true}}
        - {{name: test.reason, type: str, direction: output, value: ""}}
programs:
  - type: example_copy
    name: request
    params: {{source: test.request_w, target: inverter.setpoint, declare_target: false}}
safety:
  - type: ev_limits
    name: ev_limits
    params: {{reason_tag: test.reason}}
"""
SECC = """\
        - {name: secc.session, type: bool, value: true, stale_after_s: 1.0}
        - {name: secc.ev_max_charge_w, unit: W, value: 6000.0, stale_after_s: 1.0}
        - {name: secc.ev_max_discharge_w, unit: W, value: -3000.0, stale_after_s: 1.0}"""


def _value(sock: Path, name: str) -> object:
    t = read_tag(sock, name)
    return None if t is None else t.get("value")


@pytest.mark.parametrize("request_w, expected", [(-7000.0, -2940.0), (9000.0, 5880.0), (2000.0, 2000.0)])
def test_a_running_site_clamps_to_the_evs_limits(tmp_path: Path, request_w: float, expected: float) -> None:
    path = write_site(tmp_path, SITE.format(tmp=tmp_path, request_w=request_w, secc=SECC))
    proc = start_cli("run", str(path))
    sock = tmp_path / "control.sock"
    try:
        wait_for(lambda: proc.poll() is not None or _value(sock, "inverter.setpoint") == expected, 60, "the clamp")
        assert proc.poll() is None
        reason = str(_value(sock, "test.reason"))
        assert ("EV limits" in reason) == (expected != request_w), reason
        assert _value(sock, "inverter.enable") is True
    finally:
        err = stop_cli(proc)
    assert "Traceback" not in err, err[-3000:]


def test_a_site_without_the_seccs_tags_is_refused_with_the_tag_named(tmp_path: Path) -> None:
    path = write_site(tmp_path, SITE.format(tmp=tmp_path, request_w=0.0, secc=""))
    res = cli("check", str(path))
    assert res.returncode != 0
    assert "needs tag 'secc.session', which no device, program or task provides" in res.stdout + res.stderr
