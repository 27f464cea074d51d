"""Carrying out rebalance plans, against small fakes of the engine and the service updater:
the report tells where the tasks ended up, and a plan the swarm undid is not carried out
again (a forced update restarts every task of the service each time)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

from updater.actions.locate import where
from updater.actions.rebalancing import check_rebalanced_names
from updater.actions.services import ServiceUpdater
from updater.app import Application
from updater.core.rebalance import ServicePlan
from updater.core.report import ItemReport, Outcome
from updater.core.settings import Settings
from updater.engine.adapter import Engine
from updater.errors import EngineError, EngineUnavailable, NotFoundInEngine, UpdaterError

NODES = [{"ID": f"n{i}", "Description": {"Hostname": f"node{i}"}, "Spec": {"Availability": a},
          "Status": {"State": s, "Addr": f"10.0.0.{i}"}}
         for i, (a, s) in enumerate([("active", "ready"), ("active", "ready"),
                                     ("drain", "ready"), ("active", "down")], start=1)]


def _task(index: int, node: str, desired: str = "running", state: str = "running") -> dict[
        str, Any]:
    return {"ID": f"t{index}", "ServiceID": "s1", "NodeID": node, "DesiredState": desired,
            "Status": {"State": state, "ContainerStatus": {"ContainerID": f"c{index:063d}"}}}


class FakeEngine:
    host = "unix:///fake.sock"

    def __init__(self, placed: list[str]) -> None:
        self.placed = placed

    def inspect_service(self, name: str) -> dict[str, Any]:
        return {"ID": "s1", "Spec": {"Name": name}}

    def nodes(self) -> list[dict[str, Any]]:
        return NODES

    def tasks(self, service: str | None = None) -> list[dict[str, Any]]:
        return [_task(i, node) for i, node in enumerate(self.placed)]

    def info(self) -> dict[str, Any]:
        return {"Swarm": {"NodeID": "n1"}}


class FakeServices:
    """Rebalances by putting the tasks where `then` says (the swarm's own choice)."""

    def __init__(self, engine: FakeEngine, then: list[str]) -> None:
        self.engine, self.then, self.calls = engine, then, 0

    def rebalance(self, plans: list[ServicePlan]) -> list[ItemReport]:
        self.calls += 1
        self.engine.placed = list(self.then)
        return [ItemReport(p.service, "app", Outcome.REBALANCED, kind="service", reason="x")
                for p in plans]


PLAN = ServicePlan("web", {"node1": 4, "node2": 0}, {"node1": 2, "node2": 2}, 2.0)


def _run(app: Application, engine: FakeEngine, services: FakeServices) -> list[ItemReport]:
    return app.rebalancer.carry_out(cast(Engine, engine), cast(ServiceUpdater, services), [PLAN])


def test_a_plan_the_swarm_undid_is_not_carried_out_again(tmp_path: Path) -> None:
    engine = FakeEngine(["n1"] * 4)
    services = FakeServices(engine, then=["n1"] * 4)  # the swarm puts them all back
    with Application(Settings(state_dir=str(tmp_path))) as app:
        [first] = _run(app, engine, services)
        again = _run(app, engine, services)
    assert first.outcome is Outcome.REBALANCED
    assert first.reason is not None and "placed the tasks as before" in first.reason
    assert again == [] and services.calls == 1


def test_the_report_tells_where_the_tasks_ended_up(tmp_path: Path) -> None:
    """A plan carried out as planned says so; one that went elsewhere says both; the same
    plan needed again later (the placement drifted back) is carried out again."""
    engine = FakeEngine(["n1"] * 4)
    services = FakeServices(engine, then=["n1", "n1", "n2", "n2"])
    with Application(Settings(state_dir=str(tmp_path))) as app:
        [done] = _run(app, engine, services)
        engine.placed = ["n1"] * 4
        services.then = ["n1", "n1", "n1", "n2"]
        [other] = _run(app, engine, services)
    assert done.reason == "rebalanced: {'node1': 4, 'node2': 0} -> {'node1': 2, 'node2': 2}"
    assert other.reason == ("rebalanced: {'node1': 4, 'node2': 0} -> {'node1': 3, 'node2': 1} "
                            "(planned {'node1': 2, 'node2': 2})")
    assert services.calls == 2


def test_where_lists_only_tasks_that_run_on_nodes_that_are_up() -> None:
    """A task on a node that went down still reports running (its desired state is shutdown
    once the swarm replaced it): not a shell target. A drained node's task shows its
    availability."""
    engine = FakeEngine([])
    tasks = [_task(1, "n1"), _task(2, "n4"), _task(3, "n2", desired="shutdown"),
             _task(4, "n3"), _task(5, "n2", state="starting")]
    engine.tasks = lambda service=None: tasks  # type: ignore[method-assign]
    places = where(cast(Engine, engine), "web")
    assert [(p.node, p.availability) for p in places] == [("node1", "active"),
                                                          ("node3", "drain")]


@pytest.mark.parametrize(("name", "message"), [
    ("nosuch", "no service named 'nosuch'"), ("agent", "agent is a global service"),
])
def test_services_named_for_a_rebalance_must_be_replicated_ones(name: str, message: str) -> None:
    services = [{"Spec": {"Name": "web", "Mode": {"Replicated": {"Replicas": 2}}}},
                {"Spec": {"Name": "agent", "Mode": {"Global": {}}}}]
    check_rebalanced_names(["web"], services)
    with pytest.raises(UpdaterError, match=message):
        check_rebalanced_names(["web", name], services)


@pytest.mark.parametrize(("error", "message"), [
    (NotFoundInEngine("service web not found"), "no service named 'web' on this swarm manager"),
    (EngineUnavailable("lost the Docker engine at unix:///x while trying to inspect service "
                       "web (connection refused)"), "lost the Docker engine"),
    (EngineError("Docker engine at unix:///x failed to inspect service web: This node is not a "
                 "swarm manager"), "not a swarm manager"),
])
def test_where_says_why_a_service_could_not_be_read(error: Exception, message: str) -> None:
    """Only a service the engine does not know is "no service named"; an engine lost, or one
    that is not a manager, says so."""
    engine = FakeEngine([])

    def refuse(service: str) -> dict[str, object]:
        raise error

    engine.inspect_service = refuse  # type: ignore[method-assign,assignment]
    with pytest.raises(UpdaterError, match=message):
        where(cast(Engine, engine), "web")
