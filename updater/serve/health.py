"""Liveness for a container HEALTHCHECK. While `updater run` holds the state lock it writes a
heartbeat into state_dir every few seconds: its PID, that process's start time, the time, what
is wrong (the engine unreachable), if anything, and the time by which the update loop must show
progress again. `updater health` is healthy when the heartbeat is fresh, belongs to a process
alive in this PID namespace (a predecessor sharing the state volume does not count), names no
problem, and the loop is not past its deadline (a loop hung in a call turns it unhealthy
although the heartbeat thread still writes).
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

FILENAME = "heartbeat.json"
BEAT_SECONDS = 10.0
STALE_SECONDS = 60.0


def process_start(pid: int) -> int | None:
    """The start time of process `pid` in clock ticks since boot, or None if there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22; the command name (field 2) may contain spaces, so count after its ')'.
    fields = stat.rpartition(")")[2].split()
    return int(fields[19]) if len(fields) > 19 else None


class Heartbeat:
    """Writes the heartbeat from a daemon thread until stopped."""

    def __init__(self, state_dir: str, problem: Callable[[], str | None],
                 interval: float = BEAT_SECONDS,
                 active: Callable[[], bool] = lambda: True,
                 deadline: Callable[[], float] = lambda: math.inf) -> None:
        self._path = Path(state_dir) / FILENAME
        self._problem = problem
        self._deadline = deadline
        self._active = active
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Heartbeat:
        """Beat now and then every `interval` seconds."""
        self.beat()
        self._thread = threading.Thread(target=self._loop, name="heartbeat", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self.beat()

    def beat(self) -> None:
        """Write the heartbeat, unless this process has given the state lock away."""
        if not self._active():
            return
        pid = os.getpid()
        deadline = self._deadline()
        record = {"pid": pid, "start": process_start(pid), "time": time.time(),
                  "problem": self._problem(),
                  "deadline": deadline if math.isfinite(deadline) else None}
        temporary = self._path.with_suffix(".tmp")
        try:
            temporary.write_text(json.dumps(record))
            temporary.replace(self._path)
        except OSError:
            pass  # a full or read-only disk shows as a stale heartbeat


def check(state_dir: str, now: float | None = None) -> str | None:
    """None when the updater in this PID namespace is alive and well, else what is wrong."""
    path = Path(state_dir) / FILENAME
    try:
        record = json.loads(path.read_text())
        pid, start, beat = int(record["pid"]), record["start"], float(record["time"])
    except (OSError, ValueError, KeyError, TypeError):
        return f"no heartbeat in {path}: is `updater run` running with this state_dir?"
    if process_start(pid) != start:
        return f"the heartbeat in {path} is from another process: this updater has not started"
    now = time.time() if now is None else now
    age = now - beat
    if age > STALE_SECONDS:
        return f"last heartbeat {age:.0f}s ago: the updater is stuck"
    deadline = record.get("deadline")
    if isinstance(deadline, int | float) and now > deadline:
        return (f"the update loop is {now - deadline:.0f}s past the time it was due to make "
                "progress: it is stuck (its log says where)")
    problem = record.get("problem")
    return str(problem) if problem else None
