"""Update windows: when a window is open, when the next opens, and how they are written."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest

from updater.config import load
from updater.core.policy import options, outside_window
from updater.core.settings import Settings
from updater.core.windows import UpdateWindow, parse_window
from updater.errors import ConfigError

UTC = datetime.UTC
SATURDAY_2AM = UpdateWindow("0 2 * * 6", 3 * 3600.0)  # Saturdays 02:00-05:00


@pytest.mark.parametrize(("now", "opens"), [
    (datetime.datetime(2026, 12, 5, 2, 0, tzinfo=UTC), None),  # Saturday, as it opens
    (datetime.datetime(2026, 12, 5, 4, 59, tzinfo=UTC), None),
    (datetime.datetime(2026, 12, 5, 5, 0, tzinfo=UTC),
     datetime.datetime(2026, 12, 12, 2, 0, tzinfo=UTC)),  # closed: the next Saturday
    (datetime.datetime(2026, 12, 2, 12, 0, tzinfo=UTC),
     datetime.datetime(2026, 12, 5, 2, 0, tzinfo=UTC)),  # Wednesday
])
def test_open_or_when_it_opens(now: datetime.datetime, opens: datetime.datetime | None) -> None:
    assert SATURDAY_2AM.opens(now) == opens


def test_a_window_that_runs_over_midnight() -> None:
    late = UpdateWindow("0 23 * * *", 2 * 3600.0)
    assert late.opens(datetime.datetime(2026, 12, 3, 0, 30, tzinfo=UTC)) is None
    assert late.opens(datetime.datetime(2026, 12, 3, 1, 0, tzinfo=UTC)) is not None


def test_the_reason_says_when_it_opens() -> None:
    reason = outside_window(SATURDAY_2AM, datetime.datetime(2026, 12, 2, 12, 0, tzinfo=UTC))
    assert reason == "update window (0 2 * * 6, 3h) opens at 2026-12-05 02:00:00 +0000"
    assert outside_window(None, datetime.datetime(2026, 12, 2, tzinfo=UTC)) is None


@pytest.mark.parametrize("text", ['{schedule: "0 2 * * 6", duration: 3h}', "0 2 * * 6, 3h",
                                  "{schedule: 0 2 * * 6, duration: 3h}"])
def test_written_as_in_the_config_file_or_short(text: str) -> None:
    assert parse_window(text) == SATURDAY_2AM
    assert parse_window({"schedule": "0 2 * * 6", "duration": "3h"}) == SATURDAY_2AM


@pytest.mark.parametrize("text", ["0 2 * * 6,0, 3h", "0 2 * * 6,0,3h",
                                  '{schedule: "0 2 * * 6,0", duration: 3h}',
                                  "{schedule: '0 2 * * 6,0', duration: 3h}"])
def test_a_cron_list_is_kept_in_the_text_forms(text: str) -> None:
    """A schedule with a list (`6,0`: Saturday and Sunday), as an env var or label writes it,
    keeps its list; the duration is what follows the last comma."""
    assert parse_window(text) == UpdateWindow("0 2 * * 6,0", 3 * 3600.0)


@pytest.mark.parametrize(("text", "message"), [
    ("0 2 * * 6", "is not an update window"), ("0 2 * * 6 *, 3h", "not a 5-field cron"),
    ("0 25 * * 6, 3h", "not a 5-field cron"), ("0 2 * * 6, 8d", "at most 7d"),
    ("0 2 * * 6, soon", "soon"),
])
def test_bad_windows_are_named(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_window(text)


def test_the_label_wins_over_the_setting() -> None:
    settings = Settings(update_window=SATURDAY_2AM)
    assert options({}, settings, None).window == SATURDAY_2AM
    assert options({"updater.update-window": "none"}, settings, None).window is None
    assert options({"updater.update-window": "0 3 * * *, 1h"}, settings, None).window == \
        UpdateWindow("0 3 * * *", 3600.0)
    with pytest.raises(ConfigError, match=r"label updater\.update-window: '0 3' is not a 5"):
        options({"updater.update-window": "0 3, 1h"}, settings, None)


def test_the_setting_from_file_and_environment(tmp_path: Path) -> None:
    config = tmp_path / "updater.yml"
    config.write_text('update_window: {schedule: "0 2 * * 6", duration: 3h}\n')
    assert load(str(config), environ={}).update_window == SATURDAY_2AM
    assert load(None, environ={"UPDATER_UPDATE_WINDOW": "0 2 * * 6, 3h"}).update_window == \
        SATURDAY_2AM
