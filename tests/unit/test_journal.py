"""The update journal: entries of both kinds, and a state database of an earlier version."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from updater.store import journal, state
from updater.store.journal import Journal

OLD_SCHEMA = """
CREATE TABLE updates (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, old_id TEXT NOT NULL, new_id TEXT,
    image TEXT NOT NULL, new_digest TEXT NOT NULL, step TEXT NOT NULL, outcome TEXT,
    started REAL NOT NULL, changed REAL NOT NULL);
INSERT INTO updates VALUES (1, 'web', 'old1', 'new1', 'app:1', 'sha256:aa', 'stopped', NULL,
                            1.0, 1.0);
"""


def test_database_of_an_earlier_version_gains_the_new_columns(tmp_path: Path) -> None:
    """An unfinished entry written before entries had kinds is read as an update with nothing
    saved, so a new updater still recovers it."""
    with sqlite3.connect(tmp_path / state.FILENAME) as db:
        db.executescript(OLD_SCHEMA)
    book = Journal(str(tmp_path))
    [entry] = book.unfinished()
    assert (entry.name, entry.old_id, entry.new_id, entry.step) == ("web", "old1", "new1",
                                                                   "stopped")
    assert (entry.kind, entry.backup_id, dict(entry.saved)) == (journal.UPDATE, None, {})


def test_dependant_entries_keep_what_to_put_back(tmp_path: Path) -> None:
    """A dependant's entry keeps its kind, its backup copy and the state to put back; the
    name of a replaced container is found by its old ID; a dependant's rollback never holds
    back an image."""
    book = Journal(str(tmp_path))
    update = book.begin("a", "id-a", "app:1", "sha256:new", {"paused": False})
    dependant = book.begin("b", "id-b", "app:1", "", {"paused": True,
                                                      "restart_policy": {"Name": "always"}},
                           kind=journal.DEPENDANT)
    book.record_backup(dependant, "copy-b")
    entry = book.get(dependant)
    assert entry is not None
    assert (entry.kind, entry.backup_id, entry.step) == (journal.DEPENDANT, "copy-b",
                                                         "backed-up")
    assert entry.saved == {"paused": True, "restart_policy": {"Name": "always"}}
    assert book.name_of("id-a") == "a" and book.name_of("nothing") is None
    book.finish(dependant, "rolled-back")
    book.finish(update, "updated")
    assert book.rolled_back("b", "") is None
    assert book.unfinished() == []
