"""The event stream from the scan to the task process: every event, numbered, resumable.

Images say how things are after a cycle; a trip that starts and clears between two publications, or a
force set and released in one cycle, never shows in one. Events do: the scan hands each cycle's events
to the I/O thread, which numbers them (``seq``, gap-free from 0 for one ``stream`` id, a new id per
runtime start) and keeps the latest ``capacity`` of them. The task process names where it wants to
resume (``["sub", stream, next_seq]``, its position kept in ``state_dir``); it gets every retained event
from there, in order, in messages of at most MAX_MSG bytes.

When the buffer is full the oldest event is dropped and counted (``dropped``, logged once per run of
drops): a subscriber that had not received it gets a ``gap`` message naming the missing range before the
next event, never a silent hole. Delivery is at least once: a task process killed after receiving a
batch but before recording its position gets that batch again, with the same numbers.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import logging
import pickle
import socket
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from runtime.api import Event
from runtime.taskproc import MAX_MSG, sized

log = logging.getLogger("v2g_plc.events")

CAPACITY = 10_000  # events kept for a task process that is down or slow (a few hours of a busy site)
RETRY_S = 0.01


class EventStream:
    """Lives on the I/O thread's loop; ``feed`` and ``subscribe`` are called there (call_soon_threadsafe)."""

    def __init__(
        self,
        sock: Callable[[], socket.socket | None],
        loop: asyncio.AbstractEventLoop,
        capacity: int = CAPACITY,
    ) -> None:
        self.sock = sock  # the channel's current socket (None while no task process is attached)
        self.loop = loop
        self.capacity = capacity
        self.stream = uuid.uuid4().hex[:16]
        self.buf: collections.deque[tuple[int, dict[str, Any]]] = collections.deque()
        self.next_seq = 0
        self.dropped = 0
        self.cursor: int | None = None  # the next seq the subscriber should get; None: no subscriber
        self.sent = 0  # every event below this was delivered to a task process once
        self.limit = MAX_MSG
        self._retry: asyncio.TimerHandle | None = None
        self._dropping = False

    @property
    def oldest(self) -> int:
        return self.buf[0][0] if self.buf else self.next_seq

    def feed(self, events: Iterable[Event]) -> None:
        for e in events:
            self.buf.append((self.next_seq, {"seq": self.next_seq, **e.as_json()}))
            self.next_seq += 1
            if len(self.buf) > self.capacity:
                seq, _ = self.buf.popleft()
                if seq >= self.sent:  # retired before any task process had it: counted, told as a gap
                    self.dropped += 1
                    if not self._dropping:
                        log.error("event buffer full (%d): the oldest undelivered events are dropped", self.capacity)
                        self._dropping = True
        self.pump()

    def subscribe(self, stream: str | None, next_seq: int | None) -> None:
        """Where the (new) task process resumes: its own position in this stream, or from the oldest
        event kept when it names another stream (the runtime restarted) or none."""
        if stream == self.stream and next_seq is not None and 0 <= next_seq <= self.next_seq:
            self.cursor = next_seq
        else:
            self.cursor = self.oldest
        self.pump()

    def detach(self) -> None:
        self.cursor = None

    def pump(self) -> None:
        """Send what the subscriber has not had yet; a full socket retries shortly, nothing is lost."""
        self._retry = None
        if self.cursor is None or self.sock() is None:
            return
        if self.cursor < self.oldest:
            if not self._send(("gap", self.stream, self.cursor, self.oldest, self.dropped)):
                self._later()
                return
            log.error("event stream gap: events %d-%d were dropped before delivery", self.cursor, self.oldest - 1)
            self.cursor = self.oldest
            self._dropping = False
        start = self.cursor - self.oldest
        pending: Sequence[dict[str, Any]] = [e for _, e in list(self.buf)[start:]]
        if not pending:
            return
        try:
            for part, data in sized(pending, self._encode, self.limit):
                if not self._send_raw(data):
                    self._later()
                    return
                self.cursor += len(part)
                self.sent = max(self.sent, self.cursor)
        except ValueError as exc:  # one event larger than a message: never happens with Event's sizes
            log.error("event %d not deliverable (%s); skipped with a gap", self.cursor, exc)
            self._send(("gap", self.stream, self.cursor, self.cursor + 1, self.dropped))
            self.cursor += 1
            self._later()

    def _encode(self, part: Sequence[dict[str, Any]]) -> bytes:
        return pickle.dumps(("ev", self.stream, list(part)), pickle.HIGHEST_PROTOCOL)

    def _send(self, msg: tuple[Any, ...]) -> bool:
        return self._send_raw(pickle.dumps(msg, pickle.HIGHEST_PROTOCOL))

    def _send_raw(self, data: bytes) -> bool:
        s = self.sock()
        if s is None:
            return False
        try:
            s.send(data)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            if exc.errno == errno.EMSGSIZE and self.limit > 1024:
                self.limit //= 2  # the kernel takes less than we thought: smaller messages, same events
            return False
        return True

    def _later(self) -> None:
        if self._retry is None:
            self._retry = self.loop.call_later(RETRY_S, self.pump)
