# ruff: noqa: RUF059 - each step unpacks the same (code, items, output) triple
"""`updater rollback NAME` / `POST /v1/rollback` on the setups hosts have, against a real engine
and real registries (from an adversarial review): `--rm`, paused, dependants, names taken, old
images gone (pulled back by digest, or the registry down), old images that no longer start,
containers changed since, successive rollbacks, cleanup, an undo killed half-way, repeated API
calls, secrets. Where the behaviour is a chosen limit (an exited container, the shared tag),
the test pins it down as the README states it."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import docker.errors
import httpx
import pytest

from harness import images
from harness.dockerd import Dockerd
from harness.procs import free_port
from harness.registry import Registry
from tests.conftest import USERS
from tests.integration.helpers import (
    ENABLED,
    run_updater,
    start_daemon,
    updater_env,
    wait_until,
)

pytestmark = [pytest.mark.engine]
TOKEN = "review-api-token-123456"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


# ---------------------------------------------------------------------------------------------
# helpers

class Lane:
    """One container under test: its image, name, private HOME and settings."""

    def __init__(self, engine: Dockerd, registry: Registry, unique: str, tmp_path: Path,
                 containers: list[str], settings: dict[str, Any] | None = None,
                 repo: str = "review") -> None:
        self.engine = engine
        self.client = engine.client
        self.registry = registry
        self.image = f"{registry.host}/{repo}/{unique}:latest"
        self.name = f"{unique}-c"
        self.home = tmp_path / "home"
        self.settings = {"state_dir": str(tmp_path / "state"), **(settings or {})}
        self.containers = containers
        containers.append(self.name)

    def run(self, *args: str, env: dict[str, str] | None = None
            ) -> tuple[int, list[dict[str, Any]], str]:
        """`updater ARGS --json`: exit code, items, stdout+stderr."""
        result = run_updater([*args, "--json"], self.engine, self.home, self.settings, env)
        assert "Traceback" not in result.stderr, result.stderr
        items = json.loads(result.stdout)["items"] if result.stdout.strip() else []
        return result.returncode, items, result.stdout + result.stderr

    def plain(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_updater(list(args), self.engine, self.home, self.settings)

    def attrs(self, name: str | None = None) -> dict[str, Any]:
        return self.client.containers.get(name or self.name).attrs

    def tag_id(self, image: str | None = None) -> str | None:
        try:
            return str(self.client.images.get(image or self.image).id)
        except docker.errors.ImageNotFound:
            return None

    def present(self, image_id: str) -> bool:
        return image_id in self.client.api.images(all=True, quiet=True)

    def names_like(self) -> list[str]:
        return sorted(str(c["Names"][0]).lstrip("/") for c in self.client.api.containers(
            all=True, filters={"name": self.name}))


def _updated_once(lane: Lane, **run: Any) -> tuple[str, str, str]:
    """v1 released and run as lane.name; v2 released (not local) and applied by `updater
    update`. Returns (v1 image ID, v2 image ID, v2 digest)."""
    images.release(lane.client, lane.image, "1", **run.pop("release1", {}))
    first = lane.tag_id()
    assert first is not None
    lane.client.containers.run(lane.image, name=lane.name, detach=True,
                               labels={**ENABLED, **run.pop("labels", {})}, **run)
    digest = images.release(lane.client, lane.image, "2", keep_local=False)
    code, items, out = lane.run("update", lane.name)
    assert code == 0 and [i["outcome"] for i in items] == ["updated"], out
    second = lane.attrs()["Image"]
    assert second != first
    return first, second, digest


# ---------------------------------------------------------------------------------------------
# container kinds

def test_rm_container_is_rolled_back(engine: Dockerd, registry: Registry, unique: str,
                                     containers: list[str], tmp_path: Path) -> None:
    """`--rm` container: rollback keeps it under its name on v1, running, nothing left over."""
    lane = Lane(engine, registry, unique, tmp_path, containers)
    first, _, _ = _updated_once(lane, auto_remove=True)
    assert lane.attrs()["HostConfig"]["AutoRemove"]
    code, items, out = lane.run("rollback", lane.name)
    assert code == 0 and items[0]["outcome"] == "undone", out
    after = lane.attrs()
    assert after["Image"] == first and after["State"]["Running"]
    assert after["HostConfig"]["AutoRemove"]
    assert lane.names_like() == [lane.name]


def test_paused_container_is_rolled_back_and_paused_again(
        engine: Dockerd, registry: Registry, unique: str, containers: list[str],
        tmp_path: Path) -> None:
    lane = Lane(engine, registry, unique, tmp_path, containers)
    first, _, _ = _updated_once(lane)
    lane.client.containers.get(lane.name).pause()
    code, items, out = lane.run("rollback", lane.name)
    assert code == 0 and items[0]["outcome"] == "undone", out
    after = lane.attrs()
    assert after["Image"] == first and after["State"]["Paused"], after["State"]
    assert lane.names_like() == [lane.name]


def test_dependants_survive_a_rollback(engine: Dockerd, registry: Registry, unique: str,
                                       containers: list[str], tmp_path: Path) -> None:
    """Three unwatched dependants of the rolled-back container: one in its network namespace
    (`network_mode: container:NAME`), one linked to it, one labelled updater.depends-on. After
    the rollback all run, the first in the new container's namespace, the link pointing at the
    new container's address."""
    lane = Lane(engine, registry, unique, tmp_path, containers)
    first, _, _ = _updated_once(lane)
    side = f"{registry.host}/review-dep/{unique}:latest"
    images.build(lane.client, side, "1")
    netns, linked, label = (f"{unique}-netns", f"{unique}-link", f"{unique}-label")
    containers.extend([netns, linked, label])
    lane.client.containers.run(side, name=netns, detach=True,
                               network_mode=f"container:{lane.name}")
    lane.client.containers.run(side, name=linked, detach=True, links={lane.name: "parent"})
    lane.client.containers.run(side, name=label, detach=True,
                               labels={"updater.depends-on": lane.name})
    code, items, out = lane.run("rollback", lane.name)
    assert code == 0 and [i["outcome"] for i in items] == ["undone"], out
    parent = lane.attrs()
    assert parent["Image"] == first and parent["State"]["Running"]

    def mac(name: str) -> bytes:
        output = lane.client.containers.get(name).exec_run(
            ["cat", "/sys/class/net/eth0/address"]).output
        assert isinstance(output, bytes)
        return output

    for name in (netns, linked, label):
        assert lane.attrs(name)["State"]["Running"], (name, lane.attrs(name)["State"])
    assert mac(netns) == mac(lane.name)
    output = lane.client.containers.get(linked).exec_run(["cat", "/etc/hosts"]).output
    assert isinstance(output, bytes)
    hosts = output.decode()
    address = parent["NetworkSettings"]["IPAddress"]
    assert any(line.split()[:1] == [address] and "parent" in line.split()
               for line in hosts.splitlines()), (address, hosts)


