"""The station's link side: connect with backoff, boot, and send (one CALL in flight, OCPP-J 4.1.1).

Stored transaction messages go first and in order, then status changes, then the other messages, then a
Heartbeat when nothing else proved the link for the granted interval. A mixin of ``Station``: it shares
the station's state (queue, variables, statuses) with the image side.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ocpp.exceptions import OCPPError
from websockets.exceptions import ConnectionClosed

from runtime.tags import US
from runtime.tasks.ocpp import boot, protocol, rotation
from runtime.tasks.ocpp import connection as conn
from runtime.tasks.ocpp.smart import parse_time

if TYPE_CHECKING:
    from runtime.tasks.ocpp.evse import Evse
    from runtime.tasks.ocpp.queue import MessageQueue
    from runtime.tasks.ocpp.variables import DeviceModel, OcppParams

log = logging.getLogger("v2g_plc.ocpp")

RENEWAL_RETRY_S = 3600.0  # a renewal the CSMS did not complete is asked for again after this (real time)


class LinkSide:
    p: OcppParams
    versions: list[protocol.Version]
    version: protocol.Version  # the one the CSMS selected on the current (or last) link
    vars: DeviceModel
    queue: MessageQueue
    peer: Any
    online: bool
    accepted_once: bool
    start: boot.Start
    last_traffic: float
    last_contact_us: int | None
    offline_since_us: int | None
    now_us: int
    rtt_s: float | None
    evses: dict[int, Evse]  # statuses per EVSE
    outbox: collections.deque[tuple[str, dict[str, Any]]]
    security_events: collections.deque[str]
    certs: rotation.Certificates
    roots: rotation.Roots
    renewal_asked: float
    wake: asyncio.Event

    if TYPE_CHECKING:  # the image side's, in Station

        def publish(self, force: bool = False) -> None: ...
        def stamp(self, now_us: int | None = None) -> str: ...
        def save_runtime(self, **changes: Any) -> None: ...

    def endpoint(self) -> conn.Endpoint:
        p = self.p
        cert, key = self.certs.in_use()  # a renewed (or trial) pair before the operator's files
        return conn.Endpoint(
            conn.endpoint_url(p.csms_url, p.identity),
            p.identity,
            p.security_profile,
            self.vars.password() if p.security_profile in (1, 2) else None,
            Path(p.ca_file),
            cert,
            key,
            tuple(self.roots.files()),
        )

    def renewal_due(self) -> bool:
        """Profile 3: the certificate in use expires within ``renew_before_days`` (system UTC)."""
        if self.p.security_profile != 3 or self.certs.trying:
            return False
        end = self.certs.expires()
        return end is not None and end - dt.datetime.now(dt.UTC) < dt.timedelta(days=self.p.renew_before_days)

    def ask_renewal(self) -> None:
        """SignCertificate (A02) with a CSR of a new key; CertificateSigned follows from the CSMS."""
        log.warning("ocpp: the station certificate expires %s: asking the CSMS for a new one", self.certs.expires())
        self.outbox.append(
            ("SignCertificate", {"csr": self.certs.csr(), "certificateType": "ChargingStationCertificate"})
        )
        self.renewal_asked = time.monotonic()
        self.wake.set()

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
                if self.certs.trying:
                    self.certs.drop_trial()  # the renewed certificate does not connect: the old one again
            else:
                self.certs.confirm()  # a renewed certificate on trial just worked
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
        self.version = version
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
                self.offline_since_us = self.last_contact_us = self.now_us  # OfflineThreshold runs from here
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
        reason = self.start.reason
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
            self.save_runtime(accepted=True)  # a task-process restart from now on owes no BootNotification
            # security event of OCPP 2.0.1 part 2, appendix "Security events": the station (re)started
            self.security_events.appendleft("StartupOfTheDevice")
        self.online = True
        self.last_contact_us = self.now_us
        outage = None if self.offline_since_us is None else (self.now_us - self.offline_since_us) / US
        if outage is not None and outage > self.vars["OfflineThreshold"]:
            for each in self.evses.values():
                each.sent_status = None  # re-send every status after a long outage (B04)
        if self.renewal_due() and time.monotonic() - self.renewal_asked > RENEWAL_RETRY_S:
            self.ask_renewal()
        while self.security_events:
            ev = self.security_events.popleft()
            self.outbox.append(("SecurityEventNotification", {"type": ev, "timestamp": self.stamp()}))
        self.publish(force=True)
        retry_at = 0.0
        while True:
            self.wake.clear()
            e = self._status_due()
            if e is not None:
                # peeked, taken only once sent: a timeout (reconnect) must not lose a status change
                when, status = e.status_changes[0] if e.status_changes else (self.stamp(), e.status)
                await self._send_other(
                    peer,
                    "StatusNotification",
                    {"timestamp": when, "connectorStatus": status, "evseId": e.n, "connectorId": self.p.connector_id},
                )
                if e.status_changes and e.status_changes[0] == (when, status):
                    e.status_changes.popleft()
                e.sent_status = status
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
                except (protocol.CallFailed, protocol.BadAnswer) as exc:
                    retry_at = time.monotonic() + self._refused(item, exc)
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

    def _status_due(self) -> Evse | None:
        """The first EVSE with a connector status the CSMS does not have yet."""
        for e in self.evses.values():
            if e.status_changes or (e.status is not None and e.status != e.sent_status):
                return e
        return None

    def _refused(self, item: Any, exc: Exception) -> float:
        """A stored message the CSMS refused (CALLERROR) or answered with an invalid CALLRESULT: one
        attempt counted (E13: MessageAttempts, MessageAttemptInterval x attempt apart); returns the wait.

        Refused: never dropped, so the CSMS never sees a gap in ``seqNo`` (docs/design.md "Delivery" wins
        over E13's discard): after MessageAttempts refusals it is tried again every MessageAttemptInterval x
        MessageAttempts, logged as an error each time, and later transaction messages wait behind it (their
        order holds; the queue thins periodic ones). An invalid answer still carries the message's id, so
        the CSMS has the message: after MessageAttempts such answers it counts as delivered and goes."""
        n = self.queue.attempted(item.unique_id)
        attempts, interval = self.vars["MessageAttempts"], self.vars["MessageAttemptInterval"]
        if n < attempts:
            log.warning("ocpp: %s %s: %s: attempt %d of %d", item.action, item.unique_id, exc, n + 1, attempts)
            return float(interval * n)
        if isinstance(exc, protocol.BadAnswer):
            log.error("ocpp: %s %s: %d invalid answers (%s): taken as received", item.action, item.unique_id, n, exc)
            self.queue.remove(item.unique_id)
            return 0.0
        log.error(
            "ocpp: %s %s refused %d times (%s): kept (no seqNo gap); later transaction messages wait behind it",
            item.action, item.unique_id, n, exc,
        )  # fmt: skip
        return float(interval * attempts)

    async def _send_other(self, peer: Any, action: str, payload: dict[str, Any]) -> None:
        """A message that is not stored: a CALLERROR answer is logged and the message given up; a timeout
        ends the session (the link is presumed dead) and the message stays for the next one."""
        try:
            await peer.request(action, payload)
        except (protocol.CallFailed, protocol.BadAnswer) as exc:
            log.warning("ocpp: the CSMS refused %s (%s): not sent again", action, exc)
        except OCPPError as exc:  # our own payload failed the version's schema: a bug, never a reconnect loop
            log.error("ocpp: %s not sent: it fails the OCPP %s schema: %s", action, self.version.name, exc)

    # ------------------------------------------------------------------ the CSMS's requests

    def handlers(self) -> dict[str, protocol.Handler]:
        from runtime.tasks.ocpp import handlers

        return handlers.table(self)  # type: ignore[arg-type]  # always a Station

    def reconnect_soon(self) -> None:
        """Close the link after the current answer went out (a new password takes effect on reconnect)."""
        peer = self.peer
        if peer is not None:
            peer.after_this_answer(lambda: asyncio.get_running_loop().create_task(peer._connection.close()))
