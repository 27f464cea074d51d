"""`updater run`: the daemon's schedule, the heartbeat and the HTTP API around one
Application, under the state lock. Built from settings, then `Server.run()` until SIGTERM
(uvicorn's Config → Server.run shape)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from updater import __version__
from updater.actions.pushed import concerned_items
from updater.app import Application
from updater.core.detect import watched
from updater.core.pushes import Push
from updater.core.report import Outcome, PassReport, pending, short_digest
from updater.core.settings import Settings
from updater.engine.adapter import Engine
from updater.errors import NotWatched, UpdaterError
from updater.serve.api import ApiServer, parse_listen
from updater.serve.board import Board, fleet_rows
from updater.serve.daemon import Daemon
from updater.serve.dashboard import Dashboard
from updater.serve.fleet import Fleet, FleetEndpoint
from updater.serve.health import Heartbeat
from updater.serve.hooks import Debounce, PushHook
from updater.store.journal import StateLock

log = logging.getLogger("updater")
# A predecessor handing over to this updater lets go of the lock within seconds.
LOCK_WAIT = 120.0


class Server:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.notifications_in_flight = 0  # after run(): what was still being sent

    def run(self) -> int:
        """Until SIGTERM (or one pass with `run_once`); the daemon's exit code."""
        settings = self.settings
        with StateLock(settings.state_dir, wait=LOCK_WAIT) as lock, \
                Application(settings, lock=lock) as app:
            app.open_state()  # before the heartbeat says it started
            api: list[ApiServer] = []
            board = Board()  # every item as its last pass left it, for the dashboard

            def one_pass(stop_requested: Callable[[], bool],
                         names: tuple[str, ...]) -> PassReport:
                started = time.time()
                try:
                    report = app.run_pass(names, stop_requested, daemon.expect,
                                          daemon.retrying, daemon.asked, daemon.forcing)
                except BaseException:  # no report: what the pass carried is not in progress
                    board.failed(started)
                    raise
                if fleet is not None:
                    fleet.after_pass(report, full=not names)
                board.after_pass(report, full=not names)
                for item in report.items:
                    if item.outcome not in (Outcome.UP_TO_DATE, Outcome.PINNED):
                        log.info("report: %s %s %s -> %s%s", item.name, item.outcome.value,
                                 short_digest(item.old_digest), short_digest(item.new_digest),
                                 f" ({item.reason})" if item.reason else "")
                return report

            fleet = None
            if settings.fleet_token and settings.http_api.listen:
                fleet = Fleet(settings, app.registry, parse_listen(settings.http_api.listen)[1],
                              app.metrics.fleet_counted)
                app.digests = fleet.source

            def listen() -> None:
                # Only after recovery: a predecessor handing over to this updater (on the host
                # network) holds the port until the recovery has stopped it.
                server = _start_api(settings, app, daemon, fleet, board)
                if server is not None:
                    api.append(server)
                    try:  # the page lists them before the first pass
                        board.seed(app.on_engine(lambda engine: [  # no registry
                            (c.name, c.image)
                            for c in watched(engine.containers(), settings)[0]]))
                    except UpdaterError as exc:
                        log.debug("dashboard: watched containers not listed yet: %s", exc)

            daemon = Daemon(settings, one_pass, on_start=app.recover, on_started=listen,
                            on_stop=app.interrupted.set)
            heartbeat = Heartbeat(settings.state_dir, daemon.problem, active=lambda: lock.held,
                                  deadline=lambda: daemon.deadline)
            heartbeat.start()
            log.info("updater %s running against %s", __version__, settings.docker_host)
            try:
                code = daemon.run()
            finally:
                heartbeat.stop()
                for server in api:
                    server.stop()
                if fleet is not None:
                    fleet.close()
            self.notifications_in_flight = app.notifications_in_flight()
        return code


def _start_api(settings: Settings, app: Application, daemon: Daemon,
               fleet: Fleet | None, board: Board) -> ApiServer | None:
    listen, token = settings.http_api.listen, settings.http_api.token
    if not listen or not token:
        return None

    def state() -> dict[str, Any]:
        report = daemon.last_report
        return {"version": __version__, "running": daemon.running, "passes": daemon.passes,
                "last_pass": report.as_dict() if report else None,
                "last_error": daemon.last_error}

    def undone(report: PassReport) -> None:
        board.after_pass(report, full=False)

    control = DaemonControl(app, daemon.trigger, state, lambda: daemon.last_report,
                            daemon.submit, undone, gave_up=board.done)
    hook = endpoint = None
    burst = Debounce(lambda names: daemon.trigger(names, asked=False))

    def pushed(found: list[Push]) -> list[str]:
        if fleet is not None:
            fleet.pushed(found)  # old answers for the fleet; passed on to the nodes
        return control.pushed(found)

    if settings.webhook_token:
        hook = PushHook(settings.webhook_token, pushed, burst)
    if fleet is not None and settings.fleet_token:
        shared = Debounce(lambda names: daemon.trigger(names, asked=False, fresh=False))

        def passed_on(found: list[Push]) -> list[str]:
            names = control.pushed(found)
            if names:
                log.info("push passed on by the leader: a pass for %s", ", ".join(names))
                shared.add(names)
            return names
        endpoint = FleetEndpoint(settings.fleet_token, fleet.cache, fleet.leading,
                                 settings.interval, fleet.reports, passed_on, fleet.pushed)
    server = ApiServer(listen, token, control, hook, endpoint)
    if settings.http_api.dashboard:
        desk = Desk(app, daemon, board, control, fleet)
        server.dashboard = Dashboard(desk, server.token_matches,
                                     settings.http_api.session_lifetime)
    return server.start()


