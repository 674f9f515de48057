"""The bus tasks' link state as shared tags, so the metrics task (and the HMI, the scan's log) see it.

Tasks share nothing but tags: the MQTT and AMQP tasks publish ``mqtt.connected`` / ``amqp.connected`` and
``amqp.outbox`` as the OCPP task publishes ``ocpp.connected`` / ``ocpp.queue``. A value goes out when it
changes and at least once a second of the cycle clock (``REFRESH_US``) so a dead task's tags go stale
(``STALE_S``) instead of lying.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from runtime.tags import US, Direction, TagSpec, TagType
from runtime.tasks.base import TaskContext

STALE_S = 10.0
REFRESH_US = US


def connected_spec(link: str) -> TagSpec:
    return TagSpec(f"{link}.connected", TagType.BOOL, "", Direction.SHARED, False, STALE_S, f"{link} broker link up")


def queue_spec(name: str, what: str) -> TagSpec:
    return TagSpec(name, TagType.INT, "", Direction.SHARED, 0, STALE_S, what)


async def publish_state(cx: TaskContext, read: Callable[[], Mapping[str, Any]]) -> None:
    """Write ``read()``'s tags on change and every ``REFRESH_US``, after each publication, forever."""
    sent: dict[str, Any] = {}
    at = -REFRESH_US
    while True:
        await cx.next_image()
        values = dict(read())
        if values != sent or cx.now_us - at >= REFRESH_US:
            for tag, value in values.items():
                cx.write(tag, value)
            sent, at = values, cx.now_us
