"""Swarm services: only the leader acts. A service is updated by sending its current spec with
`ContainerSpec.Image` pinned to `repo:tag@sha256:<new>`, its version index as the optimistic
lock, and the registry credentials in `X-Registry-Auth`, so the swarm's own rolling update
(UpdateConfig) does the work; then `UpdateStatus` is followed to `completed` (or, when the swarm
sets none because no task needs replacing, the tasks are), within a bound built from the
update's own batches and the per-task health timeout, and a failure is rolled back to the
previous spec when rollback is on. Jobs are not rolled: their spec is updated once, which runs
them once on the new image, and never rolled back (that would run them again).

A service whose last change was a rollback (this updater's, the swarm's failure action or a
user's `docker service rollback`) is held back from the digest it was rolled back from, until
a newer one is pushed or `updater update NAME` asks for it. Nothing is sent when nothing
changed: a no-op update would erase the service's PreviousSpec.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from updater.core import policy, reference, rollout
from updater.core.detect import DigestSource, PassLookups, unchanged_for
from updater.core.rebalance import ServicePlan, node_platforms
from updater.core.report import ItemReport, Outcome
from updater.core.rollout import Marker, Phase
from updater.core.settings import Settings
from updater.engine.adapter import Engine
from updater.errors import (
    EngineError,
    EngineUnavailable,
    NotFoundInEngine,
    RegistryError,
    UpdaterError,
)
from updater.registry.credentials import CredentialSource

log = logging.getLogger(__name__)
POLL_SECONDS = 0.5
_ROLLBACK_STATES = ("rollback_started", "rollback_paused", "rollback_completed")
_FAILED_STATES = ("paused", *_ROLLBACK_STATES)
# The ends of a rollout's story, each told once (swarm-wide) per rollout.
_ENDS = (Outcome.UPDATED, Outcome.ROLLED_BACK, Outcome.FAILED)
# The end a phase tells: when it was told, the phase is quiet (a paused one says so).
# (A rollback the swarm's failure action started was told when it started: not followed again.)
_TOLD_BY_PHASE = {Phase.DONE: Outcome.UPDATED, Phase.ROLLED_BACK: Outcome.ROLLED_BACK,
                  Phase.ROLLING_BACK: Outcome.ROLLED_BACK, Phase.PAUSED: Outcome.FAILED,
                  Phase.ROLLBACK_PAUSED: Outcome.FAILED}
TOLD_LABEL = "updater.told"
# Phases whose end is there to be told, as it was when the updater that started it was lost.
_ENDED = {Phase.DONE: (Outcome.UPDATED, "the rolling update this updater started completed"
                                        " ({}); its end was not told yet"),
          Phase.ROLLED_BACK: (Outcome.ROLLED_BACK, "rolled back to the previous spec ({})"),
          Phase.ROLLBACK_PAUSED: (Outcome.FAILED, "the rollback to the previous spec paused"
                                                  " ({})")}


@dataclass(frozen=True, slots=True)
class ServiceSnapshot:
    id: str
    name: str
    version: int
    image: str
    labels: Mapping[str, str] = field(default_factory=dict)
    spec: Mapping[str, Any] = field(default_factory=dict)
    replicas: int | None = None
    job: bool = False
    rolled_back: RolledBack | None = None
    inspect: Mapping[str, Any] = field(default_factory=dict)  # the whole service, as read

    @classmethod
    def from_inspect(cls, service: Mapping[str, Any]) -> ServiceSnapshot:
        spec = service["Spec"]
        mode = spec.get("Mode") or {}
        replicated = mode.get("Replicated")
        return cls(id=str(service["ID"]), name=str(spec["Name"]),
                   version=int(service["Version"]["Index"]),
                   image=str(spec["TaskTemplate"]["ContainerSpec"]["Image"]),
                   labels=dict(spec.get("Labels") or {}), spec=spec,
                   replicas=int(replicated.get("Replicas", 1)) if replicated else None,
                   job="ReplicatedJob" in mode or "GlobalJob" in mode,
                   rolled_back=rolled_back_from(service), inspect=service)


@dataclass(frozen=True, slots=True)
class RolledBack:
    """The digest a service was rolled back from, and when (the swarm's timestamp)."""

    digest: str
    at: str


def rolled_back_from(service: Mapping[str, Any]) -> RolledBack | None:
    """What the service's last change rolled back from, when that change was a rollback (the
    swarm then keeps the spec it left as PreviousSpec); None otherwise."""
    status = service.get("UpdateStatus") or {}
    if status.get("State") not in _ROLLBACK_STATES:
        return None
    template = (service.get("PreviousSpec") or {}).get("TaskTemplate") or {}
    image = (template.get("ContainerSpec") or {}).get("Image")
    try:
        digest = tracked(str(image))[1] if image else None
    except UpdaterError:
        return None
    if digest is None:
        return None
    return RolledBack(digest, str(status.get("CompletedAt") or status.get("StartedAt") or "")[:19])


def is_leader(engine: Engine) -> bool:
    """True when this engine's node is the swarm's leader (asked every pass)."""
    info = engine.info()
    swarm = info.get("Swarm") or {}
    if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
        return False
    node = engine.inspect_node(str(swarm.get("NodeID")))
    return bool((node.get("ManagerStatus") or {}).get("Leader"))


def tracked(image: str) -> tuple[reference.Reference, str | None]:
    """The tag a service follows and the digest it is pinned to (`repo:tag@sha256:...`)."""
    ref = reference.parse(image)
    digest = ref.digest
    if ref.tag is None:
        return ref, digest  # pinned by the user: digest only
    return reference.Reference(ref.domain, ref.path, ref.tag, None), digest


def held_back(service: ServiceSnapshot, remote: str) -> str | None:
    """Why `remote` is not tried on `service` (it was rolled back from it), or None."""
    rolled_back = service.rolled_back
    if rolled_back is None or rolled_back.digest != remote:
        return None
    return (f"held back: rolled back from this image at {rolled_back.at.replace('T', ' ')} UTC;"
            f" a newer push, or `updater update {service.name}`, tries again")


def update_timeout(spec: Mapping[str, Any], replicas: int | None, nodes: int,
                   task_timeout: float, config: str = "UpdateConfig") -> float:
    """How long a rolling update (or, with config="RollbackConfig", a rollback) may take: per
    batch of `Parallelism` tasks the delay, the monitor period and the time one new task may
    take to run and be healthy (`task_timeout`), times the number of batches, plus a margin."""
    settings = spec.get(config) or {}
    parallelism = int(settings.get("Parallelism", 1))
    delay = int(settings.get("Delay") or 0) / 1e9
    monitor = int(settings.get("Monitor") or 5_000_000_000) / 1e9
    tasks = max(replicas if replicas is not None else nodes, 1)
    batches = 1 if parallelism <= 0 else -(-tasks // parallelism)  # 0: all at once
    return 60.0 + batches * (delay + monitor + task_timeout)


def rolled_out(tasks: Sequence[Mapping[str, Any]], image: str, replicas: int | None) -> bool:
    """Nothing left to replace: every task the swarm wants running runs `image` and is
    running, and (replicated) there are `replicas` of them; true at once for 0 replicas."""
    wanted = [t for t in tasks if t.get("DesiredState") == "running"]
    for task in wanted:
        spec_image = (((task.get("Spec") or {}).get("ContainerSpec")) or {}).get("Image")
        if spec_image != image or (task.get("Status") or {}).get("State") != "running":
            return False
    return replicas is None or len(wanted) == replicas


@dataclass(frozen=True, slots=True)
class ServiceOptions:
    monitor_only: bool
    rollback: bool
    health_timeout: float


class ConfigStore(Protocol):
    """The swarm's configs, as far as ToldStories uses them (the Engine is one)."""

    def configs(self, label: str) -> list[dict[str, Any]]: ...

    def create_config(self, name: str, data: bytes, labels: dict[str, str]) -> bool: ...

    def remove_config(self, config: str) -> None: ...


class ToldStories:
    """Which ends of rollouts were told, kept by the swarm itself so that every manager sees
    the same: one config per rollout and outcome, named after both (`rollout.told_key`). The
    swarm refuses a second config of a name, so of two updaters telling one end, one does.
    Configs of rollouts no longer in any service's Spec or PreviousSpec are removed."""

    def __init__(self, engine: ConfigStore, services: Sequence[Mapping[str, Any]]) -> None:
        self._engine = engine
        self._services = services
        self._names: set[str] | None = None

    def told(self, service: ServiceSnapshot, marker: Marker, outcome: Outcome) -> bool:
        return rollout.told_key(service.id, marker, outcome.value) in self._known()

    def claim(self, service: ServiceSnapshot, marker: Marker, outcome: Outcome) -> bool:
        """True when this updater is the one to tell that end (or the swarm cannot say)."""
        name = rollout.told_key(service.id, marker, outcome.value)
        known = self._known()
        if name in known:
            return False
        data = json.dumps({"service": service.name, "outcome": outcome.value,
                           "rollout": marker.raw, "told": int(time.time())}).encode()
        try:
            created = self._engine.create_config(name, data, {
                TOLD_LABEL: service.id, rollout.LABEL: marker.raw})
        except EngineError as exc:
            log.warning("%s: could not record in the swarm that this end was told (%s); "
                        "another updater may tell it again", service.name, exc)
            return True
        known.add(name)
        return created

    def _known(self) -> set[str]:
        if self._names is None:
            try:
                found = self._engine.configs(TOLD_LABEL)
            except EngineError as exc:
                log.warning("cannot list which rollouts were told (%s)", exc)
                return set()
            self._names = {str(c["Spec"]["Name"]) for c in found}
            self._forget(found)
        return self._names

    def _forget(self, configs: Sequence[Mapping[str, Any]]) -> None:
        live = {str(s["ID"]): {(m.raw if m else None) for m in (
            Marker.read(s.get("Spec")), Marker.read(s.get("PreviousSpec")))}
            for s in self._services}
        for config in configs:
            labels = config["Spec"].get("Labels") or {}
            if labels.get(rollout.LABEL) not in live.get(str(labels.get(TOLD_LABEL)), set()):
                try:
                    self._engine.remove_config(str(config["ID"]))
                except EngineError as exc:
                    log.debug("told-config %s kept: %s", config["ID"], exc)


class ServiceUpdater:
    def __init__(self, engine: Engine, registry: DigestSource, credentials: CredentialSource,
                 settings: Settings, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic,
                 own_container: str | None = None) -> None:
        self._engine = engine
        self._own_container = own_container
        self._source = registry
        # Each run's answers: one lookup per distinct reference, shared with the containers of
        # the pass when it gives one PassLookups to both.
        self._registry = self._lookups()
        self._credentials = credentials
        self._settings = settings
        self._sleep = sleep
        self._clock = clock
        self._told = ToldStories(engine, [])
        self._lost: str | None = None  # why the swarm manager was lost during this run
        self._nodes: list[dict[str, Any]] | None = None  # read when first needed in a run

    def names(self) -> list[str]:
        """Names of the services this engine can see (none unless it is a swarm manager)."""
        swarm = self._engine.info().get("Swarm") or {}
        if not swarm.get("ControlAvailable"):
            return []
        return [str(s["Spec"]["Name"]) for s in self._engine.services()]

    def run(self, names: tuple[str, ...] = (),
            stop_requested: Callable[[], bool] = lambda: False) -> Iterator[ItemReport]:
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
        self._registry = self._lookups(services, names)
        # This updater's own service last: its rolling update replaces this very task.
        for service in sorted(services, key=lambda s: s["ID"] == own):
            snapshot = ServiceSnapshot.from_inspect(service)
            if names and snapshot.name not in names:
                continue
            if stop_requested():
                break
            # Asked for by name: a digest that was rolled back is tried again.
            item = self._one(snapshot, own=snapshot.id == own, retry_rolled_back=bool(names))
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
        self._registry = self._lookups(services, names)
        for service in services:
            snapshot = ServiceSnapshot.from_inspect(service)
            if not names or snapshot.name in names:
                item = self._one(snapshot, change=False)
                items += [item] if item else []
        return items

    def _lookups(self, services: Sequence[Mapping[str, Any]] = (),
                 names: tuple[str, ...] = ()) -> PassLookups:
        """This run's registry answers, the digest of every watched service's tag asked for
        at once (concurrently, each distinct reference once)."""
        source = self._source
        lookups = source if isinstance(source, PassLookups) else PassLookups(source)
        lookups.forget_failures()  # what failed for the containers is asked again, once
        wanted = []
        for service in map(ServiceSnapshot.from_inspect, services):
            try:
                if (not names or service.name in names) and \
                        policy.is_watched(service.labels, self._settings):
                    ref, _ = tracked(service.image)
                    wanted += [ref] if ref.tag is not None else []
            except UpdaterError:
                continue  # reported when the service's turn comes
        lookups.prefetch(wanted)
        return lookups

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
                return _item(service, Outcome.PINNED, current, None)
            options = self._options(service)
        except UpdaterError as exc:
            return _item(service, Outcome.ERROR, current, None, str(exc))
        if change and not options.monitor_only:
            # A rolling update still going, or one whose end was not told yet, comes first:
            # the spec naming the registry's digest says nothing about how it went.
            found = self._story(service, current, options)
            if found is not None:
                return found
        return self._against_registry(service, ref, current, options, change, own,
                                      retry_rolled_back)

    def _against_registry(self, service: ServiceSnapshot, ref: reference.Reference,
                          current: str | None, options: ServiceOptions, change: bool,
                          own: bool, retry_rolled_back: bool) -> ItemReport | None:
        """Compare with the registry's digest; update (and follow) when they differ."""
        try:
            remote = self._registry.digest(ref)
        except UpdaterError as exc:
            return _item(service, Outcome.ERROR, current, None, str(exc))
        if remote == current:
            return _item(service, Outcome.UP_TO_DATE, current, remote)
        unchanged = self._unchanged_on_nodes(service, ref, current, remote)
        if unchanged is not None:
            return _item(service, Outcome.UP_TO_DATE, current, remote, unchanged)
        # A rolled-back digest, tried every pass, would cost an outage every pass (and undo a
        # user's rollback); asked for by name, it is tried again.
        held = None if retry_rolled_back else held_back(service, remote)
        if options.monitor_only or not change or held:
            outcome = Outcome.HELD_BACK if held and change else Outcome.AVAILABLE
            return _item(service, outcome, current, remote, held if change else None)
        marker = Marker.new(remote, current, time.time())
        spec = _new_spec(service, ref, marker)
        started = self._clock()
        try:
            refused = self._send(service, spec, ref.domain)
        except UpdaterError as exc:
            refused = Outcome.FAILED, str(exc)
        if refused is not None:
            return _item(service, *refused, current, remote, self._clock() - started)
        log.info("%s: rolling update to %s started", service.name, remote[:19])
        return self._followed(service, marker, lambda: self._after_send(
            service, spec, options, own), started)

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
        return _item(service, outcome, marker.source, marker.to, reason,
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
            return _item(service, Outcome.ROLLING, current, None, (
                f"a rolling update this updater did not start is in progress ({said}); "
                "left to the swarm"))
        if found.phase is Phase.OTHERS_PAUSED:
            return _item(service, Outcome.PAUSED, current, None, (
                f"its rolling update is {said}; not started by this updater, so left as it is"))
        marker = found.marker
        if marker is None:
            return None
        phase = found.phase
        if phase in _TOLD_BY_PHASE and self._told.told(service, marker, _TOLD_BY_PHASE[phase]):
            if phase in (Phase.PAUSED, Phase.ROLLBACK_PAUSED):
                return _item(service, Outcome.PAUSED, marker.source, marker.to, (
                    f"its rolling update is {said}; told before, left as it is"))
            return None
        return self._followed(service, marker, lambda: self._rest(
            service, phase, said, options.rollback, options.health_timeout))

    def _rest(self, service: ServiceSnapshot, phase: Phase, said: str, rollback: bool,
              health: float) -> tuple[Outcome, str | None]:
        """The rest of a rollout this updater started (a pass ago, or on another node)."""
        spec = service.inspect.get("Spec") or {}
        previous = _image_of(service.inspect.get("PreviousSpec"))
        if phase in _ENDED:
            outcome, text = _ENDED[phase]
            return outcome, text.format(said)
        if phase is Phase.ROLLING and service.job:
            return Outcome.UPDATED, "a job: the swarm ran it on the new image"
        if phase is Phase.ROLLING:
            log.info("%s: following the rolling update an earlier pass started", service.name)
            outcome, reason = self._follow(service, spec, previous, rollback, health)
            return outcome, reason or "the rolling update an earlier pass started completed"
        if phase is Phase.PAUSED:
            return self._undo(service, spec, previous, f"rolling update ended {said}", "paused",
                              rollback, health)
        self._await_rollback(service, spec, _image_of(spec), health)  # ROLLING_BACK
        return Outcome.ROLLED_BACK, f"rolled back to the previous spec ({said})"

    def _options(self, service: ServiceSnapshot) -> ServiceOptions:
        """monitor-only, rollback and health-timeout from the service's labels and settings."""
        labels = service.labels
        monitor_only = (self._settings.monitor_only
                        or policy.bool_label(labels, "monitor-only") is True)
        rollback = policy.bool_label(labels, "rollback")
        health = policy.duration_label(labels, "health-timeout", self._settings.health_timeout)
        return ServiceOptions(monitor_only, self._settings.rollback if rollback is None
                              else rollback, health)

    def _send(self, service: ServiceSnapshot, spec: dict[str, Any],
              domain: str) -> tuple[Outcome, str] | None:
        """Send the new spec; None when the swarm took it, else the outcome and why not."""
        try:
            self._engine.update_service(service.id, service.version, spec,
                                        self._registry_auth(domain))
        except EngineError:
            now = self._engine.inspect_service(service.id)
            if int(now["Version"]["Index"]) != service.version:
                # Someone else (another updater, a user) changed it first: decide again.
                return Outcome.SKIPPED, ("the service changed before this update reached it; "
                                         "it is decided again at the next pass")
            raise
        return None

    def _after_send(self, service: ServiceSnapshot, spec: dict[str, Any],
                    options: ServiceOptions, own: bool) -> tuple[Outcome, str | None]:
        if own:
            # The swarm replaces this task; the new leader task sees the result next pass.
            return Outcome.UPDATED, ("this updater's own service: the swarm's rolling update "
                                     "(with its failure action) replaces this task")
        if service.job:
            return Outcome.UPDATED, ("a job: the swarm runs it once on the new image; jobs are "
                                     "not rolled, so not followed or rolled back")
        return self._follow(service, spec, service.image, options.rollback,
                            options.health_timeout)

    def _follow(self, service: ServiceSnapshot, spec: Mapping[str, Any], previous: str,
                rollback: bool, health_timeout: float) -> tuple[Outcome, str | None]:
        """Follow the rolling update to `spec` to its end; roll back a failed one."""
        nodes = len(self._engine.nodes())
        timeout = update_timeout(spec, service.replicas, nodes, health_timeout)
        state, message = self._await_update(service.id, timeout, _image_of(spec),
                                            service.replicas)
        if state == "completed":
            log.info("%s: updated", service.name)
            return Outcome.UPDATED, None
        problem = f"rolling update ended {state}" + (f": {message}" if message else "")
        return self._undo(service, spec, previous, problem, state, rollback, health_timeout)

    def _undo(self, service: ServiceSnapshot, spec: Mapping[str, Any], previous: str,
              problem: str, state: str, rollback: bool,
              health_timeout: float) -> tuple[Outcome, str | None]:
        """A failed rolling update: back to the previous spec (unless rollback is off, or the
        swarm's own failure action already rolls back)."""
        if not rollback:
            return Outcome.FAILED, problem
        if not state.startswith("rollback"):
            current = self._engine.inspect_service(service.id)
            self._engine.rollback_service(service.id, int(current["Version"]["Index"]))
            self._await_rollback(service, spec, previous, health_timeout)
        log.error("%s: %s; rolled back to the previous spec", service.name, problem)
        return Outcome.ROLLED_BACK, f"{problem}; rolled back to the previous spec"

    def _await_rollback(self, service: ServiceSnapshot, spec: Mapping[str, Any],
                        previous: str, health_timeout: float) -> None:
        nodes = len(self._engine.nodes())
        self._await_update(service.id, update_timeout(
            spec, service.replicas, nodes, health_timeout, "RollbackConfig"),
            previous, service.replicas, rollback=True)

    def rebalance(self, plans: list[ServicePlan]) -> list[ItemReport]:
        """Carry out plans one service at a time: a forced rolling update each, waiting for
        it to converge before the next."""
        items = []
        for plan in plans:
            service = ServiceSnapshot.from_inspect(self._engine.inspect_service(plan.service))
            spec = json.loads(json.dumps(service.spec))
            template = spec["TaskTemplate"]
            template["ForceUpdate"] = int(template.get("ForceUpdate") or 0) + 1
            ref, _ = tracked(service.image)
            started = self._clock()
            self._engine.update_service(service.id, service.version, spec,
                                        self._registry_auth(ref.domain))
            timeout = update_timeout(spec, service.replicas, len(self._engine.nodes()),
                                     self._settings.health_timeout)
            # Same image before and after: only UpdateStatus can tell the forced update is done.
            state, message = self._await_update(service.id, timeout, None, service.replicas)
            outcome = Outcome.REBALANCED if state == "completed" else Outcome.FAILED
            reason = (f"rebalanced: {dict(plan.before)} -> {dict(plan.after)}"
                      if outcome is Outcome.REBALANCED else f"rebalance ended {state}: {message}")
            log.info("%s: %s", service.name, reason)
            items.append(_item(service, outcome, None, None, reason, self._clock() - started))
        return items

    def _await_update(self, service_id: str, timeout: float, image: str | None,
                      replicas: int | None, rollback: bool = False) -> tuple[str, str]:
        """Follow UpdateStatus to an end state; when the swarm sets none (no task needed
        replacing, e.g. 0 replicas), or a rollback's stays started, the tasks decide whether
        all run `image` (None: UpdateStatus alone decides)."""
        deadline = self._clock() + timeout
        while True:
            status = self._engine.inspect_service(service_id).get("UpdateStatus") or {}
            state = str(status.get("State") or "")
            done = ("rollback_completed",) if rollback else ("completed", *_FAILED_STATES)
            if state in done:
                return state, str(status.get("Message") or "")
            if image and state == ("rollback_started" if rollback else "") and rolled_out(
                    self._engine.tasks(service_id), image, replicas):
                return done[0], "no task left to replace"
            if self._clock() >= deadline:
                return "timed out", f"not completed within {timeout:.0f}s"
            self._sleep(POLL_SECONDS)

    def _registry_auth(self, host: str) -> str | None:
        credentials = self._credentials.lookup(host)
        if credentials is None:
            return None
        payload = credentials.engine_auth(host)
        return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode()


def _new_spec(service: ServiceSnapshot, ref: reference.Reference,
              marker: Marker) -> dict[str, Any]:
    """The service's spec with the image pinned to the marker's digest, and the marker."""
    spec: dict[str, Any] = json.loads(json.dumps(service.spec))
    repository = ref.repository if ref.domain != "docker.io" else ref.path
    spec["TaskTemplate"]["ContainerSpec"]["Image"] = f"{repository}:{ref.tag}@{marker.to}"
    # In the same spec update: a label of the service starts no rollout of its own.
    spec["Labels"] = {**(spec.get("Labels") or {}), rollout.LABEL: marker.raw}
    return spec


def _image_of(spec: Mapping[str, Any] | None) -> str:
    return str((((spec or {}).get("TaskTemplate") or {}).get("ContainerSpec") or {})
               .get("Image") or "")


def _item(service: ServiceSnapshot, outcome: Outcome, old: str | None, new: str | None,
          reason: str | None = None, seconds: float = 0.0) -> ItemReport:
    return ItemReport(service.name, service.image.split("@")[0], outcome, kind="service",
                      old_digest=old, new_digest=new, reason=reason, seconds=seconds)


@dataclass(frozen=True, slots=True)
class TaskPlace:
    """Where one running task of a service is, and how to open a shell in it."""

    task: str
    node: str
    address: str
    container: str
    command: str
    availability: str = "active"  # the node's: active, pause or drain


def where(engine: Engine, service: str) -> list[TaskPlace]:
    """The running tasks of `service`: node name, address, container ID and a shell command
    (`-H` the engine we talk to for tasks on this node, Docker's ssh transport for others).
    A task counts when the swarm means it to run and it does, on a node that is up: tasks on
    a node that went down still say "running" until it comes back."""
    try:
        found = engine.inspect_service(service)
    except NotFoundInEngine:  # an engine lost or not a manager says so in its own error
        raise UpdaterError(f"no service named {service!r} on this swarm manager; "
                           "list them with docker service ls") from None
    info = engine.info()
    own_node = str((info.get("Swarm") or {}).get("NodeID") or "")
    nodes = {str(n["ID"]): n for n in engine.nodes()}
    places = []
    for task in engine.tasks(str(found["ID"])):
        status = task.get("Status") or {}
        container = str((status.get("ContainerStatus") or {}).get("ContainerID") or "")
        node = nodes.get(str(task.get("NodeID")), {})
        if status.get("State") != "running" or task.get("DesiredState") != "running" or \
                not container or (node.get("Status") or {}).get("State") != "ready":
            continue
        name = str((node.get("Description") or {}).get("Hostname") or task.get("NodeID"))
        address = str((node.get("Status") or {}).get("Addr") or "")
        host = engine.host if task.get("NodeID") == own_node else f"ssh://{address}"
        places.append(TaskPlace(str(task["ID"]), name, address, container,
                                f"docker -H {host} exec -it {container[:12]} sh",
                                str((node.get("Spec") or {}).get("Availability") or "active")))
    return sorted(places, key=lambda p: (p.node, p.container))
