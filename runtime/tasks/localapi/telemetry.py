"""What the local API publishes of the image: the public tags, each as value, quality and read time.

Events are not derived here: AMQP and the metrics read the scan's own sequence-numbered event stream
(``TaskContext.next_event``), which also carries what starts and ends between two publications.
"""

from __future__ import annotations

import math
from typing import Any

from runtime.api import TagName
from runtime.tags import TagValue

# What a site shows by default (a site names its own list in the task's ``tags:``).
DEFAULT_TAGS: tuple[str, ...] = (
    "mode.state",
    "mode.reason",
    "safety.trip",
    "safety.reason",
    "safety.cessation",
    "safety.limit_charge",
    "safety.limit_discharge",
    "inverter.power",
    "inverter.setpoint",
    "inverter.enable",
    "grid.voltage",
    "grid.frequency",
    "ev.connected",
    "ev.soc",
    "plan.power",
)

# What a depot shows for the site as a whole (the per-EVSE list above goes under each EVSE): the meter at
# the point of common coupling, the building, the connection's budget and limits, the fleet plan.
SITE_TAGS: tuple[str, ...] = (
    "meter.power",
    "meter.voltage",
    "meter.frequency",
    "connection.building_w",
    "connection.reason",
    "alloc.budget_high_w",
    "alloc.budget_low_w",
    "local.connection_import_w",
    "local.connection_export_w",
    "fleet.status",
    "fleet.reason",
    "fleet.shortfall_kwh",
)


def public_tags(tags: list[str], site_tags: list[str], evses: list[int]) -> list[tuple[int | None, str, str]]:
    """(EVSE or None, the tag's plain name, its site name) of everything an interface publishes: a single
    site's ``tags``; on a depot the site's ``site_tags`` and each EVSE's ``tags`` under ``evse<n>.``."""
    if not evses:
        return [(None, t, t) for t in tags]
    return [(None, t, t) for t in site_tags] + [(n, t, f"evse{n}.{t}") for n in evses for t in tags]


TagList = list[TagName]
"""A list of tag names in a parameter model (each checked at load)."""


def tag_json(tv: TagValue) -> dict[str, Any]:
    """A tag as JSON: value (null unless finite and good), quality, read time (s of the cycle clock)."""
    v = tv.value
    if isinstance(v, float) and not math.isfinite(v):
        v = None
    return {"value": v if tv.good else None, "quality": tv.quality.value, "t": tv.t_us / 1e6}
