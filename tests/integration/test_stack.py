# mypy: disable-error-code="no-untyped-call"
"""`docker stack deploy -c stack.yml` (the repository's own file) on a real 3-node swarm: one
updater task per node; a worker's task updates the labelled container on its node; the leader's
task, and only it, updates a labelled service."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from harness import images, updater_image
from harness.dockerd import EngineSetup
from harness.swarm import NODE_SOCKET, Swarm
from tests.conftest import USERS
from tests.integration.helpers import ENABLED, wait_until, write_docker_config

pytestmark = [pytest.mark.engine, pytest.mark.slow]
USER, PASSWORD = next(iter(USERS.items()))
AUTH = {"username": USER, "password": PASSWORD}
STACK = "updater"
SERVICE = f"{STACK}_updater"


@pytest.fixture(scope="module")
def cluster(root: Path) -> Iterator[Swarm]:
    swarm = Swarm(root / "stack-swarm", nodes=3, managers=1,
                  engine=EngineSetup.from_env(), registry_users=USERS).start()
    try:
        yield swarm
    finally:
        swarm.stop()


def deploy(cluster: Swarm, image: str, home: Path, secrets: bool = True,
           extra: tuple[str, ...] = (), interval: str = "2s",
           environment: dict[str, str] | None = None) -> None:
    """`docker stack deploy` exactly as the README says, with settings from the environment:
    stack.yml alone, or with stack.secrets.yml and a registry password from a secret (and the
    `extra` files of the repository, e.g. stack.fleet.yml)."""
    docker_cli = shutil.which("docker")
    assert docker_cli, "the docker command line client is needed (Debian's docker.io has it)"
    write_docker_config(home, cluster.registry_host, USER, PASSWORD)
    registries = {cluster.registry_host: {
        "insecure": True, "username": USER,
        "password_file": "/run/secrets/updater_registry_password"}}
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "DOCKER_CONFIG": str(home / ".docker"),
           "DOCKER_HOST": cluster.nodes[0].host, "UPDATER_IMAGE": image,
           "UPDATER_INTERVAL": interval, "DOCKER_SOCKET": NODE_SOCKET, **(environment or {})}
    files = ["-c", str(updater_image.REPOSITORY / "stack.yml")]
    if secrets:
        env["UPDATER_REGISTRIES"] = json.dumps(registries)
        files += ["-c", str(updater_image.REPOSITORY / "stack.secrets.yml")]
    for name in extra:
        files += ["-c", str(updater_image.REPOSITORY / name)]
    result = subprocess.run([docker_cli, "stack", "deploy", "--with-registry-auth", *files,
                             STACK], env=env, capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr


def running_tasks(client: docker.DockerClient, service: str) -> list[dict[str, Any]]:
    return [t for t in client.api.tasks(filters={"service": service, "desired-state": "running"})
            if t["Status"]["State"] == "running"]


def healthy_tasks(cluster: Swarm) -> list[str]:
    """The nodes whose updater task container reports healthy."""
    found = []
    for node in cluster.nodes:
        for container in node.client().containers.list(
                filters={"label": f"com.docker.swarm.service.name={SERVICE}"}):
            if (container.attrs["State"].get("Health") or {}).get("Status") == "healthy":
                found.append(node.name)
    return found


def task_logs(cluster: Swarm) -> dict[str, str]:
    """Each node's updater task log, by node name."""
    logs = {}
    for node in cluster.nodes:
        for container in node.client().containers.list(
                filters={"label": f"com.docker.swarm.service.name={SERVICE}"}):
            assert container.attrs["HostConfig"]["NetworkMode"] == "host"
            logs[node.name] = container.logs().decode(errors="replace")
    return logs


