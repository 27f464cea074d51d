"""The images each container ran before its updates, newest first, kept for `updater
rollback`: the last `keep_images` of them per container (cleanup removes an image only once it
falls out of every container's kept ones)."""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass

from updater.errors import StateError
from updater.store.state import connect


@dataclass(frozen=True, slots=True)
class KeptImage:
    """What a container ran before one update (`image`: its `Config.Image` then; `digest`:
    the registry digest it was pulled as, if it was), and what the update put in its place."""

    name: str
    image: str
    digest: str | None
    image_id: str
    new_digest: str | None
    new_image_id: str
    time: float = 0.0
    id: int = 0


_NEWEST = ("SELECT name, image, digest, image_id, new_digest, new_image_id, time, id "
           "FROM kept_images WHERE name = ? ORDER BY id DESC LIMIT 1")


class KeptImages:
    def __init__(self, state_dir: str, keep: int) -> None:
        self._db = connect(state_dir)
        self._keep = keep
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    def keep(self, kept: KeptImage) -> list[str]:
        """Record an update of `kept.name`; the image IDs that are no longer kept by it (with
        keep_images 0, the one it ran before) nor by any other container: what a cleanup may
        remove. StateError when the database cannot keep it (then nothing is removed)."""
        try:
            with self._lock:
                self._db.execute("INSERT INTO kept_images (name, time, image, digest, image_id, "
                                 "new_digest, new_image_id) VALUES (?, ?, ?, ?, ?, ?, ?)",
                                 (kept.name, time.time(), kept.image, kept.digest, kept.image_id,
                                  kept.new_digest, kept.new_image_id))
                dropped = [str(row[0]) for row in self._db.execute(
                    "SELECT image_id FROM kept_images WHERE name = ? ORDER BY id DESC "
                    "LIMIT -1 OFFSET ?", (kept.name, self._keep))]
                self._db.execute("DELETE FROM kept_images WHERE name = ? AND id NOT IN (SELECT "
                                 "id FROM kept_images WHERE name = ? ORDER BY id DESC LIMIT ?)",
                                 (kept.name, kept.name, self._keep))
                still = {str(row[0]) for row in self._db.execute(
                    "SELECT image_id FROM kept_images")}
        except sqlite3.Error as exc:
            raise StateError(f"the image {kept.name} ran before was not recorded ({exc}); "
                             "no image was removed") from None
        return sorted(set(dropped) - still)

    def newest(self, name: str) -> KeptImage | None:
        """The image `name` ran before its last update, if it is still kept."""
        try:
            with self._lock:
                row = self._db.execute(_NEWEST, (name,)).fetchone()
        except sqlite3.Error as exc:
            raise StateError(f"cannot read the images kept for {name} ({exc})") from None
        return KeptImage(*row) if row else None

    def keeps(self, image_id: str) -> bool:
        """True when some container keeps `image_id` (or when that cannot be read)."""
        try:
            with self._lock:
                return self._db.execute("SELECT 1 FROM kept_images WHERE image_id = ? LIMIT 1",
                                        (image_id,)).fetchone() is not None
        except sqlite3.Error:
            return True

    def forget(self, kept: KeptImage) -> None:
        """`kept` was gone back to (`updater rollback`): the next rollback goes further back."""
        try:
            with self._lock:
                self._db.execute("DELETE FROM kept_images WHERE id = ?", (kept.id,))
        except sqlite3.Error as exc:
            raise StateError(f"cannot update the images kept for {kept.name} ({exc})") from None
