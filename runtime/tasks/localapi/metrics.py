"""Task ``localapi_metrics``: a Prometheus ``/metrics`` endpoint (prometheus_client) in the task process.

The scan never serves HTTP; it publishes its statistics with the image (``runtime.lateness``,
``runtime.cycle_time``, ``runtime.overruns``) and this task turns them into metrics. Names follow the
Prometheus conventions: base units (seconds), ``_total`` for counters, ``v2g_plc_`` prefix.

Event counters (events by kind, trips by code, mode transitions, commands by kind) count the scan's
event stream (runtime/eventstream.py), so a trip that starts and clears between two publications is
counted too; a hole in the stream counts its lost events in ``v2g_plc_events_lost_total``. Interim
until the scan hands over its own histograms: lateness and cycle time are observed once per publication
the task receives (one per cycle while the channel keeps up).

On a depot (``evses:``) the per-charger series carry an ``evse`` label: the mode and trip gauges, each
EVSE's ``tags`` (the site's ``site_tags`` with ``evse=""``), trips and mode transitions by the EVSE their
event came from (its source ``evse<n>.<component>``; ``""`` for the site's own). A single site's series are
unchanged (no ``evse`` label).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Annotated, Any

from pydantic import Field

from runtime.api import Params, SiteInfo
from runtime.tags import Image, Quality
from runtime.tasks.base import Task, TaskContext, register_task
from runtime.tasks.localapi.telemetry import DEFAULT_TAGS, SITE_TAGS, TagList, public_tags

log = logging.getLogger("v2g_plc.localapi.metrics")

# Resolve 0.05-20 ms (scan lateness and compute time at a 10-20 ms period).
BUCKETS_S: tuple[float, ...] = (0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05)


# The links other tasks publish as shared tags (runtime/tasks/ocpp/task.py, localapi/linkstate.py): a link
# whose task is absent or dead (tag bad or stale) has no sample, so an alert can tell "down" from "unknown".
LINKS: tuple[str, ...] = ("ocpp", "mqtt", "amqp")
QUEUES: dict[str, str] = {"ocpp": "ocpp.queue", "amqp": "amqp.outbox"}


def link_metrics(image: Image) -> Iterator[Any]:
    """Link state and queue depths of the back office and the buses, from their tags."""
    from prometheus_client.core import GaugeMetricFamily

    up = GaugeMetricFamily("v2g_plc_link_up", "1 while the link to the peer is open", labels=["link"])
    for link in LINKS:
        t = image.tag(f"{link}.connected")
        if t.good and t.value is not None:
            up.add_metric([link], 1.0 if t.value else 0.0)
    yield up
    accepted = GaugeMetricFamily("v2g_plc_ocpp_accepted", "1 while boot is accepted and the CSMS heard lately")
    t = image.tag("ocpp.accepted")
    if t.good and t.value is not None:
        accepted.add_metric([], 1.0 if t.value else 0.0)
    yield accepted
    queue = GaugeMetricFamily("v2g_plc_link_queue_messages", "messages waiting for the peer", labels=["link"])
    for link, tag in QUEUES.items():
        t = image.tag(tag)
        if t.good and isinstance(t.value, int | float):
            queue.add_metric([link], float(t.value))
    yield queue


class MetricsParams(Params):
    host: str = Field("127.0.0.1", description="bind address (loopback unless a scraper elsewhere needs it)")
    port: int = Field(9108, ge=1, le=65535)
    tags: TagList = Field(
        default_factory=lambda: list(DEFAULT_TAGS), description="tags exported as gauges (each EVSE's)"
    )
    site_tags: TagList = Field(default_factory=lambda: list(SITE_TAGS), description="a depot's site-level tags")
    evses: list[Annotated[int, Field(ge=1, le=999)]] = Field(
        default_factory=list, max_length=200, description="EVSE ids served; filled from evses: ([] = single site)"
    )


@register_task("localapi_metrics")
class Metrics(Task):
    """Serves scan statistics, tag values and qualities, mode, trips and event counters, and the link
    state and queue depths of OCPP, MQTT and AMQP."""

    Params = MetricsParams
    params: MetricsParams
    events = True  # counters count the scan's events, not changes between images

    def __init__(self, name: str, params: MetricsParams, site: SiteInfo):
        super().__init__(name, params, site)
        self.port: int | None = None
        self._lock = threading.Lock()  # the HTTP thread collects while the loop updates
        self._image = Image({})
        self._now_us = -1
        self._events: Counter[str] = Counter()
        self._trips: Counter[tuple[str, ...]] = Counter()  # by code (and EVSE on a depot)
        self._transitions: Counter[tuple[str, ...]] = Counter()  # by destination state (and EVSE on a depot)
        self.evse_label = ["evse"] if params.evses else []  # a depot's per-charger series carry it
        self.public = public_tags(params.tags, params.site_tags, params.evses)
        self._commands: Counter[str] = Counter()  # by command kind
        self._lost = 0

    def _observe(self, image: Image, now_us: int, lateness: Any, cycle_time: Any) -> None:
        for tv, hist in ((image.tag("runtime.lateness"), lateness), (image.tag("runtime.cycle_time"), cycle_time)):
            if tv.good and isinstance(tv.value, int | float):
                hist.observe(float(tv.value))
        with self._lock:
            self._image = image
            self._now_us = now_us

    def _count(self, e: dict[str, Any]) -> None:
        """One event of the scan's stream into the counters."""
        kind = str(e.get("kind", ""))
        data = e.get("data") or {}
        with self._lock:
            if kind == "gap":
                self._lost += int(e.get("dropped", 0))
                return
            self._events[kind] += 1
            evse = self._evse_of(str(e.get("source", "")))
            if kind == "trip":
                self._trips[(str(data.get("code", "")), *evse)] += 1
            elif kind == "transition":
                self._transitions[(str(data.get("dest", "")), *evse)] += 1
            elif kind == "command":
                self._commands[str(e.get("message", "")).split(" ", 1)[0]] += 1

    def _evse_of(self, source: str) -> tuple[str, ...]:
        """The ``evse`` label value of an event's source on a depot (none on a single site)."""
        if not self.evse_label:
            return ()
        m = re.match(r"evse(\d+)\.", source)
        return (m.group(1),) if m else ("",)

    def collect(self) -> Iterator[Any]:
        """Called by prometheus_client at every scrape (HTTP thread)."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        with self._lock:
            image, now_us = self._image, self._now_us
            events, trips = dict(self._events), dict(self._trips)
            transitions, commands, lost = dict(self._transitions), dict(self._commands), self._lost
        period = self.site.period_us
        cycles = CounterMetricFamily("v2g_plc_cycles", "scan cycles since start (from the cycle clock)")
        cycles.add_metric([], now_us // period + 1 if now_us >= 0 else 0)
        yield cycles
        overruns = CounterMetricFamily("v2g_plc_scan_overruns", "cycles that ended after the next deadline")
        tv = image.tag("runtime.overruns")
        overruns.add_metric([], float(tv.value) if tv.good and tv.value is not None else 0.0)
        yield overruns
        alive = GaugeMetricFamily("v2g_plc_task_process_alive", "1 while the scan hears the task process")
        alive.add_metric([], 1.0 if image.value("runtime.task_process_alive") else 0.0)
        yield alive
        lab = self.evse_label
        chargers = [(f"evse{n}.", [str(n)]) for n in self.params.evses] or [("", [])]
        mode = GaugeMetricFamily(
            "v2g_plc_mode", "current operating mode (1 for the current one)", labels=["mode", *lab]
        )
        trip = GaugeMetricFamily("v2g_plc_trip", "1 while a trip is latched, by code", labels=["code", *lab])
        for prefix, evse in chargers:
            if image.tag(prefix + "mode.state").good:
                mode.add_metric([str(image.value(prefix + "mode.state")), *evse], 1.0)
            if image.value(prefix + "safety.trip"):
                trip.add_metric([str(image.value(prefix + "safety.trip")), *evse], 1.0)
        yield mode
        yield trip
        value = GaugeMetricFamily("v2g_plc_tag_value", "value of a good numeric or boolean tag", labels=["tag", *lab])
        quality = GaugeMetricFamily(
            "v2g_plc_tag_quality", "1 for the tag's current quality", labels=["tag", "quality", *lab]
        )
        for n, plain, name in self.public:
            evse = ([str(n)] if n is not None else [""]) if lab else []
            t = image.tag(name)
            if t.good and isinstance(t.value, int | float):  # bool is an int
                value.add_metric([plain, *evse], float(t.value))
            for q in Quality:
                quality.add_metric([plain, q.value, *evse], 1.0 if t.quality is q else 0.0)
        yield value
        yield quality
        ev = CounterMetricFamily("v2g_plc_events", "site events seen, by kind", labels=["kind"])
        for kind, n in sorted(events.items()):
            ev.add_metric([kind], n)
        yield ev
        tr = CounterMetricFamily("v2g_plc_trips", "trips seen, by code", labels=["code", *lab])
        for key, n in sorted(trips.items()):
            tr.add_metric(list(key), n)
        yield tr
        mt = CounterMetricFamily(
            "v2g_plc_mode_transitions", "mode transitions, by the state entered", labels=["to", *lab]
        )
        for key, n in sorted(transitions.items()):
            mt.add_metric(list(key), n)
        yield mt
        cm = CounterMetricFamily("v2g_plc_commands", "commands the scan applied, by kind", labels=["kind"])
        for name, n in sorted(commands.items()):
            cm.add_metric([name], n)
        yield cm
        yield from link_metrics(image)
        ls = CounterMetricFamily("v2g_plc_events_lost", "events lost before this task saw them (stream gaps)")
        ls.add_metric([], lost)
        yield ls

    async def run(self, cx: TaskContext) -> None:
        from prometheus_client import CollectorRegistry, Histogram, start_http_server

        registry = CollectorRegistry(auto_describe=False)
        lateness = Histogram(
            "v2g_plc_scan_lateness_seconds",
            "how late a cycle woke after its deadline",
            buckets=BUCKETS_S,
            registry=registry,
        )
        cycle_time = Histogram(
            "v2g_plc_scan_cycle_time_seconds", "compute time of a cycle", buckets=BUCKETS_S, registry=registry
        )
        registry.register(self)  # a collector: collect() is all it needs
        server, thread = start_http_server(self.params.port, self.params.host, registry)
        self.port = self.params.port
        log.info("metrics on http://%s:%d/metrics", self.params.host, self.params.port)

        async def count_events() -> None:
            while True:
                self._count(await cx.next_event())

        counter = asyncio.create_task(count_events())
        try:
            while True:
                image = await cx.next_image()
                self._observe(image, cx.now_us, lateness, cycle_time)
        finally:
            counter.cancel()
            await asyncio.wait({counter}, timeout=2)
            server.shutdown()
            server.server_close()
            with contextlib.suppress(Exception):
                await asyncio.to_thread(thread.join, 5)
