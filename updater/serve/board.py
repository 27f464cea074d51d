"""What the dashboard shows of this node: every watched item as its last pass left it (a pass
for some items changes only theirs), and the actions asked for it that have not come back
yet, so the page can show them in progress."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from updater.core.report import Outcome, PassReport

# An action whose pass never came back (the updater stopped first) stops showing after this.
QUEUED_SECONDS = 1800.0
# Outcomes of a pass's side work, not an item's state.
_NOT_STATES = frozenset({Outcome.REBALANCED})
# Outcomes with a new image in view, named by its digest when no version says more.
_MOVING = frozenset({Outcome.AVAILABLE.value, Outcome.WAITING.value, Outcome.HELD_BACK.value})
# Outcomes whose item waits for an operator's approval, which the page offers.
APPROVABLE = frozenset({Outcome.WAITING.value})
# Outcomes that leave an update the operator can ask for now.
UPDATABLE = frozenset({Outcome.AVAILABLE.value, Outcome.HELD_BACK.value, Outcome.FAILED.value,
                       Outcome.ROLLED_BACK.value, Outcome.ERROR.value})


class Board:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()  # the daemon's loop and the API's threads
        self._items: dict[tuple[str, str], dict[str, Any]] = {}  # by (kind, name)
        self._queued: dict[str, tuple[str, float]] = {}  # name -> (action, since)
        self.version = 0  # changes with anything the page shows of the items

    def after_pass(self, report: PassReport, full: bool) -> None:
        """A pass's items (`full`: it looked at every watched item; the others are gone)."""
        at = report.finished or report.started
        fresh = {(item.kind, item.name): {**item.as_dict(), "at": at}
                 for item in report.items if item.outcome not in _NOT_STATES}
        with self._lock:
            if full and report.error is None:
                self._items = fresh
                self._queued.clear()
            else:
                self._items.update(fresh)
                for _, name in fresh:
                    self._queued.pop(name, None)
            if report.error is not None:  # it carried what was asked before it, and failed
                self._drop_queued_before(report.started)
            self.version += 1

    def failed(self, since: float) -> None:
        """A pass started at `since` failed without a report: what it carried is over."""
        with self._lock:
            self._drop_queued_before(since)
            self.version += 1

    def _drop_queued_before(self, since: float) -> None:
        for name in [n for n, (_, asked) in self._queued.items() if asked <= since]:
            del self._queued[name]

    def seed(self, containers: Iterable[tuple[str, str]]) -> None:
        """Containers (name, image) known to be watched before any pass looked at them."""
        with self._lock:
            for name, image in containers:
                self._items.setdefault(("container", name), {
                    "name": name, "kind": "container", "image": image, "outcome": ""})
            self.version += 1

    def queue(self, names: Iterable[str], action: str) -> None:
        """`action` asked for `names` (none: every item) is on its way."""
        now = self._clock()
        with self._lock:
            for name in (names or {name for _, name in self._items}):
                self._queued[name] = (action, now)
            self.version += 1

    def done(self, name: str) -> None:
        """The action for `name` ended without a pass report (it failed before one)."""
        with self._lock:
            if self._queued.pop(name, None) is not None:
                self.version += 1

    def rows(self, node: str) -> list[dict[str, Any]]:
        """This node's items for the page, in order, each with what is `queued` for it."""
        now = self._clock()
        with self._lock:
            for name in [n for n, (_, since) in self._queued.items()
                         if now - since > QUEUED_SECONDS]:
                del self._queued[name]
            items = sorted(self._items.items())
            queued = dict(self._queued)
        return [row(node, item, queued.get(item["name"], ("", 0.0))[0], local=True)
                for _, item in items]

    def item(self, kind: str, name: str) -> dict[str, Any] | None:
        """The item as its last pass left it, with what is `queued` for it."""
        with self._lock:
            found = self._items.get((kind, name))
            queued = self._queued.get(name, ("", 0.0))[0]
        return {**found, "queued": queued} if found is not None else None


def row(node: str, item: Mapping[str, Any], queued: str = "", local: bool = False,
        age: float | None = None, stale: bool = False) -> dict[str, Any]:
    """One line of the page: an item of this node (`local`: it can be acted on here) or of
    another node of the fleet (`age` of its report, `stale` when its node went silent)."""
    outcome = str(item.get("outcome") or "")
    image = str(item.get("image") or "")
    target = item.get("new_version") or _moved_to(image, item.get("target"))
    if not target and outcome in _MOVING:
        target = str(item.get("new_digest") or "")[:19] or None
    return {"node": node, "name": str(item.get("name") or ""),
            "kind": str(item.get("kind") or "container"), "image": image,
            "current": item.get("old_version") or _tag(image),
            "target": target, "state": outcome, "why": item.get("reason") or "",
            "digest": item.get("new_digest"), "queued": queued, "local": local,
            "approvable": local and outcome in APPROVABLE and bool(item.get("new_digest")),
            "updatable": local and outcome in UPDATABLE,
            "age": age, "stale": stale}


def fleet_rows(view: Mapping[str, Any], own_node: str) -> list[dict[str, Any]]:
    """The other nodes' items from the leader's fleet view (read only here)."""
    return [row(str(item.get("node") or ""), item, age=item.get("age"),
                stale=bool(item.get("stale")))
            for item in view.get("items", []) if item.get("node") != own_node]


def _moved_to(image: str, target: Any) -> str | None:
    """The tag an item moves to, when it is another than its own (`updater.tags`)."""
    if not isinstance(target, str) or not target or target == image:
        return None
    return _tag(target) if target.rpartition(":")[0] == image.rpartition(":")[0] else target


def _tag(image: str) -> str:
    """The tag of an image reference, for an item whose image says no version of its own."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.partition(":")[2] or "latest"
