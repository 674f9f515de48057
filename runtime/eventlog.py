"""The event log: repeats counted instead of written, and a file of bounded size.

A program that raises every cycle would otherwise write 50 identical events a second into the journal
and ``events.jsonl`` until the disk is full. Repeats of an identical event (same kind, source and
message) are counted: the first is written, then one summary with the count when the repeats stop
(``QUIET_S`` of cycle time without one) and every ``SUMMARY_S`` of cycle time while they go on. Cycle
time, not wall time, so the same cycles give the same log. ``events.jsonl`` rotates at ``MAX_BYTES``
and keeps ``KEEP`` older generations (``events.jsonl.1`` is the newest of them).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from runtime.api import Event
from runtime.tags import US

log = logging.getLogger("v2g_plc")

QUIET_S = 1.0  # cycle-time seconds without a repeat that end a run of repeats
SUMMARY_S = 10.0  # cycle-time seconds between summaries while repeats go on
MAX_BYTES = 10 * 1024 * 1024  # events.jsonl rotates beyond this ...
KEEP = 3  # ... keeping this many older files: at most 40 MiB of events on disk


@dataclass(slots=True)
class _Run:
    first: Event
    since_us: int  # start of the current summary window
    last_us: int  # last repeat seen
    count: int = 0  # repeats since the last summary


NEVER_FOLDED = frozenset({"trip", "reset"})  # the protective actions an operator must see one by one


class EventLimiter:
    """On the scan thread: cheap when nothing repeats (one dict lookup per event)."""

    def __init__(self, quiet_s: float = QUIET_S, summary_s: float = SUMMARY_S):
        self.quiet_us = round(quiet_s * US)
        self.summary_us = round(summary_s * US)
        self.runs: dict[tuple[str, str, str], _Run] = {}

    @property
    def active(self) -> bool:
        """Must ``feed`` be called even for a cycle without events (to end a run of repeats)?"""
        return bool(self.runs)

    def feed(self, k: int, now_us: int, events: Iterable[Event]) -> list[Event]:
        """This cycle's events in; the events to write out (firsts and summaries)."""
        out: list[Event] = []
        runs = self.runs
        for e in events:
            if e.kind in NEVER_FOLDED:  # each trip and reset is a line of its own, with its own cycle
                out.append(e)
                continue
            key = (e.kind, e.source, e.message)
            run = runs.get(key)
            if run is None:
                runs[key] = _Run(e, now_us, now_us)
                out.append(e)
            else:
                run.count += 1
                run.last_us = now_us
        for key, run in list(runs.items()):
            if now_us - run.last_us >= self.quiet_us:
                if run.count:
                    out.append(self._summary(k, now_us, run, "stopped"))
                del runs[key]
            elif run.count and now_us - run.since_us >= self.summary_us:
                out.append(self._summary(k, now_us, run, "still going on"))
                run.count, run.since_us = 0, now_us
        return out

    def flush(self, k: int, now_us: int) -> list[Event]:
        """At the stop: the summaries of every run of repeats still going on."""
        out = [self._summary(k, now_us, run, "at stop") for run in self.runs.values() if run.count]
        self.runs.clear()
        return out

    @staticmethod
    def _summary(k: int, now_us: int, run: _Run, how: str) -> Event:
        e = run.first
        seconds = (run.last_us - run.since_us) / US
        return Event(
            k,
            now_us,
            e.kind,
            e.source,
            f"{e.message} (repeated {run.count} more times in {seconds:.1f} s; {how})",
            {"repeats": run.count, "first_k": e.k},
        )


class EventFile:
    """``events.jsonl`` with rotation, on the I/O thread. A failed write is logged once per error and
    never raises: losing an event line must not take the I/O thread (and the drivers) down."""

    def __init__(self, path: Path, max_bytes: int = MAX_BYTES, keep: int = KEEP):
        self.path = path
        self.max_bytes = max_bytes
        self.keep = keep
        self._fh: IO[str] | None = None
        self._size = 0
        self._error: str | None = None

    def write(self, events: Iterable[Event]) -> None:
        lines = []
        for e in events:
            lines.append(json.dumps(e.as_json(), default=str) + "\n")
            log.warning("event k=%d kind=%s source=%s: %s", e.k, e.kind, e.source, e.message)
        data = "".join(lines)
        try:
            if self._fh is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (kept open across writes)
                self._size = self._fh.tell()
            if self._size and self._size + len(data) > self.max_bytes:
                self._rotate()
            assert self._fh is not None
            self._fh.write(data)
            self._fh.flush()
            self._size += len(data)
            self._error = None
        except OSError as exc:
            if str(exc) != self._error:
                self._error = str(exc)
                log.error("cannot write the event log %s: %s", self.path, exc)

    def _rotate(self) -> None:
        self.close()
        for i in range(self.keep - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{i + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        self._size = 0

    def close(self) -> None:
        fh, self._fh = self._fh, None
        if fh is not None:
            fh.close()
