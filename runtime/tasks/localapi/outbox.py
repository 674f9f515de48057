"""A bounded outbox for a message bus: telemetry may be dropped, events never are.

Delivery is at-least-once (docs/design.md "Delivery"): a message leaves the outbox only after the broker
confirmed it, and a resend is the byte-identical message (same body, same ``message_id``). When the
outbox is full, the oldest periodic telemetry goes first (counted in ``dropped``); an event is never
dropped: when only events are left, the outbox grows past its bound and counts it in ``over_bound``, and
the task logs it, because losing an event would break the gap-free sequence a consumer relies on.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class Outgoing:
    routing_key: str
    body: bytes
    event: bool  # False: periodic telemetry (droppable)
    message_id: str | None = None


class Outbox:
    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self._items: deque[Outgoing] = deque()
        self.dropped = 0  # telemetry messages dropped because the outbox was full
        self.over_bound = 0  # events kept although the outbox was full
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, msg: Outgoing) -> None:
        if len(self._items) >= self.capacity:
            oldest = next((i for i, m in enumerate(self._items) if not m.event), None)
            if oldest is not None:
                del self._items[oldest]
                self.dropped += 1
            elif not msg.event:
                self.dropped += 1
                return
            else:
                self.over_bound += 1
        self._items.append(msg)
        self._ready.set()

    def peek(self) -> Outgoing | None:
        return self._items[0] if self._items else None

    def confirmed(self, msg: Outgoing) -> None:
        """The broker confirmed ``msg`` (the head): it leaves the outbox."""
        if self._items and self._items[0] is msg:
            self._items.popleft()
        if not self._items:
            self._ready.clear()

    async def wait(self) -> None:
        await self._ready.wait()

    def events(self) -> int:
        return sum(1 for m in self._items if m.event)
