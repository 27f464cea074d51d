"""Digest sharing: the pure rules (manager addresses, request sizes, which answers a node may
act on), the leader's cache (one lookup per reference however many ask at once), and a node's
client against the real API listener on loopback: leader found, not-leader passed over, a
wrong token or no answer falling back to the registries, too-old answers asked again."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from tests.unit.test_api_logs import Control
from updater.core import fleet
from updater.core.lookups import PassLookups
from updater.core.pushes import Push
from updater.core.reference import Reference, parse
from updater.errors import RegistryError
from updater.registry.fleet import ERROR_SECONDS, DigestCache, FleetClient, Shared
from updater.serve.api import ApiServer
from updater.serve.fleet import FleetEndpoint

TOKEN, FLEET = "api-token-value", "fleet-token-value"
D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64


class Registry:
    """A registry's digests by reference text, counting lookups; `gate` holds lookups."""

    def __init__(self, digests: dict[str, str | RegistryError]) -> None:
        self.digests = digests
        self.asked: Counter[str] = Counter()
        self.gate = threading.Event()
        self.gate.set()
        self._lock = threading.Lock()

    def digest(self, reference: Reference) -> str:
        self.gate.wait(10)
        with self._lock:
            self.asked[str(reference)] += 1
        answer = self.digests[str(reference)]
        if isinstance(answer, RegistryError):
            raise answer
        return answer

    def tags(self, reference: Reference) -> list[str]:
        return ["1.0"]

    def platform_digest(self, reference: Reference, digest: str, platform: str) -> str | None:
        return None


Params = list[tuple[str, str | int | float | bool | None]]
REFS = [f"registry.test/app{i}:latest" for i in range(5)]


# --- the pure rules ---------------------------------------------------------------------------


def test_manager_hosts_come_from_the_remote_managers_without_their_port() -> None:
    info = {"Swarm": {"RemoteManagers": [{"NodeID": "b", "Addr": "10.0.0.2:2377"},
                                         {"NodeID": "a", "Addr": "10.0.0.1:2377"},
                                         {"NodeID": "c", "Addr": "fd00::3:2377"},
                                         {"NodeID": "d", "Addr": "[fd00::4]:2377"},
                                         {"NodeID": "e"}, None]}}
    assert fleet.manager_hosts(info) == ["10.0.0.1", "10.0.0.2", "[fd00::3]", "[fd00::4]"]
    assert fleet.manager_hosts({}) == []
    assert fleet.manager_hosts({"Swarm": {"RemoteManagers": None}}) == []


def test_chunks_keep_each_request_small() -> None:
    refs = [f"registry.test/team/app-{i:04d}:release-{i}" for i in range(1000)]
    parts = fleet.chunks(refs)
    assert [ref for part in parts for ref in part] == refs
    assert all(len(part) <= fleet.MAX_REFS for part in parts)
    assert all(sum(len(r) + 8 for r in part) <= fleet.QUERY_BUDGET for part in parts)
    assert fleet.chunks([]) == []
    assert len(fleet.chunks(["a:b"] * 500)) == 500 // fleet.MAX_REFS  # the count bounds short ones


def test_a_node_takes_only_digests_young_enough_and_well_formed() -> None:
    body = {"digests": {"a": {"digest": D1, "age": 5},
                        "b": {"digest": D2, "age": 3601},
                        "c": {"error": "registry down"},
                        "d": {"digest": "sha256:nothex", "age": 1},
                        "e": {"digest": D1, "age": True},
                        "f": {"digest": D1, "age": float("nan")},
                        "g": {"digest": D1, "age": -1}}}
    taken = fleet.take(body, ["a", "b", "c", "d", "e", "f", "g", "h"], max_age=3600)
    assert taken.digests == {"a": D1}
    assert taken.own == ["b", "c", "d", "e", "f", "g", "h"]
    assert taken.oldest == 5
    assert fleet.take([], ["a"], 10).own == ["a"]
    assert fleet.take({"digests": "x"}, ["a"], 10).own == ["a"]


