"""What hosts throw at an unattended daemon (issue 19), against a real engine and registry: a
label no timer can hold, a full state disk, a notification sink that never finishes answering,
the engine lost in the middle of an update, a damaged history. In each the daemon stays up, no
container is left stopped, and what is reported is what happened."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import docker.errors
import pytest

from harness import images
from harness.dockerd import Dockerd
from harness.registry import Registry
from harness.sinks import TricklingSink
from tests.integration.helpers import (
    ENABLED,
    run_updater,
    start_daemon,
    updater_env,
    wait_until,
)
from tests.integration.test_engine_restart import _step as journal_step
from tests.integration.test_update import image_of

pytestmark = [pytest.mark.engine]


def _start(engine: Dockerd, image: str, name: str, containers: list[str],
           labels: dict[str, str] | None = None) -> None:
    containers.append(name)
    engine.client.containers.run(image, name=name, detach=True, labels={**ENABLED,
                                                                        **(labels or {})})


def _names(engine: Dockerd, prefix: str) -> dict[str, str]:
    return {str(c["Names"][0]).lstrip("/"): str(c["State"])
            for c in engine.client.api.containers(all=True, filters={"name": prefix})}


def _image(engine: Dockerd, name: str) -> str | None:
    """The image ID of the container called `name`; None while there is none (mid-rename)."""
    try:
        return image_of(engine, name)[1]
    except docker.errors.NotFound:
        return None


def _stop(daemon: subprocess.Popen[str], timeout: float = 60) -> tuple[str, float]:
    """SIGTERM; the daemon's output and how long it took to exit."""
    started = time.monotonic()
    daemon.send_signal(signal.SIGTERM)
    try:
        output = daemon.communicate(timeout=timeout)[0]
    finally:
        if daemon.poll() is None:
            daemon.kill()
    return output, time.monotonic() - started


def test_a_label_no_timer_can_hold_costs_only_its_container(
        engine: Dockerd, registry: Registry, unique: str, containers: list[str],
        tmp_path: Path) -> None:
    """`updater.stop-timeout=1e12` once killed every pass (an OverflowError at each start):
    now that container is reported with a one-line error and left running, while its neighbour
    is updated by the same daemon, which keeps running."""
    bad, good = f"{registry.host}/labels/{unique}-bad:1", f"{registry.host}/labels/{unique}-ok:1"
    for image in (bad, good):
        images.release(engine.client, image, "1")
    _start(engine, bad, f"{unique}-bad", containers, {"updater.stop-timeout": "1e12"})
    _start(engine, good, f"{unique}-ok", containers)
    bad_id, _, _ = image_of(engine, f"{unique}-bad")
    _, good_image, _ = image_of(engine, f"{unique}-ok")
    for image in (bad, good):
        images.release(engine.client, image, "2", keep_local=False)
    daemon = start_daemon(engine, tmp_path, {"state_dir": str(tmp_path / "state"),
                                             "interval": "2s", "update_on_start": True})
    try:
        wait_until(lambda: _image(engine, f"{unique}-ok") not in (None, good_image), 60,
                   lambda: "the neighbour updated")
        time.sleep(5)  # two more passes
        assert daemon.poll() is None, "the daemon exited"
    finally:
        output, _ = _stop(daemon)
    assert daemon.returncode == 0, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert "updater.stop-timeout='1e12' is longer than a year; write at most 365d" in output
    assert image_of(engine, f"{unique}-bad")[0] == bad_id  # untouched, running
    assert image_of(engine, f"{unique}-bad")[2]
    assert set(_names(engine, unique)) == {f"{unique}-bad", f"{unique}-ok"}


@pytest.fixture
def small_state(tmp_path: Path) -> Iterator[Path]:
    """A 256 KB tmpfs as state_dir: room for a new state database while it is created (its
    write-ahead log and shared memory take 96 KB then), and little more."""
    state = tmp_path / "state"
    state.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(state)], check=True)
    try:
        yield state
    finally:
        subprocess.run(["umount", "-l", str(state)], check=False)


def _fill(directory: Path) -> None:
    """Fill the file system of `directory` to the last byte (the database and its write-ahead
    log may have done it already)."""
    try:
        with (directory / "filler").open("wb") as handle:
            for _ in range(1000):  # 4 MB at most: the tmpfs is 100 KB
                handle.write(b"\0" * 4096)
                handle.flush()
    except OSError:
        pass


def _make_room(directory: Path) -> None:
    (directory / "filler").unlink(missing_ok=True)
    subprocess.run(["mount", "-o", "remount,size=8m", str(directory)], check=True)


