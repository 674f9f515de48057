"""The persistent queue of transaction messages: nothing lost, nothing duplicated except identical resends.

A transaction message is serialised once, written here (with the transaction state that numbered it, in
the same SQLite transaction) before it is sent, and removed only when the CSMS answered it. After a
restart or reconnect the same text goes out again: same message id, same ``seqNo`` (OCPP 2.0.1 part 2,
E12/E13; docs/design.md "Delivery"). SQLite in WAL mode with ``synchronous=FULL``: a commit survives
kill -9 and power loss. Over ``max_bytes`` the queue thins the meter values inside periodic messages
that were never sent; it never drops a numbered message.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.store import open_store
from runtime.tasks.ocpp.protocol import call_text

log = logging.getLogger("v2g_plc.ocpp")

SCHEMA = 1


@dataclass(frozen=True)
class Item:
    pos: int
    unique_id: str
    action: str
    text: str
    attempts: int


class MessageQueue:
    def __init__(self, path: Path, max_bytes: int = 4_000_000) -> None:
        self.max_bytes = max_bytes
        self.db = open_store(
            path,
            SCHEMA,
            "CREATE TABLE messages (pos INTEGER PRIMARY KEY AUTOINCREMENT, uid TEXT UNIQUE NOT NULL, "
            "action TEXT NOT NULL, text TEXT NOT NULL, periodic INTEGER NOT NULL, "
            "attempts INTEGER NOT NULL DEFAULT 0)",
            "queue",
            check_same_thread=False,
        )

    def close(self) -> None:
        self.db.close()

    def state(self, key: str) -> Any:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", ("state:" + key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def put(
        self, unique_id: str, action: str, payload: dict[str, Any], *, periodic: bool, state: tuple[str, Any]
    ) -> str:
        """Store one message and the state that produced it, atomically; return its text."""
        text = call_text(unique_id, action, payload)
        key, value = state
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.execute(
                "INSERT INTO messages (uid, action, text, periodic) VALUES (?, ?, ?, ?)",
                (unique_id, action, text, int(periodic)),
            )
            self.db.execute(
                "INSERT OR REPLACE INTO meta VALUES (?, ?)", ("state:" + key, json.dumps(value, sort_keys=True))
            )
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        if self.size_bytes() > self.max_bytes:
            self.thin()
        return text

    def save_state(self, key: str, value: Any) -> None:
        with self.db:
            self.db.execute(
                "INSERT OR REPLACE INTO meta VALUES (?, ?)", ("state:" + key, json.dumps(value, sort_keys=True))
            )

    def head(self) -> Item | None:
        row = self.db.execute("SELECT pos, uid, action, text, attempts FROM messages ORDER BY pos LIMIT 1").fetchone()
        return None if row is None else Item(*row)

    def remove(self, unique_id: str) -> None:
        with self.db:
            self.db.execute("DELETE FROM messages WHERE uid = ?", (unique_id,))

    def attempted(self, unique_id: str) -> int:
        """Count one delivery attempt that got no positive answer; returns the attempts so far."""
        with self.db:
            self.db.execute("UPDATE messages SET attempts = attempts + 1 WHERE uid = ?", (unique_id,))
        row = self.db.execute("SELECT attempts FROM messages WHERE uid = ?", (unique_id,)).fetchone()
        return 0 if row is None else int(row[0])

    def __len__(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM messages").fetchone()[0])

    def size_bytes(self) -> int:
        return int(self.db.execute("SELECT coalesce(sum(length(text)), 0) FROM messages").fetchone()[0])

    def thin(self) -> int:
        """Halve the meter values of never-sent periodic messages (every second one, oldest first) until the
        queue fits; a message, its id and its ``seqNo`` stay. Only the head is ever sent (one CALL in flight,
        removed when answered), so every message behind it is still unsent. Returns the samples dropped."""
        dropped = 0
        while self.size_bytes() > self.max_bytes:
            rows = self.db.execute(
                "SELECT uid, text FROM messages WHERE periodic = 1 AND attempts = 0 AND text LIKE '%\"meterValue\"%' "
                "AND pos > (SELECT min(pos) FROM messages) ORDER BY pos"
            ).fetchall()
            if not rows:
                log.warning("ocpp: queue over %d bytes with nothing left to thin: kept", self.max_bytes)
                break
            victims = rows[::2]
            with self.db:
                for uid, text in victims:
                    _kind, mid, action, payload = json.loads(text)
                    dropped += sum(len(mv.get("sampledValue", [])) for mv in payload.pop("meterValue", []))
                    self.db.execute(
                        "UPDATE messages SET text = ? WHERE uid = ?", (call_text(mid, action, payload), uid)
                    )
            log.warning("ocpp: queue full: dropped the meter values of %d periodic messages", len(victims))
        return dropped
