"""The MQTT interface on a depot through a real mosquitto: the site's state and each EVSE's under
``evse/<n>/``, mode requests per EVSE carrying ``evse: n``, commands that name no EVSE or a wrong one
answered on ``error``, the connection limits set from ``set/connection`` (range, expiry, errors), and Home
Assistant's devices per EVSE."""

from __future__ import annotations

import asyncio
import json
import logging

import aiomqtt
import pytest

from runtime.api import SiteInfo
from runtime.tags import US
from runtime.tasks.localapi.connection import EXPORT_TAG, IMPORT_TAG
from runtime.tasks.localapi.mqtt import MqttApi, MqttApiParams
from tests.localapi.conftest import Mosquitto
from tests.localapi.depot import RATING, Recorder, depot_tags
from tests.localapi.test_modbus_server import image
from tests.localapi.test_mqtt_api import BASE, Listener
from tests.waiting import cancel_and_wait, until

SITE = SiteInfo("test site", 240.0, 60.0, 20_000)


def test_depot_state_commands_per_evse_and_the_connection(
    mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    rec = Recorder()
    params = MqttApiParams(
        port=mosquitto.port,
        tags=["inverter.power", "safety.trip"],
        site_tags=["meter.power", IMPORT_TAG],
        evses=[1, 2, 3],
        connection=RATING,
        interval_s=0.05,
        reconnect_s=0.05,
        ha_max_w=11000,
    )
    task = MqttApi("mqtt", params, SITE)
    cx = rec.context("mqtt")
    assert {s.name for s in task.declare()} == {"mqtt.connected", IMPORT_TAG, EXPORT_TAG}

    async def send(topic: str, payload: bytes) -> None:
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as c:
            await c.publish(topic, payload, qos=1)

    def errors() -> list[dict[str, str]]:
        return [json.loads(p) for t, p, _, _ in late.got if t == f"{BASE}/error"]

    async def main() -> None:
        nonlocal late
        clock = [1 * US]

        async def scan() -> None:
            """The scan's publications, one a cycle, the task's shared-tag writes landed in them; the test
            moves the cycle clock."""
            while True:
                await cx._publish(image({**depot_tags(), **dict(rec.writes)}), clock[0])
                await asyncio.sleep(0.02)  # the pace of the stand-in scan's cycles

        runner = asyncio.create_task(task.run(cx))
        cycles = asyncio.create_task(scan())
        try:
            await until(lambda: task.connected, "the task to connect")
            async with Listener(mosquitto.port) as late:
                state = lambda topic: json.loads(late.last(f"{BASE}/{topic}") or b"null")  # noqa: E731
                await until(lambda: state("evse/3/state/inverter.power") is not None, "every EVSE's state")
                assert state("state/meter.power")["value"] == 48_000.0
                assert [state(f"evse/{n}/state/inverter.power")["value"] for n in (1, 2, 3)] == [7000, -4000, 0]
                assert state("evse/2/state/safety.trip")["value"] == "comms_lost"
                assert late.last(f"{BASE}/state/inverter.power") is None  # a depot has no site charger
                # the limits in force, as the allocator reads them, the rating while none is set
                await until(lambda: rec.last(IMPORT_TAG) == 100_000.0, "the rating published")
                await until(lambda: state(f"state/{IMPORT_TAG}") is not None, "the limit's own state")

                await send(f"{BASE}/evse/2/set/mode", b'{"mode": "remote", "setpoint_w": -3000, "expiry_s": 60}')
                await until(lambda: len(rec.commands) == 1, "the request")
                assert rec.commands[0] == (
                    "mode_request",
                    {"mode": "remote", "setpoint_w": -3000.0, "expiry_s": 60.0, "evse": 2},
                    f"mqtt:{BASE}/evse/2/set/mode",
                )
                await until(lambda: late.last(f"{BASE}/response") is not None, "the answer")

                await send(f"{BASE}/set/connection", b'{"import_w": 40000, "expiry_s": 30}')
                await until(lambda: rec.last(IMPORT_TAG) == 40_000.0, "the import limit")
                assert rec.last(EXPORT_TAG) == 60_000.0  # the export limit was not named: unchanged
                await until(lambda: state(f"state/{IMPORT_TAG}")["value"] == 40_000.0, "its state")

                bad = [
                    (f"{BASE}/set/mode", b'{"mode": "local"}', "name their EVSE"),
                    (f"{BASE}/evse/9/set/mode", b'{"mode": "local"}', "no EVSE '9'"),
                    (f"{BASE}/evse/x/set/mode", b'{"mode": "local"}', "no EVSE 'x'"),
                    (f"{BASE}/evse/1/set/mode", b'{"mode": "local", "evse": 2}', "evse is set by the server"),
                    (f"{BASE}/evse/1/set/trip_reset", b"{}", "unknown command topic"),
                    (f"{BASE}/set/connection", b'{"import_w": 100001}', "outside 0..100000"),
                    (f"{BASE}/set/connection", b'{"export_w": -1}', "export_w"),
                    (f"{BASE}/set/connection", b'{"import_w": NaN}', "finite"),
                    (f"{BASE}/set/connection", b'{"import_w": 1, "voltage": 2}', "voltage"),
                    (f"{BASE}/set/connection", b"{}", "give import_w, export_w or both"),
                    (f"{BASE}/set/connection", b'{"import_w": 1, "expiry_s": 0}', "expiry_s"),
                ]
                for topic, payload, _ in bad:
                    await send(topic, payload)
                await until(lambda: len(errors()) == len(bad), "every error answered")
                for (topic, _, why), e in zip(bad, errors(), strict=True):
                    assert e["topic"] == topic and why in e["error"], (e, why)
                assert len(rec.commands) == 1 and rec.last(IMPORT_TAG) == 40_000.0  # nothing bad got through

                # not refreshed within its 30 s of cycle clock: back to the rating
                clock[0] = 40 * US
                await until(lambda: rec.last(IMPORT_TAG) == 100_000.0, "the limit to expire")

                # Home Assistant: the site and one device per EVSE, each EVSE's control on its own topic
                node = "v2g_test_site"
            async with aiomqtt.Client("127.0.0.1", mosquitto.port) as c:
                await c.subscribe("homeassistant/#", qos=1)
                got: dict[str, bytes] = {}

                async def collect() -> None:
                    async for m in c.messages:
                        assert isinstance(m.payload, bytes)
                        got[str(m.topic)] = m.payload

                job = asyncio.create_task(collect())
                try:
                    await until(lambda: f"homeassistant/number/{node}_evse3/power_request/config" in got, "HA")
                finally:
                    await cancel_and_wait(job, 5)
                req = json.loads(got[f"homeassistant/number/{node}_evse3/power_request/config"])
                assert req["command_topic"] == f"{BASE}/evse/3/set/mode"
                assert req["availability"] == [{"topic": f"{BASE}/availability"}]
                power = json.loads(got[f"homeassistant/sensor/{node}_evse3/inverter_power/config"])
                assert power["state_topic"] == f"{BASE}/evse/3/state/inverter.power"
                assert f"homeassistant/sensor/{node}/meter_power/config" in got
                assert f"homeassistant/number/{node}/power_request/config" not in got  # no site set point
                assert f"homeassistant/button/{node}/local_control/config" not in got
        finally:
            await cancel_and_wait(cycles, 5)
            await cancel_and_wait(runner)

    late: Listener
    with caplog.at_level(logging.INFO):
        asyncio.run(main())
    assert "back to the rating" in caplog.text
