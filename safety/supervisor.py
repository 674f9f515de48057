"""The safety supervisor: one interlock with the last word over the inverter setpoint and permit.

Why one interlock composed of small pure parts (``grid``, ``enter_service``, ``thermal``, ``battery``,
``divergence``) rather than one interlock each: the safety tags must be coherent - one trip code, one
reason - and the order in which protections combine (trip over not-ready over cessation over limits) must
not depend on how a site happens to list them.

Three classes of action (docs/design.md#safety-tag-classes):
- trip: setpoint 0 both ways, permit withdrawn, latched; ``safety.trip`` holds the code.
- cessation: setpoint 0 while the condition lasts, no trip.
- limit: a directional clamp, shown in ``safety.limit_charge`` / ``safety.limit_discharge`` (W >= 0).
"""

from __future__ import annotations

import functools
import json
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import compress, repeat
from operator import is_, is_not
from typing import Any, Literal, cast

from runtime.api import Cycle, Program, SiteInfo, register_interlock
from runtime.tags import MISSING, US, Direction, Image, Quality, TagSpec, TagType, TagValue
from safety import der
from safety import tables as T
from safety.battery import soc_fractions
from safety.divergence import DivergenceMonitor
from safety.enter_service import EnterService
from safety.grid import Rocof, TripTimers, in_continuous, in_enter_service_window
from safety.inputs import DIAGNOSTIC_PREFIX, tag_names
from safety.settings import EnterService as EnterServiceSettings
from safety.settings import Resolved, SafetyParams, plain, resolve
from safety.thermal import ThermalGuard
from safety.verify import verify_settings

Kind = Literal["grid", "auto", "operator"]

# How each trip returns to service; the README table states the same (tests/safety/test_docs.py checks).
TRIP_KINDS: dict[str, Kind] = {
    **{c: "grid" for c in ("ov2", "ov1", "uv1", "uv2", "of2", "of1", "uf1", "uf2", "islanding", "rocof")},
    "over_temperature": "auto",
    "comms_lost": "auto",
    "overrun": "auto",
    "program_fault": "auto",
    "persist_fault": "auto",
    "power_divergence": "operator",
    "write_mismatch": "operator",
}


@dataclass(slots=True)
class Latch:
    kind: Kind
    reason: str
    t_us: int


class _Evidence(dict[str | None, Any]):
    """``SafetySupervisor._val`` of every read, kept from cycle to cycle: the image cannot change within a
    cycle, and a judged read's entry is judged again only when the image holds another tag value for it
    (``SafetySupervisor._evidence``), so each step looks the value up here instead of judging the tag again.
    A name outside the judged reads (an output this interlock clamps, or a tag this site's settings leave
    unread, named in another setting too) is judged on first use in a cycle and dropped at the next, so every
    name reads exactly as through ``_val`` on this cycle's image; None (an optional tag not set) is None."""

    __slots__ = ("extra", "img", "val")

    def __init__(self, val: Callable[[Image, str | None], Any]):
        self.val = val  # (the dict itself is made empty by dict.__new__)
        self.img: Image | None = None
        self.extra: list[str | None] = []
        self[None] = None

    def __missing__(self, name: str | None) -> Any:
        assert self.img is not None
        v = self[name] = self.val(self.img, name)
        self.extra.append(name)
        return v

    def forget(self) -> None:
        """Before a new cycle's image: the names judged on first use in the last cycle are judged again."""
        for name in self.extra:
            del self[name]
        self.extra.clear()


@dataclass(slots=True)
class _Meas:
    """What the cycle measured: one per interlock, filled in again every cycle (``SafetySupervisor._measure``).
    ``vals``: every read's value as evidence (``SafetySupervisor._val``); ``forced``: the judged reads that are
    forced, in sorted order; ``grid`` (highest and lowest per-unit voltage, frequency) is None unless voltage
    and frequency are all good. The grid's state (``grid`` to ``cess_table``) is worked out again only when
    its reads (``key``: voltage, frequency, loss, phase voltages) or the settings in force (``r``) are other
    objects than those it was worked out from: the same objects give the same answer."""

    vals: _Evidence
    forced: list[str] = field(default_factory=list)
    meas_p: float | None = None
    prev_sp: float = 0.0
    grid: tuple[float, float, float] | None = None
    loss: bool = False
    continuous: bool = False
    es_window: bool = False
    cess_table: bool = False  # the ride-through table says cease (tables.cessation, highest or lowest voltage)
    key: tuple[Any, ...] = ()
    r: Resolved | None = None


OUT_TRIP, OUT_REASON, OUT_CESSATION = "safety.trip", "safety.reason", "safety.cessation"
OUT_LIMIT_CHARGE, OUT_LIMIT_DISCHARGE, OUT_EXTERNAL_OK = (
    "safety.limit_charge",
    "safety.limit_discharge",
    "safety.external_ok",
)
OUT_DER_OVERLAY, OUT_DER_DROOP = "safety.der_overlay", "safety.der_freq_droop"


RESTORED = " (latched before restart)"
UNJUDGED = TagValue(None, Quality.BAD, -1)  # in no image: the first cycle judges every read


# Outputs are written only when the output image holds another value: the engine commits what was written
# this cycle (``Outputs.dirty``), and rewriting the value the output image holds commits nothing. A power
# output that is zero is always written, since -0.0 equals 0.0 but is not the same value.


