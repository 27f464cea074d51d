"""Safety of a standalone update: graceful stop, crash at every step, hooks, order."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from harness import images
from harness.dockerd import Dockerd
from harness.registry import Registry
from tests.integration.helpers import ENABLED, run_updater, start, updater_env
from tests.integration.test_update import image_of, update

pytestmark = [pytest.mark.engine]
SLOW_STOP = ('["sh", "-c", "trap \'sleep 15; echo complete > /out/done; exit 0\' TERM; '
             'while :; do sleep 1; done"]')
KILL_STEPS = ["creating", "created", "stopping", "stopped", "renaming", "renamed", "starting",
              "started", "verified"]


def _events(engine: Dockerd, since: float, kind: str, container: str) -> list[dict[str, Any]]:
    """Engine events of `kind` for `container` from `since` (seconds) on."""
    found = engine.client.events(since=int(since) - 1, until=int(time.time()) + 1, decode=True,
                                 filters={"type": "container", "event": kind,
                                          "container": container})
    return [event for event in found if int(event["timeNano"]) >= since * 1e9]


@pytest.mark.slow
def test_graceful_stop_honours_the_stop_timeout_label(engine: Dockerd, registry: Registry,
                                                       unique: str, containers: list[str],
                                                       tmp_path: Path, root: Path) -> None:
    """A container needing 15 s to shut down, labelled stop-timeout=30s, exits 0 (not killed)
    and the file it writes on shutdown is complete."""
    image = f"{registry.host}/slow/{unique}:latest"
    images.release(engine.client, image, "1", cmd=SLOW_STOP)
    out = root / f"out-{unique}"
    out.mkdir()
    containers.append(unique)
    engine.client.containers.run(image, name=unique, detach=True,
                                 labels={**ENABLED, "updater.stop-timeout": "30s"},
                                 volumes={str(out): {"bind": "/out", "mode": "rw"}})
    old_id = image_of(engine, unique)[0]
    images.release(engine.client, image, "2", cmd=SLOW_STOP, keep_local=False)
    started = time.time()

    code, items = update(engine, tmp_path, unique)

    assert code == 0 and items[unique]["outcome"] == "updated"
    assert items[unique]["seconds"] >= 15
    deaths = _events(engine, started, "die", old_id)
    assert [event["Actor"]["Attributes"]["exitCode"] for event in deaths] == ["0"]
    assert (out / "done").read_text() == "complete\n"


@pytest.mark.slow
def test_killed_at_every_step_leaves_the_container_running(
        engine: Dockerd, registry: Registry, unique: str, containers: list[str],
        tmp_path: Path) -> None:
    """SIGKILL right after each journalled step; after a restart the container exists under
    its name, runs, on the old image (undone) or the new one (finished)."""
    image = f"{registry.host}/crash/{unique}:latest"
    images.release(engine.client, image, "1")
    start(engine, image, unique, ENABLED, containers)
    old_image = image_of(engine, unique)[1]
    images.release(engine.client, image, "2", keep_local=False)
    settings = {"state_dir": str(tmp_path / "state")}
    for step in KILL_STEPS:
        killed = subprocess.run(
            [sys.executable, "-m", "tests.integration.kill_driver", step, unique],
            env=updater_env(engine.host, tmp_path, settings), capture_output=True, text=True,
            timeout=120, check=False)
        assert killed.returncode == -9, (step, killed.stderr)

        recovery = run_updater(["update", "--json", "--monitor-only", unique], engine, tmp_path,
                               settings)
        assert recovery.returncode == 0, (step, recovery.stderr)
        assert '"recovered"' in recovery.stdout, (step, recovery.stdout)
        _, running_image, running = image_of(engine, unique)
        assert running, step
        expected = old_image if step != "verified" else running_image
        assert running_image == expected, step
        names = {c.name for c in engine.client.containers.list(all=True)}
        assert not names & {f"{unique}-updater-old", f"{unique}-updater-new"}, step
    assert image_of(engine, unique)[1] != old_image  # the last kill came after verification


def test_pre_update_hook_failure_skips_and_post_update_hook_runs(
        engine: Dockerd, registry: Registry, unique: str, containers: list[str],
        tmp_path: Path) -> None:
    """A pre-update hook exiting non-zero prevents the update; a post-update hook runs in the
    new container."""
    image = f"{registry.host}/hooks/{unique}:latest"
    images.release(engine.client, image, "1")
    start(engine, image, f"{unique}-veto", {**ENABLED, "updater.hook.pre-update": "exit 7"},
          containers)
    start(engine, image, f"{unique}-post",
          {**ENABLED, "com.centurylinklabs.watchtower.lifecycle.post-update":
           "echo ran > /post-update-ran"}, containers)
    veto_before = image_of(engine, f"{unique}-veto")
    images.release(engine.client, image, "2", keep_local=False)

    _, items = update(engine, tmp_path, *containers)

    assert items[f"{unique}-veto"]["outcome"] == "skipped"
    assert "pre-update hook exited with code 7" in items[f"{unique}-veto"]["reason"]
    assert image_of(engine, f"{unique}-veto") == veto_before
    assert f"{unique}-veto-updater-new" not in {c.name for c in
                                                 engine.client.containers.list(all=True)}
    assert items[f"{unique}-post"]["outcome"] == "updated"
    ran = engine.client.containers.get(f"{unique}-post").exec_run(["cat", "/post-update-ran"])
    assert ran.output == b"ran\n"


def test_dependants_stop_first_and_start_last(engine: Dockerd, registry: Registry, unique: str,
                                              containers: list[str], tmp_path: Path) -> None:
    """With b depends-on a, b is stopped before a and started after the new a."""
    image_a = f"{registry.host}/order/{unique}-a:latest"
    image_b = f"{registry.host}/order/{unique}-b:latest"
    images.release(engine.client, image_a, "1")
    images.release(engine.client, image_b, "1")
    start(engine, image_a, f"{unique}-a", ENABLED, containers)
    start(engine, image_b, f"{unique}-b", {**ENABLED, "updater.depends-on": f"{unique}-a"},
          containers)
    old_a, _, _ = image_of(engine, f"{unique}-a")
    b_id = image_of(engine, f"{unique}-b")[0]
    images.release(engine.client, image_a, "2", keep_local=False)
    since = time.time()

    _, items = update(engine, tmp_path, *containers)

    assert items[f"{unique}-a"]["outcome"] == "updated"
    assert items[f"{unique}-b"]["outcome"] == "up-to-date"
    new_a, _, running_a = image_of(engine, f"{unique}-a")
    assert image_of(engine, f"{unique}-b")[2] and running_a

    def when(kind: str, container: str) -> int:
        [event] = _events(engine, since, kind, container)
        return int(event["timeNano"])

    assert when("die", b_id) < when("die", old_a)
    assert when("start", new_a) < when("start", b_id)


def test_container_sharing_the_network_of_an_updated_one_is_recreated(
        engine: Dockerd, registry: Registry, unique: str, containers: list[str],
        tmp_path: Path) -> None:
    """A dependant in `network_mode: container:a` is recreated to join the new a, running."""
    image = f"{registry.host}/netns/{unique}:latest"
    images.release(engine.client, image, "1")
    start(engine, image, f"{unique}-a", ENABLED, containers)
    containers.append(f"{unique}-b")
    engine.client.containers.run(image, name=f"{unique}-b", detach=True,
                                 network_mode=f"container:{unique}-a")
    images.release(engine.client, image, "2", keep_local=False)

    _, items = update(engine, tmp_path, f"{unique}-a")

    assert items[f"{unique}-a"]["outcome"] == "updated"
    new_a = image_of(engine, f"{unique}-a")[0]
    b = engine.client.api.inspect_container(f"{unique}-b")
    assert b["State"]["Running"]
    assert b["HostConfig"]["NetworkMode"] in (f"container:{new_a}", f"container:{unique}-a")