def test_max_age_is_one_non_negative_number() -> None:
    assert fleet.parse_max_age([], 60.0) == 60.0
    assert fleet.parse_max_age(["0"], 60.0) == 0.0
    assert fleet.parse_max_age(["7200"], 60.0) == 7200.0
    for bad in (["-1"], ["nan"], ["inf"], ["soon"], ["1", "2"]):
        with pytest.raises(ValueError, match="max_age"):
            fleet.parse_max_age(bad, 60.0)


# --- the leader's cache -----------------------------------------------------------------------


def test_many_askers_at_once_cost_one_lookup_per_reference() -> None:
    registry = Registry(dict.fromkeys(REFS, D1))
    registry.gate.clear()  # every asker arrives while the lookups are in flight
    cache = DigestCache(registry)
    results: list[dict[str, Any]] = []
    askers = [threading.Thread(target=lambda: results.append(
        cache.digests([parse(r) for r in REFS], 3600))) for _ in range(50)]
    for asker in askers:
        asker.start()
    time.sleep(0.2)
    registry.gate.set()
    for asker in askers:
        asker.join(10)
    assert len(results) == 50 and all(r == dict.fromkeys(REFS, D1) for r in results)
    assert registry.asked == Counter(dict.fromkeys(REFS, 1))
    assert cache.lookups == 5
    cache.close()


def test_answers_are_reused_within_the_askers_interval_and_carry_their_age() -> None:
    now = [1000.0]
    registry = Registry({REFS[0]: D1, REFS[1]: RegistryError("registry.test: HTTP 503")})
    cache = DigestCache(registry, clock=lambda: now[0])
    ref, failing = parse(REFS[0]), parse(REFS[1])
    assert cache.answers([ref], 3600)[REFS[0]] == (D1, 0.0)
    now[0] += 600
    assert cache.answers([ref], 3600)[REFS[0]] == (D1, 600.0)  # reused, 10 minutes old
    assert cache.answers([ref], 300)[REFS[0]] == (D1, 0.0)  # too old for this asker
    assert cache.answers([ref], 0)[REFS[0]] == (D1, 0.0)  # asked for: always looked up
    assert registry.asked[REFS[0]] == 3
    cache.answers([failing], 3600)
    now[0] += ERROR_SECONDS - 1
    cache.answers([failing], 3600)
    assert registry.asked[REFS[1]] == 1  # a failure is answered again briefly
    now[0] += 2
    error, _ = cache.answers([failing], 3600)[REFS[1]]
    assert isinstance(error, RegistryError) and registry.asked[REFS[1]] == 2
    cache.close()


def test_a_push_makes_its_repository_and_tag_old() -> None:
    registry = Registry({"registry.test/app:1": D1, "registry.test/app:2": D1})
    cache = DigestCache(registry)
    one, two = parse("registry.test/app:1"), parse("registry.test/app:2")
    cache.digests([one, two], 3600)
    registry.digests["registry.test/app:1"] = D2
    cache.forget([Push("app", "1")])
    assert cache.digests([one, two], 3600) == {str(one): D2, str(two): D1}
    assert registry.asked == Counter({str(one): 2, str(two): 1})
    cache.close()


def test_a_pass_on_the_leader_asks_once_for_what_containers_and_services_share() -> None:
    registry = Registry(dict.fromkeys(REFS, D1))
    cache = DigestCache(registry)
    lookups = PassLookups(Shared(registry, lambda refs: cache.digests(refs, 3600)))
    lookups.prefetch([parse(r) for r in REFS])
    assert [lookups.digest(parse(r)) for r in REFS] == [D1] * 5
    assert lookups.tags(parse(REFS[0])) == ["1.0"]  # tag lists come from the registry
    assert sum(registry.asked.values()) == 5
    cache.close()


