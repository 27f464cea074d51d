"""The registry answers of a run over swarm services: the tag of every watched service, or the
newest version tag its rules allow (`updater.tags=semver`, each repository's tags listed once),
asked at once, concurrently, each distinct reference once, shared with the containers of the
pass when they are given the same `PassLookups`."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from updater.core import policy, reference, tags
from updater.core.lookups import DigestSource, PassLookups
from updater.core.settings import Settings
from updater.core.swarm import ServiceSnapshot, tracked
from updater.errors import ConfigError, UpdaterError


def service_lookups(source: DigestSource, services: Sequence[Mapping[str, Any]],
                    names: Sequence[str], settings: Settings) -> PassLookups:
    """The lookups of a run, with what `services` (those named, when names are given) will
    ask already asked."""
    lookups = source if isinstance(source, PassLookups) else PassLookups(source)
    lookups.forget_failures()  # what failed for the containers is asked again, once
    refs: list[tuple[reference.Reference, tags.TagPolicy | None]] = []
    for service in map(ServiceSnapshot.from_inspect, services):
        try:
            if (not names or service.name in names) and \
                    policy.is_watched(service.labels, settings):
                ref, _ = tracked(service.image)
                refs += [(ref, tags.tag_policy(service.labels, settings))] \
                    if ref.tag is not None else []
        except UpdaterError:
            continue  # reported when the service's turn comes
    lookups.prefetch_tags(ref for ref, rules in refs if rules)
    wanted = []
    for ref, rules in refs:
        try:
            wanted.append(target(ref, rules, lookups))
        except UpdaterError:
            continue  # reported when the service's turn comes
    lookups.prefetch(wanted)
    return lookups


def target(ref: reference.Reference, rules: tags.TagPolicy | None,
           lookups: PassLookups) -> reference.Reference:
    """`ref`, or the newest version tag `rules` allow; a RegistryError when the tags cannot
    be listed, a ConfigError when its tag is no version."""
    if rules is None or ref.tag is None:
        return ref
    try:
        newest = tags.newest(ref.tag, lookups.tags(ref), rules)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return dataclasses.replace(ref, tag=newest) if newest else ref
