"""The swap helper of a self-update on published ports, against the in-memory engine: it stops
the old updater before starting the successor, and puts the old one back (name, running) when
the successor does not take over."""

from __future__ import annotations

from pathlib import Path
from typing import cast

from tests.unit.fake_engine import Clock, FakeEngine
from tests.unit.test_update_state_machine import OPTIONS, _NoCredentials
from updater.actions.containers import ContainerUpdater
from updater.actions.steps import Candidate
from updater.actions.swap import swap, swap_helper
from updater.core.reference import parse
from updater.core.report import Outcome
from updater.core.snapshots import ContainerSnapshot
from updater.engine import recreate
from updater.store.journal import Journal, StateLock, Step

REFERENCE = "reg.example/updater:1"


def _handing_over(tmp_path: Path, broken: bool) -> tuple[FakeEngine, Journal, int, str]:
    """An old updater renamed `updater-updater-old`, its successor created as `updater`, and
    the journal entry at the hand-over, as the old updater leaves them."""
    engine = FakeEngine()
    engine.add_image(REFERENCE, "1", "sha256:" + "a" * 64)
    new_image = engine.add_image("reg.example/updater:2", "2", "sha256:" + "b" * 64)
    if broken:
        engine.broken.add(new_image)
    old_id = engine.run("updater-updater-old", REFERENCE)
    new_id = engine.create({"Image": "reg.example/updater:2"}, "updater")
    journal = Journal(str(tmp_path))
    entry = journal.begin("updater", old_id, REFERENCE, "sha256:" + "b" * 64)
    journal.record(entry, Step.HANDING_OVER, new_id)
    engine.calls.clear()
    return engine, journal, entry, new_id


def test_the_old_updater_is_stopped_before_the_successor_starts(tmp_path: Path) -> None:
    engine, journal, entry, new_id = _handing_over(tmp_path, broken=False)
    real_start = engine.start

    def start_and_take_over(container: str) -> None:  # what the successor does once started
        real_start(container)
        if container == new_id:
            journal.finish(entry, "updated")

    engine.start = start_and_take_over  # type: ignore[method-assign]
    clock = Clock()
    assert swap(engine, journal, entry, 60.0, clock, clock.sleep) == 0
    assert engine.calls == ["stop updater-updater-old", "start updater"]


def test_a_successor_that_exits_gives_the_old_updater_its_name_back(tmp_path: Path) -> None:
    engine, journal, entry, _ = _handing_over(tmp_path, broken=True)
    old_image = engine.named()["updater-updater-old"][0]
    clock = Clock()
    assert swap(engine, journal, entry, 60.0, clock, clock.sleep) == 1
    assert engine.named() == {"updater": (old_image, True)}
    assert clock.now < 5  # it did not wait out the timeout for a successor that exited


def test_a_successor_that_never_takes_over_is_undone_after_the_timeout(tmp_path: Path) -> None:
    engine, journal, entry, _ = _handing_over(tmp_path, broken=False)
    old_image = engine.named()["updater-updater-old"][0]
    clock = Clock()
    assert swap(engine, journal, entry, 60.0, clock, clock.sleep) == 1
    assert engine.named() == {"updater": (old_image, True)}
    assert clock.now >= 60


def test_an_updater_with_rm_and_published_ports_is_not_swapped(tmp_path: Path) -> None:
    """`--rm` with `-p`: the swap helper would have to stop it, the engine would delete it, and
    a failed successor could not be undone; so nothing changes and the reason says why."""
    engine = FakeEngine()
    engine.add_image(REFERENCE, "1", "sha256:" + "a" * 64)
    engine.add_image(REFERENCE, "2", "sha256:" + "b" * 64, local=False)
    own = engine.run("updater", REFERENCE, AutoRemove=True,
                     PortBindings={"8080/tcp": [{"HostIp": "", "HostPort": "8080"}]})
    before = engine.named()
    updater = ContainerUpdater(engine, Journal(str(tmp_path)), _NoCredentials(),
                               own_id=own, lock=cast(StateLock, object()))
    snapshot = ContainerSnapshot(own, "updater", REFERENCE, before["updater"][0], "running")
    item = updater.hand_over(Candidate(snapshot, parse(REFERENCE), "sha256:" + "a" * 64,
                                       "sha256:" + "b" * 64, OPTIONS), lambda: False)
    assert item.outcome is Outcome.FAILED and "--rm" in (item.reason or ""), item
    assert engine.named() == before
    assert not [call for call in engine.calls if not call.startswith("pull")]


