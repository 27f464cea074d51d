"""Digest sharing on the setups an adversarial review tried: fresh passes over several
references, a push while a lookup is in flight, every node asking at once, an engine down
while a push is passed on, reports that would grow without bound, a container and a service
of one name, bursts of pushes with hung nodes, nodes on a cron schedule."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.unit.test_api_logs import Control
from updater.core import fleet
from updater.core.pushes import Push
from updater.core.reference import Reference, parse
from updater.errors import EngineError
from updater.registry.fleet import DigestCache, FleetClient
from updater.serve.api import ApiServer
from updater.serve.fleet import FleetEndpoint

TOKEN, FLEET = "api-token-value", "fleet-token-value"
D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64


class SlowRegistry:
    """Digests by reference text; `delays` seconds per reference; counts lookups. With
    `hold`, a lookup reads the registry's answer, says so (`read`), then waits for `hold`
    before returning it (a slow response already on its way)."""

    def __init__(self, digests: dict[str, str], delays: dict[str, float] | None = None) -> None:
        self.digests = dict(digests)
        self.delays = delays or {}
        self.asked: Counter[str] = Counter()
        self.read = threading.Event()
        self.hold = threading.Event()
        self.hold.set()
        self._lock = threading.Lock()

    def digest(self, reference: Reference) -> str:
        key = str(reference)
        with self._lock:
            self.asked[key] += 1
            answer = self.digests[key]
        self.read.set()
        time.sleep(self.delays.get(key, 0.0))
        self.hold.wait(10)
        return answer

    def tags(self, reference: Reference) -> list[str]:
        return []

    def platform_digest(self, reference: Reference, digest: str, platform: str) -> str | None:
        return None


def counting_client(port: int, own: Any) -> tuple[FleetClient, Counter[str]]:
    counted: Counter[str] = Counter()
    return FleetClient(own, FLEET, port, read_seconds=20,
                       count=lambda source, n: counted.update({source: n})), counted


@pytest.fixture
def closing() -> Iterator[list[Any]]:
    things: list[Any] = []
    yield things
    for thing in reversed(things):
        thing.stop() if hasattr(thing, "stop") else thing.close()


# --- 1: a fresh pass (max_age=0: a push, POST /v1/update) rejects the leader's fresh answers --


def test_a_fresh_pass_takes_the_leaders_fresh_answers_for_all_its_refs(
        closing: list[Any]) -> None:
    """A pass someone asked for asks with max_age=0: the leader looks every reference up
    anew, and each answer is as old as its lookup's start (0), whichever ends last; none is
    refused and asked of the registry again."""
    slow, fast = "registry.test/slow:latest", "registry.test/fast:latest"
    leader_registry = SlowRegistry({slow: D1, fast: D1}, delays={slow: 0.3})
    cache = DigestCache(leader_registry)
    closing.append(cache)
    endpoint = FleetEndpoint(FLEET, cache, lambda: True, 3600.0)
    server = ApiServer("127.0.0.1:0", TOKEN, Control(), fleet=endpoint).start()
    closing.append(server)
    own = SlowRegistry({slow: D2, fast: D2})
    node, counted = counting_client(server.port, own)
    closing.append(node)
    answers = node.digests(["127.0.0.1"], [parse(slow), parse(fast)], 0.0)
    assert answers == {slow: D1, fast: D1}, "the leader's fresh lookups were refused"
    assert sum(own.asked.values()) == 0 and counted["registry"] == 0


# --- 2: a push while a lookup is in flight is lost --------------------------------------------


def test_a_push_during_an_in_flight_lookup_is_not_lost() -> None:
    """A push makes lookups in flight unwanted too: one that read the digest before the push
    does not store it after, and askers after the push get a lookup of their own."""
    ref = "registry.test/app:latest"
    registry = SlowRegistry({ref: D1})
    registry.hold.clear()
    cache = DigestCache(registry)
    try:
        scheduled: dict[str, Any] = {}
        first = threading.Thread(target=lambda: scheduled.update(
            cache.digests([parse(ref)], 3600.0)))
        first.start()
        assert registry.read.wait(5)  # the registry answered D1; the response is on its way
        registry.digests[ref] = D2  # the push
        cache.forget([Push("app", "latest")])  # the leader hears of it
        pushed: dict[str, Any] = {}
        second = threading.Thread(target=lambda: pushed.update(
            cache.digests([parse(ref)], 0.0)))  # a node's pass for the push, fresh
        second.start()
        time.sleep(0.2)
        registry.hold.set()
        first.join(5)
        second.join(5)
        assert pushed == {ref: D2}, "a pass for the push got the digest from before it"
        assert cache.digests([parse(ref)], 3600.0) == {ref: D2}, \
            "the pre-push digest is served for the next interval"
    finally:
        registry.hold.set()
        cache.close()


# --- 3: the API's connection cap turns a burst of nodes into registry requests ----------------


def test_many_nodes_at_once_are_answered_not_sent_to_the_registries(
        closing: list[Any]) -> None:
    """150 nodes at once (a deploy, a cron `schedule`) with a registry taking 1 s: the API's
    connection cap closes some connections unanswered, and those nodes try again (with jitter)
    rather than asking the registries themselves."""
    refs = [f"registry.test/app{i}:latest" for i in range(3)]
    registry = SlowRegistry(dict.fromkeys(refs, D1), delays=dict.fromkeys(refs, 1.0))
    cache = DigestCache(registry)
    closing.append(cache)
    endpoint = FleetEndpoint(FLEET, cache, lambda: True, 3600.0)
    server = ApiServer("127.0.0.1:0", TOKEN, Control(), fleet=endpoint).start()
    closing.append(server)
    own = SlowRegistry(dict.fromkeys(refs, D2))
    total: Counter[str] = Counter()
    lock = threading.Lock()
    start = threading.Barrier(150)

    def node() -> None:
        client, counted = counting_client(server.port, own)
        try:
            start.wait(10)
            client.digests(["127.0.0.1"], [parse(r) for r in refs], 3600.0)
        finally:
            client.close()
        with lock:
            total.update(counted)

    threads = [threading.Thread(target=node) for _ in range(150)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert total["fallback"] == 0, f"{total['fallback']} of 150 nodes fell back: {total}"


# --- 4: an engine failure while taking a passed-on push is a 500 and a traceback -------------


def test_a_passed_on_push_the_engine_cannot_place_is_a_503_without_traceback(
        caplog: pytest.LogCaptureFixture, closing: list[Any]) -> None:
    """A push passed on while the engine cannot be asked is a 503, as the webhook's, without
    a traceback."""
    def on_pushed(found: list[Push]) -> list[str]:
        raise EngineError("cannot reach the Docker engine at unix:///var/run/docker.sock")

    cache = DigestCache(SlowRegistry({}))
    closing.append(cache)
    endpoint = FleetEndpoint(FLEET, cache, lambda: False, 3600.0, on_pushed=on_pushed)
    server = ApiServer("127.0.0.1:0", TOKEN, Control(), fleet=endpoint).start()
    closing.append(server)
    with caplog.at_level(logging.DEBUG):
        answer = httpx.post(f"http://127.0.0.1:{server.port}{fleet.PUSHED_PATH}",
                            json=fleet.pushes_body([Push("app", "latest")]), timeout=5,
                            headers={"Authorization": f"Bearer {FLEET}"})
    assert answer.status_code == 503, answer.text
    assert "Traceback" not in caplog.text and not any(r.exc_info for r in caplog.records)


# --- 5: the leader's view: bounded, and nothing lost ------------------------------------------


def test_partial_reports_cannot_grow_a_nodes_items_past_the_limit() -> None:
    """Reports for some names are merged into what the node had, within MAX_ITEMS; past it
    they are refused."""
    reports = fleet.NodeReports()
    for batch in range(3):
        body = {"node": "n1", "hostname": "h1", "interval": 3600, "full": False,
                "items": [{"name": f"c{batch}-{i}"} for i in range(fleet.MAX_ITEMS)]}
        with contextlib.suppress(ValueError):  # refused: fine
            reports.receive(body, 0.0)
    kept = reports.view(0.0)["nodes"][0]["items"]
    assert kept <= fleet.MAX_ITEMS, f"{kept} items kept for one node"


def test_a_container_and_a_service_of_one_name_both_show_in_the_view() -> None:
    """A container and a service named alike on one node are two items in the view."""
    reports = fleet.NodeReports()
    items = [{"name": "web", "kind": "container", "image": "web:1", "outcome": "updated",
              "target": None},
             {"name": "web", "kind": "service", "image": "web:1", "outcome": "up-to-date",
              "target": None}]
    reports.receive({"node": "n1", "hostname": "h1", "interval": 3600, "full": True,
                     "items": items}, 0.0)
    kinds = sorted(item["kind"] for item in reports.view(0.0)["items"])
    assert kinds == ["container", "service"]


# --- 6: every push notification on the leader is a thread and a pool of 16 more ---------------


def test_a_burst_of_pushes_does_not_start_a_wave_of_threads_each(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A burst of pushes on the leader (some nodes hung) is gathered and passed on once, by
    a bounded number of threads."""
    import socket

    from updater.core.settings import Settings
    from updater.engine import adapter as engine_adapter
    from updater.serve import fleet as serve_fleet

    port = 0
    hung = []
    for last in range(2, 18):  # 16 nodes whose updater accepts and never answers
        sock = socket.socket()
        sock.bind((f"127.0.0.{last}", port))
        port = sock.getsockname()[1]
        sock.listen(64)
        hung.append(sock)

    class Engine:
        def info(self) -> dict[str, Any]:
            return {"Swarm": {"NodeID": "leader"}}

        def nodes(self) -> list[dict[str, Any]]:
            return [{"ID": f"n{i}", "Status": {"State": "ready", "Addr": f"127.0.0.{i}"}}
                    for i in range(2, 18)]

        def close(self) -> None:
            pass

    monkeypatch.setattr(engine_adapter.Engine, "connect", staticmethod(lambda host: Engine()))
    leader = serve_fleet.Fleet(Settings(fleet_token=FLEET), SlowRegistry({}), port)
    leader._leading = (time.monotonic() + 3600, True)
    before = threading.active_count()
    try:
        for i in range(10):
            leader.pushed([Push(f"app{i}", "latest")])
        time.sleep(1.0)
        grown = threading.active_count() - before
        assert grown <= 17 + 1, f"{grown} threads for 10 push notifications"
    finally:
        for sock in hung:
            sock.close()


