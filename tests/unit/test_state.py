"""The state database's schema version and its upgrade from the layouts earlier releases wrote."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from updater.errors import ConfigError
from updater.store import state
from updater.store.journal import Journal

# The layout of the first release: `updates` without kind, backup_id and saved; no version.
FIRST_RELEASE = """
CREATE TABLE updates (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, old_id TEXT NOT NULL, new_id TEXT,
    image TEXT NOT NULL, new_digest TEXT NOT NULL, step TEXT NOT NULL, outcome TEXT,
    started REAL NOT NULL, changed REAL NOT NULL);
CREATE TABLE history (
    id INTEGER PRIMARY KEY, time REAL NOT NULL, name TEXT NOT NULL, kind TEXT NOT NULL,
    image TEXT NOT NULL, outcome TEXT NOT NULL, old_digest TEXT, new_digest TEXT,
    old_version TEXT, new_version TEXT, reason TEXT, seconds REAL NOT NULL);
INSERT INTO updates (name, old_id, image, new_digest, step, started, changed)
    VALUES ('web', 'abc', 'r/web:1', 'sha256:1', 'stopped', 1, 1);
INSERT INTO history (time, name, kind, image, outcome, seconds)
    VALUES (1, 'web', 'container', 'r/web:1', 'updated', 2);
"""


def test_new_database_has_the_current_version(tmp_path: Path) -> None:
    db = state.connect(str(tmp_path))
    assert db.execute("PRAGMA user_version").fetchone()[0] == state.SCHEMA_VERSION
    db.close()


@pytest.mark.parametrize("layout", ["first release", "before versions"])
def test_upgrade_keeps_what_was_there(tmp_path: Path, layout: str) -> None:
    """An unfinished update journalled by an earlier release survives the upgrade (it is what
    recovery needs), and history rows stay."""
    old = sqlite3.connect(tmp_path / state.FILENAME)
    if layout == "first release":
        old.executescript(FIRST_RELEASE)
    else:  # the layout of the last release: current tables, user_version still 0
        old.executescript(state._SCHEMA)
        old.execute("INSERT INTO updates (name, old_id, image, new_digest, step, started, "
                    "changed) VALUES ('web', 'abc', 'r/web:1', 'sha256:1', 'stopped', 1, 1)")
    old.commit()
    old.close()
    journal = Journal(str(tmp_path))
    [entry] = journal.unfinished()
    assert (entry.name, entry.step, entry.kind, entry.backup_id) == ("web", "stopped", "update",
                                                                     None)
    journal.close()
    db = state.connect(str(tmp_path))
    assert db.execute("PRAGMA user_version").fetchone()[0] == state.SCHEMA_VERSION
    db.close()


def test_newer_schema_is_refused_untouched(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / state.FILENAME)
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(ConfigError, match=r"schema version 99, newer than this updater knows"):
        state.connect(str(tmp_path))
    db = sqlite3.connect(tmp_path / state.FILENAME)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 99
    assert db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0] == 0
    db.close()


def test_a_failed_upgrade_leaves_the_old_layout(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A step that fails half way is rolled back whole: no half-upgraded database."""
    old = sqlite3.connect(tmp_path / state.FILENAME)
    old.executescript(FIRST_RELEASE)
    old.close()

    def broken(db: sqlite3.Connection) -> None:
        state._to_1(db)
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setitem(state._UPGRADES, 1, broken)
    with pytest.raises(ConfigError, match="disk I/O error"):
        state.connect(str(tmp_path))
    db = sqlite3.connect(tmp_path / state.FILENAME)
    columns = {row[1] for row in db.execute("PRAGMA table_info(updates)")}
    assert "kind" not in columns
    assert db.execute("PRAGMA user_version").fetchone()[0] == 0
    db.close()


_READ_ON_A_RO_MOUNT = """
import sys
from updater.store.decisions import DecisionsSoFar
from updater.store.seen import SeenSoFar
print(DecisionsSoFar(sys.argv[1]).decision("web", sys.argv[2]),
      SeenSoFar(sys.argv[1]).first_seen("reg/app", sys.argv[2], 5000.0))
"""


def test_check_reads_decisions_and_sightings_from_a_read_only_state_dir(
        tmp_path: Path) -> None:
    """A state_dir mounted read-only (as for a `check` beside the daemon), holding a closed WAL
    database: approvals and first sightings are read as they are, not taken for "undecided" and
    "first seen now"."""
    import os
    import shutil
    import subprocess
    import sys

    from updater.store.decisions import OperatorDecisions
    from updater.store.seen import FirstSeen

    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare for a read-only bind mount")
    digest = "sha256:" + "a" * 64
    decisions, seen = OperatorDecisions(str(tmp_path)), FirstSeen(str(tmp_path))
    decisions.decide("web", digest, "approved")
    seen.first_seen("reg/app", digest, 1000.0)
    decisions.close()
    seen.close()
    assert not (tmp_path / "updater.db-shm").exists()
    script = (f"mount --bind {tmp_path} {tmp_path} && mount -o remount,bind,ro {tmp_path} && "
              f"exec {sys.executable} -c '{_READ_ON_A_RO_MOUNT}' {tmp_path} {digest}")
    found = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True,
                           text=True, timeout=60, check=False)
    if "mount:" in found.stderr:
        pytest.skip(f"no bind mount here: {found.stderr.strip()}")
    assert (found.returncode, found.stdout.split()) == (0, ["approved", "1000.0"]), found.stderr


def test_a_schema_5_database_gains_kept_images_and_keeps_its_rows(tmp_path: Path) -> None:
    """A database the previous release wrote (schema 5: decisions, sightings, history) opens
    at the current version with every row, and the images kept for rollback start empty."""
    old = sqlite3.connect(tmp_path / state.FILENAME, isolation_level=None)
    for version in range(1, 6):
        state._UPGRADES[version](old)
        old.execute(f"PRAGMA user_version = {version}")
        old.execute("COMMIT")
    old.execute("INSERT INTO decisions VALUES ('web', 'sha256:1', 'approved', 1)")
    old.execute("INSERT INTO first_seen VALUES ('r/web', 'sha256:1', 1)")
    old.execute("INSERT INTO history (time, name, kind, image, outcome, seconds) "
                "VALUES (1, 'web', 'container', 'r/web:1', 'updated', 2)")
    old.close()
    db = state.connect(str(tmp_path))
    assert db.execute("PRAGMA user_version").fetchone()[0] == state.SCHEMA_VERSION == 6
    assert db.execute("SELECT name, decision FROM decisions").fetchall() == [("web", "approved")]
    assert db.execute("SELECT COUNT(*) FROM first_seen").fetchone()[0] == 1
    assert db.execute("SELECT outcome FROM history").fetchall() == [("updated",)]
    assert db.execute("SELECT COUNT(*) FROM kept_images").fetchone()[0] == 0
    db.close()
