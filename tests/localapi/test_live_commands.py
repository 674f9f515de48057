"""End to end through the real runtime: an MQTT client's mode request crosses mosquitto, the MQTT task in
the task process, the task channel and the scan's gate; the scan applies it at a cycle boundary, logs it as
a command event with who asked, and its answer comes back on the response topic. A trip reset that the
site file does not allow is refused by the scan, and that answer comes back too.

The mode authority (what a mode request does to the set point) is another part's; this test proves the
way in and the answer, not the set point that follows."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiomqtt

from tests.localapi.conftest import Mosquitto
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


def test_mqtt_mode_request_reaches_the_scan_and_is_answered(mosquitto: Mosquitto, tmp_path: Path) -> None:
    site = write_site(tmp_path, extra=EXTRA.format(port=mosquitto.port))
    proc = start_cli("run", str(site), "--for", "60")
    answers: list[dict[str, Any]] = []
    online: list[bytes] = []

    async def main() -> None:
        async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="ems") as c:
            await c.subscribe(f"{BASE}/#", qos=1)

            async def collect() -> None:
                async for m in c.messages:
                    assert isinstance(m.payload, bytes)
                    if str(m.topic) == f"{BASE}/response":
                        answers.append(json.loads(m.payload))
                    elif str(m.topic) == f"{BASE}/availability":
                        online.append(m.payload)

            collector = asyncio.create_task(collect())
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
