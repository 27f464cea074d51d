"""`docker compose up -d --build` of the repository's own compose.yml, with Compose v2 (the
standalone docker-compose of Debian forky's package, named by UT_COMPOSE; scripts/test.sh sets
it) against the test engine: the updater it builds and runs updates a labelled neighbour and is
healthy, and `docker compose down` removes it and keeps its state volume."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker.errors
import pytest

from harness import images, updater_image
from harness.dockerd import Dockerd
from harness.registry import Registry
from tests.integration.helpers import ENABLED, start, wait_until

pytestmark = [pytest.mark.engine, pytest.mark.slow, pytest.mark.matrix]
COMPOSE_FILE = updater_image.REPOSITORY / "compose.yml"
# The test registry listens on loopback only: the updater shares the host's network to reach
# it, through an override file as a user would add one (compose.yml itself stays as shipped).
HOST_NETWORK = "services:\n  updater:\n    network_mode: host\n"
SERVICE = "updater"


@pytest.fixture(scope="session")
def compose_binary() -> str:
    """The docker-compose binary; missing, the test fails under CI and is skipped elsewhere."""
    path = os.environ.get("UT_COMPOSE", "")
    if path and os.access(path, os.X_OK):
        return path
    message = (f"Compose v2 not found (UT_COMPOSE={path!r}): set UT_COMPOSE to the docker-compose "
               "binary that scripts/fetch-docker-forky.sh unpacks, as scripts/test.sh does")
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


class Compose:
    """`docker-compose -f compose.yml -f <override> -p PROJECT ...` against the test engine,
    with the settings compose.yml reads from the environment."""

    def __init__(self, binary: str, engine: Dockerd, project: str, build_context: Path,
                 home: Path) -> None:
        self.project = project
        override = home / "host-network.yml"
        override.write_text(HOST_NETWORK)
        # The project directory is the build context: the project as cloned, plus wheels/ so
        # the build installs offline, on the local Debian base (nothing can be pulled here).
        self.argv = [binary, "-f", str(COMPOSE_FILE), "-f", str(override),
                     "--project-directory", str(build_context), "-p", project]
        self.env = {"PATH": os.environ["PATH"], "HOME": str(home),
                    "DOCKER_CONFIG": str(home / ".docker"), "DOCKER_HOST": engine.host,
                    "DOCKER_SOCKET": str(engine.socket),
                    "UPDATER_BASE": updater_image.base_image(engine.client),
                    "UPDATER_INTERVAL": "2s"}

    def __call__(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.argv, *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout, check=False)


@pytest.fixture
def compose(compose_binary: str, engine: Dockerd, build_context: Path, unique: str,
            tmp_path: Path) -> Iterator[Compose]:
    """A Compose project of its own; whatever the test leaves of it (containers, network,
    the state volume) is removed afterwards."""
    project = Compose(compose_binary, engine, f"ut-{unique}", build_context, tmp_path)
    try:
        yield project
    finally:
        project("down", "--volumes", "--timeout", "10")
        for volume in engine.client.volumes.list(
                filters={"label": f"com.docker.compose.project={project.project}"}):
            volume.remove(force=True)


def project_containers(engine: Dockerd, project: str) -> list[dict[str, object]]:
    return list(engine.client.api.containers(
        all=True, filters={"label": f"com.docker.compose.project={project}"}))


def logs(engine: Dockerd, container: str) -> str:
    try:
        return engine.client.containers.get(container).logs().decode(errors="replace")[-4000:]
    except docker.errors.NotFound:
        return "(gone)"


def test_compose_up_runs_an_updater_that_updates_a_neighbour(
        compose_binary: str, engine: Dockerd, registry: Registry, compose: Compose, unique: str,
        containers: list[str]) -> None:
    """compose.yml brought up with a short interval: the updater container, built from the
    project and run as compose.yml says, updates a labelled neighbour to the new release
    (same name, running), is healthy, and goes away with `down`."""
    up = compose("up", "-d", "--build", timeout=900)
    assert up.returncode == 0, up.stdout + up.stderr
    [entry] = project_containers(engine, compose.project)
    updater = str(entry["Id"])
    attrs = engine.client.api.inspect_container(updater)
    # compose.yml as shipped, with the settings it takes from the environment.
    assert attrs["Config"]["Labels"]["com.docker.compose.service"] == SERVICE
    assert attrs["Config"]["Image"] == "updater:latest"
    assert "UPDATER_INTERVAL=2s" in attrs["Config"]["Env"]
    assert attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    assert {(m["Type"], m.get("Name") or m["Source"], m["Destination"])
            for m in attrs["Mounts"]} == {
        ("bind", str(engine.socket), "/var/run/docker.sock"),
        ("volume", f"{compose.project}_updater-state", "/var/lib/updater")}
    built = engine.client.images.get("updater:latest").attrs["Config"]["Labels"]
    assert built["org.opencontainers.image.base.name"] == compose.env["UPDATER_BASE"]

    # A labelled neighbour on a registry image; then a new release of it.
    image = f"{registry.host}/app/{unique}:latest"
    images.release(engine.client, image, "1")
    neighbour = f"{unique}-app"
    start(engine, image, neighbour, ENABLED, containers)
    old_id = engine.client.containers.get(neighbour).id
    old_image = engine.client.containers.get(neighbour).attrs["Image"]
    new_digest = images.release(engine.client, image, "2", keep_local=False)

    def updated() -> bool:
        try:
            found = engine.client.api.inspect_container(neighbour)
        except docker.errors.NotFound:
            return False
        return bool(found["Image"] != old_image and found["State"]["Running"])

    wait_until(updated, 90, lambda: f"neighbour updated; updater logs:\n{logs(engine, updater)}")
    found = engine.client.api.inspect_container(neighbour)
    assert found["Name"] == f"/{neighbour}" and found["Id"] != old_id
    assert found["Image"] == engine.client.images.get(
        f"{registry.host}/app/{unique}@{new_digest}").id

    def health() -> str:
        state = engine.client.api.inspect_container(updater)["State"]
        return str((state.get("Health") or {}).get("Status"))

    wait_until(lambda: health() == "healthy", 90,
               lambda: f"updater healthy ({health()}); logs:\n{logs(engine, updater)}")
    # The report line comes once the new container has proven itself (it runs already).
    wait_until(lambda: f"{neighbour}: updated" in logs(engine, updater), 60,
               lambda: f"the update reported; logs:\n{logs(engine, updater)}")
    text = logs(engine, updater)
    assert "Traceback" not in text, text

    down = compose("down", timeout=180)
    assert down.returncode == 0, down.stdout + down.stderr
    assert project_containers(engine, compose.project) == []
    # `down` keeps the state volume (history, journal), as it does for a user; removed here.
    volume = engine.client.volumes.get(f"{compose.project}_updater-state")
    volume.remove()
    assert engine.client.api.inspect_container(neighbour)["State"]["Running"]


APP_PROJECT = """\
services:
  db:
    image: {db}
    labels: {{updater.enable: "true"}}
  web:
    image: {web}
    labels: {{updater.enable: "true"}}
    depends_on: [db]
