"""Digest sharing on a swarm: the leader's updater asks the registries for the whole fleet
(`DigestCache`: each distinct reference once within the asker's interval, concurrent askers of
one reference sharing one lookup); the other nodes' updaters ask it (`FleetClient`, over its
API) and the registries themselves only for what it could not answer, or when no manager's
updater answers at all. `Shared` puts either behind what a pass's lookups use."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from updater.core.fleet import DIGESTS_PATH, PUSHED_PATH, REPORT_PATH, chunks, take
from updater.core.lookups import MAX_WORKERS, lookup_all
from updater.core.pushes import Push
from updater.core.reference import Reference
from updater.errors import RegistryError

log = logging.getLogger(__name__)
Answer = str | RegistryError
ERROR_SECONDS = 30.0  # a failed lookup is answered again for this long (a registry down)
KEEP_SECONDS = 86400.0  # answers not asked for in a day are dropped
MAX_ENTRIES = 100_000  # distinct references kept at most
CONNECT_SECONDS = 3.0  # a manager whose updater does not answer in this is passed over
REPORT_SECONDS = 10.0
PASS_ON_WORKERS = 16
BUSY_ATTEMPTS = 6  # tries of a request the leader's API closed unanswered (at its cap)


class Registry(Protocol):
    def digest(self, reference: Reference) -> str: ...

    def tags(self, reference: Reference) -> list[str]: ...

    def platform_digest(self, reference: Reference, digest: str,
                        platform: str) -> str | None: ...


class Shared:
    """A pass's registry, whose digests come from `batch` (the fleet's shared answers) and
    whose tag lists and platform manifests come from the registry itself."""

    def __init__(self, registry: Registry,
                 batch: Callable[[list[Reference]], dict[str, Answer]]) -> None:
        self._registry = registry
        self._batch = batch

    def digests(self, refs: list[Reference]) -> dict[str, Answer]:
        return self._batch(refs)

    def digest(self, reference: Reference) -> str:
        answer = self._batch([reference])[str(reference)]
        if isinstance(answer, RegistryError):
            raise answer
        return answer

    def tags(self, reference: Reference) -> list[str]:
        return self._registry.tags(reference)

    def platform_digest(self, reference: Reference, digest: str, platform: str) -> str | None:
        return self._registry.platform_digest(reference, digest, platform)


@dataclass(frozen=True, slots=True)
class _Flight:
    future: Future[Answer]
    ref: Reference
    started: float  # when it was asked for: its answer is at most this old
    generation: int  # of its key; a push passed since makes its answer unwanted


class DigestCache:
    """The leader's answers: a reference's digest is looked up again only when the asker's
    `max_age` is past (a failure: after ERROR_SECONDS); askers of one reference at once share
    one lookup when it is young enough for them. An answer's age counts from when its lookup
    was asked for; a push (`forget`) makes the answers and lookups of its tag unwanted.
    Memory grows with distinct references (at most MAX_ENTRIES), not with askers."""

    def __init__(self, registry: Registry, workers: int = MAX_WORKERS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._registry = registry
        self._clock = clock
        self._lock = threading.Lock()
        self._answers: dict[str, tuple[float, Answer, Reference]] = {}  # at, answer, ref
        self._flights: dict[str, _Flight] = {}
        self._generations: dict[str, int] = {}
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="digests")
        self._prune_at = 1024
        self.lookups = 0  # registry lookups made

    def answers(self, refs: Iterable[Reference], max_age: float
                ) -> dict[str, tuple[Answer, float]]:
        """Each reference's answer and its age in seconds (at most `max_age`; 0 asks for a
        lookup that starts now)."""
        found: dict[str, tuple[Answer, float]] = {}
        waiting: dict[str, _Flight] = {}
        with self._lock:
            now = self._clock()
            for ref in refs:
                key = str(ref)
                cached = self._answers.get(key)
                if cached is not None:
                    at, answer, _ = cached
                    limit = min(max_age, ERROR_SECONDS) if isinstance(
                        answer, RegistryError) else max_age
                    if limit > 0 and now - at <= limit:
                        found[key] = (answer, now - at)
                        continue
                flight = self._flights.get(key)
                if flight is None or now - flight.started > max_age or (
                        max_age <= 0 and flight.started < now):
                    flight = self._start(key, ref, now)
                waiting[key] = flight
        for key, flight in waiting.items():
            found[key] = (flight.future.result(), max(0.0, now - flight.started))
        return found

    def digests(self, refs: list[Reference], max_age: float) -> dict[str, Answer]:
        return {key: answer for key, (answer, _) in self.answers(refs, max_age).items()}

    def forget(self, pushed: Iterable[Push]) -> None:
        """A push makes the answers and the lookups in flight for its repository and tag
        old: askers from now on get a lookup started after it."""
        gone = {(push.path, push.tag) for push in pushed}
        with self._lock:
            for key, ref in [*((k, v[2]) for k, v in self._answers.items()),
                             *((k, f.ref) for k, f in self._flights.items())]:
                if (ref.path, ref.tag) in gone:
                    self._answers.pop(key, None)
                    self._flights.pop(key, None)
                    self._generations[key] = self._generations.get(key, 0) + 1

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _start(self, key: str, ref: Reference, now: float) -> _Flight:
        generation = self._generations.get(key, 0)
        future = self._pool.submit(self._lookup, key, ref, now, generation)
        flight = self._flights[key] = _Flight(future, ref, now, generation)
        return flight

    def _lookup(self, key: str, ref: Reference, started: float, generation: int) -> Answer:
        answer: Answer
        try:
            answer = self._registry.digest(ref)
        except RegistryError as exc:
            log.warning("check of %s failed: %s", ref, exc)
            answer = exc
        except Exception as exc:  # an answer is owed to every asker waiting on it
            log.exception("check of %s failed unexpectedly", ref)
            answer = RegistryError(f"{ref}: unexpected {type(exc).__name__}")
        with self._lock:
            self.lookups += 1
            if self._generations.get(key, 0) != generation:
                return answer  # a push came meanwhile: its askers have their own lookup
            if (flight := self._flights.get(key)) is not None and flight.started == started:
                del self._flights[key]
            known = self._answers.get(key)
            if known is None or known[0] <= started:
                self._answers[key] = (started, answer, ref)
            self._prune(started)
        return answer

    def _prune(self, now: float) -> None:
        if len(self._answers) <= self._prune_at:
            return
        self._answers = {k: v for k, v in self._answers.items() if now - v[0] <= KEEP_SECONDS}
        if len(self._answers) > MAX_ENTRIES:  # the oldest go
            newest = sorted(self._answers.items(), key=lambda e: e[1][0])[-MAX_ENTRIES // 2:]
            self._answers = dict(newest)
        self._prune_at = max(1024, 2 * len(self._answers))


class NotAnswered(Exception):
    """This manager's updater gave no digests (not reachable, not the leader, refused)."""


