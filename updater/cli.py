"""The command line: the only place that prints and exits.

Exit codes: 0 done; 1 an update failed; 2 a usage, configuration or environment error (one
clear line on stderr, never a traceback).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from updater import __version__, config, logs
from updater.errors import UpdaterError
from updater.store.history import DEFAULT_LIMIT, MAX_LIMIT, parse_limit

# Each command imports what it needs when it runs: `updater --version` or `updater config`
# should not pay for the docker SDK, httpx or prometheus_client.
if TYPE_CHECKING:
    from updater.app import Application
    from updater.core.detect import CheckResult, PassLookups
    from updater.core.report import PassReport
    from updater.core.settings import Settings
    from updater.core.snapshots import ContainerSnapshot
    from updater.engine.adapter import Engine
    from updater.registry.credentials import CredentialSource
    from updater.serve.api import ApiServer
    from updater.serve.daemon import Daemon

log = logging.getLogger("updater")
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
LOCK_WAIT = 120.0


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit 2, as for every other user error."""

    commands: dict[str, _Parser]

    def error(self, message: str) -> Any:
        raise _UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


class _UsageError(Exception):
    pass


# One line of help per setting, for the flags of the commands it applies to.
_SETTING_HELP = {
    "docker_host": "the engine's address, or DOCKER_HOST [unix:///var/run/docker.sock]",
    "label_enable": "watch only containers labelled updater.enable=true [on]",
    "scope": "watch only containers labelled updater.scope=SCOPE",
    "registry_timeout": "time limit of one registry request [10s]",
    "monitor_only": "report and notify available updates, change nothing",
    "cleanup": "remove the old image after an update",
    "stop_timeout": "how long a container may take to stop [its own, else 10s]",
    "health_timeout": "how long a new container may take to run and be healthy [60s]",
    "rollback": "put the old container back when the new one fails [on]",
    "rolling_restart": "accepted for Watchtower users; updates already run one at a time",
    "notify": "an Apprise URL to notify; repeat for more",
    "notify_level": "the least level notified: debug, info, warning, error [info]",
    "notify_template": "the message body: {entries}, {summary}, {count}, {host} [{entries}]",
    "state_dir": "where the journal, history and lock are kept [/var/lib/updater]",
    "interval": "time between passes, e.g. 30m [1h]",
    "schedule": "a 5-field cron expression, instead of --interval",
    "jitter": "up to this much more between passes, at random [0]",
    "update_on_start": "run a pass at once, not after the first interval",
    "run_once": "run one pass and exit",
    "log_level": "debug, info, warning, error [info]",
    "log_format": "text or json [text]",
}
_ENGINE = ("docker_host",)
_WATCH = ("label_enable", "scope")
_REGISTRY = ("registry_timeout",)
_UPDATE = ("monitor_only", "cleanup", "stop_timeout", "health_timeout", "rollback",
           "rolling_restart")
_NOTIFY = ("notify", "notify_level", "notify_template")
_SCHEDULE = ("interval", "schedule", "jitter", "update_on_start", "run_once")
_STATE = ("state_dir",)
_LOGS = ("log_level", "log_format")
_ALL = tuple(_SETTING_HELP)
# The settings each command uses; `config` shows them all, so it takes them all.
COMMAND_SETTINGS: dict[str, tuple[str, ...]] = {
    "check": _ENGINE + _WATCH + _REGISTRY + _LOGS,
    "update": _ENGINE + _WATCH + _REGISTRY + _UPDATE + _NOTIFY + _STATE + _LOGS,
    "run": _ALL,
    "rebalance": _ENGINE + _REGISTRY + _STATE + _LOGS,
    "where": _ENGINE + _LOGS,
    "history": _STATE + _LOGS,
    "health": _STATE + _LOGS,
    "config": _ALL,
    "swap": _ENGINE + _STATE + _LOGS + ("health_timeout",),
}


