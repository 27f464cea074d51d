"""The composition root: builds the long-lived parts (registry client with its token cache,
journal, history, notifier, metrics) once, and an engine connection per pass, so a restarted
dockerd is picked up. Every pass report goes to history, notifications and metrics."""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import TypeVar

from updater.actions.containers import ContainerUpdater
from updater.actions.locate import is_leader
from updater.actions.passes import UpdatePass
from updater.actions.rebalancing import Rebalancer
from updater.actions.services import ServiceUpdater
from updater.actions.undo import Plan, Undo
from updater.core.detect import (
    CheckResult,
    approvable,
    check,
    from_item,
    require_names,
    summary,
    watched,
    with_waiting,
)
from updater.core.lookups import DigestSource, PassLookups
from updater.core.policy import State, checked_digest
from updater.core.rebalance import ServicePlan
from updater.core.report import ItemReport, PassReport
from updater.core.settings import Settings
from updater.engine.adapter import Engine, own_container_id
from updater.errors import NotWatched, UpdaterError
from updater.notify import Notifier, Telling
from updater.registry.client import RegistryClient
from updater.registry.credentials import (
    ChainedCredentials,
    CredentialSource,
    DockerConfigCredentials,
    SettingsCredentials,
)
from updater.serve.metrics import Metrics
from updater.store.decisions import DecisionsSoFar, OperatorDecisions
from updater.store.history import History
from updater.store.journal import Journal, RollbacksSoFar, StateLock
from updater.store.kept import KeptImages
from updater.store.seen import FirstSeen, SeenSoFar
from updater.store.state import PlatformDigests

log = logging.getLogger(__name__)
T = TypeVar("T")
_STATE_PARTS = ("platforms", "journal", "history", "seen", "decisions", "kept")
# How long a pass may go without reporting an item before the loop counts as stuck (an update
# in progress declares its own, longer bound).
PASS_ALLOWANCE = 1800.0


