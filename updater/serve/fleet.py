"""Digest sharing on a swarm (`fleet_token`): which registry a pass asks, and the leader's
`GET /v1/digests`.

On the swarm leader the pass asks the fleet's `DigestCache`, which also answers the other
nodes; elsewhere it asks the leader's updater, found through the node's manager addresses (the
API port is the same on every node, as stack.yml runs it), and falls back to the registries
when none answers. A scheduled pass takes digests up to its interval old; a pass someone asked
for takes none older than the request."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import itertools
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from updater.actions.locate import is_leader
from updater.core.fleet import (
    MAX_REFS,
    NodeReports,
    manager_hosts,
    node_hosts,
    parse_max_age,
    pushes_body,
    read_pushes,
    report_body,
)
from updater.core.lookups import DigestSource
from updater.core.pushes import Push
from updater.core.reference import Reference, parse
from updater.core.report import PassReport
from updater.core.settings import Settings
from updater.engine.adapter import Engine
from updater.errors import EngineError, RegistryError, UpdaterError
from updater.registry.fleet import DigestCache, FleetClient, Registry, Shared
from updater.serve.hooks import Debounce

log = logging.getLogger(__name__)
NOT_LEADER = "this updater's node is not the swarm leader; ask the leader's updater"
LEADERSHIP_SECONDS = 10.0  # how long the API trusts what it last learnt of the leadership


class Fleet:
    def __init__(self, settings: Settings, registry: Registry, port: int,
                 count: Callable[[str, int], None] = lambda source, n: None) -> None:
        assert settings.fleet_token, "digest sharing needs a fleet_token"
        self._settings = settings
        self._registry = registry
        self.cache = DigestCache(registry)
        self.client = FleetClient(registry, settings.fleet_token, port,
                                  read_seconds=3 * settings.registry_timeout + 5,
                                  count=count)
        self._lock = threading.Lock()
        self._leading: tuple[float, bool] | None = None  # when learnt, whether leading
        self._node = ("", "")  # this node's ID and hostname, from the last pass
        self.reports = NodeReports()  # on the leader: every node's last pass
        self._pushes = Debounce(self._pass_on)  # a burst of pushes is passed on once

    def close(self) -> None:
        self.cache.close()
        self.client.close()

    def source(self, engine: Engine, fresh: bool) -> DigestSource:
        """The registry of a pass on `engine`: the fleet's cache on the leader, the leader's
        updater elsewhere, the registries themselves outside a swarm."""
        max_age = 0.0 if fresh else min(self._settings.interval, period(self._settings))
        info = engine.info()
        swarm = info.get("Swarm") or {}
        if swarm.get("LocalNodeState") != "active":
            return self._registry
        self._node = (str(swarm.get("NodeID") or ""), str(info.get("Name") or ""))
        leading = is_leader(engine)
        with self._lock:
            self._leading = (time.monotonic(), leading)
        if leading:
            return Shared(self._registry, lambda refs: self.cache.digests(refs, max_age))
        hosts = manager_hosts(info)
        return Shared(self._registry,
                      lambda refs: self.client.digests(hosts, refs, max_age))

    @property
    def hostname(self) -> str:
        """This node's hostname as its reports name it ("" before the first pass)."""
        return self._node[1]

    def leading(self) -> bool:
        """Whether this updater's node leads the swarm (asked at most every few seconds)."""
        with self._lock:
            known = self._leading
        if known is not None and time.monotonic() - known[0] < LEADERSHIP_SECONDS:
            return known[1]
        try:
            engine = Engine.connect(self._settings.docker_host)
            try:
                leading = is_leader(engine)
            finally:
                engine.close()
        except (EngineError, UpdaterError) as exc:
            log.debug("digests: leadership unknown: %s", exc)
            leading = False
        with self._lock:
            self._leading = (time.monotonic(), leading)
        return leading

    def pushed(self, found: list[Push]) -> None:
        """A push notification reached this updater: on the leader, the fleet's answers for
        it are old now, and it goes on (in the background) to the nodes that may run it."""
        self.cache.forget(found)
        self._pushes.add(f"{push.path}:{push.tag}" for push in found)

    def _pass_on(self, pushed: tuple[str, ...]) -> None:
        """Pass a burst of pushes (`path:tag`) on to the nodes, once it is over; from a node
        that is not the leader, to the leader's updater, which passes it on."""
        found = [Push(*text.rsplit(":", 1)) for text in pushed]
        if not self.leading():
            self._forward(found)
            return
        try:
            engine = Engine.connect(self._settings.docker_host)
            try:
                own = str((engine.info().get("Swarm") or {}).get("NodeID") or "")
                hosts = node_hosts(engine.nodes(), own)
            finally:
                engine.close()
        except UpdaterError as exc:
            log.warning("push not passed on to the nodes: %s", exc)
            return
        paths, now = {push.path for push in found}, time.time()
        chosen = [host for node, host in sorted(hosts.items())
                  if self.reports.runs(node, paths, now)]
        if chosen:
            took = self.client.pass_on(chosen, pushes_body(found))
            log.info("push passed on to %d of %d nodes that may run it", took, len(chosen))

    def _forward(self, found: list[Push]) -> None:
        """A push this node was told of, to the leader's updater (the one that last answered
        first, then the managers') to pass on."""
        try:
            engine = Engine.connect(self._settings.docker_host)
            try:
                hosts = manager_hosts(engine.info())
            finally:
                engine.close()
        except UpdaterError as exc:
            hosts = []
            log.debug("push: the managers are unknown: %s", exc)
        last = self.client.last
        hosts = [last, *(h for h in hosts if h != last)] if last else hosts
        leader = self.client.forward(hosts, pushes_body(found, forward=True))
        if leader is None:
            log.warning("push not passed on to the leader's updater (tried %s); the other "
                        "nodes see it at their next pass", ", ".join(hosts) or "no manager")
        else:
            log.info("push passed on to the leader's updater at %s", leader)

    def after_pass(self, report: PassReport, full: bool) -> None:
        """The pass's items for the fleet's view: kept here on the leader, sent to it (in the
        background, bounded) from the other nodes."""
        node, hostname = self._node
        with self._lock:
            leading = self._leading is not None and self._leading[1]
        if not node or report.error:
            return
        body = report_body(node, hostname, period(self._settings), full,
                           [item.as_dict() for item in report.items],
                           report.finished or report.started)
        if leading:
            self.reports.receive(body, time.time())
        else:
            threading.Thread(target=self.client.report, args=(body,), name="fleet-report",
                             daemon=True).start()


