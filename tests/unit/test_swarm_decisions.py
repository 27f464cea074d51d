"""The pure decisions behind service updates: the bound of a rolling update, when nothing is
left to replace, what a service was rolled back from (its hold-back), whose rollout a service
is in and where its story stands, and that its end is told once."""

from __future__ import annotations

from typing import Any

import pytest

from updater.actions.told import ToldStories
from updater.core.report import Outcome
from updater.core.rollout import LABEL, Marker, Phase, Story, story, told_key
from updater.core.swarm import (
    ServiceSnapshot,
    held_back,
    rolled_back_from,
    rolled_out,
    update_timeout,
)

OLD = "reg.example/app:1@sha256:" + "a" * 64
NEW = "reg.example/app:1@sha256:" + "b" * 64


def _task(image: str, state: str = "running", desired: str = "running") -> dict[str, Any]:
    return {"DesiredState": desired, "Status": {"State": state},
            "Spec": {"ContainerSpec": {"Image": image}}}


def _service(state: str | None, previous: str | None = NEW) -> dict[str, Any]:
    service: dict[str, Any] = {
        "ID": "s1", "Version": {"Index": 7},
        "Spec": {"Name": "web", "TaskTemplate": {"ContainerSpec": {"Image": OLD}},
                 "Mode": {"Replicated": {"Replicas": 2}}}}
    if previous is not None:
        service["PreviousSpec"] = {"TaskTemplate": {"ContainerSpec": {"Image": previous}}}
    if state is not None:
        service["UpdateStatus"] = {"State": state, "CompletedAt": "2026-11-28T10:11:12.5Z"}
    return service


def test_bound_adds_the_task_health_timeout_per_batch() -> None:
    """3 replicas one at a time, 8 s delay, 1 s monitor, 15 s per task: 60 + 3 * 24 s."""
    spec = {"UpdateConfig": {"Parallelism": 1, "Delay": 8_000_000_000, "Monitor": 1_000_000_000}}
    assert update_timeout(spec, 3, 1, 15.0) == 60 + 3 * 24


def test_bound_of_a_rollback_uses_the_rollback_config() -> None:
    """The rollback's own parallelism decides its batches; parallelism 0 is all at once."""
    spec = {"UpdateConfig": {"Parallelism": 1}, "RollbackConfig": {"Parallelism": 0}}
    assert update_timeout(spec, 4, 1, 10.0, "RollbackConfig") == 60 + 1 * 15
    assert update_timeout(spec, 4, 1, 10.0) == 60 + 4 * 15


def test_global_service_counts_nodes() -> None:
    """A global service has one task per node."""
    assert update_timeout({}, None, 5, 0.0) == 60 + 5 * 5


def test_zero_replicas_are_rolled_out_at_once() -> None:
    """Nothing to replace is complete, although the swarm sets no UpdateStatus."""
    assert rolled_out([_task(OLD, "shutdown", "shutdown")], NEW, 0)


def test_rolled_out_needs_every_wanted_task_running_the_image() -> None:
    """An old task still wanted, a new one not running yet, or too few tasks: not done."""
    assert not rolled_out([_task(OLD), _task(NEW)], NEW, 2)
    assert not rolled_out([_task(NEW, "starting"), _task(NEW)], NEW, 2)
    assert not rolled_out([_task(NEW)], NEW, 2)
    assert rolled_out([_task(NEW), _task(NEW), _task(OLD, "shutdown", "shutdown")], NEW, 2)


def test_rollback_records_the_digest_it_left() -> None:
    """After a rollback, PreviousSpec is the spec rolled back from: its digest is held back."""
    found = rolled_back_from(_service("rollback_completed"))
    assert found is not None
    assert found.digest == "sha256:" + "b" * 64 and found.at == "2026-11-28T10:11:12"


