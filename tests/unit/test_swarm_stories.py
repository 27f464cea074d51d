"""How a pass finishes the story of a rollout it finds (issue 23), against a hand-written
fake of the swarm's API: an end is told once, a paused rollout of ours is rolled back once, one
that is not ours is left alone, and a manager lost mid-follow costs that item only."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from updater.actions.services import ServiceUpdater
from updater.core.reference import Reference
from updater.core.report import ItemReport, Outcome
from updater.core.rollout import LABEL, Marker
from updater.core.settings import Settings
from updater.errors import EngineError, EngineUnavailable
from updater.registry.auth import Credentials

D1, D2 = ("sha256:" + c * 64 for c in "12")
OURS = Marker.new(D2, D1, 1_800_000_000)


def _spec(digest: str, marker: Marker | None = None) -> dict[str, Any]:
    labels = {"updater.enable": "true"} | ({LABEL: marker.raw} if marker else {})
    return {"Name": "web", "Labels": labels, "Mode": {"Replicated": {"Replicas": 2}},
            "TaskTemplate": {"ContainerSpec": {"Image": f"reg.example/app:1@{digest}"}}}


class FakeSwarm:
    """One service, its configs, and what was asked of it; `lost` makes the next service
    inspect fail as a stopping engine's does, and the node no longer the leader."""

    host = "unix:///fake.sock"

    def __init__(self, spec: dict[str, Any], previous: dict[str, Any] | None,
                 state: str | None) -> None:
        self.service: dict[str, Any] = {"ID": "s1", "Version": {"Index": 10}, "Spec": spec}
        if previous is not None:
            self.service["PreviousSpec"] = previous
        self.set_state(state)
        self.configs_made: dict[str, dict[str, Any]] = {}
        self.sent: list[dict[str, Any]] = []
        self.rollbacks = 0
        self.leader = True
        self.lost = False
        self.script: list[str] = []  # states the next inspects show, one each

    def set_state(self, state: str | None) -> None:
        self.service.pop("UpdateStatus", None)
        if state is not None:
            self.service["UpdateStatus"] = {"State": state, "Message": f"{state} for a test"}

    def inspect_container(self, container: str) -> dict[str, Any] | None:
        return None  # the updater does not run in a task of these services

    def info(self) -> dict[str, Any]:
        return {"Swarm": {"LocalNodeState": "active", "ControlAvailable": True, "NodeID": "n1"}}

    def inspect_node(self, node: str) -> dict[str, Any]:
        return {"ManagerStatus": {"Leader": self.leader}}

    def services(self) -> list[dict[str, Any]]:
        return [copy.deepcopy(self.service)]

    def inspect_service(self, service: str) -> dict[str, Any]:
        if self.lost:
            self.leader = False
            raise EngineError("failed to inspect service s1: This node is not a swarm manager")
        if self.script:
            state = self.script.pop(0)
            if state.startswith("rollback"):  # the swarm's failure action swaps the specs
                self.service.update(Spec=self.service["PreviousSpec"],
                                    PreviousSpec=self.service["Spec"])
            self.set_state(state)
        return copy.deepcopy(self.service)

    def update_service(self, service: str, version: int, spec: dict[str, Any],
                       registry_auth: str | None, rollback: bool = False) -> None:
        self.sent.append(spec)

    def rollback_service(self, service: str, version: int) -> None:
        self.rollbacks += 1
        spec, previous = self.service["Spec"], self.service["PreviousSpec"]
        self.service.update(Spec=previous, PreviousSpec=spec)
        self.set_state("rollback_completed")

    def nodes(self) -> list[dict[str, Any]]:
        return [{}]

    def tasks(self, service: str | None = None) -> list[dict[str, Any]]:
        return []

    def configs(self, label: str) -> list[dict[str, Any]]:
        return [c for c in self.configs_made.values() if label in c["Spec"]["Labels"]]

    def create_config(self, name: str, data: bytes, labels: dict[str, str]) -> bool:
        if name in self.configs_made:
            return False
        self.configs_made[name] = {"ID": name, "Spec": {"Name": name, "Labels": labels}}
        return True

    def remove_config(self, config: str) -> None:
        self.configs_made.pop(config, None)


class Registry:
    def digest(self, reference: Reference) -> str:
        return D2


class NoCredentials:
    def lookup(self, host: str) -> Credentials | None:
        return None


