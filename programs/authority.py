"""Mode authority: who may tell the site what to do, decided once per scan from the mode requests.

Why one program and not a check in each interface: the operator, the back office and a local energy
manager all ask through the same ``mode_request`` command, and exactly one of them (or the local plan)
is in charge in any cycle. Deciding that in the scan, from commands applied at a cycle boundary and from
frozen inputs, makes the decision replayable and puts it in one place that the mode machine reads
(docs/modes.md "Who may ask for what").

Rules:
- A request is kept per source (a task's name, or ``control``) until it expires (``expiry_s``, else
  ``default_expiry_s``, on the cycle clock), until the same source sends ``local`` (hands back), or until
  the same source sends another request (which replaces it). An expired request is dropped with an event.
- The source's type (added by the command gate) gives its rank: the local operator (``control``,
  ``hmi``) over the back office (``ocpp``) over the local EMS (``localapi*``) over the local plan.
- The back office's request counts only while its link is accepted (``ocpp.accepted`` good and true): a
  lost link hands authority down in the very cycle that sees it, and back when the link returns, if the
  request has not expired meanwhile.
- The local EMS's request counts only while the CSMS delegates (``ocpp.operation_mode`` good and
  ExternalSetpoint or ExternalLimits), or, on a site without an OCPP task, when ``local_control`` is set.
- Among requests of one rank, the latest wins.
- The site's own standing frequency service (``local_frequency`` in the site file, no OCPP needed) ranks
  below every live request: a party that asks now (operator, CSMS, a delegated EMS) overrides a standing
  setting; it never expires, so with it the site never falls back to the plan.
- In every frequency request the curve in force is the DER control FreqDroop when the safety layer
  publishes one (``safety.der_freq_droop``): the grid code the CSMS set as a DER control is the
  frequency-watt function the site must carry out, whoever asked for frequency response; the request's own
  curve (a period's ``v2xFreqWattCurve``, the site file's) applies without one. The baseline stays the
  request's. docs/modes.md "Frequency response" states the precedence and its source.
- In ``frequency`` the set point is ``baseline_w`` + the curve at this cycle's ``grid.frequency``
  (programs/freqwatt.py) + the signal curve at this cycle's AFRR signal (``ocpp.afrr_signal``, OCPP 2.1
  v2xSignalWattCurve), each where the request has one; an input it needs that is not good gives 0 W
  (doubt is zero).
- Live requests persist across a restart with the time they had left, rounded up to the minute (so the
  state file is written at most once a minute while a request lives): a restart neither drops an
  operator's override silently nor keeps it past its expiry by more than that minute.

Outputs are memory tags only (``authority.*``); the mode machine decides whether the site may follow.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from itertools import pairwise
from typing import Annotated, Any

from pydantic import Field, field_validator

from programs.freqwatt import Curve, curve_w, dead_band_hz, droop_curve
from runtime.api import Command, Cycle, Params, Program, SiteInfo, TagName, register_program
from runtime.tags import US, Direction, Image, TagSpec, TagType

# The curve contract of a mode request (runtime/commands.py CURVE_POINTS, CURVE_HZ, MAX_SETPOINT_W), stated
# again for the site file's own curve: programs/ may not import the runtime's command gate (docs/design.md
# "Layout and import rules"), and both must admit the same curves (tests/programs/test_authority_frequency.py).
CURVE_POINTS = (2, 10)
CURVE_HZ = (45.0, 65.0)
MAX_SETPOINT_W = 1_000_000.0
Hz = Annotated[float, Field(ge=CURVE_HZ[0], le=CURVE_HZ[1])]
Watts = Annotated[float, Field(ge=-MAX_SETPOINT_W, le=MAX_SETPOINT_W)]
PLAN = "plan"
RANK: dict[str, int] = {"operator": 3, "ocpp": 2, "localapi": 1, "site": 0}
SITE = "site"  # the source (and class) of the site file's standing frequency service
NO_EXPIRY_US = 2**62  # the standing service's "expiry": never, on any cycle clock
DELEGATING = ("ExternalSetpoint", "ExternalLimits")  # OCPP 2.1 OperationModeEnumType values that hand over
PERSIST_STEP_S = 60  # remaining time is persisted in whole minutes, rounded up


def source_class(source_type: str) -> str | None:
    """The rank class of a command's source type, or None for a type that may not ask for a mode."""
    if source_type in ("control", "hmi"):
        return "operator"
    if source_type == "ocpp":
        return "ocpp"
    if source_type.startswith("localapi"):
        return "localapi"
    return None


