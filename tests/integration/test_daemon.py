"""`updater run`: the loop updates on its schedule, finishes the update in flight on SIGTERM,
and never runs beside another updater on the same state."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from harness import images
from harness.dockerd import Dockerd
from harness.registry import Registry
from tests.integration.helpers import ENABLED, run_updater, start_daemon
from tests.integration.test_update import image_of

pytestmark = [pytest.mark.engine]
STOPS_IN_5S = ('["sh", "-c", "trap \'sleep 5; exit 0\' TERM; while :; do sleep 1; done"]')


def _wait_for(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} did not happen within {timeout}s")


@pytest.mark.matrix
@pytest.mark.slow
def test_sigterm_finishes_the_update_in_flight(engine: Dockerd, registry: Registry, unique: str,
                                               containers: list[str], tmp_path: Path) -> None:
    """SIGTERM while a container is being stopped: the update completes, the daemon exits 0,
    and a second updater on the same state_dir was refused meanwhile."""
    image = f"{registry.host}/daemon/{unique}:latest"
    images.release(engine.client, image, "1", cmd=STOPS_IN_5S)
    containers.append(unique)
    engine.client.containers.run(image, name=unique, detach=True, labels=ENABLED)
    old_id, old_image, _ = image_of(engine, unique)
    images.release(engine.client, image, "2", cmd=STOPS_IN_5S, keep_local=False)
    state = str(tmp_path / "state")
    daemon = start_daemon(engine, tmp_path, {"update_on_start": True, "interval": "1h",
                                        "state_dir": state})
    try:
        # The old container has just been sent SIGTERM (the stream ends, empty, after 60 s).
        stopping = engine.client.events(decode=True, until=int(time.time()) + 60,
                                        filters={"container": old_id, "event": "kill"})
        killed = next(iter(stopping), None)
        stopping.close()
        assert killed is not None, f"no stop of the old container within 60 s: {_output(daemon)}"
        second = run_updater(["update"], engine, tmp_path, {"state_dir": state})
        daemon.send_signal(signal.SIGTERM)
        output, _ = daemon.communicate(timeout=60)
    finally:
        if daemon.poll() is None:
            daemon.kill()
    assert daemon.returncode == 0, output
    assert second.returncode == 2 and "another updater is running" in second.stderr
    container_id, running_image, running = image_of(engine, unique)
    assert running and container_id != old_id and running_image != old_image
    assert f"report: {unique} updated" in output


def _output(daemon: subprocess.Popen[str]) -> str:
    """What the daemon wrote, once it is stopped."""
    daemon.kill()
    return daemon.communicate(timeout=30)[0]


def test_interval_loop_picks_up_a_later_push(engine: Dockerd, registry: Registry, unique: str,
                                             containers: list[str], tmp_path: Path) -> None:
    """With a short interval, a push made while the daemon runs is applied by a later pass."""
    image = f"{registry.host}/loop/{unique}:latest"
    images.release(engine.client, image, "1")
    containers.append(unique)
    engine.client.containers.run(image, name=unique, detach=True, labels=ENABLED)
    old_image = image_of(engine, unique)[1]
    daemon = start_daemon(engine, tmp_path,
                          {"interval": "1s", "state_dir": str(tmp_path / "state")})
    try:
        time.sleep(1.5)
        images.release(engine.client, image, "2", keep_local=False)
        _wait_for(lambda: image_of(engine, unique)[1] != old_image, 60, "the update")
        daemon.send_signal(signal.SIGINT)
        output, _ = daemon.communicate(timeout=30)
    finally:
        if daemon.poll() is None:
            daemon.kill()
    assert daemon.returncode == 0, output
    assert image_of(engine, unique)[2]


@pytest.mark.slow
def test_named_triggers_never_postpone_the_full_pass(engine: Dockerd, registry: Registry,
                                                     unique: str, containers: list[str],
                                                     tmp_path: Path) -> None:
    """`POST /v1/update?name=a` every 2 s with a 10 s interval: `b` is still updated by the
    full pass when it is due (it used to wait until the triggers stopped)."""
    import httpx

    from harness.procs import free_port
    from tests.integration.helpers import start, wait_until

    a, b = f"{unique}-a", f"{unique}-b"
    for name in (a, b):
        images.release(engine.client, f"{registry.host}/named/{name}:1", "1")
        start(engine, f"{registry.host}/named/{name}:1", name, ENABLED, containers)
    _, old_b, _ = image_of(engine, b)
    port, token = free_port(), "named-token-0123456789"
    daemon = start_daemon(engine, tmp_path, {
        "interval": "10s", "state_dir": str(tmp_path / "state"),
        "http_api": {"listen": f"127.0.0.1:{port}", "token": token}})
    headers = {"Authorization": f"Bearer {token}"}
    try:
        wait_until(lambda: _answers(f"http://127.0.0.1:{port}/v1/health"), 30,
                   lambda: "the API")
        images.release(engine.client, f"{registry.host}/named/{b}:1", "2", keep_local=False)
        started = time.monotonic()
        while _image(engine, b) in (None, old_b) and time.monotonic() - started < 40:
            answer = httpx.post(f"http://127.0.0.1:{port}/v1/update", params={"name": a},
                                headers=headers, timeout=5)
            assert answer.status_code == 202, answer.text
            time.sleep(2)
        waited = time.monotonic() - started
    finally:
        daemon.send_signal(signal.SIGTERM)
        output, _ = daemon.communicate(timeout=60)
    assert image_of(engine, b)[1] != old_b, output[-3000:]
    assert waited < 25, f"b updated after {waited:.0f}s of triggers"
    assert daemon.returncode == 0 and "Traceback" not in output
    print(f"\nb updated {waited:.1f}s into the named triggers (interval 10s)")


def _image(engine: Dockerd, name: str) -> str | None:
    """The image ID of the container called `name`; None while there is none (mid-rename)."""
    import docker.errors

    try:
        return image_of(engine, name)[1]
    except docker.errors.NotFound:
        return None


def _answers(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False
