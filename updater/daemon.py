"""The loop behind `updater run`: one pass at a time on a schedule (interval with jitter, or a
cron expression), until SIGTERM/SIGINT; the update in flight is finished, then it exits 0.
One bad pass never ends the daemon."""

from __future__ import annotations

import datetime
import logging
import random
import signal
import threading
import time
from collections.abc import Callable

from updater.config import Settings
from updater.errors import EngineUnavailable, UpdaterError
from updater.report import PassReport

log = logging.getLogger(__name__)
# (stop_requested, names) -> the pass report; names empty means every watched item.
PassRunner = Callable[[Callable[[], bool], tuple[str, ...]], PassReport]


def retry_delay(failures: int) -> float:
    """Backoff while the engine (or the swarm manager) is unreachable: 5 s, doubling, ≤ 5 min."""
    return float(min(300, 5 * 2 ** max(0, failures - 1)))


def next_delay(settings: Settings, now: datetime.datetime) -> float:
    """Seconds until the next pass: the next cron time, or the interval plus up to `jitter`."""
    if settings.schedule:
        import cronsim

        upcoming = next(cronsim.CronSim(settings.schedule, now))
        return max(0.0, (upcoming - now).total_seconds())
    return settings.interval + random.uniform(0, settings.jitter)


class Daemon:
    """Owns the schedule and the stop flag; the pass itself comes in as a function."""

    def __init__(self, settings: Settings, run_pass: PassRunner,
                 now: Callable[[], datetime.datetime] | None = None,
                 wait: Callable[[float], object] | None = None,
                 on_start: Callable[[], object] = lambda: None) -> None:
        self._settings = settings
        self._run_pass = run_pass
        self._on_start = on_start
        self._engine_error: str | None = None
        self._now = now or (lambda: datetime.datetime.now().astimezone())
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._requested: set[str] | None = None  # None: no trigger; empty: everything
        self.passes = 0
        self.last_report: PassReport | None = None
        self.running = False
        self._engine_failures = 0
        self._wait = wait or self._wake.wait

    def request_stop(self, *_: object) -> None:
        """Signal handler: only sets the flag; the loop finishes what it is doing."""
        self._stop.set()
        self._wake.set()

    def trigger(self, names: tuple[str, ...] = ()) -> None:
        """Ask for a pass now (for `names`, or everything). During a pass this queues exactly
        one more; triggers never run passes side by side."""
        with self._lock:
            if self._requested is None:
                self._requested = set(names)
            elif not names or not self._requested:
                self._requested = set()
            else:
                self._requested |= set(names)
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def problem(self) -> str | None:
        """What keeps the daemon from working (for the health check), or None."""
        return self._engine_error

    def _start(self) -> None:
        try:
            self._on_start()
        except EngineUnavailable as exc:
            self._engine_error = str(exc)
            log.error("%s; the first pass tries again", exc)
        except UpdaterError as exc:
            log.error("recovery at start failed: %s; the first pass tries again", exc)

    def run(self) -> int:
        if threading.current_thread() is threading.main_thread():  # only it may take signals
            signal.signal(signal.SIGTERM, self.request_stop)
            signal.signal(signal.SIGINT, self.request_stop)
        self._start()
        if self._settings.run_once or self._settings.update_on_start:
            self._one_pass()
        if self._settings.run_once:
            return 0
        while not self._stop.is_set():
            delay = next_delay(self._settings, self._now())
            if self._engine_failures:
                delay = min(delay, retry_delay(self._engine_failures))
            log.info("next pass in %.0fs", delay)
            self._wait(delay)
            if self._stop.is_set():
                break
            self._one_pass()
        log.info("stopping: no update in flight")
        return 0

    def _one_pass(self) -> None:
        with self._lock:
            names = tuple(sorted(self._requested or ()))
            self._requested = None
            self._wake.clear()
        started = time.monotonic()
        self.running = True
        try:
            self.last_report = self._run_pass(self._stop.is_set, names)
            self._engine_failures = 0
            self._engine_error = None
        except EngineUnavailable as exc:
            self._engine_failures += 1
            self._engine_error = str(exc)
            log.error("%s; trying again in %.0fs", exc, retry_delay(self._engine_failures))
        except UpdaterError as exc:
            log.error("pass failed: %s", exc)
        except Exception:
            log.exception("pass failed unexpectedly; the next one will try again")
        finally:
            self.running = False
        self.passes += 1
        log.debug("pass took %.1fs", time.monotonic() - started)
