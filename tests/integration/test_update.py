"""`updater update` on a real engine: containers replaced, rolled back, left alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness import images
from harness.dockerd import Dockerd
from harness.registry import Registry
from tests.integration.helpers import ENABLED, run_updater, start

pytestmark = [pytest.mark.engine]


def update(engine: Dockerd, home: Path, *names: str,
           settings: dict[str, Any] | None = None) -> tuple[int, dict[str, dict[str, Any]]]:
    """Run `updater update --json NAMES`; exit code and the report items by name."""
    merged = {"state_dir": str(home / "state"), **(settings or {})}
    result = run_updater(["update", "--json", *names], engine, home, merged)
    print(result.stderr)  # shown by pytest when the test fails
    assert result.returncode in (0, 1), result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    report = json.loads(result.stdout)
    return result.returncode, {item["name"]: item for item in report["items"]}


def image_of(engine: Dockerd, name: str) -> tuple[str, str, bool]:
    """(container ID, image ID, running) of the container called `name`."""
    container = engine.client.containers.get(name)
    return str(container.id), container.attrs["Image"], container.attrs["State"]["Running"]


def image_id(engine: Dockerd, reference: str) -> str:
    return str(engine.client.images.get(reference).id)


@pytest.mark.matrix
def test_update_replaces_the_container(engine: Dockerd, registry: Registry, unique: str,
                                       containers: list[str], tmp_path: Path) -> None:
    """After a push, the container of the same name runs the new image; a second pass
    changes nothing."""
    image = f"{registry.host}/app/{unique}:latest"
    images.release(engine.client, image, "1")
    start(engine, image, unique, ENABLED, containers)
    old_id, old_image, _ = image_of(engine, unique)
    new_digest = images.release(engine.client, image, "2", keep_local=False)

    code, items = update(engine, tmp_path, unique)

    assert code == 0 and items[unique]["outcome"] == "updated"
    assert items[unique]["new_digest"] == new_digest
    container_id, running_image, running = image_of(engine, unique)
    assert running and container_id != old_id and running_image != old_image
    assert running_image == image_id(engine, f"{registry.host}/app/{unique}@{new_digest}")
    assert image_id(engine, image) == running_image  # the tag moved, as a pull would do
    names = {c.name for c in engine.client.containers.list(all=True)}
    assert f"{unique}-updater-old" not in names and f"{unique}-updater-new" not in names

    code, items = update(engine, tmp_path, unique)
    assert code == 0 and items[unique]["outcome"] == "up-to-date"
    assert image_of(engine, unique)[0] == container_id


@pytest.mark.matrix
@pytest.mark.parametrize(("case", "cmd", "extra"), [
    ("exits", '["sh", "-c", "exit 3"]', ""),
    ("unhealthy", images.SLEEPER, "HEALTHCHECK --interval=1s --timeout=1s --retries=2 CMD false"),
])
def test_failed_new_container_is_rolled_back(engine: Dockerd, registry: Registry, unique: str,
                                             containers: list[str], tmp_path: Path, case: str,
                                             cmd: str, extra: str) -> None:
    """A new image that exits at once, or never becomes healthy, ends with the old container
    running again under its name on its old image, reported rolled-back, exit 1."""
    image = f"{registry.host}/broken/{unique}:latest"
    images.release(engine.client, image, "1")
    start(engine, image, unique, {**ENABLED, "updater.health-timeout": "20s"}, containers)
    old_id, old_image, _ = image_of(engine, unique)
    images.release(engine.client, image, "2", cmd=cmd, extra=extra, keep_local=False)

    code, items = update(engine, tmp_path, unique)

    assert code == 1
    assert items[unique]["outcome"] == "rolled-back", items[unique]
    assert ("exit code 3" if case == "exits" else "unhealthy") in items[unique]["reason"]
    assert image_of(engine, unique) == (old_id, old_image, True)
    leftovers = {c.name for c in engine.client.containers.list(all=True)} & {
        f"{unique}-updater-old", f"{unique}-updater-new"}
    assert leftovers == set()
    if case == "exits":
        # A pass over everything holds the known-bad image back instead of restarting the
        # container again; asking for it by name tries again.
        _, items = update(engine, tmp_path)
        assert items[unique]["outcome"] == "held-back"
        assert "held back" in items[unique]["reason"]
        assert image_of(engine, unique) == (old_id, old_image, True)
        # `check` and `pending` say so too, as update does.
        waiting = run_updater(["pending", "--json"], engine, tmp_path,
                              {"state_dir": str(tmp_path / "state")})
        assert [(r["name"], r["waiting"]) for r in json.loads(waiting.stdout)] == [
            (unique, items[unique]["reason"])], waiting.stderr
        code, items = update(engine, tmp_path, unique)
        assert (code, items[unique]["outcome"]) == (1, "rolled-back")


def test_monitor_only_pulls_nothing(engine: Dockerd, registry: Registry, unique: str,
                                    containers: list[str], tmp_path: Path) -> None:
    """monitor_only (global or per label) reports the update and changes and pulls nothing."""
    image = f"{registry.host}/watch/{unique}:latest"
    images.release(engine.client, image, "1")
    start(engine, image, f"{unique}-global", ENABLED, containers)
    start(engine, image, f"{unique}-label", {**ENABLED, "updater.monitor-only": "true"},
          containers)
    before = {name: image_of(engine, name) for name in containers}
    new_digest = images.release(engine.client, image, "2", keep_local=False)

    _, items = update(engine, tmp_path, f"{unique}-label")
    _, more = update(engine, tmp_path, f"{unique}-global", settings={"monitor_only": True})
    items.update(more)

    assert {items[name]["outcome"] for name in containers} == {"update-available"}
    assert {name: image_of(engine, name) for name in containers} == before
    pulled = [i for i in engine.client.images.list() if f"/watch/{unique}@{new_digest}" in
              " ".join(i.attrs.get("RepoDigests") or ())]
    assert pulled == []


def test_bad_label_is_reported_and_the_pass_goes_on(engine: Dockerd, registry: Registry,
                                                     unique: str, containers: list[str],
                                                     tmp_path: Path) -> None:
    """`updater.stop-timeout=soon` is reported for that container; the other is updated."""
    image = f"{registry.host}/labels/{unique}:latest"
    images.release(engine.client, image, "1")
    start(engine, image, f"{unique}-bad", {**ENABLED, "updater.stop-timeout": "soon"}, containers)
    start(engine, image, f"{unique}-good", ENABLED, containers)
    bad_before = image_of(engine, f"{unique}-bad")
    images.release(engine.client, image, "2", keep_local=False)

    code, items = update(engine, tmp_path, *containers)

    assert code == 0
    assert items[f"{unique}-bad"]["outcome"] == "error"
    assert "updater.stop-timeout='soon'" in items[f"{unique}-bad"]["reason"]
    assert image_of(engine, f"{unique}-bad") == bad_before
    assert items[f"{unique}-good"]["outcome"] == "updated"