# ---------------------------------------------------------------------------------------------
# refusals and failures must leave everything as it was

def test_temporary_name_taken_leaves_container_and_tag_untouched(
        engine: Dockerd, registry: Registry, unique: str, containers: list[str],
        tmp_path: Path) -> None:
    """`NAME-updater-old` belongs to another container: the rollback fails before anything is
    stopped. Expected: the container, the other container and the local tag all unchanged."""
    lane = Lane(engine, registry, unique, tmp_path, containers)
    _, second, _ = _updated_once(lane)
    squatter = f"{lane.name}-updater-old"
    containers.append(squatter)
    lane.client.containers.run(second, name=squatter, detach=True)
    before = lane.attrs()
    tag_before = lane.tag_id()
    assert tag_before == second
    code, items, out = lane.run("rollback", lane.name)
    after = lane.attrs()
    assert code != 0 and items[0]["outcome"] == "failed", out
    assert "taken" in items[0]["reason"], items[0]
    assert after["Id"] == before["Id"] and after["Image"] == second and after["State"]["Running"]
    assert lane.attrs(squatter)["State"]["Running"]
    # Nothing was done: the local tag should still name the image the container runs.
    assert lane.tag_id() == tag_before, (
        f"the failed rollback re-pointed {lane.image} at the old image "
        f"{lane.tag_id()} (was {tag_before})")