@dataclass(frozen=True, slots=True)
class Held:
    """One live request."""

    source: str
    cls: str
    mode: str  # remote | frequency
    setpoint_w: float
    curve: Curve
    baseline_w: float
    limit_pct: float
    expires_us: int
    seq: int  # arrival order: among equals the latest wins
    by: str
    signal_curve: Curve = ()  # (signal, w): OCPP 2.1 v2xSignalWattCurve, at the AFRR signal in force

    def describe(self) -> str:
        curves = " + ".join(n for n, c in (("curve", self.curve), ("signal curve", self.signal_curve)) if c)
        what = f"{self.setpoint_w:.0f} W" if self.mode == "remote" else f"{curves} + {self.baseline_w:.0f} W"
        return f"{self.cls} {self.source} ({self.by}): {self.mode} {what}"


class LocalFrequency(Params):
    """The site's own frequency service (no OCPP): ``baseline_w`` + the curve at the measured frequency."""

    curve: list[tuple[Hz, Watts]] = Field(
        min_length=CURVE_POINTS[0],
        max_length=CURVE_POINTS[1],
        description="[[hz, w], ...]: 2-10 points, frequencies strictly increasing within 45-65 Hz, power "
        "(+ into the EV) not falling as frequency rises; linear between points, the end values beyond them",
    )
    deadband_hz: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="within nominal +- this the curve sees nominal, outside it the deviation less the band "
        "(IEEE 1547-2018 Table 24: dbOF/dbUF at most 1.0 Hz)",
    )
    baseline_w: float = Field(0.0, ge=-MAX_SETPOINT_W, le=MAX_SETPOINT_W, description="power at nominal (W, +in)")

    @field_validator("curve")
    @classmethod
    def _curve(cls, pts: list[tuple[float, float]]) -> list[tuple[float, float]]:
        for (f0, w0), (f1, w1) in pairwise(pts):
            if f1 <= f0:
                raise ValueError(f"frequencies must increase strictly ({f1:g} Hz after {f0:g} Hz)")
            if w1 < w0:
                raise ValueError(
                    f"power falls from {w0:g} W at {f0:g} Hz to {w1:g} W at {f1:g} Hz: a frequency service takes "
                    "more (+ into the EV) as frequency rises, or it pushes the grid further away"
                )
        return pts


class AuthorityParams(Params):
    local_control: bool = Field(
        False,
        description="on a site without an OCPP task, a local EMS (localapi) may take authority; with an OCPP "
        "task only the CSMS's operation mode delegates",
    )
    default_expiry_s: float = Field(
        900.0, gt=0, le=86_400, description="how long a request without expiry_s lasts (cycle clock, s)"
    )
    operation_mode_tag: TagName = Field(
        "ocpp.operation_mode", description="the OCPP operation mode in force (ExternalSetpoint/ExternalLimits delegate)"
    )
    accepted_tag: TagName = Field("ocpp.accepted", description="the back-office link is up and accepted")
    frequency_tag: TagName = Field("grid.frequency", description="measured grid frequency (Hz) for frequency mode")
    local_frequency: LocalFrequency | None = Field(
        None, description="the site's own standing frequency service, below every live request; None: none"
    )
    droop_tag: TagName | None = Field(
        "safety.der_freq_droop",
        description="the DER control FreqDroop in force (JSON, empty: none), published by the safety layer; "
        "when present it is the curve of every frequency request",
    )
    signal_tag: TagName | None = Field(
        "ocpp.afrr_signal", description="the AFRR signal in force (OCPP 2.1 AFRRSignal), the signal curve's input"
    )
    rated_w: float = Field(
        11_000.0, gt=0, le=MAX_SETPOINT_W, description="the rated power a FreqDroop's per-unit droop refers to (W)"
    )


