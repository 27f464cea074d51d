"""Durations as written by people."""

from __future__ import annotations

import pytest

from updater.core.durations import format_duration, parse_duration


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("1h30m", 5400), ("500ms", 0.5), ("2d", 172800), ("45", 45), (12, 12),
    ("1.5h", 5400), (" 5m ", 300), ("0s", 0),
])
def test_parse(text: str | int, seconds: float) -> None:
    """Units ms/s/m/h/d combine; a bare number is seconds."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "ten", "5x", "m5", "-5s", "5s5", "1h 30m", "nan", "inf",
                                  True])
def test_reject(text: str | bool) -> None:
    """Anything else is a ValueError that quotes the bad value."""
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


@pytest.mark.parametrize("seconds", [0, 1, 59, 60, 3600, 5400, 90061, 0.25])
def test_format_round_trips(seconds: float) -> None:
    """What `format_duration` writes reads back as the same number."""
    assert parse_duration(format_duration(seconds)) == seconds
