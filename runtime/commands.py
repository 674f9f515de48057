"""Typed commands to the scan: what they are, who may send which, and how each is checked.

A task (OCPP, the local API) asks the scan for something only through one of the kinds below, each with
its source (the task's name, or ``control`` for the local control socket) and the identity of whoever
asked (the CSMS's identity, a socket peer). The site file's ``commands:`` section allowlists kinds per
source task type (default: nothing). The scan checks every request again here (kind, arguments, range,
allowlist), applies it at the next cycle boundary, records it, and answers accepted or refused with a
reason. ``force`` comes only from the control socket or the operator HMI (task type ``hmi``), and only
while the site says ``commissioning: true`` (docs/threat-model.md); no other network-facing task forces.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field, model_validator

from runtime.api import Command, Params

CONTROL = "control"  # the source name of the local control socket
HMI = "hmi"  # the task type of the operator HMI: besides the control socket, the only source of forces

TaskKind = Literal["reset_trip", "availability", "start", "stop", "mode_request", "reset", "der_control"]
TASK_KINDS: tuple[str, ...] = ("reset_trip", "availability", "start", "stop", "mode_request", "reset", "der_control")
CONTROL_KINDS: tuple[str, ...] = ("reset_trip", "force", "unforce", "mode_request")
# mode_request (docs/modes.md "Who may ask for what"): remote follows setpoint_w, frequency follows curve
# (+ baseline_w) at the measured grid frequency, local hands this source's authority back.
MODES = ("remote", "frequency", "local")
MAX_SETPOINT_W = 1_000_000.0  # |set point| of a mode request; the safety layer's ratings bound it further
MAX_EXPIRY_S = 86_400.0  # a mode request lasts at most a day
# A frequency-watt curve (OCPP 2.1 v2xFreqWattCurve): 2-10 points, frequencies strictly increasing within
# 45-65 Hz, which spans the operating range of 50 Hz and 60 Hz grids alike (IEEE 1547-2018 Table 18 at
# 60 Hz: the under-frequency trips may sit as low as 50 Hz); beyond its end points the curve holds.
CURVE_POINTS = (2, 10)
CURVE_HZ = (45.0, 65.0)
# A signal-watt curve (OCPP 2.1 v2xSignalWattCurve, the CSMS's AFRRSignal as its input): the same 2-10
# points, signals integers (AFRRSignalRequest.signal is an integer) strictly increasing within int32.
SIGNAL_RANGE = (-(2**31), 2**31 - 1)
# der_control (the CSMS's DER controls, applied by the safety layer): OCPP 2.1 controlId is string(36); the
# control object is at most a 10-point curve with a few scalars, so 16 KiB leaves room for customData
# while a flood cannot make a cycle parse megabytes.
DER_CONTROL_ID_MAX = 36
DER_OCPP_MAX_BYTES = 16_384
RESET_EXIT = 75  # the runtime's exit status after an accepted reset (deploy: RestartForceExitStatus=75)
# The EVSE a command is for (docs/depot.md "Back office"): ``evse: n`` in its args, n = OCPP evseId = the tag
# prefix ``evse<n>.``. On a depot the EVSE view hands EVSE n only its own commands and those naming none.
EVSE_KINDS = ("start", "stop", "mode_request")  # act on one EVSE: on a depot they must name it
# No EVSE (or 0, OCPP's station): the whole site; one EVSE of a depot: that EVSE alone (availability: the
# engine holds it out of service, Engine.take_commands; a stop without an EVSE holds the site, a start
# without one ends every remote stop).
SITE_OR_EVSE = ("availability", "der_control", "reset_trip")
MAX_EVSE = 999  # config.EvseEntry.id


class CommandsSection(Params):
    """``commands:`` in the site file: which task types may send which kinds (default: none)."""

    allow: dict[str, list[TaskKind]] = Field(
        default_factory=dict, description="task type -> command kinds it may send (force is never allowed)"
    )
    max_per_minute: int = Field(30, ge=1, le=6000, description="commands per source per minute of cycle clock")

    @model_validator(mode="after")
    def _no_duplicates(self) -> CommandsSection:
        for source, kinds in self.allow.items():
            if len(set(kinds)) != len(kinds):
                raise ValueError(f"allow.{source}: a kind is listed twice")
        return self


@dataclass(frozen=True)
class Request:
    """A command as it arrives, before the scan checked it."""

    id: str
    kind: str
    source: str  # task name, or CONTROL
    by: str  # who asked, as the source saw it (CSMS identity, socket peer)
    args: Mapping[str, Any] = field(default_factory=dict)


class Refused(ValueError):
    """A command the scan will not apply; ``str()`` is the reason told back to the source."""


def _number(args: Mapping[str, Any], key: str, lo: float, hi: float) -> float:
    v = args.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise Refused(f"{key} must be a finite number")
    if not lo <= v <= hi:
        raise Refused(f"{key} {v} outside [{lo:g}, {hi:g}]")
    return float(v)


def check_args(kind: str, args: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments of one kind, typed and in range; Refused otherwise. Unknown keys are refused too.
    ``evse`` (EVSE_KINDS: 1..MAX_EVSE; SITE_OR_EVSE: 0..MAX_EVSE, 0 dropped) says which EVSE it is for;
    whether the site has that EVSE is the Gate's question (``Gate.route``)."""
    if not isinstance(args, Mapping):
        raise Refused("args must be an object")
    allowed: dict[str, tuple[str, ...]] = {
        "reset_trip": (),
        "availability": ("operative",),
        "start": ("remote_id",),
        "stop": ("remote_id",),
        "mode_request": ("mode", "setpoint_w", "expiry_s", "limit_pct", "curve", "baseline_w", "signal_curve"),
        "reset": (),
        "der_control": ("action", "control_type", "control_id", "is_default", "ocpp"),
        "force": ("tag", "value"),
        "unforce": ("tag",),
    }
    extra = set(args) - set(allowed[kind]) - ({"evse"} if kind in (*EVSE_KINDS, *SITE_OR_EVSE) else set())
    if extra:
        raise Refused(f"unknown argument {sorted(extra)[0]!r} for {kind}")
    out: dict[str, Any] = {}
    if args.get("evse") is not None:
        n = args["evse"]
        lo = 0 if kind in SITE_OR_EVSE else 1
        if isinstance(n, bool) or not isinstance(n, int) or not lo <= n <= MAX_EVSE:
            raise Refused(f"evse must be an EVSE number {lo}..{MAX_EVSE}")
        if n:  # 0 is OCPP's whole station: the same as naming none
            out["evse"] = n
    if kind == "availability":
        if not isinstance(args.get("operative"), bool):
            raise Refused("operative must be true or false")
        out["operative"] = args["operative"]
    elif kind in ("start", "stop") and "remote_id" in args:
        rid = args["remote_id"]
        if isinstance(rid, bool) or not isinstance(rid, int) or not -(2**31) <= rid < 2**31:
            raise Refused("remote_id must be a 32-bit integer")
        out["remote_id"] = rid
    elif kind == "mode_request":
        out.update(_mode_request(args))
    elif kind == "der_control":
        out.update(_der_control(args))
    elif kind in ("force", "unforce"):
        if not isinstance(args.get("tag"), str):
            raise Refused("tag must be a tag name")
        out["tag"] = args["tag"]
        if kind == "force":
            if "value" not in args:
                raise Refused("force needs a value")
            out["value"] = args["value"]
    return out