class DaemonControl:
    """What the HTTP API sees of a running daemon."""

    def __init__(self, app: Application, trigger: Callable[..., None],
                 state: Callable[[], dict[str, Any]],
                 last_report: Callable[[], PassReport | None] = lambda: None,
                 submit: Callable[[str, Callable[[], object]], None] = lambda what, job: None,
                 undone: Callable[[PassReport], None] = lambda report: None,
                 gave_up: Callable[[str], None] = lambda name: None) -> None:
        self._app = app
        self._undone = undone
        self._gave_up = gave_up  # a rollback's job failed: `name` is no longer in progress
        self._submit = submit
        self._trigger = trigger
        self._state = state
        self._last_report = last_report

    def trigger(self, names: tuple[str, ...] = (), force: bool = False,
                kind: str = "container") -> None:
        """Queue a pass (`force`: updating monitor-only `names` of `kind` too); NotWatched
        (nothing queued) when a name matches nothing watched."""
        missing = self._app.unwatched(names) if names else []
        if missing:
            raise NotWatched(f"no watched container or service named {', '.join(missing)}; "
                             "check the name and its updater.enable label")
        if force:
            self._trigger(names, force=kind)
        else:
            self._trigger(names)

    def status(self) -> dict[str, Any]:
        return self._state()

    def history(self, name: str | None, limit: int) -> list[dict[str, Any]]:
        return self._app.history.entries(name, limit)

    def metrics(self) -> bytes:
        return self._app.metrics.exposition()

    def decide(self, name: str, digest: str | None, decision: str) -> str:
        """Record the decision; an approved update is applied by a pass queued for `name`."""
        decided = self._app.decide(name, digest, decision)
        if decision == "approved":
            self._trigger((name,))
        return decided

    def rollback(self, name: str) -> str:
        """Queue `updater rollback NAME` in the daemon's loop; the image it goes back to.
        UpdaterError (NotWatched) when there is nothing to go back to: nothing queued."""
        plan = self._app.rollback_plan(name)

        def job() -> None:
            try:
                report = self._app.rollback(name)
            except BaseException:
                self._gave_up(name)
                raise
            self._undone(report)
        self._submit(f"rollback of {name}", job)
        return plan.image

    def pushed(self, found: list[Push]) -> list[str]:
        """The watched items a push notification concerns (EngineError when the engine
        cannot say)."""
        engine = Engine.connect(self._app.settings.docker_host)
        try:
            return concerned_items(engine, self._app.settings, found)
        finally:
            engine.close()

    def pending(self) -> dict[str, Any]:
        """What the last pass left waiting (no registry request: a dashboard may poll it)."""
        report = self._last_report()
        return pending(report) if report is not None else {"as_of": None, "items": []}


class Desk:
    """What the dashboard sees of a running daemon, and the actions it may ask for; every
    action is recorded in the history as from the dashboard."""

    def __init__(self, app: Application, daemon: Daemon, board: Board, control: DaemonControl,
                 fleet: Fleet | None) -> None:
        self._app = app
        self._daemon = daemon
        self._board = board
        self._control = control
        self._fleet = fleet
        self._host: str | None = None

    def _node(self) -> str:
        if self._fleet is not None and self._fleet.hostname:
            return self._fleet.hostname
        if self._host is None:
            try:
                self._host = self._app.on_engine(lambda engine: engine.host_name()) or ""
            except UpdaterError:
                return ""
        return self._host

    def rows(self) -> list[dict[str, Any]]:
        rows = self._board.rows(self._node())
        if self._fleet is not None and self._fleet.leading():
            rows += fleet_rows(self._fleet.reports.view(time.time()), self._node())
        return rows

    def version(self) -> str:
        fleet = self._fleet.reports.received if self._fleet is not None else 0
        return f"{self._board.version}.{fleet}"

    def item(self, kind: str, name: str) -> dict[str, Any] | None:
        return self._board.item(kind, name)

    def history(self, name: str, limit: int) -> list[dict[str, Any]]:
        return self._app.history.entries(name, limit)

    def status(self) -> dict[str, Any]:
        report = self._daemon.last_report
        return {"running": self._daemon.running, "passes": self._daemon.passes,
                "last_pass": None if report is None else {
                    "started": report.started, "finished": report.finished,
                    "summary": report.summary()},
                "next_due": self._daemon.next_due, "last_error": self._daemon.last_error}

    def act(self, action: str, name: str | None, kind: str, digest: str | None) -> str:
        names = (name,) if name else ()
        if action == "update":
            self._control.trigger(names, force=True, kind=kind)
            said, done = f"an update of {name or 'every item'} is queued", "update-asked"
        elif action == "undo":
            assert name is not None
            said = f"{name} goes back to {self._control.rollback(name)}"
            done = "undo-asked"
        else:
            assert name is not None
            done = "approved" if action == "approve" else "skipped"
            said = f"{done} {self._control.decide(name, digest, done)} for {name}"
            if action == "skip":  # a pass shows it (approved: `decide` queued one)
                self._control.trigger(names)
        self._board.queue(names, action)
        found = self._board.item(kind, name) if name else None
        try:
            self._app.history.note(time.time(), name or "(every item)", kind if name else "pass",
                                   str((found or {}).get("image") or ""), done, digest,
                                   "from the dashboard")
        except UpdaterError as exc:  # done all the same: say so in the log
            log.error("dashboard: %s, but not recorded in the history: %s", said, exc)
        return said