def test_old_image_no_longer_starting_keeps_the_current_container(
        engine: Dockerd, registry: Registry, unique: str, containers: list[str],
        tmp_path: Path) -> None:
    """v2 migrated the data (a marker in the volume); v1's health check fails on migrated
    data. The rollback must leave the container on v2, running, same container; `rolled-back`;
    nothing held back; the local tag unchanged."""
    lane = Lane(engine, registry, unique, tmp_path, containers)
    health = "HEALTHCHECK --interval=1s --timeout=1s --retries=2 CMD test ! -f /data/migrated"
    migrate = ('["sh", "-c", "touch /data/migrated; trap \'exit 0\' TERM; '
               'while :; do sleep 1; done"]')
    images.release(lane.client, lane.image, "1", extra=health)
    first = lane.tag_id()
    volume = {f"{unique}-data": {"bind": "/data", "mode": "rw"}}
    lane.client.containers.run(lane.image, name=lane.name, detach=True, labels=ENABLED,
                               volumes=volume)
    wait_until(lambda: (lane.attrs()["State"].get("Health") or {}).get("Status") == "healthy",
               30, lambda: "v1 never healthy")
    images.release(lane.client, lane.image, "2", cmd=migrate,
                   extra="HEALTHCHECK --interval=1s --timeout=1s CMD true", keep_local=False)
    code, items, out = lane.run("update", lane.name)
    assert code == 0 and items[0]["outcome"] == "updated", out
    before = lane.attrs()
    second = before["Image"]
    code, items, out = lane.run("rollback", lane.name)
    after = lane.attrs()
    assert code != 0 and items[0]["outcome"] == "rolled-back", out
    assert after["Id"] == before["Id"] and after["Image"] == second, (after["Id"], before["Id"])
    assert after["State"]["Running"]
    assert lane.names_like() == [lane.name]
    assert first is not None and lane.present(first)  # still kept for another try
    code, items, out = lane.run("update", lane.name)
    assert code == 0 and items[0]["outcome"] == "up-to-date", out
    assert lane.attrs()["Id"] == before["Id"]
    assert lane.tag_id() == second, (
        f"after a rollback that did not happen, {lane.image} names the old image "
        f"{lane.tag_id()} (the container runs {second})")


def test_container_recreated_on_another_image_is_refused(
        engine: Dockerd, registry: Registry, unique: str, containers: list[str],
        tmp_path: Path) -> None:
    lane = Lane(engine, registry, unique, tmp_path, containers)
    _updated_once(lane)
    other = f"{registry.host}/review-other/{unique}:latest"
    other_id = images.build(lane.client, other, "9")
    lane.client.containers.get(lane.name).remove(force=True)
    lane.client.containers.run(other, name=lane.name, detach=True, labels=ENABLED)
    before = lane.attrs()
    code, _items, out = lane.run("rollback", lane.name)
    assert code == 2 and "changed since" in out, out
    after = lane.attrs()
    assert after["Id"] == before["Id"] and after["Image"] == other_id
    assert after["State"]["Running"]


def test_container_recreated_on_the_same_image_keeps_its_new_settings(
        engine: Dockerd, registry: Registry, unique: str, containers: list[str],
        tmp_path: Path) -> None:
    """Recreated by the user on the same image (its tag) with another environment: the
    rollback goes ahead (only the image changes) and keeps the user's new settings."""
    lane = Lane(engine, registry, unique, tmp_path, containers)
    first, second, _ = _updated_once(lane)
    lane.client.containers.get(lane.name).remove(force=True)
    lane.client.containers.run(lane.image, name=lane.name, detach=True, labels=ENABLED,
                               environment={"NEW": "setting"})
    assert lane.attrs()["Image"] == second
    code, items, out = lane.run("rollback", lane.name)
    assert code == 0 and items[0]["outcome"] == "undone", out
    after = lane.attrs()
    assert after["Image"] == first and "NEW=setting" in after["Config"]["Env"]


def test_container_recreated_by_image_id(
        engine: Dockerd, registry: Registry, unique: str, containers: list[str],
        tmp_path: Path) -> None:
    """Recreated by the user on the same image, named by its ID (`docker run sha256:...`):
    the rollback is planned (same image) but the replacement is created on the reference
    `sha256:latest`. Expected: undone, or a clear refusal; the container untouched either way."""
    lane = Lane(engine, registry, unique, tmp_path, containers)
    _first, second, _ = _updated_once(lane)
    lane.client.containers.get(lane.name).remove(force=True)
    lane.client.containers.run(second, name=lane.name, detach=True, labels=ENABLED)
    before = lane.attrs()
    plan = lane.plain("check", lane.name)
    print("OBSERVED check of it:", plan.stdout[-300:], plan.stderr[-300:])
    code, _items, out = lane.run("rollback", lane.name)
    after = lane.attrs()
    assert after["Id"] == before["Id"] and after["State"]["Running"]
    assert code == 2 and "changed since" in out, out  # refused: it names no repository now


# ---------------------------------------------------------------------------------------------
# the kept image gone

