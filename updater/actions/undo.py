"""`updater rollback NAME`: a container or service put back on the image it ran before its
last update, by the same safe replacement (a container: journal, health check, rollback of
the undo itself when the old image no longer starts) or the same followed rolling update (a
service) as an update. The digest it leaves is then held back until approved or a newer one
comes.

A container goes back to the image kept for it (`keep_images`), pulled by its digest when it
is no longer on the engine; a service to its `PreviousSpec`'s image, when that is what this
updater's last rolling update left. Only the image changes: a container or service changed
since its last update (another image, another spec) is refused, not rolled back.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

from updater.actions.locate import is_leader
from updater.actions.passes import UpdatePass
from updater.actions.rolling import Rollouts
from updater.actions.steps import Candidate
from updater.actions.told import ToldStories
from updater.core import policy, rollout
from updater.core.detect import watched
from updater.core.ports import SwarmEngine
from updater.core.reference import parse
from updater.core.report import ItemReport, Outcome, short_digest
from updater.core.settings import Settings
from updater.core.snapshots import ContainerSnapshot
from updater.core.swarm import (
    ServiceSnapshot,
    image_of,
    new_spec,
    service_item,
    service_options,
    tracked,
)
from updater.engine.adapter import Engine
from updater.errors import NotWatched, UpdaterError
from updater.registry.credentials import CredentialSource
from updater.store.decisions import OperatorDecisions
from updater.store.kept import KeptImage, KeptImages

log = logging.getLogger(__name__)
_QUIET_STATES = (None, "", "completed")  # a service's UpdateStatus with no rollout going on


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    """What a rollback of `name` does: back to `image` from `digest` (the one then held
    back); `kept` for a container, `service` for a service."""

    name: str
    kind: str
    image: str
    digest: str | None
    kept: KeptImage | None = None
    service: ServiceSnapshot | None = None


class Undo:
    def __init__(self, engine: Engine, kept: KeptImages, settings: Settings,
                 credentials: CredentialSource, own_id: str | None,
                 decisions: OperatorDecisions) -> None:
        self._engine = engine
        self._kept = kept
        self._settings = settings
        self._credentials = credentials
        self._own_id = own_id
        self._decisions = decisions

    def plan(self, name: str) -> Plan:
        """What `run` would do for `name`; NotWatched when nothing watched has that name,
        UpdaterError when there is nothing (safe) to go back to."""
        containers, _ = watched(self._engine.containers(), self._settings, [name])
        found = [c for c in containers if c.name == name]
        if found:
            return self._container_plan(found[0])
        services = [s for s in self._services() if s["Spec"]["Name"] == name]
        if services:
            return self._service_plan(ServiceSnapshot.from_inspect(services[0]))
        raise NotWatched(f"no watched container or service named {name}; check the name and "
                         "its updater.enable label")

    def run(self, name: str, passes: UpdatePass) -> list[ItemReport]:
        """Roll `name` back (UpdaterError, as from `plan`, when it cannot be): the item
        (undone, or why not) first, then any dependant that could not be brought back."""
        plan = self.plan(name)
        if plan.digest is None:
            return self._carry_out(plan, passes)
        # Held back before anything changes: an undo cut short (the updater killed) and then
        # finished by the next start's recovery must not be reversed by the pass after it.
        before = self._decisions.decision(plan.name, plan.digest)
        self._decisions.decide(plan.name, plan.digest, policy.UNDONE)
        items: list[ItemReport] = []
        try:
            items = self._carry_out(plan, passes)
        finally:
            if not items or items[0].outcome is not Outcome.UNDONE:
                self._decisions.undecide(plan.name, plan.digest, before)
        if items[0].outcome is Outcome.UNDONE:
            log.info("%s: %s held back until approved", plan.name, short_digest(plan.digest))
        return items

    def _carry_out(self, plan: Plan, passes: UpdatePass) -> list[ItemReport]:
        if plan.kept is not None:
            return self._container(plan, plan.kept, passes)
        assert plan.service is not None
        return [self._service(plan, plan.service)]

    def _container_plan(self, container: ContainerSnapshot) -> Plan:
        if container.id == self._own_id:
            raise UpdaterError(f"{container.name} is this updater's own container: roll it back "
                               "by starting the previous updater image in its place")
        kept = self._kept.newest(container.name)
        if kept is None:
            raise UpdaterError(
                f"nothing to roll back for {container.name}: no update of it is recorded with "
                f"the image it ran before (the last keep_images={self._settings.keep_images} "
                "are kept)")
        if kept.new_image_id != container.image_id or not _same_repository(container.image,
                                                                           kept.image):
            raise UpdaterError(
                f"{container.name} no longer runs the image its last update put there "
                f"({short_digest(kept.new_image_id)}); it was changed since, so it is not "
                "rolled back")
        return Plan(container.name, "container", kept.image, kept.new_digest, kept=kept)

    def _container(self, plan: Plan, kept: KeptImage, passes: UpdatePass) -> list[ItemReport]:
        container = self._engine.inspect_container(plan.name) or {}
        labels = dict((container.get("Config") or {}).get("Labels") or {})
        # The undo always puts the container back as it was should the old image not start,
        # whatever `rollback` says of updates.
        options = dataclasses.replace(policy.options(
            labels, self._settings, (container.get("Config") or {}).get("StopTimeout")),
            rollback=True)
        snapshot = [c for c in self._engine.containers() if c.name == plan.name]
        if not snapshot or snapshot[0].image_id != kept.new_image_id:
            raise UpdaterError(f"{plan.name} changed while its rollback was waiting; nothing "
                               "was done")
        candidate = Candidate(snapshot[0], parse(kept.image), kept.new_digest,
                              kept.digest or kept.image_id, options, kept=kept.image_id)
        items = passes.replace(candidate)
        first = items[0]
        if first.outcome is Outcome.UPDATED:
            self._kept.forget(kept)
            first = dataclasses.replace(first, outcome=Outcome.UNDONE, reason=(
                f"back on {kept.image}, the image it ran before its update of "
                f"{_clock(kept.time)}"))
        elif first.outcome is Outcome.ROLLED_BACK:
            first = dataclasses.replace(first, reason=(
                f"the image it ran before did not start ({first.reason}); it stays on the "
                "image it had"))
        return [first, *items[1:]]

    def _services(self) -> list[dict[str, Any]]:
        swarm = self._engine.info().get("Swarm") or {}
        return self._engine.services() if swarm.get("ControlAvailable") else []

    def _service_plan(self, service: ServiceSnapshot) -> Plan:
        if not policy.is_watched(service.labels, self._settings):
            raise NotWatched(f"the service {service.name} is not watched; check its "
                             "updater.enable label")
        _, current = tracked(service.image)
        found = rollout.story(service.inspect, current)
        state = (service.inspect.get("UpdateStatus") or {}).get("State")
        previous = image_of(service.inspect.get("PreviousSpec"))
        marker = found.marker
        if marker is None or found.phase not in (rollout.Phase.DONE, rollout.Phase.ROLLING) \
                or state not in _QUIET_STATES:
            raise UpdaterError(f"nothing to roll back for {service.name}: its last change was "
                               "not a completed update by this updater")
        if marker.undo:
            raise UpdaterError(f"nothing to roll back for {service.name}: its last change was "
                               "a rollback (`updater approve` lets the update it undid go again)")
        if not previous or tracked(previous)[1] != marker.source:
            raise UpdaterError(f"nothing to roll back for {service.name}: its previous spec "
                               "does not name the image it ran before its last update")
        return Plan(service.name, "service", previous, current, service=service)

    def _service(self, plan: Plan, service: ServiceSnapshot) -> ItemReport:
        engine: SwarmEngine = self._engine
        if not is_leader(engine):
            raise UpdaterError(f"only the swarm leader rolls back services; run `updater "
                               f"rollback {service.name}` against the leader")
        ref, digest = tracked(plan.image)
        assert digest is not None
        marker = rollout.Marker.new(digest, plan.digest, time.time(), undo=True)
        spec = new_spec(service, ref, marker)
        options = service_options(service.labels, self._settings)
        rollouts = Rollouts(engine, self._credentials, self._settings)
        started = time.monotonic()
        refused = rollouts.send(service, spec, ref.domain)
        if refused is not None:
            return service_item(service, *refused, plan.digest, digest)
        log.info("%s: rolling back to %s", service.name, plan.image)
        outcome, reason = rollouts.follow(service, spec, service.image, options.rollback,
                                          options.health_timeout)
        if outcome is Outcome.UPDATED:
            outcome, reason = Outcome.UNDONE, f"back on {plan.image}, as before its last update"
        # Told here: no pass tells this rollout again as an update.
        ToldStories(engine, engine.services()).claim(
            service, marker, Outcome.UPDATED if outcome is Outcome.UNDONE else outcome)
        return service_item(service, outcome, plan.digest, digest, reason,
                            time.monotonic() - started)


def _same_repository(running: str, kept: str) -> bool:
    """True when the container still names the repository it was updated in (not an image
    ID, not another repository)."""
    try:
        return parse(running).repository == parse(kept).repository
    except UpdaterError:
        return False


def _clock(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))
