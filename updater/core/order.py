"""Dependencies between containers and the order they imply. Pure.

A container depends on another through `updater.depends-on` (or Watchtower's label), a legacy
link, `network_mode: container:X` (or X's PID or IPC namespace), or Compose's
`com.docker.compose.depends_on` label. What depends on X is stopped before X and started
after it; updates run dependencies first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from updater.core.policy import depends_on

COMPOSE_PROJECT = "com.docker.compose.project"
COMPOSE_SERVICE = "com.docker.compose.service"
COMPOSE_DEPENDS_ON = "com.docker.compose.depends_on"
# HostConfig keys besides NetworkMode that can name another container's namespace.
NAMESPACE_MODES = ("PidMode", "IpcMode")


@dataclass(frozen=True, slots=True)
class Node:
    """One container as the dependency graph sees it."""

    name: str
    id: str
    labels: Mapping[str, str] = field(default_factory=dict)
    links: tuple[str, ...] = ()
    network_mode: str = ""
    namespace_modes: tuple[str, ...] = ()

    @classmethod
    def from_inspect(cls, inspect: Mapping[str, Any]) -> Node:
        host = inspect.get("HostConfig") or {}
        return cls(name=str(inspect["Name"]).lstrip("/"), id=str(inspect["Id"]),
                   labels=dict((inspect.get("Config") or {}).get("Labels") or {}),
                   links=tuple(str(link) for link in host.get("Links") or ()),
                   network_mode=str(host.get("NetworkMode") or ""),
                   namespace_modes=tuple(str(host.get(key) or "") for key in NAMESPACE_MODES))

    @property
    def shares_network_of(self) -> str | None:
        mode = self.network_mode
        return mode.removeprefix("container:") if mode.startswith("container:") else None

    @property
    def shares_namespaces_of(self) -> set[str]:
        """Containers whose network, PID or IPC namespace this one joined."""
        modes = (self.network_mode, *self.namespace_modes)
        return {mode.removeprefix("container:") for mode in modes if mode.startswith("container:")}


def graph(nodes: Iterable[Node]) -> dict[str, set[str]]:
    """name -> the names it depends on (only names among `nodes`)."""
    nodes = list(nodes)
    by_id = {node.id: node.name for node in nodes}
    names = {node.name for node in nodes}
    services = {(n.labels.get(COMPOSE_PROJECT), n.labels.get(COMPOSE_SERVICE)): n.name
                for n in nodes if n.labels.get(COMPOSE_SERVICE)}
    edges: dict[str, set[str]] = {}
    for node in nodes:
        wanted = set(depends_on(node.labels))
        wanted |= {link.split(":")[0].lstrip("/") for link in node.links}
        wanted |= {by_id.get(target, target) for target in node.shares_namespaces_of}
        project = node.labels.get(COMPOSE_PROJECT)
        for entry in (node.labels.get(COMPOSE_DEPENDS_ON) or "").split(","):
            service = entry.split(":")[0].strip()
            if service and (project, service) in services:
                wanted.add(services[(project, service)])
        edges[node.name] = {name for name in wanted if name in names and name != node.name}
    return edges


def update_order(candidates: Iterable[str],
                 edges: Mapping[str, set[str]]) -> tuple[list[str], list[str]]:
    """Candidates with dependencies first; and those caught in (or behind) a cycle."""
    pending = list(dict.fromkeys(candidates))
    order: list[str] = []
    state: dict[str, str] = {}
    cyclic: set[str] = set()

    def visit(name: str, path: list[str]) -> bool:
        if state.get(name) == "done":
            return name not in cyclic
        if state.get(name) == "visiting":
            cyclic.update(path[path.index(name):])
            return False
        state[name] = "visiting"
        ok = all([visit(dep, [*path, dep]) for dep in sorted(edges.get(name, ()))])
        state[name] = "done"
        if not ok:
            cyclic.add(name)
        elif name in pending:
            order.append(name)
        return ok

    for name in pending:
        visit(name, [name])
    return order, [name for name in pending if name in cyclic]


def dependants(name: str, edges: Mapping[str, set[str]]) -> list[str]:
    """Everything that depends on `name`, directly or not, in the order to stop them
    (the most dependent first); start them in the reverse order."""
    reverse: dict[str, set[str]] = {}
    for node, deps in edges.items():
        for dep in deps:
            reverse.setdefault(dep, set()).add(node)
    found: list[str] = []
    seen = {name}

    def walk(current: str) -> None:
        for child in sorted(reverse.get(current, ())):
            if child not in seen:
                seen.add(child)
                walk(child)
                found.append(child)

    walk(name)
    return found
