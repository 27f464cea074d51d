"""Where things are in a swarm: whether this engine's node is the leader, and where the running
tasks of a service are (with a shell command for each)."""

from __future__ import annotations

from dataclasses import dataclass

from updater.core.ports import SwarmEngine
from updater.errors import NotFoundInEngine, UpdaterError


def is_leader(engine: SwarmEngine) -> bool:
    """True when this engine's node is the swarm's leader (asked every pass)."""
    info = engine.info()
    swarm = info.get("Swarm") or {}
    if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
        return False
    node = engine.inspect_node(str(swarm.get("NodeID")))
    return bool((node.get("ManagerStatus") or {}).get("Leader"))



@dataclass(frozen=True, slots=True)
class TaskPlace:
    """Where one running task of a service is, and how to open a shell in it."""

    task: str
    node: str
    address: str
    container: str
    command: str
    availability: str = "active"  # the node's: active, pause or drain


def where(engine: SwarmEngine, service: str) -> list[TaskPlace]:
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