def main(argv: Sequence[str] | None = None) -> int:
    try:
        arguments = _parse(_parser(), argv)
    except _UsageError as exc:
        print(exc, file=sys.stderr)  # "updater[ COMMAND]: what is wrong (see ... --help)"
        return EXIT_USAGE
    command: Callable[[argparse.Namespace, Settings], int] = arguments.handler
    try:
        settings = config.load(getattr(arguments, "config", None), flags=_flags(arguments))
        logs.configure(settings.log_level, settings.log_format, settings.secrets())
        return command(arguments, settings)
    except UpdaterError as exc:
        print(f"updater: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


def _parser() -> _Parser:
    parser = _Parser(prog="updater",
                     description="Keep Docker containers on the newest image for their tag.")
    parser.add_argument("--version", action="version", version=f"updater {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     parser_class=_Parser)
    parser.commands = {}

    def command(name: str, handler: Callable[[argparse.Namespace, Settings], int],
                help: str) -> _Parser:
        sub: _Parser = commands.add_parser(name, help=help, description=help)
        parser.commands[name] = sub
        sub.set_defaults(handler=handler)
        _add_settings(sub, COMMAND_SETTINGS[name])
        return sub

    checker = command("check", _check, "report which images are stale; changes nothing")
    checker.add_argument("names", nargs="*", metavar="NAME",
                         help="only these containers or services")
    checker.add_argument("--json", action="store_true", help="print a JSON array")
    updater = command("update", _update, "apply updates now, once")
    updater.add_argument("names", nargs="*", metavar="NAME",
                         help="only these containers or services")
    updater.add_argument("--json", action="store_true", help="print the pass report as JSON")
    command("run", _run, "the daemon: update on a schedule until SIGTERM")
    balancer = command("rebalance", _rebalance, "swarm: spread the tasks of replicated services")
    balancer.add_argument("services", nargs="*", metavar="SERVICE", help="only these services")
    balancer.add_argument("--dry-run", action="store_true", help="print the plan, move nothing")
    balancer.add_argument("--threshold", type=float, default=1.0,
                          help="standard deviation of tasks per node that is tolerated [1.0]")
    locator = command("where", _where, "swarm: the node and container of each task of a service")
    locator.add_argument("service", metavar="SERVICE")
    locator.add_argument("--json", action="store_true", help="print a JSON array")
    historian = command("history", _history, "what was done, newest first")
    historian.add_argument("name", nargs="?", metavar="NAME",
                           help="only this container or service")
    historian.add_argument("--json", action="store_true", help="print a JSON array")
    historian.add_argument("--limit", type=_limit, default=DEFAULT_LIMIT,
                           help=f"at most this many, 1 to {MAX_LIMIT} [{DEFAULT_LIMIT}]")
    command("health", _health, "exit 0 when `updater run` here is alive (HEALTHCHECK)")
    command("config", _show_config, "validate and print the effective configuration")
    swapper = command("swap", _swap, "internal: the helper container of a self-update that "
                                     "must stop the old updater before the new one can start")
    swapper.add_argument("entry", type=int, metavar="ENTRY", help="its journal entry")
    return parser


def _add_settings(parser: _Parser, keys: tuple[str, ...]) -> None:
    """The settings flags that apply to a command, each with its line of help."""
    group = parser.add_argument_group("settings (also from the config file and UPDATER_*)")
    group.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                       help="YAML config file (or UPDATER_CONFIG)")
    for key in keys:
        flag, dest = "--" + key.replace("_", "-"), f"setting_{key}"
        text = _SETTING_HELP[key]
        if config.FLAG_KEYS[key]:
            group.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction,
                               default=argparse.SUPPRESS, help=text)
        elif key == "notify":
            group.add_argument(flag, dest=dest, action="append", metavar="URL",
                               default=argparse.SUPPRESS, help=text)
        else:
            group.add_argument(flag, dest=dest, metavar="VALUE", default=argparse.SUPPRESS,
                               help=text)


