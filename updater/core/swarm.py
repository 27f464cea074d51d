"""A swarm service as values, and the rules about it that need no engine: the tag it tracks and
the digest it is pinned to, what its last rollback rolled back from (its hold-back), how long a
rolling update may take, when nothing is left to replace, and the spec that moves it."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from updater.core import policy, reference, rollout
from updater.core.report import ItemReport, Outcome
from updater.core.rollout import Marker
from updater.core.settings import Settings
from updater.core.windows import UpdateWindow
from updater.errors import UpdaterError

ROLLBACK_STATES = ("rollback_started", "rollback_paused", "rollback_completed")


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
    if status.get("State") not in ROLLBACK_STATES:
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
    min_age: float = 0.0
    window: UpdateWindow | None = None
    approve: bool = False


def new_spec(service: ServiceSnapshot, ref: reference.Reference,
              marker: Marker) -> dict[str, Any]:
    """The service's spec with the image pinned to the marker's digest, and the marker."""
    spec: dict[str, Any] = json.loads(json.dumps(service.spec))
    repository = ref.repository if ref.domain != "docker.io" else ref.path
    spec["TaskTemplate"]["ContainerSpec"]["Image"] = f"{repository}:{ref.tag}@{marker.to}"
    # In the same spec update: a label of the service starts no rollout of its own.
    spec["Labels"] = {**(spec.get("Labels") or {}), rollout.LABEL: marker.raw}
    return spec


def image_of(spec: Mapping[str, Any] | None) -> str:
    return str((((spec or {}).get("TaskTemplate") or {}).get("ContainerSpec") or {})
               .get("Image") or "")


def service_options(labels: Mapping[str, str], settings: Settings) -> ServiceOptions:
    """monitor-only, rollback and health-timeout from a service's labels and the settings;
    ConfigError naming a bad label."""
    monitor_only = settings.monitor_only or policy.bool_label(labels, "monitor-only") is True
    rollback = policy.bool_label(labels, "rollback")
    health = policy.duration_label(labels, "health-timeout", settings.health_timeout)
    return ServiceOptions(monitor_only, settings.rollback if rollback is None else rollback,
                          health, policy.duration_label(labels, "min-age", settings.min_age),
                          policy.window_label(labels, settings.update_window),
                          settings.approve if (approve := policy.bool_label(labels, "approve"))
                          is None else approve)


def service_item(service: ServiceSnapshot, outcome: Outcome, old: str | None,
                 new: str | None, reason: str | None = None, seconds: float = 0.0,
                 target: str | None = None) -> ItemReport:
    """The report of one service's pass."""
    return ItemReport(service.name, service.image.split("@")[0], outcome, kind="service",
                      old_digest=old, new_digest=new, reason=reason, seconds=seconds,
                      target=target)
