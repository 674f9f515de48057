"""The fleet plan task: one joint plan for every EV of a depot, published per EVSE as ``evse<n>.plan.*``.

Why a task and not one planner per EVSE: the connection is shared, so the plans are one problem
(programs/planner/fleet.py). It runs in the task process like the single-site planner task
(runtime/tasks/planner_task.py) and publishes the same tag names with the same meaning under each EVSE's
prefix, so each EVSE's ``modes`` and ``dispatch`` read their own plan unchanged through the renaming view
(runtime/evses.py): ``evse<n>.plan.power`` (W, positive into the EV), ``plan.soc_target``,
``plan.interval_end`` (s on the cycle clock), ``plan.price``, ``plan.reserve_soc``.

Reads from the scan's image: the price curve (``prices.day_ahead``, ``prices.updated``, as the planner
task), the site meter and every EVSE's ``inverter.power`` (the building now = meter less the chargers),
and per EVSE ``ev.connected``, ``ev.soc``, ``ev.capacity_wh``, ``ev.departure_s`` (seconds left, as
ISO 15118-20 DepartureTime) and ``ev.target_soc``.

Re-plans (``FleetPlanner.reason``) on: no plan yet, new prices, a changed connection limit (the lowest
good of the site file's and the limit tags, as the allocator takes it), an arrival or a departure (the set of
connected EVs with a known SoC changes), a departure time that moved by more than ``departure_shift_s``,
drift (an EV's SoC more than ``drift_soc`` from what its plan expects now) or an EV below its departure
reserve that its plan expected above it (both at most every ``min_drift_replan_s``), and a plan with less
than an hour left. The reserve (``reserve_kwh``) is the rule that departures are met by.

Without a plan (no usable prices, a failed solve) every EVSE's ``plan.power`` and ``plan.reserve_soc`` are
written bad: each EVSE's mode machine then takes its fallback (charge to ``fallback_soc``, never
discharge, docs/modes.md "Without a planner"), and the allocator shares the connection by departure
urgency. A dead task leaves the same: its tags go stale after ``stale_after_s``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field, model_validator

from programs.allocator import lowest_limit
from runtime.api import Params, SiteInfo, TagName
from runtime.evses import prefix_of
from runtime.tags import US, Direction, Image, Quality, TagSpec, TagType
from runtime.tasks.base import Task, TaskContext, register_task
from runtime.tasks.planner_task import contiguous_from, parse_curve, prices_key

if TYPE_CHECKING:
    from programs.planner.fleet import FleetEv, FleetInput, FleetPlan

UTC = dt.UTC
MAX_W = 1e8  # as the allocator: far beyond any depot's service, finite and checked
EvseId = Annotated[int, Field(ge=1, le=999)]
Write = tuple[str, Any, Quality]
STEP_S = 900  # the plan's finest interval need not be finer than the quarter-hour a market settles
PLAN_TAGS = ("plan.power", "plan.soc_target", "plan.interval_end", "plan.price", "plan.reserve_soc")


class FleetTaskParams(Params):
    evses: list[EvseId] = Field(
        default_factory=list,
        max_length=200,
        description="EVSE ids planned; filled from the site's evses: when omitted (a site of one charger has "
        "the planner task instead)",
    )
    import_limit_w: float = Field(ge=0, le=MAX_W, description="service rating, import (W), as the allocator's")
    export_limit_w: float = Field(ge=0, le=MAX_W, description="export limit (W), as the allocator's")
    import_limit_tags: list[TagName] = Field(
        default_factory=list,
        max_length=16,
        description="lower import limits from outside, as the allocator's: the lowest good one is planned with, "
        "and a change re-plans",
    )
    export_limit_tags: list[TagName] = Field(default_factory=list, max_length=16, description="likewise for export")
    margin_w: float = Field(3000.0, ge=0, le=MAX_W, description="kept free below each limit in the plan")
    building_w: list[tuple[str, Annotated[float, Field(ge=-MAX_W, le=MAX_W)]]] | None = Field(
        None,
        description='the building\'s forecast by local time of day, [["HH:MM", W], ...] from 00:00; the current '
        "interval takes the larger of it and the meter's reading, every interval the larger of its own and the "
        "next's. None: the meter's reading now, held",
    )
    capacity_kwh: float = Field(60.0, gt=0, le=10_000, description="EV energy when ev.capacity_wh is not good")
    soc_min: float = Field(0.2, ge=0, le=1, description="plan no lower (the modes program's soc_min)")
    soc_max: float = Field(0.9, ge=0, le=1, description="plan no higher (the modes program's soc_max)")
    target_soc: float = Field(0.8, ge=0, le=1, description="departure SoC when ev.target_soc is not good")
    # Two ways a van stops below its plan without the plan seeing it, 0.01 each: ISO 15118-2 reports the SoC
    # in whole percent (one reading), and dispatch's SoC correction ignores an error within its soc_deadband
    # (0.01). Each 0.01 costs about 0.075 of perfect foresight on the example depot (docs/depot.md).
    target_margin_soc: float = Field(0.02, ge=0, le=0.2, description="planned above each departure's target")
    max_charge_w: float = Field(11_000.0, ge=0, le=1e6, description="per charger, grid side")
    max_discharge_w: float = Field(11_000.0, ge=0, le=1e6, description="per charger, grid side")
    efficiency_charge: float = Field(0.95, gt=0, le=1)
    efficiency_discharge: float = Field(0.95, gt=0, le=1)
    degradation_cost_per_mwh: float = Field(20.0, ge=0, le=10_000)
    prices_tag: TagName = "prices.day_ahead"
    updated_tag: TagName | None = Field("prices.updated", description="revision counter of the price feed")
    meter_power_tag: TagName = "meter.power"
    power_tag: TagName = "inverter.power"
    connected_tag: TagName = "ev.connected"
    soc_tag: TagName = "ev.soc"
    capacity_tag: TagName = Field("ev.capacity_wh", description="the EV's nameplate energy (Wh)")
    soh_tag: TagName | None = Field("ev.soh", description="its state of health: usable = nameplate x SoH")
    departure_tag: TagName = Field("ev.departure_s", description="seconds until the EV leaves")
    target_tag: TagName = "ev.target_soc"
    headroom: float = Field(
        0.1,
        ge=0,
        le=0.5,
        description="share of each charger's rating the plan leaves unused (ramps, a correction; a van that "
        "needs its whole rating gets it), and share of the connection's room the departure reserves leave "
        "free for catching up a van the allocator cut",
    )
    max_horizon_h: float = Field(48.0, gt=0, le=24 * 14)
    # Tighter than the single-EV planner's 0.05: at a depot the allocator cuts one van for another's SoC
    # correction, so a van falls behind its plan without anything else telling the plan.
    drift_soc: float = Field(0.02, gt=0, le=1, description="re-plan when an EV's SoC is this far from its plan")
    min_drift_replan_s: float = Field(60.0, ge=0, le=86_400, description="drift re-plans at most this often")
    departure_shift_s: float = Field(900.0, gt=0, le=86_400, description="re-plan when a departure moves this far")
    time_limit_s: float = Field(10.0, gt=0, le=600)
    heartbeat_s: float = Field(60.0, gt=0, le=3600, description="rewrite the plan tags at least this often")
    stale_after_s: float = Field(300.0, gt=0, le=3600, description="age limit of the plan tags")

    @model_validator(mode="after")
    def _check(self) -> FleetTaskParams:
        if self.heartbeat_s * 2 > self.stale_after_s:
            raise ValueError("heartbeat_s must be at most half of stale_after_s (the plan tags would go stale)")
        if not self.soc_min < self.soc_max:
            raise ValueError("need soc_min < soc_max")
        if not self.evses:
            raise ValueError("the fleet plan needs a depot's EVSEs (evses: in the site file, or this list)")
        if len(set(self.evses)) != len(self.evses):
            raise ValueError("evses lists an EVSE twice")
        for hhmm, _ in self.building_w or []:
            _minutes(hhmm)
        return self


def _minutes(hhmm: str) -> int:
    try:
        h, m = (int(x) for x in hhmm.split(":"))
    except ValueError:
        raise ValueError(f"building_w: {hhmm!r} is not HH:MM") from None
    if not (0 <= h < 24 and 0 <= m < 60):
        raise ValueError(f"building_w: {hhmm!r} is not a time of day")
    return 60 * h + m


@dataclass(frozen=True)
class Ev:
    """One connected EV as the image shows it."""

    evse: int
    soc: float
    capacity_kwh: float
    departure_at_s: float | None  # on the cycle clock; None: the EV did not say
    target_soc: float


@dataclass
class Planned:
    """A solved plan and what it was solved from."""

    start: dt.datetime  # UTC, start of interval 0
    step_s: int
    prices: list[float]
    evs: list[Ev]  # in the plan's row order
    plan: FleetPlan
    key: str
    at_us: int  # cycle clock when solved
    reserve: dict[int, list[float | None]]  # EVSE -> plan.reserve_soc per interval
    connection_kw: tuple[float, float]  # (import, export) the plan was solved for, margin taken off

    def index(self, now: dt.datetime) -> int | None:
        i = math.floor((now - self.start).total_seconds() / self.step_s)
        return i if 0 <= i < len(self.prices) else None

    def expected_soc(self, j: int, now: dt.datetime) -> float | None:
        """EV j's SoC the plan expects now (linear within the interval)."""
        i = self.index(now)
        if i is None:
            return None
        e = self.plan.energy_kwh[j]
        before = self.evs[j].soc * self.evs[j].capacity_kwh if i == 0 else e[i - 1]
        frac = ((now - self.start).total_seconds() - i * self.step_s) / self.step_s
        return float(before + frac * (e[i] - before)) / self.evs[j].capacity_kwh