def test_pruned_kept_image_is_pulled_back_by_digest(
        engine: Dockerd, registry: Registry, unique: str, containers: list[str],
        tmp_path: Path) -> None:
    """A plain `docker image prune` (dangling only, no -a) after the update: is the kept
    image protected from it? Either way the rollback must pull it back by digest."""
    lane = Lane(engine, registry, unique, tmp_path, containers, {"cleanup": True})
    first, _, _ = _updated_once(lane)
    lane.client.images.prune(filters={"dangling": True})
    pruned_by_plain_prune = not lane.present(first)
    if lane.present(first):
        lane.client.images.remove(first)
    assert not lane.present(first)
    code, items, out = lane.run("rollback", lane.name)
    assert code == 0 and items[0]["outcome"] == "undone", out
    after = lane.attrs()
    assert after["Image"] == first and after["State"]["Running"]
    print(f"OBSERVED: kept image removed by a plain `docker image prune`: "
          f"{pruned_by_plain_prune}")


def test_kept_image_gone_and_registry_down_leaves_container_running(
        engine: Dockerd, unique: str, containers: list[str], tmp_path: Path) -> None:
    own = Registry(tmp_path / "own-registry").start()
    try:
        lane = Lane(engine, own, unique, tmp_path, containers)
        first, second, _ = _updated_once(lane)
        lane.client.images.remove(first)
        own.stop()
        before = lane.attrs()
        tag_before = lane.tag_id()
        started = time.monotonic()
        code, items, out = lane.run("rollback", lane.name)
        took = time.monotonic() - started
    finally:
        own.stop()
    after = lane.attrs()
    assert code == 1 and items[0]["outcome"] == "failed", out
    assert "not touched" in items[0]["reason"], items[0]
    assert after["Id"] == before["Id"] and after["Image"] == second
    assert after["State"]["Running"] and after["State"]["StartedAt"] == before["State"][
        "StartedAt"]
    assert lane.tag_id() == tag_before
    assert took < 60, took
    print("OBSERVED reason:", items[0]["reason"])


def test_locally_built_and_pushed_kept_image(
        engine: Dockerd, registry: Registry, unique: str, containers: list[str],
        tmp_path: Path) -> None:
    """A host that builds and pushes its own image (never pulled: only the push gave it a
    RepoDigest), then updated from the registry. The kept build, deleted, is pulled back."""
    lane = Lane(engine, registry, unique, tmp_path, containers)
    local_id = images.build(lane.client, lane.image, "local")
    images.push(lane.client, lane.image)
    lane.client.containers.run(lane.image, name=lane.name, detach=True, labels=ENABLED)
    images.release(lane.client, lane.image, "2", keep_local=False)
    code, items, out = lane.run("update", lane.name)
    assert code == 0 and items[0]["outcome"] == "updated", out
    lane.client.images.remove(local_id, force=True)
    code, items, out = lane.run("rollback", lane.name)
    assert code == 0 and items[0]["outcome"] == "undone", out
    assert lane.attrs()["Image"] == local_id


def test_never_pulled_local_build_cannot_be_the_kept_image(
        engine: Dockerd, registry: Registry, unique: str, containers: list[str],
        tmp_path: Path) -> None:
    """A local build never pushed nor pulled: the updater refuses to update it (no digest),
    so no kept image without a digest can arise."""
    lane = Lane(engine, registry, unique, tmp_path, containers)
    images.build(lane.client, lane.image, "local")
    lane.client.containers.run(lane.image, name=lane.name, detach=True, labels=ENABLED)
    images.release(lane.client, lane.image, "2", keep_local=False)
    _code, items, out = lane.run("update", lane.name)
    assert items[0]["outcome"] == "error" and "never pulled" in items[0]["reason"], out
    again = lane.plain("rollback", lane.name)
    assert again.returncode == 2 and "nothing to roll back" in again.stderr, again.stderr


def test_crash_looping_after_update_is_rolled_back(
        engine: Dockerd, registry: Registry, unique: str, containers: list[str],
        tmp_path: Path) -> None:
    """v2 passes the health check, then crashes every few seconds (restart: always): the
    classic reason to roll back. The rollback puts it back on v1, running."""
    lane = Lane(engine, registry, unique, tmp_path, containers)
    images.release(lane.client, lane.image, "1")
    first = lane.tag_id()
    lane.client.containers.run(lane.image, name=lane.name, detach=True, labels=ENABLED,
                               restart_policy={"Name": "always"})
    images.release(lane.client, lane.image, "2", cmd='["sh", "-c", "sleep 3; exit 1"]',
                   keep_local=False)
    code, items, out = lane.run("update", lane.name)
    assert items[0]["outcome"] == "updated", out
    wait_until(lambda: lane.attrs()["RestartCount"] >= 1, 30, lambda: "no crash")
    code, items, out = lane.run("rollback", lane.name)
    assert code == 0 and items[0]["outcome"] == "undone", out
    after = lane.attrs()
    assert after["Image"] == first and after["State"]["Running"]
    assert after["HostConfig"]["RestartPolicy"]["Name"] == "always"


