"""Signal names as the engine takes them: `SIGTERM`, `TERM`, `term` and `15` alike."""

from __future__ import annotations

import signal


def same_signal(one: str, other: str) -> bool:
    number = signal_number(one)
    if number is not None:
        return number == signal_number(other)
    return one.strip().upper().removeprefix("SIG") == other.strip().upper().removeprefix("SIG")


def signal_number(name: str) -> int | None:
    """`SIGTERM`, `TERM`, `term` and `15` alike; None for what is not a signal here."""
    text = name.strip().upper()
    if text.isdigit():
        return int(text)
    try:
        return int(signal.Signals["SIG" + text.removeprefix("SIG")])
    except KeyError:
        return None
