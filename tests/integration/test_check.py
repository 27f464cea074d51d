"""`updater check` against a real engine and real registries: detection, auth, economy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from harness import images
from harness.dockerd import Dockerd, EngineSetup, image_store
from harness.registry import Registry
from harness.tls import make_certificates
from harness.tokenserver import TokenServer
from tests.conftest import USERS
from tests.integration.helpers import (
    ENABLED,
    check_json,
    run_updater,
    start,
    write_docker_config,
)
from updater.core.detect import check, watched
from updater.core.settings import RegistrySettings, Settings
from updater.engine.adapter import Engine
from updater.registry.client import RegistryClient
from updater.registry.credentials import SettingsCredentials

pytestmark = [pytest.mark.engine]
USER, PASSWORD = next(iter(USERS.items()))
AUTH = {"username": USER, "password": PASSWORD}


@pytest.mark.matrix
def test_new_push_under_same_tag_is_detected(engine: Dockerd, registry: Registry, unique: str,
                                             containers: list[str], tmp_path: Path) -> None:
    """A running container is up-to-date until a new VERSION is pushed under its tag."""
    image = f"{registry.host}/demo/{unique}:latest"
    first = images.release(engine.client, image, "1")
    start(engine, image, unique, ENABLED, containers)

    before = check_json(engine, tmp_path, names=(unique,))[unique]
    assert before["state"] == "up-to-date"
    assert before["local_digest"] == before["remote_digest"] == first
    assert before["kind"] == "container" and before["image"] == image and before["error"] is None

    second = images.release(engine.client, image, "2")
    after = check_json(engine, tmp_path, names=(unique,))[unique]
    assert after["state"] == "update-available"
    assert (after["local_digest"], after["remote_digest"]) == (first, second)


def _settings_with_credentials(registry: Registry, home: Path) -> dict[str, Any]:
    return {"registries": {registry.host: AUTH}}


def _docker_config_with_credentials(registry: Registry, home: Path) -> dict[str, Any]:
    write_docker_config(home, registry.host, USER, PASSWORD)
    return {}


@pytest.mark.matrix
@pytest.mark.parametrize("registry_fixture", ["basic_registry", "token_registry"])
@pytest.mark.parametrize("credentials", [_settings_with_credentials,
                                         _docker_config_with_credentials],
                         ids=["settings", "docker-config"])
def test_detection_behind_auth(engine: Dockerd, registry_fixture: str, credentials: Any,
                               request: pytest.FixtureRequest, unique: str,
                               containers: list[str], tmp_path: Path) -> None:
    """Basic and Bearer registries answer with credentials from settings or config.json."""
    server: Registry = request.getfixturevalue(registry_fixture)
    image = f"{server.host}/private/{unique}:stable"
    first = images.release(engine.client, image, "1", AUTH)
    start(engine, image, unique, ENABLED, containers)
    settings = credentials(server, tmp_path)

    assert check_json(engine, tmp_path, settings, (unique,))[unique]["state"] == "up-to-date"
    second = images.release(engine.client, image, "2", AUTH)
    row = check_json(engine, tmp_path, settings, (unique,))[unique]
    assert (row["state"], row["local_digest"], row["remote_digest"]) == (
        "update-available", first, second)


@pytest.mark.matrix
def test_multi_arch_oci_index(engine: Dockerd, registry: Registry, unique: str,
                              containers: list[str], tmp_path: Path) -> None:
    """An image pulled through an OCI index is compared by the index digest."""
    repository = f"demo/{unique}"

    def publish(version: str) -> str:
        children = {arch: images.release(engine.client, f"{registry.host}/{repository}:{arch}-"
                                         f"{version}", f"{version}-{arch}")
                    for arch in ("amd64", "arm64")}
        return images.push_index(registry.host, repository, "latest", children)

    first = publish("1")
    image = f"{registry.host}/{repository}:latest"
    engine.client.images.pull(image)
    start(engine, image, unique, ENABLED, containers)
    before = check_json(engine, tmp_path, names=(unique,))[unique]
    assert (before["state"], before["remote_digest"]) == ("up-to-date", first)

    second = publish("2")
    after = check_json(engine, tmp_path, names=(unique,))[unique]
    assert (after["state"], after["remote_digest"]) == ("update-available", second)


def test_one_head_per_distinct_reference(engine: Dockerd, registry: Registry, unique: str,
                                         containers: list[str], tmp_path: Path) -> None:
    """20 containers on 4 references cost exactly 4 manifest HEADs and no manifest GET."""
    references = [f"{registry.host}/economy/{unique}-{i}:latest" for i in range(4)]
    for i, image in enumerate(references):
        images.release(engine.client, image, f"economy-{i}")
        for copy in range(5):
            start(engine, image, f"{unique}-{i}-{copy}", ENABLED, containers)
    mark = registry.mark()

    rows = check_json(engine, tmp_path, names=tuple(containers))

    assert {row["state"] for row in rows.values()} == {"up-to-date"} and len(rows) == 20
    requests = registry.manifest_requests(since=mark)
    assert sorted((r.method, r.uri) for r in requests) == sorted(
        ("HEAD", f"/v2/economy/{unique}-{i}/manifests/latest") for i in range(4))


def test_tokens_reused_within_their_lifetime(engine: Dockerd, token_registry: Registry,
                                             token_server: TokenServer, unique: str,
                                             containers: list[str]) -> None:
    """A second pass on a Bearer registry asks the token server nothing: tokens are cached."""
    for i in range(4):
        image = f"{token_registry.host}/reuse/{unique}-{i}:latest"
        images.release(engine.client, image, f"reuse-{i}", AUTH)
        start(engine, image, f"{unique}-{i}", ENABLED, containers)
    settings_registries = {token_registry.host: RegistrySettings(username=USER, password=PASSWORD)}
    connected = Engine.connect(engine.host)
    with RegistryClient(settings_registries, SettingsCredentials(settings_registries)) as client:
        tokens_before, mark = len(token_server.issued), token_registry.mark()
        settings = Settings()
        first = check(watched(connected.containers(), settings, containers)[0], client)
        tokens_after_first = len(token_server.issued)
        second = check(watched(connected.containers(), settings, containers)[0], client)
    connected.close()

    assert {r.state.value for r in first + second} == {"up-to-date"}
    assert tokens_after_first - tokens_before == 4
    assert len(token_server.issued) == tokens_after_first
    heads = [r for r in token_registry.manifest_requests(since=mark) if r.status == 200]
    assert len(heads) == 8 and {r.method for r in heads} == {"HEAD"}


def test_pinned_and_unlabelled(engine: Dockerd, registry: Registry, unique: str,
                               containers: list[str], tmp_path: Path) -> None:
    """A digest-pinned container is reported pinned and never queried; unlabelled ones are not
    listed while label_enable is on."""
    image = f"{registry.host}/pinned/{unique}:latest"
    digest = images.release(engine.client, image, "1")
    pinned = f"{registry.host}/pinned/{unique}@{digest}"
    start(engine, pinned, f"{unique}-pinned", ENABLED, containers)
    start(engine, image, f"{unique}-plain", {}, containers)
    mark = registry.mark()

    rows = check_json(engine, tmp_path)

    assert rows[f"{unique}-pinned"]["state"] == "pinned"
    assert rows[f"{unique}-pinned"]["local_digest"] == digest
    assert f"{unique}-plain" not in rows
    assert [r for r in registry.manifest_requests(since=mark) if f"pinned/{unique}" in r.uri] == []
    everything = check_json(engine, tmp_path, {"label_enable": False}, (f"{unique}-plain",))
    assert everything[f"{unique}-plain"]["state"] == "up-to-date"


@pytest.mark.matrix
def test_detected_after_the_tag_moved_locally(engine: Dockerd, registry: Registry, unique: str,
                                              containers: list[str], tmp_path: Path) -> None:
    """A release pushed from elsewhere, then `docker pull` of the tag on this host without
    recreating the container: the container still runs the old image and is reported
    update-available, its local digest the one it was pulled as."""
    repository = f"moved/{unique}"
    first = images.release(engine.client, f"{registry.host}/{repository}:latest", "1")
    start(engine, f"{registry.host}/{repository}:latest", unique, ENABLED, containers)
    images.release(engine.client, f"{registry.host}/{repository}:next", "2", keep_local=False)
    second = images.retag_in_registry(registry.host, repository, "next", "latest")
    engine.client.images.pull(f"{registry.host}/{repository}", tag="latest")

    row = check_json(engine, tmp_path, names=(unique,))[unique]
    assert (row["state"], row["local_digest"], row["remote_digest"]) == (
        "update-available", first, second), row


@pytest.mark.matrix
def test_api_version_is_negotiated(engine: Dockerd) -> None:
    """The adapter talks the engine's own API version (1.41 on 20.10, 1.51 on 28.5)."""
    connected = Engine.connect(engine.host)
    try:
        assert connected.api_version == engine.client.version()["ApiVersion"]
    finally:
        connected.close()


