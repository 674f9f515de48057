"""The AMQP interface through a real RabbitMQ (one private node for the module): events with their sequence
number as message_id, persistent and confirmed; telemetry; the outbox's drop rule; a link outage (a TCP
proxy in front of the broker is cut) with events delivered in order afterwards; commands from a queue."""

from __future__ import annotations

import asyncio
import json
import logging
import select
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from runtime.api import SiteInfo
from runtime.tags import US, Image, Quality, TagValue
from runtime.tasks.base import TASKS, TaskContext
from runtime.tasks.localapi.amqp import AmqpApi, AmqpApiParams
from runtime.tasks.localapi.outbox import Outbox, Outgoing
from tests import waiting
from tests.localapi.conftest import RabbitMQ
from tests.localapi.scan import GateScan
from tests.ocpp.certs import make_pki
from tests.ports import free_port
from tests.waiting import cancel_and_wait

pytestmark = pytest.mark.slow  # one RabbitMQ start per module (10-30 s)

SITE = SiteInfo("amqp-site", 240.0, 60.0, 20_000)


async def until(pred: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """The broker is slower than the other peers: a longer deadline by default."""
    await waiting.until(pred, what, timeout=timeout)


def image(mode: str, trip: str = "", soc: float = 0.5) -> Image:
    tags = {"mode.state": mode, "safety.trip": trip, "ev.soc": soc, "inverter.power": -1000.0}
    return Image({n: TagValue(v, Quality.GOOD, 0) for n, v in tags.items()})


# -- the outbox on its own ---------------------------------------------------------------------------


def test_outbox_drops_telemetry_first_never_events() -> None:
    box = Outbox(3)
    t1, t2 = Outgoing("k.telemetry", b"t1", False), Outgoing("k.telemetry", b"t2", False)
    e = [Outgoing("k.event", f"e{i}".encode(), True, str(i)) for i in range(1, 6)]
    box.put(t1)
    box.put(e[0])
    box.put(t2)
    box.put(e[1])  # full: the oldest telemetry (t1) goes
    assert [m.body for m in box.items()] == [b"e1", b"t2", b"e2"] and box.dropped == 1
    box.put(e[2])  # t2 goes
    assert [m.body for m in box.items()] == [b"e1", b"e2", b"e3"] and box.dropped == 2
    box.put(Outgoing("k.telemetry", b"t3", False))  # only events left: the new telemetry is dropped
    assert box.dropped == 3 and len(box) == 3
    box.put(e[3])  # an event is never dropped, even past the bound
    assert [m.message_id for m in box.items()] == ["1", "2", "3", "4"] and box.over_bound == 1
    head = box.peek()
    assert head is not None and (head.body, head.message_id) == (b"e1", "1")
    box.confirmed(head)
    head = box.peek()
    assert head is not None and head.body == b"e2"


def test_outbox_survives_a_reopen(tmp_path: Path) -> None:
    """What was stored and not confirmed is there after a restart, in order, byte for byte."""
    path = tmp_path / "state" / "amqp-outbox.sqlite"
    box = Outbox(10, path)
    for i in range(1, 4):
        box.put(Outgoing("k.event.trip", f'{{"seq": {i}}}'.encode(), True, str(i)))
    head = box.peek()
    assert head is not None
    box.confirmed(head)
    box.close()
    again = Outbox(10, path)
    try:
        assert [(m.message_id, m.body) for m in again.items()] == [("2", b'{"seq": 2}'), ("3", b'{"seq": 3}')]
    finally:
        again.close()


# -- a controllable link in front of the real broker -------------------------------------------------


class Proxy:
    """A TCP proxy to the broker that the test can cut (every open connection closed, new ones refused)."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.port = free_port()
        self.up = True
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def _pipe(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            w.close()

    async def _accept(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        if not self.up:
            w.close()
            return
        br, bw = await asyncio.open_connection("127.0.0.1", self.target)
        self.writers += [w, bw]
        await asyncio.gather(self._pipe(r, bw), self._pipe(br, w))

    def cut(self) -> None:
        self.up = False
        for w in self.writers:
            w.transport.abort()
        self.writers.clear()

    async def stop(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()
            await asyncio.wait_for(self.server.wait_closed(), 5)


class Consumer:
    """Binds a fresh queue to the exchange and keeps every message it gets."""

    def __init__(self, url: str, exchange: str, key: str = "#") -> None:
        self.url, self.exchange, self.key = url, exchange, key
        self.got: list[aio_pika.abc.AbstractIncomingMessage] = []
        self.conn: Any = None

    async def __aenter__(self) -> Consumer:
        self.conn = await aio_pika.connect(self.url, timeout=10)
        ch = await self.conn.channel()
        ex = await ch.declare_exchange(self.exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        q = await ch.declare_queue(exclusive=True)
        await q.bind(ex, self.key)

        async def on(msg: aio_pika.abc.AbstractIncomingMessage) -> None:
            await msg.ack()
            self.got.append(msg)

        await q.consume(on)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.wait_for(self.conn.close(), 10)

    def events(self) -> list[aio_pika.abc.AbstractIncomingMessage]:
        return [m for m in self.got if m.type == "event"]


def event(seq: int, kind: str, **data: Any) -> dict[str, Any]:
    """One event as the scan's stream hands it to a task (runtime/eventstream.py)."""
    return {"seq": seq, "k": seq, "t": seq * 0.02, "kind": kind, "source": "safety", "message": kind, "data": data}


def make_task(url: str, scan: GateScan | None = None, **kw: Any) -> tuple[AmqpApi, TaskContext]:
    kw.setdefault("state_dir", str(Path(tempfile.mkdtemp(prefix="amqp-outbox-"))))
    params = AmqpApiParams(url=url, exchange="v2g_test", reconnect_s=0.05, reconnect_max_s=0.2, **kw)
    task = AmqpApi("amqp", params, SITE)
    cx = (scan or GateScan({"amqp": "localapi_amqp"}, {})).context("amqp", events=AmqpApi.events)
    return task, cx


def test_registered() -> None:
    assert TASKS["localapi_amqp"] is AmqpApi


def test_events_and_telemetry(rabbitmq: RabbitMQ) -> None:
    """Every event of the stream goes out with its sequence number, also a trip that came and went
    between two images (the image never shows it)."""
    task, cx = make_task(rabbitmq.url, tags=["ev.soc", "inverter.power"], interval_s=0.05)
    stream = [
        event(0, "transition", dest="charge"),
        event(1, "trip", code="ov2"),
        event(2, "reset", code="ov2"),  # cleared in the same publication: no image shows it
        event(3, "command", name="mode_request"),
    ]

    async def main() -> None:
        async with Consumer(rabbitmq.url, "v2g_test") as c:
            runner = asyncio.create_task(task.run(cx))
            try:
                await until(lambda: task.connected, "the connection")
                await cx._publish(image("charge"), 1 * US)
                for e in stream:
                    cx._event(e)
                await until(lambda: len(c.events()) == 4, "four events")
                await until(lambda: any(m.type == "telemetry" for m in c.got), "telemetry")
            finally:
                await cancel_and_wait(runner)
            ev = c.events()
            assert [m.message_id for m in ev] == ["0", "1", "2", "3"]
            assert [m.routing_key for m in ev] == [
                "amqp-site.event.transition",
                "amqp-site.event.trip",
                "amqp-site.event.reset",
                "amqp-site.event.command",
            ]
            assert all(m.delivery_mode == aio_pika.DeliveryMode.PERSISTENT for m in c.got)
            body = json.loads(ev[1].body)
            assert body["seq"] == 1 and body["data"] == {"code": "ov2"} and body["site"] == "amqp-site"
            tele = json.loads(next(m for m in c.got if m.type == "telemetry").body)
            assert tele["tags"]["inverter.power"] == {"value": -1000.0, "quality": "good", "t": 0.0}
            assert task.published == len(c.got)  # everything the consumer got was confirmed first

    asyncio.run(main())


def test_outage_keeps_events_in_order_and_drops_telemetry(rabbitmq: RabbitMQ, caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        proxy = Proxy(rabbitmq.port)
        await proxy.start()
        url = f"amqp://guest:guest@127.0.0.1:{proxy.port}/"
        task, cx = make_task(url, tags=["ev.soc"], interval_s=0.05, buffer=10)
        writes: dict[str, list[Any]] = {}  # the link-state tags the task sends to the scan (metrics read them)
        cx._send = lambda tag, value, quality: writes.setdefault(tag, []).append(value)
        async with Consumer(rabbitmq.url, "v2g_test", "amqp-site.#") as c:
            runner = asyncio.create_task(task.run(cx))
            try:
                await until(lambda: task.connected, "the connection")
                await cx._publish(image("idle", soc=0.5), 1 * US)
                await until(lambda: writes.get("amqp.connected") == [True], "the link reported up")
                cx._event(event(0, "transition"))
                await until(lambda: len(c.events()) == 1, "the first event")
                proxy.cut()
                await until(lambda: not task.connected, "the link loss")
                for seq in range(1, 21):  # 20 events while the broker is unreachable
                    cx._event(event(seq, "transition"))
                await until(lambda: task.events_seen == 21, "the producer")
                for k in range(30):  # telemetry keeps coming: it must be dropped, the events not
                    await cx._publish(image("idle", soc=0.5 + k / 100), (30 + k) * US)
                    await asyncio.sleep(0.06)  # past interval_s, so each publication makes telemetry
                assert task.outbox is not None
                assert task.outbox.dropped > 0 and task.outbox.events() == 20
                assert task.outbox.over_bound > 0  # 20 events in a 10-message outbox: kept anyway
                assert writes["amqp.connected"][-1] is False
                assert max(writes["amqp.outbox"]) >= 20  # the backlog is visible while it waits
                proxy.up = True
                await until(lambda: len(c.events()) == 21, "every event after the outage", timeout=30)
            finally:
                await cancel_and_wait(runner)
                await proxy.stop()
            ids = [int(m.message_id) for m in c.events()]
            assert ids == list(range(21))  # in order, no gap, no duplicate
        assert "AMQP link" in caplog.text and "retrying in" in caplog.text

    with caplog.at_level(logging.WARNING):
        asyncio.run(main())


def test_commands_from_a_queue(rabbitmq: RabbitMQ) -> None:
    """Commands reach the scan's real gate; its answer goes to reply_to with the correlation id; a bad
    command is answered on the error key and never reaches the gate."""
    scan = GateScan({"amqp": "localapi_amqp"}, {"localapi_amqp": ["mode_request"]})
    task, cx = make_task(rabbitmq.url, command_queue="amqp-site-commands", interval_s=60, scan=scan)

    async def main() -> None:
        runner = asyncio.create_task(task.run(cx))
        try:
            await until(lambda: task.connected, "the connection")
            async with Consumer(rabbitmq.url, "v2g_test", "amqp-site.error") as errors:
                conn = await aio_pika.connect(rabbitmq.url, timeout=10)
                try:
                    ch = await conn.channel()
                    replies = await ch.declare_queue(exclusive=True)
                    ex = await ch.get_exchange("v2g_test")
                    for i, body in enumerate(
                        (b'{"mode": "remote", "setpoint_w": 2500, "expiry_s": 30}', b'{"mode": "remote"}', b"{")
                    ):
                        msg = aio_pika.Message(body, reply_to=replies.name, correlation_id=f"c{i}")
                        await ex.publish(msg, routing_key="amqp-site.set.mode")
                    # a trip reset: this interface did not opt in, so the answer is a refusal
                    msg = aio_pika.Message(b"{}", reply_to=replies.name, correlation_id="reset")
                    await ex.publish(msg, routing_key="amqp-site.set.trip_reset")
                    answers = []
                    async with asyncio.timeout(10):
                        async with replies.iterator() as it:
                            async for m in it:
                                await m.ack()
                                answers.append((m.correlation_id, json.loads(m.body)))
                                if len(answers) == 2:
                                    break
                finally:
                    await asyncio.wait_for(conn.close(), 10)
                await until(lambda: task.rejected == 2 and len(errors.got) == 2, "two rejections answered")
            assert answers[0] == ("c0", {"routing_key": "amqp-site.set.mode", "accepted": True, "reason": ""})
            assert answers[1][0] == "reset" and not answers[1][1]["accepted"]
            assert "not enabled" in answers[1][1]["reason"]
            r = scan.modes()
            assert len(r) == 1 and not scan.refused
            assert (r[0]["mode"], r[0]["setpoint_w"], r[0]["by"]) == ("remote", 2500.0, "amqp:amqp-site.set.mode")
            assert "mode remote needs setpoint_w" in json.loads(errors.got[0].body)["error"]
        finally:
            await cancel_and_wait(runner)

    asyncio.run(main())


def test_events_in_the_outbox_survive_a_killed_task_process(rabbitmq: RabbitMQ, tmp_path: Path) -> None:
    """Three times: a task process takes 5 events into its outbox while the broker is unreachable and is
    killed (SIGKILL). The next start with the broker up delivers all 15, in order, once each."""
    state = tmp_path / "state"
    rounds, per_round = 3, 5
    for r in range(rounds):
        child = subprocess.Popen(
            [sys.executable, "-m", "tests.localapi.amqp_child", str(state), str(r * per_round), str(per_round)],
            stdout=subprocess.PIPE,
            cwd=Path(__file__).parents[2],
            start_new_session=True,
        )
        try:
            assert child.stdout is not None
            ready, _, _ = select.select([child.stdout], [], [], 30)
            assert ready, "the child did not store its events"
            line = child.stdout.readline().decode()
            assert line.strip() == f"stored {(r + 1) * per_round}", line
        finally:
            child.kill()
            child.wait(10)
            if child.stdout is not None:
                child.stdout.close()
    task, cx = make_task(rabbitmq.url, state_dir=str(state), interval_s=3600)

    async def main() -> None:
        async with Consumer(rabbitmq.url, "v2g_test", "amqp-site.event.#") as c:
            runner = asyncio.create_task(task.run(cx))
            try:
                await until(lambda: len(c.events()) >= rounds * per_round, "the stored events")
                assert task.outbox is not None
                await until(lambda: len(task.outbox) == 0, "the outbox to drain")
            finally:
                await cancel_and_wait(runner)
            assert [int(m.message_id) for m in c.events()] == list(range(rounds * per_round))

    asyncio.run(main())


def test_amqps_with_client_certificate(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A RabbitMQ TLS listener that wants a client certificate from its CA: the task with the CA and its
    certificate publishes events over amqps; without a certificate it is refused and retries (logged)."""
    pki = make_pki(tmp_path / "pki", station_cn="v2g-site")
    broker = RabbitMQ(tmp_path / "broker", tls=pki.dir)
    (tmp_path / "broker").mkdir()
    broker.start()
    url = f"amqps://guest:guest@localhost:{broker.tls_port}/"
    good = {"tls_ca": str(pki.ca), "tls_cert": str(pki.dir / "station.pem"), "tls_key": str(pki.dir / "station.key")}

    async def main() -> None:
        task, cx = make_task(url, tls_ca=str(pki.ca))
        runner = asyncio.create_task(task.run(cx))
        try:
            await until(lambda: "retrying in" in caplog.text, "the refusal")
            assert not task.connected
        finally:
            await cancel_and_wait(runner)
        task, cx = make_task(url, **good)
        async with Consumer(broker.url, "v2g_test", "amqp-site.event.#") as c:
            runner = asyncio.create_task(task.run(cx))
            try:
                await until(lambda: task.connected, "the TLS connection")
                cx._event(event(7, "trip", code="of2"))
                await until(lambda: len(c.events()) == 1, "the event over amqps")
            finally:
                await cancel_and_wait(runner)
        assert c.events()[0].message_id == "7"

    try:
        with caplog.at_level(logging.WARNING):
            asyncio.run(main())
    finally:
        broker.stop()


def test_a_depot_through_the_broker(rabbitmq: RabbitMQ) -> None:
    """On a depot: an EVSE's event and telemetry under its key, the site's under the site's, a consumer of
    ``<site>.#.event.#`` gets both; a mode request from an EVSE's key carries its EVSE; the connection
    limits from ``set.connection``."""
    from runtime.tasks.localapi.connection import IMPORT_TAG
    from tests.localapi.depot import RATING, Recorder, depot_tags
    from tests.localapi.test_modbus_server import image as tags_image

    rec = Recorder()
    params = AmqpApiParams(
        url=rabbitmq.url,
        exchange="v2g_test",
        reconnect_s=0.05,
        command_queue="amqp-depot-commands",
        interval_s=0.05,
        tags=["inverter.power"],
        site_tags=["meter.power"],
        evses=[1, 2, 3],
        connection=RATING,
        state_dir=str(Path(tempfile.mkdtemp(prefix="amqp-outbox-"))),
    )
    task = AmqpApi("amqp", params, SITE)
    cx = rec.context("amqp", events=True)

    async def main() -> None:
        async with Consumer(rabbitmq.url, "v2g_test", "amqp-site.#.event.#") as events:
            async with Consumer(rabbitmq.url, "v2g_test", "amqp-site.evse.2.telemetry") as evse2:
                runner = asyncio.create_task(task.run(cx))
                try:
                    await until(lambda: task.connected, "the connection")
                    await cx._publish(tags_image(depot_tags()), 1 * US)
                    cx._event({**event(0, "trip", code="comms_lost"), "source": "evse2.safety"})
                    cx._event({**event(1, "limit"), "source": "allocator"})
                    await until(lambda: len(events.events()) == 2, "both events")
                    await until(lambda: bool(evse2.got), "EVSE 2's telemetry")
                    conn = await aio_pika.connect(rabbitmq.url, timeout=10)
                    try:
                        ch = await conn.channel()
                        ex = await ch.get_exchange("v2g_test")
                        body = b'{"mode": "remote", "setpoint_w": -2500}'
                        await ex.publish(aio_pika.Message(body), routing_key="amqp-site.evse.3.set.mode")
                        await ex.publish(
                            aio_pika.Message(b'{"import_w": 42000}'), routing_key="amqp-site.set.connection"
                        )
                    finally:
                        await asyncio.wait_for(conn.close(), 10)
                    await until(lambda: len(rec.commands) == 1, "the mode request")
                    # the limit is published with the next image: wait until the task has taken the message
                    # (it may come after the mode request's), or that image would still carry the rating
                    limits = task.connection
                    assert limits is not None
                    await until(lambda: limits.import_w == 42_000.0, "the import limit taken")
                    await cx._publish(tags_image(depot_tags()), 2 * US)
                    await until(lambda: rec.last(IMPORT_TAG) == 42_000.0, "the import limit")
                finally:
                    await cancel_and_wait(runner)
            keys = [m.routing_key for m in events.events()]
            assert keys == ["amqp-site.evse.2.event.trip", "amqp-site.event.limit"]
            assert [m.message_id for m in events.events()] == ["0", "1"]
            tele = json.loads(evse2.got[0].body)
            assert tele["evse"] == 2 and tele["tags"]["inverter.power"]["value"] == -4000.0
            assert rec.commands[0][1] == {"mode": "remote", "setpoint_w": -2500.0, "evse": 3}

    asyncio.run(main())