class Application:
    def __init__(self, settings: Settings, journal: Journal | None = None,
                 lock: StateLock | None = None, remember: bool = True) -> None:
        """`remember=False` (for `check`): registry answers are not stored, so nothing is
        opened in `state_dir` unless a command asks for the journal or the history."""
        self.settings = settings
        self.lock = lock
        self._remember = remember
        # Set on SIGTERM: registry backoffs end at once, slow notifications are let go.
        self.interrupted = threading.Event()
        if journal is not None:
            self.journal = journal
        self.telling = Telling(settings, self.interrupted)
        self.rebalancer = Rebalancer(settings.rebalance)
        # Where a pass's digests come from (the swarm's leader, with a fleet_token): (engine,
        # whether someone asked for the pass) -> the source; else the registries.
        self.digests: Callable[[Engine, bool], DigestSource] | None = None

    # The long-lived parts, each built once when first used and closed by close().
    @functools.cached_property
    def platforms(self) -> PlatformDigests:
        return PlatformDigests(self.settings.state_dir)

    @functools.cached_property
    def registry(self) -> RegistryClient:
        sources = ChainedCredentials(SettingsCredentials(self.settings.registries),
                                     DockerConfigCredentials())
        return RegistryClient(self.settings.registries, sources,
                              timeout=self.settings.registry_timeout,
                              known=self.platforms if self._remember else None,
                              stopping=self.interrupted)

    @property
    def credentials(self) -> CredentialSource:
        """What pulls and service updates use: the registry client's own, kept fresh."""
        return self.registry

    @functools.cached_property
    def journal(self) -> Journal:
        return Journal(self.settings.state_dir)

    @functools.cached_property
    def history(self) -> History:
        return History(self.settings.state_dir)

    @functools.cached_property
    def seen(self) -> FirstSeen | SeenSoFar:
        """When each digest was first seen (the minimum age counts from it); `check` reads
        it without recording."""
        if self._remember:
            return FirstSeen(self.settings.state_dir)
        return SeenSoFar(self.settings.state_dir)

    @functools.cached_property
    def decisions(self) -> OperatorDecisions | DecisionsSoFar:
        """Operators' approvals and skips; `check` reads them without opening for writing."""
        if self._remember:
            return OperatorDecisions(self.settings.state_dir)
        return DecisionsSoFar(self.settings.state_dir)

    @functools.cached_property
    def kept(self) -> KeptImages:
        """The images containers ran before their updates, for `updater rollback`."""
        return KeptImages(self.settings.state_dir, self.settings.keep_images)

    @functools.cached_property
    def metrics(self) -> Metrics:
        return Metrics(self.registry.stats)

    def open_state(self) -> None:
        """Open (create, upgrade) the state database now (a daemon's start); ConfigError when
        `state_dir` cannot be used."""
        for part in _STATE_PARTS:
            getattr(self, part)

    def close(self) -> None:
        for part in ("registry", *_STATE_PARTS):
            if part in self.__dict__:
                self.__dict__[part].close()
        self.telling.close()

    def __enter__(self) -> Application:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def run_pass(self, names: Iterable[str] = (),
                 stop_requested: Callable[[], bool] = lambda: False,
                 progress: Callable[[float], None] = lambda seconds: None,
                 retry: Collection[str] | None = None, asked: bool = True,
                 forced: Collection[str] = ()) -> PassReport:
        """One pass (`asked` for, or on schedule; the `forced` items updated although
        monitor-only); a pass that fails as a whole is counted and told once while passes keep
        failing (the daemon's status shows it as `last_error`)."""
        try:
            return self._run_pass(names, stop_requested, progress, retry, asked, forced)
        except Exception as exc:
            self.pass_failed(str(exc) if isinstance(exc, UpdaterError)
                             else f"unexpected {type(exc).__name__}; see the updater's log")
            raise

    def check(self, names: Iterable[str] = ()) -> list[CheckResult]:
        """`check`: what would move, containers and services, changing nothing. One registry
        lookup per distinct reference; names that match nothing are an error."""
        names, started = tuple(names), time.monotonic()
        engine = Engine.connect(self.settings.docker_host)
        try:
            containers, results = watched(engine.containers(), self.settings, names)
            lookups = PassLookups(self.registry)  # containers and services of one image: one
            found = check(containers, lookups, platform_of=engine.platform,
                          settings=self.settings)
            rollbacks = RollbacksSoFar(self.settings.state_dir)
            results += [with_waiting(result, container, self.settings, self.seen,
                                     self.decisions, rollbacks.rolled_back)
                        for container, result in zip(containers, found, strict=True)]
            services = ServiceUpdater(engine, lookups, self.credentials, self.settings,
                                      seen=self.seen, decisions=self.decisions)
            results += [from_item(item) for item in services.check(names)]
        finally:
            engine.close()
        require_names(names, [r.name for r in results])
        log.info("check: %s; %d registry requests in %.2fs", summary(results),
                 sum(self.registry.stats()[0].values()), time.monotonic() - started)
        return sorted(results, key=lambda r: (r.kind, r.name))

    def decide(self, name: str, digest: str | None, decision: str) -> str:
        """Approve (or skip for good) `digest`, else the one `name` waits for now, for the
        item `name`; that digest. UpdaterError for an unknown name or a bad digest."""
        if digest is None:
            digest = self._waiting_for(name)
        else:
            checked_digest(digest)
            if missing := self.unwatched([name]):
                raise NotWatched(f"no watched container or service named {missing[0]}; "
                                 "check the name and its updater.enable label")
        decisions = self.decisions
        assert isinstance(decisions, OperatorDecisions), "decided by a read-only application"
        decisions.decide(name, digest, decision)
        log.info("%s: %s %s", name, decision, digest)
        return digest

    def _waiting_for(self, name: str) -> str:
        found = [r.remote_digest for r in self.check([name]) if r.name == name
                 and r.state is State.UPDATE_AVAILABLE and r.remote_digest is not None]
        return approvable(name, found[0] if found else None, self.history.entries(name, 1),
                          self.decisions.decision(name, found[0]) if found else None)

    def unwatched(self, names: Sequence[str]) -> list[str]:
        """Those of `names` matching no watched container or service (a pass would refuse)."""
        def found(engine: Engine) -> set[str]:
            containers, errors = watched(engine.containers(), self.settings, names)
            return {c.name for c in containers} | {e.name for e in errors} | set(
                ServiceUpdater(engine, self.registry, self.credentials, self.settings).names())
        return sorted(set(names) - self.on_engine(found))

    def _run_pass(self, names: Iterable[str], stop_requested: Callable[[], bool],
                  progress: Callable[[float], None], retry: Collection[str] | None,
                  asked: bool, forced: Collection[str]) -> PassReport:
        if self.lock is not None and not self.lock.held:
            self.lock.acquire()  # given away to a successor that never came: take it back
        engine = Engine.connect(self.settings.docker_host)
        try:
            notifier = self.telling.notifier(engine.host_name)
            updater = self._updater(engine, own := own_container_id())
            def on_item(item: ItemReport) -> None:
                progress(PASS_ALLOWANCE)
                if notifier is not None:
                    notifier.immediate(item)

            # One registry lookup per distinct reference for the whole pass, containers and
            # services together.
            lookups = PassLookups(self.registry if self.digests is None
                                  else self.digests(engine, asked))
            services = ServiceUpdater(engine, lookups, self.credentials, self.settings,
                                      own_container=own, seen=self.seen,
                                      decisions=self.decisions, forced=forced)
            report = UpdatePass(engine, lookups, updater, self.settings, on_item, own,
                                services, progress, self.seen, self.decisions,
                                forced=forced).run(
                                    tuple(names), stop_requested, retry)
            if not names and not stop_requested() and report.error is None:
                report.items += self.rebalancer.periodic(engine, services)
        finally:
            engine.close()
        self._record(report, notifier, full=not names)
        return report

    def pass_failed(self, error: str) -> None:
        """A pass that could not run: counted; told once while passes keep failing."""
        self.metrics.failed()
        self.telling.failed(error)

    def recover(self) -> PassReport:
        """Finish or undo what a killed updater (or a predecessor handing over to this one)
        left in flight; done at start, before the first scheduled pass."""
        return self._acting(lambda engine: self._updater(engine, own_container_id()).recover(),
                            quiet=True)

    def _acting(self, act: Callable[[Engine], list[ItemReport]],
                quiet: bool = False) -> PassReport:
        """The report of what `act` did on the engine outside a pass, recorded and told (when
        `quiet`, only if it did something)."""
        report = PassReport()
        engine = Engine.connect(self.settings.docker_host)
        try:
            notifier = self.telling.notifier(engine.host_name)
            report.items += act(engine)
        finally:
            engine.close()
        report.finished = time.time()
        if report.items or not quiet:
            self._record(report, notifier, full=False)
        return report

    def _updater(self, engine: Engine, own: str | None) -> ContainerUpdater:
        return ContainerUpdater(engine, self.journal, self.credentials,
                                cleanup=self.settings.cleanup, own_id=own, lock=self.lock,
                                kept=self.kept)

    def _undo(self, engine: Engine) -> Undo:
        decisions = self.decisions
        assert isinstance(decisions, OperatorDecisions), "undone by a read-only application"
        return Undo(engine, self.kept, self.settings, self.credentials, own_container_id(),
                    decisions)

    def rollback_plan(self, name: str) -> Plan:
        """What `rollback` would do for `name`, changing nothing; UpdaterError (NotWatched)
        when there is nothing to go back to."""
        return self.on_engine(lambda engine: self._undo(engine).plan(name))

    def rollback(self, name: str) -> PassReport:
        """`updater rollback NAME`: back to the image it ran before its last update, which is
        then held back; recorded and told like a pass."""
        def undo(engine: Engine) -> list[ItemReport]:
            own = own_container_id()
            passes = UpdatePass(engine, self.registry, self._updater(engine, own),
                                self.settings, own_id=own)
            return self._undo(engine).run(name, passes)
        return self._acting(undo)

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
            self.telling.failed(report.error)
        else:
            self.telling.worked()

    def notifications_in_flight(self) -> int:
        return self.telling.in_flight()

    def on_engine(self, use: Callable[[Engine], T]) -> T:
        """`use` a connection to the engine, closed after."""
        engine = Engine.connect(self.settings.docker_host)
        try:
            return use(engine)
        finally:
            engine.close()

    def plan_rebalance(self, names: Sequence[str], threshold: float) -> list[ServicePlan]:
        """The plans `rebalance` would carry out for the replicated services `names` (all when
        none)."""
        return self.on_engine(lambda engine: self.rebalancer.plan(engine, names, threshold))

    def carry_out(self, found: list[ServicePlan]) -> list[ItemReport]:
        """Carry out plans from `plan_rebalance` (the leader alone moves tasks)."""
        def carry(engine: Engine) -> list[ItemReport]:
            if not is_leader(engine):
                raise UpdaterError("only the swarm leader rebalances; run it against the "
                                   "leader")
            services = ServiceUpdater(engine, self.registry, self.credentials, self.settings)
            return self.rebalancer.carry_out(engine, services, found)
        return self.on_engine(carry)
