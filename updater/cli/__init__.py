"""The command line: parses arguments, calls the Application (or the Server for `run`) and
renders what it returns. The only place that prints and exits.

Exit codes: 0 done; 1 an update failed; 2 a usage, configuration or environment error (one
clear line on stderr, never a traceback).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING

from updater import config, logs
from updater.cli import render
from updater.cli.parser import (
    COMMAND_SETTINGS,
    SETTING_HELP,
    Handler,
    UsageError,
    build,
    flags,
    parse,
)
from updater.errors import UpdaterError

# Each command imports what it needs when it runs: `updater --version` or `updater config`
# should not pay for the docker SDK, httpx or prometheus_client.
if TYPE_CHECKING:
    from updater.app import Application
    from updater.core.report import PassReport
    from updater.core.settings import Settings

__all__ = ["COMMAND_SETTINGS", "EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "SETTING_HELP", "main"]
log = logging.getLogger("updater")
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def main(argv: Sequence[str] | None = None) -> int:
    try:
        arguments = parse(build(_HANDLERS), argv)
    except UsageError as exc:
        print(exc, file=sys.stderr)  # "updater[ COMMAND]: what is wrong (see ... --help)"
        return EXIT_USAGE
    command: Handler = arguments.handler
    try:
        settings = config.load(getattr(arguments, "config", None), flags=flags(arguments))
        logs.configure(settings.log_level, settings.log_format, settings.secrets())
        return command(arguments, settings)
    except UpdaterError as exc:
        print(f"updater: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


def _application(settings: Settings, remember: bool = True) -> Application:
    from updater.app import Application

    return Application(settings, remember=remember)


def _check(arguments: argparse.Namespace, settings: Settings) -> int:
    with _application(settings, remember=False) as app:
        results = app.check(arguments.names)
    if arguments.json:
        print(json.dumps([r.as_dict() for r in results], indent=2))
    else:
        print(render.check_table(results))
    return EXIT_OK


def _pending(arguments: argparse.Namespace, settings: Settings) -> int:
    with _application(settings, remember=False) as app:
        waiting = [r for r in app.check(arguments.names) if r.waiting]
    if arguments.json:
        print(json.dumps([r.as_dict() for r in waiting], indent=2))
    else:
        print(render.pending_table(waiting))
    return EXIT_OK


def _approve(arguments: argparse.Namespace, settings: Settings) -> int:
    with _application(settings) as app:
        digest = app.decide(arguments.name, arguments.digest, "approved")
    print(f"{arguments.name}: {digest} approved; the next pass applies it")
    return EXIT_OK


def _skip(arguments: argparse.Namespace, settings: Settings) -> int:
    with _application(settings) as app:
        digest = app.decide(arguments.name, arguments.digest, "skipped")
    print(f"{arguments.name}: {digest} skipped; it is never applied")
    return EXIT_OK


def _update(arguments: argparse.Namespace, settings: Settings) -> int:
    from updater.store.journal import StateLock

    with StateLock(settings.state_dir), _application(settings) as app:
        report = app.run_pass(arguments.names)
    _print_report(report, arguments.json)
    return EXIT_FAILED if report.failed or report.error else EXIT_OK


def _rollback(arguments: argparse.Namespace, settings: Settings) -> int:
    from updater.store.journal import StateLock

    busy = f"ask it instead: POST /v1/rollback?name={arguments.name} on its HTTP API"
    with StateLock(settings.state_dir, busy=busy), _application(settings) as app:
        report = app.rollback(arguments.name)
    _print_report(report, arguments.json)
    return EXIT_OK if report.items and report.items[0].outcome.value == "undone" else EXIT_FAILED


def _print_report(report: PassReport, as_json: bool) -> None:
    print(json.dumps(report.as_dict(), indent=2) if as_json else render.report_table(report))


def _run(_: argparse.Namespace, settings: Settings) -> int:
    from updater.server import Server

    server = Server(settings)
    code = server.run()
    if server.notifications_in_flight:
        # Apprise's worker threads would hold the exit until a hung destination lets go; what
        # they carry is kept in the state database and sent by the next start.
        log.warning("exiting with %d notification(s) still being sent; they are kept and sent "
                    "again at the next start", server.notifications_in_flight)
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _rebalance(arguments: argparse.Namespace, settings: Settings) -> int:
    with _application(settings) as app:
        found = app.plan_rebalance(arguments.services, arguments.threshold)
        print(render.plans_table(found) if found else "every replicated service is balanced")
        if arguments.dry_run or not found:
            return EXIT_OK
        items = app.carry_out(found)
    for item in items:
        print(f"{item.name}: {item.outcome.value} ({item.reason})")
    return EXIT_FAILED if any(i.outcome.value == "failed" for i in items) else EXIT_OK


def _where(arguments: argparse.Namespace, settings: Settings) -> int:
    with _application(settings, remember=False) as app:
        from updater.actions.locate import where

        places = app.on_engine(lambda engine: where(engine, arguments.service))
    if arguments.json:
        print(json.dumps([asdict(p) for p in places], indent=2))
    else:
        print(render.places_table(places))
    return EXIT_OK


def _history(arguments: argparse.Namespace, settings: Settings) -> int:
    with _application(settings, remember=False) as app:
        entries = app.history.entries(arguments.name, arguments.limit)
    if arguments.name and not entries:
        raise UpdaterError(f"no history for {arguments.name}: nothing was done to a container "
                           "or service of that name (yet); `updater history` lists every name")
    print(json.dumps(entries, indent=2) if arguments.json else render.history_table(entries))
    return EXIT_OK


def _health(_: argparse.Namespace, settings: Settings) -> int:
    from updater.serve.health import check

    problem = check(settings.state_dir)
    if problem is not None:
        print(f"updater: unhealthy: {problem}", file=sys.stderr)
        return EXIT_FAILED
    print("healthy")
    return EXIT_OK


def _show_config(_: argparse.Namespace, settings: Settings) -> int:
    sys.stdout.write(config.render(settings))
    return EXIT_OK


def _swap(arguments: argparse.Namespace, settings: Settings) -> int:
    with _application(settings, remember=False) as app:
        from updater.actions.swap import swap

        # The swap helper's part of self-update journal entry `entry`: 0 when the new updater
        # took over.
        took_over = app.on_engine(lambda engine: swap(
            engine, app.journal, arguments.entry, settings.health_timeout) == 0)
        return EXIT_OK if took_over else EXIT_FAILED


_HANDLERS: dict[str, Handler] = {
    "check": _check, "pending": _pending, "approve": _approve, "skip": _skip,
    "update": _update, "rollback": _rollback, "run": _run,
    "rebalance": _rebalance, "where": _where, "history": _history, "health": _health,
    "config": _show_config, "swap": _swap,
}
