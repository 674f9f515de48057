"""The grid connection's limit at a depot: the site interlock that has the last word over the EVSEs' sum.

Why an interlock beside the allocator (programs/allocator.py): the allocator shares the connection among
the EVSEs by priority, but it runs before the per-EVSE interlocks and before forces, and a program may be
wrong. This interlock runs last and checks only arithmetic: the set points now committed plus the building
load measured at the point of common coupling must stay inside the service's import and export limits; if
they do not, every EVSE's set point in the offending direction is scaled down by the same factor (never
turned around: a charge is never made a discharge). The main breaker is the site's; no program may trip it.

Building load = site meter power - the EVSEs' measured power (both as last read). A meter that is not good
is doubt: the building is taken at ``building_max_w`` on the import side (so EVSE charging gets only what
the connection has beyond the largest building load) and at 0 W on the export side.

Sign convention (docs/design.md#the-sign-convention): EVSE set points are positive into the EV; the meter
is import-positive, so an EVSE charging at P adds P to the meter's reading.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated

from pydantic import Field, model_validator

from runtime.api import Cycle, Params, Program, SiteInfo, TagName, register_interlock
from runtime.tags import Direction, Image, Quality, TagSpec, TagType

MAX_W = 1e8  # 100 MW: far beyond any EV depot's service, small enough to stay a finite, checked number
EvseId = Annotated[int, Field(ge=1, le=999)]


class ConnectionParams(Params):
    """The service connection as the interlock enforces it: the hard limits, no margin (the allocator keeps
    its own margin below them). The allocator does its own arithmetic on purpose: this check must not
    share code with the program it checks."""

    import_limit_w: float = Field(ge=0, le=MAX_W, description="service rating, import (W)")
    export_limit_w: float = Field(ge=0, le=MAX_W, description="export allowed by the interconnection agreement (W)")
    import_limit_tags: list[TagName] = Field(
        default_factory=list,
        max_length=16,
        description="lower import limits from outside (W magnitudes, the allocator's tags): the lowest good one "
        "binds here too, so a limit from the back office holds even if the allocator does not keep it",
    )
    export_limit_tags: list[TagName] = Field(default_factory=list, max_length=16, description="likewise for export")
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

    @model_validator(mode="after")
    def _distinct(self) -> ConnectionParams:
        if len(set(self.evses)) != len(self.evses):
            raise ValueError("evses lists an EVSE twice")
        return self


def evse_tag(n: int | None, name: str) -> str:
    """The site name of EVSE n's tag; ``None`` is the one charger of a site without ``evses:``."""
    return name if n is None else f"evse{n}.{name}"


def served(p: ConnectionParams) -> list[int | None]:
    return list(p.evses) if p.evses else [None]


@dataclass(frozen=True, slots=True)
class Budget:
    """What the EVSEs together may draw now: ``low <= sum(set points) <= high`` (W, charge-positive)."""

    high: float  # import side: the connection's import limit less the building
    low: float  # export side: minus (export limit + building consumption); <= high unless the building overloads
    building_w: float | None  # None: the meter is not good
    import_limit_w: float
    export_limit_w: float


def external(img: Image, tags: list[str], own: float, *, export: bool = False) -> float:
    """The site file's rating lowered by every limit from outside, never raised: a good tag's value; a tag
    that had a value and went stale or bad, its last value for import and 0 W for export (the external-limit
    rule, docs/safety.md); a tag that never had a finite magnitude >= 0 is ignored. Written here apart from
    the allocator's, so that the last word does not share the allocator's code."""
    limit = own
    for t in tags:
        tv = img.tag(t)
        v = tv.value
        if type(v) not in (int, float) or not math.isfinite(v) or v < 0:
            continue
        limit = min(limit, 0.0 if export and tv.quality is not Quality.GOOD else float(v))
    return limit