def test_a_burst_of_pushes_reaches_the_healthy_nodes_despite_hung_ones(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A burst of pushes reaches a healthy node as one, although 16 hung nodes hold the
    senders for their 10 s each."""
    import socket

    from updater.core.settings import Settings
    from updater.engine import adapter as engine_adapter
    from updater.serve import fleet as serve_fleet

    port = 0
    hung = []
    for last in range(2, 18):
        sock = socket.socket()
        sock.bind((f"127.0.0.{last}", port))
        port = sock.getsockname()[1]
        sock.listen(64)
        hung.append(sock)
    taken: list[list[Push]] = []
    healthy = ApiServer(f"127.0.0.18:{port}", TOKEN, Control(), fleet=FleetEndpoint(
        FLEET, DigestCache(SlowRegistry({})), lambda: False, 3600.0,
        on_pushed=lambda found: taken.append(found) or [])).start()  # type: ignore[func-returns-value]

    class Engine:
        def info(self) -> dict[str, Any]:
            return {"Swarm": {"NodeID": "leader"}}

        def nodes(self) -> list[dict[str, Any]]:
            return [{"ID": f"n{i:02d}", "Status": {"State": "ready", "Addr": f"127.0.0.{i}"}}
                    for i in range(2, 19)]

        def close(self) -> None:
            pass

    monkeypatch.setattr(engine_adapter.Engine, "connect", staticmethod(lambda host: Engine()))
    leader = serve_fleet.Fleet(Settings(fleet_token=FLEET), SlowRegistry({}), port)
    leader._leading = (time.monotonic() + 3600, True)
    try:
        for i in range(10):
            leader.pushed([Push(f"app{i}", "latest")])
        deadline = time.monotonic() + 40
        while sum(map(len, taken)) < 10 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert sorted(p.path for found in taken for p in found) == [
            f"app{i}" for i in range(10)], taken
        assert len(taken) == 1  # the burst went on as one
    finally:
        for sock in hung:
            sock.close()
        healthy.stop()


# --- 7: with a cron `schedule`, the view calls every node stale most of the day ---------------


def test_a_node_on_a_daily_schedule_is_not_stale_between_its_passes() -> None:
    """A node on a daily `schedule` reports its schedule's period: it is not shown stale
    hours after its pass."""
    from updater.core.report import PassReport
    from updater.core.settings import Settings
    from updater.serve import fleet as serve_fleet

    node = serve_fleet.Fleet(Settings(fleet_token=FLEET, schedule="0 3 * * *"),
                             SlowRegistry({}), 8080)
    try:
        node._node = ("n1", "host-1")
        node._leading = (time.monotonic(), True)  # the leader's own report, kept in place
        now = time.time()
        node.after_pass(PassReport(started=now, finished=now), full=True)
        view = node.reports.view(now + 3 * 3600)  # 3 h later; the next pass is tomorrow
        assert view["nodes"][0]["stale"] is False
    finally:
        node.close()
