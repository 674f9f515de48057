"""The scan engine: one pure step function shared by the real-time runner, replay, backtest and tests.

``Engine.step(now_us, updates, commands)`` runs the phases of the scan (docs/design.md "The scan cycle"),
each a method of its own:

1. ``freeze_inputs``   apply the staged updates all at once, age tags to ``stale``, lay forces over, freeze.
2. ``run_programs``    programs in configured order write requested outputs.
3. ``apply_forces``    forced outputs replace what programs asked for, *before* safety: never around it;
   ``hold_until_durable`` asks for every output's safe value while a latched state change is not on disk;
   ``hold_by_command`` does the same while the site is out of service (availability, stop, reset).
4. ``run_interlocks``  interlocks in configured order clamp, zero or latch outputs; their result is final.
5. ``commit``          the committed image; what changed; whose persisted state changed.

Real time and simulated time differ only in who chooses ``now_us``. The engine never reads a clock.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from heapq import heappop, heappush
from typing import Any

from pydantic import ValidationError

from runtime.api import EVSES_OUT, Command, Cycle, Event, NotLive, Outputs, Program, SiteInfo
from runtime.online.plan import diff_values
from runtime.tags import US, Direction, Image, Quality, TagSpec, TagTable, TagType, TagUpdate, TagValue

# Tags the runtime itself owns. The runner feeds the runtime.* inputs each cycle (OpenPLC exposes its
# diagnostics as ordinary tags the same way), so safety can act on them and replay can reproduce them.

RUNTIME_TAGS: tuple[TagSpec, ...] = (
    TagSpec(
        "runtime.cycle_time", TagType.FLOAT, "s", Direction.INPUT, 0.0, description="compute time of the previous cycle"
    ),
    TagSpec(
        "runtime.lateness",
        TagType.FLOAT,
        "s",
        Direction.INPUT,
        0.0,
        description="how late this cycle woke after its deadline",
    ),
    TagSpec(
        "runtime.overruns",
        TagType.INT,
        "",
        Direction.INPUT,
        0,
        description="cycles that ended after the next deadline since start",
    ),
    TagSpec(
        "runtime.overrun_fault",
        TagType.BOOL,
        "",
        Direction.INPUT,
        False,
        description="the configured run of consecutive overruns was reached",
    ),
    TagSpec(
        "runtime.task_process_alive",
        TagType.BOOL,
        "",
        Direction.INPUT,
        False,
        description="the task process answered within its heartbeat limit",
    ),
    TagSpec(
        "runtime.persist_fault",
        TagType.BOOL,
        "",
        Direction.INPUT,
        False,
        description="a latched state change is not on disk yet because a write failed (outputs held safe)",
    ),
    TagSpec(
        "runtime.available",
        TagType.BOOL,
        "",
        Direction.INPUT,
        True,
        description="in service: false while a ChangeAvailability Inoperative holds the outputs safe (persisted)",
    ),
    TagSpec(
        EVSES_OUT,
        TagType.STR,
        "",
        Direction.INPUT,
        "[]",
        description="JSON list of the EVSEs a ChangeAvailability Inoperative holds out of service (persisted)",
    ),
    TagSpec(
        "runtime.revision",
        TagType.STR,
        "",
        Direction.INPUT,
        "",
        description="revision (hash) of the site settings the previous cycle ran (online change)",
    ),
    TagSpec(
        "runtime.fault",
        TagType.STR,
        "",
        Direction.MEMORY,
        "",
        description="last program/interlock exception (empty when none this cycle)",
    ),
)


# TagValue's own __new__ is a Python function; the tuple constructor builds the same tuple without it
# (one per read and per changed output, every scan).
_tag_value = tuple.__new__

DIAGNOSTIC_PREFIX = "runtime."  # tags the runtime writes about itself; never forceable
PERSIST_FAULT = "runtime.persist_fault"
FAULT = "runtime.fault"
_NONE: frozenset[str] = frozenset()  # no forced outputs (the usual case: no new set per cycle)
REVISION = "runtime.revision"
RECONFIGURE = "reconfigure"  # the runtime's own command: an online change of params, applied at a boundary
AVAILABILITY = "runtime.availability"  # the persisted owner name of the availability state


class Availability(Program):
    """Out of service by command (OCPP ChangeAvailability Inoperative), the whole site or single EVSEs of a
    depot: persisted like a latched trip, so a restart does not put a station or an EVSE the back office
    took out of service back into service."""

    def __init__(self, site: SiteInfo) -> None:
        super().__init__(AVAILABILITY, Program.Params(), site)
        self.operative = True
        self.by = ""
        self.out: dict[int, str] = {}  # EVSE -> who took it out of service
        self.stopped_by: str | None = None  # a remote stop holds the outputs safe until a start
        self.stopped: dict[int, str] = {}  # a remote stop of one EVSE of a depot: EVSE -> who

    def persist(self) -> Mapping[str, Any] | None:
        if self.operative and not self.out and self.stopped_by is None and not self.stopped:
            return None
        return {
            "operative": self.operative,
            "by": self.by,
            "evses_out": {str(n): by for n, by in self.out.items()},
            "stopped_by": self.stopped_by,  # a restart does not end a remote stop: the EV is still there
            "evses_stopped": {str(n): by for n, by in self.stopped.items()},
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        self.operative = bool(state.get("operative", True))
        self.by = str(state.get("by", ""))
        # a state file of a release before per-EVSE availability has no evses_out: nothing out
        self.out = {int(n): str(by) for n, by in dict(state.get("evses_out") or {}).items()}
        stopped_by = state.get("stopped_by")
        self.stopped_by = None if stopped_by is None else str(stopped_by)
        self.stopped = {int(n): str(by) for n, by in dict(state.get("evses_stopped") or {}).items()}

    def evses_out(self) -> str:
        """The ``runtime.evses_out`` value: the EVSEs out of service, ascending, as a JSON list."""
        return json.dumps(sorted(self.out))


def evse_safe_outputs(safe_out: Mapping[str, Any]) -> dict[int, dict[str, Any]]:
    """The safe values of the outputs grouped by the EVSE they belong to (its prefix ``evse<n>.``, see
    runtime/evses.py); empty on a site of one charger, whose outputs carry no prefix."""
    from runtime.evses import evse_of  # runtime.evses builds on this module

    out: dict[int, dict[str, Any]] = {}
    for name, v in safe_out.items():
        n = evse_of(name)
        if n is not None:
            out.setdefault(n, {})[name] = v
    return out


def keeps_state(p: Program) -> bool:
    """Does this program or interlock persist state (a latched trip) across restarts?"""
    return type(p).persist is not Program.persist


def strict_value(spec: TagSpec, value: Any) -> Any:
    """An operator's value for a tag, checked strictly: JSON of the tag's own type, never a number in a
    string ("7000" for a set point is a typo or a script bug, not 7000 W), never a bool for a number."""
    t = spec.type
    if t in (TagType.FLOAT, TagType.INT):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{spec.name}: expected a number, got {value!r}")
        if t is TagType.INT and isinstance(value, float) and not value.is_integer():
            raise ValueError(f"{spec.name}: expected an integer, got {value!r}")
    elif t is TagType.BOOL and not isinstance(value, bool):
        raise ValueError(f"{spec.name}: expected true or false, got {value!r}")
    elif t is TagType.STR and not isinstance(value, str):
        raise ValueError(f"{spec.name}: expected a string, got {value!r}")
    return spec.coerce(value)


@dataclass
class StepResult:
    k: int
    now_us: int
    outputs: dict[str, Any]  # committed output image (output direction only)
    changed_outputs: dict[str, Any]
    input_changes: dict[str, TagValue]  # inputs whose value or quality changed this cycle (recording)
    image: Image  # every tag after the cycle (published to tasks, dumped at exit)
    events: list[Event] = field(default_factory=list)
    persist: dict[str, Mapping[str, Any] | None] = field(default_factory=dict)  # whose state changed (None: none kept)
    changed: dict[str, TagValue] = field(default_factory=dict)  # every tag whose value/quality changed
    reset: bool = False  # an accepted reset: the outputs of this cycle are safe; the runner persists and exits


class Engine:
    def __init__(
        self,
        site: SiteInfo,
        tags: TagTable,
        programs: Sequence[Program] = (),
        interlocks: Sequence[Program] = (),
        *,
        age_inputs: bool = True,
        age_scale: int = 1,
    ):
        """``age_inputs=False`` is replay: staleness then comes only from recorded quality.
        ``age_scale`` > 1 is a simulated site run faster than real time: drivers and tasks still work in
        real time, so age limits stretch with the speed (supervision stays a real-time matter)."""
        self.site = site
        self.period_us = site.period_us
        self.tags = tags
        self.programs = list(programs)
        self.interlocks = list(interlocks)
        self.age_inputs = age_inputs
        specs = tags.specs
        self._specs = specs
        self._input_names = [s.name for s in specs.values() if s.is_input]
        self._aging = {
            s.name: int(s.stale_after_s * US) * age_scale
            for s in specs.values()
            if s.is_input and s.stale_after_s is not None
        }
        self._expiry: list[tuple[int, str, int]] = []
        self._output_names = [s.name for s in specs.values() if s.direction is Direction.OUTPUT]
        self._writable = frozenset(
            s.name for s in specs.values() if s.direction in (Direction.OUTPUT, Direction.MEMORY)
        )
        # Inputs start bad: "never read" must not look like a value.
        self._values: dict[str, TagValue] = {
            s.name: TagValue(s.default, Quality.BAD if s.is_input else Quality.GOOD, 0) for s in specs.values()
        }
        self._out: dict[str, Any] = {n: _safe(specs[n]) for n in self._writable}
        # An output declared without a default still has a safe value: 0 for numbers, False for a permit.
        self._safe_out: dict[str, Any] = {n: _safe(specs[n]) for n in self._output_names}
        self._committed: dict[str, Any] = dict(self._safe_out)
        # One output image for every cycle: it writes through to ``_out``, and ``commit`` empties its dirty set.
        self._outputs = Outputs(specs, self._out, self._writable)
        self.forces: dict[str, Any] = {}
        self._pending_force_events: list[tuple[str, str, dict[str, Any]]] = []
        self.availability = Availability(site)
        self._evse_safe = evse_safe_outputs(self._safe_out)
        self.resetting = False  # a reset was accepted: outputs safe until the runtime exits
        self._persisted: dict[str, Mapping[str, Any] | None] = {
            p.name: p.persist() for p in (*self.programs, *self.interlocks, self.availability)
        }
        self._prev_frozen: dict[str, TagValue] = {}
        self._input_set = frozenset(self._input_names)
        # One lookup per read: the tag's coercion and its age limit (None: it does not age).
        self._reads = {n: (specs[n].coerce, self._aging.get(n)) for n in self._input_names}
        self._forced_last: set[str] | frozenset[str] = _NONE
        self._forced_writable: frozenset[str] = _NONE
        # Only programs that override persist() are asked each cycle.
        self._persisting = [p for p in (*self.programs, *self.interlocks) if keeps_state(p)] + [self.availability]
        self._held = False  # outputs held safe last cycle because persisted state was not durable
        self.revision = ""  # the running settings' revision; a reconfigure command moves it
        self.reconfigured: list[tuple[str, bool, str]] = []  # this step's online changes: (revision, applied, why)
        self.k = -1

    # -- commissioning -------------------------------------------------------------------------
    def check_force(self, name: str, value: Any) -> Any:
        """The value a force of ``name`` would take; KeyError for an unknown tag, ValueError for one
        that may not be forced (the runtime's own diagnostics, which safety decides by) or a value
        that is not of the tag's type. The control socket asks here before it accepts a force, and
        the engine asks again when the force arrives, so a recorded force replayed is refused too."""
        spec = self._specs.get(name)
        if spec is None:
            raise KeyError(f"unknown tag {name!r}")
        if name.startswith(DIAGNOSTIC_PREFIX):
            raise ValueError(f"{name} is a runtime diagnostic: it cannot be forced")
        return strict_value(spec, value)

    def force(self, name: str, value: Any) -> None:
        """Force an input (what programs see) or an output (what programs asked for); never what
        safety decides. Visible as ``forced`` in the tag's state and logged as an event."""
        value = self.check_force(name, value)
        self.forces[name] = value
        self._pending_force_events.append(("force", f"{name} forced to {value!r}", {"tag": name, "value": value}))

    def unforce(self, name: str) -> None:
        if name not in self.forces:
            return
        del self.forces[name]
        self._pending_force_events.append(("force", f"{name} force released", {"tag": name}))

    @property
    def keeping_state(self) -> list[str]:
        """Names of the programs and interlocks that persist state: the only owners state may have."""
        return [p.name for p in self._persisting]

    def restore(self, states: Mapping[str, Mapping[str, Any]]) -> list[str]:
        """Hand each component its persisted state; returns the names restored."""
        done = []
        for p in self._persisting:
            if states.get(p.name) is not None:
                p.restore(states[p.name])
                self._persisted[p.name] = p.persist()
                done.append(p.name)
        return done

    @property
    def safe_outputs(self) -> dict[str, Any]:
        """Every output at its declared default: setpoint 0, permit withdrawn."""
        return dict(self._safe_out)

    # -- the cycle -----------------------------------------------------------------------------
    @property
    def stopped_by(self) -> str | None:
        """Who stopped the whole site remotely (persisted with the availability); None: not stopped."""
        return self.availability.stopped_by

    @stopped_by.setter
    def stopped_by(self, by: str | None) -> None:
        self.availability.stopped_by = by

    @property
    def stopped_evses(self) -> dict[int, str]:
        """The EVSEs of a depot stopped remotely, and who stopped them (persisted with the availability)."""
        return self.availability.stopped

    def step(self, now_us: int, updates: Iterable[TagUpdate] = (), commands: Sequence[Command] = ()) -> StepResult:
        """One scan: the phases in order, each a call of its own."""
        k = now_us // self.period_us
        first = self.k < 0
        self.k = k
        events: list[Event] = []
        if self._pending_force_events:
            events += [Event(k, now_us, kind, "runtime", msg, data) for kind, msg, data in self._pending_force_events]
            self._pending_force_events.clear()
        frozen, forced_inputs, input_changes = self.freeze_inputs(now_us, updates, first)
        image = Image.adopt(frozen)
        out = self._outputs
        out.dirty.clear()  # a step that raised before its commit left its marks
        if self._out[FAULT] or self._values[FAULT][0]:  # a fault is reported for the cycle it happened in
            out[FAULT] = ""
        cmds = tuple(commands)
        reset = self.take_commands(cmds, events, k, now_us)
        # One cycle for both phases: programs and interlocks see the same inputs, outputs, commands and log.
        cx = Cycle(k, now_us, self.period_us, image, out, self.site, cmds, events)
        self.run_programs(cx)
        self.apply_forces(out)
        self.hold_until_durable(image, out, events, k, now_us)
        self.hold_by_command(out, reset)
        self.run_interlocks(cx)
        res = self.commit(k, now_us, first, out, frozen, forced_inputs, input_changes, events)
        res.reset = reset
        return res

    def take_commands(self, cmds: Sequence[Command], events: list[Event], k: int, now_us: int) -> bool:
        """Availability, start/stop and reset act on the engine's own hold (so replay reproduces them);
        every command is an event with who asked. Returns whether a reset was asked for."""
        reset = False
        self.reconfigured = []
        for c in cmds:
            if c.name == RECONFIGURE:
                events.append(self.reconfigure(c, k, now_us))
                continue
            by = str(c.args.get("by", ""))
            src = str(c.args.get("source", "runtime"))
            data = {key: v for key, v in c.args.items() if key not in ("source",)}
            n = c.args.get("evse") if self._evse_safe else None  # a site of one charger: EVSE 1 is the site
            if c.name == "availability" and n is not None:
                if c.args["operative"]:
                    self.availability.out.pop(n, None)
                else:
                    self.availability.out[n] = by or src
            elif c.name == "availability":
                self.availability.operative = bool(c.args["operative"])
                self.availability.by = by
            elif c.name == "stop" and n is not None:
                self.stopped_evses[n] = by or src
            elif c.name == "stop":
                self.stopped_by = by or src
            elif c.name == "start" and n is not None:
                self.stopped_evses.pop(n, None)
            elif c.name == "start":  # the whole site: every remote stop ends
                self.stopped_by = None
                self.stopped_evses.clear()
            elif c.name == "reset":
                reset = self.resetting = True
            events.append(Event(k, now_us, "command", src, f"{c.name} asked by {by or src}", data))
        return reset

    def reconfigure(self, c: Command, k: int, now_us: int) -> Event:
        """An online change at this cycle boundary, before any program runs: every changed program and
        interlock first agrees (``Program.reconfigure``), then all swap, or none does. Latches and running
        timers stay. As a recorded command, replay applies it at the same cycle with the same outcome.

        ``c.args``: ``revision`` (str), ``components`` ({name: params as JSON}), ``by`` (who asked)."""
        revision = str(c.args["revision"])
        by = str(c.args.get("by", ""))
        named = {p.name: p for p in (*self.programs, *self.interlocks)}
        swaps: list[tuple[Program, Any, Any]] = []
        refused: list[str] = []
        retry: list[float] = []
        diff: dict[str, list[Any]] = {}
        for name, raw in dict(c.args.get("components", {})).items():
            p = named.get(name)
            if p is None:
                refused.append(f"{name}: no program or interlock of that name runs")
                continue
            try:
                new = type(p).Params.model_validate(raw)
            except ValidationError as exc:
                refused.append(f"{name}: {exc.error_count()} invalid setting(s): {exc.errors()[0]['msg']}")
                diff.update(diff_values(p.params.model_dump(mode="json"), raw, name))
                continue
            diff.update(diff_values(p.params.model_dump(mode="json"), new.model_dump(mode="json"), name))
            try:
                swaps.append((p, new, p.reconfigure(new)))
            except NotLive as exc:
                refused.append(f"{name}: {exc.reason}")
                if exc.retry_s is not None:
                    retry.append(exc.retry_s)
        data: dict[str, Any] = {"revision": revision, "from": self.revision, "diff": diff, "by": by}
        if refused:
            when = f"; ask again in {max(retry):g} s" if retry and len(retry) == len(refused) else "; needs a restart"
            why = "; ".join(refused) + when
            self.reconfigured.append((revision, False, why))
            return Event(k, now_us, "reconfigure_refused", "runtime", f"revision {revision} not applied: {why}", data)
        for p, new, swap in swaps:
            swap()
            p.params = new
        old, self.revision = self.revision, revision
        self.reconfigured.append((revision, True, ""))
        return Event(k, now_us, "reconfigure", "runtime", f"revision {revision} running (was {old or '-'})", data)

    def hold_by_command(self, out: Outputs, reset: bool) -> None:
        """Out of service, stopped remotely or resetting: every output asked for at its safe value (0 W
        both ways, permit withdrawn) before the interlocks, which only restrict further."""
        if reset or self.resetting or not self.availability.operative or self.stopped_by is not None:
            self._out.update(self._safe_out)
            out.dirty.update(self._safe_out)
            return
        av = self.availability
        if not (av.out or av.stopped):
            return
        for n in (*av.out, *av.stopped):  # one EVSE of a depot: its outputs only
            safe = self._evse_safe.get(n)
            if safe:
                self._out.update(safe)
                out.dirty.update(safe)

    def freeze_inputs(
        self, now_us: int, updates: Iterable[TagUpdate], first: bool
    ) -> tuple[dict[str, TagValue], list[str], dict[str, TagValue]]:
        """INPUT: staged reads applied all at once (the last read of a tag wins), ages to ``stale``,
        forced inputs laid over. Returns the frozen image, the forced inputs and what changed (the
        recording replays exactly what the programs saw, forced values included)."""
        values = self._values
        reads = self._reads
        inputs = self._input_set
        good = Quality.GOOD
        expiry = self._expiry
        touched: set[str] = set()
        for name, value, q, t in updates:
            read = reads.get(name)
            if read is None:  # not an input of this site
                continue
            coerce, limit = read
            # A read stamped in the future (a driver's clock ahead of this cycle) counts as read now.
            if t is None or t > now_us:
                t = now_us
            if q.__class__ is not Quality:
                q = Quality(q)
            try:
                v = coerce(value)
            except ValueError:
                v, q = values[name].value, Quality.BAD  # bad data never becomes a wrong value
            if v is None and q is not good:
                v = values[name].value  # a failed read keeps the last value known, marked as not good
            values[name] = _tag_value(TagValue, (v, q, t, False))
            touched.add(name)
            if limit is not None and q is good:
                heappush(expiry, (t + limit, name, t))
        if self.age_inputs:
            # Ageing costs O(reads), not O(tags): each good read queues its expiry; an entry whose tag
            # was read again since is obsolete and dropped.
            stale = Quality.STALE
            while expiry and expiry[0][0] < now_us:
                _, name, t = heappop(expiry)
                tv = values[name]
                if tv.t_us == t and tv.quality is good:
                    values[name] = TagValue(tv.value, stale, t)
                    touched.add(name)
        else:
            for name in self._input_names:
                tv = values[name]
                values[name] = TagValue(tv.value, tv.quality, now_us)
        frozen = dict(values)
        forced_inputs = [n for n in self.forces if n in inputs] if self.forces else []
        for name in forced_inputs:
            frozen[name] = TagValue(self.forces[name], good, now_us, True)
        prev = self._prev_frozen
        input_changes: dict[str, TagValue] = {}
        if first:
            check: Iterable[str] = self._input_names
        elif forced_inputs or self._forced_last:
            check = touched | self._forced_last | set(forced_inputs)
        else:
            check = touched
        for name in check:
            new, old = frozen[name], prev.get(name)
            # quality, value, forced by index: a NamedTuple's field names are slower to read (Python 3.11)
            if old is None or new[1] is not old[1] or new[0] != old[0] or new[3] is not old[3]:
                input_changes[name] = new
        self._forced_last = set(forced_inputs) if forced_inputs else _NONE
        if first:
            self._prev_frozen = {n: frozen[n] for n in self._input_names}
        else:
            prev.update(input_changes)  # input_changes holds the frozen values
        return frozen, forced_inputs, input_changes

    def run_programs(self, cx: Cycle) -> None:
        """PROGRAM: in configured order; one that raises is logged and the next one runs."""
        for prog in self.programs:
            cx._source = prog.name
            try:
                prog.scan(cx)
            except Exception as exc:  # the scan never stops because a program failed
                self._fault(cx, prog, exc)

    def apply_forces(self, out: Outputs) -> None:
        """Forced outputs replace what programs asked for, before safety has its word."""
        for name, fv in self.forces.items():
            if name in self._writable:
                self._out[name] = fv
                out.dirty.add(name)

    def run_interlocks(self, cx: Cycle) -> None:
        """SAFETY: in configured order, the last word. One that raises is doubt: every output safe."""
        for lock in self.interlocks:
            cx._source = lock.name
            try:
                lock.scan(cx)
            except Exception as exc:
                self._fault(cx, lock, exc)
                self._out.update(self._safe_out)
                cx.out.dirty.update(self._safe_out)

    def hold_until_durable(self, image: Image, out: Outputs, events: list[Event], k: int, now_us: int) -> None:
        """While a latched state change is not on disk (``runtime.persist_fault``), a crash would forget
        the latch: every output is asked for at its safe value until the write succeeds. Before the
        interlocks, which only ever restrict: the committed outputs are safe, and safety's own outputs
        (its trip code and reason) still say what it sees."""
        tv = image.tag(PERSIST_FAULT)
        held = tv[0] is True and tv[1] is Quality.GOOD
        if held:
            self._out.update(self._safe_out)
            out.dirty.update(self._safe_out)
        if held is not self._held:
            self._held = held
            msg = (
                "persisted state is not durable: every output held at its safe value until it is written"
                if held
                else "persisted state written: outputs released"
            )
            events.append(Event(k, now_us, "persist_fault" if held else "persist_ok", "runtime", msg))

    def commit(
        self,
        k: int,
        now_us: int,
        first: bool,
        out: Outputs,
        frozen: dict[str, TagValue],
        forced_inputs: list[str],
        input_changes: dict[str, TagValue],
        events: list[Event],
    ) -> StepResult:
        """OUTPUT: what changed becomes the committed image; components whose persisted state changed
        are reported for writing."""
        values = self._values
        requested = self._out
        committed = self._committed
        changed_tags = input_changes.copy()
        changed: dict[str, Any] = {}
        forces = self.forces
        good = Quality.GOOD
        dirty = out.dirty
        if first:
            check: Iterable[str] = self._writable
        elif forces or self._forced_writable:
            check = dirty | self._forced_writable | {n for n in forces if n in self._writable}
        else:
            check = dirty
        for n in check:
            old = values[n]
            v = requested[n]
            f = n in forces
            if first or old[0] != v or old[3] is not f:  # value, forced (by index: see freeze_inputs)
                changed_tags[n] = values[n] = _tag_value(TagValue, (v, good, now_us, f))
                if n in committed:
                    changed[n] = committed[n] = v
        self._forced_writable = frozenset(n for n in forces if n in self._writable) if forces else _NONE
        dirty.clear()
        full = dict(values)
        for name in forced_inputs:
            full[name] = frozen[name]
        persist = {}
        for p in self._persisting:
            st = p.persist()
            if st != self._persisted[p.name]:
                self._persisted[p.name] = st
                persist[p.name] = st
        return StepResult(
            k, now_us, committed.copy(), changed, input_changes, Image.adopt(full), events, persist, changed_tags
        )

    def _fault(self, cx: Cycle, prog: Program, exc: Exception) -> None:
        msg = f"{prog.name}: {type(exc).__name__}: {exc}"
        self._out[FAULT] = msg
        cx.out.dirty.add(FAULT)
        tb = traceback.format_exception_only(exc)[-1].strip()
        cx._events.append(Event(cx.k, cx.now_us, "fault", prog.name, msg, {"traceback": tb}))

    @property
    def image(self) -> Image:
        return Image(self._values)


def _safe(spec: TagSpec) -> Any:
    if spec.default is not None:
        return spec.default
    return {TagType.FLOAT: 0.0, TagType.INT: 0, TagType.BOOL: False}.get(spec.type)


def tag_table(*groups: tuple[str, Iterable[TagSpec]]) -> TagTable:
    """Build a site's tag table from (owner, specs) groups; duplicates raise ValueError naming both."""
    table = TagTable()
    for owner, specs in groups:
        for s in specs:
            table.add(s, owner)
    return table
