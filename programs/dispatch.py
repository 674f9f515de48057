"""Dispatch: turn the plan's current interval into the inverter setpoint, inside every limit.

Why it is separate from the mode machine: the machine decides *whether* to charge or discharge (with a
named reason), dispatch decides *how much*, cycle by cycle: the plan's power for this interval, a
correction toward the SoC the plan expects, a ramp limit, then the rating and the directional limits of
the safety layer. Safety still has the last word after this program; limits from outside (the back
office, a local EMS) reach it there, as the safety layer's external limits, never here: one path.

Sign convention (docs/design.md#the-sign-convention): positive into the EV battery. In ``charge`` the setpoint is never
negative, in ``discharge`` never positive; in ``remote`` and ``frequency`` it has the sign of the mode
machine's ``mode.request`` (the authority's set point inside the SoC window), with no plan and no SoC
correction, the ramp in ``remote`` only (a frequency service must answer within a cycle; the safety
layer's own ramps still apply) and ``authority.limit_pct`` of the rating; in every other mode exactly
0.0 with the permit withdrawn.

Tags read:
- ``mode.state`` as the ``modes`` program wrote it *this* cycle (it runs before dispatch), else the
  previous cycle's value; likewise ``mode.request``, the request the mode machine acted on (the plan's,
  or its fallback charge when the plan is not good: docs/modes.md "Without a planner");
- ``plan.power`` (W signed), ``plan.soc_target`` (SoC the plan expects at the end of the current
  interval) and ``plan.interval_end`` (that end, in seconds of the cycle clock), shared tags of the
  planner task (runtime/tasks/planner_task.py). The plan's power still to come until the interval ends
  is taken off the target, so the correction acts only on the deviation from the plan *now* and never
  counts the planned energy twice. Without ``plan.interval_end`` the target is taken as the SoC expected
  now;
- ``inverter.setpoint`` as committed by the previous cycle: the ramp (on increases of magnitude) starts
  from what was really sent after safety;
- ``safety.limit_charge`` / ``safety.limit_discharge`` (W >= 0, previous cycle): not good means 0;
- ``ev.max_charge_w`` / ``ev.max_discharge_w`` (W magnitudes, this cycle, written by ``programs/ev_source.py``
  before dispatch): the EV's own power limits over ISO 15118 (its ``EVMaximumCharge/DischargePower``).
  None means the EV gives no limit (another protocol, no session): only the rating and safety bound it.
  They bound every mode's set point, ``remote`` and ``frequency`` included: the back office cannot ask an
  EV for more than the EV itself allows. The safety layer checks them again (``safety/ev_limits.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import Field

from runtime.api import Cycle, Params, ParamsModel, Program, TagName, register_program
from runtime.tags import Direction, Image, TagSpec, TagType


class DispatchParams(Params):
    max_charge_w: float = Field(11_000.0, ge=0, le=1e6, description="charger rating, grid side")
    max_discharge_w: float = Field(11_000.0, ge=0, le=1e6, description="charger rating, grid side")
    ramp_w_per_s: float = Field(2_000.0, gt=0, le=1e7, description="largest setpoint change per second")
    capacity_wh: float = Field(60_000.0, gt=0, le=1e7, description="usable battery energy, for the SoC correction")
    correction_time_s: float = Field(900.0, gt=0, le=86_400, description="remove a SoC error over this time")
    max_correction_w: float = Field(2_000.0, ge=0, le=1e6, description="bound on the SoC correction")
    # ISO 15118-2 reports the EV's SoC in whole percent (DC_EVStatus EVRESSSOC), so an error below one
    # step is noise, not a deviation from the plan.
    soc_deadband: float = Field(0.01, ge=0, le=0.2, description="SoC error ignored by the correction")
    mode_tag: TagName = "mode.state"
    plan_power_tag: TagName | None = "plan.power"
    plan_soc_tag: TagName | None = "plan.soc_target"
    plan_end_tag: TagName | None = "plan.interval_end"
    efficiency_charge: float = Field(0.933, gt=0, le=1, description="grid -> battery (commuter scenario)")
    efficiency_discharge: float = Field(0.933, gt=0, le=1, description="battery -> grid")
    fixed_request_w: float | None = Field(
        None, ge=-1e6, le=1e6, description="request when the plan tag is absent or not good"
    )
    request_tag: TagName | None = Field(
        "mode.request",
        description="the request the mode machine acted on this scan (the plan's, the fixed one or its "
        "fallback charge); where no program writes it: plan_power_tag, then fixed_request_w",
    )
    soc_tag: TagName = "ev.soc"
    setpoint_tag: TagName = "inverter.setpoint"
    enable_tag: TagName = "inverter.enable"
    safety_charge_tag: TagName | None = "safety.limit_charge"
    safety_discharge_tag: TagName | None = "safety.limit_discharge"
    ev_max_charge_tag: TagName | None = Field(
        None, description="the EV's own charge limit, W magnitude (ev.max_charge_w); None: the site has none"
    )
    ev_max_discharge_tag: TagName | None = Field(
        None, description="the EV's own discharge limit, W magnitude (ev.max_discharge_w); None: the site has none"
    )
    rt_price_tag: TagName | None = Field(
        None, description="real-time price of the current interval (prices.real_time); None: day-ahead plan only"
    )
    plan_price_tag: TagName | None = Field("plan.price", description="the day-ahead price the plan assumed now")
    rt_deviation: float = Field(
        100.0, gt=0, le=1e5, description="real time this far above/below the plan's price (per MWh) counts as strong"
    )
    rt_soc_margin: float = Field(
        0.05, ge=0, le=0.5, description="how far the SoC may leave the plan's expectation to follow real time"
    )
    limit_pct_tag: TagName | None = Field(
        "authority.limit_pct", description="in remote and frequency: the request's limit, % of the rating"
    )


def _safety_limit(img: Image, tag: str | None) -> float:
    """A safety limit that is not good is no permission at all."""
    if tag is None:
        return float("inf")
    v = img.value(tag)
    return 0.0 if v is None else max(0.0, float(v))


def _ev_limit(cx: Cycle, tag: str | None) -> float:
    """The EV's own limit as ``ev_source`` wrote it this cycle: None (the EV gives none) bounds nothing.
    A magnitude by contract; a negative number is read as its magnitude (some EVs send the discharge
    limit signed), never as permission to reverse."""
    v = _current(cx, tag)
    return float("inf") if v is None else abs(float(v))


_ABSENT = object()  # not in the output image (``Outputs.get`` answers as ``in`` does)


def _current(cx: Cycle, tag: str | None) -> Any:
    """A tag as an earlier program wrote it this cycle, else as the previous cycle committed it."""
    if tag is None:
        return None
    v = cx.out.get(tag, _ABSENT)
    return cx.inputs.value(tag) if v is _ABSENT else v


@register_program("dispatch")
class Dispatch(Program):
    Params = DispatchParams
    params: DispatchParams

    def reconfigure(self, params: ParamsModel) -> Callable[[], None]:
        """Limits, ramps and the real-time rule change live: dispatch keeps nothing derived from them."""
        assert isinstance(params, DispatchParams)
        self.check_same_tags(params)
        return lambda: setattr(self, "params", params)

    def requires(self) -> list[str]:
        p = self.params
        return [
            t
            for t in (
                p.mode_tag,
                p.soc_tag,
                p.setpoint_tag,
                p.enable_tag,
                p.plan_power_tag,
                p.plan_soc_tag,
                p.plan_end_tag,
                p.safety_charge_tag,
                p.safety_discharge_tag,
                p.ev_max_charge_tag,
                p.ev_max_discharge_tag,
                p.rt_price_tag,
                p.plan_price_tag if p.rt_price_tag else None,
            )
            if t is not None
        ]

    def declare(self) -> list[TagSpec]:
        return [
            TagSpec(
                "dispatch.target",
                TagType.FLOAT,
                "W",
                Direction.MEMORY,
                0.0,
                description="plan power plus SoC correction, before ramp and limits",
            ),
            TagSpec(
                "dispatch.correction",
                TagType.FLOAT,
                "W",
                Direction.MEMORY,
                0.0,
                description="SoC correction toward plan.soc_target",
            ),
            TagSpec(
                "dispatch.limit",
                TagType.STR,
                "",
                Direction.MEMORY,
                "",
                description="the limit that bounds the setpoint this cycle (empty: none)",
            ),
        ]

    def scan(self, cx: Cycle) -> None:
        p = self.params
        img = cx.inputs
        mode = _current(cx, p.mode_tag)
        if mode in ("remote", "frequency"):
            self._signed(cx, mode)
            return
        if mode not in ("charge", "discharge"):
            self._write(cx, 0.0, False, 0.0, 0.0, "")
            return
        sign = 1.0 if mode == "charge" else -1.0

        asked: Any = cx.out.get(p.request_tag, _ABSENT) if p.request_tag is not None else _ABSENT
        if asked is not _ABSENT:  # one owner of the fallback: modes
            req = float(asked)
        else:
            plan = img.value(p.plan_power_tag) if p.plan_power_tag else None
            req = float(p.fixed_request_w or 0.0) if plan is None else float(plan)
        corr = 0.0
        soc, soc_target = img.value(p.soc_tag), img.value(p.plan_soc_tag) if p.plan_soc_tag else None
        if soc is not None and soc_target is not None:
            end = img.value(p.plan_end_tag) if p.plan_end_tag else None
            if end is not None:  # SoC the plan expects now = end target minus the planned energy still to come
                rest_s = max(0.0, float(end) - cx.now)
                batt_w = req * p.efficiency_charge if req >= 0 else req / p.efficiency_discharge
                soc_target -= batt_w * rest_s / 3600.0 / p.capacity_wh
            rt = self._real_time(img, float(soc), soc_target, sign)
            if rt is not None:  # follow real time within the margin; no correction back meanwhile
                sp, limit = self._limited(cx, sign, sign * rt, p)
                self._write(cx, sp, True, sign * rt, 0.0, limit or "real time")
                return
            # Energy error (Wh) spread over correction_time_s gives W.
            err = soc_target - soc
            err = 0.0 if abs(err) <= p.soc_deadband else err - p.soc_deadband * (1.0 if err > 0 else -1.0)
            corr = err * p.capacity_wh * 3600.0 / p.correction_time_s
            corr = max(-p.max_correction_w, min(p.max_correction_w, corr))
        target = req + corr
        sp, limit = self._limited(cx, sign, target, p)
        self._write(cx, sp, True, target, corr, limit)

    def _signed(self, cx: Cycle, mode: str) -> None:
        """remote / frequency: the mode machine's signed request, no plan, no correction; either sign."""
        p = self.params
        req = _current(cx, p.request_tag) if p.request_tag else None
        target = 0.0 if req is None else float(req)
        pct = _current(cx, p.limit_pct_tag)
        share = 1.0 if pct is None else min(1.0, max(0.0, float(pct) / 100.0))
        sign = 1.0 if target >= 0 else -1.0
        sp, limit = self._limited(cx, sign, target, p, ramp=mode == "remote", share=share)
        self._write(cx, sp, True, target, 0.0, limit)

    def _limited(
        self, cx: Cycle, sign: float, target: float, p: DispatchParams, ramp: bool = True, share: float = 1.0
    ) -> tuple[float, str]:
        """(setpoint, limit): ``target``'s magnitude in the direction ``sign`` (never the other sign), after
        the ramp (unless ``ramp`` is false), ``share`` of the rating, the EV's own limit and the safety
        limits."""
        img = cx.inputs
        mag = max(0.0, sign * target)  # the magnitude in the mode's direction; never the other sign
        out, limit = mag, ""
        if ramp:
            prev = img.value(p.setpoint_tag)
            prev_mag = 0.0 if prev is None else max(0.0, sign * float(prev))
            # The ramp bounds increases only: less power is never the unsafe direction, and a lower plan
            # or limit must act at once.
            out = min(mag, prev_mag + p.ramp_w_per_s * cx.dt)
            limit = "ramp" if out < mag else ""
        rating = p.max_charge_w if sign > 0 else p.max_discharge_w
        bounds = (
            ("rating", rating) if share >= 1.0 else ("limit_pct", rating * share),
            ("ev", _ev_limit(cx, p.ev_max_charge_tag if sign > 0 else p.ev_max_discharge_tag)),
            ("safety", _safety_limit(img, p.safety_charge_tag if sign > 0 else p.safety_discharge_tag)),
        )
        for name, lim in bounds:
            if out > lim:
                out, limit = lim, name
        return sign * out + 0.0, limit  # + 0.0: never -0.0

    def _real_time(self, img: Image, soc: float, expected: float, sign: float) -> float | None:
        """The real-time rule (docs/planner.md "Real-time prices"): when the real-time price is above the
        plan's day-ahead price by ``rt_deviation`` or more, charging pauses and discharge runs at the
        rating, while the SoC stays within ``rt_soc_margin`` below what the plan expects now; when it is
        that much below, discharge pauses and charging runs at the rating while the SoC stays within
        the margin above. Returns that magnitude (W), or None when the rule does not apply. It never
        changes the direction (the mode machine's) and never leaves the margin."""
        p = self.params
        if p.rt_price_tag is None or p.plan_price_tag is None:
            return None
        rt, da = img.value(p.rt_price_tag), img.value(p.plan_price_tag)
        if rt is None or da is None:
            return None
        dear, cheap = rt - da >= p.rt_deviation, da - rt >= p.rt_deviation
        if dear and soc > expected - p.rt_soc_margin:
            return 0.0 if sign > 0 else p.max_discharge_w  # sell more, buy less, while within the margin
        if cheap and soc < expected + p.rt_soc_margin:
            return p.max_charge_w if sign > 0 else 0.0
        return None

    def _write(self, cx: Cycle, sp: float, enable: bool, target: float, corr: float, limit: str) -> None:
        p = self.params
        if p.setpoint_tag in cx.out:
            cx.out[p.setpoint_tag] = sp
        if p.enable_tag in cx.out:
            cx.out[p.enable_tag] = enable
        cx.out["dispatch.target"] = target
        cx.out["dispatch.correction"] = corr
        cx.out["dispatch.limit"] = limit
