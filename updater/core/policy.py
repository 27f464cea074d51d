"""Which items are watched and what state each is in: pure decisions over labels and digests."""

from __future__ import annotations

import datetime
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from updater.core.durations import format_duration, parse_duration
from updater.core.reference import Reference, repository_of
from updater.core.settings import Settings
from updater.core.windows import UpdateWindow, parse_window
from updater.errors import ConfigError, UpdaterError

PREFIX = "updater."
WATCHTOWER_PREFIX = "com.centurylinklabs.watchtower."
# Our label name -> Watchtower's, read as an alias so users can switch without relabelling.
WATCHTOWER_ALIASES = {
    "enable": "enable",
    "monitor-only": "monitor-only",
    "scope": "scope",
    "stop-signal": "stop-signal",
    "depends-on": "depends-on",
    "hook.pre-check": "lifecycle.pre-check",
    "hook.pre-update": "lifecycle.pre-update",
    "hook.post-update": "lifecycle.post-update",
    "hook.post-check": "lifecycle.post-check",
}


class State(StrEnum):
    UP_TO_DATE = "up-to-date"
    UPDATE_AVAILABLE = "update-available"
    PINNED = "pinned"
    ERROR = "error"


def label(labels: Mapping[str, str], name: str) -> str | None:
    """The value of `updater.<name>`, else of its Watchtower alias, else None."""
    value = labels.get(PREFIX + name)
    if value is None and name in WATCHTOWER_ALIASES:
        value = labels.get(WATCHTOWER_PREFIX + WATCHTOWER_ALIASES[name])
    return value


def bool_label(labels: Mapping[str, str], name: str) -> bool | None:
    """A true/false label; ConfigError naming the label when it holds anything else."""
    value = label(labels, name)
    if value is None:
        return None
    text = value.strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise ConfigError(f"label {PREFIX}{name}={value!r} is not true or false; fix the label")


def is_watched(labels: Mapping[str, str], settings: Settings) -> bool:
    """Opt-in (`label_enable`) or opt-out, then the scope must match when one is set."""
    enabled = bool_label(labels, "enable")
    if settings.label_enable and enabled is not True:
        return False
    if not settings.label_enable and enabled is False:
        return False
    return settings.scope is None or label(labels, "scope") == settings.scope


def local_digests(reference: Reference, repo_digests: Iterable[str]) -> tuple[str, ...]:
    """The digests under which the local image was pulled from `reference`'s repository."""
    found = []
    for entry in repo_digests:
        name, separator, digest = entry.partition("@")
        if separator and repository_of(name) == reference.repository:
            found.append(digest)
    return tuple(found)


def compare(local: tuple[str, ...], remote: str) -> State:
    """Up to date when the registry's digest is one the local image was pulled as."""
    return State.UP_TO_DATE if remote in local else State.UPDATE_AVAILABLE


def selected(name: str, names: Iterable[str]) -> bool:
    """True when no names were asked for, or `name` is one of them."""
    wanted = tuple(names)
    return not wanted or name in wanted


@dataclass(frozen=True, slots=True)
class ContainerOptions:
    """How to update one container: its labels read and validated over the settings."""

    monitor_only: bool
    stop_signal: str | None
    stop_timeout: float
    health_timeout: float
    rollback: bool
    hook_timeout: float
    hooks: Mapping[str, str]
    depends_on: tuple[str, ...]
    min_age: float = 0.0
    window: UpdateWindow | None = None
    approve: bool = False


HOOKS = ("pre-check", "pre-update", "post-update", "post-check")
_SIGNAL = re.compile(r"(SIG)?[A-Z][A-Z0-9+-]*|\d{1,2}")
DEFAULT_STOP_TIMEOUT = 10.0
DEFAULT_HOOK_TIMEOUT = 60.0


def options(labels: Mapping[str, str], settings: Settings,
            own_stop_timeout: int | None) -> ContainerOptions:
    """The update options for a container; ConfigError naming the label on a bad value."""
    stop_signal = label(labels, "stop-signal")
    if stop_signal is not None and not _SIGNAL.fullmatch(stop_signal.strip()):
        raise ConfigError(f"label {PREFIX}stop-signal={stop_signal!r} is not a signal; "
                          "write e.g. SIGTERM, SIGINT or 15")
    fallback = (float(own_stop_timeout) if own_stop_timeout is not None
                else settings.stop_timeout if settings.stop_timeout is not None
                else DEFAULT_STOP_TIMEOUT)
    return ContainerOptions(
        monitor_only=settings.monitor_only or bool_label(labels, "monitor-only") is True,
        stop_signal=stop_signal.strip() if stop_signal else None,
        stop_timeout=duration_label(labels, "stop-timeout", fallback),
        health_timeout=duration_label(labels, "health-timeout", settings.health_timeout),
        rollback=settings.rollback if (value := bool_label(labels, "rollback")) is None else value,
        hook_timeout=duration_label(labels, "hook.timeout", DEFAULT_HOOK_TIMEOUT),
        hooks={hook: text for hook in HOOKS if (text := label(labels, f"hook.{hook}"))},
        depends_on=depends_on(labels),
        min_age=duration_label(labels, "min-age", settings.min_age),
        window=window_label(labels, settings.update_window),
        approve=settings.approve if (wanted := bool_label(labels, "approve")) is None
        else wanted,
    )