def test_no_hold_back_after_a_normal_update_or_without_a_digest() -> None:
    """Only a rollback holds back, and only a pinned digest can be held."""
    assert rolled_back_from(_service("completed")) is None
    assert rolled_back_from(_service(None)) is None
    assert rolled_back_from(_service("rollback_completed", "reg.example/app:1")) is None
    assert rolled_back_from(_service("rollback_completed", previous=None)) is None


def test_held_back_only_for_the_digest_rolled_back_from() -> None:
    """The rolled-back digest is held back; a newer one is tried."""
    service = ServiceSnapshot.from_inspect(_service("rollback_paused"))
    reason = held_back(service, "sha256:" + "b" * 64)
    assert reason is not None and "updater update web" in reason
    assert held_back(service, "sha256:" + "c" * 64) is None


# --- whose rollout, and where its story stands (updater.rollout) ----------------------------

D1, D2, D3 = ("sha256:" + c * 64 for c in "123")


def _spec(digest: str, marker: Marker | None) -> dict[str, Any]:
    labels = {"updater.enable": "true"} | ({LABEL: marker.raw} if marker else {})
    return {"Labels": labels,
            "TaskTemplate": {"ContainerSpec": {"Image": f"reg.example/app:1@{digest}"}}}


def _rolled(state: str | None, spec: dict[str, Any],
            previous: dict[str, Any] | None) -> dict[str, Any]:
    service: dict[str, Any] = {"ID": "s1", "Spec": spec}
    if previous is not None:
        service["PreviousSpec"] = previous
    if state is not None:
        service["UpdateStatus"] = {"State": state}
    return service


OURS = Marker.new(D2, D1, 1_800_000_000)


def test_marker_reads_back_what_was_written() -> None:
    """The label's text is the rollout's identity; its fields come back as written."""
    assert Marker.read(_spec(D2, OURS)) == OURS
    assert (OURS.to, OURS.source, OURS.at) == (D2, D1, 1_800_000_000)
    assert Marker.read({"Labels": {LABEL: "by hand"}}) is None
    assert Marker.read({"Labels": None}) is None


@pytest.mark.parametrize(("state", "phase"), [
    ("updating", Phase.ROLLING), (None, Phase.ROLLING), ("paused", Phase.PAUSED),
    ("completed", Phase.DONE)])
def test_our_marker_on_the_spec_digest_is_our_rollout(state: str | None, phase: Phase) -> None:
    """Spec carries our marker for its own digest, PreviousSpec does not: its status is ours."""
    found = story(_rolled(state, _spec(D2, OURS), _spec(D1, None)), D2)
    assert found == Story(phase, OURS)


@pytest.mark.parametrize(("state", "phase"), [
    ("rollback_started", Phase.ROLLING_BACK), ("rollback_completed", Phase.ROLLED_BACK),
    ("rollback_paused", Phase.ROLLBACK_PAUSED)])
def test_a_rollback_moves_our_marker_to_the_previous_spec(state: str, phase: Phase) -> None:
    """Any rollback (ours, the failure action's, an operator's) of our rollout is ours to
    tell; the spec it went back to may carry an older marker of ours."""
    older = Marker.new(D1, None, 1_700_000_000)
    for spec in (_spec(D1, None), _spec(D1, older)):
        assert story(_rolled(state, spec, _spec(D2, OURS)), D1) == Story(phase, OURS)


@pytest.mark.parametrize(("state", "phase"), [
    ("updating", Phase.OTHERS_ROLLING), ("rollback_started", Phase.OTHERS_ROLLING),
    ("paused", Phase.OTHERS_PAUSED), ("rollback_paused", Phase.OTHERS_PAUSED),
    ("completed", Phase.SETTLED), ("rollback_completed", Phase.SETTLED), (None, Phase.SETTLED)])
def test_an_operators_later_update_is_not_ours(state: str | None, phase: Phase) -> None:
    """`docker service update` after ours keeps the label, but PreviousSpec then carries the
    same marker: that update and its rollback are the operator's."""
    found = story(_rolled(state, _spec(D2, OURS), _spec(D2, OURS)), D2)
    assert found == Story(phase)


