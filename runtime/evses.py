"""EVSEs of a depot: one declaration of a charger's devices, programs and interlocks, instantiated per EVSE.

EVSE n = OCPP evseId n = tag prefix ``evse<n>.`` (docs/depot.md). Every tag a per-EVSE component declares
lives under the prefix (the charger map's ``grid.*`` included); a tag it reads that no component of that
EVSE declares is a site tag (``meter.*``, ``site.*``, ``runtime.*``, ``prices.*``) and is read unprefixed.
So ``modes``, ``dispatch`` and ``v2g_safety`` run per EVSE unchanged: they are written against plain names
and see their own EVSE's tags through a renaming view, instead of every tag name being copied into the
site file once per charger.

The view is also where one EVSE's failure stays its own: a per-EVSE program or interlock that raises takes
its EVSE's outputs to their safe values (0 W, permit withdrawn) and says so in a ``fault`` event, and its
EVSE's interlocks then read that fault as ``runtime.fault`` (their ``program_fault`` trip), while the other
EVSEs run on. The engine's rule, which makes the whole site safe, stays for site-level components: one
charger's software must not stop a depot, but the allocator or the connection interlock failing must.

A site without ``evses:`` is EVSE 1 with an empty prefix: nothing here runs for it.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterator, Mapping
from typing import Any

from runtime.api import Command, Cycle, Event, Outputs, Program
from runtime.engine import _safe
from runtime.tags import Direction, Image, TagSpec, TagType, TagValue

log = logging.getLogger("v2g_plc.evses")

PREFIX = "evse{n}."
FAULT_TAG = "runtime.fault"  # the engine's: this cycle's program or interlock exception, read by v2g_safety


def prefix_of(n: int) -> str:
    return PREFIX.format(n=n)


class _Names:
    """Plain name -> site name for one EVSE: the EVSE's own tags prefixed, every other tag as it is."""

    __slots__ = ("_cache", "local", "prefix")

    def __init__(self, prefix: str, local: frozenset[str]):
        self.prefix = prefix
        self.local = local  # the site names (prefixed) this EVSE's components declare
        self._cache: dict[str, str] = {}

    def __call__(self, name: str) -> str:
        site = self._cache.get(name)
        if site is None:
            p = self.prefix + name
            site = self._cache[name] = p if p in self.local else name
        return site