@pytest.mark.slow
def test_a_full_state_disk_leaves_no_container_stopped(
        engine: Dockerd, registry: Registry, unique: str, containers: list[str],
        tmp_path: Path, small_state: Path) -> None:
    """The journal cannot be written: the update is not taken (or is undone), the container
    runs throughout, one clear error is logged, the daemon stays up, and it updates once space
    is back."""
    image = f"{registry.host}/full/{unique}:latest"
    images.release(engine.client, image, "1")
    _start(engine, image, unique, containers)
    old_id, old_image, _ = image_of(engine, unique)
    daemon = start_daemon(engine, tmp_path, {"state_dir": str(small_state), "interval": "2s",
                                             "update_on_start": True})
    stopped_seen: list[str] = []
    watching = threading.Event()

    def watch() -> None:  # the container must never be seen stopped while the disk is full
        while not watching.is_set():
            found = engine.client.api.containers(all=True, filters={"name": f"^/{unique}$"})
            if found and found[0]["State"] != "running":
                stopped_seen.append(str(found[0]["State"]))
            time.sleep(0.1)

    try:
        wait_until((small_state / "heartbeat.json").exists, 30, lambda: "started")
        time.sleep(3)  # a first pass has written what it writes
        _fill(small_state)
        images.release(engine.client, image, "2", keep_local=False)
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        time.sleep(10)  # several passes on a full disk
        watching.set()
        watcher.join()
        assert daemon.poll() is None, "the daemon exited on a full disk"
        assert image_of(engine, unique)[:2] == (old_id, old_image)
        assert not stopped_seen, stopped_seen
        assert set(_names(engine, unique)) == {unique}
        _make_room(small_state)
        wait_until(lambda: _image(engine, unique) not in (None, old_image), 60,
                   lambda: "updated once space was back")
        assert daemon.poll() is None
    finally:
        output, _ = _stop(daemon)
    assert daemon.returncode == 0, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert "cannot write the update journal" in output, output[-3000:]
    assert image_of(engine, unique)[2] and set(_names(engine, unique)) == {unique}


@pytest.mark.slow
def test_a_trickling_sink_never_holds_the_loop(engine: Dockerd, registry: Registry, unique: str,
                                               containers: list[str], tmp_path: Path) -> None:
    """A sink that answers a byte a second (per-read timeouts never fire): passes go on at
    their interval, and SIGTERM in the middle of a send ends the daemon within seconds."""
    sink = TricklingSink()
    sink.start()
    image = f"{registry.host}/trickle/{unique}:latest"
    images.release(engine.client, image, "1")
    _start(engine, image, unique, containers)
    _, old_image, _ = image_of(engine, unique)
    images.release(engine.client, image, "2", keep_local=False)
    daemon = start_daemon(engine, tmp_path, {"state_dir": str(tmp_path / "state"),
                                             "interval": "2s", "update_on_start": True,
                                             "notify": [sink.url], "log_level": "debug"})
    try:
        wait_until(lambda: _image(engine, unique) not in (None, old_image), 60, lambda: "updated")
        wait_until(lambda: sink.requests >= 1, 30, lambda: "the sink was called")
        time.sleep(20)  # the first send is given up after 10 s; passes then go on every 2 s
        assert daemon.poll() is None
        images.release(engine.client, image, "3", keep_local=False)
        _, second_image, _ = image_of(engine, unique)
        wait_until(lambda: _image(engine, unique) not in (None, second_image), 30,
                   lambda: "the next release updated while the sink still hangs")
        requests = sink.requests
    finally:
        output, seconds = _stop(daemon)
        sink.stop()
    assert daemon.returncode == 0, output[-3000:]
    assert seconds < 8, f"SIGTERM took {seconds:.1f}s"
    passes = output.count("pass took")
    assert passes >= 6, output[-3000:]
    # One send in flight to the stuck sink at a time, never one per pass.
    assert requests == 1, requests
    assert "is taking more than 10s; kept to retry" in output
    print(f"\n{passes} passes; SIGTERM to exit {seconds:.2f}s; sink requests {requests}")


_HEALTHY_AFTER_4S = "HEALTHCHECK --interval=1s --start-period=30s CMD test -f /up\n"
_MARK_UP = '["sh", "-c", "sleep 4; : > /up; while :; do sleep 1; done"]'


