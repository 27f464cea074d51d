"""Data safety, the reason this product exists: a container that keeps writing rows to SQLite on
a volume is updated 20 times while it writes. After every update `PRAGMA integrity_check` is
`ok` and every row its predecessor acknowledged is in the database. For contrast, the same
writer needing 15 s to shut down: a fixed 10 s stop (what a tool that ignores stop timeouts
does) loses acknowledged rows; the updater honouring `updater.stop-timeout=30s` loses none."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from harness import images, updater_image
from harness.dockerd import Dockerd
from harness.registry import Registry
from tests.integration.helpers import ENABLED, wait_until
from tests.integration.test_update import update

pytestmark = [pytest.mark.engine, pytest.mark.slow]
UPDATES = 20

# Accepts a row every 20 ms and acknowledges it (acks.log, flushed); commits what it accepted
# every 0.5 s. On SIGTERM it stops accepting, takes SHUTDOWN_SECONDS to flush (a slow
# checkpoint), commits the rest, closes and exits 0. Killed before that, accepted rows are lost.
WRITER = r"""
import os, signal, sqlite3, sys, time, uuid
run = uuid.uuid4().hex[:8]
db = sqlite3.connect("/data/rows.db", isolation_level=None)
db.execute("PRAGMA journal_mode=WAL")
db.execute("PRAGMA synchronous=FULL")
db.execute("CREATE TABLE IF NOT EXISTS rows (id TEXT PRIMARY KEY, at REAL NOT NULL)")
acks = open("/data/acks.log", "a", buffering=1)
stopping = []
signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
buffer, seq, last_commit = [], 0, time.monotonic()

def commit():
    db.execute("BEGIN")
    db.executemany("INSERT INTO rows VALUES (?, ?)", buffer)
    db.execute("COMMIT")
    buffer.clear()

while not stopping:
    seq += 1
    buffer.append((f"{run}-{seq}", time.time()))
    acks.write(f"{run} {seq}\n")
    os.fsync(acks.fileno())
    if time.monotonic() - last_commit >= 0.5:
        commit()
        last_commit = time.monotonic()
    time.sleep(0.02)
time.sleep(float(os.environ.get("SHUTDOWN_SECONDS", "0")))
commit()
db.close()
sys.exit(0)
"""


def _build(engine: Dockerd, reference: str, version: str, context: Path) -> str:
    base = updater_image.base_image(engine.client)
    (context / "writer.py").write_text(WRITER)
    (context / "Dockerfile").write_text(
        f"FROM {base}\nCOPY writer.py /writer.py\nLABEL org.opencontainers.image.version="
        f"{version} harness.nonce={uuid.uuid4().hex}\nCMD [\"python3\", \"/writer.py\"]\n")
    engine.client.images.build(path=str(context), tag=reference, rm=True, forcerm=True)
    return images.push(engine.client, reference)


CHECK = ("import sqlite3; db = sqlite3.connect('/data/rows.db'); "
         "print(db.execute('PRAGMA integrity_check').fetchone()[0]); "
         "print(' '.join(r[0] for r in db.execute('SELECT id FROM rows')))")


def _check(engine: Dockerd, container: str, data: Path) -> tuple[str, int, int]:
    """(integrity_check, rows acknowledged by finished writers, those missing), read with the
    container's own SQLite next to the running writer, as the application would."""
    runs: dict[str, list[str]] = {}
    for line in (data / "acks.log").read_text().splitlines():
        run, _, seq = line.partition(" ")
        if seq:
            runs.setdefault(run, []).append(f"{run}-{seq}")
    finished = [row for run in list(runs)[:-1] for row in runs[run]]  # the last one still runs
    code, output = engine.client.containers.get(container).exec_run(["python3", "-c", CHECK])
    assert code == 0 and isinstance(output, bytes), output
    integrity, _, stored = output.decode().partition("\n")
    return integrity, len(finished), len(set(finished) - set(stored.split()))