class _RenamedValues(Mapping[str, TagValue]):
    """The frozen image as one EVSE's components see it (the backing store of an ``Image``)."""

    __slots__ = ("_d", "_n")

    def __init__(self, d: Mapping[str, TagValue], names: _Names):
        self._d = d
        self._n = names

    def __getitem__(self, name: str) -> TagValue:
        return self._d[self._n(name)]

    def get(self, name: str, default: Any = None) -> Any:
        return self._d.get(self._n(name), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._n(name) in self._d

    def __iter__(self) -> Iterator[str]:
        # This EVSE's tags by their plain names, then the site's own tags; other EVSEs' tags are not seen.
        pre, n = self._n.prefix, len(self._n.prefix)
        for name in self._d:
            if name.startswith(pre):
                yield name[n:]
            elif not name.startswith("evse"):
                yield name

    def __len__(self) -> int:
        return sum(1 for _ in self)


class _RenamedOutputs(Outputs):
    """The output image as one EVSE's components see it: reads and writes go to the EVSE's own tags, and
    ``runtime.fault`` is this EVSE's own fault of the cycle when it has one, the site's otherwise."""

    __slots__ = ("_fault", "_inner", "_n")

    def __init__(self, inner: Outputs, names: _Names, fault: str = ""):  # no super().__init__: all forwarded
        self._inner = inner
        self._n = names
        self._fault = fault
        self.dirty = inner.dirty  # the same set: what this EVSE's components write is dirty in the cycle's image

    def __getitem__(self, name: str) -> Any:
        site = self._n(name)
        return self._fault if self._fault and site == FAULT_TAG else self._inner[site]

    def get(self, name: str, default: Any = None) -> Any:
        site = self._n(name)
        return self._fault if self._fault and site == FAULT_TAG else self._inner.get(site, default)

    def __setitem__(self, name: str, value: Any) -> None:
        self._inner[self._n(name)] = value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._n(name) in self._inner

    def snapshot(self) -> dict[str, Any]:
        return self._inner.snapshot()


class EvseComponent(Program):
    """A program or interlock of one EVSE: the plain-named component, run on its EVSE's tags.

    The wrapper's name (``evse3.safety``) is the one events, persisted state and faults carry; the inner
    component keeps its plain name and never knows which EVSE it serves.
    """

    def __init__(self, inner: Program, n: int):
        super().__init__(prefix_of(n) + inner.name, inner.params, inner.site)
        self.inner = inner
        self.evse = n
        self.prefix = prefix_of(n)
        self._names = _Names(self.prefix, frozenset())
        self._logged = ""

    def bind(self, local: frozenset[str]) -> None:
        """Called once the site's tags are all declared: which site names belong to this EVSE."""
        self._names = _Names(self.prefix, local)

    def declare(self) -> list[TagSpec]:
        return [rename_spec(s, self.prefix) for s in self.inner.declare()]

    def requires(self) -> list[str]:
        return [self._names(t) for t in self.inner.requires()]

    def scan(self, cx: Cycle) -> None:
        n = self._names
        img = Image.__new__(Image)
        img._d = _RenamedValues(cx.inputs._d, n)
        out = _RenamedOutputs(cx.out, n, self._own_fault(cx._events, cx.k))
        inner = Cycle(cx.k, cx.now_us, cx.period_us, img, out, cx.site, self._commands(cx.commands))
        inner._events = cx._events
        inner._source = self.name
        try:
            self.inner.scan(inner)
        except Exception as exc:  # this EVSE goes safe; the engine never sees it, so the rest run on
            self._isolate(cx, exc)
        else:
            self._logged = ""

    def _commands(self, cmds: tuple[Command, ...]) -> tuple[Command, ...]:
        """This EVSE's commands: those naming it (``evse: n``) and the site's (naming none). The gate has
        refused a per-EVSE kind naming no EVSE, or one this site does not have (runtime/commands.py)."""
        if not cmds:
            return cmds
        return tuple(c for c in cmds if c.args.get("evse") in (None, self.evse))

    def check_command(self, kind: str, args: Mapping[str, Any]) -> str:
        """The verdict of the inner interlock's ``check_command`` on a command for this EVSE ('' for one
        naming another EVSE). Bound to this EVSE, it also tells the runner's gate which EVSEs the site has."""
        if args.get("evse") not in (None, self.evse):
            return ""
        check = getattr(self.inner, "check_command", None)
        return str(check(kind, args)) if check is not None else ""

    def _own_fault(self, events: list[Event], k: int) -> str:
        """The last exception of one of this EVSE's components in this cycle ('' if none)."""
        for e in reversed(events):
            if e.kind == "fault" and e.k == k and e.source.startswith(self.prefix):
                return e.message
        return ""

    def _isolate(self, cx: Cycle, exc: Exception) -> None:
        """Every output of this EVSE at its safe value (what the engine does to every output when a site
        interlock raises), and a ``fault`` event naming the EVSE, as the engine's own fault event does.
        Text outputs (a trip code, its reason) are status, never a command to the charger: they keep what
        they say, so the allocator still sees the EVSE's trip and the operator its cause."""
        msg = f"{self.name}: {type(exc).__name__}: {exc}"
        out = cx.out
        specs = out._specs
        for name in self._names.local:
            spec = specs.get(name)
            if spec is not None and spec.direction is Direction.OUTPUT and spec.type is not TagType.STR:
                out[name] = _safe(spec)
        tb = traceback.format_exception_only(exc)[-1].strip()
        cx._events.append(Event(cx.k, cx.now_us, "fault", self.name, msg, {"traceback": tb, "evse": self.evse}))
        if self._logged != msg:  # once per new exception, not every cycle it repeats
            log.error("EVSE %d taken safe, the others run on: %s", self.evse, msg)
        self._logged = msg

    def persist(self) -> Mapping[str, Any] | None:
        return self.inner.persist()

    def restore(self, state: Mapping[str, Any]) -> None:
        self.inner.restore(state)

    def __getattr__(self, attr: str) -> Any:
        # What tests and tools ask of the component itself (its latches, its reads) is the inner one's.
        if attr == "inner":
            raise AttributeError(attr)
        return getattr(self.inner, attr)


def rename_spec(spec: TagSpec, prefix: str) -> TagSpec:
    return TagSpec(
        prefix + spec.name, spec.type, spec.unit, spec.direction, spec.default, spec.stale_after_s, spec.description
    )


def evse_of(name: str) -> int | None:
    """The EVSE number a site tag belongs to (``evse12.ev.soc`` -> 12), None for a site tag."""
    if not name.startswith("evse"):
        return None
    head = name.split(".", 1)[0][4:]
    return int(head) if head.isdigit() else None


def substitute(value: Any, n: int) -> Any:
    """``${id}`` in a template's params: a string that is exactly ``${id}`` becomes the number, one that
    contains it gets the number written in (a port, a unit id, a file name per charger)."""
    if isinstance(value, str):
        if value == "${id}":
            return n
        return value.replace("${id}", str(n))
    if isinstance(value, dict):
        return {k: substitute(v, n) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, n) for v in value]
    return value


