"""The pure and stored parts of `updater rollback`: the images kept per container (how many,
which a cleanup may remove), the hold-back of an undone digest, the marker of an undo's
rollout, the `keep_images` setting, and rollbacks queued in the daemon's loop between passes."""

from __future__ import annotations

import datetime
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from updater import config
from updater.core import policy
from updater.core.report import PassReport
from updater.core.rollout import Marker
from updater.core.settings import Settings
from updater.errors import ConfigError, UpdaterError
from updater.serve.daemon import Daemon
from updater.store.decisions import OperatorDecisions
from updater.store.kept import KeptImage, KeptImages

NOW = datetime.datetime(2026, 12, 2, 12, 0, tzinfo=datetime.UTC)


def _update(name: str, old: str, new: str) -> KeptImage:
    return KeptImage(name, f"r/{name}:1", f"sha256:{old}-digest", old, f"sha256:{new}-digest",
                     new)


def test_the_last_keep_images_are_kept_and_the_older_ones_given_to_cleanup(
        tmp_path: Path) -> None:
    kept = KeptImages(str(tmp_path), keep=2)
    assert kept.keep(_update("web", "a", "b")) == []
    assert kept.keep(_update("web", "b", "c")) == []
    assert kept.keep(_update("web", "c", "d")) == ["a"]  # two newer ones kept: b and c
    newest = kept.newest("web")
    assert newest is not None and (newest.image_id, newest.new_image_id) == ("c", "d")
    kept.forget(newest)  # rolled back to c: the next rollback goes to b
    newest = kept.newest("web")
    assert newest is not None and newest.image_id == "b"
    assert kept.newest("db") is None
    kept.close()


def test_an_image_another_container_keeps_is_not_given_to_cleanup(tmp_path: Path) -> None:
    kept = KeptImages(str(tmp_path), keep=1)
    kept.keep(_update("web", "a", "b"))
    kept.keep(_update("api", "a", "b"))
    assert kept.keep(_update("web", "b", "c")) == []  # api still keeps a
    assert kept.keep(_update("api", "b", "c")) == ["a"]


def test_keep_images_0_keeps_nothing(tmp_path: Path) -> None:
    kept = KeptImages(str(tmp_path), keep=0)
    assert kept.keep(_update("web", "a", "b")) == ["a"]
    assert kept.newest("web") is None


def test_an_undone_digest_is_held_back_until_approved(tmp_path: Path) -> None:
    decisions = OperatorDecisions(str(tmp_path))
    rules = policy.options({}, Settings(), None)
    digest = "sha256:" + "d" * 64
    decisions.decide("web", digest, policy.UNDONE)
    found = policy.why_waiting(rules, "web", "r/web", digest, NOW, policy.SeenInMemory(),
                               decisions)
    assert found is not None and found[0] is True
    assert f"`updater approve web --digest {digest}` applies it again" in found[1]
    # Another item, or a newer digest of this one: not held.
    assert policy.why_waiting(rules, "api", "r/web", digest, NOW, policy.SeenInMemory(),
                              decisions) is None
    decisions.decide("web", digest, policy.APPROVED)
    assert policy.why_waiting(rules, "web", "r/web", digest, NOW, policy.SeenInMemory(),
                              decisions) is None


def test_the_marker_of_an_undo_reads_back_as_one() -> None:
    undo = Marker.new("sha256:a", "sha256:b", 1000, undo=True)
    update = Marker.new("sha256:b", "sha256:a", 900)
    assert Marker.read({"Labels": {"updater.rollout": undo.raw}}) == undo
    read = Marker.read({"Labels": {"updater.rollout": update.raw}})
    assert read is not None and not read.undo and '"undo"' not in update.raw


@pytest.mark.parametrize(("value", "good"), [("0", True), ("3", True), ("100", True),
                                             ("-1", False), ("1.5", False), ("two", False),
                                             ("101", False), ("²", False)])
def test_keep_images_is_a_small_whole_number(value: str, good: bool) -> None:
    environ = {"UPDATER_KEEP_IMAGES": value}
    if good:
        assert config.load(None, environ).keep_images == int(value)
    else:
        with pytest.raises(ConfigError, match=rf"(?i)keep_images.*{re.escape(value)}.*whole"):
            config.load(None, environ)


def test_a_submitted_job_runs_between_passes_without_moving_the_next() -> None:
    """A rollback queued through the API runs in the loop at once (not beside a pass), a
    failing one is logged, and the full pass stays where it was due."""
    passes: list[tuple[str, ...]] = []
    ran: list[str] = []
    waits: list[float] = []

    def run_pass(stop_requested: Callable[[], bool], names: tuple[str, ...]) -> PassReport:
        passes.append(names)
        daemon.request_stop()
        return PassReport()

    def fail() -> None:
        ran.append("failing")
        raise UpdaterError("nothing to roll back for db")

    def wait(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 1:
            daemon.submit("rollback of web", lambda: ran.append("web"))
            daemon.submit("rollback of db", fail)
        time.sleep(0.01)

    daemon = Daemon(Settings(interval=3600), run_pass,
                    now=lambda: NOW, wait=wait)
    assert daemon.run() == 0
    assert ran == ["web", "failing"]
    assert passes == [()]  # the full pass, when due: the jobs ran no pass of their own
    assert len(waits) == 2 and 3599 < waits[1] < 3600