# --- a node's client against the real listener ------------------------------------------------


class Leader:
    def __init__(self, registry: Registry, leading: bool = True) -> None:
        self.cache = DigestCache(registry)
        self.leading = leading
        self.endpoint = FleetEndpoint(FLEET, self.cache, lambda: self.leading, 3600.0)
        self.server = ApiServer("127.0.0.1:0", TOKEN, Control(), fleet=self.endpoint).start()

    def stop(self) -> None:
        self.server.stop()
        self.cache.close()


@pytest.fixture
def leader() -> Iterator[tuple[Leader, Registry]]:
    registry = Registry(dict.fromkeys(REFS, D1))
    found = Leader(registry)
    yield found, registry
    found.stop()


def client(port: int, own: Registry, token: str = FLEET
           ) -> tuple[FleetClient, Counter[str]]:
    counted: Counter[str] = Counter()
    return FleetClient(own, token, port, read_seconds=10,
                       count=lambda source, n: counted.update({source: n})), counted


def test_a_node_takes_the_leaders_digests_and_asks_no_registry(
        leader: tuple[Leader, Registry]) -> None:
    found, registry = leader
    own = Registry(dict.fromkeys(REFS, D2))
    node, counted = client(found.server.port, own)
    answers = node.digests(["127.0.0.1"], [parse(r) for r in REFS], 3600)
    assert answers == dict.fromkeys(REFS, D1)
    assert sum(own.asked.values()) == 0 and sum(registry.asked.values()) == 5
    node.digests(["127.0.0.1"], [parse(r) for r in REFS], 3600)  # a second node, or pass
    assert sum(registry.asked.values()) == 5
    assert counted == Counter(leader=10, registry=0)
    node.close()


def test_a_manager_not_leading_is_passed_over(leader: tuple[Leader, Registry]) -> None:
    found, _ = leader
    other = Leader(Registry({}), leading=False)
    try:
        own = Registry(dict.fromkeys(REFS, D2))
        node, counted = client(other.server.port, own)
        answers = node.digests(["127.0.0.1"], [parse(REFS[0])], 3600)
        assert answers == {REFS[0]: D2} and counted["fallback"] == 1  # 409: not the leader
        node.close()
        node, counted = client(found.server.port, own)
        assert node.digests(["127.0.0.9", "127.0.0.1"], [parse(REFS[0])], 3600) == {
            REFS[0]: D1}  # nothing listens on .9's port: the next manager answers
        assert counted["leader"] == 1 and counted["fallback"] == 0
        node.close()
    finally:
        other.stop()


def test_no_leader_answering_falls_back_to_the_registries_and_says_so(
        caplog: pytest.LogCaptureFixture, leader: tuple[Leader, Registry]) -> None:
    found, _ = leader
    port = found.server.port
    found.stop()  # the leader's updater stopped
    own = Registry(dict.fromkeys(REFS, D2))
    node, counted = client(port, own)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING):
        answers = node.digests(["127.0.0.1"], [parse(r) for r in REFS], 3600)
    assert time.monotonic() - started < 5
    assert answers == dict.fromkeys(REFS, D2) and sum(own.asked.values()) == 5
    assert counted == Counter(fallback=1, registry=5)
    assert "no swarm manager's updater answered" in caplog.text
    node.close()


def test_a_wrong_fleet_token_is_refused_and_named_in_the_log(
        caplog: pytest.LogCaptureFixture, leader: tuple[Leader, Registry]) -> None:
    found, registry = leader
    own = Registry(dict.fromkeys(REFS, D2))
    node, counted = client(found.server.port, own, token="not-the-fleet-token")
    with caplog.at_level(logging.ERROR):
        assert node.digests(["127.0.0.1"], [parse(REFS[0])], 3600) == {REFS[0]: D2}
    assert "refused this node's fleet_token" in caplog.text
    assert "not-the-fleet-token" not in caplog.text
    assert sum(registry.asked.values()) == 0 and counted["fallback"] == 1
    node.close()


