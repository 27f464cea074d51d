"""Push-triggered updates against a real distribution registry configured to notify a real
`updater run` (`interval: 1h`): a `docker push` starts the update within seconds; a burst of
ten pushes is one pass; pulls and blob events cause none; a wrong token is refused."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness import images
from harness.dockerd import Dockerd
from harness.procs import free_port
from harness.registry import Registry
from tests.integration.helpers import ENABLED, start, start_daemon, wait_until

pytestmark = [pytest.mark.engine, pytest.mark.slow]
TOKEN, HOOK = "api-token-0123456789", "hook-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def notifying(tmp_path: Path) -> Iterator[tuple[Registry, int]]:
    """A registry that posts its events to the updater's API on `port` (started later)."""
    port = free_port()
    registry = Registry(tmp_path / "registry", notify=(
        f"http://127.0.0.1:{port}/v1/hooks/registry?token={HOOK}")).start()
    try:
        yield registry, port
    finally:
        registry.stop()


def _answers(base: str) -> bool:
    try:
        return httpx.get(f"{base}/v1/health", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _status(base: str) -> dict[str, Any]:
    return dict(httpx.get(f"{base}/v1/status", headers=AUTH, timeout=10).json())


def test_a_push_updates_within_seconds_and_a_burst_is_one_pass(
        engine: Dockerd, notifying: tuple[Registry, int], unique: str, containers: list[str],
        tmp_path: Path) -> None:
    registry, port = notifying
    image = f"{registry.host}/hooked/{unique}:latest"
    images.release(engine.client, image, "1")
    start(engine, image, unique, ENABLED, containers)
    start(engine, f"{registry.host}/hooked/{unique}:latest", f"{unique}-twin", ENABLED,
          containers)
    other = f"{registry.host}/hooked/{unique}:other"
    images.release(engine.client, other, "1")
    start(engine, other, f"{unique}-other", ENABLED, containers)
    daemon = start_daemon(engine, tmp_path, {
        "interval": "1h", "state_dir": str(tmp_path / "state"), "webhook_token": HOOK,
        "http_api": {"listen": f"127.0.0.1:{port}", "token": TOKEN}})
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(base), 60, lambda: "the API never answered")
        refused = httpx.post(f"{base}/v1/hooks/registry", params={"token": "wrong"},
                             json={"image": image}, timeout=10)
        # The registry retries the events it could not deliver before the updater listened
        # (the releases above): their pass, if any, comes first.
        time.sleep(5)
        wait_until(lambda: not _status(base)["running"], 120, lambda: "a pass never ended")
        settled = _status(base)["passes"]
        # A pull (its events, and the blob events of a push) causes no pass.
        engine.client.images.pull(other)
        time.sleep(4)
        pulled = _status(base)["passes"]

        second = images.release(engine.client, image, "2", keep_local=False)
        pushed = time.monotonic()
        wait_until(lambda: _status(base)["passes"] > settled or _status(base)["running"], 15,
                   lambda: "no pass after the push")
        started = time.monotonic() - pushed
        wait_until(lambda: _status(base)["passes"] == settled + 1, 120,
                   lambda: "the pass did not end")
        items = {i["name"]: i for i in _status(base)["last_pass"]["items"]}
        # Only the items on the pushed tag were looked at, and updated.
        assert sorted(items) == sorted([unique, f"{unique}-twin"])
        assert {i["outcome"] for i in items.values()} == {"updated"}
        assert engine.client.containers.get(unique).attrs["Image"] == engine.client.images.get(
            f"{registry.host}/hooked/{unique}@{second}").id

        # A burst: ten releases built first, then pushed one after another.
        repository = image.rsplit(":", 1)[0]
        built = [images.build(engine.client, f"{repository}:burst{n}", f"3.{n}")
                 for n in range(10)]
        burst_started = time.monotonic()
        for image_id in built:
            engine.client.api.tag(image_id, repository, "latest", force=True)
            last = images.push(engine.client, image)
        burst = time.monotonic() - burst_started
        wait_until(lambda: _status(base)["passes"] >= settled + 2
                   and not _status(base)["running"], 120, lambda: "no pass after the burst")
        time.sleep(4)  # longer than the quiet period: a second pass would have started
        after = _status(base)
    finally:
        daemon.terminate()
        output, _ = daemon.communicate(timeout=60)
    print(f"pass started {started:.1f} s after the push; burst of 10 pushes in {burst:.1f} s")
    assert refused.status_code == 401
    assert pulled == settled, output
    assert started < 5, output
    assert after["passes"] == settled + 2, output
    assert engine.client.containers.get(unique).attrs["Image"] == engine.client.images.get(
        f"{registry.host}/hooked/{unique}@{last}").id
    assert HOOK not in output and TOKEN not in output


def test_a_resent_push_of_a_rolled_back_image_is_held_back(
        engine: Dockerd, notifying: tuple[Registry, int], unique: str, containers: list[str],
        tmp_path: Path) -> None:
    """A pushed image that crashes is rolled back once; the same image pushed again (or the
    notification re-sent) brings a pass that holds it back instead of restarting the container
    on it again."""
    registry, port = notifying
    image = f"{registry.host}/crash/{unique}:latest"
    images.release(engine.client, image, "1")
    start(engine, image, unique, {**ENABLED, "updater.health-timeout": "10s"}, containers)
    before = engine.client.containers.get(unique).id
    daemon = start_daemon(engine, tmp_path, {
        "interval": "1h", "state_dir": str(tmp_path / "state"), "webhook_token": HOOK,
        "http_api": {"listen": f"127.0.0.1:{port}", "token": TOKEN}})
    base = f"http://127.0.0.1:{port}"

    def outcomes() -> list[str]:
        entries = httpx.get(f"{base}/v1/history", params={"name": unique}, headers=AUTH,
                            timeout=10).json()
        return [e["outcome"] for e in entries]

    try:
        wait_until(lambda: _answers(base), 60, lambda: "the API never answered")
        time.sleep(5)  # the registry's retried events of the release above
        wait_until(lambda: not _status(base)["running"], 120, lambda: "a pass never ended")
        images.release(engine.client, image, "2", cmd='["sh", "-c", "exit 3"]')
        wait_until(lambda: outcomes()[:1] == ["rolled-back"], 120,
                   lambda: f"not rolled back: {outcomes()}")
        passes = _status(base)["passes"]
        images.push(engine.client, image)  # the same image again
        wait_until(lambda: _status(base)["passes"] > passes and not _status(base)["running"],
                   60, lambda: "no pass after the second push")
        last = {i["name"]: i for i in _status(base)["last_pass"]["items"]}[unique]
        history = outcomes()
    finally:
        daemon.terminate()
        output, _ = daemon.communicate(timeout=60)
    assert last["outcome"] == "held-back", output
    assert history.count("rolled-back") == 1, output
    assert engine.client.containers.get(unique).id == before