def test_an_exited_container_is_refused_and_left_alone(
        engine: Dockerd, registry: Registry, unique: str, containers: list[str],
        tmp_path: Path) -> None:
    """v2 passes the health check, then exits (no restart policy). An exited container is not
    watched, so it is not rolled back (a known limit, in the README): refused, untouched."""
    lane = Lane(engine, registry, unique, tmp_path, containers)
    images.release(lane.client, lane.image, "1")
    lane.client.containers.run(lane.image, name=lane.name, detach=True, labels=ENABLED)
    images.release(lane.client, lane.image, "2", cmd='["sh", "-c", "sleep 4; exit 1"]',
                   keep_local=False)
    _code, items, out = lane.run("update", lane.name)
    assert items[0]["outcome"] == "updated", out
    wait_until(lambda: lane.attrs()["State"]["Status"] == "exited", 30, lambda: "no exit")
    before = lane.attrs()
    result = lane.plain("rollback", lane.name)
    assert result.returncode == 2 and "no watched container" in result.stderr, result.stderr
    assert lane.attrs()["Id"] == before["Id"]


def test_rollback_off_label_and_old_image_not_starting(
        engine: Dockerd, registry: Registry, unique: str, containers: list[str],
        tmp_path: Path) -> None:
    """`updater.rollback=false` (for updates) and the old image no longer starts: does the
    rollback still keep the container as it was (README: "the container kept as it was
    should the old image not start any more")?"""
    lane = Lane(engine, registry, unique, tmp_path, containers)
    refuse = ('["sh", "-c", "test -f /data/migrated && exit 3; trap \'exit 0\' TERM; '
              'while :; do sleep 1; done"]')
    migrate = ('["sh", "-c", "touch /data/migrated; trap \'exit 0\' TERM; '
               'while :; do sleep 1; done"]')
    images.release(lane.client, lane.image, "1", cmd=refuse)
    volume = {f"{unique}-data": {"bind": "/data", "mode": "rw"}}
    lane.client.containers.run(lane.image, name=lane.name, detach=True, volumes=volume,
                               labels={**ENABLED, "updater.rollback": "false"})
    images.release(lane.client, lane.image, "2", cmd=migrate, keep_local=False)
    _, items, out = lane.run("update", lane.name)
    assert items[0]["outcome"] == "updated", out
    before = lane.attrs()
    _code, items, out = lane.run("rollback", lane.name)
    print("OBSERVED:", items[0]["outcome"], items[0]["reason"], lane.names_like(),
          lane.attrs()["State"]["Status"])
    after = lane.attrs()
    _code2, items2, _out2 = lane.run("update", lane.name)
    print("OBSERVED next update:", [(i["outcome"], i["reason"]) for i in items2],
          lane.names_like(), lane.attrs()["State"]["Status"])
    again = lane.plain("rollback", lane.name)
    print("OBSERVED rollback again:", again.returncode, again.stderr[-200:])
    assert after["Id"] == before["Id"] and after["State"]["Running"], (
        f"{lane.name} is now {after['State']['Status']} on the old image; the container it "
        f"was ({before['Id'][:12]}) is left stopped: {lane.names_like()}")


# ---------------------------------------------------------------------------------------------
# keeping and cleanup