def _pass(swarm: FakeSwarm, **settings: Any) -> list[ItemReport]:
    updater = ServiceUpdater(swarm, Registry(), NoCredentials(),
                             Settings(**settings), sleep=lambda seconds: None)
    return list(updater.run())


def _outcomes(swarm: FakeSwarm, **settings: Any) -> list[Outcome]:
    return [item.outcome for item in _pass(swarm, **settings)]


def test_a_completed_rollout_of_ours_is_told_once_by_any_updater() -> None:
    """Found completed (its updater killed before telling): `updated` once; every later pass,
    whichever updater runs it, says up-to-date and sends nothing."""
    swarm = FakeSwarm(_spec(D2, OURS), _spec(D1), "completed")
    [item] = _pass(swarm)
    assert (item.outcome, item.old_digest, item.new_digest) == (Outcome.UPDATED, D1, D2)
    assert _outcomes(swarm) == _outcomes(swarm) == [Outcome.UP_TO_DATE]
    assert swarm.sent == [] and swarm.rollbacks == 0


def test_a_paused_rollout_of_ours_is_rolled_back_once() -> None:
    """Paused after our update: rolled back to the previous spec and reported; the next
    passes hold the digest back and roll back nothing more."""
    swarm = FakeSwarm(_spec(D2, OURS), _spec(D1), "paused")
    assert _outcomes(swarm) == [Outcome.ROLLED_BACK]
    assert swarm.rollbacks == 1
    assert _outcomes(swarm) == _outcomes(swarm) == [Outcome.HELD_BACK]
    assert swarm.rollbacks == 1 and swarm.sent == []


def test_with_rollback_off_a_paused_rollout_is_failed_once_then_paused() -> None:
    """rollback off: `failed` once, then `paused` every pass; never rolled back."""
    swarm = FakeSwarm(_spec(D2, OURS), _spec(D1), "paused")
    assert _outcomes(swarm, rollback=False) == [Outcome.FAILED]
    assert _outcomes(swarm, rollback=False) == [Outcome.PAUSED]
    assert swarm.rollbacks == 0


def test_a_rollout_someone_else_started_is_reported_and_left() -> None:
    """No marker of ours (or the operator's update kept it, so PreviousSpec has it too):
    `rolling` while it runs, `paused` when paused; nothing sent, nothing rolled back."""
    for spec, previous in ((_spec(D2), _spec(D1)), (_spec(D2, OURS), _spec(D2, OURS))):
        swarm = FakeSwarm(spec, previous, "updating")
        assert _outcomes(swarm) == [Outcome.ROLLING]
        swarm.set_state("paused")
        assert _outcomes(swarm) == _outcomes(swarm) == [Outcome.PAUSED]
        assert swarm.sent == [] and swarm.rollbacks == 0


def test_an_operators_rollback_of_our_rollout_is_told_once() -> None:
    """`docker service rollback` after our completed update: `rolled-back` once, then the
    digest is held back."""
    swarm = FakeSwarm(_spec(D1), _spec(D2, OURS), "rollback_completed")
    assert _outcomes(swarm) == [Outcome.ROLLED_BACK]
    assert _outcomes(swarm) == [Outcome.HELD_BACK]


def test_the_update_sent_carries_the_marker_in_the_same_spec() -> None:
    """One spec update: the new digest and the updater.rollout label naming it together."""
    swarm = FakeSwarm(_spec(D1), None, None)
    swarm.lost = True  # the engine goes away once the update is sent
    with pytest.raises(EngineUnavailable):
        list(ServiceUpdater(swarm, Registry(), NoCredentials(),
                            Settings(), sleep=lambda seconds: None).run())
    [spec] = swarm.sent
    assert spec["TaskTemplate"]["ContainerSpec"]["Image"].endswith(f":1@{D2}")
    marker = Marker.read(spec)
    assert marker is not None and (marker.to, marker.source) == (D2, D1)


def test_a_manager_lost_mid_follow_costs_only_that_item() -> None:
    """The engine stops answering as the leader while a rollout is followed: the item says
    `rolling` (the swarm goes on), then the pass ends with EngineUnavailable."""
    swarm = FakeSwarm(_spec(D2, OURS), _spec(D1), "updating")
    swarm.lost = True
    items: list[ItemReport] = []
    updater = ServiceUpdater(swarm, Registry(), NoCredentials(),
                             Settings(), sleep=lambda seconds: None)
    with pytest.raises(EngineUnavailable, match="lost the swarm manager"):
        items.extend(updater.run())
    assert [item.outcome for item in items] == [Outcome.ROLLING]
    assert swarm.configs_made == {}  # nothing told: the new leader tells it