def period(settings: Settings) -> float:
    """The longest the node's passes may be apart: its interval and jitter, or the longest
    gap between its `schedule`'s next eight times (a weekday schedule's weekend)."""
    if not settings.schedule:
        return settings.interval + settings.jitter
    import cronsim

    times = cronsim.CronSim(settings.schedule, datetime.datetime.now().astimezone())
    upcoming = [next(times) for _ in range(8)]
    return max((b - a).total_seconds() for a, b in itertools.pairwise(upcoming))


class FleetEndpoint:
    """The leader's side of the fleet on the API: `GET /v1/digests?ref=...&max_age=SECONDS`
    (the leader's answers, each with its age) and `POST /v1/fleet/report` (a node's last
    pass) with the fleet_token, `GET /v1/fleet` (the view) with the API token; 409 from an
    updater not on the leader."""

    def __init__(self, token: str, cache: DigestCache, leading: Callable[[], bool],
                 default_age: float, reports: NodeReports | None = None,
                 on_pushed: Callable[[list[Push]], list[str]] = lambda found: [],
                 forwarded: Callable[[list[Push]], None] = lambda found: None) -> None:
        self._token = hashlib.sha256(token.encode()).digest()
        self._cache = cache
        self._leading = leading
        self._default_age = default_age
        self._reports = reports or NodeReports()
        self._on_pushed = on_pushed  # the names of this node's items the pushes concern
        self._forwarded = forwarded  # on the leader: a node's push, for the whole fleet

    def pushed(self, header: str | None, body: bytes) -> tuple[int, Any]:
        """`POST /v1/fleet/pushed`: a push the leader passed on, or on the leader one a node
        was notified of; a pass for this node's items it concerns, as a push notification
        would start (and on the leader, for the fleet's)."""
        if not self.authorized(header):
            return 401, {"error": "missing or wrong fleet token"}
        try:
            loaded = json.loads(body)
            found = read_pushes(loaded)
        except (ValueError, RecursionError) as exc:
            return 400, {"error": f"not pushes passed on: {exc}"[:300]}
        if loaded.get("forward") is True:  # a node's, to the leader
            if not self._leading():
                return 409, {"error": NOT_LEADER}
            self._forwarded(found)  # for the whole fleet
        return 202, {"names": self._on_pushed(found)}

    def report(self, header: str | None, body: bytes) -> tuple[int, Any]:
        """`POST /v1/fleet/report`: a node's last pass, on the leader."""
        if not self.authorized(header):
            return 401, {"error": "missing or wrong fleet token"}
        if not self._leading():
            return 409, {"error": NOT_LEADER}
        try:
            self._reports.receive(json.loads(body), time.time())
        except (ValueError, RecursionError) as exc:
            return 400, {"error": f"not a fleet report: {exc}"[:300]}
        return 202, {"received": True}

    def view(self) -> tuple[int, Any]:
        if not self._leading():
            return 409, {"error": NOT_LEADER}
        return 200, self._reports.view(time.time())

    def authorized(self, header: str | None) -> bool:
        scheme, _, given = (header or "").partition(" ")
        given_hash = hashlib.sha256(given.strip().encode("utf-8", "replace")).digest()
        return hmac.compare_digest(given_hash, self._token) and scheme.lower() == "bearer"

    def digests(self, header: str | None, query: dict[str, list[str]]) -> tuple[int, Any]:
        if not self.authorized(header):
            return 401, {"error": "missing or wrong fleet token"}
        texts = query.get("ref") or []
        if not 0 < len(texts) <= MAX_REFS:
            return 400, {"error": f"give 1 to {MAX_REFS} ?ref= image references"}
        try:
            max_age = parse_max_age(query.get("max_age") or [], self._default_age)
            refs = [_tagged(text) for text in texts]
        except ValueError as exc:
            return 400, {"error": str(exc)[:300]}
        if not self._leading():
            return 409, {"error": NOT_LEADER}
        answers = self._cache.answers(refs, max_age)
        return 200, {"digests": {
            key: {"error": str(answer)} if isinstance(answer, RegistryError)
            else {"digest": answer, "age": round(age, 3)}
            for key, (answer, age) in answers.items()}}


def _tagged(text: str) -> Reference:
    try:
        ref = parse(text)
    except UpdaterError as exc:
        raise ValueError(str(exc)) from None
    if ref.tag is None or ref.digest is not None or str(ref) != text:
        raise ValueError(f"ref {text[:200]!r} is not a normalised repository:tag (e.g. "
                         "registry.example.com/app:1.4)")
    return ref
