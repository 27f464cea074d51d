"""Rebalancing replicated services: on request (`updater rebalance`) or, on the leader, every
`rebalance.interval`; a plan the swarm undid is not carried out again while nothing changed."""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Sequence
from typing import Any

from updater.actions.locate import is_leader
from updater.actions.services import ServiceUpdater
from updater.core.ports import SwarmEngine
from updater.core.rebalance import ServicePlan, placement, plans, result_reason
from updater.core.report import ItemReport, Outcome
from updater.core.settings import RebalanceSettings
from updater.errors import UpdaterError

log = logging.getLogger(__name__)


class Rebalancer:
    def __init__(self, settings: RebalanceSettings) -> None:
        self._settings = settings
        self._last = -math.inf
        self._undone: dict[str, tuple[dict[str, int], dict[str, int]]] = {}  # by the swarm

    def plan(self, engine: SwarmEngine, names: Sequence[str],
             threshold: float) -> list[ServicePlan]:
        """The plans for the replicated services `names` (all when none), asked of a manager;
        a name that is not a replicated service is an error."""
        if threshold < 0:
            raise UpdaterError(f"--threshold {threshold} must be 0 or more")
        if not (engine.info().get("Swarm") or {}).get("ControlAvailable"):
            raise UpdaterError(f"the engine at {engine.host} is not a swarm manager; point "
                               "docker_host at a manager")
        services = engine.services()
        check_rebalanced_names(names, services)
        return plans(engine.nodes(), services, engine.tasks(), threshold, names)

    def periodic(self, engine: SwarmEngine, services: ServiceUpdater) -> list[ItemReport]:
        """The periodic rebalance of `rebalance: {enabled, threshold, interval}` (leader only)."""
        settings = self._settings
        if not settings.enabled or time.monotonic() - self._last < settings.interval:
            return []
        if not is_leader(engine):
            return []
        self._last = time.monotonic()
        found = plans(engine.nodes(), engine.services(), engine.tasks(), settings.threshold)
        return self.carry_out(engine, services, found)

    def carry_out(self, engine: SwarmEngine, services: ServiceUpdater,
                  found: list[ServicePlan]) -> list[ItemReport]:
        """Carry out `found`, each reported by where its tasks ended up. A plan the swarm undid
        (the tasks went back where they were) is not carried out again while the placement
        and the plan stay the same: a forced update would restart every task for nothing."""
        items: list[ItemReport] = []
        for plan in found:
            attempt = (dict(plan.before), dict(plan.after))
            if self._undone.get(plan.service) == attempt:
                log.info("%s: not rebalanced: the swarm undid this same plan last time",
                         plan.service)
                continue
            for done in services.rebalance([plan]):
                if done.outcome is not Outcome.REBALANCED:
                    items.append(done)
                    continue
                service_id = str(engine.inspect_service(plan.service)["ID"])
                result = placement(service_id, engine.nodes(), engine.tasks())
                if {n: result.get(n, 0) for n in plan.before} == attempt[0]:
                    self._undone[plan.service] = attempt
                else:
                    self._undone.pop(plan.service, None)
                items.append(dataclasses.replace(done, reason=result_reason(plan, result)))
        return items


def check_rebalanced_names(names: Sequence[str], services: list[dict[str, Any]]) -> None:
    """Each service named for a rebalance exists and is replicated (else UpdaterError)."""
    modes = {str(s["Spec"]["Name"]): s["Spec"].get("Mode") or {} for s in services}
    for name in names:
        if name not in modes:
            raise UpdaterError(f"no service named {name!r} on this swarm; list them with "
                               "docker service ls")
        if "Replicated" not in modes[name]:
            kind = next(iter(modes[name]), "other").lower()
            raise UpdaterError(f"{name} is a {kind} service; only replicated services are "
                               "rebalanced")
