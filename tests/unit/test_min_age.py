"""Minimum age: a new digest is applied only once this updater has known it that long, by its
own first-seen clock kept in the state database (never the image's `created` field)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from updater.core.policy import SeenInMemory, options, too_young
from updater.core.settings import Settings
from updater.errors import ConfigError
from updater.store.seen import FirstSeen, SeenSoFar
from updater.store.state import FILENAME

DAY = 86400.0
START = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC


@pytest.mark.parametrize(("age", "waits"), [(0.0, True), (2.9 * DAY, True), (3 * DAY, False),
                                            (10 * DAY, False)])
def test_eligible_once_the_minimum_age_is_reached(age: float, waits: bool) -> None:
    reason = too_young(3 * DAY, START, START + age)
    assert (reason is not None) is waits
    if waits:
        assert reason == "minimum age 3d: eligible at 2027-01-18 08:00:00 UTC"


def test_no_minimum_age_never_waits() -> None:
    assert too_young(0.0, START, START) is None


def test_the_label_wins_over_the_setting_and_bad_values_are_named() -> None:
    settings = Settings(min_age=DAY)
    assert options({}, settings, None).min_age == DAY
    assert options({"updater.min-age": "2h"}, settings, None).min_age == 7200.0
    with pytest.raises(ConfigError, match=r"updater\.min-age="):
        options({"updater.min-age": "soon"}, settings, None)


def test_first_sightings_survive_a_restart_and_stay_first(tmp_path: Path) -> None:
    seen = FirstSeen(str(tmp_path))
    assert seen.first_seen("reg/app", "sha256:a", START) == START
    assert seen.first_seen("reg/app", "sha256:a", START + DAY) == START  # first stays first
    seen.close()
    again = FirstSeen(str(tmp_path))
    assert again.first_seen("reg/app", "sha256:a", START + 2 * DAY) == START
    assert again.first_seen("reg/other", "sha256:a", START + 2 * DAY) == START + 2 * DAY
    again.close()


def test_check_reads_sightings_and_records_none(tmp_path: Path) -> None:
    """`check` needs no writable state_dir: it reads what passes saw, and counts a digest no
    pass saw yet as seen now, without writing it down."""
    assert SeenSoFar(str(tmp_path)).first_seen("reg/app", "sha256:a", START) == START
    assert not (tmp_path / FILENAME).exists()
    recording = FirstSeen(str(tmp_path))
    recording.first_seen("reg/app", "sha256:a", START)
    recording.close()
    reading = SeenSoFar(str(tmp_path))
    assert reading.first_seen("reg/app", "sha256:a", START + DAY) == START
    assert reading.first_seen("reg/app", "sha256:b", START + DAY) == START + DAY
    db = sqlite3.connect(tmp_path / FILENAME)
    assert db.execute("SELECT COUNT(*) FROM first_seen").fetchone()[0] == 1


def test_in_memory_sightings_for_a_pass_without_a_database() -> None:
    seen = SeenInMemory()
    assert seen.first_seen("r", "d", START) == START
    assert seen.first_seen("r", "d", START + 5) == START
