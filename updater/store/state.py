"""The state database in `state_dir` (SQLite, standard library): the update journal, the
history of outcomes and what notifications still owe. Each user opens its own connection."""

from __future__ import annotations

import sqlite3
import threading
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


# The layout this updater writes (PRAGMA user_version). 0: a database from before versions
# were kept (or a new one); each step in _UPGRADES brings it one version up, in a transaction.
SCHEMA_VERSION = 6


def _to_1(db: sqlite3.Connection) -> None:
    db.executescript("BEGIN IMMEDIATE;" + _SCHEMA)
    _add_columns(db, "updates", _UPDATES_ADDED)


def _to_2(db: sqlite3.Connection) -> None:
    """Errors already notified, so an unchanged one is not sent again every pass."""
    db.execute("BEGIN IMMEDIATE")
    db.execute("CREATE TABLE IF NOT EXISTS notified_errors (name TEXT PRIMARY KEY, "
               "reason TEXT NOT NULL, time REAL NOT NULL)")


def _to_3(db: sqlite3.Connection) -> None:
    """Which platform manifest an index names, so an index rebuilt for other platforms only is
    known equal for this one without reading it again."""
    db.execute("BEGIN IMMEDIATE")
    db.execute("CREATE TABLE IF NOT EXISTS platform_digests (repository TEXT NOT NULL, "
               "digest TEXT NOT NULL, platform TEXT NOT NULL, found TEXT NOT NULL, "
               "PRIMARY KEY (repository, digest, platform))")


def _to_4(db: sqlite3.Connection) -> None:
    """When this updater first saw each digest of a repository (the minimum age counts from
    it)."""
    db.execute("BEGIN IMMEDIATE")
    db.execute("CREATE TABLE IF NOT EXISTS first_seen (repository TEXT NOT NULL, "
               "digest TEXT NOT NULL, seen REAL NOT NULL, PRIMARY KEY (repository, digest))")


def _to_5(db: sqlite3.Connection) -> None:
    """Operators' approvals and skips, each bound to one digest of one item."""
    db.execute("BEGIN IMMEDIATE")
    db.execute("CREATE TABLE IF NOT EXISTS decisions (name TEXT NOT NULL, digest TEXT NOT NULL, "
               "decision TEXT NOT NULL, time REAL NOT NULL, PRIMARY KEY (name, digest))")


def _to_6(db: sqlite3.Connection) -> None:
    """The images containers ran before their updates, kept for `updater rollback`."""
    db.execute("BEGIN IMMEDIATE")
    db.execute("CREATE TABLE IF NOT EXISTS kept_images (id INTEGER PRIMARY KEY, "
               "name TEXT NOT NULL, time REAL NOT NULL, image TEXT NOT NULL, digest TEXT, "
               "image_id TEXT NOT NULL, new_digest TEXT, new_image_id TEXT NOT NULL)")
    db.execute("CREATE INDEX IF NOT EXISTS kept_images_name ON kept_images (name, id)")


_UPGRADES = {1: _to_1, 2: _to_2, 3: _to_3, 4: _to_4, 5: _to_5, 6: _to_6}


class PlatformDigests:
    """The registry client's KnownPlatforms, in the state database; a failing read or write
    costs only the saving (the registry is asked again)."""

    KEPT = 10_000

    def __init__(self, state_dir: str) -> None:
        self._db = connect(state_dir)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    def get(self, repository: str, digest: str, platform: str) -> str | None:
        try:
            with self._lock:
                row = self._db.execute("SELECT found FROM platform_digests WHERE repository = ? "
                                       "AND digest = ? AND platform = ?",
                                       (repository, digest, platform)).fetchone()
        except sqlite3.Error:
            return None
        return str(row[0]) if row else None

    def put(self, repository: str, digest: str, platform: str, found: str) -> None:
        try:
            with self._lock:
                self._db.execute("INSERT OR REPLACE INTO platform_digests VALUES (?, ?, ?, ?)",
                                 (repository, digest, platform, found))
                self._db.execute("DELETE FROM platform_digests WHERE rowid <= "
                                 "(SELECT MAX(rowid) FROM platform_digests) - ?", (self.KEPT,))
        except sqlite3.Error:
            pass


def read_only(path: Path) -> sqlite3.Connection:
    """A connection that only reads the state database at `path` (for commands that change
    nothing); sqlite3.Error when it cannot be read. A database in WAL mode that no process has
    open has no `-shm` file, and SQLite cannot create one in a directory it may not write (a
    `:ro` mount, another user's): it is then read as immutable, which is exact, since nothing
    writes it (a writer would have made the `-shm`)."""
    uri = path.resolve().as_uri()
    db = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=5)
    try:
        db.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        return db
    except sqlite3.OperationalError:
        db.close()
    db = sqlite3.connect(f"{uri}?immutable=1", uri=True, timeout=5)
    db.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
    return db


def read_row(state_dir: str, sql: str, parameters: tuple[str, ...]) -> tuple[object, ...] | None:
    """The first row of `sql`, read without writing anything (no database is created); None
    when there is none, or no readable database (then the caller counts it as unknown)."""
    path = Path(state_dir) / FILENAME
    if not path.exists():
        return None
    try:
        db = read_only(path)
        try:
            row: tuple[object, ...] | None = db.execute(sql, parameters).fetchone()
            return row
        finally:
            db.close()
    except sqlite3.Error:
        return None  # unreadable, or written by an updater from before that table


def upgrade(db: sqlite3.Connection, path: Path) -> None:
    """Bring the database up to SCHEMA_VERSION, one committed step at a time; ConfigError when
    a newer updater wrote it (its layout is unknown here: nothing is touched)."""
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise ConfigError(f"the state database {path} has schema version {version}, newer than "
                          f"this updater knows ({SCHEMA_VERSION}); run a newer updater or "
                          "point state_dir elsewhere")
    for target in range(version + 1, SCHEMA_VERSION + 1):
        try:
            _UPGRADES[target](db)  # opens the transaction
            db.execute(f"PRAGMA user_version = {target}")
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise


def connect(state_dir: str) -> sqlite3.Connection:
    """An autocommit connection to the state database, created or upgraded on first use."""
    directory = Path(state_dir)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(directory / FILENAME, isolation_level=None, timeout=30,
                             check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        upgrade(db, directory / FILENAME)
    except (OSError, sqlite3.Error) as exc:
        raise ConfigError(f"cannot use state_dir {state_dir} ({exc}); set state_dir to a "
                          "writable directory") from None
    return db
