"""Digest sharing on a swarm, the pure part: where the leader's updater is (its node's manager
addresses), how many references one request carries, and which of the leader's answers a node
may act on (a digest, no older than the node's own interval)."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from updater.core.policy import checked_digest
from updater.core.pushes import MAX_EVENTS, Push
from updater.core.reference import parse
from updater.errors import UpdaterError

DIGESTS_PATH = "/v1/digests"
# A request's query stays well under the API's 16 KiB for its request line and headers.
QUERY_BUDGET = 8 * 1024
MAX_REFS = 50  # references in one request (looked up at once, 32 at a time, on the leader)


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


# --- one view of the fleet: each node's last pass, on the leader ------------------------------

REPORT_PATH = "/v1/fleet/report"
PUSHED_PATH = "/v1/fleet/pushed"
MAX_ITEMS = 10_000
MAX_NODES = 20_000
_TEXT_FIELDS = ("name", "kind", "image", "outcome", "target")


def report_body(node: str, hostname: str, interval: float, full: bool,
                items: Sequence[Mapping[str, Any]], finished: float) -> dict[str, Any]:
    """What a node sends the leader after a pass (`full`: it looked at every item)."""
    return {"node": node, "hostname": hostname, "interval": interval, "full": full,
            "finished": finished,
            "items": [{key: item.get(key) for key in _TEXT_FIELDS} for item in items]}


class NodeReports:
    """The nodes' last reports as the leader keeps them (one entry per node, its items by
    name); a node silent for two of its intervals shows as stale, not gone."""

    def __init__(self) -> None:
        self._nodes: dict[str, tuple[float, dict[str, Any], dict[str, dict[str, Any]]]] = {}
        self._lock = threading.Lock()  # the API's threads and the daemon's loop
        self.received = 0  # reports taken so far (the dashboard's sign of a change)

    def receive(self, body: Any, now: float) -> None:
        """Take a report; ValueError naming what is wrong with a malformed one."""
        with self._lock:
            self._receive(body, now)
            self.received += 1

    def _receive(self, body: Any, now: float) -> None:
        if not isinstance(body, dict):
            raise ValueError("a report is a JSON object")
        node, hostname, interval = body.get("node"), body.get("hostname"), body.get("interval")
        if not isinstance(node, str) or not 0 < len(node) <= 128 \
                or not isinstance(hostname, str) or len(hostname) > 255:
            raise ValueError("a report names its `node` (an ID) and `hostname`")
        if not isinstance(interval, int | float) or isinstance(interval, bool) \
                or not math.isfinite(interval) or interval <= 0:
            raise ValueError("a report gives its node's `interval` in seconds")
        items = body.get("items")
        if not isinstance(items, list) or len(items) > MAX_ITEMS:
            raise ValueError(f"a report's `items` is a list of at most {MAX_ITEMS}")
        found = {}
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str) or any(
                    not isinstance(item.get(key), str | None) or len(item.get(key) or "") > 512
                    for key in _TEXT_FIELDS):
                raise ValueError("each item has a `name` and text `kind`, `image`, `outcome`, "
                                 "`target`")
            found[f"{item.get('kind')}/{item['name']}"] = {
                key: item.get(key) for key in _TEXT_FIELDS}
        known = self._nodes.get(node)
        if known is None and len(self._nodes) >= MAX_NODES:
            raise ValueError(f"more than {MAX_NODES} nodes report; this is not one swarm")
        if body.get("full") is not True and known is not None:
            found = {**known[2], **found}  # a pass for some names: the others as they were
            if len(found) > MAX_ITEMS:
                raise ValueError(f"a node's items would be over {MAX_ITEMS}; send a full "
                                 "report")
        self._nodes[node] = (now, {"node": node, "hostname": hostname,
                                   "interval": float(interval)}, found)

    def runs(self, node: str, paths: set[str], now: float) -> bool:
        """Whether `node` may run one of the repositories `paths`: True unless its fresh
        report says it runs none of them (an unknown or stale node may)."""
        with self._lock:
            known = self._nodes.get(node)
        if known is None or now - known[0] > 2 * known[1]["interval"]:
            return True
        return any(_path(item.get("image")) in paths for item in known[2].values())

    def view(self, now: float) -> dict[str, Any]:
        """Every node's items with how old its report is; `stale` past two intervals."""
        nodes, items = [], []
        with self._lock:
            known = sorted(self._nodes.values(), key=lambda entry: entry[1]["hostname"])
        for at, node, found in known:
            age = round(max(0.0, now - at), 1)
            stale = age > 2 * node["interval"]
            nodes.append({**node, "age": age, "stale": stale, "items": len(found)})
            items += [{"node": node["hostname"], **item, "age": age, "stale": stale}
                      for _, item in sorted(found.items())]
        return {"nodes": nodes, "items": items}


def _path(image: Any) -> str | None:
    try:
        return parse(str(image)).path
    except UpdaterError:
        return None


# --- pushes the leader passes on to the nodes -------------------------------------------------


def pushes_body(found: Sequence[Push], forward: bool = False) -> dict[str, Any]:
    """Pushes the leader passes on, or (`forward`) a node sends the leader to pass on."""
    return {"pushes": [{"path": push.path, "tag": push.tag} for push in found],
            "forward": forward}


def read_pushes(body: Any) -> list[Push]:
    """The pushes a leader passed on; ValueError when `body` is not such a list."""
    found = body.get("pushes") if isinstance(body, dict) else None
    if not isinstance(found, list) or len(found) > MAX_EVENTS or not all(
            isinstance(push, dict) and isinstance(push.get("path"), str)
            and isinstance(push.get("tag"), str) and 0 < len(push["path"]) <= 255
            and 0 < len(push["tag"]) <= 128 for push in found):
        raise ValueError(f"`pushes` is a list of at most {MAX_EVENTS} {{path, tag}}")
    return [Push(push["path"], push["tag"]) for push in found]


def node_hosts(nodes: Iterable[Mapping[str, Any]], own: str) -> dict[str, str]:
    """The ready swarm nodes other than `own` (by ID) and their addresses, bracketed for a URL
    where IPv6."""
    found = {}
    for node in nodes:
        status = node.get("Status") or {}
        address = str(status.get("Addr") or "")
        unknown = address in ("", "0.0.0.0")  # noqa: S104 - a node without an address yet
        if node.get("ID") == own or status.get("State") != "ready" or unknown:
            continue
        found[str(node.get("ID"))] = f"[{address}]" if ":" in address else address
    return found
