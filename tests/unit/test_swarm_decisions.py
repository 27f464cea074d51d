"""The pure decisions behind service updates: the bound of a rolling update, when nothing is
left to replace, and what a service was rolled back from (its hold-back)."""

from __future__ import annotations

from typing import Any

from updater.swarm import ServiceSnapshot, held_back, rolled_back_from, rolled_out, update_timeout

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
