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


TagList = list[TagName]
"""A list of tag names in a parameter model (each checked at load)."""


def tag_json(tv: TagValue) -> dict[str, Any]:
    """A tag as JSON: value (null unless finite and good), quality, read time (s of the cycle clock)."""
    v = tv.value
    if isinstance(v, float) and not math.isfinite(v):
        v = None
    return {"value": v if tv.good else None, "quality": tv.quality.value, "t": tv.t_us / 1e6}
