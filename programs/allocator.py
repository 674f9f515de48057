"""The depot allocator: shares the grid connection among the EVSEs every cycle, by departure urgency.

Each EVSE's request is what its own mode machine and dispatch wrote this cycle (``evse<n>.inverter.setpoint``;
per-EVSE programs run before the site's, runtime/site.py). The connection's budget is the import and export
limit (site file, lowered by the back office or the local API through shared tags: the lowest good one) less
the building load measured at the site meter, less a margin; the connection interlock (safety/connection.py)
checks the hard limits again afterwards with its own arithmetic. When the requests do not fit:

- import (charging) is cut in two rounds: first every charging EVSE gets what its departure needs (energy
  still needed, in grid W: divided by the charge efficiency, over the time left: the urgency), most urgent
  first, as far as the budget goes; then what is left is shared pro rata to the rest of each request. So a
  departure is never cut below its need while the connection allows it, and nobody is starved for an equal
  claim;
- export (discharging) is cut most urgent first: the EV that needs its energy soonest stops giving first;
- a failed EVSE (its interlock tripped, or its measured power not good: comms lost) is taken out: set point
  0 and no share, so the others get what it had.

A request is only ever reduced toward 0, never turned around. Each EVSE says whether and why it was cut
(``evse<n>.alloc.cut``) and what it got (``evse<n>.alloc.granted_w``); a change of who is cut is an event.
Departure and target come per EVSE where the site has them (``evse<n>.ev.departure_s``, seconds until the EV
leaves, as ISO 15118-20 reports DepartureTime; ``evse<n>.ev.target_soc``): from the charger's map, or shared
tags of the fleet plan or back office. Without them (or while they are not good) an EVSE's urgency is 0.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Annotated

from pydantic import Field, model_validator

from runtime.api import EVSES_OUT, Cycle, Params, Program, SiteInfo, TagName, register_program
from runtime.tags import Direction, Image, Quality, TagSpec, TagType

MAX_W = 1e8  # 100 MW: far beyond any EV depot's service, small enough to stay a finite, checked number
EvseId = Annotated[int, Field(ge=1, le=999)]


class AllocatorParams(Params):
    import_limit_w: float = Field(ge=0, le=MAX_W, description="service rating, import (W)")
    export_limit_w: float = Field(ge=0, le=MAX_W, description="export allowed by the interconnection agreement (W)")
    import_limit_tags: list[TagName] = Field(
        default_factory=list,
        max_length=16,
        description="lower import limits from outside (W magnitudes: the back office's ocpp.connection_import_w, "
        "the local API's local.connection_import_w); the lowest good one binds, never above import_limit_w",
    )
    export_limit_tags: list[TagName] = Field(default_factory=list, max_length=16, description="likewise for export")
    charge_efficiency: float = Field(
        0.95,
        gt=0,
        le=1,
        description="grid to battery, for a departure's need in grid W (the EV's charger and battery: the plan's "
        "efficiency_charge)",
    )
    margin_w: float = Field(
        0.0, ge=0, le=MAX_W, description="kept free below each limit (meter lag, a building step between reads)"
    )
    building_max_w: float | None = Field(
        None,
        ge=0,
        le=MAX_W,
        description="building import assumed while the meter is not good; default: the import limit",
    )
    meter_power_tag: TagName = Field("meter.power", description="site meter at the PCC, import-positive (W)")
    evses: list[EvseId] = Field(
        default_factory=list,
        max_length=200,
        description="EVSE ids served; filled from evses: when omitted; [] = the site's one charger",
    )
    setpoint_tag: TagName = "inverter.setpoint"
    power_tag: TagName = Field("inverter.power", description="the EVSE's measured power, charge-positive (W)")
    soc_tag: TagName = "ev.soc"
    capacity_tag: TagName = Field("ev.capacity_wh", description="the EV's usable energy (Wh), from its charger")
    trip_tag: TagName = Field("safety.trip", description="the EVSE's own interlock's trip code: non-empty = out")
    departure_tag: TagName | None = Field(
        "ev.departure_s",
        description="seconds until the EV leaves (ISO 15118-20 DepartureTime, or the fleet schedule); optional",
    )
    target_tag: TagName | None = Field("ev.target_soc", description="SoC the EV wants at departure; optional")

    @model_validator(mode="after")
    def _distinct(self) -> AllocatorParams:
        if len(set(self.evses)) != len(self.evses):
            raise ValueError("evses lists an EVSE twice")
        return self


def evses_out(img: Image) -> frozenset[int]:
    """The EVSEs the back office or the operator took out of service (``runtime.evses_out``, a JSON list the
    runner feeds from the engine's availability). Unreadable means none: the engine's hold still keeps such an
    EVSE at 0 W, this only decides whether the others may use its share."""
    try:
        ids = json.loads(img.value(EVSES_OUT) or "[]")
    except (TypeError, ValueError):
        return frozenset()
    return frozenset(n for n in ids if isinstance(n, int)) if isinstance(ids, list) else frozenset()


def evse_tag(n: int | None, name: str) -> str:
    """The site name of EVSE n's tag; ``None`` is the one charger of a site without ``evses:``."""
    return name if n is None else f"evse{n}.{name}"


@dataclass(frozen=True, slots=True)
class Budget:
    """What the EVSEs together may draw now: ``low <= sum(set points) <= high`` (W, charge-positive), and
    how much more import (``room_import``) and export (``room_export``) the meter shows free right now."""

    high: float
    low: float
    import_limit_w: float
    export_limit_w: float
    room_import: float = 0.0
    room_export: float = 0.0
    import_from: str = "site file"  # which limit binds: the site file, or the tag that lowered it
    export_from: str = "site file"


def lowest_limit(img: Image, tags: list[str], own: float, *, export: bool = False) -> tuple[float, str]:
    """(limit W, where it comes from): the site file's rating, lowered by every limit from outside (the back
    office's, the local API's), never raised. A good tag binds with its value. A tag that had a value and is
    no longer good (link down, its task dead: stale) keeps binding as the external-limit rule says (docs/
    safety.md): its last value for import, 0 W for export. A tag that never had a finite magnitude >= 0 (no
    task of the site publishes it) is ignored: the rating, the service's own breaker, stays."""
    limit, source = own, "site file"
    for tag in tags:
        tv = img.tag(tag)
        v = tv.value
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
            continue
        if tv.quality is not Quality.GOOD:
            v, tag = (0.0 if export else v), f"{tag}, last value: stale"
        if v < limit:
            limit, source = float(v), tag
    return limit, source


def budget(img: Image, p: AllocatorParams, evses: list[int | None]) -> Budget:
    """The connection less the building (meter - EVSEs) and the margin; a meter not good is doubt."""
    imp, imp_from = lowest_limit(img, p.import_limit_tags, p.import_limit_w)
    exp, exp_from = lowest_limit(img, p.export_limit_tags, p.export_limit_w, export=True)
    meter = img.value(p.meter_power_tag)
    if meter is None:  # no room can be seen: what the assumed building leaves beside last cycle's set points
        hi_b, lo_b = (p.import_limit_w if p.building_max_w is None else p.building_max_w), 0.0
        high, low = imp - p.margin_w - hi_b, -(exp - p.margin_w) - lo_b
        now = sum(img.value(evse_tag(n, p.setpoint_tag), 0.0) for n in evses)
        return Budget(high, low, imp, exp, high - now, now - low, imp_from, exp_from)
    hi_b = lo_b = float(meter) - sum(img.value(evse_tag(n, p.power_tag), 0.0) for n in evses)
    room_import = imp - p.margin_w - float(meter)
    room_export = exp - p.margin_w + float(meter)
    high, low = imp - p.margin_w - hi_b, -(exp - p.margin_w) - lo_b
    return Budget(high, low, imp, exp, room_import, room_export, imp_from, exp_from)


OUT_GRANTED, OUT_CUT = "alloc.granted_w", "alloc.cut"
OUT_HIGH, OUT_LOW = "alloc.budget_high_w", "alloc.budget_low_w"


@dataclass(slots=True)
class Claim:
    evse: int | None
    request: float  # W signed, as dispatch asked
    need: float  # W >= 0 the departure needs now (urgency)
    out: str = ""  # why it is out of service, "" when in
    granted: float = 0.0
    cut: str = ""
    before: float = 0.0  # W signed, the set point committed last cycle


def departure_need(img: Image, p: AllocatorParams, n: int | None, dt_s: float) -> float:
    """Grid W the EV must take from now on average to leave at its target SoC: the allocator's urgency. The
    energy the battery lacks is divided by the charge efficiency: the connection carries the losses too."""
    soc = img.value(evse_tag(n, p.soc_tag))
    cap = img.value(evse_tag(n, p.capacity_tag))
    dep = img.value(evse_tag(n, p.departure_tag)) if p.departure_tag else None
    target = img.value(evse_tag(n, p.target_tag)) if p.target_tag else None
    if soc is None or cap is None or dep is None or target is None:
        return 0.0
    energy_wh = max(0.0, (float(target) - float(soc)) * float(cap))
    if energy_wh <= 0.0:
        return 0.0
    left_s = max(float(dep), dt_s)  # due now and still short: all of it, now
    return energy_wh / p.charge_efficiency * 3600.0 / left_s


def share_import(claims: list[Claim], room: float) -> None:
    """Charging requests into ``room`` W: departure needs first (most urgent first), the rest pro rata."""
    charging = [c for c in claims if c.request > 0]
    if sum(c.request for c in charging) <= room:
        for c in charging:
            c.granted = c.request
        return
    room = max(0.0, room)
    for c in sorted(charging, key=lambda c: (-c.need, c.evse or 0)):
        c.granted = min(c.request, c.need, room)
        room -= c.granted
    rest = sum(c.request - c.granted for c in charging)
    f = 0.0 if rest <= 0 else min(1.0, room / rest)
    for c in charging:
        c.granted += (c.request - c.granted) * f
        if c.granted < c.request:
            c.cut = "import"


def share_export(claims: list[Claim], room: float) -> None:
    """Discharging requests (W < 0) into ``room`` W of export: the least urgent keep theirs longest."""
    discharging = [c for c in claims if c.request < 0]
    room = max(0.0, room)
    for c in sorted(discharging, key=lambda c: (c.need, c.evse or 0)):
        c.granted = -min(-c.request, room)
        room += c.granted
        if c.granted > c.request:
            c.cut = "export"


def allocate(claims: list[Claim], b: Budget) -> None:
    """Fill ``granted`` and ``cut`` of every claim so that ``b.low <= sum(granted) <= b.high`` where the
    requests allow it (only reductions toward 0)."""
    live = [c for c in claims if not c.out]
    for c in claims:
        if c.out:
            c.granted, c.cut = 0.0, "out"
    discharge = sum(c.request for c in live if c.request < 0)
    share_import(live, b.high - discharge)
    charge = sum(c.granted for c in live if c.request > 0)
    share_export(live, charge - b.low)
    rise_into_room(live, b)


def rise_into_room(claims: list[Claim], b: Budget) -> None:
    """Break before make: a cut acts at once, but the EVSEs' rises together take only the room the meter
    shows free now. Set points reach the chargers over separate links at different times; if one EVSE
    rose while another's cut was still on its way, the connection would see both. The room a cut frees
    is seen at the meter a read later, and then given."""
    for sign, room in ((1.0, b.room_import), (-1.0, b.room_export)):
        rises = {id(c): max(0.0, sign * c.granted - max(0.0, sign * c.before)) for c in claims if sign * c.granted > 0}
        total = sum(rises.values())
        if total <= max(0.0, room):
            continue
        f = max(0.0, room) / total
        for c in claims:
            r = rises.get(id(c), 0.0)
            if r > 0.0:
                c.granted = sign * (max(0.0, sign * c.before) + r * f)
                c.cut = c.cut or ("import" if sign > 0 else "export")


@register_program("allocator")
class Allocator(Program):
    """Shares the grid connection among the EVSEs each cycle, departure needs first (docs/depot.md). List it
    after every program that writes a set point; the ``connection_limit`` interlock checks it last."""

    Params = AllocatorParams
    params: AllocatorParams

    def __init__(self, name: str, params: AllocatorParams, site: SiteInfo):
        super().__init__(name, params, site)
        self._evses: list[int | None] = list(params.evses) if params.evses else [None]
        self._cuts: dict[int | None, str] = {}

    def declare(self) -> list[TagSpec]:
        m = Direction.MEMORY
        specs = [
            TagSpec(OUT_HIGH, TagType.FLOAT, "W", m, 0.0, description="most the EVSEs together may draw now"),
            TagSpec(OUT_LOW, TagType.FLOAT, "W", m, 0.0, description="least (most negative) they may draw now"),
        ]
        for n in self._evses:
            specs += [
                TagSpec(evse_tag(n, OUT_GRANTED), TagType.FLOAT, "W", m, 0.0, description="set point allowed, W"),
                TagSpec(evse_tag(n, OUT_CUT), TagType.STR, "", m, "", description="why it got less than asked"),
            ]
        return specs

    def requires(self) -> list[str]:
        p = self.params
        tags = [p.meter_power_tag]  # the limit tags are optional: one no task provides never lowers the rating
        for n in self._evses:
            tags += [evse_tag(n, t) for t in (p.setpoint_tag, p.power_tag, p.soc_tag, p.capacity_tag, p.trip_tag)]
        return tags

    def claims(self, cx: Cycle) -> list[Claim]:
        p, img, out = self.params, cx.inputs, cx.out
        claims = []
        held = evses_out(img)
        for n in self._evses:
            trip = out.get(evse_tag(n, p.trip_tag)) or ""  # this cycle's verdict if its interlock ran, else last
            why = f"tripped ({trip})" if trip else ""
            if not why and n in held:
                why = "held by command (availability)"  # the engine holds it at 0 W: the others share its room
            if not why and not img.good(evse_tag(n, p.power_tag)):
                why = "no measurement (comms lost)"
            request = float(out[evse_tag(n, p.setpoint_tag)])
            before = img.value(evse_tag(n, p.setpoint_tag), 0.0)  # as committed last cycle
            claims.append(Claim(n, request, departure_need(img, p, n, cx.dt), why, before=float(before)))
        return claims

    def scan(self, cx: Cycle) -> None:
        p, out = self.params, cx.out
        b = budget(cx.inputs, p, self._evses)
        claims = self.claims(cx)
        allocate(claims, b)
        out[OUT_HIGH] = b.high
        out[OUT_LOW] = b.low
        for c in claims:
            sp = evse_tag(c.evse, p.setpoint_tag)
            if c.granted != c.request:
                out[sp] = c.granted
            out[evse_tag(c.evse, OUT_GRANTED)] = c.granted
            text = _explain(c, b)
            out[evse_tag(c.evse, OUT_CUT)] = text
            if self._cuts.get(c.evse, "") != c.cut:
                self._cuts[c.evse] = c.cut
                who = "the site's charger" if c.evse is None else f"EVSE {c.evse}"
                cx.event("limit", f"{who}: {text}" if c.cut else f"{who}: no longer cut", evse=c.evse, cut=c.cut)


def _explain(c: Claim, b: Budget) -> str:
    """Stable while the cause lasts (the numbers that move each cycle are in ``alloc.granted_w``)."""
    if c.cut == "out":
        return f"out of service: {c.out}"
    if c.cut == "import":
        return f"import limit {b.import_limit_w:.0f} W ({b.import_from}) reached: charging cut (departure need first)"
    if c.cut == "export":
        return (
            f"export limit {b.export_limit_w:.0f} W ({b.export_from}) reached: discharging cut (most urgent EV first)"
        )
    return ""
