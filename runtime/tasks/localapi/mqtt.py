"""Task ``localapi_mqtt``: the site's public tags on MQTT (aiomqtt), commands validated from a topic.

Topic layout, under ``<prefix>/<site>/`` (``site`` defaults to the site's name):
- ``availability``: ``online`` (retained) while connected; the broker publishes the last will
  ``offline`` (retained) when the link drops without a goodbye; a clean stop publishes ``offline`` itself.
- ``state/<tag>``: ``{"value", "quality", "t"}`` retained, QoS ``qos``, on every change of value or quality
  and at most once per ``interval_s`` per tag; everything again after each reconnect.
- ``set/mode``: a mode request ``{"mode", "setpoint_w", "expiry_s", "limit_pct"}`` (requests.py), sent to
  the scan as a ``mode_request`` command; ``set/trip_reset`` (``{}``): a trip reset, only with
  ``trip_reset: true``. The scan's answer goes to ``response`` (``{"topic", "accepted", "reason"}``, not
  retained) and, for an MQTT 5 client that set a response topic, there too with its correlation data.
  Anything invalid is answered on ``error`` (``{"topic", "error"}``, not retained) and logged; nothing is
  sent to the scan.
- On a depot (``evses:``): the site's ``site_tags`` on ``state/<tag>``, each EVSE's ``tags`` on
  ``evse/<n>/state/<tag>``, its mode requests on ``evse/<n>/set/mode`` (sent with ``evse: n``); ``set/mode``
  alone is an error there. ``set/connection`` (``{"import_w", "export_w", "expiry_s"}``) sets the
  connection's limits where this interface carries them (``connection:``, connection.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import re
from pathlib import Path
from typing import Any

from pydantic import Field

from runtime.api import SiteInfo
from runtime.tags import TagSpec
from runtime.tasks.base import Task, TaskContext, register_task
from runtime.tasks.localapi.cancel import still_running
from runtime.tasks.localapi.connection import ConnectionLimit, connection_specs
from runtime.tasks.localapi.homeassistant import discovery
from runtime.tasks.localapi.linkstate import connected_spec, publish_state
from runtime.tasks.localapi.requests import (
    InterfaceParams,
    Requests,
    evse_arg,
    parse_mode_request,
    parse_trip_reset,
)
from runtime.tasks.localapi.telemetry import DEFAULT_TAGS, SITE_TAGS, TagList, public_tags, tag_json

log = logging.getLogger("v2g_plc.localapi.mqtt")
_TOPIC_PART = r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$"


class MqttApiParams(InterfaceParams):
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    prefix: str = Field("v2g", pattern=_TOPIC_PART, description="first topic level(s)")
    site: str | None = Field(None, pattern=_TOPIC_PART, description="topic level of this site (default: its name)")
    tags: TagList = Field(default_factory=lambda: list(DEFAULT_TAGS), description="public tags (of each EVSE)")
    site_tags: TagList = Field(default_factory=lambda: list(SITE_TAGS), description="a depot's site-level tags")
    qos: int = Field(1, ge=0, le=2)
    interval_s: float = Field(1.0, ge=0.05, le=3600, description="per-tag minimum time between publications")
    keepalive_s: int = Field(30, ge=5, le=3600)
    reconnect_s: float = Field(1.0, gt=0, le=60, description="first retry delay; doubles up to reconnect_max_s")
    reconnect_max_s: float = Field(30.0, gt=0, le=600)
    username: str | None = None
    password: str | None = None
    tls_ca: str | None = Field(None, description="CA file of the broker's certificate: enables TLS")
    tls_cert: str | None = Field(None, description="client certificate (if the broker asks for one)")
    tls_key: str | None = None
    ha_discovery: bool = Field(True, description="publish Home Assistant MQTT discovery configs (retained)")
    ha_prefix: str = Field("homeassistant", pattern=_TOPIC_PART, description="Home Assistant discovery prefix")
    ha_max_w: float | None = Field(
        None, gt=0, le=1_000_000, description="range of the Home Assistant power-request control (none: no control)"
    )


@register_task("localapi_mqtt")
class MqttApi(Task):
    """Publishes public tags retained with availability and last will; validates commands on set/mode."""

    Params = MqttApiParams
    params: MqttApiParams

    def __init__(self, name: str, params: MqttApiParams, site: SiteInfo):
        super().__init__(name, params, site)
        p = self.params
        site_level = p.site or (re.sub(r"[^A-Za-z0-9_-]", "_", site.name) or "site")
        self.base = f"{p.prefix}/{site_level}"
        self.node = re.sub(r"[^A-Za-z0-9_-]", "_", self.base)  # Home Assistant node id
        self.connected = False
        self.client: Any = None  # the live aiomqtt client (tests reach its socket to cut the link)
        self.rejected = 0
        self.requests: Requests | None = None
        self.connection = ConnectionLimit(p.connection) if p.connection is not None else None
        # (topic under base, site tag name) of everything published
        self.public = [
            (f"evse/{n}/state/{t}" if n is not None else f"state/{t}", name)
            for n, t, name in public_tags(p.tags, p.site_tags, p.evses)
        ]

    def declare(self) -> list[TagSpec]:
        return [connected_spec("mqtt"), *(connection_specs() if self.connection is not None else [])]

    def _link_state(self, cx: TaskContext) -> dict[str, object]:
        conn = self.connection.values(cx.now_us) if self.connection is not None else {}
        return {"mqtt.connected": self.connected, **conn}

    def _path(self, name: str | None) -> str | None:
        if name is None:
            return None
        path = Path(name)
        return str(path if path.is_absolute() else self.base_dir / path)

    async def run(self, cx: TaskContext) -> None:
        await asyncio.to_thread(importlib.import_module, "aiomqtt")  # off the loop: its heartbeat goes on
        import aiomqtt  # task process only

        p = self.params
        tls = None
        if p.tls_ca:
            tls = aiomqtt.TLSParameters(
                ca_certs=self._path(p.tls_ca), certfile=self._path(p.tls_cert), keyfile=self._path(p.tls_key)
            )
        self.requests = Requests(cx, "mqtt", p)
        state = asyncio.create_task(publish_state(cx, lambda: self._link_state(cx)))
        try:
            await self._link(cx, aiomqtt, tls)
        finally:
            state.cancel()
            await asyncio.wait({state}, timeout=2)
            await self.requests.close()

    async def _link(self, cx: TaskContext, aiomqtt: Any, tls: Any) -> None:
        """Connect, serve, and reconnect with backoff, forever."""
        p = self.params
        will = aiomqtt.Will(f"{self.base}/availability", b"offline", qos=1, retain=True)
        backoff = p.reconnect_s
        while True:
            try:
                async with aiomqtt.Client(
                    p.host,
                    p.port,
                    username=p.username,
                    password=p.password,
                    keepalive=p.keepalive_s,
                    will=will,
                    protocol=aiomqtt.ProtocolVersion.V5,  # response topic and correlation data on commands
                    tls_params=tls,
                    timeout=5,  # bounds every wait on the broker, the goodbye at a stop included
                ) as client:
                    self.client = client
                    try:
                        await client.publish(f"{self.base}/availability", b"online", qos=1, retain=True)
                        await client.subscribe(f"{self.base}/set/#", qos=1)
                        if p.evses:
                            await client.subscribe(f"{self.base}/evse/+/set/#", qos=1)
                        if p.ha_discovery:
                            for topic, cfg in self._discovery():
                                await client.publish(topic, json.dumps(cfg), qos=1, retain=True)
                        self.connected = True
                        backoff = p.reconnect_s
                        log.info("MQTT connected to %s:%d as %s", p.host, p.port, self.base)
                        still_running()
                        await self._session(client, cx)
                    except asyncio.CancelledError:  # a clean stop says offline itself, wherever it lands
                        with contextlib.suppress(Exception):
                            await asyncio.wait_for(
                                client.publish(f"{self.base}/availability", b"offline", qos=1, retain=True), 2
                            )
                        raise
            except aiomqtt.MqttError as exc:
                still_running()  # a stop whose goodbye failed is still a stop
                log.warning("MQTT link to %s:%d: %s; retrying in %.1f s", p.host, p.port, exc, backoff)
            finally:
                self.connected = False
                self.client = None
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, p.reconnect_max_s)

    def _discovery(self) -> list[tuple[str, dict[str, Any]]]:
        """Home Assistant: the site as one device; on a depot the site and one device per EVSE, each EVSE's
        controls on its own command topic, every entity available while the site is online."""
        p = self.params
        if not p.evses:
            return discovery(self.base, self.node, p.tags, p.ha_prefix, self.site.name, p.ha_max_w, p.trip_reset)
        out = discovery(
            self.base, self.node, p.site_tags, p.ha_prefix, self.site.name, None, p.trip_reset, controls=False
        )
        for n in p.evses:
            out += discovery(
                f"{self.base}/evse/{n}",
                f"{self.node}_evse{n}",
                p.tags,
                p.ha_prefix,
                f"{self.site.name} EVSE {n}",
                p.ha_max_w,
                availability=f"{self.base}/availability",
            )
        return out

    async def _session(self, client: Any, cx: TaskContext) -> None:
        """Commands in, state out, until either side fails (then the caller reconnects)."""
        import aiomqtt

        async def listen() -> None:
            async for msg in client.messages:
                await self._command(client, str(msg.topic), msg.payload, msg.properties, cx)

        jobs = {asyncio.create_task(listen()), asyncio.create_task(self._publish_state(client, cx))}
        try:
            done, _ = await asyncio.wait(jobs, return_when=asyncio.FIRST_COMPLETED)
            for job in done:
                job.result()  # a dead publisher must not leave a live-looking link behind
            raise aiomqtt.MqttError("session ended")
        finally:
            for job in jobs:
                job.cancel()
            await asyncio.wait(jobs, timeout=2)

    async def _publish_state(self, client: Any, cx: TaskContext) -> None:
        """Publish each public tag on change of value or quality, paced by ``interval_s``."""
        p = self.params
        sent: dict[str, tuple[Any, str]] = {}
        while True:
            image = cx.image
            for topic, tag in self.public:
                tv = image.tag(tag)
                doc = tag_json(tv)
                key = (doc["value"], doc["quality"])
                if sent.get(topic) == key:
                    continue
                await client.publish(f"{self.base}/{topic}", json.dumps(doc), qos=p.qos, retain=True)
                sent[topic] = key
            await asyncio.sleep(p.interval_s)  # pacing of the publications, not synchronisation

    async def _command(
        self, client: Any, topic: str, payload: Any, props: Any = None, cx: TaskContext | None = None
    ) -> None:
        """Validate, send to the scan, answer. Handled in arrival order: a later request lands later."""
        assert self.requests is not None
        try:
            if not isinstance(payload, bytes | bytearray):
                raise ValueError("payload must be a JSON object")
            named, command = _split(topic[len(self.base) + 1 :] if topic.startswith(f"{self.base}/") else "")
            if command == "set/mode":
                evse = evse_arg(named, self.params.evses, f"{self.base}/evse/<n>/set/mode")
                req = parse_mode_request(bytes(payload), f"mqtt:{topic}", evse)
                ok, reason = await self.requests.mode(req)
            elif command == "set/trip_reset" and named is None:
                parse_trip_reset(bytes(payload))
                ok, reason = await self.requests.reset_trip(f"mqtt:{topic}")
            elif command == "set/connection" and named is None:
                if self.connection is None or cx is None:
                    raise ValueError("this interface does not carry the connection limits (params connection)")
                self.connection.apply(bytes(payload), cx.now_us, f"mqtt:{topic}")
                ok, reason = True, ""
            else:
                raise ValueError("unknown command topic (commands: set/mode, set/trip_reset, set/connection)")
        except ValueError as exc:
            self.rejected += 1
            log.warning("MQTT command on %s rejected: %s", topic, exc)
            with contextlib.suppress(Exception):
                await client.publish(f"{self.base}/error", json.dumps({"topic": topic, "error": str(exc)}), qos=1)
            return
        answer = json.dumps({"topic": topic, "accepted": ok, "reason": reason})
        with contextlib.suppress(Exception):
            await client.publish(f"{self.base}/response", answer, qos=1)
            reply_to = getattr(props, "ResponseTopic", None)
            if (
                reply_to
                and "#" not in reply_to
                and "+" not in reply_to
                and not reply_to.startswith(f"{self.base}/set/")
            ):
                from paho.mqtt.packettypes import PacketTypes
                from paho.mqtt.properties import Properties

                out = Properties(PacketTypes.PUBLISH)
                corr = getattr(props, "CorrelationData", None)
                if corr:
                    out.CorrelationData = corr
                await client.publish(reply_to, answer, qos=1, properties=out)


def _split(rest: str) -> tuple[str | None, str]:
    """``evse/<n>/set/x`` -> (n, ``set/x``); ``set/x`` -> (None, ``set/x``)."""
    parts = rest.split("/")
    if len(parts) >= 3 and parts[0] == "evse":
        return parts[1], "/".join(parts[2:])
    return None, rest
