"""Registry authentication against real registries and token servers, with configs written by
the real `docker login`: a token goes only to the registry it was obtained for, identity
tokens (OAuth2 refresh tokens) are used as Docker uses them, a realm keeps its own query, and
Docker config and `registries` keys in any spelling Docker accepts are used."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import images
from harness.dockerd import Dockerd
from harness.registry import Registry
from harness.tokenserver import TokenServer
from tests.conftest import USERS
from tests.integration.helpers import (
    ENABLED,
    check_json,
    run_updater,
    start,
    start_daemon,
)
from tests.integration.test_credentials import cred_helpers, helper

pytestmark = [pytest.mark.engine]
USER, PASSWORD = next(iter(USERS.items()))
AUTH = {"username": USER, "password": PASSWORD}


@pytest.fixture
def second_token_registry(root: Path, token_server: TokenServer,
                          unique: str) -> Iterator[Registry]:
    """Another registry that names the same token server (realm and service) as
    `token_registry`, as registries of one vendor or one SSO do."""
    server = Registry(root / f"registry-b-{unique}", token_server=token_server).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.slow
def test_a_token_obtained_for_one_registry_never_reaches_another(
        engine: Dockerd, token_registry: Registry, second_token_registry: Registry,
        token_server: TokenServer, unique: str, containers: list[str], tmp_path: Path) -> None:
    """Two registries naming one realm and service, credentials for the first only, the same
    repository on both: in `check` and across daemon passes the second never receives a
    token obtained with them and keeps saying it needs credentials. The witness is the second
    registry's log: it answers 200 only to a token that grants alice's access, which only a
    token obtained with her credentials does (anonymous tokens grant nothing)."""
    first, second = token_registry, second_token_registry
    for registry in (first, second):
        image = f"{registry.host}/shared/{unique}:latest"
        images.release(engine.client, image, "1", AUTH)
        engine.client.images.pull(image, auth_config=AUTH)
        start(engine, image, f"{unique}-{registry.port}", ENABLED, containers)
    settings = {"state_dir": str(tmp_path / "state"), "interval": "1s",
                "registries": {first.host: {"username": USER, "password": PASSWORD}}}
    mark = second.mark()

    rows = check_json(engine, tmp_path, settings)
    daemon = start_daemon(engine, tmp_path, settings)
    try:
        time.sleep(6)  # several passes, each asking both registries
    finally:
        daemon.terminate()
        output = daemon.communicate(timeout=60)[0]
    again = check_json(engine, tmp_path, settings)

    assert rows[f"{unique}-{first.port}"]["state"] == "up-to-date"
    for verdict in (rows, again):
        row = verdict[f"{unique}-{second.port}"]
        assert row["state"] == "error", row
        assert f"{second.host} requires credentials" in row["error"]
    assert output.count(" pass: ") >= 3, output
    answers = [request.status for request in second.requests(mark, agent="updater/")]
    assert answers.count(401) >= 4, answers  # asked in every pass, refused every time
    assert 200 not in answers, "a token obtained with alice's credentials reached it"
    assert "2 up-to-date" not in output, output


def _docker_login(engine: Dockerd, config_dir: Path, host: str) -> None:
    """The real `docker login` (the engine logs in, the CLI writes config.json)."""
    docker = shutil.which("docker")
    assert docker is not None, "the docker CLI is needed (Debian's docker.io)"
    result = subprocess.run([docker, "--config", str(config_dir), "-H", engine.host, "login",
                             host, "--username", USER, "--password-stdin"], input=PASSWORD,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr


@pytest.mark.matrix
@pytest.mark.slow
def test_identity_token_from_docker_login_checks_pulls_and_updates(
        engine: Dockerd, root: Path, unique: str, containers: list[str],
        tmp_path: Path) -> None:
    """`docker login` against a token server that issues refresh tokens writes an
    `identitytoken` and no password: `check` and `update` use it (a refresh_token grant by
    the updater, and the engine's pull gets it in X-Registry-Auth); the same through a
    credential helper that stores `<token>`."""
    tokens = TokenServer(root / f"tokens-{unique}", dict(USERS)).start()
    server = Registry(root / f"registry-{unique}", token_server=tokens).start()
    try:
        image = f"{server.host}/oauth/{unique}:latest"
        images.release(engine.client, image, "1", AUTH)
        engine.client.images.pull(image, auth_config=AUTH)
        start(engine, image, unique, ENABLED, containers)
        _docker_login(engine, tmp_path / ".docker", server.host)
        written = json.loads((tmp_path / ".docker" / "config.json").read_text())
        entry = written["auths"][server.host]
        assert entry.get("identitytoken"), written
        assert base64.b64decode(entry["auth"]).decode() == f"{USER}:"  # no password kept
        second = images.release(engine.client, image, "2", AUTH, keep_local=False)
        settings = {"state_dir": str(tmp_path / "state")}
        asked = len(tokens.requests)

        row = check_json(engine, tmp_path, settings)[unique]
        updated = run_updater(["update", "--json"], engine, tmp_path, settings)

        assert row["state"] == "update-available", row
        assert updated.returncode == 0, updated.stderr
        item = json.loads(updated.stdout)["items"][0]
        assert (item["outcome"], item["new_digest"]) == ("updated", second), item
        grants = tokens.requests[asked:]
        assert ("POST", "refresh_token", "updater") in [g[:3] for g in grants]
        assert not [g for g in grants if g[1] == "basic" and g[2] == ""], grants
        assert engine.client.containers.get(unique).attrs["Image"] == \
            engine.client.images.get(f"{server.host}/oauth/{unique}@{second}").id

        # A credential helper holding the identity token as `<token>`, docker's convention.
        (tmp_path / ".docker" / "config.json").unlink()
        secret = tmp_path / "refresh-token"
        secret.write_text(entry["identitytoken"])
        path = helper(tmp_path, "oauth", f"read host; printf '{{\"Username\": \"<token>\", "
                                          f"\"Secret\": \"%s\"}}' \"$(cat {secret})\"")
        cred_helpers(tmp_path, {server.host: "oauth"})
        third = images.release(engine.client, image, "3", AUTH, keep_local=False)
        through_helper = run_updater(["update", "--json"], engine, tmp_path, settings, path)
        assert through_helper.returncode == 0, through_helper.stderr
        item = json.loads(through_helper.stdout)["items"][0]
        assert (item["outcome"], item["new_digest"]) == ("updated", third), item
        output = updated.stdout + updated.stderr + through_helper.stdout + through_helper.stderr
        assert entry["identitytoken"] not in output
    finally:
        server.stop()
        tokens.stop()


@pytest.mark.slow
def test_a_realm_with_its_own_query_keeps_it(engine: Dockerd, root: Path, unique: str,
                                             containers: list[str], tmp_path: Path) -> None:
    """A token server that needs `tenant=t1` from its realm URL gets it with every request."""
    tokens = TokenServer(root / f"tokens-{unique}", dict(USERS), realm_query="tenant=t1").start()
    server = Registry(root / f"registry-{unique}", token_server=tokens).start()
    try:
        image = f"{server.host}/tenant/{unique}:latest"
        images.release(engine.client, image, "1", AUTH)
        start(engine, image, unique, ENABLED, containers)
        settings = {"registries": {server.host: {"username": USER, "password": PASSWORD}}}
        asked = len(tokens.requests)
        row = check_json(engine, tmp_path, settings)[unique]
        assert row["state"] == "up-to-date", row
        mine = tokens.requests[asked:]
        assert mine and all(query.get("tenant") == ["t1"] for *_, query in mine), mine
    finally:
        server.stop()
        tokens.stop()


@pytest.mark.parametrize("key", ["https://{host}/", "http://{host}", "{host}"])
def test_docker_config_keys_in_every_spelling_are_used(
        engine: Dockerd, basic_registry: Registry, unique: str, containers: list[str],
        tmp_path: Path, key: str) -> None:
    """`auths` filed under `https://host:port/`, `http://host:port` or `host:port`: all work,
    as they do for `docker pull`."""
    image = f"{basic_registry.host}/spelled/{unique}:latest"
    images.release(engine.client, image, "1", AUTH)
    start(engine, image, unique, ENABLED, containers)
    (tmp_path / ".docker").mkdir()
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    (tmp_path / ".docker" / "config.json").write_text(json.dumps(
        {"auths": {key.format(host=basic_registry.host): {"auth": auth}}}))
    assert check_json(engine, tmp_path, {})[unique]["state"] == "up-to-date"


def test_registries_keys_in_url_form_are_used(engine: Dockerd, basic_registry: Registry,
                                              unique: str, containers: list[str],
                                              tmp_path: Path) -> None:
    """A `registries` key written as a URL names its host: its credentials are sent (before,
    `updater config` showed them and the registry never got them)."""
    image = f"{basic_registry.host}/url-key/{unique}:latest"
    images.release(engine.client, image, "1", AUTH)
    start(engine, image, unique, ENABLED, containers)
    settings = {"registries": {f"http://{basic_registry.host}/": {"username": USER,
                                                                  "password": PASSWORD}}}
    assert check_json(engine, tmp_path, settings)[unique]["state"] == "up-to-date"
    shown = run_updater(["config"], None, tmp_path, settings)
    assert shown.returncode == 0, shown.stderr
    assert f"{basic_registry.host}:" in shown.stdout and "http://" not in shown.stdout
    assert PASSWORD not in shown.stdout

