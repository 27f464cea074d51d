"""The state database in `state_dir` (SQLite, standard library): the update journal, the
history of outcomes and what notifications still owe. Each user opens its own connection."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from updater.errors import ConfigError

FILENAME = "updater.db"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS updates (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, old_id TEXT NOT NULL, new_id TEXT,
    image TEXT NOT NULL, new_digest TEXT NOT NULL, step TEXT NOT NULL, outcome TEXT,
    started REAL NOT NULL, changed REAL NOT NULL);
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY, time REAL NOT NULL, name TEXT NOT NULL, kind TEXT NOT NULL,
    image TEXT NOT NULL, outcome TEXT NOT NULL, old_digest TEXT, new_digest TEXT,
    old_version TEXT, new_version TEXT, reason TEXT, seconds REAL NOT NULL);
CREATE INDEX IF NOT EXISTS updates_old_id ON updates (old_id);
CREATE INDEX IF NOT EXISTS history_name ON history (name, time);
CREATE TABLE IF NOT EXISTS notified (
    name TEXT NOT NULL, digest TEXT NOT NULL, PRIMARY KEY (name, digest));
CREATE TABLE IF NOT EXISTS pending_notifications (
    id INTEGER PRIMARY KEY, target TEXT NOT NULL, title TEXT NOT NULL, body TEXT NOT NULL,
    level TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0);
"""


# Columns added to `updates` after the first release: (name, declaration).
_UPDATES_ADDED = (
    ("kind", "TEXT NOT NULL DEFAULT 'update'"),  # 'update', or 'dependant' (stopped for one)
    ("backup_id", "TEXT"),  # a restorable copy of a container the engine removes on stop
    ("saved", "TEXT"),  # JSON: what to put back on the old container (paused, restart policy)
)


def _add_columns(db: sqlite3.Connection, table: str,
                 columns: tuple[tuple[str, str], ...]) -> None:
    """Bring a database made by an earlier version up to date (SQLite adds columns in place)."""
    present = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
    for name, declaration in columns:
        if name not in present:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {declaration}")


def connect(state_dir: str) -> sqlite3.Connection:
    """An autocommit connection to the state database, created on first use."""
    directory = Path(state_dir)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(directory / FILENAME, isolation_level=None, timeout=30,
                             check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(_SCHEMA)
        _add_columns(db, "updates", _UPDATES_ADDED)
    except (OSError, sqlite3.Error) as exc:
        raise ConfigError(f"cannot use state_dir {state_dir} ({exc}); set state_dir to a "
                          "writable directory") from None
    return db
