"""The command line's arguments: one subcommand per command, each taking only the settings
it uses, each with a line of help; a usage error is one line (`UsageError`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from updater import __version__, config
from updater.core.policy import DEFAULT_STOP_TIMEOUT
from updater.store.history import DEFAULT_LIMIT, MAX_LIMIT, parse_limit

if TYPE_CHECKING:
    from updater.core.settings import Settings

Handler = Callable[[argparse.Namespace, "Settings"], int]


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit 2, as for every other user error."""

    commands: dict[str, Parser]

    def error(self, message: str) -> Any:
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


class UsageError(Exception):
    pass


# One line of help per setting, for the flags of the commands it applies to.
SETTING_HELP = {
    "docker_host": "the engine's address, or DOCKER_HOST [unix:///var/run/docker.sock]",
    "label_enable": "watch only containers labelled updater.enable=true [on]",
    "scope": "watch only containers labelled updater.scope=SCOPE",
    "registry_timeout": "time limit of one registry request [10s]",
    "monitor_only": "report and notify available updates, change nothing",
    "cleanup": "remove old images after an update, but the last keep_images ones",
    "keep_images": "images each container ran before, kept for `updater rollback` [1]",
    "stop_timeout": f"how long a container may take to stop [its own, else "
                    f"{DEFAULT_STOP_TIMEOUT:g}s]",
    "health_timeout": "how long a new container may take to run and be healthy [60s]",
    "rollback": "put the old container back when the new one fails [on]",
    "rolling_restart": "accepted for Watchtower users; updates already run one at a time",
    "tags": "digest: follow the tag's digest; semver: move to newer version tags [digest]",
    "min_age": "apply a new image only once this updater has known it this long [0]",
    "update_window": "when updates may be applied, e.g. '0 2 * * 6, 3h' [any time]",
    "approve": "each new image waits for `updater approve NAME` [off]",
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
_WATCH = ("label_enable", "scope", "tags")
_REGISTRY = ("registry_timeout",)
_UPDATE = ("monitor_only", "cleanup", "keep_images", "stop_timeout", "health_timeout", "rollback",
           "rolling_restart", "min_age", "update_window", "approve")
_NOTIFY = ("notify", "notify_level", "notify_template")
_SCHEDULE = ("interval", "schedule", "jitter", "update_on_start", "run_once")
_STATE = ("state_dir",)
_WAITING = ("min_age", "update_window", "approve")
_LOGS = ("log_level", "log_format")
_ALL = tuple(SETTING_HELP)
# The settings each command uses; `config` shows them all, so it takes them all.
COMMAND_SETTINGS: dict[str, tuple[str, ...]] = {
    # What waits is read from the state database, by the rules `update` applies.
    "check": _ENGINE + _WATCH + _REGISTRY + _WAITING + _STATE + _LOGS,
    "pending": _ENGINE + _WATCH + _REGISTRY + _WAITING + _STATE + _LOGS,
    "approve": _ENGINE + _WATCH + _REGISTRY + _STATE + _LOGS,
    "skip": _ENGINE + _WATCH + _REGISTRY + _STATE + _LOGS,
    "update": _ENGINE + _WATCH + _REGISTRY + _UPDATE + _NOTIFY + _STATE + _LOGS,
    "rollback": _ENGINE + _WATCH + _REGISTRY + _UPDATE + _NOTIFY + _STATE + _LOGS,
    "run": _ALL,
    "rebalance": _ENGINE + _REGISTRY + _STATE + _LOGS,
    "where": _ENGINE + _LOGS,
    "history": _STATE + _LOGS,
    "health": _STATE + _LOGS,
    "config": _ALL,
    "swap": _ENGINE + _STATE + _LOGS + ("health_timeout",),
}


def build(handlers: dict[str, Handler]) -> Parser:
    parser = Parser(prog="updater",
                     description="Keep Docker containers on the newest image for their tag.")
    parser.add_argument("--version", action="version", version=f"updater {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     parser_class=Parser)
    parser.commands = {}

    def command(name: str, help: str) -> Parser:
        sub: Parser = commands.add_parser(name, help=help, description=help)
        parser.commands[name] = sub
        sub.set_defaults(handler=handlers[name])
        _add_settings(sub, COMMAND_SETTINGS[name])
        return sub

    checker = command("check", "report which images are stale; changes nothing")
    checker.add_argument("names", nargs="*", metavar="NAME",
                         help="only these containers or services")
    checker.add_argument("--json", action="store_true", help="print a JSON array")
    waiter = command("pending", "what waits, and why (minimum age, update window); "
                                "changes nothing")
    waiter.add_argument("names", nargs="*", metavar="NAME",
                        help="only these containers or services")
    waiter.add_argument("--json", action="store_true", help="print a JSON array")
    approver = command("approve", "let an update waiting for approval be applied (bound to its "
                                  "digest)")
    approver.add_argument("name", metavar="NAME", help="the container or service")
    approver.add_argument("--digest", help="the digest approved [the one NAME waits for now]")
    skipper = command("skip", "never apply this digest to NAME (a newer one waits again)")
    skipper.add_argument("name", metavar="NAME", help="the container or service")
    skipper.add_argument("--digest", required=True, help="the digest skipped")
    updater = command("update", "apply updates now, once")
    updater.add_argument("names", nargs="*", metavar="NAME",
                         help="only these containers or services")
    updater.add_argument("--json", action="store_true", help="print the pass report as JSON")
    undoer = command("rollback", "put NAME back on the image it ran before its last update; "
                                 "that update is then held back until approved")
    undoer.add_argument("name", metavar="NAME", help="the container or service")
    undoer.add_argument("--json", action="store_true", help="print the report as JSON")
    command("run", "the daemon: update on a schedule until SIGTERM")
    balancer = command("rebalance", "swarm: spread the tasks of replicated services")
    balancer.add_argument("services", nargs="*", metavar="SERVICE", help="only these services")
    balancer.add_argument("--dry-run", action="store_true", help="print the plan, move nothing")
    balancer.add_argument("--threshold", type=float, default=1.0,
                          help="standard deviation of tasks per node that is tolerated [1.0]")
    locator = command("where", "swarm: the node and container of each task of a service")
    locator.add_argument("service", metavar="SERVICE")
    locator.add_argument("--json", action="store_true", help="print a JSON array")
    historian = command("history", "what was done, newest first")
    historian.add_argument("name", nargs="?", metavar="NAME",
                           help="only this container or service")
    historian.add_argument("--json", action="store_true", help="print a JSON array")
    historian.add_argument("--limit", type=_limit, default=DEFAULT_LIMIT,
                           help=f"at most this many, 1 to {MAX_LIMIT} [{DEFAULT_LIMIT}]")
    command("health", "exit 0 when `updater run` here is alive (HEALTHCHECK)")
    command("config", "validate and print the effective configuration")
    swapper = command("swap", "internal: the helper container of a self-update that "
                                     "must stop the old updater before the new one can start")
    swapper.add_argument("entry", type=int, metavar="ENTRY", help="its journal entry")
    return parser


def _add_settings(parser: Parser, keys: tuple[str, ...]) -> None:
    """The settings flags that apply to a command, each with its line of help."""
    group = parser.add_argument_group("settings (also from the config file and UPDATER_*)")
    group.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                       help="YAML config file (or UPDATER_CONFIG)")
    for key in keys:
        flag, dest = "--" + key.replace("_", "-"), f"setting_{key}"
        text = SETTING_HELP[key]
        if config.FLAG_KEYS[key]:
            group.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction,
                               default=argparse.SUPPRESS, help=text)
        elif key == "notify":
            group.add_argument(flag, dest=dest, action="append", metavar="URL",
                               default=argparse.SUPPRESS, help=text)
        else:
            group.add_argument(flag, dest=dest, metavar="VALUE", default=argparse.SUPPRESS,
                               help=text)


def parse(parser: Parser, argv: Sequence[str] | None) -> argparse.Namespace:
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


def flags(arguments: argparse.Namespace) -> dict[str, Any]:
    prefix = "setting_"
    return {name[len(prefix):]: value for name, value in vars(arguments).items()
            if name.startswith(prefix)}