def reserve_kwh(evs: list[FleetEv], known: list[bool], room_kw: Any, dt_h: float) -> list[Any]:
    """Each EV's departure reserve (kWh at the end of each interval until it leaves; None for an EV whose
    departure is not ``known``): its need less what its fair share of the connection still brings before
    it leaves. Its fair share in an interval is its rating or its part of the import room (``room_kw``)
    among the EVs connected then, in proportion to the energy each still needs, whichever is less.

    Why this is the rule the departures rest on: if every van is at or above its reserve, all charging at
    their fair shares at once fits the connection and meets every departure, whatever the prices. So the
    plan keeps each van there (the LP's floor) and the modes program never discharges a van at or below
    it; a van that the allocator cut below it is charged first at the next plan (the floor's cost beats
    any price spread), and crossing it is a re-plan trigger (``FleetPlanner.reason``)."""
    import numpy as np

    room = np.maximum(0.0, np.asarray(room_kw, dtype=float))
    # in proportion to the energy each still needs: the reserves then bind together, as late as the room
    # allows, not the neediest van's first (equal shares: 20-van day 0.42 of perfect foresight, this 0.49)
    gap = [max(0.0, float(fe.need_kwh.max()) - fe.e0_kwh) + 1e-3 for fe in evs]
    total = np.maximum(1e-9, np.sum([g * fe.connected for g, fe in zip(gap, evs, strict=True)], axis=0))
    out: list[Any] = []
    for fe, k, g in zip(evs, known, gap, strict=True):
        if not k:
            out.append(None)
            continue
        gain = np.minimum(fe.max_charge_kw, room * g / total) * fe.eta_c * dt_h * fe.connected
        later = np.concatenate([np.cumsum(gain[::-1])[::-1][1:], [0.0]])  # what the intervals after each bring
        leave = int(np.flatnonzero(fe.connected)[-1])
        out.append(np.where(fe.connected, fe.need_kwh[leave] - later, 0.0))
    return out


