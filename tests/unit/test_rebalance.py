"""The rebalance plan: balance by count when nodes are alike, fewer tasks where capacity is
reserved, constraints and drained nodes respected."""

from __future__ import annotations

import pytest

from updater.rebalance import NodeCapacity, deviation, matches, plan_service

CPU = 2_000_000_000
MEMORY = 4 * 1024**3


def node(index: int, eligible: bool = True, **labels: str) -> NodeCapacity:
    return NodeCapacity(f"id{index}", f"node{index}", eligible, CPU, MEMORY, labels=labels)


NODES = [node(1), node(2), node(3)]


def test_all_on_one_node_is_spread_evenly() -> None:
    """6 tasks on one of 3 equal nodes become 2, 2, 2."""
    plan = plan_service("web", 6, (0, 0), [], {"id1": 6}, NODES, {}, 1.0)
    assert plan is not None
    assert plan.before == {"node1": 6, "node2": 0, "node3": 0}
    assert plan.after == {"node1": 2, "node2": 2, "node3": 2}
    assert plan.moves == 4 and plan.deviation > 2


def test_balanced_enough_is_left_alone() -> None:
    """Below the threshold there is no plan."""
    assert plan_service("web", 5, (0, 0), [], {"id1": 2, "id2": 2, "id3": 1}, NODES, {},
                        1.0) is None


def test_reserved_capacity_gets_fewer_tasks() -> None:
    """A node whose CPU is mostly reserved by another service gets fewer tasks, and none
    beyond what its free CPU can hold."""
    reserved = {"id3": (1_800_000_000, 0)}
    plan = plan_service("web", 6, (250_000_000, 0), [], {"id1": 6}, NODES, reserved, 1.0)
    assert plan is not None
    assert plan.after["node3"] < plan.after["node1"]
    assert plan.after["node3"] * 250_000_000 <= CPU - 1_800_000_000
    assert sum(plan.after.values()) == 6


def test_drained_and_constrained_nodes_are_not_eligible() -> None:
    """Drained nodes and nodes failing a placement constraint get nothing."""
    nodes = [node(1, zone="a"), node(2, zone="a"), node(3, zone="b"), node(4, eligible=False)]
    plan = plan_service("web", 4, (0, 0), ["node.labels.zone==a"], {"id1": 4}, nodes, {}, 0.5)
    assert plan is not None and plan.after == {"node1": 2, "node2": 2}


@pytest.mark.parametrize(("constraint", "expected"), [
    ("node.hostname==node1", True), ("node.hostname!=node1", False), ("node.role==worker", True),
    ("node.labels.zone==a", True), ("node.labels.zone != b", True), ("node.id==id2", False),
    ("engine.labels.x==y", False), ("node.platform.os==linux", True),
])
def test_constraints(constraint: str, expected: bool) -> None:
    """The common placement constraint forms are understood."""
    assert matches(constraint, node(1, zone="a")) is expected


def test_deviation() -> None:
    """Population standard deviation of tasks per node."""
    assert deviation([2, 2, 2]) == 0 and deviation([6, 0, 0]) == pytest.approx(2.828, 0.01)
