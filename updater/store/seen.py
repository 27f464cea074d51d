"""When this updater first saw each digest of a repository, by its own clock (never the image's
`created` field, which a build sets to anything): what a minimum age (`min_age`) counts from.
Kept in the state database, so a restart does not start the clocks again."""

from __future__ import annotations

import sqlite3
import threading

from updater.store.state import connect, read_row

KEPT = 10_000


class FirstSeen:
    """Recording first sightings (`updater update` and `run`); a failing database costs the
    memory of it: a digest is then as new as this process's first sight of it."""

    def __init__(self, state_dir: str) -> None:
        self._db = connect(state_dir)
        self._lock = threading.Lock()
        self._memory: dict[tuple[str, str], float] = {}

    def close(self) -> None:
        self._db.close()

    def first_seen(self, repository: str, digest: str, now: float) -> float:
        try:
            with self._lock:
                self._db.execute("INSERT OR IGNORE INTO first_seen VALUES (?, ?, ?)",
                                 (repository, digest, now))
                row = self._db.execute("SELECT seen FROM first_seen WHERE repository = ? AND "
                                       "digest = ?", (repository, digest)).fetchone()
                self._db.execute("DELETE FROM first_seen WHERE rowid <= "
                                 "(SELECT MAX(rowid) FROM first_seen) - ?", (KEPT,))
            return float(row[0])
        except sqlite3.Error:
            return self._memory.setdefault((repository, digest), now)


class SeenSoFar:
    """Reading first sightings without recording any (`updater check`, which needs no
    writable state_dir): a digest no pass has seen yet counts as seen now."""

    def __init__(self, state_dir: str) -> None:
        self._state_dir = state_dir

    def close(self) -> None:
        pass

    def first_seen(self, repository: str, digest: str, now: float) -> float:
        row = read_row(self._state_dir, "SELECT seen FROM first_seen WHERE repository = ? AND "
                       "digest = ?", (repository, digest))
        return float(str(row[0])) if row else now
