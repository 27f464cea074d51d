"""Per-container options from labels, and the daemon's schedule and stop handling."""

from __future__ import annotations

import datetime
import math
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from updater.core.policy import options
from updater.core.report import PassReport
from updater.core.settings import Settings
from updater.errors import ConfigError
from updater.serve.daemon import Daemon, next_delay


def test_options_defaults_and_labels() -> None:
    """Labels override settings; the container's own StopTimeout beats the global default."""
    settings = Settings(health_timeout=60, rollback=True)
    assert options({}, settings, None).stop_timeout == 10
    assert options({}, settings, 45).stop_timeout == 45
    assert options({}, Settings(stop_timeout=20), None).stop_timeout == 20
    chosen = options({"updater.stop-timeout": "90s", "updater.health-timeout": "2m",
                      "updater.rollback": "false", "updater.stop-signal": "SIGINT",
                      "com.centurylinklabs.watchtower.lifecycle.pre-update": "x",
                      "updater.hook.timeout": "5s", "updater.monitor-only": "true"},
                     settings, 45)
    assert (chosen.stop_timeout, chosen.health_timeout, chosen.rollback) == (90, 120, False)
    assert chosen.stop_signal == "SIGINT" and chosen.hooks == {"pre-update": "x"}
    assert chosen.hook_timeout == 5 and chosen.monitor_only


@pytest.mark.parametrize(("labels", "message"), [
    ({"updater.stop-timeout": "soon"}, "updater.stop-timeout='soon' is not a duration"),
    ({"updater.rollback": "perhaps"}, "updater.rollback='perhaps' is not true or false"),
    ({"updater.stop-signal": "stop please"}, "updater.stop-signal='stop please' is not a signal"),
])
def test_bad_labels_are_named(labels: dict[str, str], message: str) -> None:
    """A bad label value is a ConfigError naming the label and value."""
    with pytest.raises(ConfigError, match=message):
        options(labels, Settings(), None)


NOW = datetime.datetime(2026, 11, 27, 10, 7, 30, tzinfo=datetime.UTC)


def test_interval_with_jitter() -> None:
    """The delay is the interval plus at most the jitter."""
    delays = {next_delay(Settings(interval=60, jitter=10), NOW) for _ in range(50)}
    assert all(60 <= d <= 70 for d in delays) and len(delays) > 1


def test_cron_schedule() -> None:
    """A cron schedule waits until its next matching minute."""
    assert next_delay(Settings(schedule="*/15 * * * *"), NOW) == 7 * 60 + 30


def _daemon(settings: Settings, on_pass: Callable[[Daemon], None]) -> Daemon:
    holder: list[Daemon] = []

    def run_pass(stop_requested: Callable[[], bool], names: tuple[str, ...]) -> PassReport:
        on_pass(holder[0])
        return PassReport()

    daemon = Daemon(settings, run_pass, now=lambda: NOW)
    holder.append(daemon)
    return daemon


def test_run_once_does_one_pass() -> None:
    """run_once: one pass, exit 0."""
    daemon = _daemon(Settings(run_once=True), lambda d: None)
    assert daemon.run() == 0 and daemon.passes == 1


def test_stop_during_a_pass_finishes_it_and_exits() -> None:
    """A stop request during a pass lets it finish, then the loop ends without waiting."""
    daemon = _daemon(Settings(update_on_start=True, interval=3600), lambda d: d.request_stop())
    assert daemon.run() == 0 and daemon.passes == 1


def test_a_failing_pass_does_not_end_the_daemon() -> None:
    """An exception in one pass is logged; the loop goes on to the next."""
    calls = []

    def failing(daemon: Daemon) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        daemon.request_stop()

    daemon = _daemon(Settings(update_on_start=True, interval=0), failing)
    assert daemon.run() == 0 and daemon.passes == 2


