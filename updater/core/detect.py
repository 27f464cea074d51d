"""One detection pass: for every watched container, is there a newer image under its tag?

Each distinct reference is asked of its registry once per pass, concurrently, whether
containers, services or both use it (`PassLookups`); a failed lookup is reported for the items
that use it and the others go on.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from updater.core import policy, reference, tags
from updater.core.lookups import (
    MAX_WORKERS,
    DigestSource,
    PassLookups,
    PlatformSource,
)
from updater.core.policy import State
from updater.core.reference import Reference
from updater.core.report import ItemReport, Outcome
from updater.core.settings import Settings
from updater.core.snapshots import ContainerSnapshot
from updater.errors import NotWatched, RegistryError, UpdaterError

log = logging.getLogger(__name__)
SWARM_TASK = "com.docker.swarm.task.id"


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
    target: str | None = None  # the reference an update moves it to (its tag, or a newer one)
    waiting: str | None = None  # why an available update is not applied yet

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "image": self.image,
                "local_digest": self.local_digest, "remote_digest": self.remote_digest,
                "state": self.state.value, "error": self.error, "note": self.note,
                "target": self.target, "waiting": self.waiting}


@dataclass(frozen=True, slots=True)
class _Planned:
    container: ContainerSnapshot
    reference: reference.Reference | None
    local: tuple[str, ...]
    result: CheckResult | None
    rules: tags.TagPolicy | None = None  # version tags: the rules of its moves
    target: Reference | None = None  # a newer version tag it moves to

    @property
    def asked(self) -> Reference | None:
        """The reference whose digest decides: the newer tag's, else its own tag's."""
        return self.target or self.reference


_STATES = {Outcome.UP_TO_DATE: State.UP_TO_DATE, Outcome.AVAILABLE: State.UPDATE_AVAILABLE,
           Outcome.PINNED: State.PINNED}


def from_item(item: ItemReport) -> CheckResult:
    """A check of a service (reported as an item, as `update` reports it) as a `check` row:
    a reason is an error only when the check failed."""
    if item.outcome in (Outcome.WAITING, Outcome.HELD_BACK):
        return CheckResult(item.name, item.kind, item.image, item.old_digest, item.new_digest,
                           State.UPDATE_AVAILABLE, target=item.target, waiting=item.reason)
    state = _STATES.get(item.outcome, State.ERROR)
    error, note = (item.reason, None) if state is State.ERROR else (None, item.reason)
    return CheckResult(item.name, item.kind, item.image, item.old_digest, item.new_digest,
                       state, error, note, target=item.target)


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
    """NotWatched naming every asked-for name that matched no watched container or service."""
    missing = set(names) - set(found)
    if missing:
        raise NotWatched(f"no watched container or service named "
                         f"{', '.join(sorted(missing))}; check the name and its "
                         "updater.enable label")


def check(containers: Iterable[ContainerSnapshot], registry: DigestSource,
          workers: int = MAX_WORKERS, platform_of: PlatformOf | None = None,
          settings: Settings | None = None) -> list[CheckResult]:
    """Check `containers` (already filtered to the watched ones) against their registries.
    With `platform_of`, a tag whose index changed is compared for the container's platform.
    With `settings`, containers on version tags (`updater.tags=semver`) are compared with the
    newest tag their rules allow (each repository's tags listed once)."""
    planned = [_plan(container, settings) for container in containers]
    lookups = registry if isinstance(registry, PassLookups) else PassLookups(registry, workers)
    lookups.prefetch_tags(p.reference for p in planned if p.rules and p.reference)
    planned = [_choose(p, lookups) if p.rules and p.result is None else p for p in planned]
    lookups.prefetch(p.asked for p in planned if p.result is None and p.asked)
    results = [p.result or _compare(p, _answer(lookups, p.asked)) for p in planned]
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


def _plan(container: ContainerSnapshot, settings: Settings | None) -> _Planned:
    if container.image.startswith("sha256:"):
        message = "created from an image ID, so there is no tag to follow"
        return _Planned(container, None, (), _error(container, None, message))
    try:
        ref = reference.parse(container.image)
        rules = tags.tag_policy(container.labels, settings) if settings else None
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
    return _Planned(container, ref, local, None, rules)


def _choose(planned: _Planned, lookups: PassLookups) -> _Planned:
    """The newest version tag the container's rules allow, as its target (none when its own
    tag is the newest); an error result when the tags cannot be listed or its tag is no
    version."""
    ref, rules, container = planned.reference, planned.rules, planned.container
    assert ref is not None and ref.tag is not None and rules is not None
    try:
        newest = tags.newest(ref.tag, lookups.tags(ref), rules)
    except (RegistryError, ValueError) as exc:
        return dataclasses.replace(planned, result=_error(
            container, planned.local[0] if planned.local else None, str(exc)))
    if newest is None:
        return planned
    log.debug("%s: newer version tag %s", container.name, newest)
    return dataclasses.replace(planned, target=dataclasses.replace(ref, tag=newest))


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
    if state is not State.UPDATE_AVAILABLE:
        return CheckResult(container.name, "container", container.image, shown, remote, state)
    target = planned.target
    return CheckResult(container.name, "container", container.image, shown, remote, state,
                       target=tags.retagged(container.image, target.tag) if target and
                       target.tag else container.image,
                       note=f"newer version tag {target.tag}" if target else None)


def _error(container: ContainerSnapshot, local: str | None, message: str) -> CheckResult:
    return CheckResult(container.name, "container", container.image, local, None, State.ERROR,
                       message)


def summary(results: list[CheckResult]) -> str:
    """`N watched: a up-to-date, b update-available, ...`, for the log."""
    counts = Counter(r.state.value for r in results)
    parts = [f"{counts[state.value]} {state.value}" for state in State if counts[state.value]]
    return f"{len(results)} watched" + (": " + ", ".join(parts) if parts else "")


def with_waiting(result: CheckResult, container: ContainerSnapshot, settings: Settings,
                 seen: policy.Sightings, decisions: policy.Decisions,
                 rolled_back: Callable[[str, str], float | None] = lambda name, digest: None,
                 ) -> CheckResult:
    """`result`, saying why an available update waits (an approval, its minimum age, its
    window) or is held back (skipped, undone, its update rolled back), as `update` would."""
    if result.state is not State.UPDATE_AVAILABLE or result.remote_digest is None:
        return result
    when = rolled_back(container.name, result.remote_digest)
    if when is not None:
        return dataclasses.replace(result, waiting=policy.held_after_rollback(container.name,
                                                                              when))
    try:
        rules = policy.options(container.labels, settings, None)
    except UpdaterError:
        return result  # reported by `update`, which reads every option
    repository = reference.parse(result.target or container.image).repository
    found = policy.why_waiting(rules, container.name, repository, result.remote_digest,
                               datetime.datetime.now().astimezone(), seen, decisions)
    return dataclasses.replace(result, waiting=found[1] if found else None)


def approvable(name: str, waiting: str | None, newest: list[dict[str, Any]],
               decided: str | None) -> str:
    """The digest `name` waits for now (`waiting`), when it is the one the last pass reported
    (`newest`: its newest history entry; else the operator would approve an image nobody
    has seen) and was not skipped (`decided`); else UpdaterError saying to name one."""
    if waiting is None:
        raise UpdaterError(f"{name} has no update waiting now; name the digest with --digest")
    reported = [e["new_digest"] for e in newest if e["outcome"] == Outcome.WAITING.value]
    if decided == policy.SKIPPED or reported[:1] not in ([], [waiting]):
        raise UpdaterError(f"{name} now waits for {waiting}, which was skipped or is not the "
                           "one reported; name the digest you mean with --digest")
    return waiting
