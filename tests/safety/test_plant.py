"""On the virtual plant over Modbus: a scripted over-voltage and an over-temperature drive the runtime to
its safe state, and it returns to service by itself once the conditions clear.

Real processes end to end: `v2g-plc run` starts the virtual plant (Modbus TCP servers on loopback), the
scan polls it through the real maps, and the safety supervisor acts; the evidence is the runtime's own
per-cycle output recording. Enter service is shortened in the site file (delay 1 s, ramp 1 s) so the
whole story fits in half a minute of real time; the 300 s defaults are covered in simulated time by
test_enter_service.py.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from tests.io.helpers import free_port
from tests.runtime.helpers import cli, read_jsonl
from tests.safety.rig import MODBUS_DEVICES, PLANT_DEVICES

SITE = (
    """\
site: {{name: plant-safety, nominal_voltage: 240.0, nominal_frequency: 60}}
scan: {{period_ms: 20, overrun_fault_after: 50}}
"""
    + MODBUS_DEVICES
    + """programs:
  # a constant export request (-10 kW x SoC) and the permit while the inverter reports itself connected
  - {{type: example_copy, name: ask, params: {{source: ev.soc, target: inverter.setpoint, gain: -10000, declare_target: false}}}}
  - {{type: example_copy, name: permit, params: {{source: inverter.connected, target: inverter.enable, gain: 1.0, declare_target: false}}}}
safety:
  - type: v2g_safety
    name: safety
    params:
      category: III
      rated_charge_w: 11000
      rated_discharge_w: 11000
      enter_service: {{delay_s: 1.0, ramp_s: 1.0}}
      thermal: {{cooldown_s: 1.0, tau_s: null, reset_c: 75.0}}
      divergence: {{time_s: 5.0}}
plant:
  type: virtual
  params:
    host: 127.0.0.1
"""
    + PLANT_DEVICES
    + """    thermal: {{tau_s: 0.5, ambient_c: 25.0}}
    ev: {{soc: 0.6}}
    events:
      - {{t: 7, set: grid.voltage, to: 300.0}}         # 1.25 pu: cessation, then OV2 (0.16 s)
      - {{t: 7.5, set: grid.voltage, to: 240.0}}
      - {{t: 13, set: temperature.ambient, to: 110.0}}  # inverter past 85 degC
      - {{t: 15, set: temperature.ambient, to: 25.0}}
"""
)


def test_over_voltage_and_over_temperature_on_the_virtual_plant(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(textwrap.dedent(SITE.format(p1=free_port(), p2=free_port(), p3=free_port())))
    out = tmp_path / "out.jsonl"
    res = cli("run", str(site), "--for", "24", "--record-outputs", str(out), timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = read_jsonl(out)
    assert rows, res.stderr[-2000:]

    def phases(rows: list[dict]) -> list[str]:
        seq: list[str] = []
        for r in rows:
            tags = r["tags"]
            if tags["safety.trip"]:
                label = "trip:" + tags["safety.trip"]
            elif tags["inverter.setpoint"] <= -5900.0:
                label = "export"
            else:
                label = "other"
            if not seq or seq[-1] != label:
                seq.append(label)
        return seq

    seq = [s for s in phases(rows) if s != "other"]
    assert seq[:5] == ["export", "trip:ov2", "export", "trip:over_temperature", "export"], seq
    for r in rows:  # safe state whenever tripped
        if r["tags"]["safety.trip"]:
            assert r["tags"]["inverter.setpoint"] == 0.0 and r["tags"]["inverter.enable"] is False
