"""A small local CSMS on the ``ocpp`` package's central-system role: the demo's back office and a test peer.

Loopback only. It accepts BootNotification (or answers a configured sequence of statuses), logs every
message a station sends in one line (boot, statuses, transaction events with their ``seqNo`` and meter
values), keeps them in ``received`` with their raw text, and can send requests to a connected station.
Basic auth is checked when passwords are given; a station it does not know is refused at the upgrade
with 401 (wrong password) or 403 (unknown identity), as a real back office does.

    python -m runtime.tasks.ocpp.local_csms --port 9000
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import ipaddress
import logging
import ssl
import uuid
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from ocpp.messages import Call, MessageType, unpack, validate_payload
from ocpp.routing import on
from ocpp.v21 import call_result as call_result_21
from ocpp.v201 import ChargePoint, call_result
from websockets.asyncio.server import Server, ServerConnection, serve

log = logging.getLogger("v2g_plc.csms")


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Received:
    identity: str
    unique_id: str
    action: str
    payload: dict[str, Any]
    raw: str


class StationLink(ChargePoint):
    """One connected station, seen from the CSMS."""

    csms: LocalCsms

    async def route_message(self, raw_msg: str) -> None:
        msg = unpack(raw_msg)
        if msg.message_type_id == MessageType.Call:
            self.csms.record(Received(self.id, msg.unique_id, msg.action, msg.payload, raw_msg))
        await super().route_message(raw_msg)

    async def request(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Send a request (camelCase dict) to the station; returns the answer, or raises on a CALLERROR."""
        c = Call(str(uuid.uuid4()), action, payload)
        await validate_payload(c, self._ocpp_version)
        async with self._call_lock:
            await self._send(c.to_json())
            resp = await self._get_specific_response(c.unique_id, self._response_timeout)
        if resp.message_type_id == MessageType.CallError:
            raise resp.to_exception()
        resp.action = action
        await validate_payload(resp, self._ocpp_version)
        out: dict[str, Any] = resp.payload
        return out

    @on("BootNotification")
    def on_boot(self, charging_station: dict[str, Any], reason: str, **_: Any) -> Any:
        status = self.csms.boot_statuses.pop(0) if self.csms.boot_statuses else "Accepted"
        log.info("CSMS: BootNotification from %s (%s, %s): %s", self.id, charging_station.get("model"), reason, status)
        return call_result.BootNotification(current_time=_now(), interval=self.csms.interval_s, status=status)

    @on("SignCertificate")
    def on_sign(self, csr: str, **_: Any) -> Any:
        log.info("CSMS: %s asks for a new certificate", self.id)
        self.csms.csrs.append((self.id, csr))
        return call_result.SignCertificate(status="Accepted")

    @on("Authorize")
    def on_authorize(self, id_token: dict[str, Any], **_: Any) -> Any:
        status = "Blocked" if id_token["id_token"] in self.csms.blocked_tokens else "Accepted"
        log.info("CSMS: %s Authorize %s: %s", self.id, id_token["id_token"], status)
        return call_result.Authorize(id_token_info={"status": status})

    @on("Heartbeat")
    def on_heartbeat(self, **_: Any) -> Any:
        return call_result.Heartbeat(current_time=_now())

    @on("StatusNotification")
    def on_status(self, connector_status: str, evse_id: int, connector_id: int, **_: Any) -> Any:
        log.info("CSMS: %s EVSE %d connector %d is %s", self.id, evse_id, connector_id, connector_status)
        return call_result.StatusNotification()

    @on("TransactionEvent")
    def on_transaction_event(self, event_type: str, seq_no: int, trigger_reason: str, **kw: Any) -> Any:
        info = kw["transaction_info"]
        values = {
            sv.get("measurand", "Energy.Active.Import.Register"): sv["value"]  # the default measurand (part 2)
            for mv in kw.get("meter_value", [])
            for sv in mv["sampled_value"]
        }
        log.info(
            "CSMS: %s transaction %s %s seqNo %d (%s%s%s%s) %s",
            self.id, info["transaction_id"][:8], event_type, seq_no, trigger_reason,
            ", " + info["charging_state"] if "charging_state" in info else "",
            ", stoppedReason " + info["stopped_reason"] if "stopped_reason" in info else "",
            ", offline" if kw.get("offline") else "",
            " ".join(f"{k}={v}" for k, v in values.items()),
        )  # fmt: skip
        return call_result.TransactionEvent()

    @on("MeterValues")
    def on_meter_values(self, **_: Any) -> Any:
        return call_result.MeterValues()

    @on("NotifyEvent")
    def on_notify_event(self, event_data: list[dict[str, Any]], **_: Any) -> Any:
        for e in event_data:
            log.info("CSMS: %s event %s %s", self.id, e["actual_value"], "cleared" if e.get("cleared") else "")
        return call_result.NotifyEvent()

    @on("NotifyReport")
    def on_notify_report(self, **_: Any) -> Any:
        return call_result.NotifyReport()

    @on("ReportChargingProfiles")
    def on_report_profiles(self, **_: Any) -> Any:
        return call_result.ReportChargingProfiles()

    @on("SecurityEventNotification")
    def on_security_event(self, type: str, **_: Any) -> Any:
        log.info("CSMS: %s security event %s", self.id, type)
        return call_result.SecurityEventNotification()


