"""The update journal: each step of a container update is written (and synced) before it is
taken, so an updater killed at any moment knows on its next start what to finish or undo.
It lives in the state database (`state.py`); one updater at a time holds the state lock.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from updater.errors import ConfigError, StateError
from updater.store import state

log = logging.getLogger(__name__)


UPDATE = "update"
DEPENDANT = "dependant"


class Step(StrEnum):
    """The steps of an update as the journal records them, each before it is taken; the values
    are what is stored (kept as they are: a journal outlives the updater that wrote it)."""

    BEGIN = "begin"
    BACKED_UP = "backed-up"  # a copy of a `--rm` container made to restore from
    CREATING = "creating"
    CREATED = "created"
    STOPPING = "stopping"
    STOPPED = "stopped"
    RENAMING = "renaming"
    RENAMED = "renamed"
    STARTING = "starting"
    STARTED = "started"
    VERIFIED = "verified"
    HANDING_OVER = "handing-over"  # a self-update: the successor takes over from here
    REMOVING_OLD = "removing-old"
    RESTORING = "restoring"
    FINISHED = "finished"
_SELECT = ("SELECT id, name, old_id, new_id, image, new_digest, step, kind, backup_id, saved "
           "FROM updates")


@dataclass(frozen=True, slots=True)
class Entry:
    """One container an update touches: the container updated (kind `update`), or one stopped
    for it and to be started again (kind `dependant`)."""

    id: int
    name: str
    old_id: str
    new_id: str | None
    image: str
    new_digest: str
    step: str
    kind: str = UPDATE
    backup_id: str | None = None
    saved: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> Entry:
        return cls(id=row[0], name=row[1], old_id=row[2], new_id=row[3], image=row[4],
                   new_digest=row[5], step=row[6], kind=row[7], backup_id=row[8],
                   saved=json.loads(row[9]) if row[9] else {})


class Journal:
    """Durable record of updates in flight. A write that fails (a full disk) raises StateError,
    so the step it was to record is not taken."""

    def __init__(self, state_dir: str) -> None:
        self._state_dir = state_dir
        self._db = state.connect(state_dir)

    def _write(self, sql: str, parameters: tuple[Any, ...]) -> int:
        try:
            return int(self._db.execute(sql, parameters).lastrowid or 0)
        except sqlite3.Error as exc:
            raise StateError(f"cannot write the update journal in {self._state_dir} ({exc}); "
                             "free space there") from None

    def _read(self, sql: str, parameters: tuple[Any, ...] = ()) -> list[Any]:
        try:
            return self._db.execute(sql, parameters).fetchall()
        except sqlite3.Error as exc:
            raise StateError(f"cannot read the update journal in {self._state_dir} "
                             f"({exc})") from None

    def close(self) -> None:
        self._db.close()

    def begin(self, name: str, old_id: str, image: str, new_digest: str,
              saved: Mapping[str, Any] | None = None, kind: str = UPDATE) -> int:
        """A new entry; `saved` is what to put back on the old container if it is restored."""
        now = time.time()
        return self._write(
            "INSERT INTO updates (name, old_id, image, new_digest, step, started, changed, "
            "kind, saved) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (name, old_id, image, new_digest, Step.BEGIN.value, now, now, kind,
             json.dumps(dict(saved or {}))))

    def record_backup(self, entry: int, backup_id: str) -> None:
        self._write("UPDATE updates SET step = ?, backup_id = ?, changed = ? WHERE id = ?",
                    (Step.BACKED_UP.value, backup_id, time.time(), entry))

    def name_of(self, old_id: str) -> str | None:
        """The name of a container an update replaced, by its old ID."""
        rows = self._read("SELECT name FROM updates WHERE old_id = ? ORDER BY id DESC LIMIT 1",
                          (old_id,))
        return str(rows[0][0]) if rows else None

    def record(self, entry: int, step: Step, new_id: str | None = None) -> None:
        if new_id is not None:
            self._write("UPDATE updates SET step = ?, new_id = ?, changed = ? WHERE id = ?",
                        (step.value, new_id, time.time(), entry))
        else:
            self._write("UPDATE updates SET step = ?, changed = ? WHERE id = ?",
                        (step.value, time.time(), entry))

    def finish(self, entry: int, outcome: str) -> None:
        self._write("UPDATE updates SET step = ?, outcome = ?, changed = ? WHERE id = ?",
                    (Step.FINISHED.value, outcome, time.time(), entry))

    def get(self, entry: int) -> Entry | None:
        rows = self._read(_SELECT + " WHERE id = ?", (entry,))
        return Entry.from_row(rows[0]) if rows else None

    def rolled_back(self, name: str, digest: str) -> float | None:
        """When an update of `name` to `digest` was last rolled back, if it was."""
        rows = self._read(_ROLLED_BACK, (name, digest, Step.FINISHED.value))
        return float(rows[0][0]) if rows else None

    def unfinished(self) -> list[Entry]:
        rows = self._read(_SELECT + " WHERE step != ? ORDER BY id", (Step.FINISHED.value,))
        return [Entry.from_row(row) for row in rows]


class RollbacksSoFar:
    """`Journal.rolled_back`, read without opening the database for writing (`check`)."""

    def __init__(self, state_dir: str) -> None:
        self._state_dir = state_dir

    def rolled_back(self, name: str, digest: str) -> float | None:
        row = state.read_row(self._state_dir, _ROLLED_BACK, (name, digest, Step.FINISHED.value))
        return float(str(row[0])) if row else None


_ROLLED_BACK = ("SELECT changed FROM updates WHERE name = ? AND new_digest = ? AND step = ? "
                "AND outcome = 'rolled-back' AND kind = 'update' ORDER BY id DESC LIMIT 1")


class StateLock:
    """An exclusive lock on `state_dir`, so two updaters never act on one host at once.

    `wait` seconds are spent waiting for another holder to let go (an updater handing over to
    its successor releases the lock for it); then the clear error. `release`/`acquire` let the
    holder hand the lock over and take it back if the successor never comes.
    """

    POLL_SECONDS = 0.2

    def __init__(self, state_dir: str, wait: float = 0.0,
                 busy: str = "stop it or give this one another state_dir") -> None:
        self._path = Path(state_dir) / "lock"
        self._wait = wait
        self._busy = busy  # what to do when another updater holds it
        self._fd: int | None = None

    def __enter__(self) -> StateLock:
        self.acquire(self._wait)
        return self

    def __exit__(self, *_: object) -> None:
        self.release()

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, wait: float = 0.0) -> None:
        """Take the lock, waiting up to `wait` seconds; ConfigError when another keeps it."""
        if self._fd is not None:
            return
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise ConfigError(f"cannot use state_dir {self._path.parent} ({exc.strerror}); set "
                              "state_dir to a writable directory") from None
        deadline = time.monotonic() + wait
        announced = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise ConfigError(
                        f"another updater is running with state_dir {self._path.parent}; "
                        f"{self._busy}") from None
                if not announced:
                    log.info("waiting up to %.0fs for the updater holding %s", wait, self._path)
                    announced = True
                time.sleep(self.POLL_SECONDS)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
