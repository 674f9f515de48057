"""The OCPP 2.0.1 station as a task of the task process: the link to the CSMS and what it carries.

Two loops share one state: the image loop (here) turns each published image into transaction messages
(stored before they are sent), connector statuses, events and the published limits; the link loop
(link.py) connects, boots and is the only sender. The CSMS's requests are answered from the receive loop
without awaiting a CALL there (handlers.py).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any

from runtime.evses import evse_of
from runtime.tags import US, Image, Quality
from runtime.tasks.base import TaskContext
from runtime.tasks.ocpp import boot, der, needs, protocol, rotation, v2x
from runtime.tasks.ocpp.evse import Evse
from runtime.tasks.ocpp.link import LinkSide
from runtime.tasks.ocpp.queue import MessageQueue
from runtime.tasks.ocpp.smart import NO_LIMIT_W, InForce, Profiles, parse_time, stamp
from runtime.tasks.ocpp.transactions import Sample, connector_status, meter_value
from runtime.tasks.ocpp.variables import VARDEFS, DeviceModel, OcppParams, find

log = logging.getLogger("v2g_plc.ocpp")

PUBLISH_EVERY_S = 1.0
_DATA_TYPES = {  # DataEnumType of the variables that are not integers or strings
    "measurands": "MemberList",
    "authorize_remote_start": "boolean",
    "v2x_available": "boolean",
    "v2x_enabled": "boolean",
    "v2x_transfer_modes": "MemberList",
    "v2x_operation_modes": "MemberList",
}


class Station(LinkSide):
    def __init__(
        self, params: OcppParams, state_dir: Path, voltage: float, phases: int, versions: list[protocol.Version]
    ) -> None:
        self.p = params
        self.versions = versions
        self.version = versions[0]
        state_dir.mkdir(parents=True, exist_ok=True)
        self.vars = DeviceModel(params, state_dir)
        self.certs = rotation.Certificates(
            state_dir, Path(params.cert_file), Path(params.key_file),
            Path(params.station_ca_file or params.ca_file), params.serial or params.identity,
        )  # fmt: skip
        self.roots = rotation.Roots(state_dir)
        self.renewal_asked = -1e9
        self.queue = MessageQueue(state_dir / "queue.sqlite", params.queue_max_bytes)
        depot = bool(params.evses)
        self.evses = {n: Evse(params, n, depot, self.queue.state) for n in params.evse_ids}
        self.profiles = Profiles(
            state_dir / "profiles.json", params.evse_ids, voltage, phases, params.rated_power_w, depot
        )
        self.outbox: collections.deque[tuple[str, dict[str, Any]]] = collections.deque(maxlen=1000)
        self.wake = asyncio.Event()
        self.peer: Any = None
        self.online = False  # connected and accepted
        self.accepted_once = False
        self.start = boot.Start(True, "PowerUp", False)  # decided in run(), from the task's runtime id
        self.runtime_state: dict[str, Any] = {}
        self.last_traffic = time.monotonic()
        self.last_contact_us: int | None = None
        self.offline_since_us: int | None = None
        self.event_seq = 0
        self.now_us = 0
        self.first_image = True
        self.rtt_s: float | None = None
        self._published: dict[str, Any] = {}
        self._published_at = 0.0
        self.cx: TaskContext | None = None
        self.security_events: collections.deque[str] = collections.deque(maxlen=20)
        self.available = True  # the scan's runtime.available (persisted there); Unavailable when false
        self.evses_out: frozenset[int] = frozenset()  # the scan's runtime.evses_out: those EVSEs Unavailable
        self.reset_when_idle = False  # a Reset OnIdle came during a transaction
        self._jobs: set[asyncio.Task[Any]] = set()
        self._pulling = False  # a PullDynamicScheduleUpdate is on its way
        self.der_overlay: dict[str, dict[str, Any]] = {}  # the scan's DER controls in force
        self.cessation = ""  # the momentary cessation under way (its DER control type), for its end
        self.afrr: list[tuple[dt.datetime, int]] = []  # AFRRSignals by timestamp: the last one due is in force

    # ------------------------------------------------------------------ commands to the scan

    async def command(self, kind: str, args: dict[str, Any]) -> tuple[bool, str]:
        """A typed command to the scan on behalf of the CSMS (who asked: its identity for this station)."""
        if self.cx is None:
            return False, "the station has no channel to the scan yet"
        return await self.cx.command(kind, args, by=f"CSMS of {self.p.identity}")

    async def reset_now(self) -> dict[str, Any]:
        """End a transaction in progress (ImmediateReset), then ask the scan to reset; the answer to the
        CSMS says whether the scan accepted (it then exits with the restart code)."""
        for e in self.evses.values():
            if e.tx.active:
                self.stop_transaction(e, "ResetCommand", "ImmediateReset")
        ok, reason = await self.command("reset", {})
        if not ok:
            return {"status": "Rejected", "statusInfo": {"reasonCode": "NotAllowed", "additionalInfo": reason[:512]}}
        self.save_runtime(reset=True)  # the next runtime start boots with reason RemoteReset
        log.warning("ocpp: Reset accepted by the scan: the runtime restarts")
        return {"status": "Accepted"}

    async def authorize(self, id_token: dict[str, Any]) -> str:
        """Authorize (C01) with the CSMS: its AuthorizationStatusEnumType, or why there is none. Only the
        CSMS decides: the station keeps no local authorization list or cache."""
        peer = self.peer
        if peer is None or not self.online:
            return "NoLink"
        try:
            res = await peer.request("Authorize", {"idToken": id_token})
        except (protocol.CallFailed, protocol.BadAnswer, TimeoutError) as exc:
            log.warning("ocpp: Authorize of a remote start failed: %s", exc)
            return "NoAnswer"
        return str(res["idTokenInfo"]["status"])

    def stop_transaction(self, e: Evse, trigger: str, reason: str) -> None:
        """End EVSE ``e``'s transaction now; no new one while its EV stays plugged in."""
        ended = e.tx.end(self.stamp(), not self.online, trigger, reason)
        e.tx.wait_for_unplug = True  # before the store: persisted with the Ended message
        self._store(e, *ended)

    def evse_of_tx(self, tx_id: str) -> Evse | None:
        """The EVSE whose transaction this is (None: no transaction of that id in progress)."""
        return next((e for e in self.evses.values() if e.tx.active and e.tx.st.tx_id == tx_id), None)

    def trigger_meter_values(self, e: Evse) -> None:
        if e.last_sample is not None:
            mv = meter_value(e.last_sample, self.stamp(), "Trigger")
            self.outbox.append(("MeterValues", {"evseId": e.n, "meterValue": [mv]}))

    def trigger_transaction_event(self, e: Evse) -> None:
        if e.last_sample is not None:
            self._store(e, *e.tx.triggered(e.last_sample, self.stamp(), not self.online))

    def _spawn(self, coro: Any) -> None:
        t = asyncio.get_running_loop().create_task(coro)
        self._jobs.add(t)
        t.add_done_callback(self._jobs.discard)

    # ------------------------------------------------------------------ time

    def stamp(self, now_us: int | None = None) -> str:
        """OCPP timestamps: the cycle clock's calendar in UTC (system UTC at --speed 1)."""
        if self.cx is None:
            return stamp(dt.datetime.now(dt.UTC))
        return stamp(self.cx.calendar(self.now_us if now_us is None else now_us))

    def utc(self) -> dt.datetime:
        return parse_time(self.stamp())

    # ------------------------------------------------------------------ the image side

    def on_image(self, img: Image, now_us: int) -> None:
        self.now_us = now_us
        available = img.value("runtime.available")
        if available is not None:
            self.available = bool(available)
        self.evses_out = evses_out(img.value("runtime.evses_out"), self.evses_out)
        first = next(iter(self.evses.values()))  # DER controls without an EVSE reach every EVSE alike
        self._der_started_stopped(der.overlay(first.value(img, "safety.der_overlay")))
        if self.first_image:
            self.first_image = False
            for e in self.evses.values():
                if e.tx.active and self.start.runtime_start:
                    # the runtime restarted inside a transaction: end it with the last known values (E01/E06)
                    stopped = self.start.stopped_reason
                    self._store(e, *e.tx.end(self.stamp(), not self.online, "AbnormalCondition", stopped))
            if self.start.runtime_start:  # scheduled DER controls end at their absolute time (der.py)
                for cmd in der.resume(self.der_overlay, self.utc()):
                    self._spawn(self._resume_der(cmd))
        for e in self.evses.values():
            self._evse_image(e, img, now_us)
        if self.reset_when_idle and not any(e.tx.active for e in self.evses.values()):
            self.reset_when_idle = False
            self._spawn(self.reset_now())
        self._pull_dynamic()
        self.publish()

    def _evse_image(self, e: Evse, img: Image, now_us: int) -> None:
        """One EVSE's part of a published image: its transaction, meter values, needs and status."""
        s = e.last_sample = e.sample(img)
        was_waiting = e.tx.wait_for_unplug
        interval = self.vars["TxUpdatedInterval"]
        if time.monotonic() - e.last_periodic < self.p.sample_floor_s:
            interval = 1 << 40  # the floor: a site run faster than real time does not flood its CSMS
        msg = e.tx.step(s, now_us, self.stamp(), interval, not self.online)
        if msg is not None:
            self._store(e, *msg)
            if msg[2]:
                e.last_periodic = time.monotonic()
        if was_waiting and not e.tx.wait_for_unplug:
            self._spawn(self.command("start", self._evse_arg(e)))  # the EV left: the remote stop's hold ends
        self._clock_aligned(e, s)
        self._charging_needs(e, img)
        status = connector_status(s, self.available and e.n not in self.evses_out)
        if status is not None and status != e.status:
            e.status = status
            if self.online:  # every change while online, in order (G01); offline ones collapse to the last
                e.status_changes.append((self.stamp(), status))
            self.wake.set()
        if s.trip != e.trip and not (self.cx and self.cx.reads_events):
            self._notify_trip(e.n, e.trip, s.trip)  # no event stream (a station driven by images alone)
        e.trip = s.trip

    def _evse_arg(self, e: Evse) -> dict[str, Any]:
        """The ``evse`` of a command for one EVSE: on a depot its number, on a site of one charger none."""
        return {"evse": e.n} if self.p.evses else {}

    def security_event(self, kind: str) -> None:
        """SecurityEventNotification now while online, else at the start of the next link."""
        if self.online:
            self.outbox.append(("SecurityEventNotification", {"type": kind, "timestamp": self.stamp()}))
            self.wake.set()
        else:
            self.security_events.append(kind)

    def _v21(self, action: str, payload: dict[str, Any]) -> None:
        """A message only OCPP 2.1 has: sent over a 2.1 link, dropped (logged) over 2.0.1."""
        if self.version.name != "2.1":
            log.info("ocpp: %s not sent: the CSMS speaks OCPP %s", action, self.version.name)
            return
        self.outbox.append((action, payload))
        self.wake.set()

    async def _resume_der(self, cmd: dict[str, Any]) -> None:
        ok, reason = await self.command("der_control", cmd)
        what = f"DER control {cmd['control_id']}: " + ("cleared, its end passed" if cmd["action"] == "clear" else
                                                      f"{cmd['ocpp']['duration']:g} s left of it")  # fmt: skip
        if ok:
            log.warning("ocpp: after the runtime start, %s", what)
        else:
            log.error("ocpp: after the runtime start, %s refused by the scan: %s", what, reason)

    def _der_started_stopped(self, now: dict[str, dict[str, Any]]) -> None:
        """NotifyDERStartStop (2.1 R) for a scheduled (not default) control that came into or left force."""
        before, self.der_overlay = self.der_overlay, now
        if self.first_image:
            return  # what was in force before this task started is no news
        for cid in sorted(set(before) ^ set(now)):
            c = now.get(cid) or before[cid]
            if not c.get("is_default") and self.cx is not None:
                self._v21("NotifyDERStartStop", {"controlId": cid, "started": cid in now, "timestamp": self.stamp()})

    def _pull_dynamic(self) -> None:
        """PullDynamicScheduleUpdate (2.1 K) for each Dynamic profile whose ``dynUpdateInterval`` has run
        since its last update (on the cycle clock), one at a time, only over a 2.1 link."""
        if self.version.name != "2.1" or not self.online or self._pulling:
            return
        now = self.utc()
        for it in self.profiles.items:
            p = it["profile"]
            interval = p.get("dynUpdateInterval") or 0
            last = parse_time(p["dynUpdateTime"]) if "dynUpdateTime" in p else None
            if (
                p["chargingProfileKind"] == "Dynamic"
                and interval > 0
                and (last is None or (now - last).total_seconds() >= interval)
            ):
                self._pulling = True
                self._spawn(self._pull(p["id"]))
                return

    async def _pull(self, profile_id: int) -> None:
        try:
            peer = self.peer
            if peer is None:
                return
            try:
                res = await peer.request("PullDynamicScheduleUpdate", {"chargingProfileId": profile_id})
            except (protocol.CallFailed, protocol.BadAnswer, TimeoutError) as exc:
                log.warning("ocpp: PullDynamicScheduleUpdate of profile %d failed: %s", profile_id, exc)
                res = {}
            update = res.get("scheduleUpdate", {}) if res.get("status") == "Accepted" else {}
            # no update (refused, failed): the same values, and a whole interval before asking again
            self.profiles.update_dynamic(profile_id, update, self.utc())
            self.publish(force=True)
        finally:
            self._pulling = False

    def _charging_needs(self, e: Evse, img: Image) -> None:
        """NotifyEVChargingNeeds (2.1) inside a transaction, when the EV's needs change materially."""
        if not e.tx.active:
            e.needs_sent = None
            return
        t = self.p.tags
        soc, capacity = e.value(img, t.soc), e.value(img, t.capacity)
        if self.version.name != "2.1" or not self.online or soc is None or not capacity:
            return
        now = needs.needs(
            float(soc), float(capacity), e.value(img, t.reserve_soc),
            target_soc=self.p.target_soc, soc_max=self.p.soc_max, max_charge_w=self.p.rated_power_w,
            max_discharge_w=self.p.rated_power_w, transfer_mode=self.p.energy_transfer_modes[0],
        )  # fmt: skip
        if needs.material(e.needs_sent, now):
            e.needs_sent = now
            payload = {"evseId": e.n, "chargingNeeds": now, "timestamp": self.stamp()}
            self._v21("NotifyEVChargingNeeds", payload)

    def _clock_aligned(self, e: Evse, s: Sample) -> None:
        """AlignedDataCtrlr.Interval (J01): a sample at every multiple of the interval past midnight UTC,
        inside a transaction as MeterValueClock, outside it as MeterValues (only while online)."""
        interval = self.vars["AlignedInterval"]
        if interval <= 0 or s.connected is None:
            return
        slot = int(self.utc().timestamp()) // interval
        if e.aligned_slot is not None and slot != e.aligned_slot:
            stamp_ = stamp(dt.datetime.fromtimestamp(slot * interval, dt.UTC))
            if e.tx.active:
                self._store(e, *e.tx.clock_aligned(s, stamp_, not self.online))
            elif self.online:
                mv = meter_value(s, stamp_, "Sample.Clock")
                if mv["sampledValue"]:
                    self.outbox.append(("MeterValues", {"evseId": e.n, "meterValue": [mv]}))
                    self.wake.set()
        e.aligned_slot = slot

    def _store(self, e: Evse, action: str, payload: dict[str, Any], periodic: bool) -> None:
        """A transaction message of EVSE ``e``, stored with the state that numbered it (its own key)."""
        state = (e.state_key, e.tx.st.as_json())
        self.queue.put(str(uuid.uuid4()), action, payload, periodic=periodic, state=state)
        if payload.get("eventType") == "Ended":
            self.profiles.end_transaction(payload["transactionInfo"]["transactionId"])
        self.wake.set()

    def _notify_trip(self, n: int | None, old: str, new: str) -> None:
        """NotifyEvent (N07) for a safety trip starting or clearing: component SafetyCtrlr (of EVSE ``n``;
        None: the station's, a site interlock's), Problem."""
        component: dict[str, Any] = {"name": "SafetyCtrlr"}
        if n is not None:
            component["evse"] = {"id": n}
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
                    "component": component,
                    "variable": {"name": "Problem"},
                }
            )
        payload = {"generatedAt": self.stamp(), "seqNo": 0, "tbc": False, "eventData": data}
        self.outbox.append(("NotifyEvent", payload))
        self.wake.set()

    def accepted_recently(self) -> bool:
        """Accepted and online, or offline for at most OfflineThreshold (on the cycle clock, like every
        offline duration). While the link is up it is the contact: a dead link is found in real time by the
        Heartbeat's answer (at most HeartbeatInterval + call_timeout_s), the floor that keeps a site run at
        ``--speed`` (300 s of cycle clock pass in under a real second at 400x) from flickering between two
        heartbeats."""
        if self.online:
            return True
        return self.last_contact_us is not None and self.now_us - self.last_contact_us <= (
            self.vars["OfflineThreshold"] * US
        )

    def offline_s(self) -> float:
        """How long the CSMS has been away, on the cycle clock (0 while online or never connected)."""
        if self.online or self.offline_since_us is None:
            return 0.0
        return (self.now_us - self.offline_since_us) / US

    def in_force(self, e: Evse, until: bool = False) -> InForce:
        offline = self.offline_s()
        if offline:
            self.profiles.expire_offline(offline)
        return self.profiles.in_force(self.utc(), e.tx.st.tx_id, self.tx_start(e), offline, until, e.n)

    def limits(self, inf: InForce) -> tuple[float, float]:
        discharge = inf.discharge_w
        if self.p.discharge_requires_csms and not self.accepted_recently():
            discharge = 0.0
        return inf.charge_w, discharge

    def afrr_signal(self) -> int | None:
        """The AFRR signal in force: the latest whose timestamp has come (2.1 AFRRSignalRequest.timestamp,
        "Time when signal becomes active"); older ones are dropped."""
        now = self.utc()
        due = [i for i, (t, _) in enumerate(self.afrr) if t <= now]
        if not due:
            return None
        del self.afrr[: due[-1]]
        return self.afrr[0][1]

    def steer(self, e: Evse, inf: InForce) -> None:
        """EVSE ``e``'s operation mode in force as a mode request to the scan (v2x.py; on a depot it names
        the EVSE): sent when it changes and again before half of its expiry has run; nothing is handed back
        before anything was asked, and while the link is down only ``local`` is sent (a profile's
        maxOfflineDuration running out)."""
        if self.cx is None or e.steering:
            return
        want = v2x.mode_request(inf, self.utc())
        sent = e.mode_sent
        due = sent is not None and "expiry_s" in sent and self.now_us - e.mode_sent_us >= sent["expiry_s"] * US / 2
        if (sent is None and want == v2x.LOCAL) or (v2x.same(sent, want) and not due):
            return
        if not self.online and want != v2x.LOCAL:
            return  # nothing new from a CSMS that is away: what it asked expires with its period
        want = v2x.mode_request(self.in_force(e, until=True), self.utc())  # now with the period's end
        e.mode_sent, e.mode_sent_us, e.steering = want, self.now_us, True
        self._spawn(self._ask_mode(e, want))

    async def _ask_mode(self, e: Evse, args: dict[str, Any]) -> None:
        try:
            ok, reason = await self.command("mode_request", {**args, **self._evse_arg(e)})
        finally:
            e.steering = False
        if ok:
            log.info("ocpp: mode request %s for EVSE %d accepted by the scan", args, e.n)
        else:
            log.warning("ocpp: mode request %s for EVSE %d refused by the scan: %s", args, e.n, reason)

    def tx_start(self, e: Evse) -> dt.datetime | None:
        return parse_time(e.tx.st.started) if e.tx.active and e.tx.st.started else None

    def publish(self, force: bool = False) -> None:
        """The shared tags: the link's and the connection's unprefixed, each EVSE's limits and operation
        mode under its prefix (``evse<n>.ocpp.limit_charge``; unprefixed on a site of one charger)."""
        if self.cx is None:
            return
        values: dict[str, Any] = {
            "ocpp.connected": self.peer is not None,
            "ocpp.accepted": self.accepted_recently(),
            "ocpp.queue": len(self.queue),
        }
        imp = exp = NO_LIMIT_W
        for e in self.evses.values():
            inf = self.in_force(e)
            self.steer(e, inf)
            charge, discharge = self.limits(inf)
            values[e.prefix + "ocpp.operation_mode"] = inf.mode
            values[e.prefix + "ocpp.limit_charge"] = charge
            values[e.prefix + "ocpp.limit_discharge"] = discharge
            if inf.connection is not None:
                imp, exp = min(imp, inf.connection[0]), min(exp, inf.connection[1])
        values["ocpp.rtt"] = self.rtt_s if self.peer is not None else None
        values["ocpp.afrr_signal"] = self.afrr_signal()
        values["ocpp.connection_import_w"], values["ocpp.connection_export_w"] = imp, exp
        now = time.monotonic()
        if not force and values == self._published and now - self._published_at < PUBLISH_EVERY_S:
            return
        for k, v in values.items():
            if v is None and k == "ocpp.afrr_signal":
                self.cx.write(k, 0, Quality.BAD)  # no signal yet: the scan gives a signal-watt request 0 W
            elif v is None:  # no link, or no round trip measured yet: the back office's supervision sees "bad"
                self.cx.write(k, self.rtt_s or 0.0, Quality.BAD)
            else:
                self.cx.write(k, v, Quality.GOOD)
        self._published, self._published_at = values, now

    async def image_loop(self, cx: TaskContext) -> None:
        self.cx = cx
        while True:
            img = await cx.next_image()
            self.on_image(img, cx.now_us)

    async def event_loop(self, cx: TaskContext) -> None:
        """NotifyEvent from the scan's event stream: every trip and its clearing, also those that start
        and end between two published images; a gap in the stream is reported as such."""
        while True:
            e = await cx.next_event()
            code = str((e.get("data") or {}).get("code", ""))
            n = self._evse_of_source(str(e.get("source", "")))
            if e["kind"] == "trip" and code:
                self._notify_trip(n, "", code)
            elif e["kind"] == "reset" and code:
                self._notify_trip(n, code, "")
            fields, self.cessation = der.alarm(e, self.cessation)
            if fields is not None:  # NotifyDERAlarm (2.1 R): a trip or momentary cessation starts or ends
                self._v21("NotifyDERAlarm", {**fields, "timestamp": self.stamp()})
            if e["kind"] == "gap":
                log.error("ocpp: scan events %s-%s were lost before NotifyEvent", e["from"], e["to"])

    def _evse_of_source(self, source: str) -> int | None:
        """The EVSE a scan event is of: on a depot from its source (``evse3.safety``; None for a site
        component), on a site of one charger its one EVSE."""
        if not self.p.evses:
            return self.p.evse_id
        n = evse_of(source)
        return n if n in self.evses else None

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
                "dataType": "integer" if d.key[0].isupper() else _DATA_TYPES.get(d.key, "string"),
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

    def save_runtime(self, **changes: Any) -> None:
        self.runtime_state = {**self.runtime_state, **changes}
        self.queue.save_state("runtime", self.runtime_state)

    async def run(self, cx: TaskContext) -> None:
        self.start, self.runtime_state = boot.classify(
            self.queue.state("runtime"), cx.runtime_id, boot.machine_boot_id()
        )
        self.queue.save_state("runtime", self.runtime_state)
        self.accepted_once = self.start.accepted
        if not self.start.runtime_start:
            log.info("ocpp: task process restarted inside runtime %s: no BootNotification", cx.runtime_id)
        log.info("ocpp: station %r, effective variables %s", self.p.identity, self.vars.effective())
        jobs = [asyncio.create_task(self.image_loop(cx)), asyncio.create_task(self.link_loop())]
        if cx.reads_events:
            jobs.append(asyncio.create_task(self.event_loop(cx)))
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


def evses_out(raw: Any, last: frozenset[int]) -> frozenset[int]:
    """The EVSEs the scan holds out of service, from its ``runtime.evses_out`` (a JSON list of ids); the last
    known set while the tag has no value or is not a list of ids (the scan writes it, so that is a bug)."""
    if not isinstance(raw, str):
        return last
    try:
        ids = json.loads(raw)
    except ValueError:
        return last
    if not isinstance(ids, list) or not all(isinstance(n, int) and not isinstance(n, bool) for n in ids):
        return last
    return frozenset(ids)