class FleetPlanner:
    """The task's logic without its loop: what to plan, when to re-plan, what to publish. The backtest
    (backtest/depot.py) drives it synchronously beside the engine; the task awaits the solve in a thread."""

    def __init__(self, p: FleetTaskParams):
        self.p = p
        self.planned: Planned | None = None
        self.failed: str | None = None  # why there is no usable plan (published as fleet.status)
        self.failed_key: tuple[str, frozenset[int]] | None = None
        self.last_drift_us = -(10**18)
        self.limits_w = (p.import_limit_w, p.export_limit_w)  # the connection's, as the image showed it last

    def connection_kw(self) -> tuple[float, float]:
        """(import, export) kW the plan may use: the limits less the margin (the allocator's)."""
        imp, exp = self.limits_w
        return max(0.0, imp - self.p.margin_w) / 1000.0, max(0.0, exp - self.p.margin_w) / 1000.0

    # -- reading the image -----------------------------------------------------------------------
    def _tag(self, n: int, name: str) -> str:
        return prefix_of(n) + name

    def evs(self, img: Image, now_s: float) -> list[Ev]:
        """Every EVSE with an EV plugged in and a good SoC."""
        p, out = self.p, []
        for n in p.evses:
            soc = img.value(self._tag(n, p.soc_tag))
            if img.value(self._tag(n, p.connected_tag)) is not True or soc is None:
                continue
            cap = img.value(self._tag(n, p.capacity_tag))
            soh = img.value(self._tag(n, p.soh_tag)) if p.soh_tag else None
            if cap and soh:
                cap = float(cap) * min(1.0, max(0.0, float(soh)))
            dep = img.value(self._tag(n, p.departure_tag))
            tgt = img.value(self._tag(n, p.target_tag))
            out.append(
                Ev(
                    n,
                    min(1.0, max(0.0, float(soc))),
                    float(cap) / 1000.0 if cap else p.capacity_kwh,
                    None if dep is None else now_s + max(0.0, float(dep)),
                    p.target_soc if tgt is None else min(p.soc_max, max(0.0, float(tgt))),
                )
            )
        return out

    def building_now_w(self, img: Image) -> float | None:
        meter = img.value(self.p.meter_power_tag)
        if meter is None:
            return None
        return float(meter) - sum(float(img.value(self._tag(n, self.p.power_tag), 0.0) or 0.0) for n in self.p.evses)

    def curve(self, img: Image, tz: dt.tzinfo | None) -> tuple[list, str]:
        """The price curve and its key; ValueError when there is none to plan with."""
        p = self.p
        raw = img.value(p.prices_tag)
        if raw is None:
            tv = img._d.get(p.prices_tag)
            raise ValueError(f"{p.prices_tag} is not good ({'missing' if tv is None else tv.quality.value})")
        curve = parse_curve(raw)
        if tz is None:
            curve = [(s.replace(tzinfo=None), e.replace(tzinfo=None), v) for s, e, v in curve]
        rev = img.value(p.updated_tag) if p.updated_tag else None
        return curve, prices_key("revision", rev) if rev is not None else prices_key(curve)

    # -- deciding --------------------------------------------------------------------------------
    def reason(self, now: dt.datetime, now_us: int, evs: list[Ev], key: str) -> str | None:
        """Why to re-plan now, or None to keep the plan (the module's docstring lists the triggers)."""
        pl = self.planned
        if pl is None:
            if self.failed_key == (key, frozenset(e.evse for e in evs)):
                return None  # the same problem failed already: wait for something to change
            return "no plan"
        if key != pl.key:
            return "new prices"
        if self.connection_kw() != pl.connection_kw:
            imp_kw, exp_kw = self.connection_kw()
            return f"connection limit changed: import {imp_kw:.1f} kW, export {exp_kw:.1f} kW (less the margin)"
        i = pl.index(now)
        if i is None or (len(pl.prices) - i) * pl.step_s < 3600:
            return "plan runs out"
        before = {e.evse: e for e in pl.evs}
        now_set = {e.evse for e in evs}
        if arrived := sorted(now_set - set(before)):
            return "arrival: " + ", ".join(f"evse{n}" for n in arrived)
        if left := sorted(set(before) - now_set):
            return "departure: " + ", ".join(f"evse{n}" for n in left)
        for e in pl.evs:
            cur = next(x for x in evs if x.evse == e.evse)
            a, b = e.departure_at_s, cur.departure_at_s
            if (a is None) != (b is None) or (
                a is not None and b is not None and abs(a - b) > self.p.departure_shift_s
            ):
                return f"departure of evse{e.evse} moved"
        if now_us - self.last_drift_us >= self.p.min_drift_replan_s * US:
            for j, e in enumerate(pl.evs):
                cur = next(x for x in evs if x.evse == e.evse)
                exp = pl.expected_soc(j, now)
                res = pl.reserve[e.evse][i - 1] if i > 0 else None  # the reserve at this interval's start
                if res is not None and exp is not None and cur.soc < res <= exp:
                    self.last_drift_us = now_us
                    return f"evse{e.evse} below its reserve: SoC {cur.soc:.3f}, reserve {res:.3f}"
                if exp is not None and abs(cur.soc - exp) > self.p.drift_soc:
                    self.last_drift_us = now_us
                    return f"drift of evse{e.evse}: SoC {cur.soc:.3f}, plan {exp:.3f}"
        return None

    def problem(
        self, now: dt.datetime, now_s: float, local: dt.datetime, curve: list, evs: list[Ev], building_w: float | None
    ) -> tuple[FleetInput, dt.datetime, int, list[float]]:
        """The fleet LP for now: intervals from the one holding ``now``; each EV connected until its
        departure (an EV that did not say is planned to charge now, never discharge: its target at the
        earliest interval full power reaches it); the building by the forecast."""
        import numpy as np

        from programs.planner.fleet import FleetEv, FleetInput

        p = self.p
        start, step_s, prices = contiguous_from(curve, now, dt.timedelta(hours=p.max_horizon_h))
        if not prices:
            raise ValueError("no price interval of a usable length covers now")
        # Quarter-hours at least: an hour's interval would promise power in the part of it already gone,
        # and in the part after a van has left (each hourly price applies to its four quarters).
        if step_s > STEP_S and step_s % STEP_S == 0:
            k = step_s // STEP_S
            prices = [x for x in prices for _ in range(k)]
            step_s = STEP_S
            skip = int((now - start).total_seconds() // step_s)
            start += dt.timedelta(seconds=skip * step_s)
            prices = prices[skip:]
        n = len(prices)
        dt_h = step_s / 3600.0
        t0_s = now_s - (now - start).total_seconds()  # cycle-clock second of the plan's start
        out = []
        for e in evs:
            conn = np.zeros(n, dtype=bool)
            need = np.zeros(n)
            cap = e.capacity_kwh
            e_now = e.soc * cap
            dis = p.max_discharge_w / 1000.0
            if e.departure_at_s is None:
                gain = max(0.0, e.target_soc * cap - e_now) / (p.max_charge_w / 1000.0 * p.efficiency_charge or 1e-9)
                leave = min(n, max(1, math.ceil(gain / dt_h)))
                dis = 0.0
            else:  # the intervals that end before it leaves
                leave = min(n, max(1, math.floor((e.departure_at_s - t0_s) / step_s)))
            conn[:leave] = True
            # at departure, or at the horizon's end if it leaves later
            need[leave - 1] = min(p.soc_max, e.target_soc + p.target_margin_soc) * cap
            full = p.max_charge_w / 1000.0
            rate = full * (1.0 - p.headroom)
            if need[leave - 1] - e_now > rate * p.efficiency_charge * dt_h * leave:
                rate = full  # only the whole rating reaches it: no headroom for this van
            out.append(
                FleetEv(
                    e_now,
                    conn,
                    need,
                    p.soc_min * cap,
                    p.soc_max * cap,
                    rate,
                    dis,
                    p.efficiency_charge,
                    p.efficiency_discharge,
                )
            )
        building = self.building_kw(local, step_s, n, building_w)
        # The whole connection less the margin: a building step the forecast knows is in ``building`` a
        # quarter early, and the allocator's margin covers one between two reads. (10 % of it kept unused
        # here too cost the example depot 0.2 of perfect foresight: it forced the reserves' charging into
        # the dear evening hours; docs/depot.md "The share".)
        import_kw, export_kw = self.connection_kw()
        # the reserves from the plan's room less the headroom: vans at their reserves leave that share of it
        # free, for the plan to catch up a van the allocator cut
        known = [e.departure_at_s is not None for e in evs]
        floors = reserve_kwh(out, known, (import_kw - building) * (1.0 - p.headroom), dt_h)
        inp = FleetInput(
            np.asarray(prices, dtype=float),
            building,
            import_kw,
            export_kw,
            tuple(replace(fe, floor_kwh=f) for fe, f in zip(out, floors, strict=True)),
            dt_h,
            p.degradation_cost_per_mwh,
            p.time_limit_s,
        )
        return inp, start, step_s, prices

    def building_kw(self, local: dt.datetime, step_s: int, n: int, now_w: float | None) -> Any:
        import numpy as np

        prof = self.p.building_w
        if not prof:
            return np.full(n, (now_w or 0.0) / 1000.0)
        pts = sorted((_minutes(h), w) for h, w in prof)
        first = local - dt.timedelta(
            seconds=(local.minute * 60 + local.second) % step_s, microseconds=local.microsecond
        )
        out = np.empty(n)
        for i in range(n):
            t = first + dt.timedelta(seconds=i * step_s)
            m = t.hour * 60 + t.minute
            out[i] = next((w for at, w in reversed(pts) if at <= m), pts[-1][1]) / 1000.0
        if now_w is not None:
            out[0] = max(out[0], now_w / 1000.0)
        # A step up at an interval's start is planned for from the interval before: the chargers follow the
        # plan's new interval in the same scan as the building steps, and the meter shows the step a read
        # later, so without this the site would pass its limit by the step less the margin until then.
        out[:-1] = np.maximum(out[:-1], out[1:])
        return out

    def accept(
        self,
        inp: FleetInput,
        plan: FleetPlan,
        start: dt.datetime,
        step_s: int,
        prices: list[float],
        evs: list[Ev],
        key: str,
        now_us: int,
    ) -> None:
        if not plan.ok:
            self.planned, self.failed = None, plan.message
            self.failed_key = (key, frozenset(e.evse for e in evs))
            return
        self.failed = None
        reserve = self._reserve(inp, plan, evs)
        conn = (inp.import_limit_kw, inp.export_limit_kw)
        self.planned = Planned(start, step_s, prices, evs, plan, key, now_us, reserve, conn)

    def fail(self, why: str, key: str, evs: list[Ev]) -> None:
        self.planned, self.failed = None, why
        self.failed_key = (key, frozenset(e.evse for e in evs))

    def _reserve(self, inp: FleetInput, plan: FleetPlan, evs: list[Ev]) -> dict[int, list[float | None]]:
        """plan.reserve_soc per EV and interval: its floor in the plan (``reserve_kwh``) as SoC; none (bad:
        no discharge) for an EV that did not say when it leaves, or after it leaves."""
        out: dict[int, list[float | None]] = {}
        for e, fe in zip(evs, inp.evs, strict=True):
            if fe.floor_kwh is None:
                out[e.evse] = [None] * len(inp.price)
                continue
            out[e.evse] = [
                None if not c else min(1.0, max(self.p.soc_min, float(f) / e.capacity_kwh))
                for c, f in zip(fe.connected, fe.floor_kwh, strict=True)
            ]
        return out

    # -- publishing ------------------------------------------------------------------------------
    def writes(self, now: dt.datetime, now_s: float) -> list[Write]:
        """Every EVSE's plan tags for the interval holding ``now``, and the fleet's status."""
        p, pl = self.p, self.planned
        out: list[Write] = []
        i = None if pl is None else pl.index(now)
        rows = {} if pl is None else {e.evse: j for j, e in enumerate(pl.evs)}
        for n in p.evses:
            pre = prefix_of(n)
            j = rows.get(n)
            if pl is None or i is None:  # no plan: the fallback of each EVSE's mode machine
                out += [(pre + t, 0.0 if t == "plan.power" else None, Quality.BAD) for t in PLAN_TAGS]
                continue
            end_s = now_s + (pl.start + dt.timedelta(seconds=(i + 1) * pl.step_s) - now).total_seconds()
            if j is None:  # no EV (or none with a SoC): nothing planned for it
                out += [
                    (pre + "plan.power", 0.0, Quality.GOOD),
                    (pre + "plan.soc_target", None, Quality.BAD),
                    (pre + "plan.interval_end", end_s, Quality.GOOD),
                    (pre + "plan.price", float(pl.prices[i]), Quality.GOOD),
                    (pre + "plan.reserve_soc", None, Quality.BAD),
                ]
                continue
            cap = pl.evs[j].capacity_kwh
            res = pl.reserve[n][i]
            out += [
                (pre + "plan.power", float(pl.plan.power_kw()[j, i]) * 1000.0, Quality.GOOD),
                (pre + "plan.soc_target", float(pl.plan.energy_kwh[j, i]) / cap, Quality.GOOD),
                (pre + "plan.interval_end", end_s, Quality.GOOD),
                (pre + "plan.price", float(pl.prices[i]), Quality.GOOD),
                (pre + "plan.reserve_soc", res, Quality.GOOD if res is not None else Quality.BAD),
            ]
        if pl is None:
            out += [("fleet.status", "fallback", Quality.GOOD), ("fleet.reason", self.failed or "", Quality.GOOD)]
            out.append(("fleet.shortfall_kwh", None, Quality.BAD))
        else:
            out += [("fleet.status", "optimal", Quality.GOOD), ("fleet.reason", "", Quality.GOOD)]
            out.append(("fleet.shortfall_kwh", float(pl.plan.shortfall_kwh.sum()), Quality.GOOD))
        return out

    def signature(self, now: dt.datetime) -> tuple[int, int | None]:
        """Changes when the published values change: another plan, another interval."""
        pl = self.planned
        return (id(pl), None if pl is None else pl.index(now))

    # -- one step, synchronously (the backtest) ---------------------------------------------------
    def step(self, img: Image, local: dt.datetime, now_us: int) -> str | None:
        """Re-plan if needed, solving here; returns the reason when it re-planned."""
        from programs.planner.fleet import solve_fleet

        job = self.prepare(img, local, now_us)
        if job is None or isinstance(job, str):
            return job
        self.finish(job, solve_fleet(job[0]))
        return job[-1]

    def prepare(self, img: Image, local: dt.datetime, now_us: int) -> Any:
        """None (keep the plan), a reason string (the plan failed without a solve), or the job to solve:
        (input, start, step, prices, evs, key, now_us, reason)."""
        tz = local.tzinfo
        now = local.astimezone(UTC) if tz is not None else local
        now_s = now_us / US
        evs = self.evs(img, now_s)
        p = self.p
        self.limits_w = (
            lowest_limit(img, p.import_limit_tags, p.import_limit_w)[0],
            lowest_limit(img, p.export_limit_tags, p.export_limit_w, export=True)[0],
        )
        try:
            curve, key = self.curve(img, tz)
        except ValueError as exc:
            key = f"unusable:{exc}"
            if self.reason(now, now_us, evs, key) is None:
                return None
            self.fail(str(exc), key, evs)
            return str(exc)
        why = self.reason(now, now_us, evs, key)
        if why is None:
            return None
        try:
            inp, start, step_s, prices = self.problem(now, now_s, local, curve, evs, self.building_now_w(img))
        except ValueError as exc:
            self.fail(f"{why}: {exc}", key, evs)
            return f"{why}: {exc}"
        return (inp, start, step_s, prices, evs, key, now_us, why)

    def finish(self, job: Any, plan: FleetPlan) -> None:
        inp, start, step_s, prices, evs, key, now_us, _ = job
        self.accept(inp, plan, start, step_s, prices, evs, key, now_us)


@register_task("fleet_planner")
class FleetTask(Task):
    Params = FleetTaskParams
    params: FleetTaskParams

    def __init__(self, name: str, params: FleetTaskParams, site: SiteInfo):
        super().__init__(name, params, site)
        self.core = FleetPlanner(params)

    def declare(self) -> list[TagSpec]:
        st = self.params.stale_after_s
        per = [
            (
                "plan.power",
                TagType.FLOAT,
                "W",
                0.0,
                "planned grid power for the current interval, positive into the EV",
            ),
            ("plan.soc_target", TagType.FLOAT, "", None, "SoC the plan expects at the end of the current interval"),
            ("plan.interval_end", TagType.FLOAT, "s", None, "end of the current plan interval on the cycle clock"),
            ("plan.price", TagType.FLOAT, "currency/MWh", None, "price the plan assumed for the current interval"),
            ("plan.reserve_soc", TagType.FLOAT, "", None, "departure reserve: no discharge at or below this SoC"),
        ]
        out = [
            TagSpec(prefix_of(n) + name, t, u, Direction.SHARED, d, st, desc)
            for n in self.params.evses
            for name, t, u, d, desc in per
        ]
        out += [
            TagSpec("fleet.status", TagType.STR, "", Direction.SHARED, None, st, "optimal, or fallback (no plan)"),
            TagSpec("fleet.reason", TagType.STR, "", Direction.SHARED, None, st, "why there is no plan"),
            TagSpec(
                "fleet.shortfall_kwh",
                TagType.FLOAT,
                "kWh",
                Direction.SHARED,
                None,
                st,
                "what the plan's departures miss together (the connection cannot carry every need)",
            ),
        ]
        return out

    async def run(self, cx: TaskContext) -> None:
        from programs.planner.fleet import solve_fleet

        core, p = self.core, self.params
        last_write_us = -1
        last_sig: tuple | None = None
        while True:
            img = await cx.next_image()
            local = cx.calendar()
            now_us = cx.now_us
            job = core.prepare(img, local, now_us)
            if isinstance(job, str):
                cx.log.warning("fleet plan: none (%s); every EVSE on its fallback", job)
            elif job is not None:
                plan = await asyncio.to_thread(solve_fleet, job[0])
                core.finish(job, plan)
                cx.log.info(
                    "fleet plan %s (%s): %d EVs, %.3f s",
                    "optimal" if plan.ok else plan.message,
                    job[-1],
                    len(job[4]),
                    plan.solve_s,
                )
                local = cx.calendar()
                now_us = cx.now_us
            now = local.astimezone(UTC) if local.tzinfo is not None else local
            sig = core.signature(now)
            if sig != last_sig or job is not None or now_us - last_write_us >= p.heartbeat_s * US:
                for tag, value, q in core.writes(now, now_us / US):
                    cx.write(tag, value, q)
                last_sig, last_write_us = sig, now_us
