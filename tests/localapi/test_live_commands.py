"""End to end through the real runtime: an MQTT client's mode request crosses mosquitto, the MQTT task in
the task process, the task channel and the scan's gate; the scan applies it at a cycle boundary, logs it as
a command event with who asked, and its answer comes back on the response topic. A trip reset that the
site file does not allow is refused by the scan, and that answer comes back too.

The second test goes on to the set point: on a site without OCPP whose authority has ``local_control:
true``, an MQTT mode request moves the committed ``inverter.setpoint`` (both signs and zero, read from the
memory device's journal of output writes), and handing back, or the request's expiry on the cycle clock,
gives the site back to its plan. The third does the same with a SunSpec EMS writing 704 WSet over Modbus
while the CSMS delegates (``ocpp.operation_mode`` ExternalSetpoint) and ``local_control`` is off."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any

import aiomqtt
import sunspec2.modbus.client as ssc

from tests.localapi.conftest import Mosquitto
from tests.ports import free_port
from tests.runtime.helpers import read_jsonl, start_cli, stop_cli, wait_for, write_site
from tests.waiting import until

EXTRA = """\
task_process:
  heartbeat_s: 1.0
commands:
  allow:
    localapi_mqtt: [mode_request]
tasks:
  - type: localapi_mqtt
    name: mqtt
    params: {{port: {port}, site: live, tags: [ev.soc], ha_discovery: false, trip_reset: true, reconnect_s: 0.1}}
"""
BASE = "v2g/live"


async def collect(c: aiomqtt.Client, answers: list[dict[str, Any]], online: list[bytes]) -> None:
    """Keep the runtime's answers and its availability as they arrive."""
    async for m in c.messages:
        assert isinstance(m.payload, bytes)
        if str(m.topic) == f"{BASE}/response":
            answers.append(json.loads(m.payload))
        elif str(m.topic) == f"{BASE}/availability":
            online.append(m.payload)


def test_mqtt_mode_request_reaches_the_scan_and_is_answered(mosquitto: Mosquitto, tmp_path: Path) -> None:
    site = write_site(tmp_path, extra=EXTRA.format(port=mosquitto.port))
    proc = start_cli("run", str(site), "--for", "60")
    answers: list[dict[str, Any]] = []
    online: list[bytes] = []

    async def main() -> None:
        async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="ems") as c:
            await c.subscribe(f"{BASE}/#", qos=1)

            collector = asyncio.create_task(collect(c, answers, online))
            try:
                await until(lambda: online[-1:] == [b"online"], "the runtime's MQTT task", timeout=40)
                await c.publish(f"{BASE}/set/mode", b'{"mode": "remote", "setpoint_w": -2500, "expiry_s": 60}', qos=1)
                await until(lambda: len(answers) == 1, "the scan's answer", timeout=20)
                await c.publish(f"{BASE}/set/trip_reset", b"{}", qos=1)
                await until(lambda: len(answers) == 2, "the trip reset's answer", timeout=20)
            finally:
                collector.cancel()
                await asyncio.wait({collector}, timeout=5)

    try:
        asyncio.run(main())
        events = wait_for(
            lambda: [e for e in read_jsonl(tmp_path / "var" / "events.jsonl") if e.get("kind") == "command"],
            timeout=20,
            what="the command in the event log",
        )
    finally:
        err = stop_cli(proc)
    assert answers[0] == {"topic": f"{BASE}/set/mode", "accepted": True, "reason": ""}, err[-3000:]
    assert answers[1]["accepted"] is False
    assert "reset_trip not allowed for localapi_mqtt" in answers[1]["reason"]
    e = events[0]
    assert e["source"] == "mqtt" and "mode_request asked by mqtt:v2g/live/set/mode" in e["message"]
    assert e["data"]["setpoint_w"] == -2500.0 and e["data"]["mode"] == "remote"


