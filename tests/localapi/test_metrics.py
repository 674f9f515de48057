"""The Prometheus endpoint scraped over HTTP on loopback: scan histograms, counters, tag values and
qualities, mode, trips and event counters."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from runtime.api import SiteInfo
from runtime.tags import Image, Quality, TagValue
from runtime.tasks.base import TASKS, TaskContext
from runtime.tasks.localapi.metrics import Metrics, MetricsParams
from tests.ports import free_port
from tests.waiting import cancel_and_wait, until

SITE = SiteInfo("m", 240.0, 60.0, 20_000)


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        assert r.status == 200
        text = r.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def image(lateness: float, mode: str, trip: str = "", **extra: Any) -> Image:
    tags: dict[str, TagValue] = {
        "runtime.lateness": TagValue(lateness),
        "runtime.cycle_time": TagValue(0.0004),
        "runtime.overruns": TagValue(3),
        "runtime.task_process_alive": TagValue(True),
        "mode.state": TagValue(mode),
        "safety.trip": TagValue(trip),
        "grid.voltage": TagValue(241.5),
        "inverter.power": TagValue(-7000.0),
        "ev.soc": TagValue(None, Quality.BAD),
    }
    tags.update({k: TagValue(v) for k, v in extra.items()})
    return Image(tags)


def test_registered() -> None:
    assert TASKS["localapi_metrics"] is Metrics


def test_scrape() -> None:
    port = free_port()
    params = MetricsParams(port=port, tags=["grid.voltage", "inverter.power", "ev.soc", "inverter.enable"])
    task = Metrics("metrics", params, SITE)
    cx = TaskContext("metrics", lambda *a: None, dt.datetime(2027, 1, 4), logging.getLogger("t"), events=True)
    stream = [
        ("transition", "idle -> charge", {"dest": "charge"}),
        ("trip", "trip ov2", {"code": "ov2"}),
        ("transition", "charge -> safe_state", {"dest": "safe_state"}),
        ("reset", "trip ov2 cleared", {"code": "ov2"}),
        ("trip", "trip uf1", {"code": "uf1"}),  # starts and clears between two images: no image shows it
        ("reset", "trip uf1 cleared", {"code": "uf1"}),
        ("command", "mode_request asked by mqtt:v2g/site/set/mode", {"mode": "local"}),
    ]

    async def main() -> None:
        runner = asyncio.create_task(task.run(cx))
        try:
            await until(lambda: task.port is not None, "the endpoint")
            for seq, (kind, message, data) in enumerate(stream):
                cx._event(
                    {"seq": seq, "k": seq, "t": 0.0, "kind": kind, "source": "s", "message": message, "data": data}
                )
            cx._gap = (100, 103)  # three events lost before this task saw them
            cx._event_ready.set()
            await until(lambda: task._lost == 3 and sum(task._events.values()) == len(stream), "the counters")
            steps = [
                (0.00008, "idle", ""),
                (0.0003, "charge", ""),
                (0.015, "charge", "ov2"),
                (0.0001, "safe_state", ""),
            ]
            links = {"ocpp.connected": True, "ocpp.accepted": False, "ocpp.queue": 4, "mqtt.connected": False}
            links |= {"amqp.outbox": 0}  # amqp.connected absent (no such task): no sample, not a false 0
            for k, (late, mode, trip) in enumerate(steps):
                await cx._publish(image(late, mode, trip, **(links if k == 3 else {})), k * SITE.period_us)
                await until(lambda k=k: task._now_us == k * SITE.period_us, "the task to see the image")
            m = await asyncio.to_thread(scrape, port)
        finally:
            await cancel_and_wait(runner, 10)
        h = "v2g_plc_scan_lateness_seconds"
        assert m[(h + "_count", ())] == 4
        assert m[(h + "_bucket", (("le", "0.0001"),))] == 2  # 0.08 ms and 0.1 ms
        assert m[(h + "_bucket", (("le", "0.0005"),))] == 3
        assert m[(h + "_bucket", (("le", "0.01"),))] == 3
        assert m[(h + "_bucket", (("le", "0.02"),))] == 4  # the 15 ms one
        assert m[("v2g_plc_scan_cycle_time_seconds_count", ())] == 4
        assert m[("v2g_plc_cycles_total", ())] == 4
        assert m[("v2g_plc_scan_overruns_total", ())] == 3
        assert m[("v2g_plc_task_process_alive", ())] == 1
        assert m[("v2g_plc_mode", (("mode", "safe_state"),))] == 1
        assert ("v2g_plc_trip", (("code", "ov2"),)) not in m  # reset by the last image
        assert m[("v2g_plc_tag_value", (("tag", "grid.voltage"),))] == 241.5
        assert m[("v2g_plc_tag_value", (("tag", "inverter.power"),))] == -7000.0  # both signs pass through
        assert ("v2g_plc_tag_value", (("tag", "ev.soc"),)) not in m  # bad: no value, only its quality
        assert m[("v2g_plc_tag_quality", (("quality", "bad"), ("tag", "ev.soc")))] == 1
        assert m[("v2g_plc_tag_quality", (("quality", "good"), ("tag", "ev.soc")))] == 0
        assert m[("v2g_plc_tag_quality", (("quality", "bad"), ("tag", "inverter.enable")))] == 1  # absent = bad
        assert m[("v2g_plc_events_total", (("kind", "transition"),))] == 2
        assert m[("v2g_plc_events_total", (("kind", "trip"),))] == 2
        assert m[("v2g_plc_events_total", (("kind", "reset"),))] == 2
        assert m[("v2g_plc_trips_total", (("code", "ov2"),))] == 1
        assert m[("v2g_plc_trips_total", (("code", "uf1"),))] == 1  # seen only in the stream
        assert m[("v2g_plc_mode_transitions_total", (("to", "safe_state"),))] == 1
        assert m[("v2g_plc_commands_total", (("kind", "mode_request"),))] == 1
        assert m[("v2g_plc_events_lost_total", ())] == 3
        assert m[("v2g_plc_link_up", (("link", "ocpp"),))] == 1
        assert m[("v2g_plc_link_up", (("link", "mqtt"),))] == 0
        assert ("v2g_plc_link_up", (("link", "amqp"),)) not in m
        assert m[("v2g_plc_ocpp_accepted", ())] == 0
        assert m[("v2g_plc_link_queue_messages", (("link", "ocpp"),))] == 4
        assert m[("v2g_plc_link_queue_messages", (("link", "amqp"),))] == 0

    asyncio.run(main())


def test_scrape_a_depot_with_an_evse_label() -> None:
    """Each EVSE's mode, trip, tags, trips and transitions carry its number; the site's tags evse=""."""
    port = free_port()
    params = MetricsParams(port=port, tags=["inverter.power", "ev.soc"], site_tags=["meter.power"], evses=[1, 2, 3])
    task = Metrics("metrics", params, SITE)
    cx = TaskContext("metrics", lambda *a: None, dt.datetime(2027, 1, 4), logging.getLogger("t"), events=True)
    tags: dict[str, TagValue] = {"meter.power": TagValue(48_000.0), "runtime.lateness": TagValue(0.0001)}
    for n, power, mode, trip in (
        (1, 7000.0, "charge", ""),
        (2, -4000.0, "safe_state", "comms_lost"),
        (3, 0.0, "idle", ""),
    ):
        tags |= {f"evse{n}.inverter.power": TagValue(power), f"evse{n}.ev.soc": TagValue(0.1 * n)}
        tags |= {f"evse{n}.mode.state": TagValue(mode), f"evse{n}.safety.trip": TagValue(trip)}
    stream = [
        ("trip", "evse2.safety", {"code": "comms_lost"}),
        ("transition", "evse2.modes", {"dest": "safe_state"}),
        ("transition", "evse1.modes", {"dest": "charge"}),
        ("limit", "allocator", {}),
    ]

    async def main() -> None:
        runner = asyncio.create_task(task.run(cx))
        try:
            await until(lambda: task.port is not None, "the endpoint")
            for seq, (kind, source, data) in enumerate(stream):
                cx._event({"seq": seq, "k": seq, "t": 0.0, "kind": kind, "source": source, "message": "", "data": data})
            await until(lambda: sum(task._events.values()) == len(stream), "the counters")
            await cx._publish(Image(tags), SITE.period_us)
            await until(lambda: task._now_us == SITE.period_us, "the task to see the image")
            m = await asyncio.to_thread(scrape, port)
        finally:
            await cancel_and_wait(runner, 10)
        for n, w in ((1, 7000.0), (2, -4000.0), (3, 0.0)):
            assert m[("v2g_plc_tag_value", (("evse", str(n)), ("tag", "inverter.power")))] == w
        assert m[("v2g_plc_tag_value", (("evse", ""), ("tag", "meter.power")))] == 48_000.0
        assert m[("v2g_plc_tag_value", (("evse", "3"), ("tag", "ev.soc")))] == pytest.approx(0.3)
        assert m[("v2g_plc_mode", (("evse", "2"), ("mode", "safe_state")))] == 1
        assert m[("v2g_plc_mode", (("evse", "1"), ("mode", "charge")))] == 1
        assert m[("v2g_plc_trip", (("code", "comms_lost"), ("evse", "2")))] == 1
        assert not [k for k in m if k[0] == "v2g_plc_trip" and ("evse", "1") in k[1]]
        assert m[("v2g_plc_trips_total", (("code", "comms_lost"), ("evse", "2")))] == 1
        assert m[("v2g_plc_mode_transitions_total", (("evse", "1"), ("to", "charge")))] == 1
        assert m[("v2g_plc_events_total", (("kind", "limit"),))] == 1  # the site's events: no EVSE

    asyncio.run(main())
