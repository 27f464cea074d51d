"""The heartbeat behind `updater health`, and the state lock an updater hands to its
successor."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from updater.errors import ConfigError
from updater.serve import health
from updater.store.journal import StateLock


def test_fresh_heartbeat_of_this_process_is_healthy(tmp_path: Path) -> None:
    health.Heartbeat(str(tmp_path), lambda: None).beat()
    assert health.check(str(tmp_path)) is None


def test_missing_stale_and_foreign_heartbeats_are_unhealthy(tmp_path: Path) -> None:
    assert "no heartbeat" in str(health.check(str(tmp_path)))
    health.Heartbeat(str(tmp_path), lambda: None).beat()
    assert "stuck" in str(health.check(str(tmp_path), now=time.time() + 120))
    # A heartbeat written by a process that is gone (e.g. the predecessor sharing the volume).
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    record = json.loads((tmp_path / health.FILENAME).read_text())
    record["pid"] = int(child.stdout)
    (tmp_path / health.FILENAME).write_text(json.dumps(record))
    assert "another process" in str(health.check(str(tmp_path)))


def test_a_reported_problem_is_unhealthy(tmp_path: Path) -> None:
    health.Heartbeat(str(tmp_path), lambda: "cannot reach the Docker engine").beat()
    assert health.check(str(tmp_path)) == "cannot reach the Docker engine"


def test_a_process_without_the_lock_writes_no_heartbeat(tmp_path: Path) -> None:
    health.Heartbeat(str(tmp_path), lambda: None, active=lambda: False).beat()
    assert not (tmp_path / health.FILENAME).exists()


def test_process_start_is_stable_and_none_for_no_process() -> None:
    assert health.process_start(os.getpid()) == health.process_start(os.getpid()) is not None
    assert health.process_start(2 ** 22 + 1) is None


def test_second_holder_waits_then_gets_a_clear_error(tmp_path: Path) -> None:
    with StateLock(str(tmp_path)):
        started = time.monotonic()
        with pytest.raises(ConfigError, match="another updater is running"):
            StateLock(str(tmp_path), wait=0.5).acquire(0.5)
        assert 0.4 <= time.monotonic() - started < 5


def test_released_lock_is_taken_by_the_successor_and_can_be_taken_back(tmp_path: Path) -> None:
    first = StateLock(str(tmp_path))
    first.acquire()
    first.release()
    assert not first.held
    with StateLock(str(tmp_path), wait=1), pytest.raises(ConfigError):
        first.acquire()
    first.acquire(1)
    assert first.held
    first.release()
