"""Which ends of rollouts were told, kept in the swarm itself (one config per rollout and
outcome), so that every manager sees the same and one updater tells each end."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from updater.core import rollout
from updater.core.report import Outcome
from updater.core.rollout import Marker
from updater.core.swarm import ServiceSnapshot
from updater.errors import EngineError

log = logging.getLogger(__name__)
TOLD_LABEL = "updater.told"


class ConfigStore(Protocol):
    """The swarm's configs, as far as ToldStories uses them (the Engine is one)."""

    def configs(self, label: str) -> list[dict[str, Any]]: ...

    def create_config(self, name: str, data: bytes, labels: dict[str, str]) -> bool: ...

    def remove_config(self, config: str) -> None: ...


class ToldStories:
    """Which ends of rollouts were told, kept by the swarm itself so that every manager sees
    the same: one config per rollout and outcome, named after both (`rollout.told_key`). The
    swarm refuses a second config of a name, so of two updaters telling one end, one does.
    Configs of rollouts no longer in any service's Spec or PreviousSpec are removed."""

    def __init__(self, engine: ConfigStore, services: Sequence[Mapping[str, Any]]) -> None:
        self._engine = engine
        self._services = services
        self._names: set[str] | None = None

    def told(self, service: ServiceSnapshot, marker: Marker, outcome: Outcome) -> bool:
        return rollout.told_key(service.id, marker, outcome.value) in self._known()

    def claim(self, service: ServiceSnapshot, marker: Marker, outcome: Outcome) -> bool:
        """True when this updater is the one to tell that end (or the swarm cannot say)."""
        name = rollout.told_key(service.id, marker, outcome.value)
        known = self._known()
        if name in known:
            return False
        data = json.dumps({"service": service.name, "outcome": outcome.value,
                           "rollout": marker.raw, "told": int(time.time())}).encode()
        try:
            created = self._engine.create_config(name, data, {
                TOLD_LABEL: service.id, rollout.LABEL: marker.raw})
        except EngineError as exc:
            log.warning("%s: could not record in the swarm that this end was told (%s); "
                        "another updater may tell it again", service.name, exc)
            return True
        known.add(name)
        return created

    def _known(self) -> set[str]:
        if self._names is None:
            try:
                found = self._engine.configs(TOLD_LABEL)
            except EngineError as exc:
                log.warning("cannot list which rollouts were told (%s)", exc)
                return set()
            self._names = {str(c["Spec"]["Name"]) for c in found}
            self._forget(found)
        return self._names

    def _forget(self, configs: Sequence[Mapping[str, Any]]) -> None:
        live = {str(s["ID"]): {(m.raw if m else None) for m in (
            Marker.read(s.get("Spec")), Marker.read(s.get("PreviousSpec")))}
            for s in self._services}
        for config in configs:
            labels = config["Spec"].get("Labels") or {}
            if labels.get(rollout.LABEL) not in live.get(str(labels.get(TOLD_LABEL)), set()):
                try:
                    self._engine.remove_config(str(config["ID"]))
                except EngineError as exc:
                    log.debug("told-config %s kept: %s", config["ID"], exc)
