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

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field, model_validator

from runtime.api import Command, Params

CONTROL = "control"  # the source name of the local control socket
HMI = "hmi"  # the task type of the operator HMI: besides the control socket, the only source of forces

TaskKind = Literal["reset_trip", "availability", "start", "stop", "mode_request", "reset"]
TASK_KINDS: tuple[str, ...] = ("reset_trip", "availability", "start", "stop", "mode_request", "reset")
CONTROL_KINDS: tuple[str, ...] = ("reset_trip", "force", "unforce")
MODES = ("remote", "local")  # as the local API's ModeRequest: remote follows setpoint_w, local hands back
MAX_SETPOINT_W = 1_000_000.0  # |set point| of a mode request; the safety layer's ratings bound it further
MAX_EXPIRY_S = 86_400.0  # a mode request lasts at most a day
RESET_EXIT = 75  # the runtime's exit status after an accepted reset (deploy: RestartForceExitStatus=75)


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
    """The arguments of one kind, typed and in range; Refused otherwise. Unknown keys are refused too."""
    if not isinstance(args, Mapping):
        raise Refused("args must be an object")
    allowed: dict[str, tuple[str, ...]] = {
        "reset_trip": (),
        "availability": ("operative",),
        "start": ("remote_id",),
        "stop": ("remote_id",),
        "mode_request": ("mode", "setpoint_w", "expiry_s", "limit_pct"),
        "reset": (),
        "force": ("tag", "value"),
        "unforce": ("tag",),
    }
    extra = set(args) - set(allowed[kind])
    if extra:
        raise Refused(f"unknown argument {sorted(extra)[0]!r} for {kind}")
    out: dict[str, Any] = {}
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
        if args.get("mode") not in MODES:
            raise Refused(f"mode must be one of {', '.join(MODES)}")
        out["mode"] = args["mode"]
        if args.get("setpoint_w") is not None:
            out["setpoint_w"] = _number(args, "setpoint_w", -MAX_SETPOINT_W, MAX_SETPOINT_W)
        elif args["mode"] == "remote":
            raise Refused("mode remote needs setpoint_w")
        if args.get("expiry_s") is not None:
            out["expiry_s"] = _number(args, "expiry_s", 0.0, MAX_EXPIRY_S)
            if out["expiry_s"] <= 0:
                raise Refused("expiry_s must be above 0")
        if args.get("limit_pct") is not None:
            out["limit_pct"] = _number(args, "limit_pct", 0.0, 100.0)
    elif kind in ("force", "unforce"):
        if not isinstance(args.get("tag"), str):
            raise Refused("tag must be a tag name")
        out["tag"] = args["tag"]
        if kind == "force":
            if "value" not in args:
                raise Refused("force needs a value")
            out["value"] = args["value"]
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
    ) -> None:
        self.task_types = dict(task_types)  # task name -> task type
        self.section = section
        self.commissioning = commissioning
        self._window_us = 60_000_000
        self._recent: dict[str, list[int]] = {}
        self._period_us = period_us

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
        if r.source != CONTROL:
            recent = [t for t in self._recent.get(r.source, []) if now_us - t < self._window_us]
            if len(recent) >= self.section.max_per_minute:
                self._recent[r.source] = recent
                raise Refused(f"rate limit: more than {self.section.max_per_minute} commands a minute from {r.source}")
            recent.append(now_us)
            self._recent[r.source] = recent
        return Command(r.kind, {**args, "source": r.source, "by": r.by, "id": r.id})
