"""`updater run`: the daemon's schedule, the heartbeat and the HTTP API around one
Application, under the state lock. Built from settings, then `Server.run()` until SIGTERM
(uvicorn's Config → Server.run shape)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from updater import __version__
from updater.actions.pushed import concerned_items
from updater.app import Application
from updater.core.pushes import Push
from updater.core.report import Outcome, PassReport, pending, short_digest
from updater.core.settings import Settings
from updater.engine.adapter import Engine
from updater.errors import NotWatched
from updater.serve.api import ApiServer, parse_listen
from updater.serve.daemon import Daemon
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

            def one_pass(stop_requested: Callable[[], bool],
                         names: tuple[str, ...]) -> PassReport:
                report = app.run_pass(names, stop_requested, daemon.expect, daemon.retrying,
                                      daemon.asked)
                if fleet is not None:
                    fleet.after_pass(report, full=not names)
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
                server = _start_api(settings, app, daemon, fleet)
                if server is not None:
                    api.append(server)

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
               fleet: Fleet | None) -> ApiServer | None:
    listen, token = settings.http_api.listen, settings.http_api.token
    if not listen or not token:
        return None

    def state() -> dict[str, Any]:
        report = daemon.last_report
        return {"version": __version__, "running": daemon.running, "passes": daemon.passes,
                "last_pass": report.as_dict() if report else None,
                "last_error": daemon.last_error}

    control = DaemonControl(app, daemon.trigger, state, lambda: daemon.last_report,
                            daemon.submit)
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
    return ApiServer(listen, token, control, hook, endpoint).start()


class DaemonControl:
    """What the HTTP API sees of a running daemon."""

    def __init__(self, app: Application, trigger: Callable[[tuple[str, ...]], None],
                 state: Callable[[], dict[str, Any]],
                 last_report: Callable[[], PassReport | None] = lambda: None,
                 submit: Callable[[str, Callable[[], object]], None] = lambda what, job: None,
                 ) -> None:
        self._app = app
        self._submit = submit
        self._trigger = trigger
        self._state = state
        self._last_report = last_report

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
        self._submit(f"rollback of {name}", lambda: self._app.rollback(name))
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
