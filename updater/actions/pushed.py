"""Which watched items a push concerns (`POST /v1/hooks/registry`): the containers, and on a
swarm manager the services, that run the pushed repository's tag (or follow its versions)."""

from __future__ import annotations

from collections.abc import Mapping

from updater.core import policy, tags
from updater.core.detect import watched
from updater.core.pushes import Push, Watched, concerned
from updater.core.settings import Settings
from updater.core.swarm import ServiceSnapshot
from updater.engine.adapter import Engine
from updater.errors import UpdaterError


def concerned_items(engine: Engine, settings: Settings, found: list[Push]) -> list[str]:
    """The names of the watched items `found` concerns; EngineError when the engine cannot
    list them."""
    containers, _ = watched(engine.containers(), settings)
    items = [Watched(c.name, c.image, _follows_versions(c.labels, settings))
             for c in containers]
    if (engine.info().get("Swarm") or {}).get("ControlAvailable"):
        for service in map(ServiceSnapshot.from_inspect, engine.services()):
            try:
                if policy.is_watched(service.labels, settings):
                    items.append(Watched(service.name, service.image,
                                         _follows_versions(service.labels, settings)))
            except UpdaterError:
                continue  # a bad label: its pass reports it
    return concerned(found, items)


def _follows_versions(labels: Mapping[str, str], settings: Settings) -> bool:
    try:
        return tags.tag_policy(labels, settings) is not None
    except UpdaterError:
        return False
