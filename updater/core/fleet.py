"""Digest sharing on a swarm, the pure part: where the leader's updater is (its node's manager
addresses), how many references one request carries, and which of the leader's answers a node
may act on (a digest, no older than the node's own interval)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from updater.core.policy import checked_digest
from updater.errors import UpdaterError

DIGESTS_PATH = "/v1/digests"
# A request's query stays well under the API's 16 KiB for its request line and headers.
QUERY_BUDGET = 8 * 1024
MAX_REFS = 200  # references in one request


def manager_hosts(info: Mapping[str, Any]) -> list[str]:
    """The hosts of the swarm's managers as this node knows them (`docker info`'s
    Swarm.RemoteManagers, `ip:2377`), in a stable order; IPv6 hosts bracketed for a URL."""
    swarm = info.get("Swarm") or {}
    hosts = []
    for manager in swarm.get("RemoteManagers") or ():
        host, separator, _ = str((manager or {}).get("Addr") or "").rpartition(":")
        if separator and host:
            hosts.append(host if host.startswith("[") or ":" not in host else f"[{host}]")
    return sorted(set(hosts))


def chunks(refs: Sequence[str]) -> list[list[str]]:
    """The references in groups that each fit one request."""
    found: list[list[str]] = []
    size = QUERY_BUDGET
    for ref in refs:
        cost = len(ref) + 8  # "&ref=" and some escaping
        if size + cost > QUERY_BUDGET or len(found[-1]) >= MAX_REFS:
            found.append([])
            size = 0
        found[-1].append(ref)
        size += cost
    return found


@dataclass(frozen=True, slots=True)
class Shared:
    """What a node takes from the leader's answer: the digests it may act on, and the
    references it asks the registries about itself (errors, missing or too old answers)."""

    digests: dict[str, str]
    own: list[str]
    oldest: float  # seconds, of the digests taken (0 when none)


def take(body: Any, asked: Iterable[str], max_age: float) -> Shared:
    """The usable part of the leader's answer `body` ({"digests": {ref: {"digest", "age"} or
    {"error"}}}) to the references `asked`, for a node whose interval is `max_age` seconds."""
    answers = body.get("digests") if isinstance(body, dict) else None
    answers = answers if isinstance(answers, dict) else {}
    digests, own, oldest = {}, [], 0.0
    for ref in asked:
        answer = answers.get(ref)
        usable = _usable(answer, max_age)
        if usable is None:
            own.append(ref)
        else:
            digests[ref] = usable[0]
            oldest = max(oldest, usable[1])
    return Shared(digests, own, oldest)


def _usable(answer: Any, max_age: float) -> tuple[str, float] | None:
    """The digest and age of one answer, when it has both and is young enough."""
    if not isinstance(answer, dict) or not isinstance(answer.get("digest"), str):
        return None
    age = answer.get("age")
    if not isinstance(age, int | float) or isinstance(age, bool) or not math.isfinite(age) \
            or not 0 <= age <= max_age:
        return None
    try:
        return checked_digest(answer["digest"]), float(age)
    except UpdaterError:
        return None


def parse_max_age(values: Sequence[str], default: float) -> float:
    """`?max_age=SECONDS` of a digests request (the asking node's interval); ValueError when
    it is not one non-negative number."""
    if not values:
        return default
    try:
        value = float(values[0])
    except ValueError:
        value = math.nan
    if len(values) > 1 or not math.isfinite(value) or value < 0:
        raise ValueError(f"max_age {values[0]!r} is not one number of seconds (e.g. 3600)")
    return value
