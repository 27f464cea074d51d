"""Swarm services: only the leader acts. A service is updated by sending its current spec with
`ContainerSpec.Image` pinned to `repo:tag@sha256:<new>`, its version index as the optimistic
lock, and the registry credentials in `X-Registry-Auth`, so the swarm's own rolling update
(UpdateConfig) does the work; then `UpdateStatus` is followed to `completed`, and a failure is
rolled back to the previous spec when rollback is on. Nothing is sent when nothing changed:
a no-op update would erase the service's PreviousSpec.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from updater import policy, reference
from updater.config import Settings
from updater.credentials import CredentialSource
from updater.detect import DigestSource
from updater.engine import Engine
from updater.errors import EngineError, UpdaterError
from updater.rebalance import ServicePlan
from updater.report import ItemReport, Outcome

log = logging.getLogger(__name__)
POLL_SECONDS = 0.5
_FAILED_STATES = ("paused", "rollback_started", "rollback_paused", "rollback_completed")


@dataclass(frozen=True, slots=True)
class ServiceSnapshot:
    id: str
    name: str
    version: int
    image: str
    labels: Mapping[str, str] = field(default_factory=dict)
    spec: Mapping[str, Any] = field(default_factory=dict)
    replicas: int | None = None

    @classmethod
    def from_inspect(cls, service: Mapping[str, Any]) -> ServiceSnapshot:
        spec = service["Spec"]
        mode = spec.get("Mode") or {}
        replicated = mode.get("Replicated")
        return cls(id=str(service["ID"]), name=str(spec["Name"]),
                   version=int(service["Version"]["Index"]),
                   image=str(spec["TaskTemplate"]["ContainerSpec"]["Image"]),
                   labels=dict(spec.get("Labels") or {}), spec=spec,
                   replicas=int(replicated.get("Replicas", 1)) if replicated else None)


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


def update_timeout(spec: Mapping[str, Any], replicas: int | None, nodes: int) -> float:
    """How long a rolling update may take: per batch the delay plus the monitor period plus a
    start allowance, times the number of batches, plus a margin."""
    config = spec.get("UpdateConfig") or {}
    parallelism = max(1, int(config.get("Parallelism") or 1))
    delay = int(config.get("Delay") or 0) / 1e9
    monitor = int(config.get("Monitor") or 5_000_000_000) / 1e9
    tasks = replicas if replicas is not None else nodes
    batches = -(-max(tasks, 1) // parallelism)
    return 60.0 + batches * (delay + monitor + 30.0)


class ServiceUpdater:
    def __init__(self, engine: Engine, registry: DigestSource, credentials: CredentialSource,
                 settings: Settings, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic,
                 own_container: str | None = None) -> None:
        self._engine = engine
        self._own_container = own_container
        self._registry = registry
        self._credentials = credentials
        self._settings = settings
        self._sleep = sleep
        self._clock = clock

    def names(self) -> list[str]:
        """Names of the services this engine can see (none unless it is a swarm manager)."""
        swarm = self._engine.info().get("Swarm") or {}
        if not swarm.get("ControlAvailable"):
            return []
        return [str(s["Spec"]["Name"]) for s in self._engine.services()]

    def run(self, names: tuple[str, ...] = (),
            stop_requested: Callable[[], bool] = lambda: False) -> list[ItemReport]:
        """Check and update every watched service; nothing at all when not the leader."""
        if not is_leader(self._engine):
            log.debug("not the swarm leader: services are left to the leader")
            return []
        items = []
        own = self._own_service()
        # This updater's own service last: its rolling update replaces this very task.
        for service in sorted(self._engine.services(), key=lambda s: s["ID"] == own):
            snapshot = ServiceSnapshot.from_inspect(service)
            if names and snapshot.name not in names:
                continue
            if stop_requested():
                break
            item = self._one(snapshot, own=snapshot.id == own)
            if item is not None:
                items.append(item)
        return items

    def check(self, names: tuple[str, ...] = ()) -> list[ItemReport]:
        """What `run` would find, changing nothing (any manager may look)."""
        swarm = self._engine.info().get("Swarm") or {}
        if not swarm.get("ControlAvailable"):
            return []
        items = []
        for service in self._engine.services():
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

    def _one(self, service: ServiceSnapshot, change: bool = True,
             own: bool = False) -> ItemReport | None:
        current = None
        try:
            if not policy.is_watched(service.labels, self._settings):
                return None
            ref, current = tracked(service.image)
            if ref.tag is None:
                return _item(service, Outcome.PINNED, current, None)
            remote = self._registry.digest(ref)
            monitor_only, rollback, health = self._options(service)
        except UpdaterError as exc:
            return _item(service, Outcome.ERROR, current, None, str(exc))
        if remote == current:
            return _item(service, Outcome.UP_TO_DATE, current, remote)
        if monitor_only or not change:
            return _item(service, Outcome.AVAILABLE, current, remote)
        started = self._clock()
        outcome, reason = self._update(service, ref, remote, rollback, health, own)
        return _item(service, outcome, current, remote, reason, self._clock() - started)

    def _options(self, service: ServiceSnapshot) -> tuple[bool, bool, float]:
        """monitor-only, rollback and health-timeout from the service's labels and settings."""
        labels = service.labels
        monitor_only = (self._settings.monitor_only
                        or policy.bool_label(labels, "monitor-only") is True)
        rollback = policy.bool_label(labels, "rollback")
        health = policy.duration_label(labels, "health-timeout", 0)
        return monitor_only, self._settings.rollback if rollback is None else rollback, health

    def _update(self, service: ServiceSnapshot, ref: reference.Reference, digest: str,
                rollback: bool, health_timeout: float,
                own: bool = False) -> tuple[Outcome, str | None]:
        spec = json.loads(json.dumps(service.spec))
        spec["TaskTemplate"]["ContainerSpec"]["Image"] = f"{ref.repository}:{ref.tag}@{digest}"
        if ref.domain == "docker.io":
            spec["TaskTemplate"]["ContainerSpec"]["Image"] = f"{ref.path}:{ref.tag}@{digest}"
        try:
            self._engine.update_service(service.id, service.version, spec,
                                        self._registry_auth(ref.domain))
        except EngineError:
            now = self._engine.inspect_service(service.id)
            if int(now["Version"]["Index"]) != service.version:
                # Someone else (another updater, a user) changed it first: decide again.
                return Outcome.SKIPPED, ("the service changed before this update reached it; "
                                         "it is decided again at the next pass")
            raise
        log.info("%s: rolling update to %s started", service.name, digest[:19])
        if own:
            # The swarm replaces this task; the new leader task sees the result next pass.
            return Outcome.UPDATED, ("this updater's own service: the swarm's rolling update "
                                     "(with its failure action) replaces this task")
        timeout = health_timeout or update_timeout(spec, service.replicas,
                                                   len(self._engine.nodes()))
        state, message = self._await_update(service.id, timeout)
        if state == "completed":
            log.info("%s: updated", service.name)
            return Outcome.UPDATED, None
        problem = f"rolling update ended {state}" + (f": {message}" if message else "")
        if not rollback:
            return Outcome.FAILED, problem
        if not state.startswith("rollback"):
            current = self._engine.inspect_service(service.id)
            self._engine.rollback_service(service.id, int(current["Version"]["Index"]))
            self._await_update(service.id, timeout, rollback=True)
        log.error("%s: %s; rolled back to the previous spec", service.name, problem)
        return Outcome.ROLLED_BACK, f"{problem}; rolled back to the previous spec"

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
            state, message = self._await_update(
                service.id, update_timeout(spec, service.replicas, len(self._engine.nodes())))
            outcome = Outcome.REBALANCED if state == "completed" else Outcome.FAILED
            reason = (f"rebalanced: {dict(plan.before)} -> {dict(plan.after)}"
                      if outcome is Outcome.REBALANCED else f"rebalance ended {state}: {message}")
            log.info("%s: %s", service.name, reason)
            items.append(_item(service, outcome, None, None, reason, self._clock() - started))
        return items

    def _await_update(self, service_id: str, timeout: float,
                      rollback: bool = False) -> tuple[str, str]:
        deadline = self._clock() + timeout
        while True:
            status = self._engine.inspect_service(service_id).get("UpdateStatus") or {}
            state = str(status.get("State") or "")
            done = ("rollback_completed",) if rollback else ("completed", *_FAILED_STATES)
            if state in done:
                return state, str(status.get("Message") or "")
            if self._clock() >= deadline:
                return "timed out", f"not completed within {timeout:.0f}s"
            self._sleep(POLL_SECONDS)

    def _registry_auth(self, host: str) -> str | None:
        credentials = self._credentials.lookup(host)
        if credentials is None:
            return None
        payload = {"username": credentials.username, "password": credentials.password,
                   "serveraddress": host}
        return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode()


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


