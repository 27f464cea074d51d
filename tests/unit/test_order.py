"""Dependencies and the order they impose."""

from __future__ import annotations

from updater.core.order import Node, dependants, graph, update_order


def test_graph_from_every_kind_of_dependency() -> None:
    """depends-on labels, links, another container's network, PID or IPC namespace and Compose
    depends_on all count."""
    nodes = [
        Node("db", "id-db", {"com.docker.compose.project": "p",
                             "com.docker.compose.service": "database"}),
        Node("vpn", "id-vpn"),
        Node("app", "id-app", {"updater.depends-on": "cache, /missing",
                               "com.docker.compose.project": "p",
                               "com.docker.compose.depends_on": "database:service_started:false"}),
        Node("cache", "id-cache", links=("/vpn:/cache/vpn",)),
        Node("agent", "id-agent", network_mode="container:id-vpn"),
        Node("other", "id-other", {"com.centurylinklabs.watchtower.depends-on": "db"}),
        Node("sidecar", "id-sidecar", namespace_modes=("container:id-app", "container:db")),
    ]
    assert graph(nodes) == {"db": set(), "vpn": set(), "app": {"cache", "db"},
                            "cache": {"vpn"}, "agent": {"vpn"}, "other": {"db"},
                            "sidecar": {"app", "db"}}


def test_update_order_dependencies_first() -> None:
    """Candidates come after what they depend on, whatever order they were given in."""
    edges = {"a": set(), "b": {"a"}, "c": {"b"}, "d": set()}
    ordered, cyclic = update_order(["c", "d", "a", "b"], edges)
    assert ordered.index("a") < ordered.index("b") < ordered.index("c")
    assert sorted(ordered) == ["a", "b", "c", "d"] and cyclic == []


def test_cycle_is_reported_and_the_rest_goes_on() -> None:
    """Containers in (or behind) a cycle are set aside; the others are still ordered."""
    edges = {"a": {"b"}, "b": {"a"}, "c": {"a"}, "d": set()}
    ordered, cyclic = update_order(["a", "b", "c", "d"], edges)
    assert ordered == ["d"] and sorted(cyclic) == ["a", "b", "c"]


def test_dependants_deepest_first() -> None:
    """Dependants are listed in stop order: the most dependent first."""
    edges = {"a": set(), "b": {"a"}, "c": {"b"}, "x": set()}
    assert dependants("a", edges) == ["c", "b"]
    assert dependants("x", edges) == []


def test_dependants_survive_cycles() -> None:
    """A cycle among dependants does not loop forever."""
    edges = {"a": set(), "b": {"a", "c"}, "c": {"b"}}
    assert sorted(dependants("a", edges)) == ["b", "c"]
