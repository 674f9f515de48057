"""The planner task: re-plans in the task process (never in the scan) and publishes the plan as tags.

Reads from the scan's published image:
- ``prices.day_ahead`` (TagType.JSON, written by ``runtime/tasks/prices.py``): the known curve,
  ``[{"start": ISO 8601 with offset, "end": ..., "price": currency/MWh}, ...]`` sorted by start.
  Optionally ``forecast_tag`` in the same format, for intervals beyond the known curve.
- ``prices.updated`` (the feed's revision counter) to tell new prices from the curve sliding forward.
- ``ev.connected`` and ``ev.soc``; ``ev.in_session`` (``ev_session_tag``): an EV in an ISO 15118 session is
  plugged in, also where no map has a plug point (a site without the PLC modem's).
- ``ev.departure_time`` (UTC epoch s) and ``ev.energy_request_wh`` (Wh to the EV's target SoC), written by
  ``programs/ev_source.py`` when an ISO 15118 session gives them: the EV's own word, ahead of the site's
  departure routine (``ev_windows``); None (no session, stale source) falls back to the routine.

Writes (shared tags, each with an age limit so that a dead task turns them stale and dispatch stops
following a plan nobody maintains):
- ``plan.power`` (W, signed: positive into the EV battery) for the current interval,
- ``plan.soc_target`` (fraction) the plan expects at the end of the current interval,
- ``plan.interval_end`` (s on the cycle clock) when the current interval ends,
- ``plan.reserve_soc`` (fraction) the departure reserve at the end of the current interval: the least
  SoC from which full-power charging still meets every departure the plan knows
  (``programs/planner/reserve.py``); the mode machine discharges only above it, and not at all once
  it is stale (docs/modes.md "Without a planner"),
- ``plan.price`` the (day-ahead) price the plan assumed for the current interval, for dispatch's real-time
  rule,
- ``plan.json`` (TagType.JSON) the whole plan, as ``programs/planner/plan.schema.json`` describes.

Re-plans when ``needs_replan`` says so (new prices, plug-in/unplug, drift, plan running out) or when the
EV's own goal changes materially (``ev_goal_change``: it appears or goes, its departure moves by more than
``ev_departure_change_s``, its target SoC by more than ``ev_target_change``). Without a
good price curve covering now (missing, stale, gaps) it publishes the rule-based fallback plan instead.
Plans are computed in planner-visible time: intervals are absolute instants (UTC), while the driver's
routine and the terminal value's price history use the site's local calendar.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import math
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, model_validator

from programs.planner.model import Battery, Charger, Plan, PlanRequest, PlugWindow
from programs.planner.replan import needs_replan
from programs.planner.reserve import reserve_soc
from programs.planner.routine import Routine, routine_windows
from runtime.api import Params, SiteInfo, TagName
from runtime.tags import US, Direction, Image, Quality, TagSpec, TagType
from runtime.tasks.base import Task, TaskContext, register_task

UTC = dt.UTC


class PlannerTaskParams(Params):
    battery: Battery = Battery(capacity_kwh=60.0, soc_min=0.2, soc_max=0.9)
    charger: Charger = Charger(
        max_charge_kw=11.0, max_discharge_kw=11.0, efficiency_charge=0.933, efficiency_discharge=0.933
    )
    degradation_cost_per_mwh: float = Field(20.0, ge=0, le=10_000)
    routine: Routine = Routine()
    prices_tag: TagName = "prices.day_ahead"
    updated_tag: TagName | None = Field(
        "prices.updated",
        description="revision counter of the price feed: new prices = a new revision "
        "(the curve sliding forward in time is not new); None: compare content",
    )
    forecast_tag: TagName | None = Field(None, description="optional forecast curve in the same format")
    terminal_value: Literal["refill", "quantile", "none"] = Field(
        "refill",
        description="value of energy stored past the horizon: 'refill' = what the coming nights will cost "
        "to refill it (median of the last week's cheapest plugged-in prices / charge efficiency, "
        "docs/planner.md); 'quantile' = terminal_value_quantile of the last week's prices; 'none' = 0",
    )
    terminal_value_quantile: float | None = Field(
        0.3, ge=0, le=1, description="with terminal_value 'quantile': the quantile; None: 0"
    )
    max_horizon_h: float = Field(48.0, gt=0, le=24 * 14)
    drift_soc: float = Field(0.05, gt=0, le=1, description="re-plan when the SoC differs from the plan by this much")
    time_limit_s: float = Field(2.0, gt=0, le=600)
    ev_departure_tag: TagName | None = Field(
        "ev.departure_time", description="the EV's own departure (UTC epoch s, ISO 15118); None: the routine only"
    )
    ev_energy_tag: TagName | None = Field(
        "ev.energy_request_wh",
        description="the EV's own energy request to its target SoC (Wh, battery side); None: the routine only",
    )
    ev_session_tag: TagName | None = Field(
        "ev.in_session",
        description="true while the EV is in an ISO 15118 session (ev_source); the EV is plugged in then, on a "
        "site without a plug point too; None: ev.connected only",
    )
    # Material changes of the EV's goal. A departure is planned on the price curve's intervals (15 min at
    # the finest, the EU day-ahead market's), so a move inside one is no new plan; the EV recomputes its
    # seconds-to-departure every message, which jitters the epoch by a message's latency. The target SoC
    # is derived as SoC + request / capacity, which steps with the SoC's whole percent (ISO 15118 reports
    # SoC in percent): two steps is a change.
    ev_departure_change_s: float = Field(
        900.0, gt=0, le=86_400, description="re-plan when the EV's departure moves by more than this"
    )
    ev_target_change: float = Field(
        0.02, gt=0, le=1, description="re-plan when the EV's target SoC (from its energy request) moves this much"
    )
    heartbeat_s: float = Field(60.0, gt=0, le=3600, description="rewrite the plan tags at least this often")
    stale_after_s: float = Field(
        300.0, gt=0, le=3600, description="age limit of the plan tags: without a good plan, no discharge"
    )

    @model_validator(mode="after")
    def _heartbeat(self) -> PlannerTaskParams:
        if self.heartbeat_s * 2 > self.stale_after_s:
            raise ValueError("heartbeat_s must be at most half of stale_after_s (the plan tags would go stale)")
        return self


def parse_curve(value: Any) -> list[tuple[dt.datetime, dt.datetime, float]]:
    """The price tag's list as (start, end, price) sorted by start; malformed entries raise ValueError."""
    if not isinstance(value, list):
        raise ValueError(f"expected a list of intervals, got {type(value).__name__}")
    out = []
    for i, item in enumerate(value):
        try:
            s = dt.datetime.fromisoformat(item["start"])
            e = dt.datetime.fromisoformat(item["end"])
            p = float(item["price"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"interval {i}: {exc}") from None
        if s.tzinfo is None or e.tzinfo is None:
            raise ValueError(f"interval {i}: start/end need a UTC offset")
        out.append((s.astimezone(UTC), e.astimezone(UTC), p))
    out.sort(key=lambda r: r[0])
    return out


def contiguous_from(
    curve: list[tuple[dt.datetime, dt.datetime, float]], now: dt.datetime, limit: dt.timedelta
) -> tuple[dt.datetime, int, list[float]]:
    """(start of the interval holding ``now``, step s, prices) of the gap-free run from there, at most
    ``limit`` long, on the finest interval length in it: a mixed curve (hourly products, then
    quarter-hours) is planned in quarter-hours, each hourly price applying to its four quarters as it
    settles. The run stops at a gap or at an interval that is not a whole number of the finest step.
    Raises ValueError when no interval holds ``now``."""
    first = next((i for i, (s, e, _) in enumerate(curve) if s <= now < e), None)
    if first is None:
        raise ValueError(f"no price interval covers {now.isoformat()}")
    s0 = curve[first][0]
    run = []
    expect = s0
    for s, e, p in curve[first:]:
        if s != expect or s - s0 >= limit:
            break
        run.append((e - s, p))
        expect = e
    step = min(length for length, _ in run)
    prices: list[float] = []
    for length, p in run:
        if length % step:
            break
        prices += [p] * (length // step)
    return s0, int(step.total_seconds()), prices


@dataclass(frozen=True, slots=True)
class EvGoal:
    """What the EV itself asks for: when it leaves and the SoC it wants then; None where it does not say."""

    departure: dt.datetime | None = None
    target_soc: float | None = None

    @property
    def given(self) -> bool:
        return self.departure is not None or self.target_soc is not None

    def describe(self) -> str:
        dep = "routine" if self.departure is None else self.departure.isoformat(timespec="minutes")
        soc = "routine" if self.target_soc is None else f"{self.target_soc:.3f}"
        return f"departure {dep}, target SoC {soc}"


def ev_goal(
    departure_s: Any, energy_wh: Any, soc: float | None, now: dt.datetime, battery: Battery, tz: dt.tzinfo | None
) -> EvGoal:
    """The EV's goal from its own data: a departure still ahead of ``now`` (UTC epoch s; on a naive site
    clock read as the site's wall clock, as the price feed is), and the target SoC its energy request
    leads to from the present SoC (battery side, as ISO 15118-20 EVTargetEnergyRequest is), capped at
    the battery's window. Anything missing, non-finite or past is None: the routine decides there."""
    departure = None
    if isinstance(departure_s, (int, float)) and math.isfinite(departure_s):
        try:
            departure = dt.datetime.fromtimestamp(float(departure_s), UTC)
        except (OverflowError, OSError, ValueError):
            departure = None
        if departure is not None and tz is None:
            departure = departure.replace(tzinfo=None)
        if departure is not None and departure <= now:
            departure = None
    target = None
    if isinstance(energy_wh, (int, float)) and math.isfinite(energy_wh) and soc is not None:
        target = min(battery.soc_max, max(0.0, soc + float(energy_wh) / (battery.capacity_kwh * 1000.0)))
    return EvGoal(departure, target)


def ev_goal_change(old: EvGoal, new: EvGoal, departure_s: float, target: float) -> str | None:
    """Why the EV's goal changed materially since the plan was made, or None (pure, for tables)."""
    o_dep, n_dep, o_soc, n_soc = old.departure, new.departure, old.target_soc, new.target_soc
    moved = (
        (o_dep is None) != (n_dep is None)
        or (o_soc is None) != (n_soc is None)
        or (o_dep is not None and n_dep is not None and abs((n_dep - o_dep).total_seconds()) > departure_s)
        or (o_soc is not None and n_soc is not None and abs(n_soc - o_soc) > target)
    )
    return f"EV data: {new.describe()} (was {old.describe()})" if moved else None


def ev_windows(
    routine: tuple[PlugWindow, ...], goal: EvGoal, start: dt.datetime, end: dt.datetime, departure_soc: float
) -> tuple[PlugWindow, ...]:
    """The routine's plug-in windows with the EV's own goal laid over the current one (connected now).

    The current window ends at the EV's departure (else the routine's, else the horizon) and asks for
    the EV's target SoC (else the routine's ``departure_soc``) when that departure lies inside the
    horizon. The routine's later windows are kept from the EV's departure on; one that would start
    before it is dropped (the routine did not foresee this trip; the next arrival it knows stands)."""
    if not goal.given or not routine or routine[0].start > start:
        return routine
    cur = routine[0]
    if goal.departure is not None:
        dep, inside = min(goal.departure, end), goal.departure <= end
    else:
        dep, inside = cur.end, cur.departure_soc_min is not None
    soc = goal.target_soc if goal.target_soc is not None else departure_soc
    first = PlugWindow(
        start=cur.start,
        end=max(dep, cur.start + dt.timedelta(seconds=1)),
        departure_soc_min=soc if inside else None,
        trip_energy_kwh=cur.trip_energy_kwh,
    )
    return (first, *(w for w in routine[1:] if w.start >= first.end))


def prices_key(*values: Any) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]


@register_task("planner")
class PlannerTask(Task):
    Params = PlannerTaskParams
    params: PlannerTaskParams

    def declare(self) -> list[TagSpec]:
        st = self.params.stale_after_s
        return [
            TagSpec(
                "plan.power",
                TagType.FLOAT,
                "W",
                Direction.SHARED,
                0.0,
                st,
                "planned grid power for the current interval, positive into the EV battery",
            ),
            TagSpec(
                "plan.soc_target",
                TagType.FLOAT,
                "",
                Direction.SHARED,
                None,
                st,
                "SoC the plan expects at the end of the current interval",
            ),
            TagSpec(
                "plan.interval_end",
                TagType.FLOAT,
                "s",
                Direction.SHARED,
                None,
                st,
                "end of the current plan interval on the cycle clock",
            ),
            TagSpec(
                "plan.price",
                TagType.FLOAT,
                "currency/MWh",
                Direction.SHARED,
                None,
                st,
                "day-ahead price the plan assumed for the current interval (dispatch's real-time rule)",
            ),
            TagSpec(
                "plan.reserve_soc",
                TagType.FLOAT,
                "",
                Direction.SHARED,
                None,
                st,
                "departure reserve: no discharge at or below this SoC, none at all when stale",
            ),
            TagSpec(
                "plan.json",
                TagType.JSON,
                "",
                Direction.SHARED,
                None,
                st,
                "the whole plan (programs/planner/plan.schema.json)",
            ),
        ]

    def __init__(self, name: str, params: PlannerTaskParams, site: SiteInfo):
        super().__init__(name, params, site)
        self.plan: Plan | None = None
        self.reserve: list[float] = []  # plan.reserve_soc per interval of self.plan
        self.history: deque[tuple[dt.datetime, float]] = deque(maxlen=7 * 24 * 4)  # a week of 15-min rows

    # -- pure-ish steps (testable without a loop) ----------------------------------------------------
    def build_request(
        self,
        now: dt.datetime,
        soc: float,
        connected: bool,
        curve: list,
        forecast: list,
        tz: dt.tzinfo | None,
        key: str = "",
        goal: EvGoal = EvGoal(),
    ) -> PlanRequest:
        p = self.params
        start, step_s, prices = contiguous_from(curve, now, dt.timedelta(hours=p.max_horizon_h))
        n_pub = len(prices)
        if forecast:
            end = start + dt.timedelta(seconds=step_s * n_pub)
            for s, e, v in forecast:
                if s == end and (e - s).total_seconds() == step_s and s - start < dt.timedelta(hours=p.max_horizon_h):
                    prices.append(v)
                    end = e
        value = 0.0
        if p.terminal_value == "refill":
            value = self._refill_value(start, step_s, prices[:n_pub], tz)
        elif p.terminal_value == "quantile" and p.terminal_value_quantile is not None:
            past = sorted(v for _, v in self.history) or sorted(prices[:n_pub])
            value = past[min(len(past) - 1, int(p.terminal_value_quantile * len(past)))]
        horizon_end = start + dt.timedelta(seconds=step_s * len(prices))
        return PlanRequest(
            start=start,
            step_s=step_s,
            prices=tuple(prices),
            n_published=n_pub,
            soc=min(1.0, max(0.0, soc)),
            battery=p.battery,
            charger=p.charger,
            degradation_cost_per_mwh=p.degradation_cost_per_mwh,
            windows=self.windows(start, horizon_end, connected, tz, goal),
            terminal_value_per_mwh=value,
            time_limit_s=p.time_limit_s,
            prices_key=key,
        )

    def windows(
        self, start: dt.datetime, end: dt.datetime, connected: bool, tz: dt.tzinfo | None, goal: EvGoal
    ) -> tuple[PlugWindow, ...]:
        """The routine's windows, with the EV's own goal over the current one while it is connected."""
        r = self.params.routine
        base = routine_windows(r, start, end, connected, tz)
        return ev_windows(base, goal, start, end, r.departure_soc_min) if connected else base

    def _refill_value(self, start: dt.datetime, step_s: int, published: list[float], tz: dt.tzinfo | None) -> float:
        """programs/planner/terminal.py over the remembered week and the published horizon, plugged-in
        intervals by the driver's routine, days by the site's local calendar."""
        from programs.planner.routine import trips
        from programs.planner.terminal import refill_value

        step = dt.timedelta(seconds=step_s)
        pts = sorted(x for x in self.history if x[0] < start) + [(start + i * step, v) for i, v in enumerate(published)]
        if not pts:
            return 0.0
        away = trips(self.params.routine, pts[0][0], pts[-1][0] + step, tz)
        conn = [not any(d <= t < a for d, a in away) for t, _ in pts]
        local = [t.astimezone(tz) if tz is not None and t.tzinfo is not None else t for t, _ in pts]
        v = refill_value(local, [x for _, x in pts], self.params.charger.efficiency_charge, 7, conn)
        return 0.0 if v is None else v

    def remember(self, curve: list, now: dt.datetime) -> None:
        """Keep published prices of past intervals for the terminal value (a week, by start)."""
        seen = {s for s, _ in self.history}
        for s, _, v in curve:
            if s < now and s not in seen:
                self.history.append((s, v))

    async def run(self, cx: TaskContext) -> None:
        from programs.planner.planner import plan as make_plan

        p = self.params
        last_write_us = -1
        last_sig: tuple | None = None
        planned_goal = EvGoal()  # the EV's goal the current plan was made with
        while True:
            img = await cx.next_image()
            local = cx.calendar()
            tz = local.tzinfo
            now = local.astimezone(UTC) if tz is not None else local
            soc = img.value("ev.soc")
            connected = img.value("ev.connected")
            if p.ev_session_tag and img.value(p.ev_session_tag) is True:
                connected = True  # a live ISO 15118 session runs over the plugged cable: no modem map needed
            curve: list = []
            forecast: list = []
            problem = None
            try:
                raw = img.value(p.prices_tag)
                if raw is None:
                    problem = f"{p.prices_tag} is not good ({img.tag(p.prices_tag).quality.value})"
                else:
                    curve = parse_curve(raw)
                    if tz is None:  # a naive site clock: read the feed's wall clock as the site's
                        curve = [(s.replace(tzinfo=None), e.replace(tzinfo=None), v) for s, e, v in curve]
                if p.forecast_tag and (fraw := img.value(p.forecast_tag)) is not None:
                    forecast = parse_curve(fraw)
                    if tz is None:
                        forecast = [(s.replace(tzinfo=None), e.replace(tzinfo=None), v) for s, e, v in forecast]
            except ValueError as exc:
                problem, curve = f"{p.prices_tag}: {exc}", []
            self.remember(curve, now)
            rev = img.value(p.updated_tag) if p.updated_tag else None
            if problem is not None:
                key = f"unusable:{problem}"
            elif rev is not None:
                key = prices_key("revision", rev, forecast)
            else:
                key = prices_key(curve, forecast)
            goal = self.ev_goal(img, soc, now, tz) if connected else EvGoal()
            reason = needs_replan(self.plan, now, prices_key=key, connected=connected, soc=soc, drift_soc=p.drift_soc)
            if reason is None and self.plan is not None:
                reason = ev_goal_change(planned_goal, goal, p.ev_departure_change_s, p.ev_target_change)
            if reason is not None and soc is not None:
                if goal.given:
                    reason = f"{reason}; EV's own {goal.describe()}"
                try:
                    if problem is not None:
                        raise ValueError(problem)
                    req = self.build_request(now, soc, bool(connected), curve, forecast, tz, key, goal)
                    self.plan = await asyncio.to_thread(make_plan, req, reason)
                except ValueError as exc:  # no usable prices: the fallback needs none
                    req = self._fallback_request(now, soc, bool(connected), tz, key, goal)
                    self.plan = make_plan(req, f"{reason}; {exc}", use_solver=False)
                self.reserve = reserve_soc(req)
                planned_goal = goal
                cx.log.info("plan %s (%s): %s", self.plan.status, reason, self.plan.reason)
            if self.plan is None:
                continue
            iv = self.plan.at(now)
            sig = (id(self.plan), None if iv is None else iv.start, connected)
            if sig != last_sig or cx.now_us - last_write_us >= p.heartbeat_s * US:
                self._publish(cx, iv, now, connected is not False)
                last_sig, last_write_us = sig, cx.now_us

    def ev_goal(self, img: Image, soc: float | None, now: dt.datetime, tz: dt.tzinfo | None) -> EvGoal:
        p = self.params
        dep = img.value(p.ev_departure_tag) if p.ev_departure_tag else None
        energy = img.value(p.ev_energy_tag) if p.ev_energy_tag else None
        return ev_goal(dep, energy, soc, now, p.battery, tz)

    def _fallback_request(
        self, now: dt.datetime, soc: float, connected: bool, tz: dt.tzinfo | None, key: str, goal: EvGoal = EvGoal()
    ) -> PlanRequest:
        """24 hourly intervals of price 0 from this hour: the plan ``use_solver=False`` turns into the
        rule-based fallback (charge on plug-in to the departure SoC, never discharge)."""
        p = self.params
        start = now.replace(minute=0, second=0, microsecond=0)
        n = 24
        return PlanRequest(
            start=start,
            step_s=3600,
            prices=(0.0,) * n,
            n_published=0,
            soc=min(1.0, max(0.0, soc)),
            battery=p.battery,
            charger=p.charger,
            windows=self.windows(start, start + dt.timedelta(hours=n), connected, tz, goal),
            prices_key=key,
        )

    def _publish(self, cx: TaskContext, iv: Any, now: dt.datetime, connected: bool) -> None:
        plan = self.plan
        assert plan is not None
        if iv is None:
            cx.write("plan.power", 0.0, Quality.BAD)
            cx.write("plan.reserve_soc", None, Quality.BAD)
            return
        cx.write("plan.power", float(iv.power_w) if (iv.connected and connected) else 0.0)
        cx.write("plan.soc_target", float(iv.soc_end))
        if plan.status == "fallback":  # its prices are placeholders (0): no real-time rule may judge by them
            cx.write("plan.price", None, Quality.BAD)
        else:
            cx.write("plan.price", float(iv.price))
        cx.write("plan.interval_end", cx.now_us / US + (iv.end - now).total_seconds())
        i = plan.index_at(now)
        if i is not None and i < len(self.reserve):
            cx.write("plan.reserve_soc", self.reserve[i])
        else:
            cx.write("plan.reserve_soc", None, Quality.BAD)
        cx.write("plan.json", plan.model_dump(mode="json"))
