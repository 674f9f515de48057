"""The MQTT interface through a real mosquitto: retained state at QoS 1, availability and the last will,
a reconnect, valid commands sent to the scan's gate and its answer returned, invalid ones answered on the
error topic and logged."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import socket
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from runtime.api import SiteInfo
from runtime.tags import US, Image, Quality, TagValue
from runtime.tasks.base import TASKS, TaskContext
from runtime.tasks.localapi.mqtt import MqttApi, MqttApiParams
from tests.localapi.conftest import Mosquitto
from tests.localapi.scan import GateScan
from tests.ocpp.certs import make_pki
from tests.waiting import cancel_and_wait, until

SITE = SiteInfo("test site", 240.0, 60.0, 20_000)
BASE = "v2g/test_site"


def gate_scan(allow: list[str] | None = None) -> GateScan:
    """The real gate with the mqtt task allowed to ask for ``allow`` (default: mode requests)."""
    return GateScan({"mqtt": "localapi_mqtt"}, {"localapi_mqtt": ["mode_request"] if allow is None else allow})


class Listener:
    """A subscriber that keeps every message it gets (topic, payload, qos, retain)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.got: list[tuple[str, bytes, int, bool]] = []
        self._task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()

    async def _run(self) -> None:
        async with aiomqtt.Client("127.0.0.1", self.port) as c:
            await c.subscribe(f"{BASE}/#", qos=1)
            self.ready.set()
            async for m in c.messages:
                assert isinstance(m.payload, bytes)
                self.got.append((str(m.topic), m.payload, m.qos, m.retain))

    async def __aenter__(self) -> Listener:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self.ready.wait(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        try:
            await asyncio.wait_for(self._task, 5)
        except asyncio.CancelledError:
            pass

    def last(self, topic: str) -> Any:
        for t, p, _, _ in reversed(self.got):
            if t == topic:
                return p
        return None

    def state(self, tag: str) -> dict[str, Any] | None:
        p = self.last(f"{BASE}/state/{tag}")
        return None if p is None else json.loads(p)


def image(**tags: Any) -> Image:
    return Image({n.replace("__", "."): TagValue(v, Quality.GOOD, 0) for n, v in tags.items()})


def test_registered() -> None:
    assert TASKS["localapi_mqtt"] is MqttApi


def test_state_availability_will_and_commands(mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture) -> None:
    scan = gate_scan()
    params = MqttApiParams(
        port=mosquitto.port,
        tags=["inverter.power", "ev.soc", "mode.state"],
        interval_s=0.05,
        reconnect_s=0.05,
        keepalive_s=5,
    )
    task = MqttApi("mqtt", params, SITE)
    cx = scan.context("mqtt")

    async def send(topic: str, payload: bytes) -> None:
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as c:
            await c.publish(topic, payload, qos=1)

    async def main() -> None:
        await cx._publish(image(inverter__power=-5000.0, ev__soc=0.45, mode__state="discharge"), 1 * US)
        runner = asyncio.create_task(task.run(cx))
        try:
            await until(lambda: task.connected, "the task to connect")
            # a subscriber that comes later gets the retained state and availability, at QoS 1
            async with Listener(mosquitto.port) as early:
                await until(lambda: early.state("mode.state") is not None, "the first publication")
            async with Listener(mosquitto.port) as late:
                await until(lambda: late.state("mode.state") is not None, "retained state")
                assert late.state("inverter.power")["value"] == -5000.0  # the project's sign on MQTT
                assert late.state("ev.soc") == {"value": 0.45, "quality": "good", "t": 0.0}
                assert late.last(f"{BASE}/availability") == b"online"
                assert all(retain and qos == 1 for t, _, qos, retain in late.got if "/state/" in t)

                # a change is published; a bad tag goes out with quality bad and no value
                img = dict(image(inverter__power=0.0, mode__state="idle"))
                img["ev.soc"] = TagValue(0.45, Quality.BAD, 0)
                await cx._publish(Image(img), 2 * US)
                await until(lambda: late.state("inverter.power")["value"] == 0.0, "the change")
                await until(lambda: late.state("ev.soc")["quality"] == "bad", "the bad quality")
                assert late.state("ev.soc")["value"] is None

                # commands: a good one reaches the gate with who asked, and its answer comes back; bad ones
                # are answered and logged
                await send(f"{BASE}/set/mode", b'{"mode": "remote", "setpoint_w": -3000, "expiry_s": 60}')
                await until(lambda: len(scan.modes()) == 1, "the accepted request")
                r = scan.modes()[-1]
                assert (r["mode"], r["setpoint_w"], r["expiry_s"]) == ("remote", -3000.0, 60.0)
                assert (r["source"], r["by"]) == ("mqtt", f"mqtt:{BASE}/set/mode")
                await until(lambda: late.last(f"{BASE}/response") is not None, "the answer")
                assert json.loads(late.last(f"{BASE}/response")) == {
                    "topic": f"{BASE}/set/mode",
                    "accepted": True,
                    "reason": "",
                }
                bad = [
                    (f"{BASE}/set/mode", b"not json"),
                    (f"{BASE}/set/mode", b'{"mode": "remote", "setpoint_w": NaN}'),
                    (f"{BASE}/set/mode", b'{"mode": "remote"}'),
                    (f"{BASE}/set/mode", b'{"mode": "remote", "setpoint_w": 5e9}'),
                    (f"{BASE}/set/mode", b'{"mode": "local", "source": "someone else"}'),
                    (f"{BASE}/set/mode", b"[1, 2]"),
                    (f"{BASE}/set/power", b"5000"),
                ]
                for topic, payload in bad:
                    await send(topic, payload)
                await until(lambda: task.rejected == len(bad), "every rejection")
                await until(lambda: len([1 for t, *_ in late.got if t == f"{BASE}/error"]) == len(bad), "error replies")
                errors = [json.loads(p) for t, p, _, _ in late.got if t == f"{BASE}/error"]
                assert any("setpoint_w" in e["error"] and "finite" in e["error"] for e in errors)
                assert any("mode remote needs setpoint_w" in e["error"] for e in errors)
                assert any("unknown command topic" in e["error"] for e in errors)
                # a trip reset on an interface that did not opt in never reaches the scan
                await send(f"{BASE}/set/trip_reset", b"{}")
                await until(
                    lambda: b"not enabled" in (late.last(f"{BASE}/response") or b""), "the trip reset's refusal"
                )
                assert not [c for c in scan.accepted if c.name == "reset_trip"]
                assert len(scan.modes()) == 1 and not scan.refused  # nothing bad reached the scan

                # the link drops without a goodbye: the broker sends the will, the task comes back online
                n_online = sum(1 for t, p, *_ in late.got if t == f"{BASE}/availability" and p == b"online")
                task.client._client.socket().shutdown(socket.SHUT_RDWR)
                await until(lambda: late.last(f"{BASE}/availability") == b"offline", "the last will")
                await until(
                    lambda: (
                        sum(1 for t, p, *_ in late.got if t == f"{BASE}/availability" and p == b"online") > n_online
                    ),
                    "back online",
                )
        finally:
            await cancel_and_wait(runner)
        # a clean stop says offline itself (retained: a new subscriber sees it)
        async with Listener(mosquitto.port) as after:
            await until(lambda: after.last(f"{BASE}/availability") is not None, "retained availability")
            assert after.last(f"{BASE}/availability") == b"offline"
        assert "MQTT command on v2g/test_site/set/mode rejected" in caplog.text

    with caplog.at_level(logging.INFO):
        asyncio.run(main())


def test_broker_restart_reconnects(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Broker down at start and gone mid-run: the task retries with backoff and republishes its state."""
    broker = Mosquitto(tmp_path)
    params = MqttApiParams(port=broker.port, tags=["ev.soc"], interval_s=0.05, reconnect_s=0.05, reconnect_max_s=0.2)
    task = MqttApi("mqtt", params, SITE)
    writes: list[tuple[str, Any, int]] = []  # the shared tags the task sends to the scan, with the cycle clock

    def send(tag: str, value: Any, quality: Quality) -> None:
        writes.append((tag, value, cx.now_us))

    cx = TaskContext("mqtt", send, dt.datetime(2027, 1, 4), logging.getLogger("t"))

    def link() -> list[Any]:
        """``mqtt.connected`` as the scan would see it, repeats (the refresh) folded."""
        seen = [v for tag, v, _ in writes if tag == "mqtt.connected"]
        return [v for k, v in enumerate(seen) if k == 0 or seen[k - 1] != v]

    async def scan() -> None:  # one publication per 10 ms of real time, 20 ms of cycle clock each
        k = 1
        while True:
            await cx._publish(image(ev__soc=0.5), k * SITE.period_us)
            k += 1
            await asyncio.sleep(0.01)

    async def main() -> None:
        pump = asyncio.create_task(scan())
        runner = asyncio.create_task(task.run(cx))
        try:
            await until(lambda: caplog.text.count("retrying in") >= 2, "retries while the broker is down")
            await until(lambda: link() == [False], "the link reported down")
            await asyncio.to_thread(broker.start)
            await until(lambda: task.connected, "the first connection")
            await until(lambda: link() == [False, True], "the link reported up")
            await asyncio.to_thread(broker.stop)  # no persistence: the retained state is gone with it
            await until(lambda: not task.connected, "the loss")
            await until(lambda: link() == [False, True, False], "the loss reported")
            await asyncio.to_thread(broker.start)
            await until(lambda: task.connected, "the reconnection")
            await until(lambda: link() == [False, True, False, True], "the reconnection reported")
            n = len(writes)  # steady: refreshed once per second of cycle clock (stale after 10), not every cycle
            await until(lambda: len(writes) >= n + 2, "two refreshes")
            assert writes[n + 1][2] - writes[n][2] >= US and writes[n + 1][1] is True
            async with Listener(broker.port) as late:
                await until(lambda: late.state("ev.soc") is not None, "state republished after reconnect")
                assert late.state("ev.soc")["value"] == 0.5
        finally:
            await cancel_and_wait(runner)
            await cancel_and_wait(pump)
            broker.stop()

    need = broker.exe  # skip/fail decided in the constructor
    assert need
    with caplog.at_level(logging.INFO):
        asyncio.run(main())


def test_broker_credentials(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Who may command the site over MQTT is who the broker lets in: wrong credentials are refused (and
    retried, logged); the right ones connect and publish."""
    broker = Mosquitto(tmp_path, users={"site": "s3cret-password"})
    broker.start()
    cx = TaskContext("mqtt", lambda *a: None, dt.datetime(2027, 1, 4), logging.getLogger("t"))

    async def main() -> None:
        await cx._publish(image(ev__soc=0.5), 1 * US)
        wrong = MqttApi(
            "mqtt",
            MqttApiParams(port=broker.port, username="site", password="wrong", reconnect_s=0.05),
            SITE,
        )
        runner = asyncio.create_task(wrong.run(cx))
        try:
            await until(lambda: caplog.text.count("retrying in") >= 2, "refusals")
            assert not wrong.connected
        finally:
            await cancel_and_wait(runner)
        right = MqttApi(
            "mqtt",
            MqttApiParams(port=broker.port, username="site", password="s3cret-password", tags=["ev.soc"]),
            SITE,
        )
        runner = asyncio.create_task(right.run(cx))
        try:
            await until(lambda: right.connected, "the connection with the right password")
        finally:
            await cancel_and_wait(runner)

    try:
        with caplog.at_level(logging.WARNING):
            asyncio.run(main())
    finally:
        broker.stop()
    assert "Not authorized" in caplog.text or "not authori" in caplog.text.lower()


def test_home_assistant_discovery(mosquitto: Mosquitto) -> None:
    """The retained discovery configs point at the real state and command topics, and what Home Assistant
    would send from the controls is a valid mode request."""
    scan = gate_scan(["mode_request", "reset_trip"])
    params = MqttApiParams(
        port=mosquitto.port, tags=["inverter.power", "ev.soc", "ev.connected"], ha_max_w=11000, trip_reset=True
    )
    task = MqttApi("mqtt", params, SITE)
    cx = scan.context("mqtt")
    configs: dict[str, dict[str, Any]] = {}

    async def main() -> None:
        await cx._publish(image(inverter__power=-5000.0, ev__soc=0.45, ev__connected=True), 1 * US)
        runner = asyncio.create_task(task.run(cx))
        try:
            await until(lambda: task.connected, "the connection")
            async with aiomqtt.Client("127.0.0.1", mosquitto.port) as c:
                await c.subscribe("homeassistant/#", qos=1)
                async with asyncio.timeout(10):
                    async for m in c.messages:
                        assert m.retain and isinstance(m.payload, bytes)
                        configs[str(m.topic)] = json.loads(m.payload)
                        if len(configs) == 6:  # three tags, the power request, the local and trip reset buttons
                            break
                node = "v2g_test_site"
                power = configs[f"homeassistant/sensor/{node}/inverter_power/config"]
                assert power["state_topic"] == f"{BASE}/state/inverter.power"
                assert power["device_class"] == "power" and power["unit_of_measurement"] == "W"
                assert power["availability_mode"] == "all"
                assert {a["topic"] for a in power["availability"]} == {
                    f"{BASE}/availability",
                    f"{BASE}/state/inverter.power",
                }
                assert "* 100" in configs[f"homeassistant/sensor/{node}/ev_soc/config"]["value_template"]
                assert f"homeassistant/binary_sensor/{node}/ev_connected/config" in configs
                number = configs[f"homeassistant/number/{node}/power_request/config"]
                assert number["command_topic"] == f"{BASE}/set/mode"
                assert (number["min"], number["max"]) == (-11000, 11000)
                button = configs[f"homeassistant/button/{node}/local_control/config"]
                # what Home Assistant publishes: the number's template rendered, and the button's payload
                await c.publish(number["command_topic"], number["command_template"].replace("{{ value }}", "-2000"))
                await c.publish(button["command_topic"], button["payload_press"])
                reset = configs[f"homeassistant/button/{node}/trip_reset/config"]
                await c.publish(reset["command_topic"], reset["payload_press"])
            await until(lambda: len(scan.accepted) == 3, "all three commands")
            modes = scan.modes()
            assert (modes[0]["mode"], modes[0]["setpoint_w"]) == ("remote", -2000.0)
            assert modes[1]["mode"] == "local"
            assert (
                scan.accepted[2].name == "reset_trip" and scan.accepted[2].args["by"] == f"mqtt:{BASE}/set/trip_reset"
            )
        finally:
            await cancel_and_wait(runner)

    asyncio.run(main())


def test_tls_with_client_certificate(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A broker that speaks only TLS and wants a client certificate from its CA: the task with the CA
    and its certificate connects and answers a command over TLS; without a certificate, or trusting
    another CA, it is refused (and keeps retrying, logged), never connected in clear."""
    pki = make_pki(tmp_path / "pki", station_cn="v2g-site")
    broker = Mosquitto(tmp_path, tls=pki.dir, client_cert=True)
    broker.start()
    scan = gate_scan()
    cx = scan.context("mqtt")

    def params(**kw: Any) -> MqttApiParams:
        return MqttApiParams(host="localhost", port=broker.port, tags=["ev.soc"], reconnect_s=0.05, **kw)

    good = {"tls_ca": str(pki.ca), "tls_cert": str(pki.dir / "station.pem"), "tls_key": str(pki.dir / "station.key")}
    tls = aiomqtt.TLSParameters(ca_certs=good["tls_ca"], certfile=good["tls_cert"], keyfile=good["tls_key"])

    async def main() -> None:
        await cx._publish(image(ev__soc=0.5), 1 * US)
        for bad in ({"tls_ca": str(pki.ca)}, {**good, "tls_ca": str(pki.other_ca)}):
            task = MqttApi("mqtt", params(**bad), SITE)
            before = caplog.text.count("retrying in")
            runner = asyncio.create_task(task.run(cx))
            try:
                await until(lambda n=before: caplog.text.count("retrying in") > n, "the refusal", timeout=20)
                assert not task.connected
            finally:
                await cancel_and_wait(runner)
        task = MqttApi("mqtt", params(**good), SITE)
        runner = asyncio.create_task(task.run(cx))
        try:
            await until(lambda: task.connected, "the TLS connection")
            async with aiomqtt.Client("localhost", broker.port, tls_params=tls, identifier="ems") as c:
                await c.subscribe(f"{BASE}/response", qos=1)
                await c.publish(f"{BASE}/set/mode", b'{"mode": "local"}', qos=1)
                async with asyncio.timeout(10):
                    async for m in c.messages:
                        assert isinstance(m.payload, bytes)
                        assert json.loads(m.payload)["accepted"] is True
                        break
            assert scan.modes()[-1]["mode"] == "local"
        finally:
            await cancel_and_wait(runner)

    try:
        with caplog.at_level(logging.WARNING):
            asyncio.run(main())
    finally:
        broker.stop()