def test_the_swap_helper_has_the_primary_network_and_no_mac_address() -> None:
    """The helper runs beside the old updater, which holds its MAC addresses and static
    addresses: it gets the primary network only, with no MAC and no static address."""
    updater = {"Id": "u" * 64, "Config": {"Image": REFERENCE, "MacAddress": "9a:0b:1c:2d:3e:4f"},
               "HostConfig": {"NetworkMode": "front"},
               "NetworkSettings": {"Networks": {
                   "front": {"MacAddress": "9a:0b:1c:2d:3e:4f", "IPAddress": "172.31.1.5",
                             "IPAMConfig": {"IPv4Address": "172.31.1.5"},
                             "Aliases": ["api"]},
                   "back": {"MacAddress": "12:34:56:78:9a:bc", "IPAddress": "172.31.2.7",
                            "IPAMConfig": {"IPv4Address": "172.31.2.7"}}}}}
    plan = recreate.plan(updater, {}, {}, REFERENCE, endpoints_at_create=True)
    assert plan.body["MacAddress"] and plan.body["NetworkingConfig"]["EndpointsConfig"]["back"]
    body = swap_helper(plan, 7, "updater")
    assert "MacAddress" not in body
    assert body["NetworkingConfig"] == {"EndpointsConfig": {"front": {"Aliases": ["api"]}}}
    assert "back" in plan.body["NetworkingConfig"]["EndpointsConfig"]  # the plan is unchanged


def test_a_successor_with_a_fixed_mac_or_address_goes_through_the_helper() -> None:
    """A MAC or static address the successor is created (or connected) with is the running
    updater's: those make the self-update stop the old one first (the swap helper), as
    published ports do; generated ones do not."""
    from updater.actions.swap import pinned_addresses as _pinned_addresses

    def updater(networks: dict[str, dict[str, object]],
                mac: str | None = None) -> dict[str, object]:
        return {"Id": "u" * 64, "Config": {"Image": REFERENCE, "MacAddress": mac},
                "HostConfig": {"NetworkMode": next(iter(networks))},
                "NetworkSettings": {"Networks": networks}}

    dynamic = updater({"front": {"MacAddress": "02:42:ac:1f:01:05", "IPAddress": "172.31.1.5"},
                       "back": {"MacAddress": "02:42:ac:1f:02:07", "IPAddress": "172.31.2.7"}})
    assert _pinned_addresses(recreate.plan(dynamic, {}, {}, REFERENCE)) == []
    assert _pinned_addresses(recreate.plan(dynamic, {}, {}, REFERENCE,
                                           endpoints_at_create=True)) == []
    static = updater({"front": {"IPAddress": "172.31.1.5",
                                "IPAMConfig": {"IPv4Address": "172.31.1.5"}},
                      "back": {"MacAddress": "12:34:56:78:9a:bc", "IPAddress": "172.31.2.7"}},
                     mac="9a:0b:1c:2d:3e:4f")
    assert _pinned_addresses(recreate.plan(static, {}, {}, REFERENCE,
                                           endpoints_at_create=True)) == [
        "mac 9a:0b:1c:2d:3e:4f", "address 172.31.1.5 on front", "mac 12:34:56:78:9a:bc on back"]
    connected = updater({"front": {"IPAddress": "172.31.1.5"},
                         "back": {"IPAddress": "172.31.2.7",
                                  "IPAMConfig": {"IPv4Address": "172.31.2.7"}}})
    assert _pinned_addresses(recreate.plan(connected, {}, {}, REFERENCE)) == [
        "address 172.31.2.7 on back"]
