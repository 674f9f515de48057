"""The task interface: non-real-time work (prices, planner, OCPP, MQTT, metrics) in the task process.

Tasks run on the task process's asyncio loop, never in the scan process (docs/design.md#processes-and-the-task-channel).
They write *shared* tags, which cross to the scan as messages and land at the next cycle start, all at
once. They read the scan's committed image as it is published after each cycle. Time for a task is the
scan's cycle clock (``TaskContext.now_us``) so a simulated site run faster than real time keeps tasks in
step with it; ``calendar()`` turns it into the site's local date and time.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar

from runtime.api import Plugin
from runtime.registry import TASKS
from runtime.tags import US, Image, Quality

EVENT_QUEUE = 10_000  # events waiting for one task that is slow to read them


class TaskContext:
    """The channel between one task and the scan, as the task sees it."""

    def __init__(
        self,
        name: str,
        send: Callable[[str, Any, Quality], None],
        start: dt.datetime,
        log: logging.Logger,
        command: Callable[[str, str, Mapping[str, Any], str], Awaitable[tuple[bool, str]]] | None = None,
        events: bool = False,
        runtime_id: str = "",
    ):
        self.name = name
        # One per runtime start (a new scan process), the same across task-process restarts: a task tells
        # a reboot of the station (OCPP BootNotification) from a restart of its own process (nothing).
        self.runtime_id = runtime_id
        self._send = send
        self._command = command
        self.start = start  # site-local calendar time of cycle-clock zero
        self.log = log
        self.image: Image = Image({})
        self.now_us = 0
        self._changed = asyncio.Condition()
        # Events are kept only for a task that reads them (``Task.events``), from the first one on.
        self._events: collections.deque[dict[str, Any]] | None = collections.deque() if events else None
        self._event_ready = asyncio.Event()
        self._gap: tuple[int, int] | None = None
        self.events_dropped = 0

    def write(self, tag: str, value: Any, quality: Quality = Quality.GOOD) -> None:
        """Send a shared-tag write to the scan; it applies at the next cycle start."""
        self._send(tag, value, quality)

    async def command(self, kind: str, args: Mapping[str, Any] | None = None, *, by: str) -> tuple[bool, str]:
        """Ask the scan for a typed command (runtime/commands.py) on behalf of ``by`` (who asked this
        task: a CSMS identity, a client). Returns (accepted, reason) once the scan applied or refused it;
        the site file's ``commands.allow`` decides what this task's type may ask."""
        if self._command is None:
            return False, "no channel to the scan"
        return await self._command(self.name, kind, args or {}, by)

    @property
    def reads_events(self) -> bool:
        """Whether this task gets the scan's event stream (its class sets ``events = True``)."""
        return self._events is not None

    async def next_event(self) -> dict[str, Any]:
        """The scan's next event (runtime/eventstream.py): ``seq``, ``k``, ``t``, ``kind``, ``source``,
        ``message``, ``data``; or ``{"kind": "gap", "from", "to", "dropped"}`` where events were lost.
        Only a task whose class sets ``events = True`` gets them; at most EVENT_QUEUE of them wait, then
        the oldest go and a gap says which."""
        if self._events is None:
            raise RuntimeError(f"task {self.name}: set events = True on its class to read the event stream")
        while not self._events and self._gap is None:
            self._event_ready.clear()
            await self._event_ready.wait()
        if self._gap is not None:
            (lo, hi), self._gap = self._gap, None
            return {"kind": "gap", "from": lo, "to": hi, "dropped": hi - lo, "message": f"events {lo}-{hi - 1} lost"}
        return self._events.popleft()

    def _event(self, e: dict[str, Any]) -> None:
        q = self._events
        if q is None:
            return
        if len(q) >= EVENT_QUEUE:
            seq = int(q.popleft().get("seq", -1))
            self.events_dropped += 1
            self._gap = (self._gap[0] if self._gap else seq, seq + 1)
        q.append(e)
        self._event_ready.set()

    def calendar(self, now_us: int | None = None) -> dt.datetime:
        """Site-local calendar time of a cycle-clock instant (default: the latest published cycle)."""
        return self.start + dt.timedelta(microseconds=self.now_us if now_us is None else now_us)

    async def next_image(self) -> Image:
        """Wait for the scan's next publication."""
        async with self._changed:
            await self._changed.wait()
        return self.image

    async def sleep_until(self, t_us: int) -> None:
        """Wait until the scan's cycle clock reaches ``t_us`` (works at any ``--speed``)."""
        while self.now_us < t_us:
            await self.next_image()

    async def _publish(self, image: Image, now_us: int) -> None:
        self.image = image
        self.now_us = now_us
        async with self._changed:
            self._changed.notify_all()


class Task(Plugin):
    """Base class. Subclasses declare their shared tags (direction SHARED, with a ``stale_after_s``
    age limit) and implement ``run``. A task that raises is logged and restarted with backoff. A task that
    reads the scan's event stream (``TaskContext.next_event``) sets ``events = True``."""

    events: ClassVar[bool] = False

    async def run(self, cx: TaskContext) -> None:
        raise NotImplementedError


register_task = TASKS.register


def seconds(us: int) -> float:
    return us / US
