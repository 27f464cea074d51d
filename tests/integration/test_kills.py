"""Kill tests at scale: 50 runs of a real `updater update`, each SIGKILLed at a random moment;
after each, the next updater's recovery runs and every container must exist under its name and
run, on its old or its new image. Five lanes (own container, repository and state) run side by
side; the report gives runs, the journal step each kill landed after, and containers lost."""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from harness import images
from harness.dockerd import Dockerd
from harness.registry import Registry
from tests.integration.helpers import ENABLED, run_updater, start, updater_env

pytestmark = [pytest.mark.engine, pytest.mark.slow]
LANES, RUNS_PER_LANE = 5, 10
RELEASES = threading.Lock()
# Seconds after the start, at least: from before the first request to after the end.
KILL_WINDOW = 5.0


def _last_step(state: Path) -> str:
    database = state / "updater.db"
    if not database.exists():
        return "before the journal"
    with sqlite3.connect(database) as db:
        row = db.execute("SELECT step FROM updates ORDER BY id DESC LIMIT 1").fetchone()
    return str(row[0]) if row else "before the journal"


def _lane(engine: Dockerd, registry: Registry, name: str, home: Path,
          seed: int) -> list[tuple[str, str | None]]:
    """RUNS_PER_LANE killed updates of one container: (kill point, problem or None) each."""
    chance = random.Random(seed)
    image = f"{registry.host}/kill/{name}:latest"
    with RELEASES:
        images.release(engine.client, image, "0")
    start(engine, image, name, ENABLED)
    settings = {"state_dir": str(home / "state")}
    window = _calibrated_window(engine, image, name, home, settings)
    results: list[tuple[str, str | None]] = []
    for run in range(RUNS_PER_LANE):
        with RELEASES:  # one build at a time; images stay local (no removal races between lanes)
            images.release(engine.client, image, str(run + 1))
        before = engine.client.containers.get(name).attrs["Image"]
        process = subprocess.Popen([sys.executable, "-m", "updater", "update", name],
                                   env=updater_env(engine.host, home, settings),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(chance.uniform(0, window))
        process.send_signal(signal.SIGKILL)
        _, errors = process.communicate(timeout=30)
        point = _last_step(home / "state") if process.returncode == -9 else "after the end"
        recovery = run_updater(["update", "--json", "--monitor-only", name], engine, home,
                               settings)
        problem = None
        if process.returncode not in (0, -9):
            problem = f"the update exited {process.returncode}: {errors[-300:]}"
        # The list call only: inspecting each container races the other lanes' removals.
        found = {str(c["Names"][0]).lstrip("/"): c
                 for c in engine.client.api.containers(all=True, filters={"name": name})}
        found = {n: c for n, c in found.items() if n.startswith(name)}
        if problem is not None:
            pass
        elif recovery.returncode != 0:
            problem = f"recovery failed: {recovery.stderr[-300:]}"
        elif set(found) != {name}:
            problem = f"containers are {sorted(found)}"
        elif found[name]["State"] != "running":
            problem = f"it is {found[name]['State']}"
        elif found[name]["ImageID"] != before and not _is_release(engine, image,
                                                                   found[name]["ImageID"]):
            problem = "runs an image that is neither the old nor the new one"
        results.append((point, problem))
    return results


def _calibrated_window(engine: Dockerd, image: str, name: str, home: Path,
                       settings: dict[str, str]) -> float:
    """How long after its start to kill an update: as long as a whole update takes on this
    machine now (measured once, unkilled), and a little more, so that under load the kills
    still land across the update rather than all before its journal."""
    with RELEASES:
        images.release(engine.client, image, "calibration")
    started = time.monotonic()
    result = run_updater(["update", name], engine, home, settings)
    assert result.returncode == 0, result.stderr
    return max(KILL_WINDOW, 1.2 * (time.monotonic() - started))


def _is_release(engine: Dockerd, image: str, image_id: str) -> bool:
    tags = engine.client.images.get(image_id).attrs.get("RepoDigests") or []
    return any(tag.startswith(image.rsplit(":", 1)[0] + "@") for tag in tags)


def test_fifty_random_kills_lose_no_container(engine: Dockerd, registry: Registry,
                                              unique: str, containers: list[str],
                                              tmp_path: Path) -> None:
    names = [f"{unique}-k{lane}" for lane in range(LANES)]
    containers.extend(names)
    with ThreadPoolExecutor(LANES) as pool:
        lanes = list(pool.map(lambda lane: _lane(engine, registry, names[lane],
                                                 tmp_path / f"lane{lane}", 1000 + lane),
                              range(LANES)))
    results = [result for lane in lanes for result in lane]
    points = Counter(point for point, _ in results)
    lost = [problem for _, problem in results if problem]
    print(f"\nruns: {len(results)}; containers lost: {len(lost)}; kill points hit: "
          f"{len(points)}: " + ", ".join(f"{p} {n}" for p, n in points.most_common()))
    assert len(results) == LANES * RUNS_PER_LANE
    assert lost == [], [r for r in results if r[1]]
    assert len(points) >= 5, points  # the kills really landed across the update
