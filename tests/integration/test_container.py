"""The updater as users run it: its own image (the project's Dockerfile on a local Debian base)
as a sidecar with the Docker socket mounted, updating a neighbour, healthy by its HEALTHCHECK,
and replacing itself when its own image gets a new digest."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import httpx
import pytest
from docker.models.containers import Container

from harness import images, updater_image
from harness.dockerd import Dockerd
from harness.procs import free_port
from harness.registry import Registry
from tests.integration.helpers import ENABLED, start, wait_until

_subnets = itertools.count(1)  # 172.30.X.0/24: a user network's, for a static address

pytestmark = [pytest.mark.engine, pytest.mark.slow]


@pytest.fixture(scope="module")
def updater_ref(engine: Dockerd, registry: Registry, build_context: Path) -> str:
    """The updater image, built and pushed as `<registry>/updater:latest`."""
    reference = f"{registry.host}/updater/self:latest"
    updater_image.build(engine.client, reference, build_context, version="1.0")
    images.push(engine.client, reference)
    return reference


@pytest.fixture
def sidecars(engine: Dockerd) -> Iterator[list[str]]:
    """Names of updater containers a test starts; they and their volumes are removed after."""
    names: list[str] = []
    yield names
    for container in engine.client.containers.list(all=True):
        if any(str(container.name).startswith(name) for name in names):
            container.remove(force=True, v=True)


def run_sidecar(engine: Dockerd, image: str, name: str, sidecars: list[str],
                labels: dict[str, str] | None = None,
                environment: dict[str, str] | None = None) -> Container:
    """`docker run -d` of the updater image as the README shows it, on the host network so it
    reaches the loopback test registry."""
    sidecars.append(name)
    container: Container = engine.client.containers.run(
        image, detach=True, name=name, network_mode="host", labels=labels or {},
        volumes={str(engine.socket): {"bind": "/var/run/docker.sock", "mode": "rw"}},
        environment={"UPDATER_INTERVAL": "2s", "UPDATER_LOG_LEVEL": "info",
                     **(environment or {})},
        restart_policy={"Name": "always"}, stop_signal="SIGTERM")
    return container


def health(engine: Dockerd, name: str) -> str:
    try:
        attrs = engine.client.api.inspect_container(name)
    except docker.errors.NotFound:
        return "gone"
    return str(((attrs["State"].get("Health") or {}).get("Status")) or "none")


def logs(engine: Dockerd, name: str) -> str:
    try:
        return engine.client.containers.get(name).logs().decode(errors="replace")[-4000:]
    except docker.errors.NotFound:
        return "(gone)"
    except docker.errors.APIError as exc:  # 409 while the engine removes it: ask again later
        return f"(no logs now: {exc.explanation})"


def test_sidecar_updates_a_neighbour_and_is_healthy(
        engine: Dockerd, registry: Registry, updater_ref: str, unique: str,
        containers: list[str], sidecars: list[str]) -> None:
    """`docker run` of the image with the socket mounted: after a push, the labelled neighbour
    runs the new image; the HEALTHCHECK reports healthy; an unlabelled one is left alone."""
    image = f"{registry.host}/app/{unique}:latest"
    images.release(engine.client, image, "1")
    start(engine, image, unique, ENABLED, containers)
    start(engine, image, unique + "-other", {}, containers)
    old = engine.client.containers.get(unique).attrs["Image"]
    new_digest = images.release(engine.client, image, "2", keep_local=False)

    run_sidecar(engine, updater_ref, f"{unique}-updater", sidecars)

    def neighbour_updated() -> bool:
        try:
            found = engine.client.containers.get(unique)
        except docker.errors.NotFound:
            return False
        return bool(found.attrs["Image"] != old and found.attrs["State"]["Running"])

    wait_until(neighbour_updated, 60,
               lambda: f"neighbour updated; updater logs:\n{logs(engine, unique + '-updater')}")
    running = engine.client.containers.get(unique)
    assert running.attrs["Image"] == engine.client.images.get(
        f"{registry.host}/app/{unique}@{new_digest}").id
    assert engine.client.containers.get(unique + "-other").attrs["Image"] == old
    wait_until(lambda: health(engine, f"{unique}-updater") == "healthy", 60,
               lambda: f"updater healthy; logs:\n{logs(engine, unique + '-updater')}")
    assert "Traceback" not in logs(engine, f"{unique}-updater")


def _comparable(attrs: dict[str, Any]) -> dict[str, Any]:
    """The configuration a user gave the updater container (what must survive a self-update)."""
    host = attrs["HostConfig"]
    config = attrs["Config"]
    mounts = sorted((m["Type"], m.get("Name") or m["Source"], m["Destination"])
                    for m in attrs["Mounts"])
    return {"env": sorted(config["Env"]), "cmd": config["Cmd"],
            "labels": {k: v for k, v in config["Labels"].items()
                       if not k.startswith(("org.opencontainers", "harness."))},
            "restart": host["RestartPolicy"], "network": host["NetworkMode"],
            # The image's anonymous state volume is handed on by name (in Binds after the first
            # update); `mounts` shows it is the same volume.
            "binds": [b for b in host["Binds"] or [] if b.startswith("/")], "mounts": mounts,
            "name": attrs["Name"]}


def healthy_self_updater(engine: Dockerd, registry: Registry, updater_ref: str, unique: str,
                         name: str, sidecars: list[str],
                         environment: dict[str, str] | None = None) -> tuple[str, Container]:
    """A labelled updater on its own tag (`<registry>/updater/<unique>:latest`), healthy."""
    reference = f"{registry.host}/updater/{unique}:latest"
    engine.client.images.get(updater_ref).tag(reference)
    images.push(engine.client, reference)
    first = run_sidecar(engine, reference, name, sidecars, labels=ENABLED,
                        environment=environment)
    wait_until(lambda: health(engine, name) == "healthy", 60,
               lambda: f"updater healthy; logs:\n{logs(engine, name)}")
    return reference, first


def test_self_update_leaves_exactly_one_updater_on_the_new_image(
        engine: Dockerd, registry: Registry, build_context: Path, updater_ref: str,
        unique: str, sidecars: list[str]) -> None:
    """A new digest of the updater's own image: afterwards exactly one updater container runs,
    under its name, on the new image, with the same configuration (and the same state volume,
    so its history continues)."""
    name = f"{unique}-self"
    reference, first = healthy_self_updater(engine, registry, updater_ref, unique, name, sidecars)
    before = _comparable(engine.client.api.inspect_container(str(first.id)))

    new_image = updater_image.build(engine.client, reference, build_context, version="1.1")
    new_digest = images.push(engine.client, reference)

    wait_until(lambda: _replaced(engine, name, str(first.id), new_image), 90,
               lambda: f"one updater on the new image; old logs:\n"
                       f"{logs(engine, str(first.id))}\nnew logs:\n{logs(engine, name)}")
    wait_until(lambda: health(engine, name) == "healthy", 60,
               lambda: f"new updater healthy; logs:\n{logs(engine, name)}")
    time.sleep(6)  # several passes of the successor: no copies appear
    found = [c for c in engine.client.containers.list(all=True) if str(c.name).startswith(name)]
    assert [c.name for c in found] == [name]
    successor = engine.client.api.inspect_container(name)
    assert successor["Image"] == new_image
    assert _comparable(successor) == before
    # All of its log: the line is among the first, and passes every 2 s add to the end.
    text = engine.client.containers.get(name).logs().decode(errors="replace")
    assert "took over from the previous updater container" in text, text[-4000:]
    assert "Traceback" not in text
    assert new_digest  # the digest the successor's image was pushed as


def test_self_update_of_an_updater_serving_its_api_on_a_host_port(
        engine: Dockerd, registry: Registry, build_context: Path, updater_ref: str,
        unique: str, sidecars: list[str]) -> None:
    """The sidecar as stack.yml runs it: host network, HTTP API on a port. The successor binds
    the port only once it has taken over (the old updater is stopped by then): one updater is
    left, on the new image, answering on the port (before, the successor could not bind it and
    the self-update was rolled back at every pass)."""
    name = f"{unique}-api"
    port, token = free_port(), "self-update-token-1"
    reference, first = healthy_self_updater(
        engine, registry, updater_ref, unique, name, sidecars,
        {"UPDATER_HTTP_API_LISTEN": f"127.0.0.1:{port}", "UPDATER_HTTP_API_TOKEN": token})

    assert _api_status(port, token) is not None
    new_image = updater_image.build(engine.client, reference, build_context, version="1.2")
    images.push(engine.client, reference)

    wait_until(lambda: _replaced(engine, name, str(first.id), new_image), 90,
               lambda: f"one updater on the new image; old logs:\n"
                       f"{logs(engine, str(first.id))}\nnew logs:\n{logs(engine, name)}")
    wait_until(lambda: _api_status(port, token) is not None, 60,
               lambda: f"the successor answers on :{port}; logs:\n{logs(engine, name)}")
    text = engine.client.containers.get(name).logs().decode(errors="replace")
    assert "took over from the previous updater container" in text, text[-4000:]
    assert f"HTTP API listening on 127.0.0.1:{port}" in text
    assert "Traceback" not in text


def _api_status(port: int, token: str) -> dict[str, Any] | None:
    try:
        answer = httpx.get(f"http://127.0.0.1:{port}/v1/status", timeout=5,
                           headers={"Authorization": f"Bearer {token}"})
    except httpx.HTTPError:
        return None
    return dict(answer.json()) if answer.status_code == 200 else None


def _updaters(engine: Dockerd, name: str) -> list[Container]:
    try:  # the list inspects each container: one may go in between
        return [c for c in engine.client.containers.list(all=True)
                if str(c.name).startswith(name)]
    except docker.errors.NotFound:
        return []


def _replaced(engine: Dockerd, name: str, first: str, new_image: str) -> bool:
    """Exactly one updater container is left, not `first`, running `new_image` as `name`."""
    found = _updaters(engine, name)
    return (len(found) == 1 and found[0].id != first and found[0].name == name
            and found[0].attrs["State"]["Running"] and found[0].attrs["Image"] == new_image)


@pytest.mark.parametrize("static_ip", [False, True], ids=["bridge", "static-ip"])
def test_self_update_of_an_updater_publishing_its_api_port(
        engine: Dockerd, root: Path, build_context: Path, updater_ref: str, unique: str,
        sidecars: list[str], static_ip: bool) -> None:
    """With `-p 127.0.0.1:PORT:8080`, on the default bridge or on a user network with a static
    address (`--ip`): the engine cannot start a successor while the old updater holds the port
    (or the address), so a swap helper stops the old one and starts the successor; then one
    updater is left, on the new image, answering on the same port (at the same address). A
    successor that exits at once is removed and the old updater runs and answers again. (The
    registry listens on the engine's bridge, which the engine and the containers both reach.)"""
    bridged = Registry(root / f"registry-bridge-{unique}", address=engine.gateway()).start()
    network, address = f"{unique}-static", f"172.30.{next(_subnets)}.10"
    placement: dict[str, Any] = {}
    if static_ip:
        ipam = docker.types.IPAMConfig(pool_configs=[
            docker.types.IPAMPool(subnet=address.rsplit(".", 1)[0] + ".0/24")])
        engine.client.api.create_network(network, driver="bridge", ipam=ipam)
        placement = {"network": network, "networking_config": {
            network: engine.client.api.create_endpoint_config(ipv4_address=address)}}
    try:
        reference = f"{bridged.host}/updater/{unique}:latest"
        engine.client.images.get(updater_ref).tag(reference)
        images.push(engine.client, reference)
        name, port, token = f"{unique}-published", free_port(), "published-token-1"
        sidecars.append(name)
        first = engine.client.containers.run(
            reference, detach=True, name=name, labels=ENABLED, **placement,
            ports={"8080/tcp": ("127.0.0.1", port)},
            volumes={str(engine.socket): {"bind": "/var/run/docker.sock", "mode": "rw"}},
            environment={"UPDATER_INTERVAL": "2s", "UPDATER_HTTP_API_LISTEN": "0.0.0.0:8080",
                         "UPDATER_HTTP_API_TOKEN": token,
                         "UPDATER_REGISTRIES": json.dumps({bridged.host: {"insecure": True}})},
            restart_policy={"Name": "always"}, stop_signal="SIGTERM")
        wait_until(lambda: health(engine, name) == "healthy", 60,
                   lambda: f"updater healthy; logs:\n{logs(engine, name)}")
        assert _api_status(port, token) is not None

        new_image = updater_image.build(engine.client, reference, build_context, version="1.4")
        images.push(engine.client, reference)

        wait_until(lambda: _replaced(engine, name, str(first.id), new_image), 120,
                   lambda: f"one updater on the new image; old logs:\n"
                           f"{logs(engine, str(first.id))}\nnew logs:\n{logs(engine, name)}")
        wait_until(lambda: _api_status(port, token) is not None, 60,
                   lambda: f"the successor answers on :{port}; logs:\n{logs(engine, name)}")
        successor = engine.client.containers.get(name)
        text = successor.logs().decode(errors="replace")
        assert "took over from the previous updater container" in text, text[-4000:]
        assert "Traceback" not in text
        if static_ip:
            assert successor.attrs["NetworkSettings"]["Networks"][network]["IPAddress"] == \
                address

        # A release whose `run` exits at once (its swap helper works: same entrypoint).
        broken, _ = engine.client.images.build(
            fileobj=io.BytesIO(f'FROM {new_image}\nCMD ["no-such-command"]\n'.encode()),
            tag=reference, rm=True, labels={"harness.nonce": unique})
        images.push(engine.client, reference)
        assert broken.id != new_image
        def put_back() -> bool:
            try:  # all of its log: passes every 2 s push the line out of the tail
                text = engine.client.containers.get(name).logs().decode(errors="replace")
            except docker.errors.APIError:  # gone, or being removed (the failed successor)
                return False
            return "undid an interrupted self-update" in text

        def told() -> str:
            text = engine.client.containers.get(name).logs().decode(errors="replace")
            return "\n".join(line for line in text.splitlines() if " pass: " not in line
                             and "next pass" not in line and "held-back" not in line)[-6000:]

        wait_until(put_back, 120, lambda: f"the old updater back; logs:\n{told()}")
        wait_until(lambda: _api_status(port, token) is not None, 60,
                   lambda: f"the old updater answers again; logs:\n{logs(engine, name)}")
        wait_until(lambda: len(_updaters(engine, name)) == 1, 30, lambda: "helper gone")
        [left] = _updaters(engine, name)
        assert (left.id, left.attrs["State"]["Running"]) == (successor.id, True)
    finally:
        bridged.stop()
        if static_ip:
            with contextlib.suppress(docker.errors.NotFound):
                engine.client.containers.get(name).remove(force=True)
            engine.client.api.remove_network(network)


def test_a_successor_that_does_not_start_leaves_the_old_updater_in_place(
        engine: Dockerd, registry: Registry, updater_ref: str, unique: str,
        sidecars: list[str]) -> None:
    """The updater's tag now points at an image that exits at once: the successor is removed
    and the running updater keeps its name, its container and its work."""
    name = f"{unique}-keep"
    reference, first = healthy_self_updater(engine, registry, updater_ref, unique, name, sidecars)

    images.release(engine.client, reference, "broken", cmd='["sh", "-c", "exit 3"]')

    wait_until(lambda: "old container restored" in logs(engine, name), 60,
               lambda: f"rollback of the self-update; logs:\n{logs(engine, name)}")
    found = [c for c in engine.client.containers.list(all=True) if str(c.name).startswith(name)]
    assert [(c.name, c.id, c.status) for c in found] == [(name, first.id, "running")]
    assert health(engine, name) == "healthy"
