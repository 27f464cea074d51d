"""History: every outcome that changed or tried to change something, or needs attention,
kept in the state database; `updater history` and the API read it back. Up-to-date and pinned
results are not stored (they would only repeat every pass); the newest 10,000 rows are kept."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable
from typing import Any

from updater.core.report import ItemReport, Outcome
from updater.errors import StateError
from updater.store import state

KEPT_ROWS = 10_000
# How many entries `updater history` and `GET /v1/history` show: by default, and at most.
DEFAULT_LIMIT = 50
MAX_LIMIT = KEPT_ROWS
# Not stored: they would only repeat every pass (a held-back image's rollback is stored once).
_QUIET = (Outcome.UP_TO_DATE.value, Outcome.PINNED.value, Outcome.HELD_BACK.value)
# Stored once while they stay the same.
_ONCE = (Outcome.AVAILABLE.value, Outcome.ERROR.value, Outcome.ROLLING.value,
         Outcome.PAUSED.value, Outcome.WAITING.value)
_COLUMNS = ("time", "name", "kind", "image", "outcome", "old_digest", "new_digest",
            "old_version", "new_version", "reason", "seconds")
_INSERT = ("INSERT INTO history (time, name, kind, image, outcome, old_digest, new_digest, "
           "old_version, new_version, reason, seconds) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
_SELECT = ("SELECT time, name, kind, image, outcome, old_digest, new_digest, old_version, "
           "new_version, reason, seconds FROM history")


def parse_limit(text: str) -> int:
    """A `limit` as the CLI and the API take it; ValueError naming the bad value."""
    if not text.strip().isdigit() or not 0 < int(text) <= MAX_LIMIT:
        raise ValueError(f"limit {text!r} must be a whole number from 1 to {MAX_LIMIT}")
    return int(text)


class History:
    def __init__(self, state_dir: str) -> None:
        self._state_dir = state_dir
        self._db = state.connect(state_dir)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    def record(self, when: float, items: Iterable[ItemReport]) -> int:
        """Store the outcomes of one pass; returns how many rows were written. An available
        update or an error the same as the newest row of that item is not stored again: a
        monitor-only container would otherwise add a row every pass and push real updates
        out of the kept rows."""
        rows = [(when, i.name, i.kind, i.image, i.outcome.value, i.old_digest, i.new_digest,
                 i.versions.old, i.versions.new, i.reason, i.seconds)
                for i in items if i.outcome.value not in _QUIET]
        try:
            with self._lock:
                rows = [row for row in rows if not self._repeats(row)]
                self._db.executemany(_INSERT, rows)
                self._db.execute("DELETE FROM history WHERE id <= "
                                 "(SELECT MAX(id) FROM history) - ?", (KEPT_ROWS,))
        except sqlite3.Error as exc:
            raise StateError(f"cannot write the history in {self._state_dir} ({exc})") from None
        return len(rows)

    def note(self, when: float, name: str, kind: str, image: str, action: str,
             digest: str | None, reason: str) -> None:
        """Record an operator's action (`action`, e.g. `update-asked`, for `digest`) and
        where it came from (`reason`); StateError when it cannot be written."""
        try:
            with self._lock:
                self._db.execute(_INSERT, (when, name, kind, image, action, None, digest, None,
                                           None, reason, 0.0))
        except sqlite3.Error as exc:
            raise StateError(f"cannot write the history in {self._state_dir} ({exc})") from None

    def _repeats(self, row: tuple[Any, ...]) -> bool:
        if row[4] not in _ONCE:
            return False
        newest = self._db.execute("SELECT outcome, new_digest, reason FROM history WHERE name = ? "
                                  "AND kind = ? ORDER BY id DESC LIMIT 1",
                                  (row[1], row[2])).fetchone()
        return newest is not None and tuple(newest) == (row[4], row[6], row[9])

    def entries(self, name: str | None = None, limit: int = DEFAULT_LIMIT) -> list[dict[str, Any]]:
        """The newest entries first, optionally for one container or service."""
        try:
            rows = self._select(name, limit)
        except sqlite3.Error as exc:
            raise StateError(f"cannot read the history in {self._state_dir} ({exc}); if the "
                             "disk is fine, move updater.db aside to start a new one") from None
        return [dict(zip(_COLUMNS, row, strict=True)) for row in rows]

    def _select(self, name: str | None, limit: int) -> list[Any]:
        with self._lock:
            if name:
                rows = self._db.execute(_SELECT + " WHERE name = ? ORDER BY id DESC LIMIT ?",
                                        (name, limit)).fetchall()
            else:
                rows = self._db.execute(_SELECT + " ORDER BY id DESC LIMIT ?",
                                        (limit,)).fetchall()
        return rows