@register_interlock("v2g_safety")
class SafetySupervisor(Program):
    """IEEE 1547 trips, islanding, enter service, thermal, battery, divergence, comms and limits."""

    Params = SafetyParams
    params: SafetyParams

    def __init__(self, name: str, params: SafetyParams, site: SiteInfo):
        super().__init__(name, params, site)
        p = params
        if int(site.nominal_frequency) != p.frequency_basis_hz:
            raise ValueError(
                f"the site is {site.nominal_frequency:g} Hz but the safety settings are for {p.frequency_basis_hz} Hz: "
                "IEEE 1547 defaults are 60 Hz; a 50 Hz site states frequency_basis_hz: 50 and its own frequency "
                "thresholds from its grid code (e.g. EN 50549-1)"
            )
        if site.phases == 3 and p.phase_nominal_voltage is None:
            raise ValueError("a three-phase site states phase_nominal_voltage, the basis of grid.voltage_l1..l3")
        self.r = self.r_base = resolve(p)
        self.timers = TripTimers(self.r.trips)
        isl = p.islanding
        # ROCOF's baseline is a supervision time too (below): a read's stamp carries the wire's latency, real
        # time, which at --speed N is worth N x more of the plant's frequency movement. Its confirm time
        # counts estimates on the cycle clock (safety.grid.Rocof).
        self.rocof = Rocof(
            self.r.rocof_hz_per_s, round(isl.rocof_window_s * 1e6) * site.speed, round(isl.confirm_s * 1e6)
        )
        es = p.enter_service
        self.es = EnterService(es.delay_s, es.ramp_s, es.gate_charging)
        th = p.thermal
        self.thermal = ThermalGuard(
            th.derate_start_c,
            th.trip_c,
            th.reset_c,
            th.cooldown_s,
            th.tau_s,
            th.ambient_c,
            th.slope_window_s,  # on the cycle clock: short against the heat sink (docs/architecture.md Clocks)
            max(p.rated_charge_w, p.rated_discharge_w),
        )
        # Supervision times (how long a device may take to answer) count like the tags' age limits: drivers
        # work in real time, so on a simulated site run N times faster (SiteInfo.speed) they stretch N times.
        # A write that takes one real poll round is then no mismatch at any speed; a persistent one still is.
        self.speed = site.speed
        self.mismatch_us = round(p.comms.write_mismatch_s * 1e6) * self.speed
        self.div = DivergenceMonitor(  # (its settings as plain attributes: it reads them every cycle)
            cast(Any, plain(p.divergence)), round(p.divergence.time_s * 1e6) * self.speed
        )
        self.latches: dict[str, Latch] = {}
        self.cessation = False
        self._was_ceased = False
        self._cess_type = ""
        self.verified = False
        self.seen_good: set[str] = set()
        self.mismatch_since: int | None = None
        self.snr_cap: float | None = None
        self.limit_names: frozenset[str] = frozenset()
        self.shortfall_warned = False
        self.ext_charge: dict[str, float] = {}  # last good charge limit per external limit (persisted)
        self.der: dict[str, der.Entry] = {}  # the CSMS's DER controls (persisted), applied or waiting
        self.der_now: dict[str, der.Entry] = {}  # in force now, per control type
        self.der_json = der.overlay_json({})
        self.der_droop = ""
        self._now_us = 0  # the last cycle's clock: check_command judges against it
        self._der_notes: list[str] = []  # what restore() had to drop, told as events in the first cycle
        # the settings the scan reads, as plain attributes, and the params they show (rebuilt for others)
        self._hp, self._hp_of = cast(SafetyParams, plain(params)), params
        self._vals = _Evidence(self._val)  # every read's verdict, judged again when its tag value changes
        self._last_tv: Sequence[TagValue] = [UNJUDGED] * len(self._judged)  # the tag values judged, per read
        self._judged_at = range(len(self._judged))
        # every judged tag value of an image by key, in one call (_evidence; None once a name was not there)
        self._by_key: Callable[[Mapping[str, TagValue]], tuple[TagValue, ...]] | None = (
            operator.itemgetter(*self._judged) if len(self._judged) > 1 else None
        )
        self._at = {n: i for i, n in enumerate(self._judged)}  # where each judged read's tag value is in _last_tv
        self._forced: list[str] = []  # the judged reads that are forced, in ``_judged``'s order
        self._m = _Meas(self._vals)  # what the cycle measured, and the grid's state kept with what it came from
        self._all_seen = False  # every comms tag has had a first good read (seen_good only grows)
        c = p.comms
        self._ext_watched = bool(c.external_tags or c.rtt_tag)  # else external health is always (True, "")

    # -- declaration ---------------------------------------------------------------------------
    def declare(self) -> list[TagSpec]:
        out = Direction.OUTPUT
        return [
            TagSpec(OUT_TRIP, TagType.STR, "", out, "", description="active trip code, empty when none"),
            TagSpec(OUT_REASON, TagType.STR, "", out, "", description="why the safety layer acts, one sentence"),
            TagSpec(OUT_CESSATION, TagType.BOOL, "", out, False, description="IEEE 1547 momentary cessation active"),
            TagSpec(OUT_LIMIT_CHARGE, TagType.FLOAT, "W", out, 0.0, description="charge allowed now, W >= 0"),
            TagSpec(OUT_LIMIT_DISCHARGE, TagType.FLOAT, "W", out, 0.0, description="discharge allowed now, W >= 0"),
            TagSpec(
                OUT_DER_OVERLAY,
                TagType.STR,
                "",
                out,
                "{}",
                description="the CSMS's DER controls: JSON control_id -> {control_type, is_default, ocpp}",
            ),
            TagSpec(
                OUT_DER_DROOP,
                TagType.STR,
                "",
                out,
                "",
                description="the FreqDroop in force for the frequency-watt program (JSON), empty when none",
            ),
            TagSpec(
                OUT_EXTERNAL_OK,
                TagType.BOOL,
                "",
                out,
                False,
                description="external commands (back office, grid services) may be followed",
            ),
        ]

    def requires(self) -> list[str]:
        p = self.params
        names = [
            p.tags.voltage,
            p.tags.frequency,
            p.tags.setpoint,
            p.tags.enable,
            *p.comms.required_tags,
            p.battery.soc_tag,
            p.divergence.measured_tag,
            *p.comms.external_tags,
            *p.verify.ratings,
            *(t for d in p.verify.trips.values() for t in (d.threshold_tag, d.time_tag)),
        ]
        for opt in (
            p.islanding.loss_tag,
            p.thermal.tag,
            p.battery.soh_tag,
            p.battery.temperature_tag,
            p.comms.snr_tag,
            p.comms.handshake_timeouts_tag,
            p.comms.rtt_tag,
            p.comms.write_mismatch_tag,
            p.limits.rating_charge_tag,
            p.limits.rating_discharge_tag,
            p.verify.reversion_tag,
        ):
            if opt:
                names.append(opt)
        for lim in p.limits.external:
            names += [t for t in (lim.charge_tag, lim.discharge_tag) if t]
        if p.comms.external_modes:
            names.append(p.comms.mode_tag)
        if self.site.phases == 3:
            names += p.tags.voltage_phases
        return list(dict.fromkeys(names))

    @functools.cached_property
    def reads(self) -> frozenset[str]:
        """Every tag this interlock reads to decide: each tag name in its settings (``safety.inputs``), less
        those this site's settings leave unread (phase voltages on a single-phase site, the mode without
        external modes). tests/safety/test_forcing.py records the reads of real cycles against it."""
        p = self.params
        names = set(tag_names(p))
        if self.site.phases != 3:
            names -= set(p.tags.voltage_phases) - {p.tags.voltage, p.tags.frequency}
        if not p.comms.external_modes:
            names.discard(p.comms.mode_tag)
        return frozenset(names)

    @functools.cached_property
    def _judged(self) -> list[str]:
        """The reads whose force is a trip: all but the outputs this interlock clamps (forcing those is a
        program request like any other, and it is clamped)."""
        p = self.params
        return sorted(self.reads - {p.tags.setpoint, p.tags.enable})

    def _diagnostic(self, name: str) -> bool:
        c = self.params.comms
        return name.startswith(DIAGNOSTIC_PREFIX) or name in (c.overrun_tag, c.fault_tag, c.persist_fault_tag)

    @functools.cached_property
    def _comms_tags(self) -> list[str]:
        """The configured comms tags plus every measurement the grid trips stand on: losing a phase
        voltage or the frequency after a first good read is a trip, never a silent end of protection."""
        p = self.params
        grid = [p.tags.voltage, p.tags.frequency, *(p.tags.voltage_phases if self.site.phases == 3 else [])]
        # The setpoint read-back verdict too: a read-back that is bad or undecodable after a first good one
        # is a communications fault, never a mismatch.
        readback = [p.comms.write_mismatch_tag] if p.comms.write_mismatch_tag else []
        return list(dict.fromkeys([*p.comms.required_tags, *(t for t in grid if t), *readback]))

    # -- persistence ---------------------------------------------------------------------------
    def persist(self) -> Mapping[str, Any] | None:
        if not (self.latches or self.thermal.latched or self.der or self.ext_charge):
            return None  # nothing to keep (the engine asks after every cycle)
        kept = [[c, latch.reason] for c, latch in self.latches.items() if latch.kind == "operator"]
        if self.thermal.latched:
            kept.append(["over_temperature", self.latches.get("over_temperature", Latch("auto", "", 0)).reason])
        state: dict[str, Any] = {}
        if kept:
            state["latched"] = kept
        if self.der:
            state["der"] = self.der_json
        if self.ext_charge:
            state["external_charge_w"] = dict(self.ext_charge)
        return state or None

    def restore(self, state: Mapping[str, Any] | None) -> None:
        for code, reason in (state or {}).get("latched", []):
            kind = TRIP_KINDS.get(code, "operator")
            reason = str(reason).removesuffix(RESTORED)  # one note, however many restarts
            self.latches[code] = Latch(kind, reason + RESTORED, 0)
            if code == "over_temperature":
                self.thermal.latched, self.thermal.tripped_at_us = True, 0
        st = state or {}
        self.ext_charge = {str(k): float(v) for k, v in st.get("external_charge_w", {}).items()}
        if st.get("der"):
            # Restored before cycle 0 and checked again against today's base: a site file edited since may
            # have made a stored control looser than it, or out of range; such a control is dropped, said.
            # A scheduled control starts its duration again (the cycle clock restarts): held longer, never less.
            entries = {
                cid: der.Entry(cid, e["control_type"], bool(e["is_default"]), e["ocpp"])
                for cid, e in json.loads(st["der"]).items()
            }
            for cid, e in sorted(entries.items()):
                try:
                    der.check(
                        e.control_type, e.ocpp, e.is_default, self.params.category, self.params.frequency_basis_hz
                    )
                    self._der_use({**self.der, cid: e}, 0)
                except der.DERRefused as exc:
                    self._der_notes.append(f"DER control {cid} dropped at restore: {exc}")

    # -- DER controls (the CSMS's overlay on the base settings) -------------------------------------
    def _der_effective(
        self, entries: dict[str, der.Entry], now_us: int
    ) -> tuple[dict[str, der.Entry], Resolved, EnterServiceSettings]:
        """What ``entries`` would put in force at ``now_us``, or DERRefused; changes nothing."""
        now = der.in_force(entries, now_us)
        if not any(t in der.TRIP_CURVES or t == "EnterService" for t in now):
            return now, self.r_base, self.params.enter_service
        eff = der.settings(self.params, now, {"nominal_frequency": self.site.nominal_frequency})
        return now, resolve(eff), eff.enter_service

    def _der_use(self, entries: dict[str, der.Entry], now_us: int) -> None:
        """Make ``entries`` the overlay from this cycle on, or DERRefused (and nothing changes)."""
        now, r, es = self._der_effective(entries, now_us)
        self.der, self.der_now, self.r = entries, now, r
        self.timers.retune(r.trips)
        self.es.retune(es.delay_s, es.ramp_s)
        self.der_json = der.overlay_json(entries)
        droop = now.get("FreqDroop")
        basis = self.params.frequency_basis_hz
        self.der_droop = "" if droop is None else json.dumps(der.freq_droop(droop.ocpp, self.params.category, basis))

    def _der_plan(self, a: Mapping[str, Any], now_us: int) -> tuple[dict[str, der.Entry], list[str]]:
        """The overlay a ``der_control`` command asks for, and the ids it supersedes or clears; DERRefused
        when the control is not one this layer implements or nothing matches a clear.

        A new default replaces the default of its type; a scheduled control sits beside the others, and the
        one in force wins by priority (``der.in_force``)."""
        p = self.params
        if a["action"] == "clear":
            cid, ctype = a.get("control_id"), a.get("control_type")
            gone = [
                k
                for k, e in self.der.items()
                if (cid is None or k == cid) and (ctype is None or e.control_type == ctype)
            ]
            if not gone:
                raise der.DERRefused("no such DER control")
            return {k: e for k, e in self.der.items() if k not in gone}, gone
        ctype, cid, is_default = a["control_type"], a["control_id"], a["is_default"]
        der.check(ctype, a["ocpp"], is_default, p.category, p.frequency_basis_hz)
        superseded = [
            k for k, e in self.der.items() if k != cid and is_default and e.is_default and e.control_type == ctype
        ]
        entries = {k: e for k, e in self.der.items() if k not in superseded}
        entries[cid] = der.Entry(cid, ctype, is_default, a["ocpp"], now_us)
        return entries, superseded

    def _der_apply(self, a: Mapping[str, Any], now_us: int, commit: bool) -> list[str]:
        """Plan, check against the base and (``commit``) apply one command; DERRefused names its type."""
        try:
            entries, ids = self._der_plan(a, now_us)
            if commit:
                self._der_use(entries, now_us)
            else:
                self._der_effective(entries, now_us)
        except der.DERRefused as exc:
            why, ctype = str(exc), a.get("control_type") or ""
            raise der.DERRefused(why if why.startswith(ctype) else f"{ctype}: {why}") from None
        return ids

    def check_command(self, kind: str, args: Mapping[str, Any]) -> str:
        """The verdict this layer would give a command now: empty when it would be applied, else the reason.

        For the gate to answer a task before the cycle that applies it (a command the gate passed is still
        checked again, and applied or refused, in the scan: the event ``der_control`` says which). Pure:
        changes nothing."""
        if kind != "der_control":
            return ""
        try:
            self._der_apply(args, self._now_us, commit=False)
        except der.DERRefused as exc:
            return str(exc)
        return ""

    def _der_cycle(self, cx: Cycle) -> None:
        """Apply this cycle's ``der_control`` commands and end scheduled controls whose duration ran out."""
        self._now_us = cx.now_us
        if self._der_notes:
            for note in self._der_notes:
                cx.event("warning", note)
            self._der_notes.clear()
        if self.der and any(not e.is_default for e in self.der.values()):
            expired = [cid for cid, e in self.der.items() if not e.in_force(cx.now_us)]
            if expired:
                self._der_use({cid: e for cid, e in self.der.items() if cid not in expired}, cx.now_us)
                cx.event("der_control", f"DER control {', '.join(expired)} ended (duration over)", expired=expired)
        for c in cx.commands:
            if c.name != "der_control":
                continue
            a = c.args
            try:
                ids = self._der_apply(a, cx.now_us, commit=True)
            except der.DERRefused as exc:
                cx.event("der_control", f"DER control refused: {exc}", id=a.get("id"), accepted=False, reason=str(exc))
                continue
            if a["action"] == "set":
                msg, key = f"DER control {a['control_id']} ({a['control_type']}) applied", "superseded"
            else:
                msg, key = f"DER control {', '.join(ids)} cleared", "cleared"
            cx.event("der_control", msg, id=a.get("id"), accepted=True, reason="", **{key: ids})
        out = cx.out
        if out.get(OUT_DER_OVERLAY) != self.der_json:
            out[OUT_DER_OVERLAY] = self.der_json
        if out.get(OUT_DER_DROOP) != self.der_droop:
            out[OUT_DER_DROOP] = self.der_droop

    def effective_variables(self) -> dict[str, object]:
        """The base settings and the DER overlay on them, where they differ: for ``check`` and ``status``."""
        out: dict[str, object] = {
            "der_controls": ", ".join(
                f"{cid}={e.control_type}({'default' if e.is_default else 'scheduled'})" for cid, e in self.der.items()
            )
            or "none"
        }
        for code, t in self.r.trips.items():
            b = self.r_base.trips[code]
            if (t.threshold, t.clearing_s) != (b.threshold, b.clearing_s):
                out[code] = f"{t.threshold:g}/{t.clearing_s:g}s (base {b.threshold:g}/{b.clearing_s:g}s)"
        es = self.params.enter_service
        if (self.es.delay_us, self.es.ramp_us, self.r.es_v, self.r.es_f) != (
            round(es.delay_s * 1e6),
            round(es.ramp_s * 1e6),
            self.r_base.es_v,
            self.r_base.es_f,
        ):

            def window(r: Resolved, delay_s: float, ramp_s: float) -> str:
                v, f = r.es_v, r.es_f
                return f"{v[0]:g}-{v[1]:g} pu, {f[0]:g}-{f[1]:g} Hz, delay {delay_s:g}s, ramp {ramp_s:g}s"

            now = window(self.r, self.es.delay_us / 1e6, self.es.ramp_us / 1e6)
            out["enter_service"] = f"{now} (base {window(self.r_base, es.delay_s, es.ramp_s)})"
        for ctype in ("LimitMaxDischarge", "FreqDroop"):
            if ctype in self.der_now:
                out[ctype] = json.dumps(dict(self.der_now[ctype].ocpp), separators=(",", ":"))
        return out

    # -- the cycle -----------------------------------------------------------------------------
    def _val(self, img: Image, name: str | None) -> Any:
        """Good, unforced value or None: a forced protective input is not evidence (docs/design.md#forcing: forcing
        never bypasses safety), unless the site explicitly trusts forces for commissioning."""
        if not name:
            return None
        tv = img.tag(name)
        if not tv.good or (tv.forced and not self.params.trust_forced_inputs):
            return None
        return tv.value

    def _latch(self, cx: Cycle, code: str, reason: str) -> None:
        if code in self.latches:
            return
        kind = TRIP_KINDS[code]
        self.latches[code] = Latch(kind, reason, cx.now_us)
        if kind == "grid":
            self.es.grid_trip()
        cx.event(
            "trip",
            f"trip {code}: {reason}",
            code=code,
            reset="enter service" if kind == "grid" else ("operator" if kind == "operator" else "automatic"),
            **self._alarm_type(code),
        )

    def _unlatch(self, cx: Cycle, code: str, how: str) -> None:
        latch = self.latches.pop(code, None)
        if latch is None:
            return
        if latch.kind != "grid":
            self.es.recover(cx.now_us)
        cx.event("reset", f"trip {code} cleared: {how}", code=code, **self._alarm_type(code))

    @staticmethod
    def _alarm_type(code: str) -> dict[str, str]:
        """The OCPP 2.1 DERControlEnumType a grid trip belongs to: NotifyDERAlarm's controlType."""
        ctype = der.TRIP_CONTROL.get(code)
        return {"control_type": ctype} if ctype else {}

    def scan(self, cx: Cycle) -> None:
        """The order is the priority: settings (DER controls, on the cycle boundary), measure, protect (trips
        latch), recover, then limits, then commit."""
        if self._hp_of is not self.params:  # new settings (an online change): read as plain attributes
            self._hp, self._hp_of = cast(SafetyParams, plain(self.params)), self.params
        try:
            self._steps(cx)
        finally:
            self._vals.img = None  # the image is this cycle's: nothing keeps it (a copy of the interlock neither)

    def _steps(self, cx: Cycle) -> None:
        self._der_cycle(cx)
        m = self._measure(cx)
        not_ready = self._comms(cx, m)
        self._grid(cx, m)
        derate, temp = self._thermal(cx, m)
        self._health(cx, m)
        self._device(cx, m)
        if cx.commands:
            self._operator_reset(cx, m)
        if self.es.pending:  # (EnterService.update does nothing otherwise)
            self.es.update(cx.now_us, m.es_window)
        if not self.verified:
            # against the base: the inverter's own protection must be no weaker than the site file; a DER
            # overlay is stricter still and enforced here
            why = verify_settings(self.params, self.r_base, cx.inputs, self.site, self._val)
            if why:
                not_ready.append(why)
            else:
                self.verified = True
                cx.event("verify", "inverter settings verified against the site's safety settings")
        external_ok, ext_why = self._external_health(m) if self._ext_watched else (True, "")
        lc, ld, reasons = self._limits(cx, m, derate, temp, external_ok, ext_why)
        self._commit(cx, m, lc, ld, reasons, not_ready, external_ok)

    # -- the steps of a cycle ------------------------------------------------------------------
    def _evidence(self, img: Image) -> tuple[_Evidence, list[str]]:
        """Every judged read's ``_val`` and the forced ones (in ``_judged``'s order), in one pass over the image.
        A read whose tag value is the very object judged last cycle (the engine keeps a tag's value until
        the tag is read, aged or forced again) has the same verdict: only the others are judged again. The
        two outputs this interlock clamps are read as requests (``Image.value``), never as evidence."""
        vals, judged, last = self._vals, self._judged, self._last_tv
        if vals.extra:
            vals.forget()
        vals.img = img
        # Image.tag of each: through a plain image's own mapping (``_d``, as runtime.evses relies on too) in one
        # C-level pass, by key while every judged read is a tag of the site (else as Image.tag: MISSING when
        # absent); a subclass may read otherwise, so it is asked through its ``tag``
        now: Sequence[TagValue]
        if type(img) is not Image:
            now = [img.tag(n) for n in judged]
        elif self._by_key:
            try:
                now = self._by_key(img._d)
            except KeyError:
                self._by_key = None
                now = list(map(img._d.get, judged, repeat(MISSING)))
        else:
            now = list(map(img._d.get, judged, repeat(MISSING)))
        self._last_tv = now  # each (value, quality, t_us, forced)
        good, trust = Quality.GOOD, self._hp.trust_forced_inputs
        refresh = False
        for i in compress(self._judged_at, map(is_not, now, last)):
            tv, was = now[i], last[i]
            if tv[3] or was[3]:
                refresh = True
            vals[judged[i]] = tv[0] if tv[1] is good and (trust or not tv[3]) else None
        if refresh:
            self._forced = [n for n, tv in zip(judged, now, strict=True) if tv[3]]
        return vals, self._forced

    def _measure(self, cx: Cycle) -> _Meas:
        p, img, m, r = self._hp, cx.inputs, self._m, self.r
        vals, m.forced = self._evidence(img)
        v, f, loss = vals[p.tags.voltage], vals[p.tags.frequency], vals[p.islanding.loss_tag]
        ph = tuple(vals[n] for n in p.tags.voltage_phases) if self.site.phases == 3 else ()
        k = m.key
        if not (m.r is r and v is k[0] and f is k[1] and loss is k[2] and (not ph or all(map(is_, ph, k[3])))):
            self._grid_state(m, v, f, loss, ph)
            m.key, m.r = (v, f, loss, ph), r
        prev_sp = img.value(p.tags.setpoint, 0.0) or 0.0
        m.meas_p, m.prev_sp = vals[p.divergence.measured_tag], float(prev_sp)
        return m

    def _grid_state(self, m: _Meas, v: Any, f: Any, loss: Any, ph: tuple[Any, ...]) -> None:
        """The grid's state in ``m`` (``grid`` to ``cess_table``) from the grid's reads and ``self.r``. Per-unit
        voltage (docs/design.md#voltage-basis): highest phase for over-, lowest for under-voltage."""
        p, site = self._hp, self.site
        grid = None
        if v is not None and f is not None:
            v_high = v_low = v / site.nominal_voltage
            if site.phases != 3:
                grid = (v_high, v_low, f)
            elif not any(x is None for x in ph):
                pu = [x / p.phase_nominal_voltage for x in ph]
                grid = (max(v_high, *pu), min(v_low, *pu), f)
        m.grid, m.loss = grid, loss is True
        m.continuous = m.es_window = m.cess_table = False
        if grid is not None:
            vh, vl, ff = grid
            m.cess_table = T.cessation(p.category, vh) or T.cessation(p.category, vl)
            if not m.loss:
                m.continuous = in_continuous(self.r, vh, vl, ff)
                m.es_window = in_enter_service_window(self.r, vh, vl, ff)

    def _comms(self, cx: Cycle, m: _Meas) -> list[str]:
        """Inverter/meter inputs bad or stale -> trip, after their first good read (before it: not ready)."""
        img, vals, seen = cx.inputs, m.vals, self.seen_good
        comms = self._comms_tags
        if self._all_seen and not m.forced and None not in map(vals.__getitem__, comms):
            # every one good, and each had its first good read long ago: nothing lost, nothing waited for
            if "comms_lost" in self.latches:
                self._unlatch(cx, "comms_lost", "inputs good again")
            return []
        lost: list[str] = []
        waiting: list[str] = []
        for name in comms:
            if vals[name] is None:
                (lost if name in seen else waiting).append(name)
            else:
                seen.add(name)
        self._all_seen = not waiting
        # Any forced input, not only the required ones: forcing grid.loss or an overrun flag to False, or
        # runtime.fault to "", would otherwise hide the very condition it reports. A site that trusts forces
        # for commissioning still never gets to overwrite the runtime's own diagnostics.
        if m.forced:
            trust = self._hp.trust_forced_inputs
            lost += [n for n in m.forced if n not in lost and (not trust or self._diagnostic(n))]
        if lost:
            self._latch(
                cx,
                "comms_lost",
                "input not good: "
                + ", ".join(f"{n} {img.tag(n).quality.value}{' (forced)' if img.tag(n).forced else ''}" for n in lost),
            )
        elif "comms_lost" in self.latches:
            self._unlatch(cx, "comms_lost", "inputs good again")
        return ["waiting for a first good read of " + ", ".join(waiting)] if waiting else []

    def _grid(self, cx: Cycle, m: _Meas) -> None:
        """IEEE 1547 trips, momentary cessation, islanding; grid trips clear into enter service."""
        p, now = self._hp, cx.now_us
        if m.grid is None:
            self.timers.reset()
            self.rocof.reset()
            self.cessation = False
        else:
            vh, vl, f = m.grid
            fired = self.timers.update(now, vh, vl, f)
            if fired is not None:
                x = f if fired.quantity == "f" else (vh if fired.over else vl)
                unit = "Hz" if fired.quantity == "f" else "pu"
                start = self.timers.excursion_start(fired.code)
                elapsed = (now - (now if start is None else start)) / 1e6
                self._latch(
                    cx,
                    fired.code,
                    f"{fired.code.upper()}: {x:.3f} {unit} {'>=' if fired.over else '<='} {fired.threshold:g} "
                    f"{unit} for {elapsed:.3f} s (clearing time {fired.clearing_s:g} s)",
                )
            self.cessation = m.cess_table or self.timers.ceasing is not None
            if self.rocof.update(f, self._last_tv[self._at[p.tags.frequency]][2]):  # its read time (t_us)
                self._latch(
                    cx, "rocof", f"islanding: ROCOF {self.rocof.value:+.2f} Hz/s beyond {self.r.rocof_hz_per_s:g} Hz/s"
                )
        if m.loss:
            self._latch(cx, "islanding", f"islanding: loss of grid reported by {p.islanding.loss_tag}")
        # Back in the continuous range, and beyond no trip threshold (they may touch it at its edge).
        if m.continuous and self.latches and not self.timers.any_beyond():
            for code in [c for c, latch in self.latches.items() if latch.kind == "grid"]:
                self._unlatch(cx, code, "voltage and frequency back in the continuous range; enter service follows")

    def _thermal(self, cx: Cycle, m: _Meas) -> tuple[float, float | None]:
        """(derating fraction, temperature); the over-temperature trip latches and resets here."""
        p, now = self._hp, cx.now_us
        if not p.thermal.tag:
            return 1.0, None
        temp = m.vals[p.thermal.tag]
        if temp is None:
            derate = 0.0  # temperature unknown: no power
        else:
            abs_p = abs(m.meas_p) if m.meas_p is not None else abs(m.prev_sp)
            if self.thermal.update(now, temp, self._last_tv[self._at[p.thermal.tag]][2], abs_p):
                self._latch(
                    cx, "over_temperature", f"inverter temperature {temp:.1f} degC >= {p.thermal.trip_c:g} degC"
                )
            if "over_temperature" in self.latches and self.thermal.may_reset(now, temp):
                self.thermal.clear()
                self._unlatch(
                    cx, "over_temperature", f"{temp:.1f} degC below {p.thermal.reset_c:g} degC after cool-down"
                )
            derate = self.thermal.derate_fraction(temp)
        if self.thermal.latched and "over_temperature" not in self.latches:
            self._latch(cx, "over_temperature", "inverter over-temperature latched before restart")
        return derate, temp

    def _health(self, cx: Cycle, m: _Meas) -> None:
        """Scan overruns and program exceptions (this cycle's ``runtime.fault``) trip and recover by themselves."""
        c, latches = self._hp.comms, self.latches
        # each trip latches while its cause lasts and clears when it is gone; a reason is built only to latch
        if m.vals[c.overrun_tag] is True:
            self._latch(cx, "overrun", "a run of scan overruns")
        elif "overrun" in latches:
            self._unlatch(cx, "overrun", "scan back on time")
        fault = cx.out.get(c.fault_tag, "") or ""
        if fault:
            self._latch(cx, "program_fault", f"program fault: {fault}")
        elif "program_fault" in latches:
            self._unlatch(cx, "program_fault", "programs run clean again")
        if c.persist_fault_tag:
            # Absent on a site (or runtime) without it: no cause. Read as committed and as written this cycle.
            tag = c.persist_fault_tag
            if m.vals[tag] is True or cx.out.get(tag) is True:
                self._latch(cx, "persist_fault", f"a latched state change is not yet durable on disk ({tag})")
            elif "persist_fault" in latches:
                self._unlatch(cx, "persist_fault", "state written to disk")

    def _device(self, cx: Cycle, m: _Meas) -> None:
        """The inverter does what it is told: setpoint read-back and measured power."""
        p, img, now = self._hp, cx.inputs, cx.now_us
        if p.comms.write_mismatch_tag:
            mismatch = m.vals[p.comms.write_mismatch_tag]
            if mismatch is True:
                if self.mismatch_since is None:
                    self.mismatch_since = now
                if now - self.mismatch_since >= self.mismatch_us:
                    self._latch(cx, "write_mismatch", "the inverter's setpoint read-back differs from what was written")
            else:
                # False, or unknown: a bad or undecodable read-back is a communications fault (comms_lost,
                # above), never a mismatch; it restarts the count, and it cannot reset a latched trip either
                self.mismatch_since = None
        commanded = m.prev_sp if img.value(p.tags.enable, False) else 0.0
        verdict = self.div.update(now, cx.period_us / US, commanded, m.meas_p)  # (Cycle.dt)
        if verdict == "fault":
            self._latch(
                cx,
                "power_divergence",
                f"power_divergence: measured {m.meas_p:.0f} W, expected {self.div.expected:.0f} W",
            )
        elif verdict == "shortfall" and not self.div.warned:
            self.div.warned = True
            cx.event(
                "warning",
                f"power shortfall: measured {m.meas_p:.0f} W, expected {self.div.expected:.0f} W",
                measured=m.meas_p,
                expected=self.div.expected,
            )

    def _operator_reset(self, cx: Cycle, m: _Meas) -> None:
        """``reset_trip`` clears operator-reset trips whose cause is provably gone, and says why not."""
        if not any(c.name == "reset_trip" for c in cx.commands):
            return
        p = self._hp
        for code in [c for c, latch in self.latches.items() if latch.kind == "operator"]:
            why_not = ""
            if code == "write_mismatch" and (
                self.mismatch_since is not None or self._val(cx.inputs, p.comms.write_mismatch_tag) is not False
            ):
                why_not = f"{p.comms.write_mismatch_tag} does not show agreement"
            elif code == "power_divergence" and not self.div.agrees(m.meas_p):
                # offline (bad, stale or forced measurement) is no evidence; a good one must match
                why_not = (
                    f"{p.divergence.measured_tag} is {cx.inputs.tag(p.divergence.measured_tag).quality.value}"
                    f"{' (forced)' if cx.inputs.tag(p.divergence.measured_tag).forced else ''}"
                    if m.meas_p is None
                    else f"measured {m.meas_p:.0f} W, expected {self.div.expected:.0f} W"
                )
            if why_not:
                cx.event("warning", f"reset of {code} refused: {why_not}", code=code)
                continue
            if code == "power_divergence":
                self.div.reset()
            self._unlatch(cx, code, "operator reset")

    def _external_health(self, m: _Meas) -> tuple[bool, str]:
        """Stale shared tags or a slow back office: nothing externally commanded is followed."""
        c, vals = self._hp.comms, m.vals
        if c.external_tags:
            names = dict.fromkeys(c.external_tags)  # each named once
            ext_bad = [n for n in names if vals[n] is None]
            if ext_bad:
                return False, "stale " + ", ".join(ext_bad)
            down = [n for n in names if vals[n] is False]  # a link flag (ocpp.accepted) says the link failed
            if down:
                return False, "back-office link down: " + ", ".join(f"{n} false" for n in down)
        if c.rtt_tag:
            rtt = vals[c.rtt_tag]
            if rtt is None or rtt > c.rtt_max_s:
                return False, "back-office round trip too slow or unknown"
        return True, ""

    def _limits(
        self, cx: Cycle, m: _Meas, derate: float, temp: float | None, external_ok: bool, ext_why: str
    ) -> tuple[float, float, dict[str, str]]:
        """(charge W, discharge W, reasons): the smallest of every limit, each with its reason."""
        p, img, now, vals = self._hp, cx.inputs, cx.now_us, m.vals
        reasons: dict[str, str] = {}
        # the rating in force: the device's own (W, when good and not negative) never above the site's
        x, rc = vals[p.limits.rating_charge_tag], p.rated_charge_w
        if x is not None and x >= 0:
            rc = min(rc, float(x))
        x, rd = vals[p.limits.rating_discharge_tag], p.rated_discharge_w
        if x is not None and x >= 0:
            rd = min(rd, float(x))
        lc, ld = rc, rd
        es_c = es_d = 1.0  # (EnterService.fractions, when it neither waits nor ramps)
        if self.es.pending or self.es.ramp_start_us is not None:
            es_c, es_d = self.es.fractions(now, m.continuous)
        if es_c < 1.0 or es_d < 1.0:
            lc, ld = min(lc, rc * es_c), min(ld, rd * es_d)
            reasons["enter_service"] = (
                f"enter service: {self.es.remaining_s(now):.0f} s of the delay left"
                if self.es.pending
                else "enter service ramp"
            )
        if derate < 1.0:
            lc, ld = min(lc, rc * derate), min(ld, rd * derate)
            reasons["thermal"] = (
                "inverter temperature unknown" if temp is None else f"thermal derating at {temp:.1f} degC"
            )
        cap = self.thermal.cap_w
        if cap is not None and p.thermal.tag:
            # shown for as long as it is engaged (hysteresis and hold in safety.thermal), binding or not:
            # a limit event says the cause changed, not that another limit moved past it
            lc, ld = min(lc, cap), min(ld, cap)
            reasons["thermal_prediction"] = f"thermal prediction caps power at {cap:.0f} W"
        b = p.battery
        soc, soh, btemp = vals[b.soc_tag], vals[b.soh_tag], vals[b.temperature_tag]
        bc, bd, why = soc_fractions(b, soc, soh, btemp)
        lc, ld = min(lc, rc * bc), min(ld, rd * bd)  # the taper itself is continuous: no step in power
        if bc < 1.0 or bd < 1.0:
            reasons["battery"] = why
        elif "battery" in self.limit_names and soc is not None:
            # shown until the SoC is back out of the taper by soc_hysteresis, so noise at the band's edge
            # does not make the limit come and go
            hc, _, why_c = soc_fractions(b, soc + b.soc_hysteresis, soh, btemp)
            _, hd, why_d = soc_fractions(b, soc - b.soc_hysteresis, soh, btemp)
            if hc < 1.0 or hd < 1.0:
                reasons["battery"] = why_c or why_d
        if p.comms.snr_tag:
            snr = vals[p.comms.snr_tag]
            # Weak below snr_min_db, healthy again only from snr_min_db + snr_hysteresis_db: SNR noise at
            # the threshold neither makes the limit come and go nor steps the discharge back up.
            healthy_db = p.comms.snr_min_db + (p.comms.snr_hysteresis_db if self.snr_cap is not None else 0.0)
            weak = snr is None or snr < healthy_db
            # ISO 15118 handshakes timing out in a row (SupportedAppProtocol and setup requests lost) while the
            # SNR is in the hysteresis band, short of healthy: the SNR average hides the frames the link
            # loses, the failures show them, so the link counts as weak too (docs/iso15118.md).
            fails_tag, fails_weak = p.comms.handshake_timeouts_tag, p.comms.handshake_timeouts_weak
            fails = vals[fails_tag]
            handshakes_fail = (
                isinstance(fails, int)
                and fails >= fails_weak
                and snr is not None
                and snr < p.comms.snr_min_db + p.comms.snr_hysteresis_db
            )
            weak = weak or handshakes_fail
            if weak:
                # no new discharge; the present one ramps down
                self.snr_cap = (
                    max(0.0, -m.prev_sp)
                    if self.snr_cap is None
                    else max(0.0, self.snr_cap - p.comms.snr_ramp_w_per_s * cx.dt)
                )
                ld = min(ld, self.snr_cap)
                reasons["plc"] = (
                    "PLC link quality unknown"
                    if snr is None
                    else f"weak PLC link ({fails} ISO 15118 handshakes timed out in a row at {snr:.1f} dB): "
                    "no new discharge"
                    if handshakes_fail
                    else f"weak PLC link ({snr:.1f} dB, healthy from {healthy_db:g} dB): no new discharge"
                )
            else:
                self.snr_cap = None
        mdc = self.der_now.get("LimitMaxDischarge")
        if mdc is not None:
            frac = der.limit_max_discharge(mdc.ocpp)
            ld = min(ld, rd * frac)
            reasons["der_limit_max_discharge"] = f"DER control {mdc.control_id}: discharge at most {frac:.0%} of rating"
        for lim in p.limits.external:
            for tag, which in ((lim.charge_tag, "charge"), (lim.discharge_tag, "discharge")):
                if not tag:
                    continue
                x = vals[tag]
                fallback = x is None or x < 0
                if not fallback:
                    w = float(x)
                    if which == "charge":
                        self.ext_charge[lim.name] = w  # persisted: the fallback after a restart too
                elif which == "charge" and x is None:
                    # stale or bad: the last charge limit known, so departure charging goes on (0 W if none was)
                    w = self.ext_charge.get(lim.name, 0.0)
                else:
                    # no discharge on a limit nobody stands behind; a negative magnitude is the publisher's
                    # fault, not a stale limit: on doubt, 0 W both ways
                    w = 0.0
                if w < (lc if which == "charge" else ld):
                    if which == "charge":
                        lc = w
                    else:
                        ld = w
                    reasons[f"{lim.name}_{which}"] = f"{lim.name} {which} limit {w:.0f} W" + (
                        " (fallback)" if fallback else ""
                    )
        # the mode this cycle's programs chose (cx.out), not last cycle's: entering an external mode while
        # the back office is not fit must not pass one cycle of its set point
        if p.comms.external_modes and not external_ok:
            mode = cx.out[p.comms.mode_tag] if p.comms.mode_tag in cx.out else img.value(p.comms.mode_tag)
            if mode in p.comms.external_modes:
                lc = ld = 0.0
                reasons["external"] = "external commands not followed: " + ext_why
        return lc, ld, reasons

    def _commit(
        self,
        cx: Cycle,
        m: _Meas,
        lc: float,
        ld: float,
        reasons: dict[str, str],
        not_ready: list[str],
        external_ok: bool,
    ) -> None:
        """The last word: trip over not-ready over cessation over limits; one code, one reason."""
        p, out = self._hp, cx.out
        code = next(iter(self.latches), "")
        if code or not_ready or self.cessation:
            lc = ld = 0.0
        sp_tag = p.tags.setpoint
        sp = out[sp_tag]
        sp = min(sp, lc) if sp > 0 else max(sp, -ld)
        if sp == 0:
            out[sp_tag] = 0.0  # never -0.0: zero is zero in both directions (and always written)
        elif out.get(sp_tag) != sp:
            out[sp_tag] = sp
        if code or not_ready:
            out[p.tags.enable] = False

        if self.cessation or self._was_ceased:
            vh, vl = (m.grid[0], m.grid[1]) if m.grid is not None else (math.nan, math.nan)
        if self.cessation != self._was_ceased:
            self._was_ceased = self.cessation
            if self.cessation:
                # NotifyDERAlarm's controlType: the momentary-cessation side, or the trip ceasing before it latches
                ceasing = self.timers.ceasing
                self._cess_type = (
                    der.TRIP_CONTROL[ceasing.code]
                    if ceasing is not None
                    else ("HVMomCess" if T.cessation(p.category, vh) else "LVMomCess")
                )
            cx.event(
                "cessation",
                f"momentary cessation: voltage {vh:.3f}/{vl:.3f} pu"
                if self.cessation
                else "momentary cessation ended: output restored",
                active=self.cessation,
                control_type=self._cess_type,
            )
        if reasons.keys() != self.limit_names:
            names = frozenset(reasons)
            cx.event("limit", "limits: " + ("; ".join(reasons.values()) or "none"), limits=sorted(names))
            self.limit_names = names
        if code:
            reason = self.latches[code].reason
        elif not_ready:
            reason = "not ready: " + "; ".join(not_ready)
        elif self.cessation and self.timers.ceasing is not None:
            reason = (
                f"ceasing to energize at the {self.timers.ceasing.code.upper()} clearing time; the trip "
                "latches when the ride-through owed ends"
            )
        elif self.cessation:
            reason = f"momentary cessation: voltage {vh:.3f}/{vl:.3f} pu outside the cessation limits"
        else:
            reason = "; ".join(reasons.values())
        get = out.get  # each written only when the output image holds another value (above, and top of module)
        if get(OUT_TRIP) != code:
            out[OUT_TRIP] = code
        if get(OUT_REASON) != reason:
            out[OUT_REASON] = reason
        if get(OUT_CESSATION) != self.cessation:
            out[OUT_CESSATION] = self.cessation
        if lc == 0 or get(OUT_LIMIT_CHARGE) != lc:
            out[OUT_LIMIT_CHARGE] = lc
        if ld == 0 or get(OUT_LIMIT_DISCHARGE) != ld:
            out[OUT_LIMIT_DISCHARGE] = ld
        if get(OUT_EXTERNAL_OK) != external_ok:
            out[OUT_EXTERNAL_OK] = external_ok

    def reconfigure(self, params: Any) -> Any:
        """Online change (docs/online-change.md): only trip thresholds and clearing times change live, only
        inside the IEEE 1547-2018 ranges (the params model checks those), only tightened or kept, and
        never while a trip is being timed. Latches, enter-service and thermal state stay; the inverter's
        own settings are verified again against the new ones before output is enabled again."""
        from runtime.api import NotLive

        new: SafetyParams = params
        old = self.params
        live = ("voltage", "frequency")
        others = [k for k in type(old).model_fields if k not in live and getattr(old, k) != getattr(new, k)]
        if others:
            raise NotLive("only voltage and frequency trip settings change live; changed: " + ", ".join(others))
        r = resolve(new)
        fixed = ("f_continuous", "f_ride_through", "es_v", "es_f", "rocof_hz_per_s")
        moved = [k for k in fixed if getattr(r, k) != getattr(self.r, k)]
        if moved:
            raise NotLive(
                "the continuous and ride-through ranges change only with a restart (" + ", ".join(moved) + ")"
            )
        looser = []
        for code, t in r.trips.items():
            was = self.r.trips[code]
            if (t.threshold > was.threshold if t.over else t.threshold < was.threshold) or (
                t.trip_after_us > was.trip_after_us or t.cease_after_us > was.cease_after_us
            ):
                looser.append(
                    f"{code} {was.threshold:g} for {was.clearing_s:g} s -> {t.threshold:g} for {t.clearing_s:g} s"
                )
        if looser:
            raise NotLive("a protection would be loosened (needs a restart): " + "; ".join(looser))
        timing = [t for t in self.r.trips.values() if self.timers.excursion_start(t.code) is not None]
        if timing or self.rocof._above_since is not None:
            wait = max([t.clearing_s for t in timing] + [self.params.islanding.confirm_s])
            what = ", ".join(t.code for t in timing) or "rocof"
            raise NotLive(f"a trip is being timed ({what}); retry once the grid is back inside its thresholds", wait)

        def swap() -> None:
            self.r = r
            self.timers.retune(r.trips)  # same codes: the (idle) timers carry over
            self.verified = False  # the inverter's own trip settings are checked against the new ones

        return swap