def test_keep_two_and_two_successive_rollbacks(engine: Dockerd, registry: Registry,
                                               unique: str, containers: list[str],
                                               tmp_path: Path) -> None:
    lane = Lane(engine, registry, unique, tmp_path, containers,
                {"cleanup": True, "keep_images": 2})
    first, second, digest2 = _updated_once(lane)
    digest3 = images.release(lane.client, lane.image, "3", keep_local=False)
    code, items, out = lane.run("update", lane.name)
    assert items[0]["outcome"] == "updated", out
    third = lane.attrs()["Image"]
    assert lane.present(first) and lane.present(second)

    code, items, out = lane.run("rollback", lane.name)
    assert code == 0 and items[0]["outcome"] == "undone", out
    assert lane.attrs()["Image"] == second
    code, items, out = lane.run("rollback", lane.name)
    assert code == 0 and items[0]["outcome"] == "undone", out
    assert lane.attrs()["Image"] == first
    again = lane.plain("rollback", lane.name)
    assert again.returncode == 2 and "nothing to roll back" in again.stderr, again.stderr
    code, items, out = lane.run("update", lane.name)
    assert (items[0]["outcome"], items[0]["new_digest"]) == ("held-back", digest3), out
    assert lane.attrs()["Image"] == first

    # Approve v3 again, then v4: with cleanup, the image no container runs or keeps (v2,
    # left by the rollbacks) should go at some point.
    assert lane.plain("approve", lane.name, "--digest", digest3).returncode == 0
    code, items, out = lane.run("update", lane.name)
    assert items[0]["outcome"] == "updated", out
    images.release(lane.client, lane.image, "4", keep_local=False)
    code, items, out = lane.run("update", lane.name)
    assert items[0]["outcome"] == "updated", out
    images.release(lane.client, lane.image, "5", keep_local=False)
    code, items, out = lane.run("update", lane.name)
    assert items[0]["outcome"] == "updated", out
    assert lane.attrs()["Image"] not in (first, second, third)
    leaked = [i[:19] for i in (first, second, third) if lane.present(i)]
    print("OBSERVED images of v1..v3 still on the engine:", leaked, "digest2", digest2[:19])
    # v4 and v3 are the two kept; v1 and v2 are kept by no container and run by none.
    assert not lane.present(first) and not lane.present(second), (
        f"cleanup left images no container keeps or runs: {leaked}")


def test_shared_image_is_never_removed_by_cleanup(engine: Dockerd, registry: Registry,
                                                  unique: str, containers: list[str],
                                                  tmp_path: Path) -> None:
    """Two watched containers and one stopped unwatched container on v1, cleanup on,
    keep_images 0 and then rollbacks with keep 1: no image a container runs (or keeps) goes."""
    lane = Lane(engine, registry, unique, tmp_path, containers,
                {"cleanup": True, "keep_images": 0})
    images.release(lane.client, lane.image, "1")
    first = lane.tag_id()
    assert first is not None
    other, stopped = f"{unique}-other", f"{unique}-stopped"
    containers.extend([other, stopped])
    for name in (lane.name, other):
        lane.client.containers.run(lane.image, name=name, detach=True, labels=ENABLED)
    lane.client.containers.create(lane.image, name=stopped)
    images.release(lane.client, lane.image, "2", keep_local=False)
    code, items, out = lane.run("update", lane.name)  # only one of the two
    assert items[0]["outcome"] == "updated", out
    assert lane.present(first) and lane.attrs(other)["State"]["Running"]
    lane.client.containers.get(other).restart(timeout=1)  # its image is really there
    assert lane.attrs(other)["Image"] == first

    # keep_images 1 for both; update the other, roll one back, update again.
    lane.settings["keep_images"] = 1
    code, items, out = lane.run("update", other)
    assert items[0]["outcome"] == "updated", out
    second = lane.attrs(other)["Image"]
    _, items, out = lane.run("rollback", other)
    assert items[0]["outcome"] == "undone", out
    assert lane.attrs(other)["Image"] == first
    # The other container's rollback re-pointed the shared tag: what does c (on v2) see?
    print("OBSERVED tag after rolling back only", other, "->",
          "v1" if lane.tag_id() == first else "v2" if lane.tag_id() == second else "?")
    images.release(lane.client, lane.image, "3", keep_local=False)
    _, items, out = lane.run("update")
    assert sorted(i["outcome"] for i in items) == ["updated", "updated"], out
    for name in (lane.name, other):
        _code, items, out = lane.run("rollback", name)
        assert items[0]["outcome"] == "undone", (name, out)
    for name in (lane.name, other, stopped):
        assert lane.present(lane.attrs(name)["Image"]), name
    assert lane.attrs(lane.name)["Image"] == second and lane.attrs(other)["Image"] == first


