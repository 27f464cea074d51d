"""Durations as people write them: `90s`, `1h30m`, `500ms`, `2d`, or a bare number of seconds."""

from __future__ import annotations

import math
import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
# No setting or label means more than a year; beyond it timers and socket timeouts overflow.
MAX_SECONDS = 365 * 86400.0


def parse_duration(text: str | int | float) -> float:
    """Seconds in `text`; ValueError (with the bad value in the message) when it is not one."""
    if isinstance(text, bool) or not isinstance(text, str | int | float):
        raise ValueError(f"{text!r} is not a duration (write e.g. 30s, 5m, 1h30m)")
    try:
        seconds = float(text) if isinstance(text, int | float) else _parse_text(text.strip())
    except (ValueError, OverflowError):
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{text!r} is not a duration (write e.g. 30s, 5m, 1h30m)")
    if seconds > MAX_SECONDS:
        raise ValueError(f"{text!r} is longer than a year; write at most 365d")
    return seconds


def _parse_text(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    position, total = 0, 0.0
    for match in _PART.finditer(text):
        if match.start() != position:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
    if position == 0 or position != len(text):
        raise ValueError(f"{text!r} is not a duration (write e.g. 30s, 5m, 1h30m)")
    return total


def format_duration(seconds: float) -> str:
    """The shortest exact text `parse_duration` reads back as `seconds`."""
    if seconds != int(seconds):
        return f"{round(seconds * 1000)}ms"
    whole, text = int(seconds), ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, whole = divmod(whole, size)
        if count:
            text += f"{count}{unit}"
    return text or "0s"
