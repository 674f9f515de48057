"""The interlock that tells the SECC what the safety layer committed (docs/iso15118.md "Set point").

Listed last under ``safety:``, it sees the outputs after every other interlock had its word, so the EV is
told exactly the power the inverter is told: the committed set point (signed W, + = into the EV), the
permit, the safety layer's charge and discharge limits, and whether a trip is latched (which ends the
session). It writes only the SECC's own outputs; it never loosens anything.

It also hands the SECC the charger's own state its hooks answer from (docs/iso15118.md "Contactor, cable
check and CP state"): the contactor, the insulation monitor's verdict and the CP state, from the charger
map's points, "unknown" when a point is not good (the SECC is then not ready: fail safe), "simulated"
where the site names no point.

It also turns the SECC device's failure counter into events (kind ``warning``, one per failed session,
with its kind and reason: docs/iso15118.md "Session failures"). The device counts and this interlock
tells, because a device has no event interface: events are made by cycles, so they carry the cycle that
saw the failure and land in the event log and the event stream like every other.
"""

from __future__ import annotations

from pydantic import Field

from runtime.api import Cycle, Params, Program, SiteInfo, TagName, register_interlock
from runtime.secc.driver import HOOKS, PREFIX, SIMULATED, UNKNOWN, failure_tags, link_outputs


class SeccLinkParams(Params):
    prefix: str = Field("secc", pattern=PREFIX, description="the SECC device's tag prefix (its `prefix` param)")
    setpoint_tag: TagName = Field("inverter.setpoint", description="the committed set point, W signed")
    enable_tag: TagName = Field("inverter.enable", description="the committed permit to energize")
    trip_tag: TagName = Field("safety.trip", description="the latched trip code, empty when none")
    limit_charge_tag: TagName = Field("safety.limit_charge", description="charge allowed now, W >= 0")
    limit_discharge_tag: TagName = Field("safety.limit_discharge", description="discharge allowed now, W >= 0")
    contactor_tag: TagName | None = Field(
        None, description="the charger's DC/AC output contactor, true = closed; None: the charger has no such point"
    )
    isolation_tag: TagName | None = Field(
        None,
        description="the insulation monitor's verdict (valid, warning, fault, invalid, no_imd) for the DC cable "
        "check; None: the charger has no such point",
    )
    cp_state_tag: TagName | None = Field(
        None, description="the control pilot's IEC 61851-1 state (A1 ... F); None: the charger has no such point"
    )


@register_interlock("secc_link")
class SeccLink(Program):
    """Copies, never decides: what the scan committed, to the SECC."""

    Params = SeccLinkParams
    params: SeccLinkParams

    def __init__(self, name: str, params: SeccLinkParams, site: SiteInfo):
        super().__init__(name, params, site)
        self.out = link_outputs(params.prefix)
        self.failure = failure_tags(params.prefix)
        self.seen: int | None = None  # the failure count already told
        # Plug and Charge refused with EIM allowed (pnc_fallback_eim): no failure, the session goes on
        self.refused_tag, self.auth_tag = f"{params.prefix}.contract_refused", f"{params.prefix}.auth"
        self.refused_seen: str | None = None

    def requires(self) -> list[str]:
        p = self.params
        return [
            p.setpoint_tag,
            p.enable_tag,
            p.trip_tag,
            p.limit_charge_tag,
            p.limit_discharge_tag,
            *self.out.values(),
            *self.failure.values(),
            *(t for t in self.hook_tags().values() if t is not None),
        ]

    def hook_tags(self) -> dict[str, str | None]:
        p = self.params
        return {"contactor": p.contactor_tag, "isolation": p.isolation_tag, "cp_state": p.cp_state_tag}

    def hook(self, cx: Cycle, key: str, tag: str | None) -> str:
        """The charger's state as the SECC's hooks read it: one of HOOKS[key], or not known."""
        if tag is None:
            return SIMULATED
        v = cx.inputs.value(tag)
        if key == "contactor":
            return UNKNOWN if not isinstance(v, bool) else ("closed" if v else "open")
        return v if isinstance(v, str) and v in HOOKS[key] else UNKNOWN

    def _tell_failures(self, cx: Cycle) -> None:
        f = self.failure
        count = cx.inputs.value(f["count"])
        if not isinstance(count, int):
            return
        if self.seen is not None and count > self.seen:
            last = str(cx.inputs.value(f["last"]) or "")
            kind = last.split(":", 1)[0]
            in_row = cx.inputs.value(f["handshake"])
            more = f" ({count - self.seen} failures since the last cycle)" if count - self.seen > 1 else ""
            cx.event("warning", f"ISO 15118 session failed{more}: {last}", failure=kind, handshake_timeouts=in_row)
        self.seen = count

    def _tell_contract_refused(self, cx: Cycle) -> None:
        """A contract refused where the site lets the session go on as EIM ends no session, so it is no
        failure; the operator and the back office must still hear that the EV's contract was not accepted.
        (Read without ``requires``: a site without Plug and Charge has no such tags.)"""
        r = cx.inputs.value(self.refused_tag)
        refused = r if isinstance(r, str) and r else None
        if refused is not None and refused != self.refused_seen and cx.inputs.value(self.auth_tag) == "EIM":
            cx.event("warning", f"ISO 15118 contract refused, the session goes on as EIM: {refused}", failure="auth")
        self.refused_seen = refused

    def scan(self, cx: Cycle) -> None:
        self._tell_failures(cx)
        self._tell_contract_refused(cx)
        p, out, o = self.params, cx.out, self.out
        trip = out[p.trip_tag]
        enable = out[p.enable_tag] is True and not trip
        sp = float(out[p.setpoint_tag] or 0.0) if enable else 0.0
        out[o["setpoint_w"]] = sp if sp != 0 else 0.0
        out[o["enable"]] = enable
        out[o["terminate"]] = bool(trip)
        out[o["max_charge_w"]] = max(float(out[p.limit_charge_tag] or 0.0), 0.0)
        out[o["max_discharge_w"]] = max(float(out[p.limit_discharge_tag] or 0.0), 0.0)
        for key, tag in self.hook_tags().items():
            out[o[key]] = self.hook(cx, key, tag)