def test_triggers_during_a_pass_queue_one_more() -> None:
    """Triggers while a pass runs coalesce into exactly one more pass, with their names."""
    seen: list[tuple[str, ...]] = []

    def run_pass(stop_requested: Callable[[], bool], names: tuple[str, ...]) -> PassReport:
        seen.append(names)
        if len(seen) == 1:
            daemon.trigger(("b",))
            daemon.trigger(("a",))
        else:
            daemon.request_stop()
        return PassReport()

    daemon = Daemon(Settings(update_on_start=True, interval=3600), run_pass, now=lambda: NOW)
    assert daemon.run() == 0
    assert seen == [(), ("a", "b")]


def test_unreachable_engine_is_retried_with_backoff() -> None:
    """While the engine cannot be reached the daemon keeps going, retrying sooner than its
    interval with a growing delay; it never exits because of it."""
    from updater.errors import EngineUnavailable
    from updater.serve.daemon import retry_delay

    calls = []

    def run_pass(stop_requested: Callable[[], bool], names: tuple[str, ...]) -> PassReport:
        calls.append(1)
        if len(calls) < 3:
            raise EngineUnavailable("cannot reach the Docker engine")
        daemon.request_stop()
        return PassReport()

    waits: list[float] = []
    daemon = Daemon(Settings(update_on_start=True, interval=3600), run_pass, now=lambda: NOW,
                    wait=waits.append)
    assert daemon.run() == 0 and len(calls) == 3
    assert waits == [retry_delay(1), retry_delay(2)] == [5.0, 10.0]


def test_named_triggers_never_move_the_full_pass() -> None:
    """A named trigger is served at once; the full pass stays due when it was due, so a trigger
    every few seconds cannot postpone everything else forever."""
    seen: list[tuple[str, ...]] = []
    waits: list[float] = []

    def run_pass(stop_requested: Callable[[], bool], names: tuple[str, ...]) -> PassReport:
        seen.append(names)
        if len(seen) == 4:
            daemon.request_stop()
        return PassReport()

    def wait(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) <= 2:
            daemon.trigger(("a",))

    daemon = Daemon(Settings(interval=3600), run_pass, now=lambda: NOW, wait=wait)
    assert daemon.run() == 0
    assert seen == [("a",), ("a",), (), ()]
    # After each named pass the wait is for what is left of the hour, not a new hour.
    assert waits[0] == 3600 and 3599 < waits[1] <= 3600 and 3599 < waits[2] <= 3600
    assert waits[1] < waits[0] and waits[2] < waits[1]


def test_run_once_exit_codes() -> None:
    """run_once: 2 when the engine cannot be reached, 1 when an update failed or the pass was
    cut short, 0 otherwise."""
    from updater.core.report import ItemReport, Outcome
    from updater.errors import EngineUnavailable

    def unreachable(stop_requested: Callable[[], bool], names: tuple[str, ...]) -> PassReport:
        raise EngineUnavailable("cannot reach the Docker engine")

    def failed(stop_requested: Callable[[], bool], names: tuple[str, ...]) -> PassReport:
        return PassReport(items=[ItemReport("a", "r/a:1", Outcome.ROLLED_BACK)])

    def cut(stop_requested: Callable[[], bool], names: tuple[str, ...]) -> PassReport:
        return PassReport(items=[ItemReport("a", "r/a:1", Outcome.UPDATED)], error="engine gone")

    assert Daemon(Settings(run_once=True), unreachable).run() == 2
    assert Daemon(Settings(run_once=True), failed).run() == 1
    assert Daemon(Settings(run_once=True), cut).run() == 1


def test_health_turns_unhealthy_when_the_loop_is_past_its_deadline(tmp_path: Path) -> None:
    """The heartbeat thread keeps writing, but a loop past the time it was due to make
    progress is reported stuck."""
    from updater.serve import health

    deadline = [time.time() + 100]
    beat = health.Heartbeat(str(tmp_path), lambda: None, deadline=lambda: deadline[0])
    beat.beat()
    assert health.check(str(tmp_path)) is None
    deadline[0] = time.time() - 5
    beat.beat()
    problem = health.check(str(tmp_path))
    assert problem is not None and "past the time it was due to make progress" in problem
    deadline[0] = math.inf  # e.g. an update whose stop timeout is "as long as it takes"
    beat.beat()
    assert health.check(str(tmp_path)) is None