def _writer(engine: Dockerd, image: str, name: str, data: Path, shutdown: float,
            labels: dict[str, str]) -> None:
    engine.client.containers.run(image, name=name, detach=True, labels=labels,
                                 environment={"SHUTDOWN_SECONDS": str(shutdown)},
                                 volumes={str(data): {"bind": "/data", "mode": "rw"}})
    acks = data / "acks.log"  # written after rows.db: it may not exist yet when rows.db does
    wait_until(lambda: acks.exists() and acks.stat().st_size > 0, 30,
               lambda: "the writer started")


def test_twenty_updates_while_writing_lose_no_acknowledged_row(
        engine: Dockerd, registry: Registry, unique: str, containers: list[str],
        tmp_path: Path) -> None:
    image = f"{registry.host}/sqlite/{unique}:latest"
    # Two releases, pushed in turn: each push is a new digest for the tag the writer runs.
    _build(engine, image, "b", tmp_path)
    engine.client.images.get(image).tag(image.replace(":latest", ":b"))
    _build(engine, image, "a", tmp_path)
    engine.client.images.get(image).tag(image.replace(":latest", ":a"))
    data = tmp_path / "data"
    data.mkdir()
    containers.append(unique)
    _writer(engine, image, unique, data, 0.5, {**ENABLED, "updater.stop-timeout": "30s"})
    figures = []
    for number in range(1, UPDATES + 1):
        time.sleep(0.5)  # rows committed and rows only accepted, when the update comes
        release = ":b" if number % 2 else ":a"
        engine.client.images.get(image.replace(":latest", release)).tag(image)
        images.push(engine.client, image)
        code, items = update(engine, tmp_path, unique)
        assert (code, items[unique]["outcome"]) == (0, "updated"), items[unique]
        integrity, acknowledged, missing = _check(engine, unique, data)
        figures.append((acknowledged, missing))
        assert integrity == "ok", (number, integrity)
        assert missing == 0, (number, acknowledged, missing)
    print(f"\n{UPDATES} updates while writing: {figures[-1][0]} acknowledged rows, "
          f"{sum(m for _, m in figures)} missing, integrity ok every time")


def test_a_fixed_ten_second_stop_loses_rows_the_label_keeps_them(
        engine: Dockerd, registry: Registry, unique: str, containers: list[str],
        tmp_path: Path) -> None:
    image = f"{registry.host}/sqlite-slow/{unique}:latest"
    _build(engine, image, "0", tmp_path)
    killed, honoured = tmp_path / "killed", tmp_path / "honoured"
    killed.mkdir()
    honoured.mkdir()
    containers += [f"{unique}-killed", f"{unique}-honoured"]
    _writer(engine, image, f"{unique}-killed", killed, 15, {})
    _writer(engine, image, f"{unique}-honoured", honoured, 15,
            {**ENABLED, "updater.stop-timeout": "30s"})
    time.sleep(1.2)

    engine.client.containers.get(f"{unique}-killed").stop(timeout=10)
    _build(engine, image, "1", tmp_path)
    code, items = update(engine, tmp_path, f"{unique}-honoured")

    exit_code = engine.client.containers.get(f"{unique}-killed").attrs["State"]["ExitCode"]
    runs_before = (killed / "acks.log").read_text().count("\n")
    engine.client.containers.get(f"{unique}-killed").start()  # a writer again, to read with
    wait_until(lambda: (killed / "acks.log").read_text().count("\n") > runs_before, 30,
               lambda: "the restarted writer acknowledged a row")  # the killed run is closed
    _, acknowledged_killed, missing_killed = _check(engine, f"{unique}-killed", killed)
    assert exit_code == 137 and missing_killed > 0, (exit_code, missing_killed)
    assert (code, items[f"{unique}-honoured"]["outcome"]) == (0, "updated")
    assert items[f"{unique}-honoured"]["seconds"] >= 15
    integrity, acknowledged, missing = _check(engine, f"{unique}-honoured", honoured)
    assert integrity == "ok" and missing == 0 and acknowledged > 0
    print(f"\nfixed 10 s stop: exit 137, {missing_killed} of {acknowledged_killed} acknowledged "
          f"rows lost; updater with stop-timeout=30s: exit 0 after "
          f"{items[f'{unique}-honoured']['seconds']:.1f}s, 0 of {acknowledged} lost")
