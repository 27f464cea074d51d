"""The composition root: builds the long-lived parts (registry client with its token cache,
journal, history, notifier, metrics) once, and an engine connection per pass, so a restarted
dockerd is picked up. Every pass report goes to history, notifications and metrics."""

from __future__ import annotations

import dataclasses
import logging
import math
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from updater.actions.containers import ContainerUpdater
from updater.actions.passes import UpdatePass
from updater.actions.services import ServiceUpdater, is_leader
from updater.core.detect import PassLookups, watched
from updater.core.rebalance import ServicePlan, placement, plans, result_reason
from updater.core.report import ItemReport, Outcome, PassReport
from updater.core.settings import Settings
from updater.engine.adapter import Engine, own_container_id
from updater.errors import NotWatched, UpdaterError
from updater.notify import AppriseSender, Notifier
from updater.registry.client import RegistryClient
from updater.registry.credentials import (
    ChainedCredentials,
    CredentialSource,
    DockerConfigCredentials,
    SettingsCredentials,
)
from updater.serve.metrics import Metrics
from updater.store.history import History
from updater.store.journal import Journal, StateLock
from updater.store.state import PlatformDigests

log = logging.getLogger(__name__)
# How long a pass may go without reporting an item before the loop counts as stuck (an update
# in progress declares its own, longer bound).
PASS_ALLOWANCE = 1800.0