def _parse(parser: _Parser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse; arguments the command does not take are reported by that command, so the hint
    names its own --help."""
    arguments, extras = parser.parse_known_args(argv)
    if extras:
        parser.commands[arguments.command].error(f"unrecognized arguments: {' '.join(extras)}")
    return arguments


def _limit(text: str) -> int:
    try:
        return parse_limit(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _flags(arguments: argparse.Namespace) -> dict[str, Any]:
    prefix = "setting_"
    return {name[len(prefix):]: value for name, value in vars(arguments).items()
            if name.startswith(prefix)}


def _health(_: argparse.Namespace, settings: Settings) -> int:
    from updater.serve.health import check

    problem = check(settings.state_dir)
    if problem is not None:
        print(f"updater: unhealthy: {problem}", file=sys.stderr)
        return EXIT_FAILED
    print("healthy")
    return EXIT_OK


def _swap(arguments: argparse.Namespace, settings: Settings) -> int:
    from updater.actions.swap import swap
    from updater.engine.adapter import Engine
    from updater.store.journal import Journal

    engine = Engine.connect(settings.docker_host)
    journal = Journal(settings.state_dir)
    try:
        done = swap(engine, journal, arguments.entry, settings.health_timeout)
    finally:
        journal.close()
        engine.close()
    return EXIT_OK if done == 0 else EXIT_FAILED


def _show_config(_: argparse.Namespace, settings: Settings) -> int:
    sys.stdout.write(config.render(settings))
    return EXIT_OK


def _check(arguments: argparse.Namespace, settings: Settings) -> int:
    from updater.core.detect import watched
    from updater.engine.adapter import Engine

    engine = Engine.connect(settings.docker_host)
    try:
        containers, results = watched(engine.containers(), settings, arguments.names)
        return _report_check(arguments, settings, engine, containers, results)
    finally:
        engine.close()


def _report_check(arguments: argparse.Namespace, settings: Settings, engine: Engine,
                  containers: list[ContainerSnapshot], results: list[CheckResult]) -> int:
    from updater.core.detect import PassLookups, check, require_names
    from updater.registry.client import RegistryClient
    from updater.registry.credentials import (
        ChainedCredentials,
        DockerConfigCredentials,
        SettingsCredentials,
    )

    credentials = ChainedCredentials(SettingsCredentials(settings.registries),
                                     DockerConfigCredentials())
    started = time.monotonic()
    with RegistryClient(settings.registries, credentials,
                        timeout=settings.registry_timeout) as registry:
        lookups = PassLookups(registry)  # containers and services of one image: one lookup
        results += check(containers, lookups, platform_of=engine.platform)
        results += _check_services(engine, lookups, credentials, settings, arguments.names)
    require_names(arguments.names, [r.name for r in results])
    log.info("check: %s; %d registry requests in %.2fs", _summary(results),
             sum(registry.stats()[0].values()), time.monotonic() - started)
    results.sort(key=lambda r: (r.kind, r.name))
    if arguments.json:
        print(json.dumps([r.as_dict() for r in results], indent=2))
    else:
        print(_table(results))
    return EXIT_OK


def _check_services(engine: Engine, registry: PassLookups, credentials: CredentialSource,
                    settings: Settings, names: list[str]) -> list[CheckResult]:
    """Services as `check` rows, when this engine is a swarm manager."""
    from updater.actions.services import ServiceUpdater
    from updater.core.detect import CheckResult
    from updater.core.policy import State
    from updater.core.report import Outcome

    states = {Outcome.UP_TO_DATE: State.UP_TO_DATE, Outcome.AVAILABLE: State.UPDATE_AVAILABLE,
              Outcome.PINNED: State.PINNED}
    items = ServiceUpdater(engine, registry, credentials, settings).check(tuple(names))
    rows = []
    for item in items:
        state = states.get(item.outcome, State.ERROR)
        error, note = (item.reason, None) if state is State.ERROR else (None, item.reason)
        rows.append(CheckResult(item.name, "service", item.image, item.old_digest,
                                item.new_digest, state, error, note))
    return rows


def _summary(results: list[CheckResult]) -> str:
    from updater.core.policy import State

    counts = Counter(r.state.value for r in results)
    parts = [f"{counts[state.value]} {state.value}" for state in State if counts[state.value]]
    return f"{len(results)} watched" + (": " + ", ".join(parts) if parts else "")


def _update(arguments: argparse.Namespace, settings: Settings) -> int:
    from updater.app import Application
    from updater.store.journal import StateLock

    with StateLock(settings.state_dir), Application(settings) as app:
        report = app.run_pass(arguments.names)
    if arguments.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(_report_table(report))
    return EXIT_FAILED if report.failed or report.error else EXIT_OK


def _run(_: argparse.Namespace, settings: Settings) -> int:
    from updater.app import Application
    from updater.core.report import Outcome
    from updater.serve.daemon import Daemon
    from updater.serve.health import Heartbeat
    from updater.store.journal import StateLock

    # A predecessor handing over to this updater lets go of the lock within seconds.
    with StateLock(settings.state_dir, wait=LOCK_WAIT) as lock, \
            Application(settings, lock=lock) as app:
        def one_pass(stop_requested: Callable[[], bool], names: tuple[str, ...]) -> PassReport:
            report = app.run_pass(names, stop_requested, daemon.expect)
            for item in report.items:
                if item.outcome not in (Outcome.UP_TO_DATE, Outcome.PINNED):
                    log.info("report: %s %s %s -> %s%s", item.name, item.outcome.value,
                             _short(item.old_digest), _short(item.new_digest),
                             f" ({item.reason})" if item.reason else "")
            return report

        api: list[ApiServer] = []

        def listen() -> None:
            # Only after recovery: a predecessor handing over to this updater (on the host
            # network) holds the port until the recovery has stopped it.
            server = _start_api(settings, app, daemon)
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
        in_flight = app.notifications_in_flight()
    if in_flight:
        # Apprise's worker threads would hold the exit until a hung destination lets go; what
        # they carry is kept in the state database and sent by the next start.
        log.warning("exiting with %d notification(s) still being sent; they are kept and sent "
                    "again at the next start", in_flight)
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _start_api(settings: Settings, app: Application, daemon: Daemon) -> ApiServer | None:
    from updater.app import DaemonControl
    from updater.serve.api import ApiServer

    listen, token = settings.http_api.listen, settings.http_api.token
    if not listen or not token:
        return None

    def state() -> dict[str, Any]:
        report = daemon.last_report
        return {"version": __version__, "running": daemon.running, "passes": daemon.passes,
                "last_pass": report.as_dict() if report else None,
                "last_error": daemon.last_error}

    return ApiServer(listen, token, DaemonControl(app, daemon.trigger, state)).start()


def _check_rebalanced_names(names: list[str], services: list[dict[str, Any]]) -> None:
    """Each service named on the command line exists and is replicated (else exit 2)."""
    modes = {str(s["Spec"]["Name"]): s["Spec"].get("Mode") or {} for s in services}
    for name in names:
        if name not in modes:
            raise UpdaterError(f"no service named {name!r} on this swarm; list them with "
                               "docker service ls")
        if "Replicated" not in modes[name]:
            kind = next(iter(modes[name]), "other").lower()
            raise UpdaterError(f"{name} is a {kind} service; only replicated services are "
                               "rebalanced")


def _rebalance(arguments: argparse.Namespace, settings: Settings) -> int:
    from updater.actions.services import ServiceUpdater, is_leader
    from updater.app import Application
    from updater.core.rebalance import plans
    from updater.engine.adapter import Engine

    if arguments.threshold < 0:
        raise UpdaterError(f"--threshold {arguments.threshold} must be 0 or more")
    engine = Engine.connect(settings.docker_host)
    try:
        if not (engine.info().get("Swarm") or {}).get("ControlAvailable"):
            raise UpdaterError(f"the engine at {settings.docker_host} is not a swarm manager; "
                               "point docker_host at a manager")
        services = engine.services()
        _check_rebalanced_names(arguments.services, services)
        found = plans(engine.nodes(), services, engine.tasks(), arguments.threshold,
                      arguments.services)
        rows = [("SERVICE", "NODE", "NOW", "AFTER")]
        for plan in found:
            rows += [(plan.service, node, str(count), str(plan.after.get(node, 0)))
                     for node, count in sorted(plan.before.items())]
        print(_columns(rows) if found else "every replicated service is balanced")
        if arguments.dry_run or not found:
            return EXIT_OK
        if not is_leader(engine):
            raise UpdaterError("only the swarm leader rebalances; run it against the leader")
        with Application(settings) as app:
            items = app.rebalance(engine, ServiceUpdater(engine, app.registry, app.credentials,
                                                         settings), found)
    finally:
        engine.close()
    for item in items:
        print(f"{item.name}: {item.outcome.value} ({item.reason})")
    return EXIT_FAILED if any(i.outcome.value == "failed" for i in items) else EXIT_OK


def _where(arguments: argparse.Namespace, settings: Settings) -> int:
    from dataclasses import asdict

    from updater.actions.services import where
    from updater.engine.adapter import Engine

    engine = Engine.connect(settings.docker_host)
    try:
        places = where(engine, arguments.service)
    finally:
        engine.close()
    if arguments.json:
        print(json.dumps([asdict(p) for p in places], indent=2))
        return EXIT_OK
    rows = [("NODE", "AVAILABILITY", "ADDRESS", "CONTAINER", "SHELL")]
    rows += [(p.node, p.availability, p.address, p.container[:12], p.command) for p in places]
    print(_columns(rows))
    return EXIT_OK


def _history(arguments: argparse.Namespace, settings: Settings) -> int:
    from updater.store.history import History

    history = History(settings.state_dir)
    try:
        entries = history.entries(arguments.name, arguments.limit)
    finally:
        history.close()
    if arguments.name and not entries:
        raise UpdaterError(f"no history for {arguments.name}: nothing was done to a container "
                           "or service of that name (yet); `updater history` lists every name")
    if arguments.json:
        print(json.dumps(entries, indent=2))
        return EXIT_OK
    rows = [("TIME", "NAME", "OUTCOME", "FROM", "TO", "")]
    for entry in entries:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry["time"]))
        rows.append((when, entry["name"], entry["outcome"],
                     entry["old_version"] or _short(entry["old_digest"]),
                     entry["new_version"] or _short(entry["new_digest"]), entry["reason"] or ""))
    print(_columns(rows))
    return EXIT_OK


def _report_table(report: PassReport) -> str:
    rows = [("NAME", "IMAGE", "OUTCOME", "FROM", "TO", "")]
    rows += [(i.name, i.image, i.outcome.value, _short(i.old_digest), _short(i.new_digest),
              i.reason or "") for i in sorted(report.items, key=lambda i: i.name)]
    return _columns(rows) + f"\npass: {report.summary()}"


def _columns(rows: Sequence[tuple[str, ...]]) -> str:
    """Aligned columns; the last one (a free-text reason) is not padded."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False))
             + "  " + row[-1] for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def _short(digest: str | None) -> str:
    return digest.partition(":")[2][:12] if digest else "-"


def _table(results: list[CheckResult]) -> str:
    rows = [("NAME", "IMAGE", "LOCAL", "REMOTE", "STATE", "")]
    rows += [(r.name, r.image, _short(r.local_digest), _short(r.remote_digest), r.state.value,
              r.error or r.note or "") for r in results]
    text = _columns(rows)
    if len(rows) == 1:
        text += "\n(no watched containers: label them updater.enable=true)"
    return text