def test_what_the_leader_cannot_answer_young_enough_is_asked_of_the_registry(
        leader: tuple[Leader, Registry]) -> None:
    found, registry = leader
    registry.digests[REFS[1]] = RegistryError("registry.test: HTTP 401")
    own = Registry(dict.fromkeys(REFS, D2))
    node, counted = client(found.server.port, own)
    answers = node.digests(["127.0.0.1"], [parse(REFS[0]), parse(REFS[1])], 3600)
    assert answers == {REFS[0]: D1, REFS[1]: D2}  # the leader lacks the credentials
    assert own.asked == Counter({REFS[1]: 1})
    assert counted == Counter(leader=1, registry=1)
    node.close()


def test_the_endpoint_refuses_bad_requests_and_changes_nothing(
        leader: tuple[Leader, Registry]) -> None:
    import httpx

    found, registry = leader
    url = f"http://127.0.0.1:{found.server.port}{fleet.DIGESTS_PATH}"
    bearer = {"Authorization": f"Bearer {FLEET}"}
    cases: list[tuple[dict[str, str], Params, int]] = [
             ({}, [("ref", REFS[0])], 401),
             ({"Authorization": f"Bearer {TOKEN}"}, [("ref", REFS[0])], 401),  # API token
             (bearer, [], 400),
             (bearer, [("ref", "Not A Reference")], 400),
             (bearer, [("ref", "app")], 400),  # not normalised
             (bearer, [("ref", f"{REFS[0]}@{D1}")], 400),
             (bearer, [("ref", REFS[0]), ("max_age", "-5")], 400),
             (bearer, [("ref", REFS[0])] * (fleet.MAX_REFS + 1), 400)]
    for headers, params, status in cases:
        response = httpx.get(url, headers=headers, params=params, timeout=5)
        assert response.status_code == status, (params, response.text)
        assert FLEET not in response.text
    assert sum(registry.asked.values()) == 0
    response = httpx.get(url, headers=bearer, params=[("ref", REFS[0])], timeout=5)
    assert response.status_code == 200
    answer = response.json()["digests"]
    assert list(answer) == [REFS[0]] and answer[REFS[0]]["digest"] == D1
    assert 0 <= answer[REFS[0]]["age"] < 1
    found.leading = False
    assert httpx.get(url, headers=bearer, params=[("ref", REFS[0])],
                     timeout=5).status_code == 409


def test_the_fleet_token_is_a_secret_setting(tmp_path: Any) -> None:
    """From a file (a swarm secret), masked when shown, redacted from logs, never a flag;
    without the HTTP API (its port is the fleet's) it is refused, naming where it was set."""
    from updater import config
    from updater.errors import ConfigError

    secret = tmp_path / "fleet"
    secret.write_text(FLEET + "\n")
    api = {"UPDATER_HTTP_API_LISTEN": ":8080", "UPDATER_HTTP_API_TOKEN": TOKEN}
    loaded = config.load(None, {**api, "UPDATER_FLEET_TOKEN_FILE": str(secret)})
    assert loaded.fleet_token == FLEET and FLEET in loaded.secrets()
    assert FLEET not in config.render(loaded) and FLEET not in repr(loaded)
    assert "fleet_token" not in config.FLAG_KEYS
    assert config.load(None, {**api, "UPDATER_FLEET_TOKEN": ""}).fleet_token is None
    with pytest.raises(ConfigError, match=r"UPDATER_FLEET_TOKEN is set but http_api\.listen"):
        config.load(None, {"UPDATER_FLEET_TOKEN": FLEET})


