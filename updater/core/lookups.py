"""The registry's answers for one pass (`PassLookups`): each distinct reference's digest and
each repository's tags asked once, concurrently where many are known at once, whichever items
(containers, services) use them; and what a registry client offers, as Protocols."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol, runtime_checkable

from updater.core import reference
from updater.errors import RegistryError

log = logging.getLogger(__name__)
MAX_WORKERS = 32


class DigestSource(Protocol):
    def digest(self, reference: reference.Reference) -> str:
        """The registry's current digest for the reference's tag."""


@runtime_checkable
class BatchDigestSource(Protocol):
    def digests(self, refs: list[reference.Reference]) -> dict[str, str | RegistryError]:
        """The current digest of each reference (by its text), or why it is not known: many
        at once (the swarm leader's updater, asked over its API)."""


@runtime_checkable
class TagSource(Protocol):
    def tags(self, reference: reference.Reference) -> list[str]:
        """Every tag of the reference's repository (RegistryClient's)."""


@runtime_checkable
class PlatformSource(Protocol):
    def platform_digest(self, reference: reference.Reference, digest: str,
                        platform: str) -> str | None:
        """The manifest for `platform` that the index `digest` names (RegistryClient's)."""


class PassLookups:
    """The registry's answers for one pass: each distinct reference asked once, concurrently
    where many are known at once, whichever items (containers, services) use it. A failed
    lookup fails every item that uses it; the next pass (a new PassLookups) asks again."""

    def __init__(self, registry: DigestSource, workers: int = MAX_WORKERS) -> None:
        self._registry = registry
        self._workers = workers
        self._answers: dict[str, str | RegistryError] = {}
        self._tags: dict[str, list[str] | RegistryError] = {}  # by repository
        self._lock = threading.Lock()

    def prefetch(self, refs: Iterable[reference.Reference]) -> None:
        """Ask for every reference not asked yet, concurrently."""
        with self._lock:
            wanted = {str(ref): ref for ref in refs if str(ref) not in self._answers}
            if isinstance(self._registry, BatchDigestSource):
                self._answers.update(self._registry.digests(list(wanted.values())) if wanted
                                     else {})
            else:
                self._answers.update(lookup_all(wanted, self._registry, self._workers))

    def forget_failures(self) -> None:
        """The next phase of the pass (the services, after the containers' updates) asks
        again for what failed: a timeout minutes ago says little about the registry now."""
        with self._lock:
            self._answers = {key: answer for key, answer in self._answers.items()
                             if not isinstance(answer, RegistryError)}
            self._tags = {key: answer for key, answer in self._tags.items()
                          if not isinstance(answer, RegistryError)}

    def digest(self, reference: reference.Reference) -> str:
        self.prefetch([reference])
        answer = self._answers[str(reference)]
        if isinstance(answer, RegistryError):
            raise answer
        return answer

    def prefetch_tags(self, refs: Iterable[reference.Reference]) -> None:
        """List the tags of every repository not listed yet, concurrently."""
        if not isinstance(self._registry, TagSource):
            return
        with self._lock:
            wanted = {_repository(ref): ref for ref in refs
                      if _repository(ref) not in self._tags}
            self._tags.update(_list_all(wanted, self._registry, self._workers))

    def tags(self, ref: reference.Reference) -> list[str]:
        """The tags of the reference's repository, listed once per pass; a RegistryError
        when the registry cannot list them."""
        if not isinstance(self._registry, TagSource):
            raise RegistryError(f"{ref.domain}: tags cannot be listed here")
        self.prefetch_tags([ref])
        answer = self._tags[_repository(ref)]
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


def lookup_all(wanted: Mapping[str, reference.Reference], registry: DigestSource,
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


def _repository(ref: reference.Reference) -> str:
    return f"{ref.domain}/{ref.path}"


def _list_all(wanted: Mapping[str, reference.Reference], registry: TagSource,
              workers: int) -> dict[str, list[str] | RegistryError]:
    if not wanted:
        return {}

    def listing(ref: reference.Reference) -> list[str] | RegistryError:
        try:
            return registry.tags(ref)
        except RegistryError as exc:
            log.warning("listing the tags of %s failed: %s", _repository(ref), exc)
            return exc

    with ThreadPoolExecutor(max_workers=min(workers, len(wanted))) as pool:
        return dict(zip(wanted, pool.map(listing, wanted.values()), strict=True))
