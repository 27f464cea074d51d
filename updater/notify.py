"""Notifications through Apprise: one batched message per pass that changed something or
failed, plus one at once for a failed or rolled-back update. Monitor-only "update available"
is sent once per new digest. An undelivered message is kept in the state database and retried
at the next pass; delivery never fails an update. URLs are secrets: never logged or stored.
"""

from __future__ import annotations

import hashlib
import logging
import string
from collections.abc import Iterable
from typing import Any, Protocol

from updater import state
from updater.config import LOG_LEVELS, Settings
from updater.report import FAILURES, ItemReport, Outcome, PassReport

log = logging.getLogger(__name__)
TEMPLATE_FIELDS = ("host", "summary", "entries", "count")
DEFAULT_TEMPLATE = "{entries}"
MAX_ATTEMPTS = 48
_LEVEL_OF = {Outcome.UPDATED: "info", Outcome.AVAILABLE: "info", Outcome.RECOVERED: "warning",
             Outcome.SKIPPED: "warning", Outcome.ERROR: "warning",
             Outcome.ROLLED_BACK: "error", Outcome.FAILED: "error",
             Outcome.REBALANCED: "info"}


class Sender(Protocol):
    def targets(self) -> list[str]:
        """Opaque keys of the configured destinations (never the URLs themselves)."""

    def send(self, target: str, title: str, body: str, level: str) -> bool:
        """Deliver one message to one destination; False when it could not be delivered."""

    def describe(self, target: str) -> str:
        """How to name a destination in logs: its scheme only."""


class AppriseSender:
    """One Apprise instance per configured URL, so a failure is retried only where it failed."""

    def __init__(self, urls: Iterable[str]) -> None:
        self._urls = {target_key(url): url for url in urls}
        self._instances: dict[str, Any] = {}

    def targets(self) -> list[str]:
        return list(self._urls)

    def describe(self, target: str) -> str:
        return f"{self._urls.get(target, '?').partition('://')[0]}://***"

    def send(self, target: str, title: str, body: str, level: str) -> bool:
        import apprise  # heavy; only loaded when notifications are configured

        if target not in self._urls:
            return True  # the URL was removed from the settings: nothing left to owe
        instance = self._instances.get(target)
        if instance is None:
            instance = self._instances[target] = apprise.Apprise()
            instance.add(self._urls[target])
        kinds = {"error": apprise.NotifyType.FAILURE, "warning": apprise.NotifyType.WARNING}
        return bool(instance.notify(title=title, body=body,
                                    notify_type=kinds.get(level, apprise.NotifyType.INFO)))