def test_a_leader_that_accepts_but_never_answers_is_given_up_within_the_bound() -> None:
    """A paused or hung updater still accepts connections (the kernel's backlog): the node
    waits for its answer no longer than the read bound, then asks the registry itself."""
    import socket

    with socket.create_server(("127.0.0.1", 0)) as hung:  # listens, never accepts or answers
        own = Registry(dict.fromkeys(REFS, D2))
        counted: Counter[str] = Counter()
        node = FleetClient(own, FLEET, hung.getsockname()[1], read_seconds=1.0,
                           count=lambda source, n: counted.update({source: n}))
        started = time.monotonic()
        assert node.digests(["127.0.0.1"], [parse(REFS[0])], 3600) == {REFS[0]: D2}
        assert time.monotonic() - started < 4
        assert counted["fallback"] == 1
        node.close()


# --- one view of the fleet --------------------------------------------------------------------


def item(name: str, outcome: str = "up-to-date") -> dict[str, Any]:
    return {"name": name, "kind": "container", "image": "registry.test/app:latest",
            "outcome": outcome, "target": None, "old_digest": D1}


def test_the_view_keeps_each_nodes_last_pass_and_shows_silent_nodes_stale() -> None:
    reports = fleet.NodeReports()
    reports.receive(fleet.report_body("id1", "node1", 60, True, [item("a"), item("b")], 0), 0)
    reports.receive(fleet.report_body("id2", "node2", 60, True, [item("c")], 0), 100)
    # A pass for some names changes those and leaves the others as they were.
    reports.receive(fleet.report_body("id1", "node1", 60, False,
                                      [item("b", "updated")], 0), 110)
    view = reports.view(now=200)
    assert [(n["hostname"], n["items"], n["stale"]) for n in view["nodes"]] == [
        ("node1", 2, False), ("node2", 1, False)]
    assert [(i["node"], i["name"], i["outcome"]) for i in view["items"]] == [
        ("node1", "a", "up-to-date"), ("node1", "b", "updated"), ("node2", "c", "up-to-date")]
    assert "old_digest" not in view["items"][0]
    view = reports.view(now=225)  # node2 silent for 125 s: over two of its 60 s intervals
    assert [(n["hostname"], n["stale"]) for n in view["nodes"]] == [("node1", False),
                                                                   ("node2", True)]
    # A full pass replaces the node's items (a container removed is no longer listed).
    reports.receive(fleet.report_body("id1", "node1", 60, True, [item("a")], 0), 230)
    assert [i["name"] for i in reports.view(230)["items"]] == ["a", "c"]


@pytest.mark.parametrize("body", [
    [], {"node": "", "hostname": "h", "interval": 60, "items": []},
    {"node": "n", "hostname": "h", "interval": 0, "items": []},
    {"node": "n", "hostname": "h", "interval": True, "items": []},
    {"node": "n", "hostname": "h", "interval": 60, "items": {}},
    {"node": "n", "hostname": "h", "interval": 60, "items": [{"kind": "container"}]},
    {"node": "n", "hostname": "h", "interval": 60, "items": [{"name": "a", "image": 5}]},
    {"node": "n", "hostname": "h", "interval": 60, "items": [{"name": "a", "image": "x" * 600}]},
])
def test_a_malformed_report_is_refused_and_changes_nothing(body: Any) -> None:
    reports = fleet.NodeReports()
    with pytest.raises(ValueError, match=r"report|item"):
        reports.receive(body, 0)
    assert reports.view(0) == {"nodes": [], "items": []}


