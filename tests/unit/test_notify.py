"""What notifications say and when they are sent, with a recording sender."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from updater import notify
from updater.core import messages
from updater.core.messages import render, render_entry
from updater.core.report import ItemReport, Outcome, PassReport, Versions
from updater.core.settings import Settings
from updater.notify import Notifier

OLD, NEW = "sha256:" + "a" * 64, "sha256:" + "b" * 64


class Recorder:
    def __init__(self, working: bool = True) -> None:
        self.working = working
        self.sent: list[tuple[str, str, str, str]] = []

    def targets(self) -> list[str]:
        return ["t1", "t2"]

    def describe(self, target: str) -> str:
        return f"json://*** {target}"

    def send(self, target: str, title: str, body: str, level: str) -> bool:
        if self.working:
            self.sent.append((target, title, body, level))
        return self.working


def item(name: str, outcome: Outcome, **extra: object) -> ItemReport:
    return ItemReport(name, f"reg.example/{name}:1", outcome, old_digest=OLD, new_digest=NEW,
                      **extra)  # type: ignore[arg-type]


def notifier(tmp_path: Path, sender: Recorder, **settings: object) -> Notifier:
    return Notifier(Settings(state_dir=str(tmp_path), **settings),  # type: ignore[arg-type]
                    "host1", sender)


def test_entry_shows_versions_digests_source_and_reason() -> None:
    """One line names the item, what happened, versions, short digests, link and reason."""
    versions = Versions("1.4.2", "1.4.3", None, "0123456789abcdef", "https://src.example/x")
    line = render_entry(item("web", Outcome.ROLLED_BACK, versions=versions, reason="exit 3"))
    assert line == ("web (reg.example/web:1): rolled-back 1.4.2 → 1.4.3 "
                    "[aaaaaaaaaaaa → bbbbbbbbbbbb] https://src.example/x @ 0123456789ab — exit 3")


def test_template_fields() -> None:
    """notify_template formats {host}, {summary}, {count} and {entries}."""
    title, body = render("h", [item("a", Outcome.UPDATED)], "{count} on {host}: {summary}")
    assert title == "updater on h: 1 updated" and body == "1 on h: 1 updated"


def test_one_batched_message_per_pass_per_target(tmp_path: Path) -> None:
    """Changes of a pass go out as one message to each target; up-to-date items never."""
    sender = Recorder()
    report = PassReport(items=[item("a", Outcome.UPDATED), item("b", Outcome.UPDATED),
                               item("c", Outcome.UP_TO_DATE)])
    notifier(tmp_path, sender).after_pass(report)
    assert [target for target, *_ in sender.sent] == ["t1", "t2"]
    body = sender.sent[0][2]
    assert "a (" in body and "b (" in body and "c (" not in body


def test_failure_is_told_at_once(tmp_path: Path) -> None:
    """A rolled-back update is sent immediately, at error level; a success is not."""
    sender = Recorder()
    told = notifier(tmp_path, sender)
    told.immediate(item("a", Outcome.UPDATED))
    told.immediate(item("b", Outcome.ROLLED_BACK, reason="unhealthy"))
    assert [(s[0], s[3]) for s in sender.sent] == [("t1", "error"), ("t2", "error")]


def test_monitor_only_news_once_per_digest(tmp_path: Path) -> None:
    """"update available" is told once per new digest, not every pass."""
    sender = Recorder()
    told = notifier(tmp_path, sender)
    for _ in range(3):
        told.after_pass(PassReport(items=[item("a", Outcome.AVAILABLE)]))
    assert len(sender.sent) == 2  # one message, two targets
    told.after_pass(PassReport(items=[ItemReport("a", "i", Outcome.AVAILABLE, new_digest=OLD)]))
    assert len(sender.sent) == 4


def test_level_filters(tmp_path: Path) -> None:
    """notify_level=error keeps only failures."""
    sender = Recorder()
    told = notifier(tmp_path, sender, notify_level="error")
    told.after_pass(PassReport(items=[item("a", Outcome.UPDATED), item("b", Outcome.ERROR)]))
    assert sender.sent == []
    told.after_pass(PassReport(items=[item("c", Outcome.FAILED)]))
    assert len(sender.sent) == 2


def test_undelivered_is_kept_and_retried(tmp_path: Path) -> None:
    """A message that could not be delivered is retried at the next pass, then forgotten."""
    sender = Recorder(working=False)
    told = notifier(tmp_path, sender)
    told.after_pass(PassReport(items=[item("a", Outcome.UPDATED)]))
    assert told.pending() == 2
    sender.working = True
    told.after_pass(PassReport(items=[]))
    assert told.pending() == 0 and len(sender.sent) == 2


def test_a_crashing_sender_never_raises(tmp_path: Path) -> None:
    """An exception inside a sender is logged and kept for retry, never raised."""

    class Exploding(Recorder):
        def send(self, target: str, title: str, body: str, level: str) -> bool:
            raise RuntimeError("plugin bug")

    told = notifier(tmp_path, Exploding())
    told.after_pass(PassReport(items=[item("a", Outcome.UPDATED)]))
    assert told.pending() == 2


class Stuck(Recorder):
    """A destination that takes a message only when released (a sink trickling its answer)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.calls = 0

    def targets(self) -> list[str]:
        return ["t1"]

    def send(self, target: str, title: str, body: str, level: str) -> bool:
        self.calls += 1
        self.release.wait(30)
        return super().send(target, title, body, level)


