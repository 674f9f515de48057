"""The MQTT price feed through a real mosquitto broker: retained curve at subscribe, the same signal
twice, a rejected message, a revision, the broker going away and coming back."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import Callable
from zoneinfo import ZoneInfo

import aiomqtt
import pytest

from runtime.api import SiteInfo
from runtime.tags import US, Image, Quality
from runtime.tasks.base import TASKS, TaskContext
from runtime.tasks.prices import MqttParams, PricesMqtt
from tests.programs.test_prices_csv import Writes
from tests.waiting import cancel_and_wait

NY = ZoneInfo("America/New_York")
SITE = SiteInfo("t", 240.0, 60.0, 20_000)
TOPIC = "site/prices/day_ahead"


def signal(price0: float) -> bytes:
    return json.dumps(
        {
            "market": "day_ahead",
            "start": "2018-06-04T04:00:00Z",
            "resolution_s": 900,
            "prices": [price0 - i for i in range(96)],
        }
    ).encode()


async def until(pred: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def test_mqtt_feed(mosquitto: int, caplog: pytest.LogCaptureFixture) -> None:
    assert TASKS["prices_mqtt"] is PricesMqtt
    params = MqttParams(
        host="127.0.0.1",
        port=mosquitto,
        topic=TOPIC,
        timezone="America/New_York",
        markets=["day_ahead"],
        reconnect_s=0.05,
    )
    task = PricesMqtt("prices", params, SITE)
    w = Writes()
    cx = TaskContext("prices", w, dt.datetime(2018, 6, 4, tzinfo=NY), logging.getLogger("t"))

    async def publish(payload: bytes, retain: bool = False) -> None:
        async with aiomqtt.Client("127.0.0.1", mosquitto) as c:
            await c.publish(TOPIC, payload, qos=1, retain=retain)

    def confirmed() -> int | None:
        return None if task.feed is None else task.feed.confirmed_us["day_ahead"]

    async def main() -> None:
        await publish(signal(10.0), retain=True)  # published before the task subscribes
        runner = asyncio.create_task(task.run(cx))
        try:
            await until(lambda: any(t == "prices.day_ahead" for t, _, _ in w.log), "the retained curve")
            curve, q = w.last("prices.day_ahead")
            assert q is Quality.GOOD and len(curve) == 96 and curve[-1]["price"] == 10.0 - 95  # negative ok
            assert w.last("prices.updated")[0] == 1

            await cx._publish(Image({}), 60 * US)
            await publish(signal(10.0))  # the same signal again: confirmed, nothing changes
            await until(lambda: confirmed() == 60 * US, "the repeated signal")
            assert w.last("prices.updated")[0] == 1

            with caplog.at_level(logging.WARNING):
                await publish(
                    b'{"market": "day_ahead", "start": "2018-06-04T04:00:00Z", '
                    b'"resolution_s": 900, "prices": [1, 2, "x"]}'
                )
                await until(lambda: "prices[2]" in caplog.text, "the rejection log line")
            assert "signal rejected, last valid curve kept" in caplog.text
            assert w.last("prices.day_ahead")[0] == curve

            await publish(signal(20.0))
            await until(lambda: w.last("prices.updated")[0] == 2, "the revision")
            assert w.last("prices.day_ahead")[0][0]["price"] == 20.0
        finally:
            await cancel_and_wait(runner)

    asyncio.run(main())


def test_broker_unreachable_retries(caplog: pytest.LogCaptureFixture) -> None:
    from tests.ports import free_port

    params = MqttParams(host="127.0.0.1", port=free_port(), topic=TOPIC, timezone="UTC", reconnect_s=0.05)
    task = PricesMqtt("prices", params, SITE)
    cx = TaskContext("prices", Writes(), dt.datetime(2018, 6, 4, tzinfo=NY), logging.getLogger("t"))

    async def main() -> None:
        runner = asyncio.create_task(task.run(cx))
        await until(lambda: caplog.text.count("retrying in") >= 2, "two reconnect attempts")
        runner.cancel()

    with caplog.at_level(logging.WARNING):
        asyncio.run(main())
    assert not task.connected
