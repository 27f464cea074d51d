"""Rebalancing replicated services over swarm nodes: the plan (pure) and its execution.

Per replicated service: its running tasks per eligible node (ready, active, matching its
placement constraints); when their standard deviation exceeds the threshold, the tasks are
redistributed toward the nodes with the most free capacity: one task at a time to the node
whose (tasks + 1) / free-capacity share is lowest, never beyond what a node's unreserved CPU
and memory can hold. The swarm does the moving: a forced rolling update of the service
(its own UpdateConfig), after which its scheduler places each new task on the least loaded
node that has room — one service at a time, waiting for it to converge.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class NodeCapacity:
    id: str
    name: str
    eligible: bool
    nano_cpus: int
    memory: int
    labels: Mapping[str, str] = field(default_factory=dict)
    engine_labels: Mapping[str, str] = field(default_factory=dict)
    role: str = "worker"
    os: str = "linux"

    @classmethod
    def from_inspect(cls, node: Mapping[str, Any]) -> NodeCapacity:
        description = node.get("Description") or {}
        resources = description.get("Resources") or {}
        spec = node.get("Spec") or {}
        engine = description.get("Engine") or {}
        ready = (node.get("Status") or {}).get("State") == "ready"
        return cls(id=str(node["ID"]), name=str(description.get("Hostname") or node["ID"]),
                   eligible=ready and spec.get("Availability") == "active",
                   nano_cpus=int(resources.get("NanoCPUs") or 0),
                   memory=int(resources.get("MemoryBytes") or 0),
                   labels=dict(spec.get("Labels") or {}),
                   engine_labels=dict(engine.get("Labels") or {}),
                   role=str(spec.get("Role") or "worker"),
                   os=str((description.get("Platform") or {}).get("OS") or "linux"))


@dataclass(frozen=True, slots=True)
class ServicePlan:
    service: str
    before: Mapping[str, int]
    after: Mapping[str, int]
    deviation: float

    @property
    def moves(self) -> int:
        return sum(max(0, self.before[n] - self.after.get(n, 0)) for n in self.before)


def matches(constraint: str, node: NodeCapacity) -> bool:
    """One swarm placement constraint (`node.hostname==x`, `node.labels.zone!=b`, …)."""
    operator = "!=" if "!=" in constraint else "=="
    key, _, wanted = (part.strip() for part in constraint.partition(operator))
    values = {"node.id": node.id, "node.hostname": node.name, "node.role": node.role,
              "node.platform.os": node.os}
    if key.startswith("node.labels."):
        actual = node.labels.get(key.removeprefix("node.labels."))
    elif key.startswith("engine.labels."):
        actual = node.engine_labels.get(key.removeprefix("engine.labels."))
    else:
        actual = values.get(key)
    return (actual == wanted) if operator == "==" else (actual != wanted)


def deviation(counts: Iterable[int]) -> float:
    values = list(counts)
    return statistics.pstdev(values) if len(values) > 1 else 0.0


def plan_service(name: str, replicas: int, per_task: tuple[int, int],
                 constraints: Iterable[str], running: Mapping[str, int],
                 nodes: Iterable[NodeCapacity], reserved: Mapping[str, tuple[int, int]],
                 threshold: float) -> ServicePlan | None:
    """The redistribution of one service, or None when it is balanced enough.

    `per_task` is the service's (NanoCPUs, memory) reservation; `reserved` what other
    services' running tasks reserve on each node; `running` this service's tasks per node.
    """
    rules = list(constraints)
    eligible = [n for n in nodes if n.eligible and all(matches(c, n) for c in rules)]
    if not eligible:
        return None
    before = {n.name: running.get(n.id, 0) for n in eligible}
    spread = deviation(before.values())
    if spread <= threshold:
        return None
    after = _distribute(replicas, per_task, eligible, reserved)
    return ServicePlan(name, before, after, spread)


def _distribute(replicas: int, per_task: tuple[int, int], nodes: list[NodeCapacity],
                reserved: Mapping[str, tuple[int, int]]) -> dict[str, int]:
    free = {n.id: (max(0, n.nano_cpus - reserved.get(n.id, (0, 0))[0]),
                   max(0, n.memory - reserved.get(n.id, (0, 0))[1])) for n in nodes}
    room = {n.id: _room(free[n.id], per_task) for n in nodes}
    weight = {n.id: (free[n.id][0] / n.nano_cpus if n.nano_cpus else 1.0) for n in nodes}
    counts = {n.id: 0 for n in nodes}
    for _ in range(replicas):
        open_nodes = [n for n in nodes if counts[n.id] < room[n.id] and weight[n.id] > 0]
        if not open_nodes:
            break
        best = min(open_nodes, key=lambda n: ((counts[n.id] + 1) / weight[n.id], n.name))
        counts[best.id] += 1
    return {n.name: counts[n.id] for n in nodes}


def _room(free: tuple[int, int], per_task: tuple[int, int]) -> float:
    """How many tasks fit in `free`: unlimited without reservations."""
    limits = [free[i] // per_task[i] for i in (0, 1) if per_task[i] > 0]
    return min(limits) if limits else math.inf


def _reservation(task_or_spec: Mapping[str, Any]) -> tuple[int, int]:
    resources = ((task_or_spec.get("Spec") or task_or_spec).get("Resources") or {})
    reservations = resources.get("Reservations") or {}
    return int(reservations.get("NanoCPUs") or 0), int(reservations.get("MemoryBytes") or 0)


def plans(nodes: Sequence[Mapping[str, Any]], services: Sequence[Mapping[str, Any]],
          tasks: Sequence[Mapping[str, Any]], threshold: float,
          names: Iterable[str] = ()) -> list[ServicePlan]:
    """Plans for every replicated service (or those named) out of balance, from the engine's
    node, service and running-task documents."""
    capacities = [NodeCapacity.from_inspect(node) for node in nodes]
    wanted = set(names)
    running = [t for t in tasks if (t.get("Status") or {}).get("State") == "running"]
    found = []
    for service in services:
        spec = service["Spec"]
        replicated = (spec.get("Mode") or {}).get("Replicated")
        if replicated is None or (wanted and spec["Name"] not in wanted):
            continue
        own: dict[str, int] = {}
        others: dict[str, tuple[int, int]] = {}
        for task in running:
            node = str(task.get("NodeID"))
            if task.get("ServiceID") == service["ID"]:
                own[node] = own.get(node, 0) + 1
            else:
                cpu, memory = _reservation(task)
                previous = others.get(node, (0, 0))
                others[node] = (previous[0] + cpu, previous[1] + memory)
        template = spec.get("TaskTemplate") or {}
        constraints = (template.get("Placement") or {}).get("Constraints") or []
        plan = plan_service(str(spec["Name"]), int(replicated.get("Replicas") or 0),
                            _reservation(template), constraints, own, capacities, others,
                            threshold)
        if plan is not None:
            found.append(plan)
    return found