"""


def test_compose_treats_an_updated_container_as_its_own(
        compose_binary: str, engine: Dockerd, registry: Registry, unique: str,
        tmp_path: Path) -> None:
    """A user's project (web depends on db) brought up by Compose; `updater update` replaces
    web: then `docker compose up -d` recreates nothing (the IDs stay), `ps` shows web on the new
    image, and `down` removes both."""
    from tests.integration.helpers import run_updater

    db, web = f"{registry.host}/compose/{unique}-db:1", f"{registry.host}/compose/{unique}-web:1"
    images.release(engine.client, db, "1")
    images.release(engine.client, web, "1")
    directory = tmp_path / "project"
    directory.mkdir()
    (directory / "compose.yml").write_text(APP_PROJECT.format(db=db, web=web))
    project = f"ut-{unique}-app"
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "DOCKER_HOST": engine.host,
           "DOCKER_CONFIG": str(tmp_path / ".docker")}

    def compose(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([compose_binary, "--project-directory", str(directory), "-p",
                               project, *args], env=env, capture_output=True, text=True,
                              timeout=180, check=False)

    def ids() -> dict[str, str]:
        found = engine.client.api.containers(
            all=True, filters={"label": f"com.docker.compose.project={project}"})
        return {str(c["Labels"]["com.docker.compose.service"]): str(c["Id"]) for c in found}

    try:
        up = compose("up", "-d")
        assert up.returncode == 0, up.stderr
        before = ids()
        images.release(engine.client, web, "2", keep_local=False)
        result = run_updater(["update", "--json"], engine, tmp_path,
                             {"state_dir": str(tmp_path / "state")})
        assert result.returncode == 0, result.stderr
        after_update = ids()
        assert after_update["db"] == before["db"] and after_update["web"] != before["web"]
        new_image = engine.client.images.get(web).id
        again = compose("up", "-d")
        assert again.returncode == 0, again.stderr
        assert ids() == after_update, again.stderr  # nothing recreated
        assert "Recreate" not in again.stderr, again.stderr
        ps = compose("ps", "--format", "{{.Service}} {{.State}}")
        assert sorted(ps.stdout.split("\n")[:2]) == ["db running", "web running"], ps.stdout
        assert engine.client.api.inspect_container(after_update["web"])["Image"] == new_image
        down = compose("down", "--timeout", "5")
        assert down.returncode == 0, down.stderr
        assert project_containers(engine, project) == []
    finally:
        compose("down", "--timeout", "5")