def target_key(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def check_template(template: str) -> str:
    """The template itself; ValueError naming an unknown or malformed field."""
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise ValueError(f"notify_template is not a format string ({exc})") from None
    for name in fields:
        if name not in TEMPLATE_FIELDS:
            raise ValueError(f"notify_template uses {{{name}}}; available fields are "
                             + ", ".join(f"{{{f}}}" for f in TEMPLATE_FIELDS))
    return template


# --- rendering (pure) ---------------------------------------------------------------------


def _short(digest: str | None) -> str:
    return digest.partition(":")[2][:12] if digest else "?"


def render_entry(item: ItemReport) -> str:
    """One line per item: name, image, what happened, versions, digests, link, reason."""
    line = f"{item.name} ({item.image}): {item.outcome.value}"
    versions = item.versions
    if versions.old or versions.new:
        line += f" {versions.old or '?'} → {versions.new or '?'}"
    if item.old_digest or item.new_digest:
        line += f" [{_short(item.old_digest)} → {_short(item.new_digest)}]"
    if versions.source:
        revision = versions.revision
        line += f" {versions.source}" + (f" @ {revision[:12]}" if revision else "")
    if item.reason:
        line += f" — {item.reason}"
    return line


def render(host: str, items: list[ItemReport], template: str | None) -> tuple[str, str]:
    """Title and body of one message about `items`."""
    counts: dict[str, int] = {}
    for item in items:
        counts[item.outcome.value] = counts.get(item.outcome.value, 0) + 1
    summary = ", ".join(f"{n} {outcome}" for outcome, n in counts.items())
    title = f"updater on {host}: {summary}"
    entries = "\n".join(f"- {render_entry(item)}" for item in items)
    body = (template or DEFAULT_TEMPLATE).format(host=host, summary=summary, entries=entries,
                                                 count=len(items))
    return title, body


def level_of(item: ItemReport) -> str | None:
    return _LEVEL_OF.get(item.outcome)


def passes_level(item: ItemReport, minimum: str) -> bool:
    level = level_of(item)
    return level is not None and LOG_LEVELS.index(level) >= LOG_LEVELS.index(minimum)


# --- delivery ---------------------------------------------------------------------------


class Notifier:
    """Decides what to send, sends it, and keeps what could not be delivered."""

    def __init__(self, settings: Settings, host: str, sender: Sender) -> None:
        self._settings = settings
        self._host = host
        self._sender = sender
        self._db = state.connect(settings.state_dir)

    def close(self) -> None:
        self._db.close()

    def immediate(self, item: ItemReport) -> None:
        """A failed or rolled-back update is told at once."""
        if item.outcome in FAILURES and passes_level(item, self._settings.notify_level):
            self._deliver([item])

    def after_pass(self, report: PassReport) -> None:
        """Retry what is owed, then one message for everything worth telling in this pass."""
        self._retry_pending()
        items = [i for i in report.items if passes_level(i, self._settings.notify_level)
                 and not self._already_told(i)]
        if items:
            self._deliver(items)
        for item in items:
            if item.outcome is Outcome.AVAILABLE and item.new_digest:
                self._db.execute("INSERT OR IGNORE INTO notified VALUES (?, ?)",
                                 (item.name, item.new_digest))

    def _already_told(self, item: ItemReport) -> bool:
        if item.outcome is not Outcome.AVAILABLE:
            return False
        row = self._db.execute("SELECT 1 FROM notified WHERE name = ? AND digest = ?",
                               (item.name, item.new_digest)).fetchone()
        return row is not None

    def _deliver(self, items: list[ItemReport]) -> None:
        title, body = render(self._host, items, self._settings.notify_template)
        level = max((level_of(i) or "info" for i in items), key=LOG_LEVELS.index)
        for target in self._sender.targets():
            if not self._send(target, title, body, level):
                self._db.execute("INSERT INTO pending_notifications (target, title, body, level) "
                                 "VALUES (?, ?, ?, ?)", (target, title, body, level))

    def _send(self, target: str, title: str, body: str, level: str) -> bool:
        try:
            delivered = self._sender.send(target, title, body, level)
        except Exception as exc:  # a broken notifier plugin must never fail an update
            log.warning("notification to %s failed (%s); will retry at the next pass",
                        self._sender.describe(target), type(exc).__name__)
            return False
        if not delivered:
            log.warning("notification to %s was not delivered; will retry at the next pass",
                        self._sender.describe(target))
        return delivered

    def _retry_pending(self) -> None:
        rows = self._db.execute("SELECT id, target, title, body, level, attempts "
                                "FROM pending_notifications ORDER BY id").fetchall()
        for row_id, target, title, body, level, attempts in rows:
            if self._send(target, title, body, level):
                self._db.execute("DELETE FROM pending_notifications WHERE id = ?", (row_id,))
            elif attempts + 1 >= MAX_ATTEMPTS:
                log.error("notification to %s dropped after %d attempts: %s",
                          self._sender.describe(target), attempts + 1, title)
                self._db.execute("DELETE FROM pending_notifications WHERE id = ?", (row_id,))
            else:
                self._db.execute("UPDATE pending_notifications SET attempts = ? WHERE id = ?",
                                 (attempts + 1, row_id))

    def pending(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM pending_notifications").fetchone()[0])
