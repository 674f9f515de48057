"""Task ``localapi_amqp``: events and periodic telemetry to a topic exchange (aio-pika), commands from a queue.

Routing keys, on the durable topic exchange ``exchange``:
- ``<site>.event.<kind>``: every event of the scan's event stream (transition, trip, reset, cessation,
  limit, command, ...; runtime/eventstream.py), also those that start and end between two published
  images; ``message_id`` is the event's sequence number, ``type`` ``event``; a hole in the stream is
  published as ``<site>.event.gap`` (``message_id`` ``gap-<from>-<to>``);
- ``<site>.telemetry`` every ``interval_s``: the public tags, ``type`` ``telemetry``;
- ``<site>.error``: the answer to a rejected command.
Every message is persistent (delivery mode 2) and published with publisher confirms; it leaves the
bounded outbox (outbox.py, a SQLite file under ``state_dir``) only when the broker confirmed it, so a link
that drops mid-publish resends the same bytes after the reconnect, and a task process killed with events
in the outbox sends them after its restart (at-least-once, in order). Reconnect: ``reconnect_s`` doubling up to
``reconnect_max_s``. With ``command_queue`` set, commands are consumed from that durable queue (bound to
``<site>.set.mode`` and ``<site>.set.trip_reset``), validated like MQTT's and sent to the scan; the scan's
answer ``{"routing_key", "accepted", "reason"}`` goes to the message's ``reply_to`` (default exchange) with
its ``correlation_id``, and a message without ``reply_to`` to ``<site>.response``.

On a depot (``evses:``) what belongs to one EVSE goes under ``<site>.evse.<n>.``: its events (the event's
source is ``evse<n>.<component>``) as ``<site>.evse.<n>.event.<kind>``, its telemetry (``tags``) as
``<site>.evse.<n>.telemetry``, its mode requests from ``<site>.evse.<n>.set.mode`` (sent with ``evse: n``);
the site's own events, its telemetry (``site_tags``), trip resets and ``<site>.set.connection`` (the
connection limits, where this interface carries them: connection.py) stay at ``<site>.``. A consumer of
every event binds ``<site>.#.event.#``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import ssl
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from runtime.api import SiteInfo
from runtime.tags import TagSpec
from runtime.tasks.base import Task, TaskContext, register_task
from runtime.tasks.localapi.cancel import still_running
from runtime.tasks.localapi.connection import ConnectionLimit, connection_specs
from runtime.tasks.localapi.linkstate import connected_spec, publish_state, queue_spec
from runtime.tasks.localapi.outbox import Outbox, Outgoing
from runtime.tasks.localapi.requests import (
    InterfaceParams,
    Requests,
    evse_arg,
    parse_mode_request,
    parse_trip_reset,
)
from runtime.tasks.localapi.telemetry import DEFAULT_TAGS, SITE_TAGS, TagList, public_tags, tag_json

log = logging.getLogger("v2g_plc.localapi.amqp")


class AmqpApiParams(InterfaceParams):
    url: str = Field("amqp://guest:guest@127.0.0.1:5672/", description="amqp:// or amqps:// broker URL")
    exchange: str = Field("v2g", min_length=1, max_length=200)
    site: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]+$", description="routing key prefix (default: name)")
    tags: TagList = Field(default_factory=lambda: list(DEFAULT_TAGS), description="tags in telemetry (each EVSE's)")
    site_tags: TagList = Field(default_factory=lambda: list(SITE_TAGS), description="a depot's site-level tags")
    interval_s: float = Field(10.0, ge=0.05, le=3600, description="telemetry period")
    buffer: int = Field(10_000, ge=10, le=1_000_000, description="outbox bound (messages)")
    reconnect_s: float = Field(1.0, gt=0, le=60)
    reconnect_max_s: float = Field(30.0, gt=0, le=600)
    confirm_timeout_s: float = Field(10.0, gt=0, le=120, description="a publish not confirmed by then is resent")
    command_queue: str | None = Field(None, min_length=1, max_length=200, description="consume mode requests")
    tls_ca: str | None = Field(
        None, description="CA file of the broker's certificate (amqps://; default: the system's)"
    )
    tls_cert: str | None = Field(None, description="client certificate, for a broker that asks for one (amqps://)")
    tls_key: str | None = Field(None, description="private key of tls_cert")
    state_dir: str = Field("var/localapi", min_length=1, description="the outbox file (relative: to the site file)")

    @model_validator(mode="after")
    def _tls_needs_amqps(self) -> AmqpApiParams:
        if (self.tls_ca or self.tls_cert) and not self.url.startswith("amqps://"):
            raise ValueError("tls_ca/tls_cert need an amqps:// url (TLS is never silently off)")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        return self


@register_task("localapi_amqp")
class AmqpApi(Task):
    """Publishes events (sequence number as message_id) and telemetry with confirms; consumes commands."""

    Params = AmqpApiParams
    params: AmqpApiParams
    events = True  # every event of the scan's stream goes out, not only what two images show

    def __init__(self, name: str, params: AmqpApiParams, site: SiteInfo):
        super().__init__(name, params, site)
        p = self.params
        self.key = p.site or (re.sub(r"[^A-Za-z0-9_-]", "_", site.name) or "site")
        state = Path(p.state_dir)
        self.outbox_path = state if state.is_absolute() else site.base_dir / state
        self.outbox: Outbox | None = None  # opened by run(): the file is the task process's, not check's
        self.events_seen = 0  # events taken from the stream
        self.connected = False
        self.published = 0  # confirmed by the broker
        self.rejected = 0  # commands refused
        self.linked = False
        self.requests: Requests | None = None
        self.connection = ConnectionLimit(p.connection) if p.connection is not None else None
        self.now_us = 0  # the cycle clock of the latest publication (a connection limit's expiry counts on it)

    def declare(self) -> list[TagSpec]:
        return [
            connected_spec("amqp"),
            queue_spec("amqp.outbox", "messages in the AMQP outbox, not yet confirmed"),
            *(connection_specs() if self.connection is not None else []),
        ]

    def _link_state(self, cx: TaskContext) -> dict[str, object]:
        self.now_us = cx.now_us
        conn = self.connection.values(cx.now_us) if self.connection is not None else {}
        return {
            "amqp.connected": self.connected,
            "amqp.outbox": len(self.outbox) if self.outbox is not None else 0,
            **conn,
        }

    def event_key(self, e: dict[str, Any]) -> str:
        """The routing key of one event: under its EVSE's ``evse.<n>.`` where its source is one of them."""
        kind = re.sub(r"[^A-Za-z0-9_-]", "_", str(e.get("kind", "event")))
        m = re.match(r"evse(\d+)\.", str(e.get("source", "")))
        if self.params.evses and m and int(m.group(1)) in self.params.evses:
            return f"{self.key}.evse.{int(m.group(1))}.event.{kind}"
        return f"{self.key}.event.{kind}"

    def telemetry(self, image: Any, now_us: int) -> list[Outgoing]:
        """The telemetry messages of one image: the site's, and on a depot one per EVSE."""
        p = self.params
        groups: dict[int | None, dict[str, Any]] = {}
        for n, plain, name in public_tags(p.tags, p.site_tags, p.evses):
            groups.setdefault(n, {})[plain] = tag_json(image.tag(name))
        out = []
        for n, tags in groups.items():
            key = f"{self.key}.telemetry" if n is None else f"{self.key}.evse.{n}.telemetry"
            doc = {"site": self.key, **({"evse": n} if n is not None else {}), "t": now_us / 1e6, "tags": tags}
            out.append(Outgoing(key, json.dumps(doc).encode(), False))
        return out

    # -- producing (independent of the link) --------------------------------------------------------
    async def _events(self, cx: TaskContext) -> None:
        """Every event of the scan's stream into the outbox, in order (sorted keys: a resend is byte-identical)."""
        while True:
            e = await cx.next_event()
            if e.get("kind") == "gap":
                mid = f"gap-{e.get('from')}-{e.get('to')}"
                log.error("AMQP: scan events %s-%s were lost before the outbox", e.get("from"), e.get("to"))
            else:
                mid = str(e.get("seq"))
            body = json.dumps({"site": self.key, **e}, default=str, sort_keys=True).encode()
            self._put(Outgoing(self.event_key(e), body, True, mid))
            self.events_seen += 1

    async def _telemetry(self, cx: TaskContext) -> None:
        """The public tags every ``interval_s`` (real time: a pacing, not a clock of the site)."""
        loop = asyncio.get_running_loop()
        next_telemetry = loop.time()
        while True:
            image = await cx.next_image()
            if loop.time() >= next_telemetry:
                next_telemetry = loop.time() + self.params.interval_s
                for msg in self.telemetry(image, cx.now_us):
                    self._put(msg)

    def _put(self, msg: Outgoing) -> None:
        assert self.outbox is not None
        over = self.outbox.over_bound
        self.outbox.put(msg)
        if self.outbox.over_bound > over:
            log.warning("AMQP outbox over its bound with events only (%d); events are kept", len(self.outbox))

    # -- the link --------------------------------------------------------------------------------------
    async def run(self, cx: TaskContext) -> None:
        p = self.params
        self.requests = Requests(cx, "amqp", p)
        self.outbox = Outbox(p.buffer, self.outbox_path / "amqp-outbox.sqlite")
        if len(self.outbox):
            log.info("AMQP outbox: %d messages from before the restart go first", len(self.outbox))
        producers = [
            asyncio.create_task(self._events(cx)),
            asyncio.create_task(self._telemetry(cx)),
            asyncio.create_task(publish_state(cx, lambda: self._link_state(cx))),
        ]
        backoff = p.reconnect_s
        try:
            while True:
                try:
                    await self._session()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # aio-pika/aiormq raise many kinds on a lost link
                    still_running()
                    log.warning("AMQP link: %s: %s; retrying in %.1f s", type(exc).__name__, exc, backoff)
                finally:
                    self.connected = False
                await asyncio.sleep(backoff)
                backoff = p.reconnect_s if self.linked else min(backoff * 2, p.reconnect_max_s)
        finally:
            for job in producers:
                job.cancel()
            await asyncio.wait(producers, timeout=2)
            await self.requests.close()
            self.outbox.close()

    def _tls(self) -> ssl.SSLContext | None:
        """The TLS context of an amqps:// link: the broker verified against ``tls_ca``, our certificate if set."""
        p = self.params
        if not p.url.startswith("amqps://"):
            return None

        def path(name: str | None) -> str | None:
            return None if name is None else str(Path(name) if Path(name).is_absolute() else self.base_dir / name)

        ctx = ssl.create_default_context(cafile=path(p.tls_ca))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if p.tls_cert:
            ctx.load_cert_chain(path(p.tls_cert), path(p.tls_key))  # type: ignore[arg-type]
        return ctx

    async def _session(self) -> None:
        """One connection: declare, publish until the link fails; always closed within a bound."""
        import aio_pika  # task process only

        p = self.params
        self.linked = False  # this session reached the broker: the next retry starts the backoff over
        connection = await aio_pika.connect(p.url, timeout=p.confirm_timeout_s, ssl_context=self._tls())
        jobs: list[asyncio.Future[Any]] = []
        try:
            lost = asyncio.Event()
            connection.close_callbacks.add(lambda *_: lost.set())
            channel = await connection.channel(publisher_confirms=True)
            exchange = await channel.declare_exchange(p.exchange, aio_pika.ExchangeType.TOPIC, durable=True)
            if p.command_queue:
                queue = await channel.declare_queue(p.command_queue, durable=True)
                for command in ("mode", "trip_reset", "connection"):
                    await queue.bind(exchange, f"{self.key}.set.{command}")
                if p.evses:
                    await queue.bind(exchange, f"{self.key}.evse.*.set.mode")
                jobs.append(asyncio.ensure_future(self._consume(queue, exchange, channel)))
            still_running()
            self.connected = self.linked = True
            log.info("AMQP connected: exchange %s, routing %s.*", p.exchange, self.key)
            publisher = asyncio.ensure_future(self._publish(exchange, aio_pika))
            jobs += [publisher, asyncio.ensure_future(lost.wait())]
            # an idle publisher would not notice a dead link: the connection's close ends the session too
            await asyncio.wait(jobs, return_when=asyncio.FIRST_COMPLETED)
            for j in jobs:
                if j.done() and not j.cancelled() and j.exception() is not None:
                    raise j.exception()  # type: ignore[misc]
            raise ConnectionError("connection closed")
        finally:
            for j in jobs:
                j.cancel()
            if jobs:  # bounded: a publish waiting for its confirm may take a while to unwind
                await asyncio.wait(jobs, timeout=2)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), 3)

    async def _publish(self, exchange: Any, aio_pika: Any) -> None:
        """Send the outbox head, wait for the broker's confirm, then drop it; resend the same on failure."""
        assert self.outbox is not None
        while True:
            msg = self.outbox.peek()
            if msg is None:
                await self.outbox.wait()
                continue
            await exchange.publish(
                aio_pika.Message(
                    msg.body,
                    content_type="application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    message_id=msg.message_id,
                    type="event" if msg.event else "telemetry",
                ),
                routing_key=msg.routing_key,
                timeout=self.params.confirm_timeout_s,
            )
            self.outbox.confirmed(msg)
            self.published += 1

    async def _consume(self, queue: Any, exchange: Any, channel: Any) -> None:
        import aio_pika

        async with queue.iterator() as it:
            async for message in it:
                async with message.process(requeue=False):  # a command is answered once, never retried
                    key = message.routing_key or ""
                    try:
                        ok, reason = await self._command(message.body, key)
                    except ValueError as exc:
                        self.rejected += 1
                        log.warning("AMQP command rejected: %s", exc)
                        body = json.dumps({"routing_key": key, "error": str(exc)}).encode()
                        await exchange.publish(
                            aio_pika.Message(body, content_type="application/json", type="error"),
                            routing_key=f"{self.key}.error",
                        )
                        continue
                    answer = aio_pika.Message(
                        json.dumps({"routing_key": key, "accepted": ok, "reason": reason}).encode(),
                        content_type="application/json",
                        type="response",
                        correlation_id=message.correlation_id,
                    )
                    if message.reply_to:  # RabbitMQ's RPC pattern: the default exchange routes by queue name
                        await channel.default_exchange.publish(answer, routing_key=message.reply_to)
                    else:
                        await exchange.publish(answer, routing_key=f"{self.key}.response")

    async def _command(self, payload: bytes, routing_key: str) -> tuple[bool, str]:
        """Validate (ValueError says what is wrong) and send to the scan; (accepted, reason) is its answer."""
        assert self.requests is not None
        m = re.fullmatch(re.escape(self.key) + r"(?:\.evse\.([^.]+))?\.set\.(\w+)", routing_key)
        named, command = (m.group(1), m.group(2)) if m else (None, "")
        if command == "mode":
            evse = evse_arg(named, self.params.evses, f"{self.key}.evse.<n>.set.mode")
            return await self.requests.mode(parse_mode_request(payload, f"amqp:{routing_key}", evse))
        if command == "trip_reset" and named is None:
            parse_trip_reset(payload)
            return await self.requests.reset_trip(f"amqp:{routing_key}")
        if command == "connection" and named is None:
            if self.connection is None:
                raise ValueError("this interface does not carry the connection limits (params connection)")
            self.connection.apply(payload, self.now_us, f"amqp:{routing_key}")
            return True, ""
        raise ValueError(
            "unknown command (routing keys: <site>.set.mode, <site>.evse.<n>.set.mode, <site>.set.trip_reset, "
            "<site>.set.connection)"
        )
