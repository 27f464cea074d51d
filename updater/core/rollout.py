"""Whose rolling update a service is in, and where its story stands: pure decisions over the
service's own fields, so any updater (restarted, or on a new leader) reads the same answer.

The updater puts a marker label, `updater.rollout`, into the very spec update that changes the
image (a service label is not part of the task template: it starts no rollout of its own). The
marker is never cleared: clearing it would be another spec update, which would replace the
PreviousSpec a rollback needs and reset UpdateStatus. A rollout is this updater's while the
spec carries a marker naming the spec's digest and the PreviousSpec does not carry the same
marker (an operator's later `docker service update` keeps the label, but then PreviousSpec has
it too). A rollback swaps the two specs: the marker then sits in PreviousSpec.

    state of the swarm                         phase
    ours in Spec, UpdateStatus updating/none   ROLLING (followed to its end)
    ours in Spec, paused                       PAUSED (rolled back when rollback is on)
    ours in Spec, completed                    DONE (told `updated` once)
    ours in PreviousSpec, rollback_started     ROLLING_BACK (followed to its end)
    ours in PreviousSpec, rollback_completed   ROLLED_BACK (told `rolled-back` once)
    ours in PreviousSpec, rollback_paused      ROLLBACK_PAUSED (told `failed` once)
    not ours, updating/rollback_started        OTHERS_ROLLING (left alone, reported)
    not ours, paused/rollback_paused           OTHERS_PAUSED (left alone, reported)
    anything else                              SETTLED (the digest decides, as always)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

LABEL = "updater.rollout"


@dataclass(frozen=True, slots=True)
class Marker:
    """What one `updater.rollout` label says: the digest rolled to, the one rolled from, when
    (epoch seconds); `raw` is the label's text, which identifies the rollout."""

    raw: str
    to: str
    source: str | None
    at: int
    undo: bool = False  # the rollout of an `updater rollback`

    @classmethod
    def new(cls, to: str, source: str | None, at: float, undo: bool = False) -> Marker:
        fields: dict[str, Any] = {"to": to, "from": source, "at": int(at)}
        raw = json.dumps({**fields, "undo": True} if undo else fields, separators=(",", ":"))
        return cls(raw, to, source, int(at), undo)

    @classmethod
    def read(cls, spec: Mapping[str, Any] | None) -> Marker | None:
        """The marker in a service spec's labels; None when absent or not ours to read."""
        raw = ((spec or {}).get("Labels") or {}).get(LABEL)
        if not isinstance(raw, str):
            return None
        try:
            found = json.loads(raw)
            return cls(raw, str(found["to"]), found.get("from"), int(found.get("at") or 0),
                       found.get("undo") is True)
        except (ValueError, TypeError, KeyError):
            return None  # edited by hand: not a rollout this updater can vouch for


class Phase(Enum):
    SETTLED = "settled"
    ROLLING = "rolling"
    PAUSED = "paused"
    DONE = "done"
    ROLLING_BACK = "rolling-back"
    ROLLED_BACK = "rolled-back"
    ROLLBACK_PAUSED = "rollback-paused"
    OTHERS_ROLLING = "others-rolling"
    OTHERS_PAUSED = "others-paused"


_OURS = {None: Phase.ROLLING, "": Phase.ROLLING, "updating": Phase.ROLLING,
         "paused": Phase.PAUSED, "completed": Phase.DONE}
_UNDONE = {"rollback_started": Phase.ROLLING_BACK, "rollback_completed": Phase.ROLLED_BACK,
           "rollback_paused": Phase.ROLLBACK_PAUSED}
_OTHERS = {"updating": Phase.OTHERS_ROLLING, "rollback_started": Phase.OTHERS_ROLLING,
           "paused": Phase.OTHERS_PAUSED, "rollback_paused": Phase.OTHERS_PAUSED}


@dataclass(frozen=True, slots=True)
class Story:
    phase: Phase
    marker: Marker | None = None


def story(service: Mapping[str, Any], digest: str | None) -> Story:
    """Where the service's rolling update stands, and whose it is; `digest` is the one its
    spec is pinned to."""
    status = service.get("UpdateStatus") or {}
    state = status.get("State")
    current = Marker.read(service.get("Spec"))
    previous = Marker.read(service.get("PreviousSpec"))
    undone = previous is not None and (current is None or current.raw != previous.raw)
    if undone and state in _UNDONE:
        return Story(_UNDONE[state], previous)
    ours = current is not None and current.to == digest and (
        previous is None or previous.raw != current.raw)
    if ours and state in _OURS:
        return Story(_OURS[state], current)
    return Story(_OTHERS.get(str(state), Phase.SETTLED))


def told_key(service_id: str, marker: Marker, outcome: str) -> str:
    """The name of the swarm config that says the end of this rollout was told: the same on
    every manager, and the swarm refuses a second config of one name (the claim is atomic)."""
    digest = hashlib.sha256(f"{service_id} {marker.raw} {outcome}".encode()).hexdigest()
    return f"updater-told-{digest[:40]}"