def _der_control(args: Mapping[str, Any]) -> dict[str, Any]:
    """The shape of a der_control request; the safety layer checks the control itself (IEEE 1547-2018
    ranges for the site's category, nothing looser than the base) when it applies it."""
    action = args.get("action")
    ctype, cid = args.get("control_type"), args.get("control_id")
    if action == "clear":
        for key, v in (("control_type", ctype), ("control_id", cid)):
            if v is not None and (not isinstance(v, str) or not 0 < len(v) <= DER_CONTROL_ID_MAX):
                raise Refused(f"{key} must be a string of 1-{DER_CONTROL_ID_MAX} characters or null")
        if set(args) - {"action", "control_type", "control_id", "evse"}:
            raise Refused("clear takes only control_id and control_type")
        return {"action": "clear", "control_type": ctype, "control_id": cid}
    if action != "set":
        raise Refused("action must be set or clear")
    if not isinstance(ctype, str) or not 0 < len(ctype) <= 64:
        raise Refused("control_type must be an OCPP 2.1 DERControlEnumType")
    if not isinstance(cid, str) or not 0 < len(cid) <= DER_CONTROL_ID_MAX:
        raise Refused(f"control_id must be a string of 1-{DER_CONTROL_ID_MAX} characters")
    if not isinstance(args.get("is_default"), bool):
        raise Refused("is_default must be true or false")
    ocpp = args.get("ocpp")
    if not isinstance(ocpp, Mapping):
        raise Refused("ocpp must be the control object")
    try:
        size = len(json.dumps(ocpp, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise Refused(f"ocpp is not plain JSON: {exc}") from None
    if size > DER_OCPP_MAX_BYTES:
        raise Refused(f"ocpp is {size} bytes, more than {DER_OCPP_MAX_BYTES}")
    return {"action": "set", "control_type": ctype, "control_id": cid, "is_default": args["is_default"], "ocpp": ocpp}


def _mode_request(args: Mapping[str, Any]) -> dict[str, Any]:
    """remote needs ``setpoint_w``; frequency needs ``curve`` or ``signal_curve`` or both (added up, over
    ``baseline_w``, optional); local needs neither. Every number finite and in range, so the scan never
    checks a shape again."""
    mode = args.get("mode")
    if mode not in MODES:
        raise Refused(f"mode must be one of {', '.join(MODES)}")
    out: dict[str, Any] = {"mode": mode}
    for key in ("setpoint_w", "baseline_w"):
        if args.get(key) is not None:
            out[key] = _number(args, key, -MAX_SETPOINT_W, MAX_SETPOINT_W)
    if mode == "remote" and "setpoint_w" not in out:
        raise Refused("mode remote needs setpoint_w")
    if args.get("curve") is not None:
        out["curve"] = _curve(args["curve"])
    if args.get("signal_curve") is not None:
        out["signal_curve"] = _curve(args["signal_curve"], "signal_curve", SIGNAL_RANGE, integer=True)
    if mode == "frequency" and "curve" not in out and "signal_curve" not in out:
        raise Refused("mode frequency needs curve (or signal_curve)")
    if args.get("expiry_s") is not None:
        out["expiry_s"] = _number(args, "expiry_s", 0.0, MAX_EXPIRY_S)
        if out["expiry_s"] <= 0:
            raise Refused("expiry_s must be above 0")
    if args.get("limit_pct") is not None:
        out["limit_pct"] = _number(args, "limit_pct", 0.0, 100.0)
    return out


def _curve(
    points: Any, name: str = "curve", x_range: tuple[float, float] = CURVE_HZ, integer: bool = False
) -> list[list[float]]:
    """``[[x, w], ...]``: CURVE_POINTS points, finite, x strictly increasing within ``x_range`` (hz for a
    frequency-watt curve, an integer signal for a signal-watt curve)."""
    x_name = "signal" if integer else "hz"
    if not isinstance(points, (list, tuple)) or not CURVE_POINTS[0] <= len(points) <= CURVE_POINTS[1]:
        raise Refused(f"{name} must be a list of {CURVE_POINTS[0]}-{CURVE_POINTS[1]} [{x_name}, w] points")
    out: list[list[float]] = []
    for i, pt in enumerate(points):
        if not isinstance(pt, (list, tuple)) or len(pt) != 2:
            raise Refused(f"{name} point {i} must be [{x_name}, w]")
        x = _number({x_name: pt[0]}, x_name, *x_range)
        if integer and x != int(x):
            raise Refused(f"{name} point {i}: {x_name} {x:g} is not an integer")
        w = _number({"w": pt[1]}, "w", -MAX_SETPOINT_W, MAX_SETPOINT_W)
        if out and x <= out[-1][0]:
            what = "frequencies" if x_name == "hz" else "signals"
            raise Refused(f"{name} point {i}: {what} must increase strictly ({x:g} after {out[-1][0]:g})")
        out.append([x, w])
    return out


class Gate:
    """The scan's check of every request: source known, kind allowlisted for it, arguments typed and in
    range, force only from the control socket or the HMI while commissioning (releasing a force is
    always allowed: it only takes an override away), and a rate limit per source."""

    def __init__(
        self,
        task_types: Mapping[str, str],
        section: CommandsSection,
        commissioning: bool,
        period_us: int,
        evses: Iterable[int] = (),
    ) -> None:
        self.task_types = dict(task_types)  # task name -> task type
        self.section = section
        self.commissioning = commissioning
        self._window_us = 60_000_000
        self._recent: dict[str, list[int]] = {}
        self._period_us = period_us
        # Interlocks' own verdicts (``check_command``), so that a task's answer carries the scan's reason.
        self._validators: list[Callable[[str, Mapping[str, Any]], str]] = []
        # A depot's EVSE ids (empty: a site of one charger, EVSE 1). Given, or learnt from the validators of
        # the EVSEs' interlocks (runtime.evses.EvseComponent.check_command, bound to its EVSE) when the
        # runner hands them over.
        self.evses: frozenset[int] = frozenset(evses)
        self._evses_given = bool(self.evses)

    @property
    def validators(self) -> list[Callable[[str, Mapping[str, Any]], str]]:
        return self._validators

    @validators.setter
    def validators(self, fs: list[Callable[[str, Mapping[str, Any]], str]]) -> None:
        self._validators = list(fs)
        if not self._evses_given:
            owners = (getattr(f, "__self__", None) for f in fs)
            self.evses = frozenset(n for o in owners if isinstance(n := getattr(o, "evse", None), int))

    def route(self, kind: str, args: Mapping[str, Any]) -> None:
        """Refused when the EVSE a command names (``evse``, checked by check_args) is not one of this site's,
        or when a per-EVSE kind names none on a depot: before it reaches the scan."""
        n = args.get("evse")
        if not self.evses:
            if n not in (None, 1):
                raise Refused(f"no EVSE {n} on this site (a site of one charger is EVSE 1)")
            return
        if n is None:
            if kind in EVSE_KINDS:
                raise Refused(f"{kind} on a depot must name its EVSE (evse: 1..{max(self.evses)})")
            return
        if n not in self.evses:
            raise Refused(f"no EVSE {n} on this site (EVSEs {_ranges(sorted(self.evses))})")

    def allowed(self, source: str) -> tuple[str, ...]:
        if source == CONTROL:
            return CONTROL_KINDS
        return tuple(self.section.allow.get(self.task_types.get(source, ""), ()))

    def check(self, r: Request, now_us: int) -> Command:
        """The command to apply this cycle, or Refused with the reason."""
        if r.kind not in (*TASK_KINDS, *CONTROL_KINDS):
            raise Refused(f"unknown command kind {r.kind!r}")
        if r.source != CONTROL and r.source not in self.task_types:
            raise Refused(f"unknown source {r.source!r}")
        if r.kind in ("force", "unforce"):
            if r.source != CONTROL and self.task_types.get(r.source) != HMI:
                raise Refused(f"{r.kind} only from the local control socket")  # or the HMI (task type hmi)
            if r.kind == "force" and not self.commissioning:
                raise Refused("force only while the site file says commissioning: true")
        elif r.kind not in self.allowed(r.source):
            typ = self.task_types.get(r.source, r.source)
            raise Refused(f"{r.kind} not allowed for {typ} (site file commands.allow.{typ})")
        args = check_args(r.kind, r.args)
        self.route(r.kind, args)
        for validate in self.validators:
            why = validate(r.kind, args)
            if why:
                raise Refused(why)
        if r.source != CONTROL:
            recent = [t for t in self._recent.get(r.source, []) if now_us - t < self._window_us]
            if len(recent) >= self.section.max_per_minute:
                self._recent[r.source] = recent
                raise Refused(f"rate limit: more than {self.section.max_per_minute} commands a minute from {r.source}")
            recent.append(now_us)
            self._recent[r.source] = recent
        typ = CONTROL if r.source == CONTROL else self.task_types[r.source]
        return Command(r.kind, {**args, "source": r.source, "source_type": typ, "by": r.by, "id": r.id})


def _ranges(ids: list[int]) -> str:
    """``[1, 2, 3, 5]`` -> ``1-3, 5``: the EVSEs a refusal names, short however many a depot has."""
    out: list[str] = []
    start = prev = ids[0]
    for n in [*ids[1:], None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        out.append(str(start) if start == prev else f"{start}-{prev}")
        if n is not None:
            start = prev = n
    return ", ".join(out)