def test_the_swarms_own_rollback_is_told_once_and_not_followed_again() -> None:
    """FailureAction rollback: the pass following our rollout sees the swarm roll back and
    reports `rolled-back` without a rollback of its own; a pass that finds the rollback still
    going holds the digest back instead of following it again."""
    swarm = FakeSwarm(_spec(D2, OURS), _spec(D1), "updating")
    swarm.script = ["updating", "rollback_started"]
    assert _outcomes(swarm) == [Outcome.ROLLED_BACK]
    assert swarm.rollbacks == 0 and swarm.service["UpdateStatus"]["State"] == "rollback_started"
    assert _outcomes(swarm) == [Outcome.HELD_BACK]


def test_failure_action_continue_ends_completed_and_updated() -> None:
    """FailureAction continue: the swarm completes the update whatever its tasks do; the
    pass that follows it reports `updated`, and nothing is rolled back."""
    swarm = FakeSwarm(_spec(D2, OURS), _spec(D1), None)
    swarm.script = ["updating", "updating", "completed"]
    assert _outcomes(swarm) == [Outcome.UPDATED]
    assert _outcomes(swarm) == [Outcome.UP_TO_DATE] and swarm.rollbacks == 0


def test_containers_and_services_of_one_image_cost_one_lookup_per_pass() -> None:
    """The pass's PassLookups, given to the container check and to the services: the tag
    both use is asked once; the next pass (new PassLookups) asks again."""
    from updater.core.detect import check
    from updater.core.lookups import PassLookups
    from updater.core.snapshots import ContainerSnapshot

    class Counting:
        def __init__(self) -> None:
            self.asked: list[str] = []

        def digest(self, reference: Reference) -> str:
            self.asked.append(str(reference))
            return D2

    registry = Counting()
    container = ContainerSnapshot(id="c" * 12, name="c", image="reg.example/app:1",
                                  image_id="sha256:x", state="running",
                                  labels={"updater.enable": "true"},
                                  repo_digests=(f"reg.example/app@{D1}",))
    for _ in range(2):
        swarm = FakeSwarm(_spec(D1), None, None)
        lookups = PassLookups(registry)
        [result] = check([container], lookups)
        [item] = ServiceUpdater(swarm, lookups, NoCredentials(),
                                Settings(), sleep=lambda seconds: None).check()
        assert (result.remote_digest, item.new_digest) == (D2, D2)
    assert registry.asked == ["reg.example/app:1"] * 2


def test_a_service_stays_on_its_index_only_while_the_registry_holds_it() -> None:
    """The tag's new index names the same image for the nodes' platform: up-to-date, nothing
    sent. Once the registry deleted the old index (a lifecycle rule), a task placed on a new
    node could not pull it: the service is moved to the tag's index."""
    from updater.errors import ManifestNotFound

    same = "sha256:" + "a" * 64

    class Indexes:
        deleted = False

        def digest(self, reference: Reference) -> str:
            if reference.tag == D1:  # the old index, asked for by digest
                if self.deleted:
                    raise ManifestNotFound("reg.example/app@sha256:111… not found")
                return D1
            return D2

        def platform_digest(self, reference: Reference, digest: str, platform: str) -> str:
            assert platform == "linux/amd64"
            return same

    swarm = FakeSwarm(_spec(D1), None, None)
    swarm.nodes = lambda: [{  # type: ignore[method-assign]
        "ID": "n1", "Status": {"State": "ready"}, "Spec": {"Availability": "active"},
        "Description": {"Hostname": "n1", "Platform": {"OS": "linux",
                                                       "Architecture": "x86_64"}}}]
    registry = Indexes()

    def check() -> ItemReport:
        [item] = ServiceUpdater(swarm, registry, NoCredentials(),
                                Settings(), sleep=lambda seconds: None).check()
        return item

    item = check()
    assert (item.outcome, item.reason) == (
        Outcome.UP_TO_DATE, "the tag's index changed, its linux/amd64 image did not")
    registry.deleted = True
    assert check().outcome is Outcome.AVAILABLE
    assert swarm.sent == []
