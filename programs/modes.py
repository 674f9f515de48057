"""The operating-mode state machine: idle, charge, discharge, remote, frequency and safe_state.

Why a state machine and not a few ``if``s: every change of mode must have one named cause (the trigger),
be logged with it, and be impossible from states where it makes no sense; the same definition draws the
diagram in docs/modes.md (``python -m programs.modes_diagram``), so the picture cannot drift from the code.

Rules (docs/design.md#the-scan-cycle, docs/reference.md#transitions):
- synchronous ``transitions.Machine`` with ``auto_transitions=False``: no transition exists that is not
  written in ``TRANSITIONS`` below;
- conditions are pure functions of the frozen input image (and the parameters), nothing else;
- at most one trigger per scan: triggers are tried in ``PRIORITY`` order and the first that passes wins;
- entry/exit actions only write the output image;
- enter service and its ramp belong to the safety layer: this machine only reads ``safety.trip`` (as the
  previous cycle committed it) and leaves ``safe_state`` once it is empty;
- ``remote`` and ``frequency`` are the signed states: the source in charge (``authority.mode``, written
  this cycle by the ``authority`` program) asks for a signed set point that may cross zero from one cycle
  to the next. The SoC window and the departure reserve bound it here (``mode.request``, ``mode.clamp``)
  instead of ending the state, so a frequency service keeps answering in both directions.

One handler per state (OpenEMS style) is the ordered list of triggers valid from that state; the
``transitions`` machine checks their conditions and performs the move.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, NamedTuple

from pydantic import Field, model_validator
from transitions import Machine

from runtime.api import Cycle, Outputs, Params, ParamsModel, Program, SiteInfo, TagName, register_program
from runtime.tags import Direction, Image, TagSpec, TagType, TagValue

STATES: tuple[str, ...] = ("idle", "charge", "discharge", "remote", "frequency", "safe_state")
INITIAL = "idle"

# transitions logs every callback at INFO: in the scan thread that is I/O on every transition. The
# transition itself is logged once, as an event, by the runtime.
logging.getLogger("transitions.core").setLevel(logging.WARNING)
ACTIVE = ("idle", "charge", "discharge", "remote", "frequency")  # every state but safe_state
RUNNING = ["charge", "discharge", "remote", "frequency"]  # states with power flowing
SIGNED = ("remote", "frequency")  # the authority's states: a signed set point, not the plan

# trigger, source(s), dest, conditions (all must hold), unless (none may hold)
TRANSITIONS: list[dict[str, Any]] = [
    {"trigger": "trip", "source": list(ACTIVE), "dest": "safe_state", "conditions": ["trip_active"]},
    {"trigger": "trip_cleared", "source": "safe_state", "dest": "idle", "unless": ["trip_active"]},
    {"trigger": "ev_disconnected", "source": RUNNING, "dest": "idle", "unless": ["ev_connected"]},
    {"trigger": "link_lost", "source": RUNNING, "dest": "idle", "unless": ["link_healthy"]},
    {"trigger": "soc_unknown", "source": RUNNING, "dest": "idle", "unless": ["soc_known"]},
    {
        "trigger": "enter_remote",
        "source": ["idle", "charge", "discharge", "frequency"],
        "dest": "remote",
        "conditions": ["authority_remote", "ev_connected", "link_healthy", "soc_known"],
    },
    {
        "trigger": "enter_frequency",
        "source": ["idle", "charge", "discharge", "remote"],
        "dest": "frequency",
        "conditions": ["authority_frequency", "ev_connected", "link_healthy", "soc_known"],
    },
    {"trigger": "authority_ended", "source": "remote", "dest": "idle", "unless": ["authority_remote"]},
    {"trigger": "authority_ended", "source": "frequency", "dest": "idle", "unless": ["authority_frequency"]},
    {"trigger": "soc_full", "source": "charge", "dest": "idle", "conditions": ["soc_at_max"]},
    {"trigger": "soc_empty", "source": "discharge", "dest": "idle", "conditions": ["soc_at_min"]},
    {"trigger": "reserve_reached", "source": "discharge", "dest": "idle", "unless": ["above_reserve"]},
    {"trigger": "plan_stop", "source": "charge", "dest": "idle", "unless": ["plan_charge"]},
    {"trigger": "plan_stop", "source": "discharge", "dest": "idle", "unless": ["plan_discharge"]},
    {
        "trigger": "start_charge",
        "source": "idle",
        "dest": "charge",
        "conditions": ["ev_connected", "link_healthy", "plan_charge", "soc_below_max"],
    },
    {
        "trigger": "start_discharge",
        "source": "idle",
        "dest": "discharge",
        "conditions": ["ev_connected", "link_healthy", "plan_discharge", "soc_above_min", "clear_of_reserve"],
    },
]

# Most protective first: a trip beats a lost EV, which beats the plan.
PRIORITY: tuple[str, ...] = (
    "trip",
    "trip_cleared",
    "ev_disconnected",
    "link_lost",
    "soc_unknown",
    "enter_remote",
    "enter_frequency",
    "authority_ended",
    "soc_full",
    "soc_empty",
    "reserve_reached",
    "plan_stop",
    "start_charge",
    "start_discharge",
)

REASONS: dict[str, str] = {
    "trip": "safety trip active",
    "trip_cleared": "safety trip cleared",
    "ev_disconnected": "EV not connected",
    "link_lost": "PLC link unhealthy",
    "soc_unknown": "EV SoC not good",
    "enter_remote": "authority asks for a remote set point",
    "enter_frequency": "authority asks for frequency response",
    "authority_ended": "authority handed back to the local plan",
    "soc_full": "SoC at the upper limit",
    "soc_empty": "SoC at the lower limit",
    "reserve_reached": "SoC at the plan's departure reserve, or no good reserve (planner stale)",
    "plan_stop": "plan requests no power in this direction",
    "start_charge": "plan requests charging",
    "start_discharge": "plan requests discharging",
}


class ModeParams(Params):
    soc_min: float = Field(0.20, ge=0, le=1, description="no discharge at or below (fraction)")
    soc_max: float = Field(0.90, ge=0, le=1, description="no charge at or above (fraction)")
    soc_hysteresis: float = Field(
        0.01, ge=0, le=0.2, description="restart only this far inside the window (no chattering)"
    )
    deadband_w: float = Field(100.0, ge=0, le=1e5, description="plan requests within +-deadband count as zero")
    plan_tag: TagName | None = Field("plan.power", description="shared tag of the plan's request (W signed)")
    fixed_request_w: float | None = Field(
        None,
        ge=-1e6,
        le=1e6,
        description="request used when the plan tag is absent or not good (no planner on the site)",
    )
    reserve_tag: TagName | None = Field(
        "plan.reserve_soc",
        description="the plan's departure reserve (SoC): discharge only while it is good and the SoC is "
        "above it, so a stale planner means no discharge; None: a site without a planner",
    )
    fallback_soc: float = Field(
        0.80,
        ge=0,
        le=1,
        description="without a good plan and without a fixed request: charge up to this SoC (the "
        "driver's departure SoC), never discharge",
    )
    fallback_charge_w: float = Field(11_000.0, ge=0, le=1e6, description="charge power of that fallback (W)")
    snr_tag: TagName | None = Field("plc.snr", description="PLC link SNR tag (dB); None: no PLC link to check")
    snr_min_db: float = Field(10.0, ge=-50, le=100, description="link healthy at or above this SNR (site setting)")
    connected_tag: TagName = "ev.connected"
    soc_tag: TagName = "ev.soc"
    trip_tag: TagName = "safety.trip"
    setpoint_tag: TagName = "inverter.setpoint"
    enable_tag: TagName = "inverter.enable"
    authority: str | None = Field(
        "authority",
        pattern=r"^[a-z][a-z0-9_]*$",
        description="tag prefix of the mode authority (its .mode, .setpoint_w, .reason); None, or a site "
        "without that program: the plan only",
    )

    def authority_tag(self, quantity: str) -> str | None:
        return None if self.authority is None else f"{self.authority}.{quantity}"

    @model_validator(mode="after")
    def _window(self) -> ModeParams:
        if not self.soc_min + 2 * self.soc_hysteresis < self.soc_max:
            raise ValueError("need soc_min + 2*soc_hysteresis < soc_max")
        return self


class View(NamedTuple):
    """What one trigger attempt sees: the frozen inputs and the outputs (actions write them), with the
    values the guards compare read once per scan by ``ModeModel.view`` (the guards of one scan would
    otherwise read the SoC up to five times, the plan's request and the authority's mode up to three)."""

    inputs: Image
    out: Outputs
    trip: TagValue  # the trip tag, quality included: not good is doubt
    connected: Any  # the plug, if good
    soc: Any  # the EV's SoC, if good
    snr: Any  # the PLC link's SNR, if good (None also when the site has no link to check)
    request: float  # ``request_w``: the plan's, the fixed one or the fallback charge
    authority: Any  # the authority's mode as it stands this cycle (``current``)
    reserve: Any  # the plan's departure reserve, if good (None also when the site has none)


_ABSENT = object()  # not in the output image (``Outputs.get`` answers as ``in`` does)


def current(inputs: Image, out: Outputs, name: str | None) -> Any:
    """A tag as an earlier program wrote it this cycle, else as the previous cycle committed it."""
    if name is None:
        return None
    v = out.get(name, _ABSENT)
    return inputs.value(name) if v is _ABSENT else v


Guard = Callable[[View], bool]


def holds(conds: Sequence[Guard], unless: Sequence[Guard], view: View) -> bool:
    """A transition's guard as ``transitions`` reads it: every condition holds and no ``unless`` does
    (plain loops: ``all``/``any`` over generators cost two to three times as much, seven guards a scan)."""
    for c in conds:
        if not c(view):
            return False
    for u in unless:  # noqa: SIM110 (a loop, not all(): see the docstring)
        if u(view):
            return False
    return True


def guard(conds: Sequence[Guard], unless: Sequence[Guard]) -> Guard:
    """``holds`` for one transition as a single call. Most transitions have one condition or one
    ``unless``: that is the condition itself, or its negation, without the two loops around it."""
    if len(conds) == 1 and not unless:
        return conds[0]
    if not conds and len(unless) == 1:
        u = unless[0]
        return lambda view: not u(view)
    return partial(holds, tuple(conds), tuple(unless))


def request_w(img: Image, p: ModeParams) -> float:
    """The plan's request for this interval; the fixed request when no good plan; else the fallback:
    charge at ``fallback_charge_w`` while the SoC is below ``fallback_soc``, otherwise nothing. The
    fallback never discharges: without its planner the site cannot know what the driver still needs
    (docs/modes.md "Without a planner")."""
    v = img.value(p.plan_tag) if p.plan_tag else None
    if v is None:
        v = p.fixed_request_w
    if v is None:
        soc = img.value(p.soc_tag)
        return p.fallback_charge_w if soc is not None and soc < p.fallback_soc else 0.0
    return float(v)


_view = tuple.__new__  # View's own __new__ is a Python function; the tuple constructor makes the same tuple


class ModeModel:
    """The ``transitions`` model: condition methods are pure functions of the scan's ``View`` (the frozen
    inputs, as ``view`` read them) and the params."""

    state: str
    trigger: Callable[..., bool]  # added by transitions.Machine when it takes the model

    def __init__(self, p: ModeParams):
        self.use(p)

    def use(self, p: ModeParams) -> None:
        """Take these params (at start and at an online change: the one way to set ``p``), with the
        authority's tag names formatted once, not at every guard."""
        self.p = p
        self._authority_mode = p.authority_tag("mode")
        self._authority_setpoint = p.authority_tag("setpoint_w")

    def view(self, inputs: Image, out: Outputs) -> View:
        """This scan's view: every value a guard compares, read once (modes writes none of them, so the
        machine's re-check and the actions see the same)."""
        p = self.p
        value = inputs.value
        return _view(
            View,
            (
                inputs,
                out,
                inputs.tag(p.trip_tag),
                value(p.connected_tag),
                value(p.soc_tag),
                None if p.snr_tag is None else value(p.snr_tag),
                request_w(inputs, p),
                current(inputs, out, self._authority_mode),
                None if p.reserve_tag is None else value(p.reserve_tag),
            ),
        )

    # -- conditions ---------------------------------------------------------------------------------
    def trip_active(self, view: View) -> bool:
        # A trip tag that is not good is doubt, and doubt is a trip.
        tv = view.trip
        return not tv.good or bool(tv.value)

    def ev_connected(self, view: View) -> bool:
        return view.connected is True

    def link_healthy(self, view: View) -> bool:
        if self.p.snr_tag is None:
            return True
        snr = view.snr
        return snr is not None and snr >= self.p.snr_min_db

    def soc_known(self, view: View) -> bool:
        return view.soc is not None

    def soc_at_max(self, view: View) -> bool:
        soc = view.soc
        return soc is not None and soc >= self.p.soc_max

    def soc_at_min(self, view: View) -> bool:
        soc = view.soc
        return soc is not None and soc <= self.p.soc_min

    def soc_below_max(self, view: View) -> bool:
        soc = view.soc
        return soc is not None and soc < self.p.soc_max - self.p.soc_hysteresis

    def soc_above_min(self, view: View) -> bool:
        soc = view.soc
        return soc is not None and soc > self.p.soc_min + self.p.soc_hysteresis

    def above_reserve(self, view: View) -> bool:
        """Discharge may go on: no reserve on this site, or a good reserve below the SoC."""
        if self.p.reserve_tag is None:
            return True
        soc, reserve = view.soc, view.reserve
        return soc is not None and reserve is not None and soc > reserve

    def clear_of_reserve(self, view: View) -> bool:
        """Discharge may start: as ``above_reserve``, by the hysteresis more (no chattering)."""
        if self.p.reserve_tag is None:
            return True
        soc, reserve = view.soc, view.reserve
        return soc is not None and reserve is not None and soc > reserve + self.p.soc_hysteresis

    def plan_charge(self, view: View) -> bool:
        return view.request > self.p.deadband_w and not self._authority_holds(view)

    def plan_discharge(self, view: View) -> bool:
        return view.request < -self.p.deadband_w and not self._authority_holds(view)

    def authority_remote(self, view: View) -> bool:
        return view.authority == "remote"

    def authority_frequency(self, view: View) -> bool:
        return view.authority == "frequency"

    def _authority_holds(self, view: View) -> bool:
        """Someone other than the plan is in charge: the plan may not start or keep power flowing."""
        return view.authority in SIGNED

    def signed_request(self, view: View) -> tuple[float, str]:
        """The authority's set point inside the SoC window and above the departure reserve, and what
        bounded it ("" when nothing did). A bound is a clamp here, not an exit: the other sign stays open."""
        sp = current(view.inputs, view.out, self._authority_setpoint)
        sp = 0.0 if sp is None else float(sp)
        soc = view.soc
        if sp > 0 and (soc is None or soc >= self.p.soc_max):
            return 0.0, REASONS["soc_full"]
        if sp < 0 and (soc is None or soc <= self.p.soc_min):
            return 0.0, REASONS["soc_empty"]
        if sp < 0 and not self.above_reserve(view):
            return 0.0, REASONS["reserve_reached"]
        return sp, ""

    # -- entry/exit actions: output image only ---------------------------------------------------------
    def _zero(self, view: View) -> None:
        if self.p.setpoint_tag in view.out:
            view.out[self.p.setpoint_tag] = 0.0
        if self.p.enable_tag in view.out:
            view.out[self.p.enable_tag] = False

    def on_enter_idle(self, view: View) -> None:
        self._zero(view)

    def on_enter_safe_state(self, view: View) -> None:
        self._zero(view)

    def on_exit_charge(self, view: View) -> None:
        self._zero(view)

    def on_exit_discharge(self, view: View) -> None:
        self._zero(view)

    def on_exit_remote(self, view: View) -> None:
        self._zero(view)

    def on_exit_frequency(self, view: View) -> None:
        self._zero(view)