@pytest.mark.matrix
def test_engine_uses_the_image_store_asked_for(engine: Dockerd) -> None:
    """The matrix run proves the containerd image store only if the engine really uses it:
    `docker info` reports the store the environment asked for (UT_CONTAINERD_STORE)."""
    wanted = "containerd" if EngineSetup.from_env().containerd_store else "graphdriver"
    assert image_store(engine.client.info()) == wanted


def test_tls_registry_with_its_ca(engine: Dockerd, root: Path, unique: str,
                                  containers: list[str], tmp_path: Path) -> None:
    """A TLS registry is verified: trusted with its ca_file, refused with a clear reason
    without it, and a hint when it is asked over plain HTTP."""
    ca, cert, key = make_certificates(root / f"tls-{unique}")
    server = Registry(root / f"registry-tls-{unique}", tls=(cert, key)).start()
    try:
        image = f"{server.host}/secure/{unique}:latest"
        digest = images.release(engine.client, image, "1")
        start(engine, image, unique, ENABLED, containers)
        trusted = {"registries": {server.host: {"insecure": False, "ca_file": str(ca)}}}
        untrusted = {"registries": {server.host: {"insecure": False}}}

        ok = check_json(engine, tmp_path, trusted, (unique,))[unique]
        refused = check_json(engine, tmp_path, untrusted, (unique,))[unique]
        plain = check_json(engine, tmp_path, None, (unique,))[unique]
    finally:
        server.stop()
    assert (ok["state"], ok["remote_digest"]) == ("up-to-date", digest)
    assert refused["state"] == "error" and "not trusted" in refused["error"]
    assert "ca_file" in refused["error"]
    assert plain["state"] == "error" and "insecure: false" in plain["error"]


