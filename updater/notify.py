"""Notifications through Apprise: one batched message per pass that changed something or
failed, plus one at once for a failed or rolled-back update. Monitor-only "update available"
is sent once per new digest. An undelivered message is kept in the state database and retried
at the next pass; delivery never fails an update. URLs are secrets: never logged or stored.
"""

from __future__ import annotations

import hashlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from updater.core.messages import level_of, passes_level, render
from updater.core.report import FAILURES, ItemReport, Outcome, PassReport
from updater.core.settings import LOG_LEVELS, Settings
from updater.store import state

log = logging.getLogger(__name__)
# Told once per new digest: an available update (monitor-only) and one waiting its age.
_ONCE_PER_DIGEST = frozenset({Outcome.AVAILABLE, Outcome.WAITING})
MAX_ATTEMPTS = 48
# How long the loop waits for one destination to take one message.
SEND_SECONDS = 10.0
# How long the loop waits for one destination over a whole pass (its messages together).
PASS_SECONDS = 30.0
POLL_SECONDS = 0.1
# Told once, and again only when they change or after a day (not every pass).
_REMINDED = frozenset({Outcome.ERROR, Outcome.PAUSED})
# An error already told is told again, unchanged, only after this long.
ERROR_REMINDER_SECONDS = 24 * 3600.0


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


# --- delivery ---------------------------------------------------------------------------


@dataclass
class _InFlight:
    """A message still being sent to a slow destination, in its own thread."""

    thread: threading.Thread
    delivered: list[bool]  # set by the thread when the send returns
    row: int | None = None  # its pending row, deleted if it arrives after all