class StationLink21(StationLink):
    """The same back office over OCPP 2.1 (the answers above have the same fields in both versions)."""

    _call_result = call_result_21
    _ocpp_version = "2.1"

    @on("NotifyDERAlarm")
    def on_der_alarm(self, control_type: str, **kw: Any) -> Any:
        log.info("CSMS: %s DER alarm %s%s", self.id, control_type, " ended" if kw.get("alarm_ended") else "")
        return call_result_21.NotifyDERAlarm()

    @on("NotifyDERStartStop")
    def on_der_start_stop(self, control_id: str, started: bool, **_: Any) -> Any:
        log.info("CSMS: %s DER control %s %s", self.id, control_id, "started" if started else "stopped")
        return call_result_21.NotifyDERStartStop()

    @on("ReportDERControl")
    def on_report_der(self, **_: Any) -> Any:
        return call_result_21.ReportDERControl()

    @on("PullDynamicScheduleUpdate")
    def on_pull(self, charging_profile_id: int, **_: Any) -> Any:
        update = self.csms.dynamic_updates.get(charging_profile_id)
        log.info("CSMS: %s pulls dynamic profile %d: %s", self.id, charging_profile_id, update)
        if update is None:
            return call_result_21.PullDynamicScheduleUpdate(status="Rejected")
        return call_result_21.PullDynamicScheduleUpdate(status="Accepted", schedule_update=update)

    @on("NotifyEVChargingNeeds")
    def on_needs(self, **_: Any) -> Any:
        return call_result_21.NotifyEVChargingNeeds(status="Accepted")


LINKS = {"ocpp2.0.1": StationLink, "ocpp2.1": StationLink21}


class LocalCsms:
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        ssl_context: ssl.SSLContext | None = None,
        passwords: dict[str, str] | None = None,
        boot_statuses: list[str] | None = None,
        interval_s: int = 300,
        blocked_tokens: frozenset[str] = frozenset(),
        subprotocols: tuple[str, ...] = ("ocpp2.0.1",),
    ) -> None:
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError("the local CSMS serves loopback only")
        self.host, self.port = host, port
        self.ssl = ssl_context
        self.passwords = passwords
        self.boot_statuses = list(boot_statuses or [])
        self.interval_s = interval_s
        self.subprotocols = subprotocols  # the versions it speaks, in its order of preference
        self.blocked_tokens = blocked_tokens  # Authorize answers Blocked for these, Accepted for the others
        self.dynamic_updates: dict[int, dict[str, Any]] = {}
        self.csrs: list[tuple[str, str]] = []  # (identity, CSR PEM) of SignCertificate requests
        self.peer_certs: list[
            dict[str, Any] | None
        ] = []  # the client certificate of every TLS connection  # profile id -> its PullDynamicScheduleUpdate
        self.received: list[Received] = []
        self.stations: dict[str, StationLink] = {}
        self.connects = 0
        self.refusals: list[tuple[str, int]] = []
        self.changed = asyncio.Event()
        self._server: Server | None = None

    def record(self, r: Received) -> None:
        self.received.append(r)
        self.changed.set()

    def actions(self, action: str) -> list[Received]:
        return [r for r in self.received if r.action == action]

    async def wait_for(self, predicate: Any, timeout_s: float = 10.0) -> None:
        """Poll a condition on what arrived, with a bounded deadline."""

        async def loop() -> None:
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(loop(), timeout_s)

    def _process_request(self, connection: ServerConnection, request: Any) -> Any:
        identity = request.path.rstrip("/").rsplit("/", 1)[-1]
        if self.passwords is None:
            return None
        if identity not in self.passwords:
            self.refusals.append((identity, 403))
            return connection.respond(HTTPStatus.FORBIDDEN, "unknown station\n")
        auth = request.headers.get("Authorization", "")
        want = "Basic " + base64.b64encode(f"{identity}:{self.passwords[identity]}".encode()).decode()
        if auth != want:
            self.refusals.append((identity, 401))
            return connection.respond(HTTPStatus.UNAUTHORIZED, "wrong password\n")
        return None

    def _select(self, connection: ServerConnection, offered: Any) -> Any:
        """The CSMS's own preference among what the station offers (OCPP-J part 4, 3.1.2)."""
        return next((sp for sp in self.subprotocols if sp in offered), None)

    async def _handler(self, ws: ServerConnection) -> None:
        identity = (ws.request.path if ws.request else "/").rstrip("/").rsplit("/", 1)[-1]
        link = LINKS[ws.subprotocol or "ocpp2.0.1"](identity, ws, response_timeout=10)
        link.csms = self
        self.stations[identity] = link
        self.connects += 1
        tls = ws.transport.get_extra_info("ssl_object") if self.ssl else None
        self.peer_certs.append(tls.getpeercert() if tls is not None else None)
        log.info("CSMS: %s connected (%s)", identity, ws.subprotocol)
        self.changed.set()
        try:
            await link.start()
        except Exception:
            pass
        finally:
            if self.stations.get(identity) is link:
                del self.stations[identity]
            self.changed.set()

    async def start(self) -> LocalCsms:
        self._server = await serve(
            self._handler,
            self.host,
            self.port,
            subprotocols=list(self.subprotocols),  # type: ignore[arg-type]
            select_subprotocol=self._select,
            process_request=self._process_request,
            ssl=self.ssl,
            ping_interval=None,
        )
        self.port = next(iter(self._server.sockets)).getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"{'wss' if self.ssl else 'ws'}://{'localhost' if self.ssl else self.host}:{self.port}/ocpp"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await asyncio.wait_for(self._server.wait_closed(), 5)

    async def drop_connections(self) -> None:
        """Close every station's WebSocket (a network outage as the station sees it)."""
        for link in list(self.stations.values()):
            await link._connection.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="local-csms", description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9000)
    ap.add_argument("--interval", type=int, default=300, help="heartbeat interval granted at boot, s")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    async def run() -> None:
        csms = await LocalCsms(a.host, a.port, interval_s=a.interval, subprotocols=("ocpp2.1", "ocpp2.0.1")).start()
        log.info("CSMS: listening on %s", csms.url)
        await asyncio.Event().wait()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
