# mypy: disable-error-code="no-untyped-call"
"""Digest sharing on a real 3-node swarm, deployed from the repository's stack.yml with
stack.fleet.yml: 3 labelled containers per node on 5 shared references; the registry's access
log (with each request's address) shows only the leader's updater asking it; a push reaches
every node; with the leader's updater gone the others ask the registry themselves and keep
updating, and go back to the leader once it answers again."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import images, updater_image
from harness.dockerd import EngineSetup
from harness.swarm import Swarm
from tests.conftest import USERS
from tests.integration.helpers import ENABLED, wait_until
from tests.integration.test_stack import (
    AUTH,
    PASSWORD,
    SERVICE,
    deploy,
    running_tasks,
    task_logs,
)

pytestmark = [pytest.mark.engine, pytest.mark.slow]
INTERVAL = 5.0
API_TOKEN = "api-token-for-the-fleet-test"
HOOK_TOKEN = "webhook-token-for-the-fleet-test"
_HEAD = re.compile(r'^(?P<address>\S+) .*"HEAD /v2/(?P<path>\S+)/manifests/(?P<tag>[^ ?]+)'
                   r'[^"]*" \d{3} .*"updater/')


@pytest.fixture(scope="module")
def cluster(root: Path) -> Iterator[Swarm]:
    swarm = Swarm(root / "fleet-swarm", nodes=3, managers=1,
                  engine=EngineSetup.from_env(), registry_users=USERS).start()
    try:
        yield swarm
    finally:
        swarm.stop()


def heads(cluster: Swarm, since: int) -> Counter[tuple[str, str]]:
    """The updaters' manifest HEADs since `since`: (address, repository path) -> count."""
    with cluster.registry_log.open("rb") as handle:
        handle.seek(since)
        lines = handle.read().decode("utf-8", "replace").splitlines()
    return Counter((m["address"], m["path"]) for line in lines if (m := _HEAD.search(line)))


