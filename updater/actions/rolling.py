"""Rolling updates of swarm services as the engine carries them out: sending a new spec (with
the registry credentials), following `UpdateStatus` (or, when the swarm sets none, the tasks)
to its end within a bound built from the update's own batches, rolling a failed one back, and
the forced rolling update of a rebalance."""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from updater.core.ports import SwarmEngine
from updater.core.rebalance import ServicePlan
from updater.core.report import ItemReport, Outcome
from updater.core.settings import Settings
from updater.core.swarm import (
    ROLLBACK_STATES,
    ServiceSnapshot,
    image_of,
    rolled_out,
    service_item,
    tracked,
    update_timeout,
)
from updater.errors import EngineError
from updater.registry.credentials import CredentialSource

log = logging.getLogger(__name__)
POLL_SECONDS = 0.5
_FAILED_STATES = ("paused", *ROLLBACK_STATES)


class Rollouts:
    def __init__(self, engine: SwarmEngine, credentials: CredentialSource, settings: Settings,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._engine = engine
        self._credentials = credentials
        self._settings = settings
        self._sleep = sleep
        self._clock = clock

    def send(self, service: ServiceSnapshot, spec: dict[str, Any],
              domain: str) -> tuple[Outcome, str] | None:
        """Send the new spec; None when the swarm took it, else the outcome and why not."""
        try:
            self._engine.update_service(service.id, service.version, spec,
                                        self._registry_auth(domain))
        except EngineError:
            now = self._engine.inspect_service(service.id)
            if int(now["Version"]["Index"]) != service.version:
                # Someone else (another updater, a user) changed it first: decide again.
                return Outcome.SKIPPED, ("the service changed before this update reached it; "
                                         "it is decided again at the next pass")
            raise
        return None

    def follow(self, service: ServiceSnapshot, spec: Mapping[str, Any], previous: str,
                rollback: bool, health_timeout: float) -> tuple[Outcome, str | None]:
        """Follow the rolling update to `spec` to its end; roll back a failed one."""
        nodes = len(self._engine.nodes())
        timeout = update_timeout(spec, service.replicas, nodes, health_timeout)
        state, message = self._await_update(service.id, timeout, image_of(spec),
                                            service.replicas)
        if state == "completed":
            log.info("%s: updated", service.name)
            return Outcome.UPDATED, None
        problem = f"rolling update ended {state}" + (f": {message}" if message else "")
        return self.undo(service, spec, previous, problem, state, rollback, health_timeout)

    def undo(self, service: ServiceSnapshot, spec: Mapping[str, Any], previous: str,
              problem: str, state: str, rollback: bool,
              health_timeout: float) -> tuple[Outcome, str | None]:
        """A failed rolling update: back to the previous spec (unless rollback is off, or the
        swarm's own failure action already rolls back)."""
        if not rollback:
            return Outcome.FAILED, problem
        if not state.startswith("rollback"):
            current = self._engine.inspect_service(service.id)
            self._engine.rollback_service(service.id, int(current["Version"]["Index"]))
            self.await_rollback(service, spec, previous, health_timeout)
        log.error("%s: %s; rolled back to the previous spec", service.name, problem)
        return Outcome.ROLLED_BACK, f"{problem}; rolled back to the previous spec"

    def await_rollback(self, service: ServiceSnapshot, spec: Mapping[str, Any],
                        previous: str, health_timeout: float) -> None:
        nodes = len(self._engine.nodes())
        self._await_update(service.id, update_timeout(
            spec, service.replicas, nodes, health_timeout, "RollbackConfig"),
            previous, service.replicas, rollback=True)

    def _await_update(self, service_id: str, timeout: float, image: str | None,
                      replicas: int | None, rollback: bool = False) -> tuple[str, str]:
        """Follow UpdateStatus to an end state; when the swarm sets none (no task needed
        replacing, e.g. 0 replicas), or a rollback's stays started, the tasks decide whether
        all run `image` (None: UpdateStatus alone decides)."""
        deadline = self._clock() + timeout
        while True:
            status = self._engine.inspect_service(service_id).get("UpdateStatus") or {}
            state = str(status.get("State") or "")
            done = ("rollback_completed",) if rollback else ("completed", *_FAILED_STATES)
            if state in done:
                return state, str(status.get("Message") or "")
            if image and state == ("rollback_started" if rollback else "") and rolled_out(
                    self._engine.tasks(service_id), image, replicas):
                return done[0], "no task left to replace"
            if self._clock() >= deadline:
                return "timed out", f"not completed within {timeout:.0f}s"
            self._sleep(POLL_SECONDS)

    def _registry_auth(self, host: str) -> str | None:
        credentials = self._credentials.lookup(host)
        if credentials is None:
            return None
        payload = credentials.engine_auth(host)
        return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode()


    def rebalance(self, plans: list[ServicePlan]) -> list[ItemReport]:
        """Carry out plans one service at a time: a forced rolling update each, waiting for
        it to converge before the next."""
        items = []
        for plan in plans:
            service = ServiceSnapshot.from_inspect(self._engine.inspect_service(plan.service))
            spec = json.loads(json.dumps(service.spec))
            template = spec["TaskTemplate"]
            template["ForceUpdate"] = int(template.get("ForceUpdate") or 0) + 1
            ref, _ = tracked(service.image)
            started = self._clock()
            self._engine.update_service(service.id, service.version, spec,
                                        self._registry_auth(ref.domain))
            timeout = update_timeout(spec, service.replicas, len(self._engine.nodes()),
                                     self._settings.health_timeout)
            # Same image before and after: only UpdateStatus can tell the forced update is done.
            state, message = self._await_update(service.id, timeout, None, service.replicas)
            outcome = Outcome.REBALANCED if state == "completed" else Outcome.FAILED
            reason = (f"rebalanced: {dict(plan.before)} -> {dict(plan.after)}"
                      if outcome is Outcome.REBALANCED else f"rebalance ended {state}: {message}")
            log.info("%s: %s", service.name, reason)
            seconds = self._clock() - started
            items.append(service_item(service, outcome, None, None, reason, seconds))
        return items