def budget(img: Image, p: ConnectionParams) -> Budget:
    imp = external(img, p.import_limit_tags, p.import_limit_w)
    exp = external(img, p.export_limit_tags, p.export_limit_w, export=True)
    meter = img.value(p.meter_power_tag)
    if meter is None:
        hi_b = p.import_limit_w if p.building_max_w is None else p.building_max_w
        lo_b, building = 0.0, None
    else:
        measured = sum(img.value(evse_tag(n, p.power_tag), 0.0) for n in served(p))
        building = float(meter) - measured
        hi_b = lo_b = building
    return Budget(imp - hi_b, -exp - lo_b, building, imp, exp)


def scale_into(setpoints: dict[int | None, float], b: Budget) -> tuple[float, float]:
    """Factors (charge, discharge) in [0, 1] that bring the sum inside the budget; the other direction is
    never touched, and a direction is scaled to 0 when the other alone already breaks the limit."""
    c = sum(v for v in setpoints.values() if v > 0)
    d = sum(v for v in setpoints.values() if v < 0)
    fc = 1.0 if c + d <= b.high or c <= 0 else max(0.0, min(1.0, (b.high - d) / c))
    fd = 1.0 if c + d >= b.low or d >= 0 else max(0.0, min(1.0, (c - b.low) / -d))
    return fc, fd


OUT_SCALE_CHARGE, OUT_SCALE_DISCHARGE, OUT_REASON, OUT_BUILDING = (
    "connection.scale_charge",
    "connection.scale_discharge",
    "connection.reason",
    "connection.building_w",
)


@register_interlock("connection_limit")
class ConnectionLimit(Program):
    """Scales every EVSE's set point down, by one factor per direction, when their sum with the building
    load would pass the connection's import or export limit. List it last in ``safety:``."""

    Params = ConnectionParams
    params: ConnectionParams

    def __init__(self, name: str, params: ConnectionParams, site: SiteInfo):
        super().__init__(name, params, site)
        self._evses = served(params)
        self._reason = ""

    def declare(self) -> list[TagSpec]:
        m = Direction.MEMORY
        return [
            TagSpec(OUT_SCALE_CHARGE, TagType.FLOAT, "", m, 1.0, description="factor on every EVSE's charge set point"),
            TagSpec(OUT_SCALE_DISCHARGE, TagType.FLOAT, "", m, 1.0, description="factor on every discharge set point"),
            TagSpec(OUT_REASON, TagType.STR, "", m, "", description="why the connection limit acts, empty when not"),
            TagSpec(OUT_BUILDING, TagType.FLOAT, "W", m, 0.0, description="building load at the PCC (meter - EVSEs)"),
        ]

    def requires(self) -> list[str]:
        p = self.params
        tags = [p.meter_power_tag]  # the limit tags are optional: one no task provides never lowers the rating
        for n in self._evses:
            tags += [evse_tag(n, p.setpoint_tag), evse_tag(n, p.power_tag)]
        return tags

    def scan(self, cx: Cycle) -> None:
        p, out = self.params, cx.out
        b = budget(cx.inputs, p)
        sp = {n: float(out[evse_tag(n, p.setpoint_tag)]) for n in self._evses}
        fc, fd = scale_into(sp, b)
        if fc < 1.0 or fd < 1.0:
            for n, v in sp.items():
                f = fc if v > 0 else fd
                if f < 1.0 and v != 0.0:
                    out[evse_tag(n, p.setpoint_tag)] = v * f
        reason = ""
        if fc < 1.0:
            reason = f"import limit {b.import_limit_w:.0f} W: EVSE charging scaled to {fc:.0%}"
        elif fd < 1.0:
            reason = f"export limit {b.export_limit_w:.0f} W: EVSE discharging scaled to {fd:.0%}"
        if b.building_w is None and not reason:
            reason = "site meter not good: building taken at its largest"
        out[OUT_SCALE_CHARGE] = fc
        out[OUT_SCALE_DISCHARGE] = fd
        out[OUT_BUILDING] = 0.0 if b.building_w is None else b.building_w
        if reason != self._reason:
            out[OUT_REASON] = reason
            cx.event("limit", reason or "connection limit no longer acting", scale_charge=fc, scale_discharge=fd)
            self._reason = reason
