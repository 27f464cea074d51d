"""Update policies against a real registry and engine. Version tags (`updater.tags=semver`): a
repository with versions, a suffixed version, a pre-release, `latest` and 150 filler tags;
containers move to the newest tag their rules allow, keeping their name and configuration,
for one tag listing per repository per pass. Minimum age and update windows: an available
update waits, pulling nothing, and is applied once allowed."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from harness import images
from harness.dockerd import Dockerd
from harness.registry import Registry
from tests.integration.helpers import ENABLED, run_updater

pytestmark = [pytest.mark.engine, pytest.mark.slow]

VERSIONS = ["1.2.3", "1.2.4", "1.3.0", "1.3.0-alpine", "1.10.0", "2.0.0", "2.1.0-rc1"]
SEMVER = {**ENABLED, "updater.tags": "semver"}
# name: (tag it runs, its labels, the tag it moves to; None: it stays)
CONTAINERS = {
    "major": ("1.2.3", SEMVER, "1.10.0"),
    "minor": ("1.2.3", {**SEMVER, "updater.tags.within": "minor"}, "1.2.4"),
    "any": ("1.2.3", {**SEMVER, "updater.tags.within": "none"}, "2.0.0"),
    "alpine": ("1.3.0-alpine", SEMVER, None),
    "include": ("1.2.3", {**SEMVER, "updater.tags.include": r"1\.2\..*"}, "1.2.4"),
    "exclude": ("1.2.3", {**SEMVER, "updater.tags.exclude": r"1\.10\..*"}, "1.3.0"),
    "digest": ("1.2.3", ENABLED, None),
}


def _publish(engine: Dockerd, registry: Registry, repository: str) -> None:
    for version in VERSIONS:
        images.release(engine.client, f"{registry.host}/{repository}:{version}", version)
    images.retag_in_registry(registry.host, repository, "2.0.0", "latest")
    for number in range(150):
        images.retag_in_registry(registry.host, repository, "1.2.3", f"build-{number}")


@pytest.mark.matrix
def test_containers_move_to_the_newest_version_their_rules_allow(
        engine: Dockerd, registry: Registry, unique: str, containers: list[str],
        tmp_path: Path) -> None:
    repository = f"tags/{unique}"
    _publish(engine, registry, repository)
    before = {}
    for name, (tag, labels, _) in CONTAINERS.items():
        containers.append(f"{unique}-{name}")
        container = engine.client.containers.run(
            f"{registry.host}/{repository}:{tag}", name=f"{unique}-{name}", detach=True,
            labels=labels, environment={"KEEP": name}, restart_policy={"Name": "on-failure",
                                                                        "MaximumRetryCount": 3})
        before[name] = container.attrs
    home = tmp_path / "home"
    settings = {"state_dir": str(tmp_path / "state")}

    mark = registry.mark()
    checked = run_updater(["check", "--json"], engine, home, settings)
    assert checked.returncode == 0, checked.stderr
    rows = {row["name"].removeprefix(f"{unique}-"): row for row in json.loads(checked.stdout)}
    served = registry.requests(mark, agent="updater/")
    listings = [r for r in served if "/tags/list" in r.uri]
    heads = sorted(r.uri.rsplit("/", 1)[1] for r in served
                   if r.method == "HEAD" and "/manifests/" in r.uri)

    expected_targets = {name: f"{registry.host}/{repository}:{moved}" if moved else None
                        for name, (_, _, moved) in CONTAINERS.items()}
    assert {name: row["target"] for name, row in rows.items()} == expected_targets
    assert {name: row["state"] for name, row in rows.items()} == {
        name: "update-available" if moved else "up-to-date"
        for name, (_, _, moved) in CONTAINERS.items()}
    assert all(row["waiting"] is None for row in rows.values())
    # One listing of the repository for the whole pass. (This registry, distribution 2.8,
    # sends all 158 tags at once whatever `n` asks; following `Link` pages is unit-tested.)
    assert [r.uri for r in listings] == [f"/v2/{repository}/tags/list?n=100"]
    # One HEAD per reference asked: each target once, and the digest-following container's.
    assert heads == sorted({"1.10.0", "1.2.4", "2.0.0", "1.3.0", "1.3.0-alpine", "1.2.3"})

    updated = run_updater(["update", "--json"], engine, home, settings)
    assert updated.returncode == 0, updated.stderr
    items = {item["name"].removeprefix(f"{unique}-"): item
             for item in json.loads(updated.stdout)["items"]}
    for name, (tag, _, moved) in CONTAINERS.items():
        after = engine.client.containers.get(f"{unique}-{name}").attrs
        want = moved or tag
        assert after["Config"]["Image"] == f"{registry.host}/{repository}:{want}", name
        assert after["Image"] == engine.client.images.get(
            f"{registry.host}/{repository}:{want}").id, name
        assert after["State"]["Running"], name
        assert f"KEEP={name}" in after["Config"]["Env"], name
        assert after["HostConfig"]["RestartPolicy"] == before[name]["HostConfig"][
            "RestartPolicy"], name
        if moved:
            assert items[name]["outcome"] == "updated", items[name]
            assert after["Id"] != before[name]["Id"], name
            assert (items[name]["old_version"], items[name]["new_version"]) == (tag, moved)
        else:
            assert items[name]["outcome"] == "up-to-date", items[name]
            assert after["Id"] == before[name]["Id"], name


def test_a_new_image_waits_for_its_minimum_age_and_nothing_is_pulled_before(
        engine: Dockerd, registry: Registry, unique: str, containers: list[str],
        tmp_path: Path) -> None:
    """`updater.min-age=5s`: the first pass after a push reports `waiting` with when it becomes
    eligible (and `check` shows it as `waiting`), pulls nothing and leaves the container; a
    pass after 5 s of this updater knowing the digest updates it."""
    image = f"{registry.host}/age/{unique}:latest"
    images.release(engine.client, image, "1")
    name = f"{unique}-aged"
    containers.append(name)
    engine.client.containers.run(image, name=name, detach=True,
                                 labels={**ENABLED, "updater.min-age": "5s"})
    before = engine.client.containers.get(name).attrs
    new = images.release(engine.client, image, "2", keep_local=False)
    home, settings = tmp_path / "home", {"state_dir": str(tmp_path / "state")}

    mark = registry.mark()
    first = run_updater(["update", "--json"], engine, home, settings)
    [item] = json.loads(first.stdout)["items"]
    assert (first.returncode, item["outcome"], item["new_digest"]) == (0, "waiting", new)
    assert "minimum age 5s: eligible at" in item["reason"]
    pulled = [r for r in registry.requests(mark) if r.method == "GET" and (
        "/blobs/" in r.uri or ("/manifests/" in r.uri and not r.agent.startswith("updater/")))]
    assert pulled == []  # the engine pulled nothing (the updater may read the new manifest)
    assert engine.client.containers.get(name).attrs["Id"] == before["Id"]
    checked = run_updater(["check", "--json"], engine, home, settings)
    [row] = json.loads(checked.stdout)
    assert row["state"] == "update-available" and row["waiting"] == item["reason"]
    listed = run_updater(["pending", "--json"], engine, home, settings)
    [waits] = [row for row in json.loads(listed.stdout) if row["name"] == name]
    assert (waits["waiting"], waits["remote_digest"]) == (item["reason"], new)

    time.sleep(5.5)
    second = run_updater(["update", "--json"], engine, home, settings)
    [item] = json.loads(second.stdout)["items"]
    assert (second.returncode, item["outcome"]) == (0, "updated"), item
    after = engine.client.containers.get(name).attrs
    assert after["Id"] != before["Id"] and after["State"]["Running"]
    assert after["Image"] == engine.client.images.get(f"{registry.host}/age/{unique}@{new}").id


def test_updates_wait_outside_their_window_and_apply_inside_it(
        engine: Dockerd, registry: Registry, unique: str, containers: list[str],
        tmp_path: Path) -> None:
    """Two containers of one image: one whose window opens on 1 January only waits (with when
    it opens), the other, whose window is open (every minute, for two), is updated."""
    image = f"{registry.host}/window/{unique}:latest"
    images.release(engine.client, image, "1")
    windows = {"closed": "0 0 1 1 *, 1h", "open": "* * * * *, 2m"}
    for name, window in windows.items():
        containers.append(f"{unique}-{name}")
        engine.client.containers.run(image, name=f"{unique}-{name}", detach=True,
                                     labels={**ENABLED, "updater.update-window": window})
    closed_id = engine.client.containers.get(f"{unique}-closed").id
    new = images.release(engine.client, image, "2", keep_local=False)

    result = run_updater(["update", "--json"], engine, tmp_path / "home",
                         {"state_dir": str(tmp_path / "state")})
    items = {item["name"].removeprefix(f"{unique}-"): item
             for item in json.loads(result.stdout)["items"]}
    assert result.returncode == 0, result.stderr
    assert (items["closed"]["outcome"], items["closed"]["new_digest"]) == ("waiting", new)
    assert "update window (0 0 1 1 *, 1h) opens at" in items["closed"]["reason"]
    assert "-01-01 00:00:00" in items["closed"]["reason"]
    assert engine.client.containers.get(f"{unique}-closed").id == closed_id
    assert items["open"]["outcome"] == "updated", items["open"]


def test_an_update_waits_for_its_approval_bound_to_its_digest(
        engine: Dockerd, registry: Registry, unique: str, containers: list[str],
        tmp_path: Path) -> None:
    """`updater.approve=true`: a new digest waits, saying how to approve it; `updater approve
    NAME` approves what it waits for, and the next pass applies it; a newer push waits again
    (the approval was for the other digest); `updater skip` rejects that one for good."""
    image = f"{registry.host}/approve/{unique}:latest"
    images.release(engine.client, image, "1")
    name = f"{unique}-approved"
    containers.append(name)
    engine.client.containers.run(image, name=name, detach=True,
                                 labels={**ENABLED, "updater.approve": "true"})
    home, settings = tmp_path / "home", {"state_dir": str(tmp_path / "state")}

    def update() -> dict[str, object]:
        result = run_updater(["update", "--json"], engine, home, settings)
        assert result.returncode == 0, result.stderr
        [item] = json.loads(result.stdout)["items"]
        return dict(item)

    second = images.release(engine.client, image, "2", keep_local=False)
    waits = update()
    assert (waits["outcome"], waits["reason"]) == (
        "waiting", f"waiting for approval: updater approve {name} --digest {second}")
    listed = json.loads(run_updater(["pending", "--json"], engine, home, settings).stdout)
    assert [(row["name"], row["waiting"]) for row in listed] == [(name, waits["reason"])]
    approved = run_updater(["approve", name], engine, home, settings)
    assert approved.returncode == 0 and second in approved.stdout, approved.stderr
    assert update()["outcome"] == "updated"
    assert engine.client.containers.get(name).attrs["Image"] == engine.client.images.get(
        f"{registry.host}/approve/{unique}@{second}").id

    third = images.release(engine.client, image, "3", keep_local=False)
    assert update()["outcome"] == "waiting"
    skipped = run_updater(["skip", name, "--digest", third], engine, home, settings)
    assert skipped.returncode == 0, skipped.stderr
    held = update()
    assert (held["outcome"], held["new_digest"]) == ("held-back", third)
    assert "rejected with `updater skip`" in str(held["reason"])
    assert engine.client.containers.get(name).attrs["Image"] == engine.client.images.get(
        f"{registry.host}/approve/{unique}@{second}").id
    bad = run_updater(["approve", name, "--digest", "latest"], engine, home, settings)
    assert bad.returncode == 2 and "is not a digest" in bad.stderr
    # Approving what NAME waits for never approves an image nobody saw: not the skipped one,
    # and not one pushed after the last pass reported another.
    again = run_updater(["approve", name], engine, home, settings)
    assert again.returncode == 2 and "was skipped or is not the one reported" in again.stderr
    images.release(engine.client, image, "4", keep_local=False)
    unseen = run_updater(["approve", name], engine, home, settings)
    assert unseen.returncode == 2 and "is not the one reported" in unseen.stderr


@pytest.mark.matrix
def test_rollback_puts_back_the_previous_image_and_holds_the_undone_one(
        engine: Dockerd, registry: Registry, unique: str, containers: list[str],
        tmp_path: Path) -> None:
    """With cleanup on: after an update, `updater rollback NAME` recreates the container on the
    image it ran before (kept by the cleanup), same name and configuration, new ID; the next
    pass holds the undone digest back, a second rollback has nothing to go back to, an
    approval applies it again; the next update lets the image two updates old go."""
    image = f"{registry.host}/undo/{unique}:latest"
    images.release(engine.client, image, "1")
    first_id = engine.client.images.get(image).id
    name = f"{unique}-undone"
    containers.append(name)
    engine.client.containers.run(image, name=name, detach=True, labels=ENABLED,
                                 environment={"KEEP": "me"},
                                 volumes={f"{unique}-data": {"bind": "/data", "mode": "rw"}},
                                 restart_policy={"Name": "always"})
    engine.client.containers.get(name).exec_run(["sh", "-c", "echo kept > /data/row"])
    home, settings = tmp_path / "home", {"state_dir": str(tmp_path / "state"), "cleanup": True}

    def updater(*args: str) -> tuple[int, list[dict[str, object]]]:
        result = run_updater([*args, "--json"], engine, home, settings)
        assert "Traceback" not in result.stderr, result.stderr
        return result.returncode, json.loads(result.stdout)["items"] if result.stdout else []

    second = images.release(engine.client, image, "2", keep_local=False)
    assert [i["outcome"] for i in updater("update")[1]] == ["updated"]
    updated = engine.client.containers.get(name).attrs
    assert first_id in engine.client.api.images(all=True, quiet=True)  # kept, cleanup or not

    code, [undone] = updater("rollback", name)
    assert (code, undone["outcome"], undone["old_digest"]) == (0, "undone", second), undone
    after = engine.client.containers.get(name).attrs
    assert after["Id"] != updated["Id"] and after["Image"] == first_id
    assert after["Config"]["Image"] == image and after["State"]["Running"]
    assert "KEEP=me" in after["Config"]["Env"]
    assert after["HostConfig"]["RestartPolicy"]["Name"] == "always"
    assert engine.client.containers.get(name).exec_run(["cat", "/data/row"]).output == b"kept\n"

    [held] = updater("update")[1]
    assert (held["outcome"], held["new_digest"]) == ("held-back", second), held
    assert "undone with `updater rollback`" in str(held["reason"])
    assert engine.client.containers.get(name).id == after["Id"]
    [row] = json.loads(run_updater(["check", "--json", name], engine, home, settings).stdout)
    assert "undone" in str(row["waiting"]), row
    again = run_updater(["rollback", name], engine, home, settings)
    assert again.returncode == 2 and "nothing to roll back" in again.stderr, again.stderr
    entries = json.loads(run_updater(["history", name, "--json"], engine, home,
                                     settings).stdout)
    assert [e["outcome"] for e in entries[:2]] == ["undone", "updated"]

    approved = run_updater(["approve", name, "--digest", second], engine, home, settings)
    assert approved.returncode == 0, approved.stderr
    assert [i["outcome"] for i in updater("update")[1]] == ["updated"]
    second_id = engine.client.containers.get(name).attrs["Image"]
    images.release(engine.client, image, "3", keep_local=False)
    assert [i["outcome"] for i in updater("update")[1]] == ["updated"]
    present = engine.client.api.images(all=True, quiet=True)
    assert second_id in present and first_id not in present  # keep_images 1: one kept


def test_a_version_tag_move_is_undone_to_the_old_tag(
        engine: Dockerd, registry: Registry, unique: str, containers: list[str],
        tmp_path: Path) -> None:
    """A container moved from `:1.2.3` to `:1.3.0` (`updater.tags=semver`) goes back to
    `:1.2.3` by name; `1.3.0` is then held back. With keep_images 0 and cleanup the image
    left is removed at once, and there is nothing to roll back."""
    names = {"kept": {}, "gone": {"keep_images": 0, "cleanup": True}}
    home = tmp_path / "home"
    for suffix, extra in names.items():
        repository = f"{registry.host}/undo-tags/{unique}-{suffix}"
        for version in ("1.2.3", "1.3.0"):
            images.release(engine.client, f"{repository}:{version}", version)
        old_id = engine.client.images.get(f"{repository}:1.2.3").id
        containers.append(f"{unique}-{suffix}")
        engine.client.containers.run(f"{repository}:1.2.3", name=f"{unique}-{suffix}",
                                     detach=True, labels={**SEMVER, "updater.scope": suffix})
        settings = {"state_dir": str(tmp_path / suffix), "scope": suffix, **extra}
        updated = run_updater(["update"], engine, home, settings)
        assert updated.returncode == 0, updated.stderr
        name = f"{unique}-{suffix}"
        assert engine.client.containers.get(name).attrs["Config"]["Image"] == \
            f"{repository}:1.3.0"
        undone = run_updater(["rollback", name], engine, home, settings)
        if suffix == "gone":
            assert undone.returncode == 2 and "nothing to roll back" in undone.stderr
            assert old_id not in engine.client.api.images(all=True, quiet=True)
            continue
        assert undone.returncode == 0, undone.stderr
        after = engine.client.containers.get(name).attrs
        assert (after["Config"]["Image"], after["Image"]) == (f"{repository}:1.2.3", old_id)
        held = run_updater(["update", "--json"], engine, home, settings)
        [item] = json.loads(held.stdout)["items"]
        assert item["outcome"] == "held-back" and item["target"] == f"{repository}:1.3.0"