def constrain(cluster: Swarm, change: str) -> None:
    """`docker service update --constraint-add/-rm node.role!=manager` on the updater."""
    docker_cli = shutil.which("docker")
    assert docker_cli
    result = subprocess.run(
        [docker_cli, "service", "update", "--detach", change, "node.role!=manager", SERVICE],
        env={"PATH": os.environ["PATH"], "DOCKER_HOST": cluster.nodes[0].host},
        capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr


def ask(cluster: Swarm, address: str, path: str, body: dict[str, Any] | None = None,
        token: str = API_TOKEN) -> dict[str, Any]:
    """A request to the updater at `address`, sent from inside the swarm's network (a POST
    when there is a `body`); its JSON answer, or {} when it does not answer 2xx."""
    script = ("import json, sys, urllib.request\n"
              f"request = urllib.request.Request('http://{address}:8080{path}', "
              f"headers={{'Authorization': 'Bearer {token}', "
              "'Content-Type': 'application/json'}, "
              f"data={json.dumps(body).encode() if body is not None else None!r})\n"
              "try:\n"
              "    print(urllib.request.urlopen(request, timeout=10).read().decode())\n"
              "except Exception:\n"
              "    print('{}')\n")
    result = subprocess.run(cluster.in_hub([sys.executable, "-c", script]), capture_output=True,
                            text=True, timeout=30, check=False)
    return json.loads(result.stdout or "{}")  # type: ignore[no-any-return]


def fleet_view(cluster: Swarm) -> dict[str, Any]:
    """`GET /v1/fleet` on the leader's updater; {} when it does not answer 200."""
    return ask(cluster, cluster.nodes[0].address, "/v1/fleet")


def dashboard_rows(cluster: Swarm, unique: str) -> dict[str, tuple[str, bool]]:
    """The leader's dashboard, logged in as a browser would be, from inside the swarm's
    network: its rows of this test's containers, name -> (node, stale)."""
    script = ("import http.cookiejar, re, urllib.parse, urllib.request\n"
              "opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor("
              "http.cookiejar.CookieJar()))\n"
              f"base = 'http://{cluster.nodes[0].address}:8080'\n"
              "form = urllib.parse.urlencode({'token': "
              f"{API_TOKEN!r}}}).encode()\n"
              "try:\n"
              "    opener.open(base + '/login', data=form, timeout=10)\n"
              "    print(opener.open(base + '/', timeout=10).read().decode())\n"
              "except Exception:\n"
              "    print('')\n")
    result = subprocess.run(cluster.in_hub([sys.executable, "-c", script]), capture_output=True,
                            text=True, timeout=30, check=False)
    rows = re.findall(r'<tr data-key="([^"|]*)\|container\|([^"]*)"[^>]*?( class="stale")?>',
                      result.stdout)
    return {name: (node, bool(stale)) for node, name, stale in rows if name.startswith(unique)}


def listed(view: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """The view's items: name -> (node, stale)."""
    return {item["name"]: (item["node"], item["stale"]) for item in view.get("items", [])}


def updater_nodes(cluster: Swarm) -> list[str]:
    """The nodes whose updater task container runs."""
    return [node.name for node in cluster.nodes if node.client().containers.list(
        filters={"label": f"com.docker.swarm.service.name={SERVICE}"})]


def test_only_the_leader_asks_the_registry_and_every_node_updates(
        cluster: Swarm, build_context: Path, unique: str, tmp_path: Path) -> None:
    manager = cluster.nodes[0].client()
    updater_ref = f"{cluster.registry_host}/ops/updater:latest"
    updater_image.build(manager, updater_ref, build_context)
    images.push(manager, updater_ref, AUTH)
    for name, data in (("updater_notify_urls", b"\n"), ("updater_registry_password",
                                                        PASSWORD.encode()),
                       ("updater_api_token", API_TOKEN.encode()),
                       ("updater_fleet_token", b"fleet-token-for-the-fleet-test")):
        manager.secrets.create(name=name, data=data)
    refs = [f"{cluster.registry_host}/fleet/{unique}-{i}:latest" for i in range(5)]
    for ref in refs:
        images.release(manager, ref, "1", AUTH)
    placed: dict[str, list[str]] = {}  # container name -> [node, reference]
    for index, node in enumerate(cluster.nodes):
        client = node.client()
        for slot in range(3):
            ref = refs[(2 * index + slot) % 5]  # node1: 0 1 2, node2: 2 3 4, node3: 4 0 1
            client.images.pull(ref, auth_config=AUTH)
            name = f"{unique}-{node.name}-{slot}"
            client.containers.run(ref, name=name, labels=ENABLED, detach=True)
            placed[name] = [node.name, ref]
    assert len({ref for _, ref in placed.values()}) == 5

    deploy(cluster, updater_ref, tmp_path, extra=("stack.fleet.yml",),
           interval=f"{INTERVAL:g}s")
    leader, others = cluster.nodes[0], cluster.nodes[1:]

    def logs_say(text: str, nodes: list[str]) -> bool:
        logs = task_logs(cluster)
        return all(text in logs.get(node, "") for node in nodes)

    wait_until(lambda: logs_say(f"from the leader's updater at {leader.address}",
                                [n.name for n in others]), 180,
               lambda: f"nodes taking digests from the leader; logs: {task_logs(cluster)}")
    mark = cluster.registry_log.stat().st_size
    started = time.monotonic()
    time.sleep(6 * INTERVAL)
    window = time.monotonic() - started
    asked = heads(cluster, mark)
    apps = {(address, path): count for (address, path), count in asked.items()
            if "/fleet/" in f"/{path}"}
    assert apps and {address for address, _ in apps} == {leader.address}, asked
    per_reference = Counter({path: count for (_, path), count in apps.items()})
    assert len(per_reference) == 5, per_reference
    # At most one lookup per reference per interval for the whole fleet (9 containers on 3
    # nodes would be 9 a pass each without sharing).
    assert max(per_reference.values()) <= window / INTERVAL + 1, (window, per_reference)

    def running_images() -> dict[str, str]:
        found: dict[str, str] = {}
        for node in cluster.nodes:
            for container in node.client().containers.list(filters={"name": unique}):
                found[str(container.name)] = container.attrs["Image"]
        return found

    before = running_images()
    assert len(before) == 9
    for ref in refs:
        images.release(manager, ref, "2", AUTH)
    wait_until(lambda: all(image != before[name] for name, image in running_images().items())
               and len(running_images()) == 9, 120,
               lambda: f"all 9 containers updated; logs: {task_logs(cluster)}")
    # One view: the leader lists the 9 containers of the 3 nodes, each under its node.
    expected = {name: (node, False) for name, (node, _) in placed.items()}
    wait_until(lambda: {k: v for k, v in listed(fleet_view(cluster)).items()
                        if k.startswith(unique)} == expected, 60,
               lambda: f"the fleet's view: {fleet_view(cluster)}")

    # The leader's updater stops: the others ask the registry themselves, and keep updating.
    constrain(cluster, "--constraint-add")
    wait_until(lambda: updater_nodes(cluster) == [n.name for n in others], 120,
               lambda: f"the leader's updater gone: {updater_nodes(cluster)}")
    mark = cluster.registry_log.stat().st_size
    before = running_images()
    for ref in refs:
        images.release(manager, ref, "3", AUTH)
    on_others = [name for name, (node, _) in placed.items() if node != leader.name]
    # (A container being replaced is briefly under another name.)
    wait_until(lambda: all(running_images().get(name, before[name]) != before[name]
                           for name in on_others), 120,
               lambda: f"the other nodes' containers updated; logs: {task_logs(cluster)}")
    assert logs_say("no swarm manager's updater answered", [n.name for n in others])
    assert {address for address, _ in heads(cluster, mark)} <= {n.address for n in others}

    # The leader's updater answers again: they go back to it.
    constrain(cluster, "--constraint-rm")
    wait_until(lambda: len(updater_nodes(cluster)) == 3, 120,
               lambda: f"3 updaters again: {updater_nodes(cluster)}")
    time.sleep(3 * INTERVAL)  # the nodes' passes in flight finish
    mark = cluster.registry_log.stat().st_size
    time.sleep(3 * INTERVAL)
    addresses = {address for address, path in heads(cluster, mark) if "/fleet/" in f"/{path}"}
    assert addresses == {leader.address}, heads(cluster, mark)

    # A node whose updater stops answering (paused) shows stale after two intervals.
    wait_until(lambda: {k: v for k, v in listed(fleet_view(cluster)).items()
                        if k.startswith(unique)} == expected, 60,
               lambda: f"the fleet's view after the leader's return: {fleet_view(cluster)}")
    node3 = cluster.nodes[2].client().containers.list(
        filters={"label": f"com.docker.swarm.service.name={SERVICE}"})[0]
    node3.pause()
    try:
        wait_until(lambda: {v for k, v in listed(fleet_view(cluster)).items()
                            if k.startswith(f"{unique}-node3")} == {("node3", True)},
                   6 * INTERVAL, lambda: f"node3 stale: {fleet_view(cluster)}")
        assert {v for k, v in listed(fleet_view(cluster)).items()
                if k.startswith(f"{unique}-node2")} == {("node2", False)}
        # The leader's dashboard shows the same: its own containers, the others' from their
        # reports, node3's marked stale.
        shown = dashboard_rows(cluster, unique)
        assert len(shown) == 9 and {node for node, _ in shown.values()} == {
            "node1", "node2", "node3"}, shown
        assert {v for k, v in shown.items() if k.startswith(f"{unique}-node3")} == {
            ("node3", True)}, shown
    finally:
        node3.unpause()

    # Pushes reach every node within seconds, although each polls only hourly: the registry
    # notifies the leader, which passes the pushes on, or another node, which passes them to
    # the leader.
    deploy(cluster, updater_ref, tmp_path, extra=("stack.fleet.yml",), interval="1h",
           environment={"UPDATER_WEBHOOK_TOKEN": HOOK_TOKEN})

    def redeployed() -> bool:
        tasks = running_tasks(manager, SERVICE)
        hourly = ["UPDATER_INTERVAL=1h" in t["Spec"]["ContainerSpec"].get("Env", [])
                  for t in tasks]
        return len(tasks) == 3 and all(hourly) and all(
            ask(cluster, node.address, "/v1/health") for node in cluster.nodes)
    wait_until(redeployed, 180, lambda: f"hourly updaters; logs: {task_logs(cluster)}")
    before = running_images()
    for ref in refs:
        images.release(manager, ref, "4", AUTH)
    pushed = time.monotonic()
    for index, ref in enumerate(refs):
        told = leader if index < 3 else others[0]
        answer = ask(cluster, told.address, "/v1/hooks/registry", {"image": ref}, HOOK_TOKEN)
        assert answer.get("pushes"), answer
    wait_until(lambda: all(running_images().get(name, before[name]) != before[name]
                           for name in placed), 90,
               lambda: f"all 9 containers updated after the pushes; logs: {task_logs(cluster)}")
    assert time.monotonic() - pushed < 60
    assert logs_say("push passed on by the leader", [n.name for n in others])
    assert logs_say("push passed on to the leader's updater", [others[0].name])
    for name, text in task_logs(cluster).items():
        assert "Traceback" not in text, (name, text)
        assert "fleet-token-for-the-fleet-test" not in text, name
        assert HOOK_TOKEN not in text, name