class FleetClient:
    """A node's way to the leader's updater: its managers are tried (the last that answered
    first); what the leader could not answer, or answered too old, and everything when no
    manager's updater answers, is asked of the registries, which the log and the metrics say."""

    def __init__(self, registry: Registry, token: str, port: int, read_seconds: float = 60.0,
                 transport: httpx.BaseTransport | None = None,
                 count: Callable[[str, int], None] = lambda source, n: None) -> None:
        self._registry = registry
        self._token = token
        self._port = port
        self._count = count
        self._last: str | None = None
        self._read_seconds = read_seconds
        self._client = httpx.Client(
            timeout=httpx.Timeout(read_seconds, connect=CONNECT_SECONDS), trust_env=False,
            transport=transport, headers={"Authorization": f"Bearer {token}"},
            limits=httpx.Limits(max_connections=PASS_ON_WORKERS, max_keepalive_connections=2))

    def close(self) -> None:
        self._client.close()

    @property
    def last(self) -> str | None:
        """The manager whose updater last answered as the leader."""
        return self._last

    def digests(self, hosts: Sequence[str], refs: list[Reference],
                max_age: float) -> dict[str, Answer]:
        keys = {str(ref): ref for ref in refs}
        answers: dict[str, Answer] = {}
        # The leader answers tags only (a digest-pinned reference needs no lookup anyway).
        shareable = [key for key, ref in keys.items() if ref.tag and not ref.digest]
        unshared = [key for key in keys if key not in set(shareable)]
        own = shareable
        for host in sorted(hosts, key=lambda h: h != self._last):
            try:
                shared = self._ask(host, own, max_age)
            except NotAnswered as exc:
                log.debug("digests: the updater at %s gave none: %s", host, exc)
                continue
            self._last = host
            answers.update(shared.digests)
            own = shared.own
            log.info("digests of %d references from the leader's updater at %s (oldest %.0fs)"
                     "%s", len(shared.digests), host, shared.oldest,
                     f"; {len(own)} asked of the registries" if own else "")
            self._count("leader", len(shared.digests))
            break
        else:
            log.warning("no swarm manager's updater answered for digests (tried %s); asking "
                        "the registries myself", ", ".join(hosts) or "none: no manager known")
            self._count("fallback", 1)
        own += unshared
        self._count("registry", len(own))
        answers.update(lookup_all({key: keys[key] for key in own}, self._registry,
                                  MAX_WORKERS))
        return answers

    def report(self, body: dict[str, Any]) -> None:
        """Send the leader that last answered this node's last pass (for `GET /v1/fleet`);
        a failure is logged and forgotten: the next pass sends again."""
        host = self._last
        if host is None:
            return
        try:
            response = self._client.post(f"http://{host}:{self._port}{REPORT_PATH}",
                                         json=body, timeout=REPORT_SECONDS)
            if response.status_code != 202:
                log.info("the leader's updater at %s did not take this pass's report: HTTP %d",
                         host, response.status_code)
        except (httpx.HTTPError, RuntimeError) as exc:  # RuntimeError: closed while stopping
            log.info("the leader's updater at %s did not take this pass's report: %s", host,
                     type(exc).__name__)

    def pass_on(self, hosts: Sequence[str], body: dict[str, Any]) -> int:
        """Send a push to the updaters at `hosts` (at most PASS_ON_WORKERS at once, each
        bounded); how many took it."""
        def send(host: str) -> bool:
            try:
                return self._client.post(f"http://{host}:{self._port}{PUSHED_PATH}",
                                         json=body, timeout=REPORT_SECONDS).status_code == 202
            except (httpx.HTTPError, RuntimeError) as exc:  # RuntimeError: closed while stopping
                log.info("push not passed on to the updater at %s: %s", host,
                         type(exc).__name__)
                return False

        if not hosts:
            return 0
        with ThreadPoolExecutor(min(PASS_ON_WORKERS, len(hosts))) as pool:
            return sum(pool.map(send, hosts))

    def forward(self, hosts: Sequence[str], body: dict[str, Any]) -> str | None:
        """Send a push to the first of `hosts` whose updater takes it as the leader's; that
        host, or None."""
        for host in hosts:
            try:
                if self._client.post(f"http://{host}:{self._port}{PUSHED_PATH}", json=body,
                                     timeout=REPORT_SECONDS).status_code == 202:
                    return host
            except (httpx.HTTPError, RuntimeError) as exc:
                log.debug("push not forwarded to %s: %s", host, type(exc).__name__)
        return None

    def _ask(self, host: str, refs: list[str], max_age: float) -> _Taken:
        taken = _Taken()
        for part in chunks(refs):
            params: list[tuple[str, str | int | float | bool | None]] = [
                ("max_age", f"{max_age:g}"), *[("ref", ref) for ref in part]]
            response = self._get(f"http://{host}:{self._port}{DIGESTS_PATH}", params)
            try:
                body = response.json() if response.status_code == 200 else None
            except ValueError:
                raise NotAnswered("not JSON") from None
            if response.status_code == 401:
                log.error("the updater at %s refused this node's fleet_token; set the same "
                          "fleet_token on every node", host)
            if body is None:
                raise NotAnswered(f"HTTP {response.status_code}")
            shared = take(body, part, max_age)
            taken.digests.update(shared.digests)
            taken.own += shared.own
            taken.oldest = max(taken.oldest, shared.oldest)
        return taken


    def _get(self, url: str, params: list[tuple[str, str | int | float | bool | None]]
             ) -> httpx.Response:
        """GET, tried again (a few times, with jitter) when the leader's API closed the
        connection unanswered: it does so at its connection cap, as when every node asks at
        once. Refused or timed out: NotAnswered at once."""
        deadline = time.monotonic() + self._read_seconds
        for attempt in range(1, BUSY_ATTEMPTS + 1):
            try:
                return self._client.get(url, params=params)
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
                pause = random.uniform(0.2, 0.6) * attempt
                if attempt == BUSY_ATTEMPTS or time.monotonic() + pause > deadline:
                    raise NotAnswered(f"{type(exc).__name__}, {attempt} times") from None
                time.sleep(pause)
            except httpx.HTTPError as exc:
                raise NotAnswered(type(exc).__name__) from None
        raise NotAnswered("busy")  # not reached: the loop returns or raises


class _Taken:
    def __init__(self) -> None:
        self.digests: dict[str, str] = {}
        self.own: list[str] = []
        self.oldest = 0.0
