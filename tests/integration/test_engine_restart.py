"""The Docker daemon restarting under the updater: in the middle of a pass (while it stops the
old container) and while `updater run` waits. The updater reconnects, the next pass succeeds,
and no container is left stopped or renamed."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from harness import images
from harness.dockerd import Dockerd
from harness.registry import Registry
from tests.integration.helpers import (
    ENABLED,
    run_updater,
    start_daemon,
    updater_env,
    wait_until,
)

pytestmark = [pytest.mark.engine, pytest.mark.slow]
# Stops 4 s after SIGTERM: long enough to restart the engine in the middle of the stop.
SLOW_STOP = '["sh", "-c", "trap \'sleep 4; exit 0\' TERM; while :; do sleep 1; done"]'


def _run(engine: Dockerd, image: str, name: str, containers: list[str]) -> None:
    containers.append(name)
    engine.client.containers.run(image, name=name, detach=True, restart_policy={"Name": "always"},
                                 labels={**ENABLED, "updater.stop-timeout": "30s"})


def _step(state: Path) -> str | None:
    try:
        with sqlite3.connect(state / "updater.db") as db:
            row = db.execute("SELECT step FROM updates ORDER BY id DESC LIMIT 1").fetchone()
    except sqlite3.Error:
        return None
    return str(row[0]) if row else None


def _names(engine: Dockerd, name: str) -> dict[str, str]:
    return {str(c["Names"][0]).lstrip("/"): str(c["State"])
            for c in engine.client.api.containers(all=True, filters={"name": name})}


def test_engine_restarted_in_the_middle_of_a_pass(engine: Dockerd, registry: Registry,
                                                  unique: str, containers: list[str],
                                                  tmp_path: Path) -> None:
    image = f"{registry.host}/restart/{unique}:latest"
    images.release(engine.client, image, "1", cmd=SLOW_STOP)
    _run(engine, image, unique, containers)
    images.release(engine.client, image, "2", cmd=SLOW_STOP, keep_local=False)
    settings = {"state_dir": str(tmp_path / "state")}
    process = subprocess.Popen([sys.executable, "-m", "updater", "update", "--json", unique],
                               env=updater_env(engine.host, tmp_path, settings),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until(lambda: _step(tmp_path / "state") == "stopping", 60,
               lambda: f"the update reached the stop; {process.poll()}")

    engine.restart(down=1)

    _, errors = process.communicate(timeout=180)
    assert "Traceback" not in errors, errors
    assert process.returncode in (0, 1, 2), errors
    # The next updater reconnects, finishes or undoes what was left, and updates.
    result = run_updater(["update", "--json", unique], engine, tmp_path, settings)
    assert result.returncode == 0, result.stderr
    outcomes = {i["outcome"] for i in json.loads(result.stdout)["items"]}
    assert outcomes <= {"recovered", "updated", "up-to-date"}, result.stdout
    wait_until(lambda: _names(engine, unique) == {unique: "running"}, 60,
               lambda: f"only {unique}, running: {_names(engine, unique)}")
    running = engine.client.containers.get(unique).attrs["Image"]
    assert running == engine.client.images.get(image).id  # on the new release
    print(f"\nfirst updater exit {process.returncode} ({errors.strip()[-160:]}); "
          f"next pass: {sorted(outcomes)}")


def test_engine_restarted_while_the_daemon_runs(engine: Dockerd, registry: Registry,
                                                unique: str, containers: list[str],
                                                tmp_path: Path) -> None:
    image = f"{registry.host}/restart/{unique}:latest"
    images.release(engine.client, image, "1")
    _run(engine, image, unique, containers)
    old = engine.client.containers.get(unique).attrs["Image"]
    daemon = start_daemon(engine, tmp_path, {"state_dir": str(tmp_path / "state"),
                                             "interval": "2s", "update_on_start": True})
    try:
        wait_until((tmp_path / "state" / "heartbeat.json").exists, 30,
                   lambda: "the daemon started")
        engine.restart(down=3)
        images.release(engine.client, image, "2", keep_local=False)

        def updated() -> bool:
            found = _names(engine, unique)
            return found == {unique: "running"} and \
                engine.client.containers.get(unique).attrs["Image"] != old
        wait_until(updated, 60, lambda: f"updated after the restart: {_names(engine, unique)}")
        assert daemon.poll() is None, "the daemon exited"
    finally:
        daemon.send_signal(signal.SIGTERM)
        log = daemon.communicate(timeout=60)[0]
    assert daemon.returncode == 0, log[-2000:]
    assert "cannot reach the Docker engine" in log, log[-2000:]
    assert "Traceback" not in log
