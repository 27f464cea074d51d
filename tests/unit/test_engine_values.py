"""Pure values of the engine adapter: a hook's announced PID and output, references, signals."""

from __future__ import annotations

from updater.engine.adapter import _split_tag
from updater.engine.commands import ExecOutput, announced_pid
from updater.engine.signals import same_signal


def test_pid_is_read_from_the_first_line_only_once_complete() -> None:
    """The PID counts only when its line is complete and numeric."""
    assert announced_pid(b"updater-hook-pid=4") is None
    assert announced_pid(b"updater-hook-pid=42\nhello") == 42
    assert announced_pid(b"updater-hook-pid=4x\n") is None
    assert announced_pid(b"something else\n") is None


def test_output_is_read_in_chunks_and_loses_the_pid_line() -> None:
    """Chunks split anywhere give the PID and the hook's own output, nothing more."""
    output = ExecOutput()
    output.read(iter([b"updater-hook", b"-pid=7", b"\nline one\n", b"line two\n"]))
    assert output.done.is_set()
    assert output.pid == 7
    assert output.text() == "line one\nline two\n"


def test_reference_split_into_repository_and_tag() -> None:
    """A tag after the last colon; a registry port is not a tag."""
    assert _split_tag("127.0.0.1:5000/app:1.2") == ("127.0.0.1:5000/app", "1.2")
    assert _split_tag("127.0.0.1:5000/app") == ("127.0.0.1:5000/app", "latest")
    assert _split_tag("app") == ("app", "latest")


def test_signals_compared_by_meaning_not_spelling() -> None:
    """SIGTERM, TERM, term and 15 are one signal; unknown names compare as written."""
    assert same_signal("SIGTERM", "15") and same_signal("term", "SIGTERM")
    assert not same_signal("SIGINT", "SIGTERM")
    assert same_signal("SIGRTMIN+3", "RTMIN+3") and not same_signal("SIGRTMIN+3", "SIGX")
