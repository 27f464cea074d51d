"""History: every outcome that changed or tried to change something, or needs attention,
kept in the state database; `updater history` and the API read it back. Up-to-date and pinned
results are not stored (they would only repeat every pass); the newest 10,000 rows are kept."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from updater import state
from updater.report import ItemReport, Outcome

KEPT_ROWS = 10_000
_QUIET = (Outcome.UP_TO_DATE.value, Outcome.PINNED.value)
_COLUMNS = ("time", "name", "kind", "image", "outcome", "old_digest", "new_digest",
            "old_version", "new_version", "reason", "seconds")
_INSERT = ("INSERT INTO history (time, name, kind, image, outcome, old_digest, new_digest, "
           "old_version, new_version, reason, seconds) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
_SELECT = ("SELECT time, name, kind, image, outcome, old_digest, new_digest, old_version, "
           "new_version, reason, seconds FROM history")


class History:
    def __init__(self, state_dir: str) -> None:
        self._db = state.connect(state_dir)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    def record(self, when: float, items: Iterable[ItemReport]) -> int:
        """Store the outcomes of one pass; returns how many rows were written."""
        rows = [(when, i.name, i.kind, i.image, i.outcome.value, i.old_digest, i.new_digest,
                 i.versions.old, i.versions.new, i.reason, i.seconds)
                for i in items if i.outcome.value not in _QUIET]
        with self._lock:
            self._db.executemany(_INSERT, rows)
            self._db.execute("DELETE FROM history WHERE id <= "
                             "(SELECT MAX(id) FROM history) - ?", (KEPT_ROWS,))
        return len(rows)

    def entries(self, name: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """The newest entries first, optionally for one container or service."""
        with self._lock:
            if name:
                rows = self._db.execute(_SELECT + " WHERE name = ? ORDER BY id DESC LIMIT ?",
                                        (name, limit)).fetchall()
            else:
                rows = self._db.execute(_SELECT + " ORDER BY id DESC LIMIT ?",
                                        (limit,)).fetchall()
        return [dict(zip(_COLUMNS, row, strict=True)) for row in rows]
