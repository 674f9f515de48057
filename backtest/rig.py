"""The cycle rig: programs and interlocks on the scan engine's one step function, on a simulated clock.

One rig for everything that runs the site's logic without its I/O: the backtest steps it through price
rows, and the program and safety tests step it cycle by cycle. The rig owns what they all need and
nothing they differ in: the tag table (the runtime's own tags, the caller's plant tags, and what every
program and interlock declares), the check that every tag a program requires exists, the clock, and a
count of the engine's events by kind. What the plant answers between scans is the caller's business.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from runtime.api import Command, Event, Program, SiteInfo
from runtime.engine import RUNTIME_TAGS, Engine, StepResult, tag_table
from runtime.tags import TagSpec, TagUpdate


class RigError(ValueError):
    """The rig cannot be built: a program requires a tag that nothing declares."""


class CycleRig:
    """``step(updates)`` scans once at ``now_us``; the caller moves ``now_us`` (``advance``) between
    scans, by one period (cycle-by-cycle tests) or by however long nothing moves (the backtest)."""

    def __init__(
        self,
        site: SiteInfo,
        programs: Sequence[Program],
        interlocks: Sequence[Program] = (),
        plant: Iterable[TagSpec] = (),
        age_scale: int = 1,
    ):
        """``age_scale``: how many cycle-clock seconds one real second of input age is worth, as
        ``v2g-plc run --speed N`` builds it (drivers and tasks poll in real time)."""
        parts = (*programs, *interlocks)
        self.tags = tag_table(
            ("runtime", RUNTIME_TAGS), ("plant", tuple(plant)), *((p.name, p.declare()) for p in parts)
        )
        missing = sorted({n for p in parts for n in p.requires() if n not in self.tags.specs})
        if missing:
            raise RigError(f"no tag declares {missing}, which the programs and interlocks require")
        self.site = site
        self.engine = Engine(site, self.tags, programs, interlocks, age_scale=age_scale)
        self.now_us = 0
        self.cycles = 0
        self.events: Counter[str] = Counter()
        self.event_log: list[Event] = []  # every event, for tests that look at their data
        self.last: StepResult | None = None

    def step(self, updates: Iterable[TagUpdate] = (), commands: Sequence[Command] = ()) -> StepResult:
        res = self.engine.step(self.now_us, updates, commands)
        self.cycles += 1
        if res.events:  # most scans have none
            self.events.update(ev.kind for ev in res.events)
            self.event_log.extend(res.events)
        self.last = res
        return res

    def advance(self, us: int | None = None) -> None:
        """Move the clock by ``us`` (default: one scan period)."""
        self.now_us += self.site.period_us if us is None else us