def test_a_stuck_destination_never_holds_the_pass(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Each message waits at most SEND_SECONDS; no second send is piled on a destination still
    busy; a message that arrives late is not sent again."""
    monkeypatch.setattr(notify, "SEND_SECONDS", 0.3)
    sender = Stuck()
    told = notifier(tmp_path, sender)
    started = time.monotonic()
    told.immediate(item("a", Outcome.ROLLED_BACK))
    told.after_pass(PassReport(items=[item("a", Outcome.ROLLED_BACK),
                                      item("b", Outcome.UPDATED)]))
    assert time.monotonic() - started < 2
    assert sender.calls == 1 and told.pending() == 2
    sender.release.set()
    for _ in range(50):
        if not told._inflight["t1"].thread.is_alive():
            break
        time.sleep(0.05)
    told.after_pass(PassReport())
    assert told.pending() == 0
    assert sender.calls == 2  # the late one is not sent again; the second one is
    assert len(sender.sent) == 2


def test_interrupted_sends_do_not_wait(tmp_path: Path) -> None:
    """After SIGTERM (the event set), a slow destination is not waited for at all."""
    sender = Stuck()
    stop = threading.Event()
    stop.set()
    told = Notifier(Settings(state_dir=str(tmp_path)), "h", sender, stop)
    started = time.monotonic()
    told.after_pass(PassReport(items=[item("a", Outcome.UPDATED)]))
    assert time.monotonic() - started < 1 and told.pending() == 1
    sender.release.set()


def test_a_template_that_does_not_fit_is_refused_when_read() -> None:
    with pytest.raises(ValueError, match=r"notify_template cannot be filled in"):
        messages.check_template("{summary:d}")
    with pytest.raises(ValueError, match=r"cannot be filled in"):
        messages.check_template("{count:s}")
    assert messages.check_template("{count:>3} {summary:>20}") == "{count:>3} {summary:>20}"


def test_a_broken_state_database_costs_the_notification_only(tmp_path: Path) -> None:
    """A failing write of what is owed (a full disk) is logged; nothing raises into a pass."""
    told = notifier(tmp_path, Recorder(working=False))
    told._db.close()
    told.immediate(item("a", Outcome.ROLLED_BACK))
    told.after_pass(PassReport(items=[item("a", Outcome.UPDATED)]))


def test_an_unchanged_error_is_told_once_a_day(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The same check error every pass is one message; a changed reason, the error coming back
    after it went away, or a day passing tells it again."""
    sender = Recorder()
    told = notifier(tmp_path, sender)

    def error(reason: str) -> PassReport:
        return PassReport(items=[item("a", Outcome.ERROR, reason=reason)])

    for _ in range(3):
        told.after_pass(error("not found in registry (HTTP 404)"))
    assert len(sender.sent) == 2  # one message, to each of two targets
    told.after_pass(error("registry unreachable"))
    assert len(sender.sent) == 4
    told.after_pass(PassReport(items=[item("a", Outcome.UP_TO_DATE)]))
    told.after_pass(error("registry unreachable"))
    assert len(sender.sent) == 6
    later = time.time() + notify.ERROR_REMINDER_SECONDS + 1
    monkeypatch.setattr(time, "time", lambda: later)
    told.after_pass(error("registry unreachable"))
    assert len(sender.sent) == 8


def test_held_back_is_never_announced(tmp_path: Path) -> None:
    """The pass after a rollback: the image held back is not an "update available"."""
    sender = Recorder()
    notifier(tmp_path, sender).after_pass(PassReport(items=[
        item("a", Outcome.HELD_BACK, reason="held back: this image was rolled back")]))
    assert sender.sent == []


def test_a_line_for_an_item_not_updated_names_what_runs() -> None:
    line = render_entry(item("a", Outcome.AVAILABLE,
                             versions=Versions("1.4.2", None, None, None, "https://src/x")))
    assert line == ("a (reg.example/a:1): update-available (runs 1.4.2) "
                    "[aaaaaaaaaaaa → bbbbbbbbbbbb] https://src/x")


def test_messages_about_the_updater_itself(tmp_path: Path) -> None:
    sender = Recorder()
    notifier(tmp_path, sender).tell("passes are failing", "cannot reach the engine", "error")
    assert [(s[1], s[2], s[3]) for s in sender.sent][:1] == [
        ("updater on host1: passes are failing", "cannot reach the engine", "error")]


class Slow(Recorder):
    """Answers every message, each after a while: slow, never stuck."""

    def targets(self) -> list[str]:
        return ["t1"]

    def send(self, target: str, title: str, body: str, level: str) -> bool:
        time.sleep(0.2)
        return super().send(target, title, body, level)


def test_a_slow_destination_is_waited_for_a_bounded_time_per_pass(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ten failures in a pass to a destination taking 0.2 s each: the pass waits for it at
    most PASS_SECONDS in all; the rest is kept and sent at the next pass."""
    monkeypatch.setattr(notify, "PASS_SECONDS", 0.5)
    sender = Slow()
    told = notifier(tmp_path, sender)
    started = time.monotonic()
    for n in range(10):
        told.immediate(item(f"c{n}", Outcome.ROLLED_BACK))
    told.after_pass(PassReport())
    assert time.monotonic() - started < 1.5
    assert 2 <= len(sender.sent) <= 4 and told.pending() >= 6
    while told.pending() and len(sender.sent) < 20:
        time.sleep(0.3)
        told.after_pass(PassReport())
    assert told.pending() == 0 and len({s[2] for s in sender.sent}) == 10