# A site without OCPP whose authority lets the local EMS steer: the plan charges at 1500 W.
E2E_SITE = """\
site:
  name: e2e
  nominal_voltage: 240.0
  nominal_frequency: 60
scan:
  period_ms: 20
  overrun_fault_after: 5
devices:
  - name: dev
    type: memory
    params:
      journal: journal.jsonl
      poll_s: 0.05
      tags:
        - {{name: grid.voltage, unit: V, value: 240.0, stale_after_s: 1.0}}
        - {{name: grid.frequency, unit: Hz, value: 60.0, stale_after_s: 1.0}}
        - {{name: ev.connected, type: bool, value: true, stale_after_s: 1.0}}
        - {{name: ev.soc, value: 0.5, stale_after_s: 1.0}}
        - {{name: plc.snr, value: 20.0, stale_after_s: 1.0}}
        - {{name: plan.power, unit: W, value: 1500.0, stale_after_s: 1.0}}
        - {{name: plan.reserve_soc, value: 0.2, stale_after_s: 1.0}}
        - {{name: plan.interval_end, type: int, value: 0, stale_after_s: 1.0}}
        - {{name: safety.limit_charge, unit: W, value: 11000.0, stale_after_s: 1.0}}
        - {{name: safety.limit_discharge, unit: W, value: 11000.0, stale_after_s: 1.0}}
        - {{name: safety.trip, type: str, value: "", stale_after_s: 1.0}}
        - {{name: inverter.setpoint, unit: W, direction: output, value: 0.0}}
        - {{name: inverter.enable, type: bool, direction: output, value: false}}
{extra_tags}programs:
  - type: authority
    name: authority
    params: {{local_control: {local_control}}}
  - type: modes
    name: modes
  - type: dispatch
    name: dispatch
    params: {{plan_soc_tag: null, ramp_w_per_s: 10000000}}
safety:
  - type: example_clamp
    name: clamp
    params: {{tag: inverter.setpoint, limit: 11000}}
task_process:
  heartbeat_s: 1.0
commands:
  allow:
    {task_type}: [mode_request]
tasks:
{task}"""
MQTT_TASK = """\
  - type: localapi_mqtt
    name: mqtt
    params: {{port: {port}, site: live, tags: [ev.soc], ha_discovery: false, reconnect_s: 0.1}}
"""


def setpoints(journal: Path) -> list[float]:
    """Every committed inverter.setpoint the memory device was written, in order."""
    return [j["writes"]["inverter.setpoint"] for j in read_jsonl(journal) if "inverter.setpoint" in j["writes"]]


def test_mqtt_mode_request_moves_the_committed_setpoint(mosquitto: Mosquitto, tmp_path: Path) -> None:
    task = MQTT_TASK.format(port=mosquitto.port)
    site = write_site(
        tmp_path, E2E_SITE.format(extra_tags="", local_control="true", task_type="localapi_mqtt", task=task)
    )
    journal = tmp_path / "journal.jsonl"
    proc = start_cli("run", str(site), "--for", "120")
    answers: list[dict[str, Any]] = []
    online: list[bytes] = []

    def setpoint() -> float | None:
        sps = setpoints(journal)
        return sps[-1] if sps else None

    async def main() -> None:
        async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="ems-e2e") as c:
            await c.subscribe(f"{BASE}/#", qos=1)

            async def ask(doc: dict[str, Any], expect: float, what: str) -> None:
                n = len(answers)
                await c.publish(f"{BASE}/set/mode", json.dumps(doc).encode(), qos=1)
                await until(lambda: len(answers) > n, f"the scan's answer ({what})", timeout=20)
                assert answers[-1]["accepted"] is True, answers[-1]
                await until(lambda: setpoint() == expect, f"the set point {expect} ({what})", timeout=20)

            collector = asyncio.create_task(collect(c, answers, online))
            try:
                await until(lambda: online[-1:] == [b"online"], "the runtime's MQTT task", timeout=40)
                await until(lambda: setpoint() == 1500.0, "the plan's 1500 W", timeout=20)
                await ask({"mode": "remote", "setpoint_w": 3000, "expiry_s": 60}, 3000.0, "charge")
                await ask({"mode": "remote", "setpoint_w": -2500, "expiry_s": 60}, -2500.0, "discharge")
                await ask({"mode": "remote", "setpoint_w": 0, "expiry_s": 60}, 0.0, "zero")
                await ask({"mode": "local"}, 1500.0, "handed back to the plan")
                # the reversion: a request that is not refreshed expires on the cycle clock
                await ask({"mode": "remote", "setpoint_w": -4000, "expiry_s": 2}, -4000.0, "short request")
                await until(lambda: setpoint() == 1500.0, "the plan back after the expiry", timeout=20)
            finally:
                collector.cancel()
                await asyncio.wait({collector}, timeout=5)

    try:
        asyncio.run(main())
    finally:
        err = stop_cli(proc)
    sps = setpoints(journal)
    zero = sps.index(0.0, sps.index(-2500.0))
    assert math.copysign(1.0, sps[zero]) == 1.0, "the zero request committed -0.0"
    assert sps[-1] == 0.0, err[-3000:]  # a clean stop writes the safe output