@register_program("authority")
class Authority(Program):
    """Writes ``authority.*``: the source in charge, its mode and signed set point, expiry and why."""

    Params = AuthorityParams
    params: AuthorityParams

    def __init__(self, name: str, params: AuthorityParams, site: SiteInfo):
        super().__init__(name, params, site)
        self.held: dict[str, Held] = {}
        self._seq = 0
        self._now_us = 0
        self._winner: tuple[str, str] = ("", PLAN)  # (source, mode) in charge last cycle
        self._restored = 0
        self._unreadable: list[str] = []  # persisted entries restore() could not read
        self._has_ocpp: bool | None = None  # whether the site has an OCPP task: its tags exist
        self._droop: tuple[str, Curve | None] = ("", None)  # the droop tag's text and its curve

    def requires(self) -> list[str]:
        return [self.params.frequency_tag]

    def declare(self) -> list[TagSpec]:
        m = Direction.MEMORY
        return [
            TagSpec(
                "authority.source", TagType.STR, "", m, PLAN, description="in charge: operator, ocpp, localapi or plan"
            ),
            TagSpec("authority.requester", TagType.STR, "", m, "", description="task (or control) and who asked"),
            TagSpec("authority.mode", TagType.STR, "", m, PLAN, description="plan, remote or frequency"),
            TagSpec(
                "authority.setpoint_w",
                TagType.FLOAT,
                "W",
                m,
                0.0,
                description="signed set point asked for this cycle (frequency: baseline + curve at grid.frequency)",
            ),
            TagSpec("authority.limit_pct", TagType.FLOAT, "%", m, 100.0, description="power limit of the request"),
            TagSpec(
                "authority.expires_us",
                TagType.INT,
                "us",
                m,
                0,
                description="cycle clock when it expires; 0: plan or the site's standing service",
            ),
            TagSpec("authority.reason", TagType.STR, "", m, "", description="why this source is in charge"),
            TagSpec(
                "authority.curve_from",
                TagType.STR,
                "",
                m,
                "",
                description="frequency mode: whose curve is in force (request, site or der_freq_droop); else empty",
            ),
            TagSpec("authority.requests", TagType.JSON, "", m, [], description="every live request, by rank"),
        ]

    # -- persistence ------------------------------------------------------------------------------------
    def persist(self) -> Mapping[str, Any] | None:
        """None without live requests: nothing in the state file that a site without this program would
        have to clear before it starts."""
        if not self.held:
            return None
        out = []
        for h in sorted(self.held.values(), key=lambda h: h.seq):
            left_s = math.ceil(max(0, h.expires_us - self._now_us) / US / PERSIST_STEP_S) * PERSIST_STEP_S
            d = asdict(h)
            del d["expires_us"], d["seq"]
            d["curve"] = [list(p) for p in h.curve]
            d["signal_curve"] = [list(p) for p in h.signal_curve]
            out.append({**d, "left_s": left_s})
        return {"requests": out}

    def restore(self, state: Mapping[str, Any]) -> None:
        """Requests as persisted, each lasting the time it had left from the first cycle on. An entry that
        cannot be read is dropped (back toward the plan) and named in an event on the first cycle."""
        for d in state.get("requests", []):
            try:
                h = Held(
                    str(d["source"]),
                    str(d["cls"]),
                    str(d["mode"]),
                    float(d["setpoint_w"]),
                    tuple((float(a), float(b)) for a, b in d["curve"]),
                    float(d["baseline_w"]),
                    float(d["limit_pct"]),
                    round(float(d["left_s"]) * US),
                    self._seq + 1,
                    str(d["by"]),
                    tuple((float(a), float(b)) for a, b in d.get("signal_curve", ())),
                )
                if (
                    h.cls not in RANK
                    or h.mode not in ("remote", "frequency")
                    or (h.mode == "frequency") != bool(h.curve or h.signal_curve)
                ):
                    raise ValueError(f"class {h.cls!r}, mode {h.mode!r}")
            except (KeyError, TypeError, ValueError) as exc:
                self._unreadable.append(f"{d!r:.120}: {exc!r}")
                continue
            self._seq += 1
            self.held[h.source] = h
        self._restored = len(self.held)

    # -- the scan ---------------------------------------------------------------------------------------
    def scan(self, cx: Cycle) -> None:
        self._now_us = cx.now_us
        if self._restored:
            listed = "; ".join(h.describe() for h in self.held.values())
            cx.event("authority", f"{self._restored} request(s) restored after a restart: {listed}")
            self._restored = 0
        if self._unreadable:
            cx.event("authority", "persisted request(s) unreadable, dropped: " + "; ".join(self._unreadable))
            self._unreadable = []
        for c in cx.commands:
            if c.name == "mode_request":
                self._take(cx, c)
        for src, h in list(self.held.items()):
            if h.expires_us <= cx.now_us:
                del self.held[src]
                cx.event("authority", f"request expired: {h.describe()}", source=h.source, cls=h.cls)
        win, reason = self._arbitrate(cx.inputs)
        self._publish(cx, win, reason)

    def _take(self, cx: Cycle, c: Command) -> None:
        a = c.args
        src, by = str(a.get("source", "")), str(a.get("by", ""))
        cls = source_class(str(a.get("source_type", "")))
        if cls is None:
            cx.event("authority", f"mode request from {src} ignored: a {a.get('source_type')!r} may not ask for a mode")
            return
        if a["mode"] == "local":
            gone = self.held.pop(src, None)
            cx.event("authority", f"{cls} {src} ({by}) hands back" + ("" if gone else " (held nothing)"), cls=cls)
            return
        self._seq += 1
        expiry_s = float(a.get("expiry_s") or self.params.default_expiry_s)
        h = Held(
            src,
            cls,
            str(a["mode"]),
            float(a.get("setpoint_w") or 0.0),
            tuple((float(hz), float(w)) for hz, w in a.get("curve") or ()),
            float(a.get("baseline_w") or 0.0),
            float(a.get("limit_pct", 100.0)),
            cx.now_us + round(expiry_s * US),
            self._seq,
            by,
            tuple((float(x), float(w)) for x, w in a.get("signal_curve") or ()),
        )
        self.held[src] = h
        cx.event("authority", f"request held for {expiry_s:g} s: {h.describe()}", cls=cls, mode=h.mode)

    def _has_ocpp_task(self, img: Image) -> bool:
        if self._has_ocpp is None:  # the tag set is fixed for the runtime's life: look once
            names = set(img)
            self._has_ocpp = self.params.operation_mode_tag in names or self.params.accepted_tag in names
        return self._has_ocpp

    def _arbitrate(self, img: Image) -> tuple[Held | None, str]:
        """The request in charge (None: the plan) and why; skipped requests say why they wait."""
        p = self.params
        waiting: list[str] = []
        best: Held | None = None
        for h in self.held.values():
            if h.cls == "ocpp" and img.value(p.accepted_tag) is not True:
                waiting.append(f"{h.source} waits: back-office link down ({p.accepted_tag} not true)")
                continue
            if h.cls == "localapi" and not self._delegated(img):
                why = (
                    f"{p.operation_mode_tag} is {img.value(p.operation_mode_tag)!r}"
                    if self._has_ocpp_task(img)
                    else "local_control is off"
                )
                waiting.append(f"{h.source} waits: not delegated ({why})")
                continue
            if best is None or (RANK[h.cls], h.seq) > (RANK[best.cls], best.seq):
                best = h
        if best is None and self.params.local_frequency is not None:
            best = self._standing(self.params.local_frequency)
        if best is None:
            return None, "; ".join(["local plan", *waiting])
        return best, "; ".join([best.describe(), *waiting])

    @staticmethod
    def _standing(lf: LocalFrequency) -> Held:
        return Held(SITE, SITE, "frequency", 0.0, tuple(lf.curve), lf.baseline_w, 100.0, NO_EXPIRY_US, 0, "site file")

    def _droop_in_force(self, img: Image) -> Curve | None:
        """The FreqDroop control's curve, or None; parsed once per change of the tag's text."""
        tag = self.params.droop_tag
        text = img.value(tag) if tag is not None else None
        text = text if isinstance(text, str) else ""
        if text != self._droop[0]:
            try:
                curve: Curve | None = droop_curve(json.loads(text), self.params.rated_w, self.site.nominal_frequency)
            except (ValueError, TypeError, KeyError):
                curve = None  # no droop (empty) or none this program can read: the request's own curve
            self._droop = (text, curve)
        return self._droop[1]

    def _frequency_w(self, win: Held, img: Image) -> tuple[float | None, str, str]:
        """The set point of a frequency request this cycle, whose frequency curve is in force, and what
        input was not good (then the set point is None)."""
        p = self.params
        sp, curve_from = win.baseline_w, ""
        if win.signal_curve:
            signal = img.value(p.signal_tag) if p.signal_tag is not None else None
            if signal is None:
                return None, "", f"{p.signal_tag} not good"
            sp += curve_w(win.signal_curve, float(signal))
        if not win.curve:
            return sp, curve_from, ""
        hz = img.value(p.frequency_tag)
        if hz is None:
            return None, "", f"{p.frequency_tag} not good"
        droop = self._droop_in_force(img)
        if droop is not None:
            return sp + curve_w(droop, float(hz)), "der_freq_droop", ""
        if win.cls == SITE and p.local_frequency is not None:
            f = dead_band_hz(float(hz), self.site.nominal_frequency, p.local_frequency.deadband_hz)
            return sp + curve_w(win.curve, f), SITE, ""
        return sp + curve_w(win.curve, float(hz)), "request", ""

    def _delegated(self, img: Image) -> bool:
        if self._has_ocpp_task(img):
            return img.value(self.params.operation_mode_tag) in DELEGATING
        return self.params.local_control

    def _publish(self, cx: Cycle, win: Held | None, reason: str) -> None:
        out = cx.out
        sp, curve_from = 0.0, ""
        if win is not None and win.mode == "remote":
            sp = win.setpoint_w
        elif win is not None:
            got, curve_from, bad = self._frequency_w(win, cx.inputs)
            if got is None:
                reason += f"; {bad}: 0 W"
            else:
                sp = got
        now = (win.source, win.mode) if win else ("", PLAN)
        if now != self._winner:
            cx.event("authority", f"in charge: {reason}", source=now[0], mode=now[1])
            self._winner = now
        out["authority.source"] = win.cls if win else PLAN
        out["authority.requester"] = f"{win.source} ({win.by})" if win else ""
        out["authority.mode"] = win.mode if win else PLAN
        out["authority.setpoint_w"] = sp + 0.0  # never -0.0
        out["authority.limit_pct"] = win.limit_pct if win else 100.0
        out["authority.expires_us"] = win.expires_us if win and win.cls != SITE else 0
        out["authority.curve_from"] = curve_from
        out["authority.reason"] = reason
        if out.get("authority.requests") != (reqs := self._listing()):
            out["authority.requests"] = reqs

    def _listing(self) -> list[dict[str, Any]]:
        return [
            {"source": h.source, "class": h.cls, "mode": h.mode, "setpoint_w": h.setpoint_w, "expires_us": h.expires_us}
            for h in sorted(self.held.values(), key=lambda h: (-RANK[h.cls], -h.seq))
        ]
