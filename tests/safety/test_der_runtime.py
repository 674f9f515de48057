"""DER controls end to end: a task process sends ``der_control`` over the real channel, the scan applies
it on a cycle boundary, the virtual plant's over-voltage trips at the overlay's OV1 clearing time instead
of the base's, the overlay is restored before cycle 0 after a restart, and replay reproduces the cycle.

Real processes: `v2g-plc run` with the virtual plant on loopback (free ports), the example commander task
standing in for the OCPP task (which maps SetDERControl onto the same command)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from tests.ports import free_ports
from tests.runtime.helpers import cli, read_jsonl
from tests.safety.rig import MODBUS_DEVICES, PLANT_DEVICES

HV = {"priority": 0, "yUnit": "PctEffectiveV", "curveData": [{"x": 0.16, "y": 120.0}, {"x": 5.0, "y": 110.0}]}
LOOSER = {"priority": 0, "yUnit": "PctEffectiveV", "curveData": [{"x": 0.16, "y": 120.0}, {"x": 13.0, "y": 115.0}]}
SET = {"action": "set", "control_type": "HVMustTrip", "is_default": True}
COMMANDS = [
    {"kind": "der_control", "args": {**SET, "control_id": "hv-1", "ocpp": HV}},
    {"kind": "der_control", "args": {**SET, "control_id": "hv-2", "ocpp": LOOSER}},
]

SITE = (
    """\
site: {{name: der-e2e, nominal_voltage: 240.0, nominal_frequency: 60}}
scan: {{period_ms: 20, overrun_fault_after: 50}}
"""
    + MODBUS_DEVICES
    + """programs:
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
      thermal: {{tau_s: null}}
      divergence: {{time_s: 5.0}}
commands:
  allow:
    example_commander: [der_control]
tasks:
  - type: example_commander
    name: backoffice
    params: {{by: csms-der, watch_events: true, commands: {commands}}}
plant:
  type: virtual
  params:
    host: 127.0.0.1
"""
    + PLANT_DEVICES
    + """    ev: {{soc: 0.6}}
    events:
      - {{t: 6, set: grid.voltage, to: 268.8}}   # 1.12 pu, held: Category III cessation, then OV1
"""
)


def test_a_der_control_moves_the_trip_survives_a_restart_and_replays(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    p1, p2, p3 = free_ports(3)
    site.write_text(textwrap.dedent(SITE.format(p1=p1, p2=p2, p3=p3, commands=json.dumps(COMMANDS))))
    rec, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    res = cli("run", str(site), "--for", "14", "--record", str(rec), "--record-outputs", str(out), timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = read_jsonl(out)
    tags = [r["tags"] for r in rows]

    # applied on the cycle boundary of the command's cycle, and only the stricter one
    frames = [json.loads(line) for line in rec.read_text().splitlines()]
    k_cmd = next(f["k"] for f in frames if any(c["name"] == "der_control" for c in f.get("commands", [])))
    by_k = {r["k"]: r["tags"] for r in rows}
    k_before = max(k for k in by_k if k < k_cmd)  # a loaded machine may skip cycles: the one before it ran
    assert json.loads(by_k[k_before]["safety.der_overlay"]) == {}
    assert list(json.loads(by_k[k_cmd]["safety.der_overlay"])) == ["hv-1"]
    assert list(json.loads(tags[-1]["safety.der_overlay"])) == ["hv-1"]

    # the over-voltage: cessation from its first cycle, the OV1 trip 5 s (less the allowance) later, not 13 s
    k_cess = next(r["k"] for r in rows if r["tags"]["safety.cessation"])
    k_trip = next(r["k"] for r in rows if r["tags"]["safety.trip"] == "ov1")
    assert 4.9 <= (k_trip - k_cess) * 0.02 <= 5.0
    assert by_k[k_trip]["inverter.setpoint"] == 0.0 and by_k[k_trip]["inverter.enable"] is False

    # the verdicts: the applied one on the event stream; the looser one refused by the gate before any
    # cycle (the safety layer's check_command), its reason told to the task and logged with who asked
    events = read_jsonl(tmp_path / "var" / "events.jsonl")
    der_events = [e for e in events if e["kind"] == "der_control"]
    assert [e["data"]["accepted"] for e in der_events] == [True]
    refused = [ln for ln in res.stderr.splitlines() if "command der_control from backoffice refused" in ln]
    assert len(refused) == 1 and "asked by csms-der" in refused[0] and "looser than the site's" in refused[0]
    trips = [e for e in events if e["kind"] == "trip"]
    assert trips and trips[0]["data"]["control_type"] == "HVMustTrip"
    cess = [e for e in events if e["kind"] == "cessation"]
    assert cess[0]["data"] == {"active": True, "control_type": "HVMomCess"}

    # replay: the same inputs and commands give the same outputs, cycle for cycle
    rep = tmp_path / "replayed.jsonl"
    res = cli("replay", str(site), "--inputs", str(rec), "--outputs", str(rep))
    assert res.returncode == 0, res.stderr
    replayed = {json.loads(line)["k"]: line for line in rep.read_text().splitlines()}
    assert all(replayed[json.loads(line)["k"]] == line for line in out.read_text().splitlines())

    # a restart: the overlay is back before cycle 0, with nobody asking again
    site.write_text(site.read_text().replace(json.dumps(COMMANDS), "[]"))
    out2 = tmp_path / "out2.jsonl"
    res = cli("run", str(site), "--for", "2", "--record-outputs", str(out2), timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    first = read_jsonl(out2)[0]["tags"]
    assert list(json.loads(first["safety.der_overlay"])) == ["hv-1"]
    assert "restored persisted state of safety" in res.stderr
