"""The loop behind `updater run`: one pass at a time on a schedule (interval with jitter, or a
cron expression), until SIGTERM/SIGINT; the update in flight is finished, then it exits 0.
One bad pass never ends the daemon."""

from __future__ import annotations

import datetime
import logging
import math
import random
import signal
import threading
import time
from collections.abc import Callable

from updater.core.report import PassReport
from updater.core.settings import Settings
from updater.errors import EngineUnavailable, UpdaterError
from updater.serve import health

log = logging.getLogger(__name__)
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
# Bounds on the loop's silence: recovery at start, and a pass until its first item (registry
# checks of every watched item); each item and each update then sets its own.
STARTUP_SECONDS = 1800.0
PASS_SECONDS = 1800.0
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
    """Owns the schedule and the stop flag; the pass itself comes in as a function.

    A pass for named items (an API trigger) never moves the next full pass. `deadline` is the
    wall-clock time by which the loop must show progress again (the next pass due, an item
    reported, an update's own bound); the heartbeat carries it, so a hung loop turns the health
    check unhealthy although the heartbeat thread still writes."""

    def __init__(self, settings: Settings, run_pass: PassRunner,
                 now: Callable[[], datetime.datetime] | None = None,
                 wait: Callable[[float], object] | None = None,
                 on_start: Callable[[], object] = lambda: None,
                 on_stop: Callable[[], object] = lambda: None,
                 on_started: Callable[[], object] = lambda: None) -> None:
        self._settings = settings
        self._run_pass = run_pass
        self._on_start = on_start
        self._on_started = on_started
        self._on_stop = on_stop
        self._engine_error: str | None = None
        self._now = now or (lambda: datetime.datetime.now().astimezone())
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._requested: set[str] | None = None  # None: no trigger; empty: everything
        self._pushed: set[str] = set()  # asked for by push notifications only
        self._shared: set[str] = set()  # asked for by pushes the swarm leader passed on only
        self._forced: set[str] = set()  # "Update now" (kind:name): although monitor-only
        self.forcing: frozenset[str] = frozenset()  # this pass's such names
        self.next_due: float | None = None  # when the next scheduled pass starts (wall clock)
        self.retrying: frozenset[str] = frozenset()  # this pass's names asked for by someone
        self.asked = False  # whether this pass was asked for (else it is the scheduled one)
        self._jobs: list[tuple[str, Callable[[], object]]] = []  # run between passes
        self.passes = 0
        self.last_report: PassReport | None = None
        self.last_error: str | None = None  # why the last pass failed outright, if it did
        self.running = False
        self.deadline = math.inf
        self._engine_failures = 0
        self._wait = wait or self._wake.wait

    def request_stop(self, *_: object) -> None:
        """Signal handler: only sets the flags; the loop finishes what it is doing (slow
        notifications are let go at once)."""
        self._stop.set()
        self._wake.set()
        self._on_stop()

    def trigger(self, names: tuple[str, ...] = (), asked: bool = True,
                fresh: bool = True, force: str | None = None) -> None:
        """Ask for a pass now (for `names`, or everything). During a pass this queues exactly
        one more; triggers never run passes side by side. Names an operator `asked` for are
        tried again where their update was rolled back; names a push notification brought
        (`asked=False`) are not: a re-sent notification must not restart a known-bad image.
        A pass wants `fresh` digests (none older than itself) unless all its names came from
        pushes the swarm leader passed on (whose answers it renewed for them). Names an
        operator pressed "Update now" for (`force`: their kind, container or service) are
        updated although monitor-only; a same-named item of the other kind is not."""
        with self._lock:
            if force:
                self._forced |= {f"{force}:{name}" for name in names}
            if asked:
                self._pushed -= set(names)
            else:
                self._pushed |= set(names) - (self._requested or set())
            if fresh:
                self._shared -= set(names)
            else:
                self._shared |= set(names) - (self._requested or set())
            if self._requested is None:
                self._requested = set(names)
            elif not names or not self._requested:
                self._requested = set()
            else:
                self._requested |= set(names)
        self._wake.set()

    def submit(self, what: str, job: Callable[[], object]) -> None:
        """Run `job` (`what`, for the log) in the loop, between passes, as soon as it is
        free; it never moves the next pass."""
        with self._lock:
            self._jobs.append((what, job))
        self._wake.set()

    def _run_jobs(self) -> bool:
        """Run the submitted jobs; True when there were any."""
        with self._lock:
            jobs, self._jobs = self._jobs, []
            if self._requested is None:
                self._wake.clear()
        for what, job in jobs:
            self.expect(PASS_SECONDS)
            try:
                job()
            except UpdaterError as exc:
                self.last_error = f"{what} failed: {exc}"  # the API's caller sees it in status
                log.error("%s", self.last_error)
            except Exception as exc:
                self.last_error = f"{what} failed: unexpected {type(exc).__name__}"
                log.exception("%s failed unexpectedly", what)
        return bool(jobs)

    def expect(self, seconds: float) -> None:
        """The loop will show progress again within `seconds` (inf: no bound)."""
        self.deadline = time.time() + seconds

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def problem(self) -> str | None:
        """What keeps the daemon from working (for the health check), or None."""
        return self._engine_error

    def _start(self) -> None:
        self.expect(STARTUP_SECONDS)
        try:
            self._on_start()
        except EngineUnavailable as exc:
            self._engine_error = str(exc)
            log.error("%s; the first pass tries again", exc)
        except UpdaterError as exc:
            log.error("recovery at start failed: %s; the first pass tries again", exc)
        except Exception:
            log.exception("recovery at start failed unexpectedly; the first pass tries again")
        self._on_started()  # what it raises ends the run (an API port that cannot be bound)

    def run(self) -> int:
        """The loop; with run_once, one pass and its exit code (0 done, 1 an update failed or
        the pass was cut short, 2 the pass could not run)."""
        if threading.current_thread() is threading.main_thread():  # only it may take signals
            signal.signal(signal.SIGTERM, self.request_stop)
            signal.signal(signal.SIGINT, self.request_stop)
        self._start()
        status = EXIT_OK
        if self._settings.run_once or self._settings.update_on_start:
            status = self._one_pass()
        if self._settings.run_once:
            return status
        delay = self._next_delay()
        due = time.monotonic() + delay
        while not self._stop.is_set():
            log.info("next pass in %.0fs", delay)
            self.next_due = time.time() + delay
            self.expect(delay + health.STALE_SECONDS)
            self._wait(delay)
            if self._stop.is_set():
                break
            ran = self._run_jobs()
            with self._lock:
                named, asked = bool(self._requested), self._requested is not None
            if ran and not asked and time.monotonic() < due:
                delay = due - time.monotonic()  # woken for a job: the pass stays where it was
                continue
            self._one_pass()
            if named and time.monotonic() < due:
                delay = due - time.monotonic()  # the full pass stays where it was due
            else:
                delay = self._next_delay()
                due = time.monotonic() + delay
        log.info("stopping: no update in flight")
        return EXIT_OK

    def _next_delay(self) -> float:
        delay = next_delay(self._settings, self._now())
        if self._engine_failures:
            delay = min(delay, retry_delay(self._engine_failures))
        return delay

    def _one_pass(self) -> int:
        with self._lock:
            names = tuple(sorted(self._requested or ()))
            # Asked for (not the schedule, nor only pushes the leader passed on).
            self.asked = self._requested is not None and not (
                names and set(names) <= self._shared)
            self.retrying = frozenset(names) - self._pushed
            self.forcing = frozenset(self._forced)
            self._requested, self._pushed, self._shared = None, set(), set()
            self._forced = set()
            self._wake.clear()
        started = time.monotonic()
        self.running = True
        self.expect(PASS_SECONDS)
        status = EXIT_FAILED
        try:
            report = self._run_pass(self._stop.is_set, names)
            self.last_report = report
            self.last_error = report.error
            if report.error:
                self._engine_failures += 1
                self._engine_error = report.error
            else:
                self._engine_failures = 0
                self._engine_error = None
                status = EXIT_FAILED if report.failed else EXIT_OK
        except EngineUnavailable as exc:
            self._engine_failures += 1
            self._engine_error = self.last_error = str(exc)
            status = EXIT_USAGE
            log.error("%s; trying again in %.0fs", exc, retry_delay(self._engine_failures))
        except UpdaterError as exc:
            self.last_error = str(exc)
            status = EXIT_USAGE
            log.error("pass failed: %s", exc)
        except Exception as exc:
            self.last_error = f"unexpected {type(exc).__name__}: {exc}"
            log.exception("pass failed unexpectedly; the next one will try again")
        finally:
            self.running = False
        self.passes += 1
        log.debug("pass took %.1fs", time.monotonic() - started)
        return status
