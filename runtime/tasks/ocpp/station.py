"""The OCPP 2.0.1 station as a task of the task process: the link to the CSMS and what it carries.

Two loops share one state: the image loop turns each published image into transaction messages (stored
before they are sent), connector statuses, events and the published limits; the link loop connects with
backoff, boots, and is the only sender (one CALL in flight, OCPP-J 4.1.1): stored transaction messages
first and in order, then the other messages, then a Heartbeat when nothing else proved the link for the
granted interval. The CSMS's requests are answered from the receive loop without awaiting a CALL there.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import logging
import time
import uuid
from pathlib import Path
from typing import Any

from websockets.exceptions import ConnectionClosed

from runtime.tags import US, Image, Quality
from runtime.tasks.base import TaskContext
from runtime.tasks.ocpp import connection as conn
from runtime.tasks.ocpp import protocol
from runtime.tasks.ocpp.queue import MessageQueue
from runtime.tasks.ocpp.smart import Profiles, parse_time, stamp
from runtime.tasks.ocpp.transactions import Sample, Transactions, TxState, connector_status, meter_value
from runtime.tasks.ocpp.variables import VARDEFS, DeviceModel, OcppParams, find

log = logging.getLogger("v2g_plc.ocpp")

RUNTIME_START_US = 60 * US  # a first image younger than this: the runtime (not only the task) started
PUBLISH_EVERY_S = 1.0


class Station:
    def __init__(
        self, params: OcppParams, state_dir: Path, voltage: float, phases: int, versions: list[protocol.Version]
    ) -> None:
        self.p = params
        self.versions = versions
        state_dir.mkdir(parents=True, exist_ok=True)
        self.vars = DeviceModel(params, state_dir)
        self.queue = MessageQueue(state_dir / "queue.sqlite", params.queue_max_bytes)
        self.tx = Transactions(
            params.evse_id, params.connector_id, params.power_threshold_w, TxState.from_json(self.queue.state("tx"))
        )
        self.profiles = Profiles(state_dir / "profiles.json", params.evse_id, voltage, phases, params.rated_power_w)
        self.outbox: collections.deque[tuple[str, dict[str, Any]]] = collections.deque(maxlen=1000)
        self.wake = asyncio.Event()
        self.peer: Any = None
        self.online = False  # connected and accepted
        self.accepted_once = False
        self.last_traffic = time.monotonic()
        self.last_contact_us: int | None = None
        self.offline_since_us: int | None = None
        self.status: str | None = None
        self.sent_status: str | None = None
        self.status_changes: collections.deque[tuple[str, str]] = collections.deque(maxlen=100)
        self.trip = ""
        self.event_seq = 0
        self.now_us = 0
        self.first_image = True
        self.aligned_slot: int | None = None
        self.last_periodic = -1e9
        self.rtt_s: float | None = None
        self._published: dict[str, Any] = {}
        self._published_at = 0.0
        self.cx: TaskContext | None = None
        self.security_events: collections.deque[str] = collections.deque(maxlen=20)

    # ------------------------------------------------------------------ time

    def stamp(self, now_us: int | None = None) -> str:
        """OCPP timestamps: the cycle clock's calendar in UTC (system UTC at --speed 1)."""
        if self.cx is None:
            return stamp(dt.datetime.now(dt.UTC))
        return stamp(self.cx.calendar(self.now_us if now_us is None else now_us))

    def utc(self) -> dt.datetime:
        return parse_time(self.stamp())

    # ------------------------------------------------------------------ the image side

    def sample(self, img: Image) -> Sample:
        t = self.p.tags

        def v(name: str) -> Any:
            return img.value(name)

        trip = img.tag(t.trip).value  # the committed trip code, whatever its quality
        return Sample(
            connected=None if v(t.connected) is None else bool(v(t.connected)),
            power_w=v(t.power),
            setpoint_w=img.tag(t.setpoint).value,
            import_wh=v(t.energy_import),
            export_wh=v(t.energy_export),
            soc=v(t.soc),
            voltage=v(t.voltage),
            trip=str(trip or ""),
        )

    def on_image(self, img: Image, now_us: int) -> None:
        self.now_us = now_us
        s = self.sample(img)
        if self.first_image:
            self.first_image = False
            if self.tx.active and now_us < RUNTIME_START_US:
                # the runtime restarted inside a transaction: end it with the last known values (E01/E06)
                self._store(*self.tx.end(self.stamp(), not self.online, "AbnormalCondition", "PowerLoss"))
        interval = self.vars["TxUpdatedInterval"]
        if time.monotonic() - self.last_periodic < self.p.sample_floor_s:
            interval = 1 << 40  # the floor: a site run faster than real time does not flood its CSMS
        msg = self.tx.step(s, now_us, self.stamp(), interval, not self.online)
        if msg is not None:
            self._store(*msg)
            if msg[2]:
                self.last_periodic = time.monotonic()
        self._clock_aligned(s)
        status = connector_status(s)
        if status is not None and status != self.status:
            self.status = status
            if self.online:  # every change while online, in order (G01); offline ones collapse to the last
                self.status_changes.append((self.stamp(), status))
            self.wake.set()
        if s.trip != self.trip:
            self._notify_trip(self.trip, s.trip)
            self.trip = s.trip
        self.publish()

    def _clock_aligned(self, s: Sample) -> None:
        """AlignedDataCtrlr.Interval (J01): a sample at every multiple of the interval past midnight UTC,
        inside a transaction as MeterValueClock, outside it as MeterValues (only while online)."""
        interval = self.vars["AlignedInterval"]
        if interval <= 0 or s.connected is None:
            return
        slot = int(self.utc().timestamp()) // interval
        if self.aligned_slot is not None and slot != self.aligned_slot:
            stamp_ = stamp(dt.datetime.fromtimestamp(slot * interval, dt.UTC))
            if self.tx.active:
                self._store(*self.tx.clock_aligned(s, stamp_, not self.online))
            elif self.online:
                mv = meter_value(s, stamp_, "Sample.Clock")
                if mv["sampledValue"]:
                    self.outbox.append(("MeterValues", {"evseId": self.p.evse_id, "meterValue": [mv]}))
                    self.wake.set()
        self.aligned_slot = slot

    def _store(self, action: str, payload: dict[str, Any], periodic: bool) -> None:
        self.queue.put(str(uuid.uuid4()), action, payload, periodic=periodic, state=("tx", self.tx.st.as_json()))
        if payload.get("eventType") == "Ended":
            self.profiles.end_transaction(payload["transactionInfo"]["transactionId"])
        self.wake.set()

    def _notify_trip(self, old: str, new: str) -> None:
        """NotifyEvent (N07) for a safety trip starting or clearing: component SafetyCtrlr, Problem."""
        data = []
        for code, cleared in ((old, True), (new, False)):
            if not code:
                continue
            self.event_seq += 1
            data.append(
                {
                    "eventId": self.event_seq,
                    "timestamp": self.stamp(),
                    "trigger": "Alerting",
                    "actualValue": code[:2500],
                    "techCode": code[:50],
                    "cleared": cleared,
                    "eventNotificationType": "HardWiredNotification",
                    "component": {"name": "SafetyCtrlr", "evse": {"id": self.p.evse_id}},
                    "variable": {"name": "Problem"},
                }
            )
        payload = {"generatedAt": self.stamp(), "seqNo": 0, "tbc": False, "eventData": data}
        self.outbox.append(("NotifyEvent", payload))
        self.wake.set()

    def accepted_recently(self) -> bool:
        return self.last_contact_us is not None and self.now_us - self.last_contact_us <= (
            self.vars["OfflineThreshold"] * US
        )

    def limits(self) -> tuple[float, float]:
        charge = self.profiles.limit_w(self.utc(), self.tx.st.tx_id, self.tx_start())
        discharge = self.p.rated_power_w
        if self.p.discharge_requires_csms and not self.accepted_recently():
            discharge = 0.0
        return charge, discharge

    def tx_start(self) -> dt.datetime | None:
        return parse_time(self.tx.st.started) if self.tx.active and self.tx.st.started else None

    def publish(self, force: bool = False) -> None:
        if self.cx is None:
            return
        charge, discharge = self.limits()
        values = {
            "ocpp.connected": self.peer is not None,
            "ocpp.accepted": self.online and self.accepted_recently(),
            "ocpp.limit_charge": charge,
            "ocpp.limit_discharge": discharge,
            "ocpp.queue": len(self.queue),
        }
        values["ocpp.rtt"] = self.rtt_s if self.peer is not None else None
        now = time.monotonic()
        if not force and values == self._published and now - self._published_at < PUBLISH_EVERY_S:
            return
        for k, v in values.items():
            if v is None:  # no link, or no round trip measured yet: the back office's supervision sees "bad"
                self.cx.write(k, self.rtt_s or 0.0, Quality.BAD)
            else:
                self.cx.write(k, v, Quality.GOOD)
        self._published, self._published_at = values, now

    async def image_loop(self, cx: TaskContext) -> None:
        self.cx = cx
        while True:
            img = await cx.next_image()
            self.on_image(img, cx.now_us)

    # ------------------------------------------------------------------ the link side

    def endpoint(self) -> conn.Endpoint:
        p = self.p
        return conn.Endpoint(
            conn.endpoint_url(p.csms_url, p.identity),
            p.identity,
            p.security_profile,
            self.vars.password() if p.security_profile in (1, 2) else None,
            Path(p.ca_file),
            Path(p.cert_file),
            Path(p.key_file),
        )

    async def link_loop(self) -> None:
        """Connect, run a session, and after every failure or loss wait per RetryBackOff* (the doubling
        starts again after a session that reached Accepted)."""
        waits = None
        while True:
            try:
                ws = await conn.open_link(
                    self.endpoint(), [v.subprotocol for v in self.versions], self.p.call_timeout_s
                )
            except Exception as exc:
                line, event = conn.describe_failure(exc, self.p.identity)
                log.warning("ocpp: %s", line)
                if event:
                    self.security_events.append(event)
            else:
                if await self.session(ws):
                    waits = None
            if waits is None:
                v = self.vars
                waits = conn.backoff(
                    v["RetryBackOffWaitMinimum"], v["RetryBackOffRandomRange"], v["RetryBackOffRepeatTimes"]
                )
            await asyncio.sleep(next(waits))

    async def session(self, ws: Any) -> bool:
        """One connection; True when it reached Accepted."""
        version = next((v for v in self.versions if v.subprotocol == ws.subprotocol), None)
        if version is None:
            log.warning("ocpp: the CSMS selected no subprotocol we offered (%r): closing", ws.subprotocol)
            await ws.close()
            return False
        peer = protocol.make_peer(
            version, self.p.identity, ws, self.handlers(), timeout_s=self.p.call_timeout_s,
            on_rtt=self._on_rtt, on_traffic=self._on_traffic,
        )  # fmt: skip
        self.peer = peer
        log.info("ocpp: connected to %s as %r (%s)", self.p.csms_url, self.p.identity, version.subprotocol)
        self.publish(force=True)
        reached = False
        receiver = asyncio.create_task(peer.start())
        sender = asyncio.create_task(self.sender(peer))
        try:
            done, _ = await asyncio.wait({receiver, sender}, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                exc = t.exception()
                if exc and not isinstance(exc, ConnectionClosed):
                    log.warning("ocpp: link failed: %s: %s", type(exc).__name__, exc)
        finally:
            for t in (receiver, sender):
                t.cancel()
            for t in (receiver, sender):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            with contextlib.suppress(Exception):
                await ws.close()
            self.peer = None
            reached = self.online
            if self.online:
                self.offline_since_us = self.now_us
            self.online = False
            log.info("ocpp: disconnected from the CSMS (%d transaction messages queued)", len(self.queue))
            self.publish(force=True)
        return reached

    def _on_rtt(self, action: str, rtt: float) -> None:
        self.rtt_s = rtt
        self.last_traffic = time.monotonic()
        if self.online:
            self.last_contact_us = self.now_us
        self.publish()

    def _on_traffic(self) -> None:
        self.last_traffic = time.monotonic()

    async def boot(self, peer: Any) -> None:
        """BootNotification until Accepted (B01-B03); nothing else is sent meanwhile."""
        reason = "PowerUp" if self.now_us < RUNTIME_START_US else "Unknown"
        while True:
            cs = {"model": self.p.model, "vendorName": self.p.vendor, "serialNumber": self.p.serial or self.p.identity,
                  "firmwareVersion": self.p.firmware}  # fmt: skip
            res = await peer.request("BootNotification", {"reason": reason, "chargingStation": cs})
            self._log_clock(res.get("currentTime"))
            status, interval = res["status"], int(res["interval"])
            if status == "Accepted":
                if interval > 0:
                    self.vars.grant("HeartbeatInterval", interval)
                hb = self.vars["HeartbeatInterval"]
                log.info("ocpp: BootNotification accepted for %r; heartbeat every %d s", self.p.identity, hb)
                return
            wait = interval if interval > 0 else self.vars["RetryBackOffWaitMinimum"]
            log.warning(
                "ocpp: BootNotification of station %r %s by the CSMS: retrying in %d s",
                self.p.identity, status, wait,
            )  # fmt: skip
            await asyncio.sleep(wait)

    def _log_clock(self, current: str | None) -> None:
        if current:
            offset = (parse_time(current) - dt.datetime.now(dt.UTC)).total_seconds()
            log.info("ocpp: CSMS clock offset %+.3f s (logged only: the scan keeps its own clock)", offset)

    async def sender(self, peer: Any) -> None:
        if not self.accepted_once:
            await self.boot(peer)
            self.accepted_once = True
            # security event of OCPP 2.0.1 part 2, appendix "Security events": the station (re)started
            self.security_events.appendleft("StartupOfTheDevice")
        self.online = True
        self.last_contact_us = self.now_us
        outage = None if self.offline_since_us is None else (self.now_us - self.offline_since_us) / US
        if outage is not None and outage > self.vars["OfflineThreshold"]:
            self.sent_status = None  # re-send every status after a long outage (B04)
        while self.security_events:
            ev = self.security_events.popleft()
            self.outbox.append(("SecurityEventNotification", {"type": ev, "timestamp": self.stamp()}))
        self.publish(force=True)
        retry_at = 0.0
        while True:
            self.wake.clear()
            if self.status_changes or (self.status is not None and self.status != self.sent_status):
                when, status = self.status_changes.popleft() if self.status_changes else (self.stamp(), self.status)
                await self._send_other(
                    peer,
                    "StatusNotification",
                    {"timestamp": when, "connectorStatus": status, "evseId": self.p.evse_id,
                     "connectorId": self.p.connector_id},
                )  # fmt: skip
                self.sent_status = status
                continue
            item = self.queue.head()
            if item is not None and time.monotonic() >= retry_at:
                try:
                    await peer.send_call(item.unique_id, item.action, item.text)
                    self.queue.remove(item.unique_id)
                    retry_at = 0.0
                except TimeoutError:
                    # no answer: the link is presumed dead; the message stays and goes out again, unchanged,
                    # on the next connection (a timeout never loses a transaction message)
                    log.warning("ocpp: no answer to %s %s: reconnecting", item.action, item.unique_id)
                    raise
                except protocol.CallFailed as exc:
                    # refused: tried MessageAttempts times, MessageAttemptInterval x attempt apart (E13)
                    n = self.queue.attempted(item.unique_id)
                    if n >= self.vars["MessageAttempts"]:
                        log.error("ocpp: %s %s dropped after %d refusals (%s)", item.action, item.unique_id, n, exc)
                        self.queue.remove(item.unique_id)
                    else:
                        retry_at = time.monotonic() + self.vars["MessageAttemptInterval"] * n
                        log.warning("ocpp: %s refused (%s): attempt %d again later", item.action, exc, n)
                self.publish()
                continue
            if self.outbox:
                action, payload = self.outbox[0]
                await self._send_other(peer, action, payload)
                self.outbox.popleft()
                continue
            due = self.last_traffic + self.vars["HeartbeatInterval"]
            now = time.monotonic()
            if now >= due:
                res = await peer.request("Heartbeat", {})
                self._log_clock(res.get("currentTime"))
                continue
            timeout = due - now
            if item is not None:
                timeout = min(timeout, max(0.0, retry_at - now))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout)

    async def _send_other(self, peer: Any, action: str, payload: dict[str, Any]) -> None:
        """A message that is not stored: a CALLERROR answer is logged and the message given up; a timeout
        ends the session (the link is presumed dead) and the message stays for the next one."""
        try:
            await peer.request(action, payload)
        except protocol.CallFailed as exc:
            log.warning("ocpp: the CSMS refused %s (%s): not sent again", action, exc)

    # ------------------------------------------------------------------ the CSMS's requests

    def handlers(self) -> dict[str, protocol.Handler]:
        from runtime.tasks.ocpp import handlers

        return handlers.table(self)

    def reconnect_soon(self) -> None:
        """Close the link after the current answer went out (a new password takes effect on reconnect)."""
        peer = self.peer
        if peer is not None:
            peer.after_answer = lambda: asyncio.get_running_loop().create_task(peer._connection.close())

    def report(self, request_id: int) -> None:
        data = []
        for d in VARDEFS:
            attr: dict[str, Any] = {"type": "Actual", "mutability": d.mutability}
            value = self.vars.read(d)
            if value is not None:
                attr["value"] = value
            var: dict[str, Any] = {"name": d.variable}
            if d.instance:
                var["instance"] = d.instance
            chars: dict[str, Any] = {
                "dataType": "integer" if d.key[0].isupper() else ("MemberList" if d.key == "measurands" else "string"),
                "supportsMonitoring": False,
            }
            if d.unit:
                chars["unit"] = d.unit
            data.append(
                {"component": {"name": d.component}, "variable": var, "variableAttribute": [attr],
                 "variableCharacteristics": chars}
            )  # fmt: skip
        self.outbox.append(
            ("NotifyReport", {"requestId": request_id, "generatedAt": self.stamp(), "seqNo": 0, "tbc": False,
                              "reportData": data})
        )  # fmt: skip
        self.wake.set()

    def find_var(self, component: str, variable: str, instance: str | None) -> Any:
        return find(component, variable, instance)

    async def run(self, cx: TaskContext) -> None:
        log.info("ocpp: station %r, effective variables %s", self.p.identity, self.vars.effective())
        jobs = [asyncio.create_task(self.image_loop(cx)), asyncio.create_task(self.link_loop())]
        try:
            done, _ = await asyncio.wait(jobs, return_when=asyncio.FIRST_EXCEPTION)
            for t in done:
                t.result()
        finally:
            for t in jobs:
                t.cancel()
            for t in jobs:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            self.queue.close()
