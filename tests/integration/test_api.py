"""The HTTP API of a real `updater run`: under a flood of idle and slow connections (closed
after the request deadline, health answering throughout, the daemon's threads and file
descriptors back where they were); named triggers for names that are not watched; a failed
pass in the status."""

from __future__ import annotations

import contextlib
import os
import select
import socket
import time
from pathlib import Path

import httpx
import pytest

from harness import images
from harness.dockerd import Dockerd
from harness.procs import free_port
from harness.registry import Registry
from tests.integration.helpers import ENABLED, run_updater, start, start_daemon, wait_until
from updater.serve.http import MAX_CONNECTIONS, REQUEST_DEADLINE

pytestmark = [pytest.mark.engine]
CONNECTIONS = 500
TOKEN = "api-token-1234567890"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no thread count")


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _closed_by_server(connection: socket.socket) -> bool:
    """True once the server has closed it (EOF or reset), without waiting."""
    readable, _, _ = select.select([connection], [], [], 0)
    if not readable:
        return False
    try:
        return connection.recv(65536) == b"" or True  # an answer then EOF counts as closed
    except OSError:
        return True


@pytest.mark.slow
def test_idle_and_slow_connections_are_closed_and_health_answers(
        engine: Dockerd, tmp_path: Path) -> None:
    """500 connections, half idle, half dripping a header byte a second: health answers every
    time meanwhile; all 500 are closed within the request deadline (plus a margin); the
    daemon's threads stay under the cap and its threads and fds return to their baseline."""
    port = free_port()
    daemon = start_daemon(engine, tmp_path, {
        "interval": "1h", "state_dir": str(tmp_path / "state"),
        "http_api": {"listen": f"127.0.0.1:{port}", "token": TOKEN}})
    health = f"http://127.0.0.1:{port}/v1/health"
    sockets: list[socket.socket] = []
    try:
        wait_until(lambda: _answers(health), 60, lambda: "the API never answered")
        time.sleep(1)  # the start-up recovery pass is over
        threads, fds = _threads(daemon.pid), _fds(daemon.pid)
        started = time.monotonic()
        for index in range(CONNECTIONS):
            connection = socket.create_connection(("127.0.0.1", port), timeout=5)
            if index % 2:
                connection.sendall(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n")
            sockets.append(connection)
        opened = time.monotonic() - started
        peak, slowest = _threads(daemon.pid), 0.0
        while time.monotonic() - started < REQUEST_DEADLINE + 5:  # bounded: ~15 s
            for connection in sockets[1::2]:
                with contextlib.suppress(OSError):  # already closed by the server
                    connection.send(b"X")
            asked = time.monotonic()
            assert _answers(health), "health did not answer during the flood"
            slowest = max(slowest, time.monotonic() - asked)
            peak = max(peak, _threads(daemon.pid))
            if all(_closed_by_server(c) for c in sockets):
                break
            time.sleep(0.5)
        closed_after = time.monotonic() - started - opened
        open_left = [c for c in sockets if not _closed_by_server(c)]
        wait_until(lambda: _threads(daemon.pid) <= threads and _fds(daemon.pid) <= fds + 2,
                   10, lambda: f"threads {_threads(daemon.pid)}/{threads}, "
                               f"fds {_fds(daemon.pid)}/{fds}")
    finally:
        for connection in sockets:
            connection.close()
        daemon.kill()
        daemon.communicate(timeout=30)
    print(f"baseline {threads} threads {fds} fds; peak {peak} threads; slowest health "
          f"{slowest * 1000:.0f} ms; {CONNECTIONS} opened in {opened:.1f}s, all closed "
          f"{closed_after:.1f}s after the last")
    assert not open_left, f"{len(open_left)} connections still open"
    assert closed_after <= REQUEST_DEADLINE + 2
    assert peak <= threads + MAX_CONNECTIONS + 2
    assert slowest < 1.0


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_named_trigger_for_an_unwatched_name_is_404(engine: Dockerd, registry: Registry,
                                                    unique: str, containers: list[str],
                                                    tmp_path: Path) -> None:
    """`POST /v1/update?name=` for a watched container is queued (202); for a name that is
    not watched it is refused with 404 naming it, and no pass is queued."""
    image = f"{registry.host}/api/{unique}:latest"
    images.release(engine.client, image, "1")
    start(engine, image, unique, ENABLED, containers)
    port = free_port()
    daemon = start_daemon(engine, tmp_path, {
        "interval": "1h", "state_dir": str(tmp_path / "state"),
        "http_api": {"listen": f"127.0.0.1:{port}", "token": TOKEN}})
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(f"{base}/v1/health"), 60, lambda: "the API never answered")
        bogus = httpx.post(f"{base}/v1/update", params={"name": f"{unique}-bogus"},
                           headers=AUTH, timeout=10)
        passes = httpx.get(f"{base}/v1/status", headers=AUTH, timeout=10).json()["passes"]
        time.sleep(1)
        after = httpx.get(f"{base}/v1/status", headers=AUTH, timeout=10).json()["passes"]
        known = httpx.post(f"{base}/v1/update", params={"name": unique}, headers=AUTH,
                           timeout=10)
    finally:
        daemon.kill()
        daemon.communicate(timeout=30)
    assert bogus.status_code == 404 and f"{unique}-bogus" in bogus.json()["error"]
    assert after == passes
    assert known.status_code == 202