def test_rollback_of_one_container_leaves_its_sibling_and_moves_the_tag(
        engine: Dockerd, registry: Registry, unique: str, containers: list[str],
        tmp_path: Path) -> None:
    """Two containers on one tag, both updated to v2; only one is rolled back: the sibling
    stays on v2, and the local tag names v1, the image gone back to (as the README says)."""
    lane = Lane(engine, registry, unique, tmp_path, containers)
    images.release(lane.client, lane.image, "1")
    first = lane.tag_id()
    sibling = f"{unique}-sibling"
    containers.append(sibling)
    for name in (lane.name, sibling):
        lane.client.containers.run(lane.image, name=name, detach=True, labels=ENABLED)
    images.release(lane.client, lane.image, "2", keep_local=False)
    _, items, out = lane.run("update")
    assert [i["outcome"] for i in items] == ["updated", "updated"], out
    second = lane.attrs(sibling)["Image"]
    _code, items, out = lane.run("rollback", lane.name)
    assert items[0]["outcome"] == "undone", out
    assert lane.attrs(sibling)["Image"] == second and lane.attrs(lane.name)["Image"] == first
    assert lane.attrs(sibling)["State"]["Running"]
    assert lane.tag_id() == first


def test_user_repointed_tag(engine: Dockerd, registry: Registry, unique: str,
                            containers: list[str], tmp_path: Path) -> None:
    """After the update the user builds their own image under the same tag (a local
    re-point): the rollback puts the container back on v1 and the tag on v1 (README); the
    user's build stays, by its ID."""
    lane = Lane(engine, registry, unique, tmp_path, containers)
    first, _second, _ = _updated_once(lane)
    mine = images.build(lane.client, lane.image, "mine")
    code, items, out = lane.run("rollback", lane.name)
    assert code == 0 and items[0]["outcome"] == "undone", out
    after = lane.attrs()
    assert after["Image"] == first and after["Config"]["Image"] == lane.image
    assert lane.tag_id() == first and lane.present(mine)


# ---------------------------------------------------------------------------------------------
# crashes

KILL_DRIVER = """
import os, signal, sys
from updater import config
from updater.app import Application
from updater.store.journal import Journal, StateLock
step, name = sys.argv[1], sys.argv[2]
class Killing(Journal):
    def record(self, entry, s, new_id=None):
        super().record(entry, s, new_id)
        if s == step:
            os.kill(os.getpid(), signal.SIGKILL)
settings = config.load()
with StateLock(settings.state_dir), Application(settings, Killing(settings.state_dir)) as app:
    app.rollback(name)
sys.exit(3)
"""


@pytest.mark.parametrize("step", ["renamed", "started", "verified", "removing-old"])
def test_rollback_killed_then_update(engine: Dockerd, registry: Registry, unique: str,
                                     containers: list[str], tmp_path: Path, step: str) -> None:
    """A rollback SIGKILLed right after the journal records STEP, then `updater update`
    (recovery, then a pass). No container lost; and the operator's rollback must not be
    silently reverted: once the container is back on v1, the pass must not move it to the
    undone v2 again."""
    lane = Lane(engine, registry, unique, tmp_path, containers)
    first, second, digest2 = _updated_once(lane)
    killed = subprocess.run([sys.executable, "-c", KILL_DRIVER, step, lane.name],
                            env=updater_env(engine.host, lane.home, lane.settings),
                            capture_output=True, text=True, timeout=120, check=False)
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr[-2000:])
    _code, items, _out = lane.run("update", lane.name)
    assert lane.names_like() == [lane.name], lane.names_like()
    after = lane.attrs()
    assert after["State"]["Running"]
    outcomes = [(i["outcome"], (i.get("reason") or "")[:80]) for i in items]
    print(f"OBSERVED after kill at {step}: {outcomes}; runs "
          f"{'v1' if after['Image'] == first else 'v2' if after['Image'] == second else '?'}")
    history = json.loads(lane.plain("history", lane.name, "--json").stdout)
    print("OBSERVED history:", [e["outcome"] for e in history])
    if any(i["outcome"] == "recovered" and "finished" in (i.get("reason") or "")
           for i in items):
        # The rollback was finished by the recovery: it must stay rolled back.
        assert after["Image"] == first, (
            f"the recovery finished the rollback to v1, then the same pass updated "
            f"{lane.name} to the undone {digest2[:19]} again: {outcomes}")


# ---------------------------------------------------------------------------------------------
# the daemon's API

def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _history(base: str, name: str) -> list[dict[str, Any]]:
    return list(httpx.get(f"{base}/v1/history", params={"name": name}, headers=AUTH,
                          timeout=10).json())