def test_reports_and_the_view_on_the_api(leader: tuple[Leader, Registry]) -> None:
    import httpx

    found, _ = leader
    base = f"http://127.0.0.1:{found.server.port}"
    body = fleet.report_body("id2", "node2", 60, True, [item("web")], time.time())
    fleet_auth = {"Authorization": f"Bearer {FLEET}"}
    api_auth = {"Authorization": f"Bearer {TOKEN}"}
    assert httpx.post(f"{base}{fleet.REPORT_PATH}", json=body, timeout=5,
                      headers=api_auth).status_code == 401  # the API's token is not the fleet's
    assert httpx.post(f"{base}{fleet.REPORT_PATH}", content=b"{", timeout=5,
                      headers=fleet_auth).status_code == 400
    assert httpx.get(f"{base}/v1/fleet", headers=fleet_auth, timeout=5).status_code == 401
    assert httpx.get(f"{base}/v1/fleet", headers=api_auth, timeout=5).json() == {
        "nodes": [], "items": []}
    assert httpx.post(f"{base}{fleet.REPORT_PATH}", json=body, timeout=5,
                      headers=fleet_auth).status_code == 202
    view = httpx.get(f"{base}/v1/fleet", headers=api_auth, timeout=5).json()
    assert [(i["node"], i["name"], i["outcome"], i["stale"]) for i in view["items"]] == [
        ("node2", "web", "up-to-date", False)]
    found.leading = False
    assert httpx.get(f"{base}/v1/fleet", headers=api_auth, timeout=5).status_code == 409
    assert httpx.post(f"{base}{fleet.REPORT_PATH}", json=body, timeout=5,
                      headers=fleet_auth).status_code == 409


def test_a_node_sends_its_report_to_the_leader_that_answered(
        leader: tuple[Leader, Registry]) -> None:
    found, _ = leader
    node, _ = client(found.server.port, Registry(dict.fromkeys(REFS, D2)))
    node.report(fleet.report_body("id3", "node3", 60, True, [item("db")], 0))  # none known yet
    assert found.endpoint.view()[1]["items"] == []
    node.digests(["127.0.0.1"], [parse(REFS[0])], 3600)
    node.report(fleet.report_body("id3", "node3", 60, True, [item("db")], 0))
    assert [i["name"] for i in found.endpoint.view()[1]["items"]] == ["db"]
    node.close()


# --- pushes passed on by the leader -----------------------------------------------------------


def test_pushes_passed_on_are_read_strictly() -> None:
    found = [Push("team/app", "1.4"), Push("library/nginx", "latest")]
    assert fleet.read_pushes(fleet.pushes_body(found)) == found
    bad: Any
    for bad in ([], {"pushes": {}}, {"pushes": [{"path": "a"}]},
                {"pushes": [{"path": "", "tag": "x"}]}, {"pushes": [{"path": 1, "tag": "x"}]},
                {"pushes": [{"path": "a", "tag": "x"}] * 1001}):
        with pytest.raises(ValueError, match="pushes"):
            fleet.read_pushes(bad)


def test_the_nodes_a_push_goes_to_are_the_ready_others() -> None:
    nodes = [{"ID": "me", "Status": {"State": "ready", "Addr": "10.0.0.1"}},
             {"ID": "b", "Status": {"State": "ready", "Addr": "10.0.0.2"}},
             {"ID": "c", "Status": {"State": "down", "Addr": "10.0.0.3"}},
             {"ID": "d", "Status": {"State": "ready", "Addr": "0.0.0.0"}},  # noqa: S104
             {"ID": "e", "Status": {"State": "ready", "Addr": "fd00::5"}}, {}]
    assert fleet.node_hosts(nodes, "me") == {"b": "10.0.0.2", "e": "[fd00::5]"}


def test_a_push_goes_to_nodes_that_may_run_it() -> None:
    reports = fleet.NodeReports()
    reports.receive(fleet.report_body("runs", "n1", 60, True, [item("a")], 0), 0)
    other = {**item("b"), "image": "registry.test/other:latest"}
    reports.receive(fleet.report_body("other", "n2", 60, True, [other], 0), 0)
    assert reports.runs("runs", {"app"}, 10)
    assert not reports.runs("other", {"app"}, 10)  # its fresh report lists no such image
    assert reports.runs("unknown", {"app"}, 10)  # never reported: it may
    assert reports.runs("other", {"app"}, 200)  # stale: it may by now


