"""One update pass over the standalone containers of an engine: recover what an earlier
updater left in flight, check every watched container, update the stale ones in dependency
order (their dependants stopped first and started after), and report every outcome."""

from __future__ import annotations

import dataclasses
import datetime
import logging
import math
import time
from collections.abc import Callable, Collection, Iterable
from typing import Any

from updater.actions import hooks
from updater.actions.containers import ContainerUpdater
from updater.actions.services import ServiceUpdater
from updater.actions.steps import Candidate, Dependant
from updater.core import order, policy
from updater.core.detect import CheckResult, check, require_names, watched
from updater.core.lookups import DigestSource
from updater.core.policy import State
from updater.core.reference import Reference, parse
from updater.core.report import ItemReport, Outcome, PassReport, Versions
from updater.core.settings import Settings
from updater.core.snapshots import ContainerSnapshot
from updater.engine.adapter import Engine
from updater.errors import EngineUnavailable, UpdaterError

log = logging.getLogger(__name__)
_STATE_OUTCOMES = {State.UP_TO_DATE: Outcome.UP_TO_DATE, State.PINNED: Outcome.PINNED,
                   State.ERROR: Outcome.ERROR}


class UpdatePass:
    """Runs passes; holds nothing between them but its collaborators."""

    def __init__(self, engine: Engine, registry: DigestSource, updater: ContainerUpdater,
                 settings: Settings,
                 on_item: Callable[[ItemReport], None] = lambda item: None,
                 own_id: str | None = None, services: ServiceUpdater | None = None,
                 progress: Callable[[float], None] = lambda seconds: None,
                 seen: policy.Sightings | None = None,
                 decisions: policy.Decisions | None = None,
                 local_now: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(
                     ).astimezone(), forced: Collection[str] = ()) -> None:
        self._engine = engine
        # Items ("container:NAME") an operator pressed "Update now" for: although monitor-only.
        self._forced = frozenset(forced)
        self._local_now = local_now
        self._decisions = decisions or policy.NoDecisions()
        self._seen = seen or policy.SeenInMemory()
        self._progress = progress
        self._own_id = own_id
        self._services = services
        self._registry = registry
        self._updater = updater
        self._settings = settings
        self._on_item = on_item

    def run(self, names: Iterable[str] = (),
            stop_requested: Callable[[], bool] = lambda: False,
            retry: Collection[str] | None = None) -> PassReport:
        """A pass (over `names`, or everything); a digest that was rolled back is tried again
        for the items in `retry` (by default, those asked for by name)."""
        report = PassReport()
        names = tuple(names)
        try:
            self._run(report, names, stop_requested, frozenset(names if retry is None else retry))
        except EngineUnavailable as exc:
            if not report.items:
                raise  # nothing done: the pass did not happen (the daemon backs off)
            report.error = str(exc)
            log.error("pass cut short after %d items: %s", len(report.items), exc)
        report.finished = time.time()
        log.info("pass: %s", report.summary())
        return report

    def _run(self, report: PassReport, names: tuple[str, ...],
             stop_requested: Callable[[], bool], retry: frozenset[str]) -> None:
        report.items += self._updater.recover()
        containers, errors = watched(self._engine.containers(), self._settings, names)
        service_names = self._services.names() if self._services and names else []
        require_names(names, [c.name for c in containers] + [e.name for e in errors]
                      + service_names)
        report.items += [_from_check(result) for result in errors]
        self._hooks(containers, "pre-check")
        candidates = []
        for container, result in zip(containers, check(
                containers, self._registry, platform_of=self._engine.platform,
                settings=self._settings), strict=True):
            item, candidate = self._decide(container, result,
                                           retry_rolled_back=container.name in retry)
            report.items += [item] if item else []
            candidates += [candidate] if candidate else []
        own = [c for c in candidates if c.container.id == self._own_id]
        others = [c for c in candidates if c.container.id != self._own_id]
        if others:
            report.items += self._apply(others, stop_requested)
        self._hooks(containers, "post-check")
        if self._services is not None:
            # Item by item: a manager lost mid-pass costs the item in flight, not the others.
            for item in self._services.run(names, stop_requested, retry):
                report.items.append(item)
        for candidate in own:
            # Last of all: this updater starts its successor and stops.
            if stop_requested():
                report.items.append(_candidate_item(candidate, Outcome.SKIPPED, "shutting down"))
                continue
            item = self._updater.hand_over(candidate, stop_requested)
            self._on_item(item)
            report.items.append(item)

    def _decide(self, container: ContainerSnapshot, result: CheckResult,
                retry_rolled_back: bool) -> tuple[ItemReport | None, Candidate | None]:
        if result.state is State.ERROR:
            return self._with_versions(_from_check(result), container), None
        if result.state is not State.UPDATE_AVAILABLE or result.remote_digest is None:
            return _from_check(result), None
        try:
            inspect = self._engine.inspect_container(container.id) or {}
            own_timeout = (inspect.get("Config") or {}).get("StopTimeout")
            options = policy.options(container.labels, self._settings, own_timeout)
            if f"container:{container.name}" in self._forced:
                options = dataclasses.replace(options, monitor_only=False)
        except UpdaterError as exc:
            return _item(result, Outcome.ERROR, str(exc)), None
        # Its own tag, or the newer version tag it moves to (`updater.tags=semver`).
        moved_to = parse(result.target or container.image)
        not_now = self._not_now(container, result, options, moved_to, retry_rolled_back)
        if not_now is not None:
            return not_now, None
        return None, Candidate(container, moved_to, result.local_digest, result.remote_digest,
                               options)

    def _not_now(self, container: ContainerSnapshot, result: CheckResult,
                 options: policy.ContainerOptions, moved_to: Reference,
                 retry_rolled_back: bool) -> ItemReport | None:
        """The policy step between detection and action: why an available update is not
        applied now (monitor-only, rolled back from before, younger than its minimum age), or
        None when it may move."""
        remote = str(result.remote_digest)
        if options.monitor_only:
            log.info("%s: update available (%s), monitor only", container.name, remote[:19])
            return self._with_versions(_item(result, Outcome.AVAILABLE), container)
        when = self._updater.rolled_back(container.name, remote)
        if when is not None and not retry_rolled_back:
            # Trying it every pass would stop and restart the container every pass.
            return _item(result, Outcome.HELD_BACK,
                         policy.held_after_rollback(container.name, when))
        found = policy.why_waiting(options, container.name, moved_to.repository, remote,
                                   self._local_now(), self._seen, self._decisions)
        if found is None:
            return None
        for_good, why = found
        log.info("%s: update available, %s", container.name, why)
        outcome = Outcome.HELD_BACK if for_good else Outcome.WAITING
        return self._with_versions(_item(result, outcome, why), container)

    def _with_versions(self, item: ItemReport, container: ContainerSnapshot) -> ItemReport:
        """What the running image says of itself (OCI labels), for an item not updated. (The
        new image's labels would cost registry requests for its config: not fetched.)"""
        try:
            image = self._engine.inspect_image(container.image_id)
        except UpdaterError:
            return item
        labels = dict((image.get("Config") or {}).get("Labels") or {})
        return dataclasses.replace(item, versions=Versions.from_labels(labels, {}))

    def _apply(self, candidates: list[Candidate],
               stop_requested: Callable[[], bool]) -> list[ItemReport]:
        running = [order.Node.from_inspect(i) for i in self._running_inspects()]
        inspects = {node.name: node for node in running}
        edges = order.graph(running)
        by_name = {c.container.name: c for c in candidates}
        ordered, cyclic = order.update_order(by_name, edges)
        items = [_candidate_item(by_name[name], Outcome.SKIPPED,
                                 "dependency cycle among " + ", ".join(cyclic)) for name in cyclic]
        for name in ordered:
            if stop_requested():
                items.append(_candidate_item(by_name[name], Outcome.SKIPPED, "shutting down"))
                continue
            # A window that closed while earlier items were updated: the rest waits.
            closed = policy.outside_window(by_name[name].options.window, self._local_now())
            if closed is not None:
                items.append(_candidate_item(by_name[name], Outcome.WAITING, closed))
                continue
            self._progress(_budget(by_name[name]))
            try:
                items += self._update_with_dependants(by_name[name], edges, inspects)
            except EngineUnavailable:
                raise
            except Exception as exc:  # one container's trouble never ends the pass
                log.exception("%s: update failed", name)
                items.append(_candidate_item(by_name[name], Outcome.FAILED, (
                    f"unexpected {type(exc).__name__}: {exc}; the old container was not "
                    "touched")))
        return items

    def replace(self, candidate: Candidate) -> list[ItemReport]:
        """Replace one container now (an undo), its dependants stopped and started around it
        as for an update."""
        running = [order.Node.from_inspect(i) for i in self._running_inspects()]
        return self._update_with_dependants(candidate, order.graph(running),
                                            {node.name: node for node in running})

    def _update_with_dependants(self, candidate: Candidate, edges: dict[str, set[str]],
                                nodes: dict[str, order.Node]) -> list[ItemReport]:
        candidate = self._current(candidate)
        dependants = []
        for name in order.dependants(candidate.container.name, edges):
            inspect = self._engine.inspect_container(name) or self._engine.inspect_container(
                nodes[name].id)
            if inspect is None or not (inspect.get("State") or {}).get("Running"):
                continue
            options = self._options_or_defaults(nodes[name].labels, inspect)
            dependants.append(Dependant(inspect, options))
        items = self._updater.update(candidate, dependants)
        for item in items:
            self._on_item(item)
        return items

    def _current(self, candidate: Candidate) -> Candidate:
        """The candidate as it is now: an earlier update in this pass may have recreated it
        (as the dependant of another), on the same image under a new ID."""
        found = self._engine.inspect_container(candidate.container.name)
        if found is None or found["Id"] == candidate.container.id:
            return candidate
        if found.get("Image") != candidate.container.image_id:
            return candidate  # not the container that was checked: its update fails cleanly
        container = dataclasses.replace(candidate.container, id=str(found["Id"]))
        return dataclasses.replace(candidate, container=container)

    def _options_or_defaults(self, labels: dict[str, str] | Any,
                             inspect: dict[str, Any]) -> policy.ContainerOptions:
        """A dependant's options; with a bad label, the defaults (it is only stopped/started)."""
        own = (inspect.get("Config") or {}).get("StopTimeout")
        try:
            return policy.options(labels, self._settings, own)
        except UpdaterError as exc:
            log.warning("%s; using default stop settings", exc)
            return policy.options({}, self._settings, own)

    def _running_inspects(self) -> list[dict[str, Any]]:
        found = []
        for container in self._engine.containers():
            inspect = self._engine.inspect_container(container.id)
            if inspect is not None:
                found.append(inspect)
        return found

    def _hooks(self, containers: list[ContainerSnapshot], hook: str) -> None:
        for container in containers:
            command = policy.label(container.labels, f"hook.{hook}")
            if not command:
                continue
            try:
                timeout = policy.duration_label(container.labels, "hook.timeout",
                                                policy.DEFAULT_HOOK_TIMEOUT)
            except UpdaterError:
                timeout = policy.DEFAULT_HOOK_TIMEOUT
            hooks.run(self._engine, container.id, container.name, hook, command, timeout)


def _budget(candidate: Candidate) -> float:
    """How long one update may take before the loop counts as stuck: its stop and health
    timeouts and two hooks, plus the pull and five minutes to spare; no limit when the stop
    timeout is "wait as long as it takes"."""
    options = candidate.options
    if options.stop_timeout < 0:
        return math.inf
    return options.stop_timeout + options.health_timeout + 2 * options.hook_timeout + 600


def _clock(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def _from_check(result: CheckResult) -> ItemReport:
    return _item(result, _STATE_OUTCOMES.get(result.state, Outcome.ERROR),
                 result.error or result.note)


def _item(result: CheckResult, outcome: Outcome, reason: str | None = None) -> ItemReport:
    return ItemReport(result.name, result.image, outcome, old_digest=result.local_digest,
                      new_digest=result.remote_digest, reason=reason, target=result.target)


def _candidate_item(candidate: Candidate, outcome: Outcome, reason: str) -> ItemReport:
    return ItemReport(candidate.container.name, candidate.container.image, outcome,
                      old_digest=candidate.old_digest, new_digest=candidate.new_digest,
                      reason=reason)
