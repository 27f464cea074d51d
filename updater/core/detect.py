"""One detection pass: for every watched container, is there a newer image under its tag?

Each distinct reference is asked of its registry once per pass, concurrently, whether
containers, services or both use it (`PassLookups`); a failed lookup is reported for the items
that use it and the others go on.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from updater.core import policy, reference
from updater.core.policy import State
from updater.core.report import ItemReport, Outcome
from updater.core.settings import Settings
from updater.core.snapshots import ContainerSnapshot
from updater.errors import RegistryError, UpdaterError

log = logging.getLogger(__name__)
MAX_WORKERS = 32
SWARM_TASK = "com.docker.swarm.task.id"


class DigestSource(Protocol):
    def digest(self, reference: reference.Reference) -> str:
        """The registry's current digest for the reference's tag."""


@runtime_checkable
class PlatformSource(Protocol):
    def platform_digest(self, reference: reference.Reference, digest: str,
                        platform: str) -> str | None:
        """The manifest for `platform` that the index `digest` names (RegistryClient's)."""


# The platform ("os/arch[/variant]") a container's image is for; None when unknown.
PlatformOf = Callable[[ContainerSnapshot], "str | None"]


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The outcome of checking one container or service."""

    name: str
    kind: str
    image: str
    local_digest: str | None
    remote_digest: str | None
    state: State
    error: str | None = None
    note: str | None = None  # why the state is what it is, when that is not plain

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "image": self.image,
                "local_digest": self.local_digest, "remote_digest": self.remote_digest,
                "state": self.state.value, "error": self.error, "note": self.note}


class PassLookups:
    """The registry's answers for one pass: each distinct reference asked once, concurrently
    where many are known at once, whichever items (containers, services) use it. A failed
    lookup fails every item that uses it; the next pass (a new PassLookups) asks again."""

    def __init__(self, registry: DigestSource, workers: int = MAX_WORKERS) -> None:
        self._registry = registry
        self._workers = workers
        self._answers: dict[str, str | RegistryError] = {}
        self._lock = threading.Lock()

    def prefetch(self, refs: Iterable[reference.Reference]) -> None:
        """Ask for every reference not asked yet, concurrently."""
        with self._lock:
            wanted = {str(ref): ref for ref in refs if str(ref) not in self._answers}
            self._answers.update(_lookup_all(wanted, self._registry, self._workers))

    def forget_failures(self) -> None:
        """The next phase of the pass (the services, after the containers' updates) asks
        again for what failed: a timeout minutes ago says little about the registry now."""
        with self._lock:
            self._answers = {key: answer for key, answer in self._answers.items()
                             if not isinstance(answer, RegistryError)}

    def digest(self, reference: reference.Reference) -> str:
        self.prefetch([reference])
        answer = self._answers[str(reference)]
        if isinstance(answer, RegistryError):
            raise answer
        return answer

    @property
    def compares_platforms(self) -> bool:
        """Whether the registry can say which image an index names for a platform."""
        return isinstance(self._registry, PlatformSource)

    def platform_digest(self, reference: reference.Reference, digest: str,
                        platform: str) -> str | None:
        if not isinstance(self._registry, PlatformSource):
            return None  # then the digests decide
        return self._registry.platform_digest(reference, digest, platform)


@dataclass(frozen=True, slots=True)
class _Planned:
    container: ContainerSnapshot
    reference: reference.Reference | None
    local: tuple[str, ...]
    result: CheckResult | None


_STATES = {Outcome.UP_TO_DATE: State.UP_TO_DATE, Outcome.AVAILABLE: State.UPDATE_AVAILABLE,
           Outcome.PINNED: State.PINNED}


def from_item(item: ItemReport) -> CheckResult:
    """A check of a service (reported as an item, as `update` reports it) as a `check` row:
    a reason is an error only when the check failed."""
    state = _STATES.get(item.outcome, State.ERROR)
    error, note = (item.reason, None) if state is State.ERROR else (None, item.reason)
    return CheckResult(item.name, item.kind, item.image, item.old_digest, item.new_digest,
                       state, error, note)


def watched(containers: Iterable[ContainerSnapshot], settings: Settings,
            names: Iterable[str] = ()) -> tuple[list[ContainerSnapshot], list[CheckResult]]:
    """The containers to check, and error results for those whose labels are unreadable."""
    chosen, errors = [], []
    for container in containers:
        if not policy.selected(container.name, names) or SWARM_TASK in container.labels:
            continue  # a swarm task's container is the swarm's: its service is updated
        try:
            if policy.is_watched(container.labels, settings):
                chosen.append(container)
        except UpdaterError as exc:
            errors.append(_error(container, None, str(exc)))
    return chosen, errors


def require_names(names: Iterable[str], found: Iterable[str]) -> None:
    """UpdaterError naming every asked-for name that matched no watched container."""
    missing = set(names) - set(found)
    if missing:
        raise UpdaterError(f"no watched container named {', '.join(sorted(missing))}; "
                           "check the name and its updater.enable label")


def check(containers: Iterable[ContainerSnapshot], registry: DigestSource,
          workers: int = MAX_WORKERS, platform_of: PlatformOf | None = None) -> list[CheckResult]:
    """Check `containers` (already filtered to the watched ones) against their registries.
    With `platform_of`, a tag whose index changed is compared for the container's platform."""
    planned = [_plan(container) for container in containers]
    lookups = registry if isinstance(registry, PassLookups) else PassLookups(registry, workers)
    lookups.prefetch(p.reference for p in planned if p.result is None and p.reference)
    results = [p.result or _compare(p, _answer(lookups, p.reference)) for p in planned]
    if platform_of is None or not isinstance(registry, PlatformSource):
        return results
    return [_for_platform(p, r, registry, platform_of)
            if r.state is State.UPDATE_AVAILABLE and p.reference is not None else r
            for p, r in zip(planned, results, strict=True)]


def _for_platform(planned: _Planned, result: CheckResult, registry: PlatformSource,
                  platform_of: PlatformOf) -> CheckResult:
    """Up-to-date when the index under the tag changed only for other platforms (or its
    attestations): the manifest for the container's own platform is the one it runs. At most
    two manifest GETs, once per new index digest (the registry client keeps the answers)."""
    assert planned.reference is not None
    platform = platform_of(planned.container)
    if platform is None or result.remote_digest is None:
        return result
    # What the local image was pulled as: an index, or its platform's manifest itself.
    note = unchanged_for(registry, planned.reference, planned.local[:2], result.remote_digest,
                         [platform], planned.container.name)
    if note is None:
        return result
    log.debug("%s: up-to-date: %s", planned.container.name, note)
    return dataclasses.replace(result, state=State.UP_TO_DATE, note=note)


def unchanged_for(registry: PlatformSource, ref: reference.Reference, old: Sequence[str],
                  new: str, platforms: Sequence[str], name: str) -> str | None:
    """Why the index `new` changes nothing for `platforms` (each names the image one of `old`
    names for it), or None when it does, or the registry cannot say (then the digests decide,
    as without platforms)."""
    if not platforms:
        return None
    try:
        for platform in platforms:
            found = registry.platform_digest(ref, new, platform)
            if found is None or all(registry.platform_digest(ref, digest, platform) != found
                                    for digest in old):
                return None
    except RegistryError as exc:
        log.debug("%s: could not compare for %s: %s", name, ", ".join(platforms), exc)
        return None
    shown = ", ".join(sorted(platforms))
    return (f"the tag's index changed, its {shown} image did not" if len(platforms) == 1
            else f"the tag's index changed, its images for {shown} did not")


def _plan(container: ContainerSnapshot) -> _Planned:
    if container.image.startswith("sha256:"):
        message = "created from an image ID, so there is no tag to follow"
        return _Planned(container, None, (), _error(container, None, message))
    try:
        ref = reference.parse(container.image)
    except UpdaterError as exc:
        return _Planned(container, None, (), _error(container, None, str(exc)))
    local = policy.local_digests(ref, container.repo_digests) or (
        (container.content_digest,) if container.content_digest else ())
    if ref.pinned:
        result = CheckResult(container.name, "container", container.image, ref.digest, None,
                             State.PINNED)
        return _Planned(container, ref, local, result)
    if not local:
        message = (f"the local image was never pulled from {ref.repository}, so its registry "
                   "digest is unknown; pull it once to track it")
        return _Planned(container, ref, local, _error(container, None, message))
    return _Planned(container, ref, local, None)


def _lookup_all(wanted: Mapping[str, reference.Reference], registry: DigestSource,
                workers: int) -> dict[str, str | RegistryError]:
    if not wanted:
        return {}

    def lookup(ref: reference.Reference) -> str | RegistryError:
        try:
            return registry.digest(ref)
        except RegistryError as exc:
            log.warning("check of %s failed: %s", ref, exc)
            return exc

    with ThreadPoolExecutor(max_workers=min(workers, len(wanted))) as pool:
        return dict(zip(wanted, pool.map(lookup, wanted.values()), strict=True))


def _answer(lookups: PassLookups, ref: reference.Reference | None) -> str | RegistryError:
    assert ref is not None
    try:
        return lookups.digest(ref)
    except RegistryError as exc:
        return exc


def _compare(planned: _Planned, remote: str | RegistryError) -> CheckResult:
    container, local = planned.container, planned.local
    if isinstance(remote, RegistryError):
        return _error(container, local[0], str(remote))
    state = policy.compare(local, remote)
    log.debug("%s: %s local %s registry %s", container.name, state.value, local[0][:19],
              remote[:19])
    shown = remote if remote in local else local[0]
    return CheckResult(container.name, "container", container.image, shown, remote, state)


def _error(container: ContainerSnapshot, local: str | None, message: str) -> CheckResult:
    return CheckResult(container.name, "container", container.image, local, None, State.ERROR,
                       message)
