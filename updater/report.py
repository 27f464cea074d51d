"""The pass report: pure data on what one pass did, item by item. `update` and `run` print it;
notifications, metrics and history are fed from it."""

from __future__ import annotations

import time
from collections import Counter
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
    PINNED = "pinned"
    ERROR = "error"
    RECOVERED = "recovered"


FAILURES = frozenset({Outcome.ROLLED_BACK, Outcome.FAILED})


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

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "image": self.image,
                "outcome": self.outcome.value, "old_digest": self.old_digest,
                "new_digest": self.new_digest, "reason": self.reason,
                "seconds": round(self.seconds, 3)}


@dataclass(slots=True)
class PassReport:
    """All items of one pass, with its start and end (wall clock)."""

    started: float = field(default_factory=time.time)
    finished: float | None = None
    items: list[ItemReport] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(item.outcome in FAILURES for item in self.items)

    @property
    def changed(self) -> bool:
        return any(item.outcome in (Outcome.UPDATED, Outcome.RECOVERED) for item in self.items)

    def summary(self) -> str:
        counts = Counter(item.outcome for item in self.items)
        parts = [f"{counts[o]} {o.value}" for o in Outcome if counts[o]]
        seconds = (self.finished or time.time()) - self.started
        return f"{len(self.items)} watched" + (": " + ", ".join(parts) if parts else "") + \
            f" in {seconds:.1f}s"

    def as_dict(self) -> dict[str, Any]:
        return {"started": self.started, "finished": self.finished,
                "items": [item.as_dict() for item in self.items]}