def where(engine: Engine, service: str) -> list[TaskPlace]:
    """The running tasks of `service`: node name, address, container ID and a shell command
    (`-H` the engine we talk to for tasks on this node, Docker's ssh transport for others)."""
    try:
        found = engine.inspect_service(service)
    except EngineError:
        raise UpdaterError(f"no service named {service!r} on this swarm manager; "
                           "list them with docker service ls") from None
    info = engine.info()
    own_node = str((info.get("Swarm") or {}).get("NodeID") or "")
    nodes = {str(n["ID"]): n for n in engine.nodes()}
    places = []
    for task in engine.tasks(str(found["ID"])):
        status = task.get("Status") or {}
        container = str((status.get("ContainerStatus") or {}).get("ContainerID") or "")
        if status.get("State") != "running" or not container:
            continue
        node = nodes.get(str(task.get("NodeID")), {})
        name = str((node.get("Description") or {}).get("Hostname") or task.get("NodeID"))
        address = str((node.get("Status") or {}).get("Addr") or "")
        host = engine.host if task.get("NodeID") == own_node else f"ssh://{address}"
        places.append(TaskPlace(str(task["ID"]), name, address, container,
                                f"docker -H {host} exec -it {container[:12]} sh"))
    return sorted(places, key=lambda p: (p.node, p.container))