def test_someone_elses_update_to_our_digest_is_not_ours() -> None:
    """A spec pinned to a digest an older marker does not name, or with no marker at all,
    is someone else's rollout, even when the digest is the one this updater would pick."""
    older = Marker.new(D1, None, 1_700_000_000)
    assert story(_rolled("updating", _spec(D3, older), _spec(D1, older)), D3) == Story(
        Phase.OTHERS_ROLLING)
    assert story(_rolled("paused", _spec(D3, None), _spec(D1, None)), D3) == Story(
        Phase.OTHERS_PAUSED)
    assert story(_rolled(None, _spec(D3, None), None), D3) == Story(Phase.SETTLED)


def test_told_key_is_a_config_name_per_rollout_and_outcome() -> None:
    """The same on every manager; another outcome or rollout is another name; a valid swarm
    config name (at most 64 characters)."""
    key = told_key("s1", OURS, "updated")
    assert key == told_key("s1", Marker.read(_spec(D2, OURS)) or OURS, "updated")
    assert key != told_key("s1", OURS, "rolled-back")
    assert key != told_key("s2", OURS, "updated")
    assert len(key) <= 64 and key.replace("-", "").isalnum()


class _Configs:
    """The swarm's configs as the engine shows them: a name is refused twice (409)."""

    def __init__(self) -> None:
        self.made: dict[str, dict[str, Any]] = {}

    def configs(self, label: str) -> list[dict[str, Any]]:
        return [c for c in self.made.values() if label in c["Spec"]["Labels"]]

    def create_config(self, name: str, data: bytes, labels: dict[str, str]) -> bool:
        if name in self.made:
            return False
        self.made[name] = {"ID": f"id-{name}", "Spec": {"Name": name, "Labels": labels}}
        return True

    def remove_config(self, config: str) -> None:
        self.made = {n: c for n, c in self.made.items() if c["ID"] != config}


def test_an_end_is_told_by_one_updater_only() -> None:
    """Two updaters (a restarted one, a new leader's) claim the same end: one wins; another
    outcome of the same rollout is a claim of its own."""
    engine = _Configs()
    service = ServiceSnapshot.from_inspect(_rolled("completed", {**_spec(D2, OURS),
                                                                 "Name": "web"}, None)
                                           | {"Version": {"Index": 3}})
    first = ToldStories(engine, [service.inspect])
    second = ToldStories(engine, [service.inspect])
    assert first.claim(service, OURS, Outcome.UPDATED)
    assert not second.claim(service, OURS, Outcome.UPDATED)
    assert not first.claim(service, OURS, Outcome.UPDATED)
    assert ToldStories(engine, [service.inspect]).told(service, OURS, Outcome.UPDATED)
    assert second.claim(service, OURS, Outcome.ROLLED_BACK)


def test_records_of_rollouts_no_spec_carries_are_removed() -> None:
    """A told-config whose marker is in neither Spec nor PreviousSpec (or whose service is
    gone) is removed when the next pass reads them; the others stay."""
    engine = _Configs()
    inspect = _rolled("completed", {**_spec(D2, OURS), "Name": "web"}, _spec(D1, None)) | {
        "Version": {"Index": 3}}
    service = ServiceSnapshot.from_inspect(inspect)
    old = Marker.new(D1, None, 1_700_000_000)
    ToldStories(engine, [inspect]).claim(service, old, Outcome.UPDATED)
    ToldStories(engine, [inspect]).claim(service, OURS, Outcome.UPDATED)
    assert told_key("s1", old, "updated") not in engine.made  # gone at the second read
    assert ToldStories(engine, [inspect]).told(service, OURS, Outcome.UPDATED)
    assert list(engine.made) == [told_key("s1", OURS, "updated")]
    assert not ToldStories(engine, []).told(service, old, Outcome.UPDATED)
    assert not engine.made  # the service is gone
