"""Swarm services: only the leader acts. A service is updated by sending its current spec with
`ContainerSpec.Image` pinned to `repo:tag@sha256:<new>`, its version index as the optimistic
lock, and the registry credentials in `X-Registry-Auth`, so the swarm's own rolling update
(UpdateConfig) does the work; then `UpdateStatus` is followed to `completed` (or, when the swarm
sets none because no task needs replacing, the tasks are), within a bound built from the
update's own batches and the per-task health timeout, and a failure is rolled back to the
previous spec when rollback is on (the mechanics are `rolling`'s). Jobs are not rolled: their
spec is updated once, which runs them once on the new image, and never rolled back. A service
whose last change was a rollback (this updater's, the swarm's failure action or a
user's `docker service rollback`) is held back from the digest it was rolled back from, until
a newer one is pushed or `updater update NAME` asks for it. Nothing is sent when nothing
changed: a no-op update would erase the service's PreviousSpec.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import time
from collections.abc import Callable, Collection, Iterator
from typing import Any

from updater.actions.locate import is_leader
from updater.actions.rolling import Rollouts
from updater.actions.service_lookups import service_lookups, target
from updater.actions.told import ToldStories
from updater.core import policy, reference, rollout, tags
from updater.core.detect import unchanged_for
from updater.core.lookups import DigestSource, PassLookups
from updater.core.ports import SwarmEngine
from updater.core.rebalance import ServicePlan, node_platforms
from updater.core.report import ItemReport, Outcome
from updater.core.rollout import Marker, Phase
from updater.core.settings import Settings
from updater.core.swarm import (
    ServiceOptions,
    ServiceSnapshot,
    held_back,
    image_of,
    new_spec,
    service_item,
    service_options,
    tracked,
)
from updater.errors import EngineError, EngineUnavailable, RegistryError, UpdaterError
from updater.registry.credentials import CredentialSource

log = logging.getLogger(__name__)
# The ends of a rollout's story, each told once (swarm-wide) per rollout.
_ENDS = (Outcome.UPDATED, Outcome.ROLLED_BACK, Outcome.FAILED)
# The end a phase tells: when it was told, the phase is quiet (a paused one says so).
# (A rollback the swarm's failure action started was told when it started: not followed again.)
_TOLD_BY_PHASE = {Phase.DONE: Outcome.UPDATED, Phase.ROLLED_BACK: Outcome.ROLLED_BACK,
                  Phase.ROLLING_BACK: Outcome.ROLLED_BACK, Phase.PAUSED: Outcome.FAILED,
                  Phase.ROLLBACK_PAUSED: Outcome.FAILED}
# Phases whose end is there to be told, as it was when the updater that started it was lost.
_ENDED = {Phase.DONE: (Outcome.UPDATED, "the rolling update this updater started completed"
                                        " ({}); its end was not told yet"),
          Phase.ROLLED_BACK: (Outcome.ROLLED_BACK, "rolled back to the previous spec ({})"),
          Phase.ROLLBACK_PAUSED: (Outcome.FAILED, "the rollback to the previous spec paused"
                                                  " ({})")}


class ServiceUpdater:
    def __init__(self, engine: SwarmEngine, registry: DigestSource, credentials: CredentialSource,
                 settings: Settings, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic,
                 own_container: str | None = None,
                 seen: policy.Sightings | None = None,
                 decisions: policy.Decisions | None = None,
                 forced: Collection[str] = ()) -> None:
        self._engine = engine
        self._forced = frozenset(forced)  # "Update now": applied although monitor-only
        self._seen = seen or policy.SeenInMemory()
        self._decisions = decisions or policy.NoDecisions()
        self._own_container = own_container
        self._source = registry
        # Each run's answers: one lookup per distinct reference, shared with the containers of
        # the pass when it gives one PassLookups to both.
        self._registry = registry if isinstance(registry, PassLookups) else PassLookups(registry)
        self._credentials = credentials
        self._settings = settings
        self._sleep = sleep
        self._clock = clock
        self._told = ToldStories(engine, [])
        self._rollouts = Rollouts(engine, credentials, settings, sleep, clock)
        self._lost: str | None = None  # why the swarm manager was lost during this run
        self._nodes: list[dict[str, Any]] | None = None  # read when first needed in a run

    def names(self) -> list[str]:
        """Names of the services this engine can see (none unless it is a swarm manager)."""
        swarm = self._engine.info().get("Swarm") or {}
        if not swarm.get("ControlAvailable"):
            return []
        return [str(s["Spec"]["Name"]) for s in self._engine.services()]

    def run(self, names: tuple[str, ...] = (), stop_requested: Callable[[], bool] = lambda: False,
            retry: Collection[str] | None = None) -> Iterator[ItemReport]:
        """Check and update every watched service, an item at a time as each is decided;
        nothing at all when not the leader. EngineUnavailable after the item whose update lost
        the swarm manager (its engine stopped, or the node is no longer the leader)."""
        if not is_leader(self._engine):
            log.debug("not the swarm leader: services are left to the leader")
            return
        own = self._own_service()
        services = self._engine.services()
        self._told = ToldStories(self._engine, services)
        self._lost = None
        self._nodes = None
        self._registry = service_lookups(self._source, services, names, self._settings)
        # This updater's own service last: its rolling update replaces this very task.
        for service in sorted(services, key=lambda s: s["ID"] == own):
            snapshot = ServiceSnapshot.from_inspect(service)
            if names and snapshot.name not in names:
                continue
            if stop_requested():
                break
            item = self._one(snapshot, own=snapshot.id == own, retry_rolled_back=snapshot.name in (
                names if retry is None else retry))
            if item is not None:
                yield item
            if self._lost is not None:
                raise EngineUnavailable(self._lost)

    def check(self, names: tuple[str, ...] = ()) -> list[ItemReport]:
        """What `run` would find, changing nothing (any manager may look)."""
        swarm = self._engine.info().get("Swarm") or {}
        if not swarm.get("ControlAvailable"):
            return []
        items = []
        self._nodes = None
        services = self._engine.services()
        self._registry = service_lookups(self._source, services, names, self._settings)
        for service in services:
            snapshot = ServiceSnapshot.from_inspect(service)
            if not names or snapshot.name in names:
                item = self._one(snapshot, change=False)
                items += [item] if item else []
        return items

    def _own_service(self) -> str | None:
        """The service whose task this updater runs in, if any."""
        if self._own_container is None:
            return None
        labels = ((self._engine.inspect_container(self._own_container) or {}).get("Config")
                  or {}).get("Labels") or {}
        return labels.get("com.docker.swarm.service.id")

    def _one(self, service: ServiceSnapshot, change: bool = True, own: bool = False,
             retry_rolled_back: bool = False) -> ItemReport | None:
        current = None
        try:
            if not policy.is_watched(service.labels, self._settings):
                return None
            ref, current = tracked(service.image)
            if ref.tag is None:
                return service_item(service, Outcome.PINNED, current, None)
            options = service_options(service.labels, self._settings)
            if f"service:{service.name}" in self._forced:
                options = dataclasses.replace(options, monitor_only=False)
            asked = target(ref, tags.tag_policy(service.labels, self._settings), self._registry)
        except UpdaterError as exc:
            return service_item(service, Outcome.ERROR, current, None, str(exc))
        if change and not options.monitor_only:
            # A rolling update still going, or one whose end was not told yet, comes first:
            # the spec naming the registry's digest says nothing about how it went.
            found = self._story(service, current, options)
            if found is not None:
                return found
        return self._against_registry(service, asked, current, options, change, own,
                                      retry_rolled_back)

    def _against_registry(self, service: ServiceSnapshot, ref: reference.Reference,
                          current: str | None, options: ServiceOptions, change: bool,
                          own: bool, retry_rolled_back: bool) -> ItemReport | None:
        """Compare with the registry's digest; update (and follow) when they differ."""
        try:
            remote = self._registry.digest(ref)
        except UpdaterError as exc:
            return service_item(service, Outcome.ERROR, current, None, str(exc))
        if remote == current:
            return service_item(service, Outcome.UP_TO_DATE, current, remote)
        unchanged = self._unchanged_on_nodes(service, ref, current, remote)
        if unchanged is not None:
            return service_item(service, Outcome.UP_TO_DATE, current, remote, unchanged)
        not_now = self._not_now(service, ref, current, remote, options, change,
                                retry_rolled_back)
        if not_now is not None:
            return not_now
        marker = Marker.new(remote, current, time.time())
        spec = new_spec(service, ref, marker)
        started = self._clock()
        try:
            refused = self._rollouts.send(service, spec, ref.domain)
        except UpdaterError as exc:
            refused = Outcome.FAILED, str(exc)
        if refused is not None:
            return service_item(service, *refused, current, remote, self._clock() - started)
        log.info("%s: rolling update to %s started", service.name, remote[:19])
        return self._followed(service, marker, lambda: self._after_send(
            service, spec, options, own), started)

    def _not_now(self, service: ServiceSnapshot, ref: reference.Reference, current: str | None,
                 remote: str, options: ServiceOptions, change: bool,
                 retry_rolled_back: bool) -> ItemReport | None:
        """The policy step between detection and action: why `remote` is not applied now, or
        None. (A rolled-back digest is held back: tried every pass, it would cost an outage
        every pass; asked for by name, it is tried again.)"""
        held = None if retry_rolled_back else held_back(service, remote)
        found = None if options.monitor_only or held else policy.why_waiting(
            options, service.name, ref.repository, remote, datetime.datetime.now().astimezone(),
            self._seen, self._decisions)
        if found is not None:
            return service_item(service, Outcome.HELD_BACK if found[0] else Outcome.WAITING,
                                current, remote, found[1], target=_named(service, ref))
        if options.monitor_only or not change or held:
            outcome = Outcome.HELD_BACK if held else Outcome.AVAILABLE
            moved = tracked(service.image)[0].tag != ref.tag
            return service_item(service, outcome, current, remote, held or (
                f"newer version tag {ref.tag}" if moved and not change else None),
                target=_named(service, ref))
        return None

    def _unchanged_on_nodes(self, service: ServiceSnapshot, ref: reference.Reference,
                            current: str | None, remote: str) -> str | None:
        """Why the tag's new index changes nothing for the nodes the service may run on (it
        names the same image for each of their platforms), or None. A pass reads the nodes
        once, and an index once (the registry client keeps what it names)."""
        if current is None or not self._registry.compares_platforms:
            return None
        if self._nodes is None:
            try:
                self._nodes = self._engine.nodes()
            except EngineError as exc:  # then the digests decide, as without platforms
                log.debug("%s: nodes not listed: %s", service.name, exc)
                return None
        platforms = node_platforms(self._nodes, service.spec.get("TaskTemplate") or {})
        note = unchanged_for(self._registry, ref, [current], remote, platforms or [],
                             service.name)
        if note is None:
            return None
        # Kept on its index only while the registry still holds it: a task placed on a new
        # node pulls it by digest, and registries delete untagged indexes (lifecycle rules).
        try:
            self._registry.digest(dataclasses.replace(ref, tag=current, digest=None))
        except RegistryError as exc:
            log.info("%s: its index %s is no longer in the registry (%s): rolled to the "
                     "tag's", service.name, current[:19], exc)
            return None
        return note

    def _followed(self, service: ServiceSnapshot, marker: Marker,
                  action: Callable[[], tuple[Outcome, str | None]],
                  started: float | None = None) -> ItemReport | None:
        """The item of a rollout that `action` follows (and rolls back) to its end; the end
        claimed as told, so no other updater tells it again. When the engine fails meanwhile
        the rollout goes on in the swarm: the item says so, and a later pass follows it again
        (when the swarm manager is lost, the pass ends after this item)."""
        started = self._clock() if started is None else started
        try:
            outcome, reason = action()
        except EngineError as exc:
            outcome, reason = Outcome.ROLLING, (
                f"following the rolling update failed ({exc}); it goes on in the swarm, and "
                "the next pass of the leader's updater follows it and tells how it ended")
            if self._manager_lost():
                self._lost = f"lost the swarm manager while following {service.name}: {exc}"
                log.error("%s", self._lost)
        if outcome in _ENDS and not self._told.claim(service, marker, outcome):
            return None  # told by another updater already
        return service_item(service, outcome, marker.source, marker.to, reason,
                            self._clock() - started)

    def _manager_lost(self) -> bool:
        """True when this engine no longer answers as the swarm's leader."""
        try:
            return not is_leader(self._engine)
        except UpdaterError:
            return True

    def _story(self, service: ServiceSnapshot, current: str | None,
               options: ServiceOptions) -> ItemReport | None:
        """The item for a service whose rolling update is not settled, or whose end (of a
        rollout this updater started) was not told yet; None: the digest decides."""
        found = rollout.story(service.inspect, current)
        status = service.inspect.get("UpdateStatus") or {}
        said = f"{status.get('State')}" + (f": {status['Message']}" if status.get("Message")
                                           else "")
        if found.phase is Phase.OTHERS_ROLLING:
            return service_item(service, Outcome.ROLLING, current, None, (
                f"a rolling update this updater did not start is in progress ({said}); "
                "left to the swarm"))
        if found.phase is Phase.OTHERS_PAUSED:
            return service_item(service, Outcome.PAUSED, current, None, (
                f"its rolling update is {said}; not started by this updater, so left as it is"))
        marker = found.marker
        if marker is None:
            return None
        phase = found.phase
        if phase in _TOLD_BY_PHASE and self._told.told(service, marker, _TOLD_BY_PHASE[phase]):
            if phase in (Phase.PAUSED, Phase.ROLLBACK_PAUSED):
                return service_item(service, Outcome.PAUSED, marker.source, marker.to, (
                    f"its rolling update is {said}; told before, left as it is"))
            return None
        return self._followed(service, marker, lambda: self._rest(
            service, phase, said, options.rollback, options.health_timeout))

    def _rest(self, service: ServiceSnapshot, phase: Phase, said: str, rollback: bool,
              health: float) -> tuple[Outcome, str | None]:
        """The rest of a rollout this updater started (a pass ago, or on another node)."""
        spec = service.inspect.get("Spec") or {}
        previous = image_of(service.inspect.get("PreviousSpec"))
        if phase in _ENDED:
            outcome, text = _ENDED[phase]
            return outcome, text.format(said)
        if phase is Phase.ROLLING and service.job:
            return Outcome.UPDATED, "a job: the swarm ran it on the new image"
        if phase is Phase.ROLLING:
            log.info("%s: following the rolling update an earlier pass started", service.name)
            outcome, reason = self._rollouts.follow(service, spec, previous, rollback, health)
            return outcome, reason or "the rolling update an earlier pass started completed"
        if phase is Phase.PAUSED:
            return self._rollouts.undo(service, spec, previous, f"rolling update ended {said}",
                                       "paused", rollback, health)
        self._rollouts.await_rollback(service, spec, image_of(spec), health)  # ROLLING_BACK
        return Outcome.ROLLED_BACK, f"rolled back to the previous spec ({said})"

    def rebalance(self, plans: list[ServicePlan]) -> list[ItemReport]:
        """Carry out plans one service at a time: a forced rolling update each, waiting for
        it to converge before the next."""
        return self._rollouts.rebalance(plans)

    def _after_send(self, service: ServiceSnapshot, spec: dict[str, Any],
                    options: ServiceOptions, own: bool) -> tuple[Outcome, str | None]:
        if own:
            # The swarm replaces this task; the new leader task sees the result next pass.
            return Outcome.UPDATED, ("this updater's own service: the swarm's rolling update "
                                     "(with its failure action) replaces this task")
        if service.job:
            return Outcome.UPDATED, ("a job: the swarm runs it once on the new image; jobs are "
                                     "not rolled, so not followed or rolled back")
        return self._rollouts.follow(service, spec, service.image, options.rollback,
                            options.health_timeout)



def _named(service: ServiceSnapshot, ref: reference.Reference) -> str:
    """The reference an update moves `service` to, as its spec names its repository."""
    return f"{service.image.split('@')[0].rsplit(':', 1)[0]}:{ref.tag}"