class Notifier:
    """Decides what to send, sends it, and keeps what could not be delivered.

    A destination never holds the update loop: each message waits at most SEND_SECONDS for it
    (less once `interrupted` is set, e.g. by SIGTERM). A send still running then is left to
    finish in the background, at most one per destination; its message is kept to retry, and
    dropped from the retries if it arrives after all. Nothing here raises: a notification that
    cannot be made or kept is logged, never a failed update or pass."""

    def __init__(self, settings: Settings, host: str, sender: Sender,
                 interrupted: threading.Event | None = None) -> None:
        self._settings = settings
        self._host = host
        self._sender = sender
        self._interrupted = interrupted or threading.Event()
        self._inflight: dict[str, _InFlight] = {}
        self._waited: dict[str, float] = {}  # seconds waited per destination in this pass
        self._db = state.connect(settings.state_dir)

    def close(self) -> None:
        self._db.close()

    def immediate(self, item: ItemReport) -> None:
        """A failed or rolled-back update is told at once."""
        try:
            if item.outcome in FAILURES and passes_level(item, self._settings.notify_level):
                self._deliver([item])
        except Exception:
            log.exception("notification about %s not sent", item.name)

    def after_pass(self, report: PassReport) -> None:
        """Retry what is owed, then one message for everything worth telling in this pass: an
        available update once per digest, an unchanged error once a day."""
        try:
            self._retry_pending()
            items = [i for i in report.items if passes_level(i, self._settings.notify_level)
                     and not self._already_told(i)]
            if items:
                self._deliver(items)
            now = time.time()
            for item in items:
                if item.outcome in _ONCE_PER_DIGEST and item.new_digest:
                    self._db.execute("INSERT OR IGNORE INTO notified VALUES (?, ?)",
                                     (item.name, item.new_digest))
                elif item.outcome in _REMINDED:
                    self._db.execute("INSERT OR REPLACE INTO notified_errors VALUES (?, ?, ?)",
                                     (f"{item.kind}:{item.name}", item.reason or "", now))
            for item in report.items:  # an error that went away is told again if it comes back
                if item.outcome not in _REMINDED:
                    self._db.execute("DELETE FROM notified_errors WHERE name = ?",
                                     (f"{item.kind}:{item.name}",))
        except Exception:
            log.exception("notifications of this pass not sent")
        finally:
            self._waited.clear()  # the next pass has its own bound

    def tell(self, title: str, body: str, level: str) -> None:
        """A message about the updater itself (its passes failing, and working again)."""
        try:
            if LOG_LEVELS.index(level) >= LOG_LEVELS.index(self._settings.notify_level):
                self._send_all(f"updater on {self._host}: {title}", body, level)
        except Exception:
            log.exception("notification %r not sent", title)

    def _already_told(self, item: ItemReport) -> bool:
        if item.outcome in _ONCE_PER_DIGEST:
            row = self._db.execute("SELECT 1 FROM notified WHERE name = ? AND digest = ?",
                                   (item.name, item.new_digest)).fetchone()
            return row is not None
        if item.outcome in _REMINDED:
            row = self._db.execute("SELECT reason, time FROM notified_errors WHERE name = ?",
                                   (f"{item.kind}:{item.name}",)).fetchone()
            return (row is not None and row[0] == (item.reason or "")
                    and time.time() - row[1] < ERROR_REMINDER_SECONDS)
        return False

    def _deliver(self, items: list[ItemReport]) -> None:
        title, body = render(self._host, items, self._settings.notify_template)
        level = max((level_of(i) or "info" for i in items), key=LOG_LEVELS.index)
        self._send_all(title, body, level)

    def _send_all(self, title: str, body: str, level: str) -> None:
        for target in self._sender.targets():
            if not self._send(target, title, body, level):
                cursor = self._db.execute(
                    "INSERT INTO pending_notifications (target, title, body, level) "
                    "VALUES (?, ?, ?, ?)", (target, title, body, level))
                self._keep_row(target, cursor.lastrowid)

    def _keep_row(self, target: str, row: int | None) -> None:
        flight = self._inflight.get(target)
        if flight is not None and flight.row is None:
            flight.row = row

    def _send(self, target: str, title: str, body: str, level: str) -> bool:
        if self._busy(target) or self._waited.get(target, 0.0) >= PASS_SECONDS:
            return False
        delivered: list[bool] = []

        def send() -> None:
            try:
                delivered.append(bool(self._sender.send(target, title, body, level)))
            except Exception as exc:  # a broken notifier plugin must never fail an update
                log.warning("notification to %s failed (%s); will retry at the next pass",
                            self._sender.describe(target), type(exc).__name__)
                delivered.append(False)

        thread = threading.Thread(target=send, name="notify", daemon=True)
        thread.start()
        started = time.monotonic()
        deadline = started + min(SEND_SECONDS, PASS_SECONDS - self._waited.get(target, 0.0))
        while thread.is_alive() and time.monotonic() < deadline:
            if self._interrupted.is_set():
                break
            thread.join(POLL_SECONDS)
        self._waited[target] = self._waited.get(target, 0.0) + time.monotonic() - started
        if thread.is_alive():
            log.warning("notification to %s is taking more than %.0fs; kept to retry at the next "
                        "pass", self._sender.describe(target), SEND_SECONDS)
            self._inflight[target] = _InFlight(thread, delivered)
            return False
        if not delivered or not delivered[0]:
            if delivered:
                log.warning("notification to %s was not delivered; will retry at the next pass",
                            self._sender.describe(target))
            return False
        return True

    def _busy(self, target: str) -> bool:
        """A send to `target` is still running from before: nothing more is piled on it. One
        that ended delivered its message after all: that message is no longer owed."""
        flight = self._inflight.get(target)
        if flight is None:
            return False
        if flight.thread.is_alive():
            return True
        del self._inflight[target]
        if flight.delivered and flight.delivered[0] and flight.row is not None:
            self._db.execute("DELETE FROM pending_notifications WHERE id = ?", (flight.row,))
        return False

    def _retry_pending(self) -> None:
        for target in list(self._inflight):
            self._busy(target)
        rows = self._db.execute("SELECT id, target, title, body, level, attempts "
                                "FROM pending_notifications ORDER BY id").fetchall()
        for row_id, target, title, body, level, attempts in rows:
            if self._busy(target):
                continue
            if self._send(target, title, body, level):
                self._db.execute("DELETE FROM pending_notifications WHERE id = ?", (row_id,))
                continue
            self._keep_row(target, row_id)
            if attempts + 1 >= MAX_ATTEMPTS:
                log.error("notification to %s dropped after %d attempts: %s",
                          self._sender.describe(target), attempts + 1, title)
                self._db.execute("DELETE FROM pending_notifications WHERE id = ?", (row_id,))
            else:
                self._db.execute("UPDATE pending_notifications SET attempts = ? WHERE id = ?",
                                 (attempts + 1, row_id))

    def in_flight(self) -> int:
        """Sends still running in the background (to destinations that did not answer)."""
        return sum(1 for flight in self._inflight.values() if flight.thread.is_alive())

    def pending(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM pending_notifications").fetchone()[0])


class Telling:
    """An application's notifier, named after the engine's host once one answered (else this
    one's), built when first needed; and the one message each when passes start failing and
    when they work again."""

    def __init__(self, settings: Settings, interrupted: threading.Event) -> None:
        self._settings = settings
        self._interrupted = interrupted
        self._notifier: Notifier | None = None
        self._host: str | None = None
        self._failing = 0  # passes failed in a row

    def notifier(self, host_name: Callable[[], str | None]) -> Notifier | None:
        if not self._settings.notify:
            return None
        if self._notifier is None:
            self._host = host_name() or socket.gethostname()
        return self._plain()

    def failed(self, error: str) -> None:
        self._failing += 1
        if self._failing == 1 and self._settings.notify:
            self._plain().tell("passes are failing", f"{error}. Nothing is updated until this "
                               "is fixed; one message will say when passes work again.",
                               "error")

    def worked(self) -> None:
        if self._failing and self._settings.notify:
            self._plain().tell("passes work again", f"after {self._failing} failed "
                               f"pass{'es' if self._failing > 1 else ''}.", "info")
        self._failing = 0

    def in_flight(self) -> int:
        return self._notifier.in_flight() if self._notifier is not None else 0

    def close(self) -> None:
        if self._notifier is not None:
            self._notifier.close()

    def _plain(self) -> Notifier:
        if self._notifier is None:
            self._notifier = Notifier(self._settings, self._host or socket.gethostname(),
                                      AppriseSender(self._settings.notify), self._interrupted)
        return self._notifier
