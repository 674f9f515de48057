"""A bounded, persistent outbox for a message bus: telemetry may be dropped, events never are.

Delivery is at-least-once (docs/design.md "Delivery"): a message leaves the outbox only after the broker
confirmed it, and a resend is the byte-identical message (same body, same ``message_id``). The outbox is
a SQLite file (WAL, ``synchronous=FULL``, like the OCPP queue) so that the events it holds survive a
crash of the task process and go out, in order, after the restart. When the outbox is full, the oldest
periodic telemetry goes first (counted in ``dropped``); an event is never dropped: when only events are
left, the outbox grows past its bound and counts it in ``over_bound``, and the task logs it, because
losing an event would break the gap-free sequence a consumer relies on.

Layout (``<state_dir>/amqp-outbox.sqlite``, schema 1): ``meta(key, value)`` with ``schema``;
``messages(pos, routing_key, body, event, message_id)`` in send order.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from runtime.store import open_store

SCHEMA = 1


@dataclass(frozen=True)
class Outgoing:
    routing_key: str
    body: bytes
    event: bool  # False: periodic telemetry (droppable)
    message_id: str | None = None
    pos: int = 0  # its place in the outbox (set when stored)


class Outbox:
    def __init__(self, capacity: int, path: Path | None = None):
        """``path`` None keeps the outbox in memory only (a test of the drop rule, a site without state)."""
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self.dropped = 0  # telemetry messages dropped because the outbox was full
        self.over_bound = 0  # events kept although the outbox was full
        self._ready = asyncio.Event()
        self.db = open_store(
            path,
            SCHEMA,
            "CREATE TABLE messages (pos INTEGER PRIMARY KEY AUTOINCREMENT, routing_key TEXT NOT NULL, "
            "body BLOB NOT NULL, event INTEGER NOT NULL, message_id TEXT)",
            "outbox",
        )
        if len(self):
            self._ready.set()

    def close(self) -> None:
        self.db.close()

    def __len__(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM messages").fetchone()[0])

    def put(self, msg: Outgoing) -> None:
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            if len(self) >= self.capacity:
                oldest = self.db.execute("SELECT pos FROM messages WHERE event = 0 ORDER BY pos LIMIT 1").fetchone()
                if oldest is not None:
                    self.db.execute("DELETE FROM messages WHERE pos = ?", oldest)
                    self.dropped += 1
                elif not msg.event:
                    self.dropped += 1
                    return
                else:
                    self.over_bound += 1
            self.db.execute(
                "INSERT INTO messages (routing_key, body, event, message_id) VALUES (?, ?, ?, ?)",
                (msg.routing_key, msg.body, int(msg.event), msg.message_id),
            )
        self._ready.set()

    def items(self, limit: int = -1) -> list[Outgoing]:
        """The messages waiting, oldest first (at most ``limit``; -1: all)."""
        rows = self.db.execute(
            "SELECT pos, routing_key, body, event, message_id FROM messages ORDER BY pos LIMIT ?", (limit,)
        ).fetchall()
        return [Outgoing(key, bytes(body), bool(event), mid, pos) for pos, key, body, event, mid in rows]

    def peek(self) -> Outgoing | None:
        head = self.items(1)
        return head[0] if head else None

    def confirmed(self, msg: Outgoing) -> None:
        """The broker confirmed ``msg`` (the head): it leaves the outbox."""
        with self.db:
            self.db.execute("DELETE FROM messages WHERE pos = ?", (msg.pos,))
        if not len(self):
            self._ready.clear()

    async def wait(self) -> None:
        await self._ready.wait()

    def events(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM messages WHERE event = 1").fetchone()[0])