def test_no_secret_in_any_output(engine: Dockerd, token_registry: Registry, unique: str,
                                 containers: list[str], tmp_path: Path) -> None:
    """At debug level, neither the password nor a token shows up in stdout or stderr."""
    image = f"{token_registry.host}/secret/{unique}:latest"
    images.release(engine.client, image, "1", AUTH)
    start(engine, image, unique, ENABLED, containers)
    settings = {"registries": {token_registry.host: AUTH}, "log_level": "debug"}
    for args in (["check", unique], ["check", "--json", unique], ["config"]):
        result = run_updater(args, engine, tmp_path, settings)
        assert result.returncode == 0, result.stderr
        output = result.stdout + result.stderr
        assert PASSWORD not in output and "eyJ" not in output  # eyJ: how every JWT starts
    assert "up-to-date" in run_updater(["check", unique], engine, tmp_path, settings).stdout


@pytest.mark.matrix
def test_an_index_rebuilt_for_another_platform_changes_nothing(
        engine: Dockerd, registry: Registry, unique: str, containers: list[str],
        tmp_path: Path) -> None:
    """An OCI index (amd64 + arm64) pushed anew with only its arm64 image rebuilt: no pull, no
    restart, up-to-date with the reason; two manifest GETs that once, and the next run one HEAD
    and no GET. Then the amd64 image changes: updated."""
    import json

    repository = f"platforms/{unique}"

    def child(arch: str, version: str) -> str:
        return images.release(engine.client, f"{registry.host}/{repository}:{arch}-{version}",
                              f"{version}-{arch}")

    amd64 = child("amd64", "1")
    images.push_index(registry.host, repository, "latest", {"amd64": amd64,
                                                            "arm64": child("arm64", "1")})
    image = f"{registry.host}/{repository}:latest"
    engine.client.images.pull(image)
    start(engine, image, unique, ENABLED, containers)
    before = engine.client.containers.get(unique)
    images.push_index(registry.host, repository, "latest", {"amd64": amd64,
                                                            "arm64": child("arm64", "2")})
    settings = {"state_dir": str(tmp_path / "state")}

    def update() -> tuple[dict[str, Any], list[tuple[str, str]]]:
        mark = registry.mark()
        result = run_updater(["update", "--json", unique], engine, tmp_path, settings)
        assert result.returncode == 0, result.stderr
        [item] = json.loads(result.stdout)["items"]
        # Every client's manifest requests: a pull by the engine would show as well.
        return item, [(r.method, r.uri) for r in registry.requests(since=mark)
                      if "/manifests/" in r.uri]

    item, requests = update()
    assert item["outcome"] == "up-to-date", item
    assert item["reason"] == "the tag's index changed, its linux/amd64 image did not"
    assert sorted(method for method, _ in requests) == ["GET", "GET", "HEAD"], requests
    after = engine.client.containers.get(unique)
    assert (after.id, after.attrs["Image"]) == (before.id, before.attrs["Image"])
    item, requests = update()
    assert item["outcome"] == "up-to-date" and [m for m, _ in requests] == ["HEAD"], requests

    images.push_index(registry.host, repository, "latest", {"amd64": child("amd64", "2"),
                                                            "arm64": child("arm64", "2")})
    item, _ = update()
    assert item["outcome"] == "updated", item
    assert engine.client.containers.get(unique).attrs["Image"] != before.attrs["Image"]