def test_a_node_takes_pushes_passed_on_with_the_fleet_token() -> None:
    import httpx

    taken: list[list[Push]] = []

    def on_pushed(found: list[Push]) -> list[str]:
        taken.append(found)
        return ["web"]

    endpoint = FleetEndpoint(FLEET, DigestCache(Registry({})), lambda: False, 3600.0,
                             on_pushed=on_pushed)
    server = ApiServer("127.0.0.1:0", TOKEN, Control(), fleet=endpoint).start()
    try:
        url = f"http://127.0.0.1:{server.port}{fleet.PUSHED_PATH}"
        body = fleet.pushes_body([Push("app", "latest")])
        assert httpx.post(url, json=body, timeout=5).status_code == 401
        assert httpx.post(url, json=body, timeout=5, headers={
            "Authorization": f"Bearer {TOKEN}"}).status_code == 401
        assert httpx.post(url, json={"pushes": 5}, timeout=5, headers={
            "Authorization": f"Bearer {FLEET}"}).status_code == 400
        assert taken == []
        own = Registry({})
        node = FleetClient(own, FLEET, server.port, read_seconds=5)
        assert node.pass_on(["127.0.0.1", "127.0.0.9"], body) == 1  # .9: nothing listens
        assert taken == [[Push("app", "latest")]]
        node.close()
    finally:
        server.stop()


def test_a_reference_the_leader_does_not_answer_is_asked_here_without_a_fallback(
        leader: tuple[Leader, Registry]) -> None:
    """A digest-pinned reference is not sent (the leader answers tags only): one odd
    reference must not cost the whole pass its shared digests."""
    found, registry = leader
    pinned = f"registry.test/app@{D1}"
    own = Registry({REFS[0]: D2, pinned: D1})
    node, counted = client(found.server.port, own)
    assert node.digests(["127.0.0.1"], [parse(REFS[0]), parse(pinned)], 3600) == {
        REFS[0]: D1, pinned: D1}
    assert own.asked == Counter({pinned: 1}) and counted["fallback"] == 0
    assert sum(registry.asked.values()) == 1
    node.close()


def test_a_secret_file_path_that_is_no_path_is_refused_clearly() -> None:
    from updater import config
    from updater.errors import ConfigError

    with pytest.raises(ConfigError, match=r"UPDATER_FLEET_TOKEN_FILE .* is not a file path"):
        config.load(None, {"UPDATER_FLEET_TOKEN_FILE": "/run/secrets/\x00fleet"})


def test_a_push_a_node_was_told_of_goes_to_the_leader_which_passes_it_on() -> None:
    """POST /v1/fleet/pushed on the leader (a node forwarding its notification) is for the
    whole fleet; on another node (the leader passing it on) it is for that node's items only,
    and goes no further."""

    forwarded: list[list[Push]] = []
    leading = [True]
    endpoint = FleetEndpoint(FLEET, DigestCache(Registry({})), lambda: leading[0], 3600.0,
                             on_pushed=lambda found: ["web"], forwarded=forwarded.append)
    server = ApiServer("127.0.0.1:0", TOKEN, Control(), fleet=endpoint).start()
    try:
        node = FleetClient(Registry({}), FLEET, server.port, read_seconds=5)
        found = [Push("app", "latest")]
        forward = fleet.pushes_body(found, forward=True)
        assert node.forward(["127.0.0.9", "127.0.0.1"], forward) == "127.0.0.1"
        assert forwarded == [found]
        assert node.pass_on(["127.0.0.1"], fleet.pushes_body(found)) == 1  # from the leader?
        assert len(forwarded) == 1  # a pass-on goes no further
        leading[0] = False
        assert node.forward(["127.0.0.1"], forward) is None  # 409: not the leader
        assert node.pass_on(["127.0.0.1"], fleet.pushes_body(found)) == 1
        assert len(forwarded) == 1
        node.close()
    finally:
        server.stop()
