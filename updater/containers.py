"""Replacing one standalone container, in the safe order, with a journal and rollback.

pull by digest (old keeps running) → create the new one under a temporary name → pre-update
hook → graceful stop → rename old to `<name>-updater-old`, new to `<name>` → start → wait until
running (and healthy) → remove old, post-update hook, optional image cleanup. Any failure
before the new one is proven healthy restores the old one under its name, running. Each step
is journalled before it is taken; `recover()` finishes or undoes what a killed updater left.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, replace
from typing import Any

from updater import policy, recreate
from updater.credentials import CredentialSource
from updater.engine import ContainerSnapshot, Engine
from updater.errors import EngineError, NotFoundInEngine, UpdaterError
from updater.journal import Entry, Journal, StateLock
from updater.policy import ContainerOptions
from updater.reference import Reference
from updater.report import ItemReport, Outcome, Versions

log = logging.getLogger(__name__)
OLD_SUFFIX = "-updater-old"
NEW_SUFFIX = "-updater-new"
HANDING_OVER = "handing-over"
LOCK_TAKE_BACK = 30.0
STABLE_SECONDS = 2.0
POLL_SECONDS = 0.25
# Steps after which the new container has been proven: recovery completes instead of undoing.
_PROVEN = frozenset({"verified", "removing-old"})
# Steps before the old container was stopped: a failure here leaves it as it was.
_UNTOUCHED = frozenset({"begin", "creating", "created"})


@dataclass(frozen=True, slots=True)
class Candidate:
    """A container with a newer image waiting in its registry."""

    container: ContainerSnapshot
    reference: Reference
    old_digest: str | None
    new_digest: str
    options: ContainerOptions


class ContainerUpdater:
    """Updates standalone containers on one engine."""

    def __init__(self, engine: Engine, journal: Journal, credentials: CredentialSource,
                 cleanup: bool = False, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, own_id: str | None = None,
                 lock: StateLock | None = None) -> None:
        self._engine = engine
        self._journal = journal
        self._credentials = credentials
        self._cleanup = cleanup
        self._own_id = own_id
        self._lock = lock
        self._clock = clock
        self._sleep = sleep

    # --- one update -----------------------------------------------------------------------

    def rolled_back(self, name: str, digest: str) -> float | None:
        """When updating `name` to `digest` failed and was rolled back, if it was."""
        return self._journal.rolled_back(name, digest)

    def update(self, candidate: Candidate) -> ItemReport:
        started = self._clock()
        container = candidate.container
        versions = Versions()
        try:
            old = self._require(container.id)
            old_image = self._engine.inspect_image(str(old["Image"]))
            new_image = self._pull(candidate.reference, candidate.new_digest)
            versions = Versions.from_labels(_labels(old_image), _labels(new_image))
            outcome, reason = self._replace(candidate, old, old_image, new_image)
        except UpdaterError as exc:
            outcome, reason = Outcome.FAILED, f"{exc}; the old container was not touched"
            log.error("%s: update failed before anything was stopped: %s", container.name, exc)
        return ItemReport(container.name, container.image, outcome,
                          old_digest=candidate.old_digest, new_digest=candidate.new_digest,
                          reason=reason, seconds=self._clock() - started, versions=versions)

    def _replace(self, candidate: Candidate, old: dict[str, Any], old_image: dict[str, Any],
                 new_image: dict[str, Any]) -> tuple[Outcome, str | None]:
        container, options = candidate.container, candidate.options
        name = container.name
        plan = recreate.plan(old, old_image, new_image, str(old["Config"]["Image"]))
        entry = self._journal.begin(name, container.id, container.image, candidate.new_digest)
        try:
            return self._swap(entry, name, container.id, plan, options)
        except UpdaterError as exc:
            return self._abort(entry, name, container.id, exc)

    def _abort(self, entry: int, name: str, old_id: str,
               error: UpdaterError) -> tuple[Outcome, str | None]:
        """A step failed: before the stop the old container was never touched; after it, it is
        restored under its name and started."""
        state = self._journal.get(entry)
        new_id = state.new_id if state else None
        log.error("%s: %s", name, error)
        self._journal.record(entry, "restoring")
        self._restore(name, old_id, new_id)
        if state is not None and state.step in _UNTOUCHED:
            self._journal.finish(entry, Outcome.FAILED)
            log.error("%s: %s; the old container was not touched", name, error)
            return Outcome.FAILED, f"{error}; the old container was not touched"
        self._journal.finish(entry, Outcome.ROLLED_BACK)
        log.error("%s: %s; old container restored", name, error)
        return Outcome.ROLLED_BACK, f"{error}; old container restored"

    def _swap(self, entry: int, name: str, old_id: str, plan: recreate.CreatePlan,
              options: ContainerOptions) -> tuple[Outcome, str | None]:
        self._journal.record(entry, "creating")
        new_id = self._engine.create(plan.body, name + NEW_SUFFIX)
        self._journal.record(entry, "created", new_id)
        for network, endpoint in plan.extra_networks.items():
            self._engine.connect_network(network, new_id, endpoint)
        if "pre-update" in options.hooks:
            failure = self._hook(old_id, name, "pre-update", options)
            if failure is not None:
                self._engine.remove(new_id, force=True)
                self._journal.finish(entry, Outcome.SKIPPED)
                return Outcome.SKIPPED, failure
        self._journal.record(entry, "stopping")
        log.info("%s: stopping (%s, up to %.0fs)", name, options.stop_signal or "its stop signal",
                 options.stop_timeout)
        self._engine.stop(old_id, options.stop_timeout, options.stop_signal)
        self._journal.record(entry, "stopped")
        self._journal.record(entry, "renaming")
        self._engine.rename(old_id, name + OLD_SUFFIX)
        self._engine.rename(new_id, name)
        self._journal.record(entry, "renamed")
        self._journal.record(entry, "starting")
        self._engine.start(new_id)
        self._journal.record(entry, "started")
        problem = self._await_healthy(new_id, options.health_timeout)
        if problem is not None:
            return self._failed_start(entry, name, old_id, new_id, problem, options)
        self._journal.record(entry, "verified")
        self._finish(entry, old_id, options, name)
        return Outcome.UPDATED, None

    def _failed_start(self, entry: int, name: str, old_id: str, new_id: str, problem: str,
                      options: ContainerOptions) -> tuple[Outcome, str | None]:
        if not options.rollback:
            log.error("%s: new container %s; kept as it is (rollback off), old one stopped as %s",
                      name, problem, name + OLD_SUFFIX)
            self._journal.finish(entry, Outcome.FAILED)
            return Outcome.FAILED, f"new container {problem}; kept (rollback off)"
        log.error("%s: new container %s; rolling back", name, problem)
        self._journal.record(entry, "restoring")
        self._restore(name, old_id, new_id)
        self._journal.finish(entry, Outcome.ROLLED_BACK)
        return Outcome.ROLLED_BACK, f"new container {problem}; old container restored"

    def _finish(self, entry: int, old_id: str, options: ContainerOptions, name: str) -> None:
        old_image = (self._engine.inspect_container(old_id) or {}).get("Image")
        self._journal.record(entry, "removing-old")
        self._engine.remove(old_id)
        self._journal.finish(entry, Outcome.UPDATED)
        log.info("%s: updated", name)
        if "post-update" in options.hooks:
            self._hook(name, name, "post-update", options)
        if self._cleanup and old_image:
            self._remove_image(str(old_image))

    # --- the updater's own container -------------------------------------------------------

    def hand_over(self, candidate: Candidate,
                  stop_requested: Callable[[], bool]) -> ItemReport:
        """Replace the container this updater runs in: create and start the successor under the
        name (this one renamed `-updater-old`, still running), hand it the state lock, and wait.
        The successor's first act is to finish the journal entry: it stops and removes this
        container. If it does not take over in time, it is removed and this one keeps the name.
        """
        started = self._clock()
        container = candidate.container
        versions = Versions()
        try:
            if self._lock is None:
                raise EngineError("no state lock to hand over; run it with `updater run`")
            old = self._require(container.id)
            old_image = self._engine.inspect_image(str(old["Image"]))
            new_image = self._pull(candidate.reference, candidate.new_digest)
            versions = Versions.from_labels(_labels(old_image), _labels(new_image))
            plan = recreate.plan(old, old_image, new_image, str(old["Config"]["Image"]))
        except UpdaterError as exc:
            log.error("%s: self-update failed before anything changed: %s", container.name, exc)
            return ItemReport(container.name, container.image, Outcome.FAILED,
                              old_digest=candidate.old_digest, new_digest=candidate.new_digest,
                              reason=f"{exc}; this updater keeps running", versions=versions)
        entry = self._journal.begin(container.name, container.id, container.image,
                                    candidate.new_digest)
        try:
            outcome, reason = self._start_successor(entry, container.name, container.id, plan,
                                                    candidate.options, stop_requested)
        except UpdaterError as exc:
            outcome, reason = self._abort(entry, container.name, container.id, exc)
            self._take_lock_back()
        return ItemReport(container.name, container.image, outcome,
                          old_digest=candidate.old_digest, new_digest=candidate.new_digest,
                          reason=reason, seconds=self._clock() - started, versions=versions)

    def _start_successor(self, entry: int, name: str, own_id: str, plan: recreate.CreatePlan,
                         options: ContainerOptions,
                         stop_requested: Callable[[], bool]) -> tuple[Outcome, str | None]:
        assert self._lock is not None
        self._journal.record(entry, "creating")
        new_id = self._engine.create(plan.body, name + NEW_SUFFIX)
        self._journal.record(entry, "created", new_id)
        for network, endpoint in plan.extra_networks.items():
            self._engine.connect_network(network, new_id, endpoint)
        self._journal.record(entry, "renaming")
        self._engine.rename(own_id, name + OLD_SUFFIX)
        self._engine.rename(new_id, name)
        self._journal.record(entry, "renamed")
        self._journal.record(entry, "starting")
        self._engine.start(new_id)
        self._journal.record(entry, "started")
        problem = self._await_running(new_id)
        if problem is not None:
            raise EngineError(f"the successor {problem}")
        self._journal.record(entry, HANDING_OVER)
        log.info("%s: successor %s started; handing over the state lock", name, new_id[:12])
        self._lock.release()
        deadline = self._clock() + options.health_timeout + LOCK_TAKE_BACK
        while not stop_requested():
            state = self._journal.get(entry)
            if state is None or state.step == "finished":
                break
            running = (self._engine.inspect_container(new_id) or {}).get("State") or {}
            if not running.get("Running") or running.get("Restarting"):
                raise EngineError("the successor stopped before it took over")
            if self._clock() >= deadline:
                self._engine.remove(new_id, force=True)
                raise EngineError(f"the successor did not take over within "
                                  f"{options.health_timeout + LOCK_TAKE_BACK:g}s")
            self._sleep(POLL_SECONDS)
        log.info("%s: handed over to %s; this updater stops", name, new_id[:12])
        return Outcome.UPDATED, f"handed over to the new updater container {new_id[:12]}"

    def _await_running(self, container: str) -> str | None:
        """None once the container has run for STABLE_SECONDS (it waits for the state lock, so
        it cannot be healthy yet), else what is wrong."""
        deadline = self._clock() + STABLE_SECONDS
        while True:
            state = (self._engine.inspect_container(container) or {}).get("State") or {}
            if state.get("Restarting") or not state.get("Running"):
                return f"stopped with exit code {state.get('ExitCode')}"
            if self._clock() >= deadline:
                return None
            self._sleep(POLL_SECONDS)

    def _take_lock_back(self) -> None:
        if self._lock is not None and not self._lock.held:
            self._lock.acquire(LOCK_TAKE_BACK)

    def _take_over(self, entry: Entry) -> tuple[Outcome, str]:
        """Recovery of a self-update that reached the hand-over."""
        new = self._engine.inspect_container(entry.new_id) if entry.new_id else None
        new_running = bool(new and ((new.get("State") or {}).get("Running")))
        if self._own_id == entry.old_id or not new_running:
            # The predecessor itself restarted mid-hand-over, or the successor is gone.
            self._restore(entry.name, entry.old_id, entry.new_id)
            return Outcome.ROLLED_BACK, "undid an interrupted self-update"
        old = self._engine.inspect_container(entry.old_id)
        if old is not None:
            timeout = (old.get("Config") or {}).get("StopTimeout")
            self._engine.stop(entry.old_id, float(timeout if timeout is not None else 10))
            self._engine.remove(entry.old_id)
        return Outcome.UPDATED, "took over from the previous updater container"

    def rebuild(self, inspect: dict[str, Any], container_refs: dict[str, str],
                options: ContainerOptions) -> None:
        """Recreate a (stopped) dependant on its own image, e.g. to join the network namespace
        of a container that was just replaced; EngineError if it could not be done."""
        name, old_id = str(inspect["Name"]).lstrip("/"), str(inspect["Id"])
        image = self._engine.inspect_image(str(inspect["Image"]))
        plan = recreate.plan(inspect, image, image, str(inspect["Config"]["Image"]),
                             container_refs)
        entry = self._journal.begin(name, old_id, str(inspect["Config"]["Image"]),
                                    str(inspect["Image"]))
        try:
            outcome, reason = self._swap(entry, name, old_id, plan, replace(options, hooks={}))
        except UpdaterError as exc:
            outcome, reason = self._abort(entry, name, old_id, exc)
        if outcome is not Outcome.UPDATED:
            raise EngineError(f"could not recreate {name}: {reason}")

    # --- steps ------------------------------------------------------------------------------

    def _require(self, container: str) -> dict[str, Any]:
        found = self._engine.inspect_container(container)
        if found is None:
            raise NotFoundInEngine(f"container {container[:12]} disappeared before its update")
        return found

    def _pull(self, ref: Reference, digest: str) -> dict[str, Any]:
        credentials = self._credentials.lookup(ref.domain)
        auth = ({"username": credentials.username, "password": credentials.password}
                if credentials else None)
        repository = ref.repository if ref.domain != "docker.io" else ref.path
        image_id = self._engine.pull(repository, digest, auth)
        if ref.tag is not None:
            self._engine.tag(image_id, repository, ref.tag)
        return self._engine.inspect_image(image_id)

    def _await_healthy(self, container: str, timeout: float) -> str | None:
        """None once the container runs (healthy, if it has a healthcheck), else what's wrong."""
        deadline = self._clock() + timeout
        running_since: tuple[str, float] | None = None
        while True:
            state = (self._engine.inspect_container(container) or {}).get("State") or {}
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
        command = options.hooks[hook]
        with ThreadPoolExecutor(1) as pool:
            future = pool.submit(self._engine.exec, container, command)
            try:
                code, output = future.result(timeout=options.hook_timeout)
            except FutureTimeout:
                log.error("%s: %s hook did not finish within %gs", name, hook,
                          options.hook_timeout)
                return f"{hook} hook did not finish within {options.hook_timeout:g}s"
            except EngineError as exc:
                return f"{hook} hook could not run: {exc}"
        if code != 0:
            last = output.strip().splitlines()[-1:] or [""]
            log.warning("%s: %s hook exited %d: %s", name, hook, code, last[0][:200])
            return f"{hook} hook exited with code {code}"
        log.info("%s: %s hook ran", name, hook)
        return None

    def _remove_image(self, image: str) -> None:
        try:
            self._engine.remove_image(image)
            log.info("removed old image %s", image[:19])
        except EngineError as exc:
            log.info("kept old image %s: %s", image[:19], exc)

    # --- undo and recovery ----------------------------------------------------------------

    def _restore(self, name: str, old_id: str, new_id: str | None) -> None:
        """Remove the replacement (if any) and bring the old container back under its name,
        running."""
        for candidate in (new_id, name + NEW_SUFFIX):
            found = self._engine.inspect_container(candidate) if candidate else None
            if found is not None and found["Id"] != old_id:
                self._engine.remove(str(found["Id"]), force=True)
        old = self._require(old_id)
        if str(old["Name"]).lstrip("/") != name:
            self._engine.rename(old_id, name)
        if not (old.get("State") or {}).get("Running"):
            self._engine.start(old_id)
        log.info("%s: old container restored and running", name)

    def _finish_stop(self, container: str) -> None:
        """The updater died while the engine was stopping `container`: the stop may still be
        under way. Let it end (stop again and wait) so the restore does not find the container
        running, leave it, and see it exit a moment later."""
        found = self._engine.inspect_container(container)
        if found is None or not (found.get("State") or {}).get("Running"):
            return
        config = found.get("Config") or {}
        own = config.get("StopTimeout")
        try:
            timeout = policy.duration_label(config.get("Labels") or {}, "stop-timeout",
                                            float(own if own is not None else 10))
        except UpdaterError:
            timeout = float(own if own is not None else 10)
        log.info("%s: letting the interrupted stop finish (up to %.0fs)", container[:12], timeout)
        self._engine.stop(container, timeout)

    def recover(self) -> list[ItemReport]:
        """Finish or undo every update a previous updater left in flight."""
        reports = []
        for entry in self._journal.unfinished():
            reports.append(self._recover(entry))
        return reports

    def _recover(self, entry: Entry) -> ItemReport:
        try:
            if entry.step == HANDING_OVER or (entry.new_id and entry.new_id == self._own_id):
                outcome, reason = self._take_over(entry)
                self._journal.finish(entry.id, outcome)
                log.warning("%s: %s", entry.name, reason)
                return ItemReport(entry.name, entry.image, outcome, new_digest=entry.new_digest,
                                  reason=reason)
            if entry.step == "stopping":
                self._finish_stop(entry.old_id)
            if entry.step in _PROVEN:
                self._engine.remove(entry.old_id)
                self._journal.finish(entry.id, Outcome.UPDATED)
                reason = f"finished an update interrupted after step '{entry.step}'"
            else:
                self._restore(entry.name, entry.old_id, entry.new_id)
                self._journal.finish(entry.id, Outcome.ROLLED_BACK)
                reason = f"undid an update interrupted at step '{entry.step}'"
        except UpdaterError as exc:
            log.error("%s: could not recover the interrupted update: %s", entry.name, exc)
            return ItemReport(entry.name, entry.image, Outcome.ERROR, new_digest=entry.new_digest,
                              reason=f"recovery of an interrupted update failed: {exc}")
        log.warning("%s: %s", entry.name, reason)
        return ItemReport(entry.name, entry.image, Outcome.RECOVERED, new_digest=entry.new_digest,
                          reason=reason)


def _labels(image: dict[str, Any]) -> dict[str, str]:
    return dict((image.get("Config") or {}).get("Labels") or {})
