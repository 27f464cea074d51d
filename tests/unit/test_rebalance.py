"""The rebalance plan: balance by count when nodes are alike, fewer tasks where capacity is
reserved, constraints and drained nodes respected."""

from __future__ import annotations

import pytest

from updater.core.rebalance import NodeCapacity, Placement, deviation, matches, plan_service

CPU = 2_000_000_000
MEMORY = 4 * 1024**3


def node(index: int, eligible: bool = True, **labels: str) -> NodeCapacity:
    return NodeCapacity(f"id{index}", f"node{index}", eligible, CPU, MEMORY, labels=labels,
                        os="linux", arch="x86_64")


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


@pytest.mark.parametrize(("constraint", "expected"), [
    ("node.hostname!=NODE1", False), ("Node.Hostname==Node1", True),  # case, as swarmkit
    ("node.platform.arch==X86_64", True), ("node.platform.arch==amd64", False),
    ("node.labels.rack!=r1", True), ("node.labels.rack==r1", False),  # a missing label is ""
    ("node.labels.Zone==a", False),  # label names keep their case
    ("node.colour==blue", False), ("node.colour!=blue", False),  # unknown keys match nothing
    ("engine.labels.x!=y", True),
])
def test_constraints_as_swarmkit_matches_them(constraint: str, expected: bool) -> None:
    assert matches(constraint, node(1, zone="a")) is expected


def test_a_spread_preference_is_the_best_there_is() -> None:
    """12 replicas spread over zone (a: one node, b: two) run 6/3/3, as the user asked: no
    plan; all on one node, the plan is that same 6/3/3 (issue 20, case 1)."""
    nodes = [node(1, zone="a"), node(2, zone="b"), node(3, zone="b")]
    spread = Placement(spread=("node.labels.zone",))
    assert plan_service("web", 12, (0, 0), spread, {"id1": 6, "id2": 3, "id3": 3}, nodes, {},
                        1.0) is None
    moved = plan_service("web", 12, (0, 0), spread, {"id2": 12}, nodes, {}, 1.0)
    assert moved is not None and moved.after == {"node1": 6, "node2": 3, "node3": 3}


def test_nested_spread_and_nodes_without_the_label() -> None:
    """Spread by region, then zone; nodes lacking the region label share one group."""
    nodes = [node(1, region="eu", zone="a"), node(2, region="eu", zone="b"),
             node(3, region="us", zone="c"), node(4)]
    rules = Placement(spread=("node.labels.region", "node.labels.zone"))
    moved = plan_service("web", 6, (0, 0), rules, {"id1": 6}, nodes, {}, 0.1)
    assert moved is not None and moved.after == {"node1": 1, "node2": 1, "node3": 2,
                                                 "node4": 2}


def test_max_replicas_per_node_is_respected() -> None:
    nodes = [node(1), node(2), node(3), node(4)]
    rules = Placement(max_per_node=2)
    assert plan_service("web", 6, (0, 0), rules, {"id1": 2, "id2": 2, "id3": 2}, nodes, {},
                        1.0) is None
    moved = plan_service("web", 6, (0, 0), rules, {"id1": 2, "id2": 2, "id3": 2}, nodes, {},
                         0.1)
    assert moved is not None and max(moved.after.values()) <= 2


def test_a_case_insensitive_constraint_leaves_a_balanced_service_alone() -> None:
    """`node.hostname!=NODE3` excludes node3 as the swarm does: 3/3 on the others is
    balanced (before: planned 2/2/2, the swarm put it back to 3/3/0, every time; case 2)."""
    assert plan_service("web", 6, (0, 0), ["node.hostname!=NODE3"], {"id1": 3, "id2": 3},
                        NODES, {}, 1.0) is None


def test_the_best_reachable_spread_is_not_moved() -> None:
    """9 replicas reserving 0.5 CPU, another service holding 1.5 of node3's 2 CPUs: 4/4/1 is
    the best there is, so nothing moves although its deviation is over 1 (case 3)."""
    reserved = {"id3": (1_500_000_000, 0)}
    assert plan_service("web", 9, (500_000_000, 0), [], {"id1": 4, "id2": 4, "id3": 1}, NODES,
                        reserved, 1.0) is None


def test_placement_from_a_service_template() -> None:
    template = {"Placement": {"Constraints": ["node.role==worker"], "MaxReplicas": 3,
                              "Preferences": [{"Spread": {"SpreadDescriptor": "node.labels.az"}}]}}
    assert Placement.from_template(template) == Placement(("node.role==worker",),
                                                          ("node.labels.az",), 3)
    assert Placement.from_template({}) == Placement()


def test_a_service_reserving_nothing_is_planned_on_fully_reserved_nodes() -> None:
    """Other services reserve every CPU of every node: a service that reserves nothing still
    runs anywhere, so its plan spreads it (before, it planned 0 tasks everywhere)."""
    reserved = {n.id: (CPU, 0) for n in NODES}
    moved = plan_service("web", 6, (0, 0), [], {"id1": 6}, NODES, reserved, 1.0)
    assert moved is not None and moved.after == {"node1": 2, "node2": 2, "node3": 2}


def _described(name: str, arch: str, labels: dict[str, str] | None = None,
               state: str = "ready", availability: str = "active") -> dict[str, object]:
    return {"ID": name, "Status": {"State": state},
            "Spec": {"Availability": availability, "Labels": labels or {}, "Role": "worker"},
            "Description": {"Hostname": name, "Platform": {"OS": "linux", "Architecture": arch}}}


def test_node_platforms_are_oci_names_of_the_nodes_a_service_may_run_on() -> None:
    """uname's machine names become the architectures an index names; a node down or drained
    counts (a task may go there later); constraints decide; a node that does not say its
    platform makes it unknown."""
    from updater.core.rebalance import node_platforms

    nodes = [_described("a", "x86_64"), _described("b", "aarch64", {"zone": "edge"}, "down"),
             _described("c", "armv7l", {"zone": "edge"}, availability="drain")]
    assert node_platforms(nodes, {}) == ["linux/amd64", "linux/arm/v7", "linux/arm64"]
    edge = {"Placement": {"Constraints": ["node.labels.zone==edge"]}}
    assert node_platforms(nodes, edge) == ["linux/arm/v7", "linux/arm64"]
    arm64 = {"Placement": {"Constraints": ["node.platform.arch==aarch64"]}}
    assert node_platforms(nodes, arm64) == ["linux/arm64"]
    assert node_platforms(nodes, {"Placement": {"Constraints": ["node.labels.zone==x"]}}) is None
    assert node_platforms([*nodes, _described("d", "")], {}) is None
