"""The SQLite stores the runtime writes under ``state_dir`` (the OCPP queue, the AMQP outbox): opened one way.

Why one way: a store that must lose nothing across a crash needs WAL with ``synchronous=FULL`` (a
committed row survives power loss), a schema version checked before any row is read, and its tables
created in the same transaction that writes that version, so a crash mid-creation leaves nothing half
made (docs/design.md, "Files the runtime writes").
"""

from __future__ import annotations

import sqlite3
from pathlib import Path


def open_store(
    path: Path | None, schema: int, create: str, what: str, check_same_thread: bool = True
) -> sqlite3.Connection:
    """The connection to the store at ``path`` (in memory for None), its ``messages`` table made with
    ``create`` on first use; ValueError when the file holds another schema than ``schema``."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(
        ":memory:" if path is None else str(path), isolation_level=None, check_same_thread=check_same_thread
    )
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        row = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if row is None:
            db.execute(create)
            db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(schema),))
        elif int(row[0]) != schema:
            raise ValueError(f"{path}: {what} schema {row[0]}, this runtime reads {schema}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        db.close()
        raise
    return db
