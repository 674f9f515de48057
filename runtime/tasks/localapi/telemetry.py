"""What the local API publishes: the public tags of the image, and events seen in successive images.

The scan's own sequence-numbered event stream (docs/design.md "Commands and events across the task
channel") does not exist yet. Until it does, :class:`EventWatch` derives events from the changes between
two publications of the image (mode transitions, trips and resets, cessation, limit changes) and numbers
them itself; an event that starts and ends between two publications (20 ms apart) is not seen. When the
stream lands, its events replace the watch and keep their scan-given sequence numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from runtime.api import TagName
from runtime.tags import Image, TagValue

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

WATCHED: dict[str, str] = {
    "mode.state": "transition",
    "safety.trip": "trip",
    "safety.cessation": "cessation",
    "safety.limit_charge": "limit",
    "safety.limit_discharge": "limit",
}


def tag_json(tv: TagValue) -> dict[str, Any]:
    """A tag as JSON: value (null unless finite and good), quality, read time (s of the cycle clock)."""
    v = tv.value
    if isinstance(v, float) and not math.isfinite(v):
        v = None
    return {"value": v if tv.good else None, "quality": tv.quality.value, "t": tv.t_us / 1e6}


@dataclass(frozen=True)
class SiteEvent:
    seq: int
    kind: str  # transition, trip, reset, cessation, limit
    tag: str
    old: Any
    new: Any
    t_us: int

    def as_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "kind": self.kind,
            "tag": self.tag,
            "old": self.old,
            "new": self.new,
            "t": self.t_us / 1e6,
        }


@dataclass
class EventWatch:
    """Turns changes of the watched tags between publications into numbered events."""

    seq: int = 0
    last: dict[str, Any] = field(default_factory=dict)

    def feed(self, image: Image, now_us: int) -> list[SiteEvent]:
        out: list[SiteEvent] = []
        for tag, kind in WATCHED.items():
            tv = image.tag(tag)
            if not tv.good:
                continue
            new = tv.value
            if tag not in self.last:
                self.last[tag] = new  # the first image is the baseline, not a change
                continue
            old = self.last[tag]
            if new == old:
                continue
            self.last[tag] = new
            if kind == "trip" and not new:
                kind = "reset"
            self.seq += 1
            out.append(SiteEvent(self.seq, kind, tag, old, new, now_us))
        return out
