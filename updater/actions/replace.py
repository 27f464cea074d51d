"""Replacing one standalone container, in the safe order, with a journal and rollback.

Everything that can be decided is decided before anything is stopped: the new image is pulled,
the replacement created under a temporary name, the temporary names checked free, and for a
container the engine deletes when it stops (`--rm`) a restorable copy created. Then: pre-update
hook → the dependants stopped (each journalled) → graceful stop → rename old to
`<name>-updater-old`, new to `<name>` → start → wait until running (and healthy) → remove old,
post-update hook, the paused state put back, optional image cleanup → the dependants started
again (recreated where they were bound to a replaced container). Any failure before the new one
is proven restores the old one under its name, as it was. Each step is journalled before it is
taken; `recovery.py` finishes or undoes what a killed updater left.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from updater.actions import hooks
from updater.actions.dependants import Dependants, Stopped
from updater.actions.steps import (
    NEW_SUFFIX,
    OLD_SUFFIX,
    POLL_SECONDS,
    STABLE_SECONDS,
    Candidate,
    Dependant,
    EngineSteps,
    LostContainer,
    labels_of,
    moved_versions,
    name_of,
    removed_when_stopped,
    saved_state,
)
from updater.core.policy import ContainerOptions
from updater.core.ports import ContainerEngine
from updater.core.reference import Reference
from updater.core.report import ItemReport, Outcome, Versions
from updater.engine import recreate
from updater.engine.adapter import image_platform
from updater.errors import EngineError, EngineUnavailable, NotFoundInEngine, UpdaterError
from updater.registry.credentials import CredentialSource
from updater.store.journal import Entry, Journal, Step
from updater.store.kept import KeptImage, KeptImages

log = logging.getLogger(__name__)
# Steps before the old container was stopped: a failure here leaves it as it was.
_UNTOUCHED = frozenset({Step.BEGIN, Step.CREATING, Step.CREATED, Step.BACKED_UP})


class Replacement(EngineSteps):
    """Replaces standalone containers, and their dependants, with rollback."""

    def __init__(self, engine: ContainerEngine, journal: Journal, credentials: CredentialSource,
                 cleanup: bool, clock: Callable[[], float],
                 sleep: Callable[[float], None], kept: KeptImages | None = None) -> None:
        super().__init__(engine, journal, clock, sleep)
        self._credentials = credentials
        self._cleanup = cleanup
        self._kept = kept
        self.dependants = Dependants(engine, journal, clock, sleep, self.rebuild)

    def update(self, candidate: Candidate,
               dependants: Sequence[Dependant] = ()) -> list[ItemReport]:
        """Update one container; `dependants` (running, the most dependent first) are stopped
        just before it and started again after. The candidate's report comes first, then one
        for each dependant that could not be brought back."""
        started = self._clock()
        container = candidate.container
        versions = Versions()
        try:
            old = self._require(container.id)
            old_image = self._engine.inspect_image(str(old["Image"]))
            new_image = self._image_for(candidate, old, old_image)
            versions = moved_versions(Versions.from_labels(
                labels_of(old_image), labels_of(new_image)), old, candidate.reference)
            plan = self._plan(old, old_image, new_image, moved_to=candidate.reference)
            self._require_free_names([container.name, *(d.name for d in dependants)])
        except EngineUnavailable:
            raise
        except Exception as exc:
            if not isinstance(exc, UpdaterError):
                log.exception("%s: unexpected error before the update", container.name)
            log.error("%s: update failed before anything was stopped: %s", container.name, exc)
            return [self._item(candidate, Outcome.FAILED,
                               f"{exc}; the old container was not touched", started, versions)]
        try:
            entry = self._journal.begin(container.name, container.id, container.image,
                                        candidate.new_digest, saved_state(old))
        except UpdaterError as exc:
            log.error("%s: update not started: %s", container.name, exc)
            return [self._item(candidate, Outcome.FAILED,
                               f"{exc}; the old container was not touched", started, versions)]
        stopped: list[Stopped] = []
        try:
            outcome, reason = self._swap(entry, old, plan, str(new_image["Id"]),
                                         candidate.options, dependants, stopped)
        except UpdaterError as exc:
            outcome, reason = self.abort(entry, exc)
        except Exception as exc:  # a bug, or a library failing in a new way: undo, go on
            log.exception("%s: unexpected error during the update", container.name)
            outcome, reason = self.abort(entry, EngineError(
                f"unexpected {type(exc).__name__}: {exc}"))
        replaced = {container.id: container.name} if outcome is Outcome.UPDATED else {}
        if outcome is Outcome.UPDATED and candidate.kept is None:
            self._keep(candidate, old, str(new_image["Id"]))
        elif outcome is Outcome.UPDATED:
            self._undone(candidate, str(old["Image"]), str(new_image["Id"]))
        item = self._item(candidate, outcome, reason, started, versions)
        return [item, *self.dependants.bring_back(stopped, replaced, container.name)]

    def _swap(self, entry: int, old: dict[str, Any], plan: recreate.CreatePlan, image_id: str,
              options: ContainerOptions, dependants: Sequence[Dependant] = (),
              stopped: list[Stopped] | None = None) -> tuple[Outcome, str | None]:
        name, old_id = name_of(old), str(old["Id"])
        self._journal.record(entry, Step.CREATING)
        new_id = self._engine.create(plan.body, name + NEW_SUFFIX, image_id, plan.platform)
        self._journal.record(entry, Step.CREATED, new_id)
        self._connect(new_id, plan)
        if "pre-update" in options.hooks:
            failure = self._hook(old_id, name, "pre-update", options)
            if failure is not None:
                self._engine.remove(new_id, force=True)
                self._journal.finish(entry, Outcome.SKIPPED)
                return Outcome.SKIPPED, failure
        removed_on_stop = removed_when_stopped(old)
        if removed_on_stop:
            self._back_up(entry, old, name + OLD_SUFFIX)
        for dependant in dependants:
            self.dependants.stop(dependant, name, stopped if stopped is not None else [])
        self._journal.record(entry, Step.STOPPING)
        self._stop(old, options)
        self._journal.record(entry, Step.STOPPED)
        self._journal.record(entry, Step.RENAMING)
        if not removed_on_stop:
            self._engine.rename(old_id, name + OLD_SUFFIX)
        self._engine.rename(new_id, name)
        self._journal.record(entry, Step.RENAMED)
        self._journal.record(entry, Step.STARTING)
        self._engine.start(new_id)
        self._journal.record(entry, Step.STARTED)
        problem = self._await_healthy(new_id, options.health_timeout)
        if problem is not None:
            return self._failed_start(entry, name, new_id, problem, options)
        self._journal.record(entry, Step.VERIFIED)
        self._finish(entry, new_id, options, name)
        return Outcome.UPDATED, None

    def abort(self, entry: int, error: UpdaterError) -> tuple[Outcome, str | None]:
        """A step failed: before the stop the old container was never touched; after it, it is
        restored under its name as it was."""
        state = self._journal.get(entry)
        assert state is not None
        log.error("%s: %s", state.name, error)
        self._note(entry, Step.RESTORING)
        try:
            self._restore(state)
        except LostContainer as exc:
            self._close(entry, Outcome.FAILED)
            log.error("%s: %s; %s", state.name, error, exc)
            return Outcome.FAILED, f"{error}; {exc}"
        except UpdaterError as exc:
            # Left in the journal unfinished: the next pass (or start) restores it.
            where = _what_happened(state)
            log.error("%s: %s; %s; it could not be restored yet (%s); the next pass restores it",
                      state.name, error, where, exc)
            return Outcome.FAILED, (f"{error}; {where}; it could not be restored yet ({exc}); "
                                    "the next pass restores it")
        if state.step in _UNTOUCHED:
            self._close(entry, Outcome.FAILED)
            log.error("%s: %s; the old container was not touched", state.name, error)
            return Outcome.FAILED, f"{error}; the old container was not touched"
        self._close(entry, Outcome.ROLLED_BACK)
        log.error("%s: %s; %s; old container restored", state.name, error,
                  _what_happened(state))
        return Outcome.ROLLED_BACK, f"{error}; old container restored"

    def _failed_start(self, entry: int, name: str, new_id: str, problem: str,
                      options: ContainerOptions) -> tuple[Outcome, str | None]:
        if not options.rollback and self._engine.inspect_container(new_id) is not None:
            log.error("%s: new container %s; kept as it is (rollback off), old one stopped as %s",
                      name, problem, name + OLD_SUFFIX)
            self._close(entry, Outcome.FAILED)
            return Outcome.FAILED, f"new container {problem}; kept (rollback off)"
        log.error("%s: new container %s; rolling back", name, problem)
        self._note(entry, Step.RESTORING)
        state = self._journal.get(entry)
        assert state is not None
        self._restore(state)
        self._close(entry, Outcome.ROLLED_BACK)
        return Outcome.ROLLED_BACK, f"new container {problem}; old container restored"

    def _finish(self, entry: int, new_id: str, options: ContainerOptions, name: str) -> None:
        state = self._journal.get(entry)
        assert state is not None
        self._journal.record(entry, Step.REMOVING_OLD)
        self._remove_old(state)
        log.info("%s: updated", name)
        if "post-update" in options.hooks:
            self._hook(name, name, "post-update", options)
        if state.saved.get("paused"):
            self._pause(new_id, name)
        # Closed last: an updater killed before this finishes it at its start (paused again).
        self._close(state.id, Outcome.UPDATED)

    def _keep(self, candidate: Candidate, old: Mapping[str, Any], new_image: str) -> None:
        """Keep the image the container ran before, for `updater rollback`; with cleanup, the
        images no container keeps any more go (the one just left, with keep_images 0)."""
        old_image = str(old["Image"])
        dropped = [old_image] if old_image != new_image else []
        if self._kept is not None:
            try:
                dropped = self._kept.keep(KeptImage(
                    candidate.container.name, str(old["Config"]["Image"]), candidate.old_digest,
                    old_image, candidate.new_digest, new_image))
            except UpdaterError as exc:
                log.error("%s: %s", candidate.container.name, exc)
                return
        if self._cleanup:
            for image in dropped:
                if image != new_image:
                    self._remove_image(image)

    def _undone(self, candidate: Candidate, left: str, image: str) -> None:
        """An undo proven: the tag names the image gone back to (not before: a failed undo
        leaves it where it was); with cleanup, the image left goes unless a container keeps
        it."""
        try:
            self._tag(candidate.reference, image)
        except UpdaterError as exc:
            log.error("%s: %s; the tag still names the image it left", candidate.container.name,
                      exc)
        if self._cleanup and left != image and not (self._kept and self._kept.keeps(left)):
            self._remove_image(left)

    def _image_for(self, candidate: Candidate, old: Mapping[str, Any],
                   old_image: Mapping[str, Any]) -> dict[str, Any]:
        """The image to move to: for an undo the kept one, if it is still here (else pulled
        by its digest), its tag moved only once the undo is proven; the newer one pulled and
        tagged for an update."""
        if candidate.kept is not None:
            try:
                return self._engine.inspect_image(candidate.kept)
            except NotFoundInEngine:
                log.info("%s: the image it ran before (%s) is no longer here; pulling it",
                         candidate.container.name, candidate.kept[:19])
        return self.pull(candidate.reference, candidate.new_digest, old, old_image,
                         tag=candidate.kept is None)

    def _tag(self, ref: Reference, image_id: str) -> None:
        if ref.tag is not None:
            repository = ref.repository if ref.domain != "docker.io" else ref.path
            self._engine.tag(image_id, repository, ref.tag)

    def rebuild(self, inspect: dict[str, Any], container_refs: dict[str, str],
                options: ContainerOptions) -> str:
        """Recreate a stopped container on the image it runs (never by its tag, which may have
        moved), with `network_mode: container:<id>` of replaced containers pointed at their
        names; the new ID, or EngineError if it could not be done."""
        name, old_id = name_of(inspect), str(inspect["Id"])
        image_id = str(inspect["Image"])
        image = self._engine.inspect_image(image_id)
        plan = self._plan(inspect, image, image, container_refs)
        entry = self._journal.begin(name, old_id, str(inspect["Config"]["Image"]), image_id,
                                    saved_state(inspect))
        try:
            outcome, reason = self._swap(entry, inspect, plan, image_id, without_hooks(options))
        except UpdaterError as exc:
            outcome, reason = self.abort(entry, exc)
        if outcome is not Outcome.UPDATED:
            raise EngineError(f"could not recreate {name}: {reason}")
        found = self._require(name)
        return str(found["Id"])

    def pull(self, ref: Reference, digest: str, old: Mapping[str, Any],
             old_image: Mapping[str, Any], tag: bool = True) -> dict[str, Any]:
        """The new image, for the platform the old container runs: one run with `--platform`
        (an emulated architecture) keeps its platform."""
        platform = recreate.manifest_platform(old) or image_platform(old_image)
        credentials = self._credentials.lookup(ref.domain)
        auth = credentials.engine_auth(ref.domain) if credentials else None
        repository = ref.repository if ref.domain != "docker.io" else ref.path
        image_id = self._engine.pull(repository, digest, auth, platform)
        if tag:
            self._tag(ref, image_id)
        return self._engine.inspect_image(image_id)

    def _await_healthy(self, container: str, timeout: float) -> str | None:
        """None once the container runs (healthy, if it has a healthcheck), else what's wrong."""
        deadline = self._clock() + timeout
        running_since: tuple[str, float] | None = None
        while True:
            found = self._engine.inspect_container(container)
            if found is None:
                return "exited and was removed by the engine (--rm)"
            state = found.get("State") or {}
            health = (state.get("Health") or {}).get("Status")
            if state.get("Restarting") or state.get("Status") in ("exited", "dead"):
                return f"stopped with exit code {state.get('ExitCode')}"
            if health == "healthy":
                return None
            if health == "unhealthy":
                return "reported unhealthy"
            if health is None and state.get("Running"):
                started_at = str(state.get("StartedAt"))
                if running_since is None or running_since[0] != started_at:
                    running_since = (started_at, self._clock())
                elif self._clock() - running_since[1] >= min(STABLE_SECONDS, timeout):
                    return None
            if self._clock() >= deadline:
                return f"was not {'healthy' if health else 'running'} within {timeout:g}s"
            self._sleep(POLL_SECONDS)

    def _hook(self, container: str, name: str, hook: str, options: ContainerOptions) -> str | None:
        """Run a hook inside the container; None when it succeeded, else why not."""
        return hooks.run(self._engine, container, name, hook, options.hooks[hook],
                         options.hook_timeout)

    def _remove_image(self, image: str) -> None:
        try:
            self._engine.remove_image(image)
            log.info("removed old image %s", image[:19])
        except EngineError as exc:
            log.info("kept old image %s: %s", image[:19], exc)


def without_hooks(options: ContainerOptions) -> ContainerOptions:
    return dataclasses.replace(options, hooks={})


def _what_happened(state: Entry) -> str:
    """What an update had done to the old container by the step it reached, for reports."""
    name = state.name
    if state.step in _UNTOUCHED:
        return "the old container was not touched"
    if state.step == Step.STOPPING:
        return f"the old container {name} was being stopped"
    if state.step in (Step.STOPPED, Step.RENAMING):
        return f"the old container {name} was stopped"
    return f"the old container {name} was stopped and renamed {name}{OLD_SUFFIX}"
