"""The update's state machine (journal, swap, rollback, recovery) against an in-memory engine:
the updater killed before every engine call it makes, then a new updater recovering from the
journal, must leave the container running under its name, on the old image or the new, and
nothing else behind; each failure kind is rolled back. (The real-engine tests of the same
paths are in tests/integration: test_kills, test_safety, test_data_safety.)"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from tests.unit.fake_engine import Clock, Crash, FakeEngine
from updater.actions.containers import ContainerUpdater
from updater.actions.steps import Candidate, moved_versions
from updater.core.policy import ContainerOptions
from updater.core.reference import parse
from updater.core.report import Outcome, Versions
from updater.core.snapshots import ContainerSnapshot
from updater.store.journal import Journal

REFERENCE = "reg.example/app:1"
OLD_DIGEST, NEW_DIGEST = "sha256:" + "a" * 64, "sha256:" + "b" * 64
OPTIONS = ContainerOptions(monitor_only=False, stop_signal=None, stop_timeout=10.0,
                           health_timeout=5.0, rollback=True, hook_timeout=60.0, hooks={},
                           depends_on=())


def _host(**host: Any) -> FakeEngine:
    """An engine running `app` on version 1 (paused with `paused=True`); version 2 is in the
    registry only."""
    paused = host.pop("paused", False)
    engine = FakeEngine()
    engine.add_image(REFERENCE, "1", OLD_DIGEST)
    engine.add_image(REFERENCE, "2", NEW_DIGEST, local=False)
    engine.run("app", REFERENCE, **host)
    if paused:
        engine.containers[next(iter(engine.containers))]["State"]["Paused"] = True
    return engine


def _updater(engine: FakeEngine, state: Path) -> ContainerUpdater:
    clock = Clock()
    return ContainerUpdater(engine, Journal(str(state)), _NoCredentials(),
                            clock=clock, sleep=clock.sleep)


class _NoCredentials:
    def lookup(self, host: str) -> None:
        return None


def _candidate(engine: FakeEngine) -> Candidate:
    found = engine.inspect_container("app")
    assert found is not None
    snapshot = ContainerSnapshot(str(found["Id"]), "app", REFERENCE, str(found["Image"]),
                                 "running")
    return Candidate(snapshot, parse(REFERENCE), OLD_DIGEST, NEW_DIGEST, OPTIONS)


def test_an_update_replaces_the_container_and_leaves_nothing_else(tmp_path: Path) -> None:
    engine = _host()
    old_image = engine.named()["app"][0]
    [item] = _updater(engine, tmp_path).update(_candidate(engine))
    assert item.outcome is Outcome.UPDATED, item
    assert engine.named() == {"app": (engine.registry[NEW_DIGEST], True)}
    assert engine.named()["app"][0] != old_image
    assert Journal(str(tmp_path)).unfinished() == []


def _whole_update_calls(host: dict[str, Any], tmp_path: Path) -> list[str]:
    engine = _host(**host)
    _updater(engine, tmp_path / "count").update(_candidate(engine))
    return engine.calls


HOSTS = {"plain": {}, "removed-on-stop (--rm)": {"AutoRemove": True}, "paused": {"paused": True},
         "no restart policy": {"RestartPolicy": {"Name": "no"}}}


@pytest.mark.parametrize("host", HOSTS.values(), ids=HOSTS.keys())
def test_killed_before_any_engine_call_then_recovered(host: dict[str, Any],
                                                      tmp_path: Path) -> None:
    """For every engine call an update makes, the updater is killed just before it; a new
    updater's recovery leaves `app` running on the old image or the new one (the new one
    only once it was proven), the journal closed, and no other container."""
    calls = _whole_update_calls(dict(host), tmp_path)
    assert len(calls) >= 6, calls
    old_image = FakeEngine().add_image(REFERENCE, "1", OLD_DIGEST)
    for index in range(1, len(calls) + 1):
        engine = _host(**dict(host))
        engine.crash_before = index
        state = tmp_path / f"kill-{index}"
        with pytest.raises(Crash):
            _updater(engine, state).update(_candidate(engine))
        reports = _updater(engine, state).recover()
        where = f"killed before call {index} ({calls[index - 1]}); then {engine.calls}"
        assert set(engine.named()) == {"app"}, where
        image, running = engine.named()["app"]
        assert running, where
        assert image in (old_image, engine.registry[NEW_DIGEST]), where
        assert Journal(str(state)).unfinished() == [], where
        found = engine.inspect_container("app")
        assert found is not None and found["State"]["Paused"] == bool(host.get("paused")), where
        assert found["HostConfig"]["RestartPolicy"] == \
            host.get("RestartPolicy", {"Name": "unless-stopped"}), where
        assert all(r.outcome in (Outcome.UPDATED, Outcome.ROLLED_BACK, Outcome.RECOVERED)
                   for r in reports), (where, reports)


def test_a_new_image_that_exits_is_rolled_back(tmp_path: Path) -> None:
    engine = _host()
    engine.broken.add(engine.registry[NEW_DIGEST])
    old = engine.named()["app"]
    [item] = _updater(engine, tmp_path).update(_candidate(engine))
    assert item.outcome is Outcome.ROLLED_BACK and "exit code 3" in (item.reason or ""), item
    assert engine.named() == {"app": old}


def test_a_rm_replacement_the_engine_is_already_removing_is_waited_out(tmp_path: Path) -> None:
    """A `--rm` container's broken replacement exits and the engine starts deleting it; the
    rollback's remove is refused with 409 (removal in progress): it is waited out and the old
    container is restored from its copy, running, under its name. (Seen on dockerd 28.5.)"""
    engine = _host(AutoRemove=True)
    engine.broken.add(engine.registry[NEW_DIGEST])
    old_image = engine.named()["app"][0]
    [item] = _updater(engine, tmp_path).update(_candidate(engine))
    assert item.outcome is Outcome.ROLLED_BACK, item
    assert engine.named() == {"app": (old_image, True)}
    assert Journal(str(tmp_path)).unfinished() == []


def test_killed_during_a_rollback_then_recovered(tmp_path: Path) -> None:
    """The new image exits; the updater is killed before each call of the rollback: recovery
    still ends with the old container running under its name, and nothing else."""
    engine = _host()
    engine.broken.add(engine.registry[NEW_DIGEST])
    _updater(engine, tmp_path / "count").update(_candidate(engine))
    calls = engine.calls
    first_undo = next(i for i, call in enumerate(calls) if call.startswith("remove"))
    for index in range(first_undo + 1, len(calls) + 1):
        engine = _host()
        engine.broken.add(engine.registry[NEW_DIGEST])
        old = engine.named()["app"]
        engine.crash_before = index
        state = tmp_path / f"kill-{index}"
        with pytest.raises(Crash):
            _updater(engine, state).update(_candidate(engine))
        _updater(engine, state).recover()
        assert engine.named() == {"app": old}, (index, calls[index - 1], engine.calls)


def test_a_failed_create_leaves_the_old_container_untouched(tmp_path: Path) -> None:
    """The replacement's name is taken by an unrelated container: the update fails before
    anything is stopped, and both containers are as they were."""
    engine = _host()
    engine.run("app-updater-new", REFERENCE)
    before = engine.named()
    [item] = _updater(engine, tmp_path).update(_candidate(engine))
    assert item.outcome is Outcome.FAILED and "not touched" in (item.reason or ""), item
    assert engine.named() == before
    assert not [call for call in engine.calls if call.startswith(("stop", "rename"))]


def test_a_failed_pull_leaves_the_old_container_untouched(tmp_path: Path) -> None:
    engine = _host()
    engine.refusals["pull"] = "manifest unknown"
    before = engine.named()
    [item] = _updater(engine, tmp_path).update(_candidate(engine))
    assert item.outcome is Outcome.FAILED and "manifest unknown" in (item.reason or ""), item
    assert engine.named() == before
    assert not [call for call in engine.calls if call.startswith(("stop", "rename", "create"))]
    assert Journal(str(tmp_path)).unfinished() == []


def test_a_new_container_the_engine_will_not_start_is_rolled_back(tmp_path: Path) -> None:
    """The engine refuses to start the replacement (a port taken, a missing device): the old
    container is back under its name, running, and the replacement is gone."""
    engine = _host()
    engine.unstartable.add(engine.registry[NEW_DIGEST])
    old = engine.named()["app"]
    [item] = _updater(engine, tmp_path).update(_candidate(engine))
    assert item.outcome is Outcome.ROLLED_BACK, item
    assert "external connectivity" in (item.reason or ""), item
    assert engine.named() == {"app": old}
    assert Journal(str(tmp_path)).unfinished() == []


@pytest.mark.parametrize(("code", "says"), [(7, "exited with code 7"),
                                            (None, "did not finish within 60s")])
def test_a_failing_pre_update_hook_skips_the_update(code: int | None, says: str,
                                                    tmp_path: Path) -> None:
    """A pre-update hook that fails or outlives its time limit vetoes the update: skipped,
    the old container never stopped, the replacement made ready beside it removed."""
    engine = _host()
    engine.hook_codes["prepare"] = code
    before = engine.named()
    candidate = _candidate(engine)
    candidate = dataclasses.replace(candidate, options=dataclasses.replace(
        OPTIONS, hooks={"pre-update": "prepare"}))
    [item] = _updater(engine, tmp_path).update(candidate)
    assert item.outcome is Outcome.SKIPPED and says in (item.reason or ""), item
    assert engine.named() == before
    assert not [call for call in engine.calls if call.startswith(("stop", "rename"))]
    assert Journal(str(tmp_path)).unfinished() == []


@pytest.mark.parametrize("api_1_44", [True, False], ids=["API 1.44+", "API 1.41"])
def test_a_secondary_mac_is_kept_where_the_engine_takes_every_network(
        api_1_44: bool, tmp_path: Path) -> None:
    """On two networks, `back` with a MAC the user set, `--rm`: the replacement and the
    restorable copy are created with both networks and that MAC on API 1.44+ (nothing
    connected after); on older engines with the primary, `back` connected after."""
    engine = _host(AutoRemove=True, NetworkMode="front")
    engine.api_1_44 = api_1_44
    app = engine.containers[next(iter(engine.containers))]
    app["NetworkSettings"]["Networks"] = {
        "front": {"MacAddress": "9a:0b:1c:2d:3e:4f", "IPAddress": "172.31.1.5"},
        "back": {"MacAddress": "12:34:56:78:9a:bc", "IPAddress": "172.31.2.7"}}
    [item] = _updater(engine, tmp_path).update(_candidate(engine))
    assert item.outcome is Outcome.UPDATED, item
    for name in ("app-updater-new", "app-updater-old"):
        endpoints = engine.bodies[name]["NetworkingConfig"]["EndpointsConfig"]
        if api_1_44:
            assert endpoints == {"front": {}, "back": {"MacAddress": "12:34:56:78:9a:bc"}}
        else:
            assert endpoints == {"front": {}}, name
    connects = [call for call in engine.calls if call.startswith("connect")]
    assert len(connects) == (0 if api_1_44 else 2), engine.calls


def test_a_move_to_a_newer_version_tag_names_it_in_the_replacement(tmp_path: Path) -> None:
    """`updater.tags=semver` chose `reg.example/app:2`: the replacement's Config.Image names
    that tag (as the old one was written), the image is tagged so locally, and the versions
    reported are the images' own."""
    engine = _host()
    candidate = dataclasses.replace(_candidate(engine), reference=parse("reg.example/app:2"))
    [item] = _updater(engine, tmp_path).update(candidate)
    assert item.outcome is Outcome.UPDATED, item
    found = engine.inspect_container("app")
    assert found is not None and found["Config"]["Image"] == "reg.example/app:2"
    assert engine.references["reg.example/app:2"] == engine.registry[NEW_DIGEST]
    assert (item.versions.old, item.versions.new) == ("1", "2")


def test_versions_of_a_move_fall_back_to_the_tags() -> None:
    old = {"Config": {"Image": "reg:5000/app:1.2.3"}}
    assert moved_versions(Versions(), old, parse("reg:5000/app:1.10.0")) == Versions(
        old="1.2.3", new="1.10.0")
    assert moved_versions(Versions(), old, parse("reg:5000/app:1.2.3")) == Versions()
    assert moved_versions(Versions("a", "b"), old, parse("reg:5000/app:2.0.0")) == Versions(
        "a", "b")