def merge(base: Any, over: Any) -> Any:
    """A per-EVSE override laid over the template's params: mappings merge key by key, anything else
    (a number, a list) replaces."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            out[k] = merge(base.get(k), v) if k in base else v
        return out
    return over


def prefix_device_params(params: dict[str, Any], prefix: str) -> dict[str, Any]:
    """A per-EVSE device declares its tags under the prefix: every Modbus unit gets it in front of its own
    ``prefix`` (the drivers' existing naming), so ``grid.voltage`` of charger 3 is ``evse3.grid.voltage``.
    ValueError for a device whose tags cannot be prefixed that way."""
    if "units" not in params and isinstance(params.get("prefix"), str):
        return {**params, "prefix": prefix + params["prefix"]}  # a device naming its tags by its own prefix (secc)
    units = params.get("units")
    if not isinstance(units, list) or not all(isinstance(u, dict) for u in units):
        raise ValueError(
            "a per-EVSE device is a Modbus device (units: [...]), its tags prefixed per unit, or names them by "
            "its own prefix (prefix: ...)"
        )
    return {**params, "units": [{**u, "prefix": prefix + str(u.get("prefix", ""))} for u in units]}


# One character per EVSE in the runner's status line (docs/depot.md "The status line").
STATE_CHARS = {"trip": "!", "blind": "?", "charge": "C", "charge_cut": "c", "discharge": "D", "discharge_cut": "d"}
IDLE = "."


def evse_state(img: Image, n: int) -> str:
    """What one EVSE is doing, as committed: tripped first, then blind (its measured power not good), then
    the sign of its set point, and whether the allocator cut it."""
    p = prefix_of(n)
    if img.value(p + "safety.trip"):
        return STATE_CHARS["trip"]
    if not img.good(p + "inverter.power"):
        return STATE_CHARS["blind"]
    sp = img.value(p + "inverter.setpoint", 0.0) or 0.0
    if sp == 0:
        return IDLE
    cut = bool(img.value(p + "alloc.cut"))
    return STATE_CHARS[("charge" if sp > 0 else "discharge") + ("_cut" if cut else "")]


def depot_status(img: Image, ids: list[int]) -> str:
    """The site's totals and every EVSE in one line: ``evses=CCcc.!?`` (one character each, in ``ids``
    order), the trips by code with the EVSEs that have them, the site meter, and the sums of the set
    points and of the measured power (kW, + charging)."""
    states = "".join(evse_state(img, n) for n in ids)
    trips: dict[str, list[int]] = {}
    for n in ids:
        code = img.value(prefix_of(n) + "safety.trip")
        if code:
            trips.setdefault(str(code), []).append(n)
    trip = (
        " ".join(
            f"{code}({'all' if len(who) == len(ids) else ','.join(map(str, who))})"
            for code, who in sorted(trips.items())
        )
        or "-"
    )
    sp = sum(img.value(prefix_of(n) + "inverter.setpoint", 0.0) or 0.0 for n in ids)
    meas = [img.value(prefix_of(n) + "inverter.power") for n in ids]
    power = f"{sum(m for m in meas if m is not None) / 1000:+.1f}kW" + ("" if None not in meas else "?")

    def site(name: str, fmt: str) -> str:
        v = img.value(name)
        return "-" if v is None else fmt.format(v)

    return (
        f"evses={states} trip={trip} grid={site('meter.power', '{:.0f}')}W "
        f"V={site('meter.voltage', '{:.1f}')} f={site('meter.frequency', '{:.2f}')} "
        f"sp={sp / 1000:+.1f}kW P={power}"
    )
