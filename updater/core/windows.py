"""Update windows (`update_window`, `updater.update-window`): when updates may be applied, as
a 5-field cron expression for when a window opens and how long it stays open, in the updater's
local time. Checks and notifications go on outside it."""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from typing import Any

from updater.core.durations import format_duration, parse_duration

MAX_DURATION = 7 * 86400.0
# `{schedule: "0 2 * * 6", duration: 3h}` (as in the config file) or `0 2 * * 6, 3h`. A
# schedule may hold commas (`0 2 * * 6,0`): the duration is what follows the last one.
_MAPPING = re.compile(r"\{?\s*schedule\s*:\s*[\"']?(?P<schedule>[^\"'}]+?)[\"']?\s*,\s*"
                      r"duration\s*:\s*[\"']?(?P<duration>[^\"'}\s]+)[\"']?\s*\}?")
_SHORT = re.compile(r"(?P<schedule>.+),\s*(?P<duration>[^,\s]+)")


@dataclass(frozen=True, slots=True)
class UpdateWindow:
    schedule: str
    duration: float

    def opens(self, now: datetime.datetime) -> datetime.datetime | None:
        """None when `now` (timezone-aware) is inside a window; else when the next opens."""
        import cronsim  # only loaded where a window is set

        start = now - datetime.timedelta(seconds=self.duration)
        opened: datetime.datetime = next(cronsim.CronSim(self.schedule, start))
        return None if opened <= now else opened

    def describe(self) -> str:
        return f"{self.schedule}, {format_duration(self.duration)}"


def parse_window(value: Any) -> UpdateWindow:
    """A window from the config file's mapping `{schedule, duration}` or the text forms above;
    ValueError naming what is wrong."""
    if isinstance(value, dict):
        if set(value) != {"schedule", "duration"}:
            raise ValueError(f"{value!r} needs exactly the keys schedule and duration")
        schedule, duration = str(value["schedule"]), value["duration"]
    else:
        text = str(value).strip()
        match = _MAPPING.fullmatch(text) or _SHORT.fullmatch(text)
        if match is None:
            raise ValueError(f"{text!r} is not an update window; write e.g. "
                             "'0 2 * * 6, 3h' (cron expression, duration)")
        schedule, duration = match["schedule"].strip(), match["duration"]
    seconds = parse_duration(duration)
    if not 0 < seconds <= MAX_DURATION:
        raise ValueError(f"window duration {duration!r} must be more than 0 and at most 7d")
    _check_cron(schedule)
    return UpdateWindow(schedule, seconds)


def _check_cron(schedule: str) -> None:
    import cronsim

    if len(schedule.split()) != 5:
        raise ValueError(f"{schedule!r} is not a 5-field cron expression (minute hour day "
                         "month weekday)")
    try:
        cronsim.CronSim(schedule, datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC))
    except cronsim.CronSimError as exc:
        raise ValueError(f"{schedule!r} is not a 5-field cron expression ({exc})") from None