@pytest.mark.slow
def test_engine_lost_mid_update_is_reported_as_it_was(
        engine: Dockerd, registry: Registry, unique: str, containers: list[str],
        tmp_path: Path) -> None:
    """The engine stops while the new container is awaited: the report and history say the old
    container was stopped and renamed and will be restored, the pass report is printed (exit 1),
    and the next run restores it and updates."""
    image = f"{registry.host}/lost/{unique}:latest"
    images.release(engine.client, image, "1", cmd=_MARK_UP, extra=_HEALTHY_AFTER_4S)
    containers.append(unique)
    engine.client.containers.run(image, name=unique, detach=True, labels=ENABLED)
    images.release(engine.client, image, "2", cmd=_MARK_UP, extra=_HEALTHY_AFTER_4S,
                   keep_local=False)
    state = tmp_path / "state"
    settings = {"state_dir": str(state)}
    process = subprocess.Popen([sys.executable, "-m", "updater", "update", "--json", unique],
                               env=updater_env(engine.host, tmp_path, settings),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    wait_until(lambda: journal_step(state) == "started", 90,
               lambda: f"the health wait ({journal_step(state)})")
    restart = threading.Thread(target=engine.restart, kwargs={"down": 8})
    restart.start()
    try:
        output, errors = process.communicate(timeout=120)
    finally:
        restart.join()
    assert process.returncode == 1, errors
    assert "Traceback" not in errors
    report = json.loads(output)
    [item] = [i for i in report["items"] if i["name"] == unique]
    assert item["outcome"] == "failed"
    assert (f"the old container {unique} was stopped and renamed {unique}-updater-old; it "
            "could not be restored yet") in item["reason"]
    assert "the next pass restores it" in item["reason"]
    history = run_updater(["history", "--json", unique], engine, tmp_path, settings)
    assert json.loads(history.stdout)[0]["reason"] == item["reason"]
    again = run_updater(["update", "--json", unique], engine, tmp_path, settings)
    assert again.returncode == 0, again.stderr
    outcomes = {i["outcome"] for i in json.loads(again.stdout)["items"]}
    assert outcomes <= {"recovered", "updated"} and "updated" in outcomes, again.stdout
    wait_until(lambda: _names(engine, unique) == {unique: "running"}, 60,
               lambda: f"one container, running: {_names(engine, unique)}")


def _corrupt_history(state: Path) -> None:
    """Fill history with rows (they take the last pages of the file), then overwrite the last
    page with garbage: the journal's pages are untouched."""
    db = sqlite3.connect(state / "updater.db")
    db.executemany("INSERT INTO history (time, name, kind, image, outcome, reason, seconds) "
                   "VALUES (?, 'x', 'container', 'r/x:1', 'updated', ?, 1)",
                   [(float(i), "r" * 200) for i in range(400)])
    db.commit()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    path = state / "updater.db"
    data = bytearray(path.read_bytes())
    data[-4096:] = b"\xa5" * 4096
    path.write_bytes(bytes(data))


def test_a_damaged_history_never_turns_an_update_into_a_failure(
        engine: Dockerd, registry: Registry, unique: str, containers: list[str],
        tmp_path: Path) -> None:
    image = f"{registry.host}/damaged/{unique}:latest"
    images.release(engine.client, image, "1")
    _start(engine, image, unique, containers)
    _, old_image, _ = image_of(engine, unique)
    state = tmp_path / "state"
    settings = {"state_dir": str(state)}
    first = run_updater(["update", unique], engine, tmp_path, settings)  # creates the database
    assert first.returncode == 0, first.stderr
    _corrupt_history(state)
    images.release(engine.client, image, "2", keep_local=False)
    result = run_updater(["update", "--json", unique], engine, tmp_path, settings)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert [i["outcome"] for i in json.loads(result.stdout)["items"]] == ["updated"]
    assert "history of this pass not recorded" in result.stderr
    assert image_of(engine, unique)[1] != old_image
    history = run_updater(["history"], engine, tmp_path, settings)
    assert history.returncode == 2
    assert history.stderr.startswith("updater: cannot read the history in ")
    assert len(history.stderr.strip().splitlines()) == 1


def test_one_line_errors_and_exit_codes_without_an_engine(tmp_path: Path) -> None:
    """run_once against an engine that is not there exits 2 (it used to exit 0); values no
    setting can take are one line each, never a traceback."""
    missing = f"unix://{tmp_path}/no-such.sock"
    once = run_updater(["run", "--run-once"], None, tmp_path, {"state_dir": str(tmp_path / "s")},
                       env={"DOCKER_HOST": missing})
    assert once.returncode == 2, (once.stdout, once.stderr)
    assert "cannot reach the Docker engine" in once.stderr and "Traceback" not in once.stderr
    (tmp_path / "latin1.yml").write_bytes(b"interval: 5m # caf\xe9\n")
    cases = [
        (["history", "--limit", "99999999999999999999"], {}, "limit '99999999999999999999'"),
        (["config"], {"UPDATER_INTERVAL": "120000d"}, "longer than a year"),
        (["config"], {"UPDATER_NOTIFY_TEMPLATE": "{summary:d}"}, "cannot be filled in"),
        (["config", "--config", str(tmp_path / "latin1.yml")], {}, "is not UTF-8 text"),
    ]
    for args, env, message in cases:
        result = run_updater(args, None, tmp_path, {"state_dir": str(tmp_path / "s")}, env=env)
        assert result.returncode == 2, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (args, result.stderr)
