"""Answers to the CSMS's requests (camelCase dicts in, camelCase dicts out).

Each handler answers at once and never awaits a CALL of its own (the receive loop would stall, see
docs/reference.md "OCPP"); follow-up messages (NotifyReport, ReportChargingProfiles) go to the outbox.
Actions that are not here are answered NotSupported (a 2.0.1 action) or NotImplemented (unknown).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING, Any

from runtime.tasks.ocpp import der, protocol, smart
from runtime.tasks.ocpp.variables import VARDEFS

if TYPE_CHECKING:
    from runtime.tasks.ocpp.evse import Evse
    from runtime.tasks.ocpp.station import Station

Payload = dict[str, Any]
log = logging.getLogger("v2g_plc.ocpp")
COMPONENTS = frozenset(d.component for d in VARDEFS)


def table(st: Station) -> dict[str, protocol.Handler]:
    def resolve(item: Payload) -> tuple[Payload, Any]:
        """The result skeleton of one Get/SetVariables item and its variable; the status is set where the
        component, the variable or the attribute type is not one this station has (B05/B06)."""
        comp, var = item["component"], item["variable"]
        res: Payload = {"component": comp, "variable": var}
        attr = item.get("attributeType", "Actual")
        if attr != "Actual":
            res["attributeType"] = attr
        d = st.find_var(comp["name"], var["name"], var.get("instance"))
        if comp["name"] not in COMPONENTS:
            res["attributeStatus"] = "UnknownComponent"
        elif d is None:
            res["attributeStatus"] = "UnknownVariable"
        elif attr != "Actual":
            res["attributeStatus"] = "NotSupportedAttributeType"
        return res, d

    def get_variables(req: Payload) -> Payload:
        """B06: one result per requested variable, in order."""
        out = []
        for item in req["getVariableData"]:
            res, d = resolve(item)
            if "attributeStatus" not in res:
                if d.mutability == "WriteOnly":
                    res["attributeStatus"] = "Rejected"  # a write-only value is never read back
                else:
                    res["attributeStatus"] = "Accepted"
                    res["attributeValue"] = st.vars.read(d)
            out.append(res)
        return {"getVariableResult": out}

    def set_variables(req: Payload) -> Payload:
        """B05: validated, applied and stored; a new Basic auth password reconnects with it (A01)."""
        out = []
        reconnect = False
        for item in req["setVariableData"]:
            res, d = resolve(item)
            if "attributeStatus" not in res:
                res["attributeStatus"] = st.vars.write(d, item["attributeValue"])
                if res["attributeStatus"] == "Accepted" and d.key == "password":
                    reconnect = True
            out.append(res)
        if reconnect:
            st.security_events.append("ReconfigurationOfSecurityParameters")  # reported on the new link
            if st.p.security_profile in (1, 2):
                st.reconnect_soon()
        st.wake.set()
        return {"setVariableResult": out}

    def get_base_report(req: Payload) -> Payload:
        """B07: the report follows as NotifyReport."""
        if req["reportBase"] not in ("ConfigurationInventory", "FullInventory", "SummaryInventory"):
            return {"status": "NotSupported"}
        st.report(req["requestId"])
        return {"status": "Accepted"}

    def evse(n: Any) -> Evse | None:
        """This station's EVSE ``n`` (None: it has none of that number)."""
        return st.evses.get(n) if isinstance(n, int) else None

    def set_charging_profile(req: Payload) -> Payload:
        """K01: per evseId (0: every EVSE, or the station's maximum); a TxProfile of that EVSE's transaction."""
        if st.version.name == "2.1" and (why := smart.unsupported(req["chargingProfile"])):
            return refused(why, "UnsupportedParam")
        e = evse(req["evseId"])
        tx_id = e.tx.st.tx_id if e is not None else None
        status, reason = st.profiles.set(req["evseId"], req["chargingProfile"], tx_id, st.version.name)
        st.publish(force=True)
        out: Payload = {"status": status}
        if reason:
            out["statusInfo"] = {"reasonCode": reason}
            log.warning("ocpp: SetChargingProfile %s for EVSE %s %s (%s)", req["chargingProfile"]["id"],
                        req["evseId"], status, reason)  # fmt: skip
        return out

    def clear_charging_profile(req: Payload) -> Payload:
        gone = st.profiles.clear(req.get("chargingProfileId"), req.get("chargingProfileCriteria"))
        st.publish(force=True)
        return {"status": "Accepted" if gone else "Unknown"}

    def get_charging_profiles(req: Payload) -> Payload:
        """K09: the profiles follow as ReportChargingProfiles, one message per EVSE."""
        found = st.profiles.matching(req.get("evseId"), req["chargingProfile"])
        if not found:
            return {"status": "NoProfiles"}
        by_evse: dict[int, list[Payload]] = {}
        for it in found:
            by_evse.setdefault(it["evseId"], []).append(it["profile"])
        evses = sorted(by_evse)
        for i, evse in enumerate(evses):
            st.outbox.append(
                (
                    "ReportChargingProfiles",
                    {"requestId": req["requestId"], "chargingLimitSource": "CSO", "evseId": evse,
                     "chargingProfile": by_evse[evse], "tbc": i < len(evses) - 1},
                )
            )  # fmt: skip
        st.wake.set()
        return {"status": "Accepted"}

    def get_composite_schedule(req: Payload) -> Payload:
        """K08: one of this station's EVSEs (or 0, the station)."""
        e = evse(req["evseId"])
        if e is None and req["evseId"] != 0:
            return refused(f"no EVSE {req['evseId']} here", "UnknownEvse")
        tx_id, start = (e.tx.st.tx_id, st.tx_start(e)) if e is not None else (None, None)
        sched = st.profiles.composite(
            st.utc(), req["duration"], req.get("chargingRateUnit", "W"), tx_id, start,
            v2x=st.version.name == "2.1", evse=req["evseId"],
        )  # fmt: skip
        sched["evseId"] = req["evseId"]
        return {"status": "Accepted", "schedule": sched}

    def get_transaction_status(req: Payload) -> Payload:
        """E14: messagesInQueue is the persistent queue's truth."""
        queued = len(st.queue) > 0
        out: Payload = {"messagesInQueue": queued}
        tid = req.get("transactionId")
        if tid is not None:
            out["ongoingIndicator"] = st.evse_of_tx(tid) is not None
        return out

    def refused(reason: str, code: str = "NotAllowed") -> Payload:
        # statusInfo.reasonCode is at most 20 characters, additionalInfo at most 512 (StatusInfoType)
        log.warning("ocpp: a request of the CSMS rejected (%s): %s", code, reason)
        return {"status": "Rejected", "statusInfo": {"reasonCode": code, "additionalInfo": reason[:512]}}

    async def change_availability(req: Payload) -> Payload:
        """G03/G04: Inoperative holds the site at 0 W both ways with the permit withdrawn, in the scan
        (persisted there, so a restart keeps it); Operative releases it. The station (EVSE 0) or one of its
        EVSEs: on a depot the scan decides whether it can take one EVSE out (runtime/commands.py)."""
        n = (req.get("evse") or {}).get("id", 0)
        if n != 0 and evse(n) is None:
            return refused(f"no EVSE {n} here", "UnknownEvse")
        operative = req["operationalStatus"] == "Operative"
        args = {"operative": operative, **({"evse": n} if st.p.evses and n else {})}
        ok, reason = await st.command("availability", args)
        if not ok:
            return refused(reason)
        if n == 0 or not st.p.evses:
            st.available = operative
        else:  # one EVSE: the station stays as it is; runtime.evses_out confirms this from the next image on
            st.evses_out = st.evses_out - {n} if operative else st.evses_out | {n}
        st.publish(force=True)
        st.wake.set()
        return {"status": "Accepted"}

    async def reset(req: Payload) -> Payload:
        """B11/B12: the scan puts its outputs to their safe values, persists and exits with the restart
        code; a transaction in progress is ended first (ImmediateReset). OnIdle with a transaction is
        Scheduled: the reset follows when it ends. A reset of one EVSE is not supported (one scan)."""
        if req.get("evseId") not in (None, 0):
            return refused("this station resets as a whole", "UnsupportedRequest")
        if req["type"] == "OnIdle" and any(e.tx.active for e in st.evses.values()):
            st.reset_when_idle = True
            return {"status": "Scheduled"}
        return await st.reset_now()

    async def request_start(req: Payload) -> Payload:
        """F01/F02: releases a remote stop in the scan; the transaction itself starts with the plug (its
        Started event carries the remoteStartId)."""
        n = req.get("evseId")
        if n is None and len(st.evses) == 1:
            n = next(iter(st.evses))
        e = evse(n)
        if e is None:  # a station of several EVSEs starts on the one the CSMS names
            return refused(f"no EVSE {n} here" if n is not None else "name the EVSE (evseId)", "UnknownEvse")
        if not st.available or e.n in st.evses_out:
            return refused("the EVSE is Inoperative", "Unavailable")
        if st.p.authorize_remote_start:  # AuthCtrlr.AuthorizeRemoteStart (F01.FR.02): the CSMS's Authorize
            status = await st.authorize(req["idToken"])
            if status != "Accepted":
                return refused(f"idToken not authorized: {status}", "InvalidIdToken")
        ok, reason = await st.command("start", {"remote_id": req["remoteStartId"], **st._evse_arg(e)})
        if not ok:
            return refused(reason)
        out: Payload = {"status": "Accepted"}
        if e.tx.active:
            out["transactionId"] = e.tx.st.tx_id
        else:
            e.tx.remote_start_id = req["remoteStartId"]
            e.tx.id_token = req["idToken"]
            e.tx.wait_for_unplug = False  # a new transaction may start with the EV already plugged in
        return out

    async def request_stop(req: Payload) -> Payload:
        """F03: the scan holds 0 W (both ways) until the EV leaves or a remote start; the transaction
        ends with triggerReason RemoteStop, stoppedReason Remote."""
        e = st.evse_of_tx(req["transactionId"])
        if e is None:
            return refused("no such transaction in progress", "TxNotFound")
        ok, reason = await st.command("stop", st._evse_arg(e))
        if not ok:
            return refused(reason)
        st.stop_transaction(e, "RemoteStop", "Remote")
        return {"status": "Accepted"}

    def trigger_message(req: Payload) -> Payload:
        """F06: what the station can send again on request."""
        what = req["requestedMessage"]
        n = (req.get("evse") or {}).get("id")
        if n not in (None, 0) and evse(n) is None:
            return refused(f"no EVSE {n} here", "UnknownEvse")
        one = evse(n)
        which = [one] if one is not None else list(st.evses.values())
        if what == "BootNotification":
            return refused("the boot was accepted already", "NotEnabled")
        active = [e for e in which if e.tx.active]
        if what == "Heartbeat":
            st.outbox.append(("Heartbeat", {}))
        elif what == "StatusNotification":
            for e in which:
                e.sent_status = None  # the sender sends the current status again
        elif what == "MeterValues":
            for e in which:
                st.trigger_meter_values(e)
        elif what == "TransactionEvent" and active:
            for e in active:
                st.trigger_transaction_event(e)
        elif what == "TransactionEvent":
            return refused("no transaction in progress", "TxNotFound")
        else:
            return {"status": "NotImplemented"}
        st.wake.set()
        return {"status": "Accepted"}

    async def set_der_control(req: Payload) -> Payload:
        """R (2.1): the scan's safety layer validates against IEEE 1547 for the site's category, applies at
        a cycle boundary and persists; its refusal is Rejected with the reason."""
        cmd, status, why = der.set_command(req, st.utc())
        if cmd is None:
            return {"status": status, "statusInfo": {"reasonCode": "UnsupportedParam", "additionalInfo": why[:512]}}
        ok, reason = await st.command("der_control", cmd)
        if not ok:
            return refused(reason, "InvalidValue")
        return {"status": "Accepted"}

    def afrr_signal(req: Payload) -> Payload:
        """2.1 AFRRSignal (Q08, aFRR): the signal a frequency period's v2xSignalWattCurve maps to power. Kept
        from its timestamp on and published as ``ocpp.afrr_signal``; the scan computes the power every
        cycle (programs/authority.py). Rejected (NoSignalWattCurve, Q08.FR.11) when no signal-watt curve is
        in force at that time, so the CSMS learns the signal moves nothing."""
        try:
            at = smart.parse_time(req["timestamp"])
        except ValueError:
            return refused(f"timestamp {req['timestamp']!r} is not a date-time", "InvalidValue")
        t = max(at, st.utc())
        if not any(
            st.profiles.in_force(t, e.tx.st.tx_id, st.tx_start(e), evse=e.n).signal_curve for e in st.evses.values()
        ):
            return refused("no period with a v2xSignalWattCurve is in force at that time", "NoSignalWattCurve")
        st.afrr = sorted([*st.afrr, (at, int(req["signal"]))], key=lambda x: x[0])[-16:]
        st.publish(force=True)
        return {"status": "Accepted"}

    def get_der_control(req: Payload) -> Payload:
        """R (2.1): the controls in force (the scan's ``safety.der_overlay``) follow as ReportDERControl."""
        found = der.matching(st.der_overlay, req)
        if not found:
            return {"status": "NotFound"}
        st.outbox.append(("ReportDERControl", der.report(req["requestId"], found)))
        st.wake.set()
        return {"status": "Accepted"}

    async def clear_der_control(req: Payload) -> Payload:
        found = der.matching(st.der_overlay, req)
        if not found:
            return {"status": "NotFound"}
        args = {"action": "clear", "control_id": req.get("controlId"), "control_type": req.get("controlType")}
        ok, reason = await st.command("der_control", args)
        if not ok:
            return refused(reason, "InvalidValue")
        return {"status": "Accepted"}

    def certificate_signed(req: Payload) -> Payload:
        """A03: the chain for the CSR the station sent, verified (rotation.py) and installed as a trial;
        the station reconnects with it and keeps the old pair until the new connection works."""
        if req.get("certificateType", "ChargingStationCertificate") != "ChargingStationCertificate":
            return refused("only the ChargingStationCertificate is managed here", "UnsupportedCertType")
        why = st.certs.verify(req["certificateChain"], dt.datetime.now(dt.UTC))
        if why:
            log.error("ocpp: CertificateSigned rejected: %s", why)
            st.security_event("InvalidChargingStationCertificate")
            return refused(why, "InvalidCertificate")
        st.certs.install_trial(req["certificateChain"])
        log.warning("ocpp: a renewed station certificate is installed: reconnecting with it")
        st.reconnect_soon()
        return {"status": "Accepted"}

    def install_certificate(req: Payload) -> Payload:
        """M05: a CSMS root, trusted from the next connection on; other kinds are not kept here."""
        if req["certificateType"] != "CSMSRootCertificate":
            return refused(f"{req['certificateType']} is not kept by this station", "UnsupportedCertType")
        why = st.roots.install(req["certificate"], dt.datetime.now(dt.UTC))
        return refused(why, "InvalidCertificate") if why else {"status": "Accepted"}

    def get_installed_certificate_ids(req: Payload) -> Payload:
        """M03: the CSMS roots the CSMS installed (the operator's ca_file is not the CSMS's to manage)."""
        types = req.get("certificateType")
        ids = st.roots.ids() if types is None or "CSMSRootCertificate" in types else []
        if not ids:
            return {"status": "NotFound"}
        chain = [{"certificateType": "CSMSRootCertificate", "certificateHashData": h} for h in ids]
        return {"status": "Accepted", "certificateHashDataChain": chain}

    def delete_certificate(req: Payload) -> Payload:
        """M04: only a root the CSMS installed."""
        return {"status": "Accepted" if st.roots.delete(req["certificateHashData"]) else "NotFound"}

    def update_dynamic_schedule(req: Payload) -> Payload:
        """2.1 K: new values for a Dynamic profile's period, in force at once."""
        status = st.profiles.update_dynamic(req["chargingProfileId"], req["scheduleUpdate"], st.utc())
        st.publish(force=True)
        if status != "Accepted":
            return {"status": status, "statusInfo": {"reasonCode": "InvalidSchedule"}}
        return {"status": status}

    return {
        "CertificateSigned": certificate_signed,
        "InstallCertificate": install_certificate,
        "GetInstalledCertificateIds": get_installed_certificate_ids,
        "DeleteCertificate": delete_certificate,
        "UpdateDynamicSchedule": update_dynamic_schedule,
        "AFRRSignal": afrr_signal,
        "SetDERControl": set_der_control,
        "GetDERControl": get_der_control,
        "ClearDERControl": clear_der_control,
        "ChangeAvailability": change_availability,
        "Reset": reset,
        "RequestStartTransaction": request_start,
        "RequestStopTransaction": request_stop,
        "TriggerMessage": trigger_message,
        "GetVariables": get_variables,
        "SetVariables": set_variables,
        "GetBaseReport": get_base_report,
        "SetChargingProfile": set_charging_profile,
        "ClearChargingProfile": clear_charging_profile,
        "GetChargingProfiles": get_charging_profiles,
        "GetCompositeSchedule": get_composite_schedule,
        "GetTransactionStatus": get_transaction_status,
    }
