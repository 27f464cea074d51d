"""What operators decided for a digest of an item: approved (`updater approve`, `POST
/v1/approve`), skipped for good (`updater skip`, `POST /v1/skip`) or undone (`updater
rollback`: held back until approved). An approval is bound to that digest: a newer one needs a
new approval."""

from __future__ import annotations

import sqlite3
import threading
import time

from updater.core.policy import APPROVED, SKIPPED, UNDONE
from updater.errors import StateError
from updater.store.state import connect, read_row

KEPT = 10_000


class OperatorDecisions:
    def __init__(self, state_dir: str) -> None:
        self._db = connect(state_dir)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    def decide(self, name: str, digest: str, decision: str) -> None:
        """Record `decision` (approved or skipped) for `digest` of `name`; StateError when the
        database cannot keep it (then nothing was decided)."""
        assert decision in (APPROVED, SKIPPED, UNDONE)
        try:
            with self._lock:
                self._db.execute("INSERT OR REPLACE INTO decisions VALUES (?, ?, ?, ?)",
                                 (name, digest, decision, time.time()))
                self._db.execute("DELETE FROM decisions WHERE rowid <= "
                                 "(SELECT MAX(rowid) FROM decisions) - ?", (KEPT,))
        except sqlite3.Error as exc:
            raise StateError(f"the decision for {name} was not recorded ({exc})") from None

    def undecide(self, name: str, digest: str, previous: str | None) -> None:
        """Put back what was decided for `digest` of `name` before (`previous`, None: nothing)."""
        if previous is not None:
            return self.decide(name, digest, previous)
        try:
            with self._lock:
                self._db.execute("DELETE FROM decisions WHERE name = ? AND digest = ?",
                                 (name, digest))
        except sqlite3.Error as exc:
            raise StateError(f"the decision for {name} was not taken back ({exc})") from None
        return None

    def decision(self, name: str, digest: str) -> str | None:
        try:
            with self._lock:
                row = self._db.execute("SELECT decision FROM decisions WHERE name = ? AND "
                                       "digest = ?", (name, digest)).fetchone()
        except sqlite3.Error:
            return None  # then it waits, as undecided
        return str(row[0]) if row else None


class DecisionsSoFar:
    """Reading decisions without opening the database for writing (`updater check`)."""

    def __init__(self, state_dir: str) -> None:
        self._state_dir = state_dir

    def close(self) -> None:
        pass

    def decision(self, name: str, digest: str) -> str | None:
        row = read_row(self._state_dir, "SELECT decision FROM decisions WHERE name = ? AND "
                       "digest = ?", (name, digest))
        return str(row[0]) if row else None