class Application:
    def __init__(self, settings: Settings, journal: Journal | None = None,
                 lock: StateLock | None = None) -> None:
        self.settings = settings
        self.lock = lock
        sources = ChainedCredentials(SettingsCredentials(settings.registries),
                                     DockerConfigCredentials())
        self.platforms = PlatformDigests(settings.state_dir)
        # Set on SIGTERM: registry backoffs end at once, slow notifications are let go.
        self.interrupted = threading.Event()
        self.registry = RegistryClient(settings.registries, sources,
                                       timeout=settings.registry_timeout, known=self.platforms,
                                       stopping=self.interrupted)
        # Pulls and service updates get what the registry client uses: nothing for a registry
        # that asks for nothing, and credentials kept fresh like the client's own.
        self.credentials: CredentialSource = self.registry
        self.journal = journal or Journal(settings.state_dir)
        self.history = History(settings.state_dir)
        self.metrics = Metrics(self.registry.stats)
        self._notifier: Notifier | None = None
        self._host: str | None = None
        self._failing = 0  # passes failed in a row
        self._last_rebalance = -math.inf
        self._undone: dict[str, tuple[dict[str, int], dict[str, int]]] = {}  # by the swarm

    def close(self) -> None:
        self.registry.close()
        self.platforms.close()
        self.journal.close()
        self.history.close()
        if self._notifier is not None:
            self._notifier.close()

    def __enter__(self) -> Application:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def run_pass(self, names: Iterable[str] = (),
                 stop_requested: Callable[[], bool] = lambda: False,
                 progress: Callable[[float], None] = lambda seconds: None) -> PassReport:
        """One pass; a pass that fails as a whole is counted and told once while passes keep
        failing (the daemon's status shows it as `last_error`)."""
        try:
            return self._run_pass(names, stop_requested, progress)
        except Exception as exc:
            self.pass_failed(str(exc) if isinstance(exc, UpdaterError)
                             else f"unexpected {type(exc).__name__}; see the updater's log")
            raise

    def unwatched(self, names: Iterable[str]) -> list[str]:
        """Those of `names` that match no watched container and no service: what a pass
        asked for them would refuse."""
        engine = Engine.connect(self.settings.docker_host)
        try:
            containers, errors = watched(engine.containers(), self.settings, names)
            services = ServiceUpdater(engine, self.registry, self.credentials,
                                      self.settings).names()
        finally:
            engine.close()
        found = {c.name for c in containers} | {e.name for e in errors} | set(services)
        return sorted(set(names) - found)

    def _run_pass(self, names: Iterable[str], stop_requested: Callable[[], bool],
                  progress: Callable[[float], None]) -> PassReport:
        if self.lock is not None and not self.lock.held:
            self.lock.acquire()  # given away to a successor that never came: take it back
        engine = Engine.connect(self.settings.docker_host)
        try:
            notifier = self._notifier_for(engine)
            own = own_container_id()
            updater = self._updater(engine, own)
            def on_item(item: ItemReport) -> None:
                progress(PASS_ALLOWANCE)
                if notifier is not None:
                    notifier.immediate(item)

            # One registry lookup per distinct reference for the whole pass, containers and
            # services together.
            lookups = PassLookups(self.registry)
            services = ServiceUpdater(engine, lookups, self.credentials, self.settings,
                                      own_container=own)
            report = UpdatePass(engine, lookups, updater, self.settings, on_item,
                                own, services, progress).run(tuple(names), stop_requested)
            if not names and not stop_requested() and report.error is None:
                report.items += self._rebalance(engine, services)
        finally:
            engine.close()
        self._record(report, notifier, full=not names)
        return report

    def pass_failed(self, error: str) -> None:
        """A pass that could not run: counted; told once while passes keep failing."""
        self.metrics.failed()
        self._note_failure(error)

    def _note_failure(self, error: str) -> None:
        self._failing += 1
        if self._failing == 1 and self.settings.notify:
            self._notifier_plain().tell("passes are failing", f"{error}. Nothing is updated "
                                        "until this is fixed; one message will say when passes "
                                        "work again.", "error")

    def _pass_worked(self) -> None:
        if self._failing and self.settings.notify:
            self._notifier_plain().tell("passes work again", f"after {self._failing} failed "
                                        f"pass{'es' if self._failing > 1 else ''}.", "info")
        self._failing = 0

    def recover(self) -> PassReport:
        """Finish or undo what a killed updater (or a predecessor handing over to this one)
        left in flight; done at start, before the first scheduled pass."""
        report = PassReport()
        engine = Engine.connect(self.settings.docker_host)
        try:
            notifier = self._notifier_for(engine)
            report.items += self._updater(engine, own_container_id()).recover()
        finally:
            engine.close()
        report.finished = time.time()
        if report.items:
            self._record(report, notifier, full=False)
        return report

    def _updater(self, engine: Engine, own: str | None) -> ContainerUpdater:
        return ContainerUpdater(engine, self.journal, self.credentials,
                                cleanup=self.settings.cleanup, own_id=own, lock=self.lock)

    def _record(self, report: PassReport, notifier: Notifier | None, full: bool = True) -> None:
        """History, metrics and notifications of a pass; a failure of one (a full or damaged
        state database) is logged and never changes what the pass did or reports."""
        steps: list[tuple[str, Callable[[], object]]] = [
            ("history", lambda: self.history.record(report.finished or report.started,
                                                    report.items)),
            ("metrics", lambda: self.metrics.observe(report, full))]
        if notifier is not None:
            steps.append(("notifications", lambda: notifier.after_pass(report)))
        for what, step in steps:
            try:
                step()
            except UpdaterError as exc:
                log.error("%s of this pass not recorded: %s", what, exc)
            except Exception:
                log.exception("%s of this pass not recorded", what)
        if report.error:
            self._note_failure(report.error)
        else:
            self._pass_worked()

    def notifications_in_flight(self) -> int:
        return self._notifier.in_flight() if self._notifier is not None else 0

    def _rebalance(self, engine: Engine, services: ServiceUpdater) -> list[ItemReport]:
        """The periodic rebalance of `rebalance: {enabled, threshold, interval}` (leader only)."""
        settings = self.settings.rebalance
        if not settings.enabled or time.monotonic() - self._last_rebalance < settings.interval:
            return []
        if not is_leader(engine):
            return []
        self._last_rebalance = time.monotonic()
        found = plans(engine.nodes(), engine.services(), engine.tasks(), settings.threshold)
        return self.rebalance(engine, services, found)

    def rebalance(self, engine: Engine, services: ServiceUpdater,
                  found: list[ServicePlan]) -> list[ItemReport]:
        """Carry out `found`, each reported by where its tasks ended up. A plan the swarm undid
        (the tasks went back where they were) is not carried out again while the placement
        and the plan stay the same: a forced update would restart every task for nothing."""
        items: list[ItemReport] = []
        for plan in found:
            attempt = (dict(plan.before), dict(plan.after))
            if self._undone.get(plan.service) == attempt:
                log.info("%s: not rebalanced: the swarm undid this same plan last time",
                         plan.service)
                continue
            for done in services.rebalance([plan]):
                if done.outcome is not Outcome.REBALANCED:
                    items.append(done)
                    continue
                service_id = str(engine.inspect_service(plan.service)["ID"])
                result = placement(service_id, engine.nodes(), engine.tasks())
                if {n: result.get(n, 0) for n in plan.before} == attempt[0]:
                    self._undone[plan.service] = attempt
                else:
                    self._undone.pop(plan.service, None)
                items.append(dataclasses.replace(done, reason=result_reason(plan, result)))
        return items

    def _notifier_for(self, engine: Engine) -> Notifier | None:
        if not self.settings.notify:
            return None
        if self._notifier is None:
            self._host = engine.host_name() or socket.gethostname()
        return self._notifier_plain()

    def _notifier_plain(self) -> Notifier:
        """The notifier; named after the engine's host once one answered, else this one's."""
        if self._notifier is None:
            self._notifier = Notifier(self.settings, self._host or socket.gethostname(),
                                      AppriseSender(self.settings.notify), self.interrupted)
        return self._notifier


class DaemonControl:
    """What the HTTP API sees of a running daemon."""

    def __init__(self, app: Application, trigger: Callable[[tuple[str, ...]], None],
                 state: Callable[[], dict[str, Any]]) -> None:
        self._app = app
        self._trigger = trigger
        self._state = state

    def trigger(self, names: tuple[str, ...] = ()) -> None:
        """Queue a pass; NotWatched (nothing queued) when a name matches nothing watched."""
        missing = self._app.unwatched(names) if names else []
        if missing:
            raise NotWatched(f"no watched container or service named {', '.join(missing)}; "
                             "check the name and its updater.enable label")
        self._trigger(names)

    def status(self) -> dict[str, Any]:
        return self._state()

    def history(self, name: str | None, limit: int) -> list[dict[str, Any]]:
        return self._app.history.entries(name, limit)

    def metrics(self) -> bytes:
        return self._app.metrics.exposition()
