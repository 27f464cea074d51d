"""Rebalancing replicated services over swarm nodes: the plan (pure) and its execution.

Per replicated service: its running tasks per eligible node (ready, active, matching its
placement constraints exactly as swarmkit matches them). The best placement the swarm's own
rules allow is computed: spread evenly over the values of each placement preference's label
(nested, in order), then within a group toward the nodes with the most free capacity, one task
at a time to the node whose (tasks + 1) / free-capacity share is lowest, never beyond what a
node's unreserved CPU and memory can hold nor its max-replicas-per-node. Only when the current
spread is worse than that best by more than the threshold, and the best moves something, is
there a plan. The swarm does the moving: a forced rolling update of the service (its own
UpdateConfig), after which its scheduler places each new task by the same rules — one service
at a time, waiting for it to converge.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

NODE_LABELS = "node.labels."
MIN_WEIGHT = 0.01
ENGINE_LABELS = "engine.labels."


@dataclass(frozen=True, slots=True)
class Placement:
    """A service's placement rules: constraints, spread preferences (label keys, outermost
    first) and max replicas per node (0: no limit)."""

    constraints: tuple[str, ...] = ()
    spread: tuple[str, ...] = ()
    max_per_node: int = 0

    @classmethod
    def from_template(cls, template: Mapping[str, Any]) -> Placement:
        placement = template.get("Placement") or {}
        spread = tuple(str((p.get("Spread") or {}).get("SpreadDescriptor") or "")
                       for p in placement.get("Preferences") or ())
        return cls(tuple(placement.get("Constraints") or ()), tuple(s for s in spread if s),
                   int(placement.get("MaxReplicas") or 0))


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
    arch: str = ""

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
                   os=str((description.get("Platform") or {}).get("OS") or ""),
                   arch=str((description.get("Platform") or {}).get("Architecture") or ""))


# A node reports its machine as uname names it; an image index names OCI architectures.
_OCI_ARCHITECTURES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm/v7",
                      "armv6l": "arm/v6", "i386": "386", "i686": "386"}


def node_platforms(nodes: Sequence[Mapping[str, Any]],
                   template: Mapping[str, Any]) -> list[str] | None:
    """The platforms ("os/arch[/variant]") of the nodes a service's tasks may run on: every
    node its constraints allow, those down, drained or paused too (a task may go there later);
    None when one of them does not say its platform, or none is allowed."""
    constraints = Placement.from_template(template).constraints
    allowed = [node for node in map(NodeCapacity.from_inspect, nodes)
               if all(matches(constraint, node) for constraint in constraints)]
    if not allowed or any(not node.os or not node.arch for node in allowed):
        return None
    return sorted({f"{node.os}/{_OCI_ARCHITECTURES.get(node.arch, node.arch)}"
                   for node in allowed})


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
    """One swarm placement constraint (`node.hostname==x`, `node.labels.zone!=b`, …), matched
    as swarmkit does: keys and values without regard to case (label names with it), a label
    or value the node lacks compared as "", a key swarmkit does not know matching no node."""
    operator = "==" if "==" in constraint else "!="
    key, _, wanted = (part.strip() for part in constraint.partition(operator))
    lowered = key.lower()
    fixed = {"node.id": node.id, "node.hostname": node.name, "node.role": node.role,
             "node.platform.os": node.os, "node.platform.arch": node.arch}
    if lowered in fixed:
        actual = fixed[lowered]
    elif lowered.startswith(NODE_LABELS) and len(key) > len(NODE_LABELS):
        actual = node.labels.get(key[len(NODE_LABELS):], "")
    elif lowered.startswith(ENGINE_LABELS) and len(key) > len(ENGINE_LABELS):
        actual = node.engine_labels.get(key[len(ENGINE_LABELS):], "")
    else:
        return False
    equal = actual.casefold() == wanted.casefold()
    return equal if operator == "==" else not equal


def deviation(counts: Iterable[int]) -> float:
    values = list(counts)
    return statistics.pstdev(values) if len(values) > 1 else 0.0


def plan_service(name: str, replicas: int, per_task: tuple[int, int],
                 placement: Placement | Iterable[str], running: Mapping[str, int],
                 nodes: Iterable[NodeCapacity], reserved: Mapping[str, tuple[int, int]],
                 threshold: float) -> ServicePlan | None:
    """The redistribution of one service, or None when there is nothing worth moving: the
    current spread is within `threshold` (of standard deviation) of the best the placement
    rules allow, or that best is where the tasks already are.

    `per_task` is the service's (NanoCPUs, memory) reservation; `reserved` what other
    services' running tasks reserve on each node; `running` this service's tasks per node.
    """
    rules = placement if isinstance(placement, Placement) else Placement(tuple(placement))
    eligible = [n for n in nodes if n.eligible and all(matches(c, n) for c in rules.constraints)]
    if not eligible:
        return None
    before = {n.name: running.get(n.id, 0) for n in eligible}
    best = _best(replicas, per_task, eligible, reserved, rules)
    spread = deviation(before.values())
    if spread - deviation(best.values()) <= threshold or best == before:
        return None
    return ServicePlan(name, before, best, spread)


def _best(replicas: int, per_task: tuple[int, int], nodes: list[NodeCapacity],
          reserved: Mapping[str, tuple[int, int]], rules: Placement) -> dict[str, int]:
    """The placement of `replicas` the swarm's rules allow that is spread best: evenly over
    each spread label's values in turn, then by free capacity, within each node's room."""
    free = {n.id: (max(0, n.nano_cpus - reserved.get(n.id, (0, 0))[0]),
                   max(0, n.memory - reserved.get(n.id, (0, 0))[1])) for n in nodes}
    room = {n.id: _room(free[n.id], per_task) for n in nodes}
    if rules.max_per_node:
        room = {node: min(limit, rules.max_per_node) for node, limit in room.items()}
    # Free CPU share, never 0: a task that reserves nothing fits on a fully reserved node too.
    weight = {n.id: max(free[n.id][0] / n.nano_cpus if n.nano_cpus else 1.0, MIN_WEIGHT)
              for n in nodes}
    counts = _spread(replicas, nodes, list(rules.spread), room, weight)
    return {n.name: counts.get(n.id, 0) for n in nodes}


def _spread(replicas: int, nodes: list[NodeCapacity], labels: list[str],
            room: Mapping[str, float], weight: Mapping[str, float]) -> dict[str, int]:
    """Tasks per node ID: as the scheduler's spread preferences do, an equal share for each
    value of the first label (nodes without it sharing the value ""), one task at a time to
    the group with the fewest that has room; then the same within each group."""
    if not labels:
        return _distribute(replicas, nodes, room, weight)
    groups: dict[str, list[NodeCapacity]] = {}
    for node in nodes:
        groups.setdefault(_label_value(labels[0], node), []).append(node)
    capacity = {value: sum(room[n.id] for n in members) for value, members in groups.items()}
    shares = dict.fromkeys(groups, 0)
    for _ in range(replicas):
        open_groups = [v for v in groups if shares[v] < capacity[v]]
        if not open_groups:
            break
        shares[min(open_groups, key=lambda v: (shares[v], v))] += 1
    counts: dict[str, int] = {}
    for value, members in groups.items():
        counts.update(_spread(shares[value], members, labels[1:], room, weight))
    return counts


def _label_value(descriptor: str, node: NodeCapacity) -> str:
    lowered = descriptor.lower()
    if lowered.startswith(NODE_LABELS):
        return node.labels.get(descriptor[len(NODE_LABELS):], "")
    if lowered.startswith(ENGINE_LABELS):
        return node.engine_labels.get(descriptor[len(ENGINE_LABELS):], "")
    return ""


def _distribute(replicas: int, nodes: list[NodeCapacity], room: Mapping[str, float],
                weight: Mapping[str, float]) -> dict[str, int]:
    counts = {n.id: 0 for n in nodes}
    for _ in range(replicas):
        open_nodes = [n for n in nodes if counts[n.id] < room[n.id]]
        if not open_nodes:
            break
        best = min(open_nodes, key=lambda n: ((counts[n.id] + 1) / weight[n.id], n.name))
        counts[best.id] += 1
    return counts


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
        plan = plan_service(str(spec["Name"]), int(replicated.get("Replicas") or 0),
                            _reservation(template), Placement.from_template(template), own,
                            capacities, others, threshold)
        if plan is not None:
            found.append(plan)
    return found


def placement(service_id: str, nodes: Sequence[Mapping[str, Any]],
              tasks: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Where a service's tasks run now: running tasks per node name."""
    names = {str(n["ID"]): NodeCapacity.from_inspect(n).name for n in nodes}
    counts: dict[str, int] = {}
    for task in tasks:
        if task.get("ServiceID") == service_id and \
                (task.get("Status") or {}).get("State") == "running":
            name = names.get(str(task.get("NodeID")), str(task.get("NodeID")))
            counts[name] = counts.get(name, 0) + 1
    return counts


def result_reason(plan: ServicePlan, result: Mapping[str, int]) -> str:
    """What a rebalance did, told by where the tasks ended up (and what was planned)."""
    ended = {node: result.get(node, 0) for node in plan.before} | dict(result)
    if ended == dict(plan.before):
        return (f"the swarm placed the tasks as before ({dict(plan.before)}, planned "
                f"{dict(plan.after)}); this plan is not tried again until the placement changes")
    told = f"rebalanced: {dict(plan.before)} -> {ended}"
    return told if ended == dict(plan.after) else f"{told} (planned {dict(plan.after)})"