@pytest.mark.parametrize("keep", [1, 2])
def test_two_rollbacks_queued_through_the_api(engine: Dockerd, registry: Registry,
                                              unique: str, containers: list[str],
                                              tmp_path: Path, keep: int) -> None:
    """Two `POST /v1/rollback?name=` back to back (an impatient operator, a retried request):
    both queued; with two images kept each goes one update further back (v3 → v2 → v1, as
    the README says), with one kept the second fails and says so in the status."""
    lane = Lane(engine, registry, unique, tmp_path, containers, {"keep_images": keep})
    first, second, _ = _updated_once(lane)
    images.release(lane.client, lane.image, "3", keep_local=False)
    _code, items, out = lane.run("update", lane.name)
    assert items[0]["outcome"] == "updated", out
    third = lane.attrs()["Image"]
    port = free_port()
    daemon = start_daemon(engine, tmp_path / "daemon", {
        **lane.settings, "interval": "1h",
        "http_api": {"listen": f"127.0.0.1:{port}", "token": TOKEN}})
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(f"{base}/v1/health"), 60, lambda: "no API")
        answers = [httpx.post(f"{base}/v1/rollback", params={"name": lane.name}, headers=AUTH,
                              timeout=30) for _ in range(2)]
        wait_until(lambda: [e["outcome"] for e in _history(base, lane.name)].count("undone")
                   >= 1, 120, lambda: "no rollback done")
        time.sleep(8)  # the second job, if any, is done by now
        history = [e["outcome"] for e in _history(base, lane.name)]
        status = httpx.get(f"{base}/v1/status", headers=AUTH, timeout=10).json()
    finally:
        daemon.send_signal(signal.SIGTERM)
        output, _ = daemon.communicate(timeout=60)
    runs = lane.attrs()["Image"]
    where = {first: "v1", second: "v2", third: "v3"}.get(runs, "?")
    print(f"OBSERVED keep={keep}: answers {[(a.status_code, a.json()) for a in answers]}; "
          f"history {history}; now on {where}; last_error {status['last_error']}")
    print("OBSERVED daemon log lines about the rollback:",
          [line for line in output.splitlines() if "rollback" in line.lower()
           or "roll back" in line.lower()][-6:])
    assert [a.status_code for a in answers] == [202, 202]
    if keep == 1:
        assert where == "v2" and history.count("undone") == 1
        assert "nothing to roll back" in str(status["last_error"]), status
    else:
        assert where == "v1" and history.count("undone") == 2


# ---------------------------------------------------------------------------------------------
# secrets

def test_no_secret_in_rollback_output(engine: Dockerd, basic_registry: Registry, unique: str,
                                      containers: list[str], tmp_path: Path) -> None:
    user, password = next(iter(USERS.items()))
    auth = {"username": user, "password": password}
    lane = Lane(engine, basic_registry, unique, tmp_path, containers, {
        "log_level": "debug",
        "registries": {basic_registry.host: {"username": user, "password": password}}})
    images.release(lane.client, lane.image, "1", auth)
    lane.client.images.pull(lane.image, auth_config=auth)
    first = lane.tag_id()
    assert first is not None
    lane.client.containers.run(lane.image, name=lane.name, detach=True, labels=ENABLED)
    images.release(lane.client, lane.image, "2", auth, keep_local=False)
    outputs = {}
    code, items, outputs["update"] = lane.run("update", lane.name)
    assert items[0]["outcome"] == "updated", outputs["update"]
    lane.client.images.remove(first)
    code, items, outputs["rollback"] = lane.run("rollback", lane.name)
    assert items[0]["outcome"] == "undone", outputs["rollback"]
    assert lane.attrs()["Image"] == first
    # Wrong password, kept image gone again: a failing pull.
    _, items, outputs["update2"] = lane.run("update", lane.name)
    approve = lane.plain("approve", lane.name, "--digest", items[0]["new_digest"])
    _, items, outputs["update3"] = lane.run("update", lane.name)
    assert items[0]["outcome"] == "updated", outputs["update3"]
    lane.client.images.remove(first)
    wrong = "not-the-password-987"
    lane.settings["registries"] = {basic_registry.host: {"username": user, "password": wrong}}
    _code, items, outputs["rollback-wrong"] = lane.run("rollback", lane.name)
    assert items[0]["outcome"] == "failed", outputs["rollback-wrong"]
    outputs["history"] = lane.plain("history", "--json").stdout
    outputs["approve"] = approve.stdout + approve.stderr
    secrets = [password, wrong, base64.b64encode(f"{user}:{password}".encode()).decode(),
               base64.b64encode(f"{user}:{wrong}".encode()).decode()]
    for secret in secrets:
        for where, text in outputs.items():
            assert secret not in text, f"a secret appears in {where}"