def build_machine(model: object, machine_cls: type[Machine] = Machine, **kwargs: Any) -> Machine:
    """The one definition of the machine; the diagram script passes a diagram-capable class."""
    return machine_cls(
        model=model,
        states=list(STATES),
        transitions=TRANSITIONS,
        initial=INITIAL,
        auto_transitions=False,
        send_event=False,
        ignore_invalid_triggers=True,
        **kwargs,
    )


def handlers() -> dict[str, tuple[str, ...]]:
    """One handler per state: the triggers it tries, most protective first."""
    valid: dict[str, set[str]] = {s: set() for s in STATES}
    for t in TRANSITIONS:
        for src in t["source"] if isinstance(t["source"], list) else [t["source"]]:
            valid[src].add(t["trigger"])
    return {s: tuple(t for t in PRIORITY if t in valid[s]) for s in STATES}


@register_program("modes")
class Modes(Program):
    """Writes ``mode.state`` and ``mode.reason``; at most one transition per scan, each one an event."""

    Params = ModeParams
    params: ModeParams

    def __init__(self, name: str, params: ModeParams, site: SiteInfo):
        super().__init__(name, params, site)
        self.model = ModeModel(params)
        self.machine = build_machine(self.model)
        # The same conditions the machine checks, pre-evaluated so that a scan without a transition does
        # not pay for the machine's event handling (about 15 us per failed trigger on this machine).
        m = self.model
        self._handlers: dict[str, list[tuple[str, Guard]]] = {
            s: [
                (
                    t["trigger"],
                    guard(
                        [getattr(m, c) for c in t.get("conditions", [])], [getattr(m, c) for c in t.get("unless", [])]
                    ),
                )
                for trig in ts
                for t in TRANSITIONS
                if t["trigger"] == trig and s in (t["source"] if isinstance(t["source"], list) else [t["source"]])
            ]
            for s, ts in handlers().items()
        }

    def reconfigure(self, params: ParamsModel) -> Callable[[], None]:
        """Thresholds change live; the state, and the condition handlers bound to the model, stay."""
        assert isinstance(params, ModeParams)
        self.check_same_tags(params)

        def swap() -> None:
            self.params = params
            self.model.use(params)

        return swap

    def requires(self) -> list[str]:
        p = self.params
        return [
            t
            for t in (
                p.connected_tag,
                p.soc_tag,
                p.trip_tag,
                p.setpoint_tag,
                p.enable_tag,
                p.snr_tag,
                p.plan_tag,
                p.reserve_tag,
            )
            if t is not None
        ]

    def declare(self) -> list[TagSpec]:
        return [
            TagSpec(
                "mode.state",
                TagType.STR,
                "",
                Direction.MEMORY,
                INITIAL,
                description="operating mode: idle, charge, discharge or safe_state",
            ),
            TagSpec(
                "mode.reason", TagType.STR, "", Direction.MEMORY, "", description="cause of the last mode transition"
            ),
            TagSpec(
                "mode.request",
                TagType.FLOAT,
                "W",
                Direction.MEMORY,
                0.0,
                description="the request this scan acted on: the plan's, the fixed one, or the fallback charge; "
                "in remote and frequency the authority's set point within the SoC window and reserve",
            ),
            TagSpec(
                "mode.clamp",
                TagType.STR,
                "",
                Direction.MEMORY,
                "",
                description="in remote and frequency: what held the authority's set point back (empty: nothing)",
            ),
        ]

    def scan(self, cx: Cycle) -> None:
        model, out = self.model, cx.out
        view = model.view(cx.inputs, out)
        state = src = model.state
        for trigger, holds_now in self._handlers[src]:
            if not holds_now(view):
                continue
            if model.trigger(trigger, view):  # the machine re-checks the same conditions and moves
                state = model.state
                reason = self._reason(trigger, view)
                out["mode.reason"] = reason
                cx.event("transition", f"{src} -> {state}: {reason}", trigger=trigger, source=src, dest=state)
                break
        out["mode.state"] = state
        if state in SIGNED:
            out["mode.request"], out["mode.clamp"] = model.signed_request(view)
        else:
            out["mode.request"], out["mode.clamp"] = view.request, ""

    def _reason(self, trigger: str, view: View) -> str:
        p = self.params
        text = REASONS[trigger]
        if trigger == "trip":
            code = view.inputs.tag(p.trip_tag)
            return f"{text}: {code.value}" if code.good else f"{text}: {p.trip_tag} is {code.quality.value}"
        if trigger in ("plan_stop", "start_charge", "start_discharge"):
            return f"{text} ({view.request:.0f} W)"
        if trigger == "reserve_reached" and p.reserve_tag is not None:
            r = view.inputs.tag(p.reserve_tag)
            return f"{text} ({r.value:.3f})" if r.good else f"{text}: {p.reserve_tag} is {r.quality.value}"
        if trigger in ("enter_remote", "enter_frequency", "authority_ended") and p.authority is not None:
            return f"{text}: {current(view.inputs, view.out, p.authority_tag('reason'))}"
        if trigger in ("soc_full", "soc_empty"):
            return f"{text} ({view.soc:.3f})"
        return text