def test_status_shows_a_failed_pass(engine: Dockerd, tmp_path: Path) -> None:
    """A pass that fails as a whole (no engine at the socket) is in `/v1/status` with its
    error; a named trigger that cannot be checked is 503, not queued blindly."""
    port = free_port()
    missing = tmp_path / "no-such-docker.sock"
    daemon = start_daemon(engine, tmp_path, {
        "interval": "1h", "update_on_start": True, "state_dir": str(tmp_path / "state"),
        "http_api": {"listen": f"127.0.0.1:{port}", "token": TOKEN}},
        {"DOCKER_HOST": f"unix://{missing}"})
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(f"{base}/v1/health") and httpx.get(
            f"{base}/v1/status", headers=AUTH, timeout=10).json().get("last_error"),
            60, lambda: "no failed pass in the status")
        status = httpx.get(f"{base}/v1/status", headers=AUTH, timeout=10).json()
        named = httpx.post(f"{base}/v1/update", params={"name": "x"}, headers=AUTH, timeout=10)
    finally:
        daemon.kill()
        daemon.communicate(timeout=30)
    assert str(missing) in status["last_error"]
    assert named.status_code == 503


def test_rollback_through_the_api_runs_in_the_daemon(engine: Dockerd, registry: Registry,
                                                     unique: str, containers: list[str],
                                                     tmp_path: Path) -> None:
    """`POST /v1/rollback?name=` on a running daemon: 409 before any update (nothing to go
    back to); after the daemon's update, 202 naming the image, and the daemon's loop puts the
    container back on the old image without moving its next pass; in the history."""
    image = f"{registry.host}/api-undo/{unique}:latest"
    images.release(engine.client, image, "1")
    old_id = engine.client.images.get(image).id
    start(engine, image, unique, ENABLED, containers)
    port = free_port()
    daemon = start_daemon(engine, tmp_path, {
        "interval": "1h", "state_dir": str(tmp_path / "state"),
        "http_api": {"listen": f"127.0.0.1:{port}", "token": TOKEN}})
    base = f"http://127.0.0.1:{port}"

    def post(path: str) -> httpx.Response:
        return httpx.post(f"{base}{path}", params={"name": unique}, headers=AUTH, timeout=30)

    try:
        wait_until(lambda: _answers(f"{base}/v1/health"), 60, lambda: "the API never answered")
        early = post("/v1/rollback")
        images.release(engine.client, image, "2", keep_local=False)
        assert post("/v1/update").status_code == 202
        wait_until(lambda: _newest(base, unique) == "updated", 120,
                   lambda: "the daemon did not update the container")
        passes = httpx.get(f"{base}/v1/status", headers=AUTH, timeout=10).json()["passes"]
        beside = run_updater(["rollback", unique], engine, tmp_path / "cli",
                             {"state_dir": str(tmp_path / "state")})
        queued = post("/v1/rollback")
        wait_until(lambda: engine.client.containers.get(unique).attrs["Image"] == old_id, 120,
                   lambda: "the daemon did not roll the container back")
        wait_until(lambda: _newest(base, unique) == "undone", 30,
                   lambda: "no undone entry in the history")
        after = httpx.get(f"{base}/v1/status", headers=AUTH, timeout=10).json()["passes"]
    finally:
        daemon.kill()
        daemon.communicate(timeout=30)
    assert early.status_code == 409 and "nothing to roll back" in early.json()["error"]
    assert (queued.status_code, queued.json()) == (202, {"queued": True, "name": unique,
                                                         "to": image})
    assert after == passes  # the rollback was no pass
    # The command beside the daemon cannot take the state lock: it says to ask the API.
    assert beside.returncode == 2 and f"POST /v1/rollback?name={unique}" in beside.stderr


def _newest(base: str, name: str) -> str | None:
    """The outcome of the newest history entry of `name`."""
    entries = httpx.get(f"{base}/v1/history", params={"name": name}, headers=AUTH,
                        timeout=10).json()
    return entries[0]["outcome"] if entries else None