# The CSMS delegates (OCPP 2.1 operationMode ExternalSetpoint, as the OCPP task would publish it) and
# local_control is off: the EMS's 704 writes steer all the same.
DELEGATED = """\
        - {{name: ocpp.operation_mode, type: str, value: ExternalSetpoint, stale_after_s: 1.0}}
        - {{name: ocpp.accepted, type: bool, value: true, stale_after_s: 1.0}}
"""
MODBUS_TASK = """\
  - type: localapi_modbus
    name: modbus
    params:
      port: {port}
      allow: [{{address: 127.0.0.1, role: read_write}}]
      max_charge_w: 11000
      max_discharge_w: 11000
"""


def test_modbus_wset_moves_the_committed_setpoint_while_the_csms_delegates(tmp_path: Path) -> None:
    port = free_port()
    text = E2E_SITE.format(
        extra_tags=DELEGATED.format(),
        local_control="false",
        task_type="localapi_modbus",
        task=MODBUS_TASK.format(port=port),
    )
    site = write_site(tmp_path, text)
    journal = tmp_path / "journal.jsonl"
    proc = start_cli("run", str(site), "--for", "120")

    def setpoint() -> float | None:
        sps = setpoints(journal)
        return sps[-1] if sps else None

    def connect() -> ssc.SunSpecModbusClientDeviceTCP | None:
        d = ssc.SunSpecModbusClientDeviceTCP(slave_id=1, ipaddr="127.0.0.1", ipport=port, timeout=2)
        try:
            d.scan()
            return d
        except Exception:  # not listening yet
            d.close()
            return None

    try:
        d = wait_for(connect, timeout=40, what="the SunSpec server")
        try:
            ctl = d.models[704][0]

            def write(expect: float, what: str, **points: float) -> None:
                for name, value in points.items():
                    getattr(ctl, name).cvalue = value
                ctl.write()  # pysunspec2 writes each changed point on its own: each is a request
                wait_for(lambda: setpoint() == expect, timeout=20, what=f"the set point {expect} ({what})")

            wait_for(lambda: setpoint() == 1500.0, timeout=20, what="the plan's 1500 W")
            # SunSpec sign: WSet + = discharge; the project's set point + = into the EV
            write(-4000.0, "discharge", WSetRvrtTms=60, WSet=4000, WSetEna=1)
            write(3000.0, "charge", WSet=-3000)
            write(0.0, "zero", WSet=0)
            write(1500.0, "handed back to the plan", WSetEna=0)
            write(2000.0, "short request", WSetRvrtTms=2, WSet=-2000, WSetEna=1)
            wait_for(lambda: setpoint() == 1500.0, timeout=20, what="the plan back after the reversion timeout")
        finally:
            d.close()
    finally:
        err = stop_cli(proc)
    sps = setpoints(journal)
    assert math.copysign(1.0, sps[sps.index(0.0, sps.index(3000.0))]) == 1.0, "zero committed as -0.0"
    assert sps[-1] == 0.0, err[-3000:]
