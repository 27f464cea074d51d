"""What each setting accepts: one parser per value, each raising ValueError with a message
that names the value and what it should be."""

from __future__ import annotations

import datetime
import math
from collections.abc import Callable
from typing import Any

from updater.core.durations import parse_duration
from updater.core.messages import check_template
from updater.core.windows import UpdateWindow, parse_window

MASK = "***"


def boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"{value!r} is not true or false")


def single_text(value: Any) -> str:
    if isinstance(value, dict | list) or value is None:
        raise ValueError(f"{value!r} is not a single text value")
    return str(value)


def optional_text(value: Any) -> str | None:
    return None if value in (None, "") else single_text(value)


def optional_duration(value: Any) -> float | None:
    return None if value in (None, "") else parse_duration(value)


def session_lifetime(value: Any) -> float:
    """How long a dashboard login lasts: at least a minute (under it, or 0, every login would
    end at once and the browser loop back to the login page without a word of why)."""
    seconds = parse_duration(value)
    if seconds < 60:
        raise ValueError(f"{value!r} is under a minute: every login would end at once "
                         "(write e.g. 12h)")
    return seconds


def choice(choices: tuple[str, ...]) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = single_text(value).lower()
        if text not in choices:
            raise ValueError(f"{value!r} is not one of {', '.join(choices)}")
        return text

    return parse


def schedule(value: Any) -> str | None:
    text = optional_text(value)
    if text is None:
        return None
    import cronsim  # only loaded when a schedule is configured

    try:
        cronsim.CronSim(text, _EPOCH)
    except cronsim.CronSimError as exc:
        raise ValueError(f"{text!r} is not a 5-field cron expression ({exc})") from None
    if len(text.split()) != 5:
        raise ValueError(
            f"{text!r} is not a 5-field cron expression (minute hour day month weekday)")
    return text


def apprise_urls(value: Any) -> tuple[str, ...]:
    if value in (None, ""):
        return ()
    items = value.split() if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
        raise ValueError("expected a list of Apprise URLs")
    for url in items:
        if "://" not in url:
            raise ValueError(f"{mask_url(url)!r} is not an Apprise URL (scheme://...)")
    if items:
        import apprise  # heavy: only loaded when notifications are configured

        for url in items:
            if not apprise.Apprise().add(url):
                raise ValueError(f"{mask_url(url)!r} is not a URL Apprise can send to; check "
                                 "it against Apprise's list of services")
    return tuple(items)


def template(value: Any) -> str | None:
    text = optional_text(value)
    if text is None:
        return None
    return check_template(text)


_EPOCH = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)

def threshold(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{value!r} is not a number (a standard deviation of tasks per node, "
                         "e.g. 1.0)") from None
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{value!r} must be 0 or more")
    return number


def count(low: int, high: int) -> Callable[[Any], int]:
    """A whole number from `low` to `high`."""
    def parse(value: Any) -> int:
        text = str(value).strip()
        whole = not isinstance(value, bool) and text.isascii() and text.isdigit()
        if not whole or not low <= int(text) <= high:
            raise ValueError(f"{value!r} is not a whole number from {low} to {high}")
        return int(text)

    return parse


def optional_bool(value: Any) -> bool | None:
    return None if value is None else boolean(value)


def mask_url(url: str) -> str:
    """An Apprise URL with everything after the scheme (tokens, passwords) masked."""
    scheme, separator, _ = url.partition("://")
    return f"{scheme}://{MASK}" if separator else MASK


def update_window(value: Any) -> UpdateWindow | None:
    """`{schedule: "0 2 * * 6", duration: 3h}`, or `0 2 * * 6, 3h`; empty: none."""
    if value in (None, ""):
        return None
    return parse_window(value)