def test_stack_runs_one_task_per_node_and_each_does_its_part(
        cluster: Swarm, build_context: Path, unique: str, tmp_path: Path) -> None:
    manager = cluster.nodes[0].client()
    worker = cluster.nodes[2].client()
    updater_ref = f"{cluster.registry_host}/ops/updater:latest"
    updater_image.build(manager, updater_ref, build_context)
    images.push(manager, updater_ref, AUTH)
    # On a fresh swarm stack.yml alone deploys: no secret has to exist.
    deploy(cluster, updater_ref, tmp_path, secrets=False)
    wait_until(lambda: len(healthy_tasks(cluster)) == 3, 120,
               lambda: f"3 healthy updater tasks: {healthy_tasks(cluster)}")
    manager.secrets.create(name="updater_notify_urls", data=b"\n")
    manager.secrets.create(name="updater_registry_password", data=PASSWORD.encode())
    # Something for the tasks to update: a labelled container on a worker, a labelled service.
    app = f"{cluster.registry_host}/app/{unique}:latest"
    images.release(manager, app, "1", AUTH)
    worker.images.pull(app, auth_config=AUTH)
    worker.containers.run(app, name=f"{unique}-local", labels=ENABLED, detach=True)
    old_local = worker.containers.get(f"{unique}-local").attrs["Image"]
    svc = f"{cluster.registry_host}/svc/{unique}:latest"
    first = images.release(manager, svc, "1", AUTH)
    manager.login(username=USER, password=PASSWORD, registry=cluster.registry_host)
    manager.api.create_service(
        docker.types.TaskTemplate(docker.types.ContainerSpec(f"{svc}@{first}")),
        name=f"{unique}-svc", labels=ENABLED,
        mode=docker.types.ServiceMode("replicated", replicas=2))

    deploy(cluster, updater_ref, tmp_path)  # with the secrets now

    def redeployed() -> list[dict[str, Any]]:
        tasks = running_tasks(manager, SERVICE)
        secrets = [t["Spec"]["ContainerSpec"].get("Secrets") for t in tasks]
        return tasks if len(tasks) == 3 and all(secrets) else []

    tasks = wait_until(redeployed, 180,
                       lambda: f"3 running updater tasks; {manager.api.tasks()}")
    assert len({t["NodeID"] for t in tasks}) == 3
    spec = manager.api.inspect_service(SERVICE)["Spec"]
    assert spec["Mode"] == {"Global": {}}
    assert [manager.api.inspect_network(n["Target"])["Name"]
            for n in spec["TaskTemplate"]["Networks"]] == ["host"]
    assert not [n for n in manager.networks.list() if n.attrs["Driver"] == "overlay"
                and n.name != "ingress"], "the stack created an overlay network"

    new_local = images.release(manager, app, "2", AUTH)
    second = images.release(manager, svc, "2", AUTH)

    def local_updated() -> bool:
        found = worker.containers.list(filters={"name": f"^{unique}-local$"})
        return bool(found) and found[0].attrs["Image"] != old_local
    wait_until(local_updated, 90, lambda: f"worker container updated; logs: {task_logs(cluster)}")
    assert worker.containers.get(f"{unique}-local").attrs["Image"] == worker.images.get(
        f"{app.rsplit(':', 1)[0]}@{new_local}").id

    def service_updated() -> bool:
        image = manager.api.inspect_service(f"{unique}-svc")["Spec"]["TaskTemplate"][
            "ContainerSpec"]["Image"]
        return str(image).endswith(second)
    wait_until(service_updated, 90, lambda: f"service updated; logs: {task_logs(cluster)}")
    time.sleep(5)  # more passes on every node: nobody updates it again
    logs = task_logs(cluster)
    started = {node: text.count(f"{unique}-svc: rolling update to") for node, text in
               logs.items()}
    assert started == {"node1": 1, "node2": 0, "node3": 0}, logs
    assert f"{unique}-local: updated" in logs["node3"], logs["node3"]
    for node, text in logs.items():
        assert "Traceback" not in text, (node, text)
        assert PASSWORD not in text, node
    service = manager.api.inspect_service(f"{unique}-svc")
    assert service["PreviousSpec"]["TaskTemplate"]["ContainerSpec"]["Image"].endswith(first)