def window_label(labels: Mapping[str, str],
                 default: UpdateWindow | None) -> UpdateWindow | None:
    """`updater.update-window` (`0 2 * * 6, 3h`; `none`: any time), else `default`."""
    value = label(labels, "update-window")
    if value is None:
        return default
    if value.strip().lower() in ("", "none"):
        return None
    try:
        return parse_window(value)
    except ValueError as exc:
        raise ConfigError(f"label {PREFIX}update-window: {exc}") from None


def outside_window(window: UpdateWindow | None, now: datetime.datetime) -> str | None:
    """Why an update waits for its window at `now` (local, timezone-aware), or None."""
    opens = window.opens(now) if window is not None else None
    if window is None or opens is None:
        return None
    return (f"update window ({window.describe()}) opens at "
            f"{opens.strftime('%Y-%m-%d %H:%M:%S %z')}")


def duration_label(labels: Mapping[str, str], name: str, default: float) -> float:
    """A duration label such as `90s`; ConfigError naming label and value when malformed."""
    value = label(labels, name)
    if value is None:
        return default
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise ConfigError(f"label {PREFIX}{name}={exc}") from None


def depends_on(labels: Mapping[str, str]) -> tuple[str, ...]:
    """Container names from `updater.depends-on` (or Watchtower's), comma-separated."""
    value = label(labels, "depends-on") or ""
    return tuple(name.strip().lstrip("/") for name in value.split(",") if name.strip())


class Sightings(Protocol):
    """When a digest of a repository was first seen by this updater (the state database's)."""

    def first_seen(self, repository: str, digest: str, now: float) -> float: ...


class SeenInMemory:
    """Sightings of this process only (where no state database is given)."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], float] = {}

    def first_seen(self, repository: str, digest: str, now: float) -> float:
        return self._seen.setdefault((repository, digest), now)


def too_young(min_age: float, first_seen: float, now: float) -> str | None:
    """Why a digest first seen at `first_seen` waits under `min_age`, or None once eligible."""
    eligible = first_seen + min_age
    if min_age <= 0 or now >= eligible:
        return None
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(eligible))
    return f"minimum age {format_duration(min_age)}: eligible at {when}"


APPROVED, SKIPPED = "approved", "skipped"
UNDONE = "undone"  # gone back from with `updater rollback`: held back until approved


class Decisions(Protocol):
    """What an operator decided for a digest of an item (`updater approve` / `skip`)."""

    def decision(self, name: str, digest: str) -> str | None: ...


class NoDecisions:
    def decision(self, name: str, digest: str) -> str | None:
        return None


class Rules(Protocol):
    """The rules that may hold an available update back (a container's or service's)."""

    @property
    def approve(self) -> bool: ...

    @property
    def min_age(self) -> float: ...

    @property
    def window(self) -> UpdateWindow | None: ...


def why_waiting(rules: Rules, name: str, repository: str, digest: str, now: datetime.datetime,
                seen: Sightings, decisions: Decisions) -> tuple[bool, str] | None:
    """Why an available `digest` of the item `name` is not applied at `now` (local, timezone
    aware): (True, why) when it was rejected (`updater skip` for good, `updater rollback`
    until approved), approvals on or off;
    (False, why) while it waits for an approval, for its minimum age by this updater's first
    sight of it (recorded here), or for its window; None when it may move."""
    # A skip holds whatever the item's rules: `updater skip` promises "never applied".
    decided = decisions.decision(name, digest)
    if decided == SKIPPED:
        return True, ("skipped: this image was rejected with `updater skip`; a newer one "
                      + ("waits for approval" if rules.approve else "is applied as usual"))
    if decided == UNDONE:
        return True, (f"held back: this image was undone with `updater rollback`; `updater "
                      f"approve {name} --digest {digest}` applies it again, a newer one "
                      + ("waits for approval" if rules.approve else "is applied as usual"))
    # Sighted before the approval is asked for: an image approved late is as old as it is.
    first = seen.first_seen(repository, digest, now.timestamp()) if rules.min_age > 0 else 0.0
    if rules.approve and decided != APPROVED:
        return False, f"waiting for approval: updater approve {name} --digest {digest}"
    if (wait := too_young(rules.min_age, first, now.timestamp())) is not None:
        return False, wait
    closed = outside_window(rules.window, now)
    return (False, closed) if closed is not None else None


def held_after_rollback(name: str, when: float) -> str:
    """Why a digest whose update was rolled back at `when` is not tried again every pass."""
    at = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))
    return (f"held back: this image was rolled back at {at}; a newer push, or `updater update "
            f"{name}`, tries again")


_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def checked_digest(digest: str) -> str:
    """`digest` when it is one (`sha256:` and 64 hex digits); else UpdaterError naming it."""
    if not _DIGEST.fullmatch(digest):
        raise UpdaterError(f"--digest {digest[:80]!r} is not a digest; write sha256: and 64 hex "
                           "digits, as `updater pending` shows it")
    return digest
