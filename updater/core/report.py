"""The pass report: pure data on what one pass did, item by item. `update` and `run` print it;
notifications, metrics and history are fed from it."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Outcome(StrEnum):
    UPDATED = "updated"
    ROLLED_BACK = "rolled-back"
    FAILED = "failed"
    SKIPPED = "skipped"
    UP_TO_DATE = "up-to-date"
    AVAILABLE = "update-available"
    HELD_BACK = "held-back"  # an update that was rolled back, not tried again until asked
    # An available update not applied yet: its image is younger than the minimum age.
    WAITING = "waiting"
    PINNED = "pinned"
    ERROR = "error"
    RECOVERED = "recovered"
    REBALANCED = "rebalanced"
    UNDONE = "undone"  # put back on the image it ran before its last update (`rollback`)
    # A swarm service whose rolling update is in progress (not followed by this pass), or was
    # paused by the swarm (not this updater's, or this updater's with rollback off): left alone.
    ROLLING = "rolling"
    PAUSED = "paused"


FAILURES = frozenset({Outcome.ROLLED_BACK, Outcome.FAILED})


def short_digest(digest: str | None, missing: str = "-") -> str:
    """The first 12 hex digits of a digest, as `docker images` shows them; `missing` for none."""
    return digest.partition(":")[2][:12] if digest else missing


OCI_VERSION = "org.opencontainers.image.version"
OCI_REVISION = "org.opencontainers.image.revision"
OCI_SOURCE = "org.opencontainers.image.source"


@dataclass(frozen=True, slots=True)
class Versions:
    """What the images say of themselves (OCI labels), when they say it."""

    old: str | None = None
    new: str | None = None
    old_revision: str | None = None
    revision: str | None = None
    source: str | None = None

    @classmethod
    def from_labels(cls, old: Mapping[str, str], new: Mapping[str, str]) -> Versions:
        return cls(old.get(OCI_VERSION), new.get(OCI_VERSION), old.get(OCI_REVISION),
                   new.get(OCI_REVISION), new.get(OCI_SOURCE) or old.get(OCI_SOURCE))


@dataclass(frozen=True, slots=True)
class ItemReport:
    """What happened to one container (or service) in a pass."""

    name: str
    image: str
    outcome: Outcome
    kind: str = "container"
    old_digest: str | None = None
    new_digest: str | None = None
    reason: str | None = None
    seconds: float = 0.0
    versions: Versions = Versions()
    target: str | None = None  # the reference an available update moves it to

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "image": self.image,
                "outcome": self.outcome.value, "old_digest": self.old_digest,
                "new_digest": self.new_digest, "old_version": self.versions.old,
                "new_version": self.versions.new, "source": self.versions.source,
                "revision": self.versions.revision, "reason": self.reason, "target": self.target,
                "seconds": round(self.seconds, 3)}


@dataclass(slots=True)
class PassReport:
    """All items of one pass, with its start and end (wall clock)."""

    started: float = field(default_factory=time.time)
    finished: float | None = None
    items: list[ItemReport] = field(default_factory=list)
    # Why the pass stopped before its end (the engine lost): its items are what was decided.
    error: str | None = None

    @property
    def failed(self) -> bool:
        return any(item.outcome in FAILURES for item in self.items)

    def summary(self) -> str:
        counts = Counter(item.outcome for item in self.items)
        parts = [f"{counts[o]} {o.value}" for o in Outcome if counts[o]]
        seconds = (self.finished or time.time()) - self.started
        cut = f"; cut short: {self.error}" if self.error else ""
        return f"{len(self.items)} watched" + (": " + ", ".join(parts) if parts else "") + \
            f" in {seconds:.1f}s{cut}"

    def as_dict(self) -> dict[str, Any]:
        return {"started": self.started, "finished": self.finished, "error": self.error,
                "items": [item.as_dict() for item in self.items]}


# What waits: an update younger than its minimum age or outside its window, and one held back
# after a rollback.
PENDING = frozenset({Outcome.WAITING, Outcome.HELD_BACK})


def pending(report: PassReport) -> dict[str, Any]:
    """What the pass `report` left waiting, and why, as of its end."""
    items = [{"name": i.name, "kind": i.kind, "image": i.image, "target": i.target,
              "digest": i.new_digest, "outcome": i.outcome.value, "why": i.reason}
             for i in report.items if i.outcome in PENDING]
    return {"as_of": report.finished or report.started,
            "items": sorted(items, key=lambda i: (i["kind"], i["name"]))}
