"""The self-update: replacing the container this updater runs in. The successor is created
under the name (this container renamed `-updater-old`, still running) and handed the state lock;
its first act is to finish the journal entry, stopping and removing this container. An updater
that holds host ports or fixed addresses goes through the swap helper (`swap.py`) instead.
`take_over` is the successor's side, called by the recovery.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from updater.actions.replace import Replacement
from updater.actions.steps import (
    NEW_SUFFIX,
    OLD_SUFFIX,
    POLL_SECONDS,
    STABLE_SECONDS,
    Candidate,
    EngineSteps,
    labels_of,
    removed_when_stopped,
    saved_state,
)
from updater.actions.swap import (
    LOCK_TAKE_BACK,
    SWAP_MARGIN,
    SWAP_SUFFIX,
    own_stop_timeout,
    pinned_addresses,
    stop_timeout_in,
    swap_helper,
)
from updater.core.policy import ContainerOptions
from updater.core.ports import ContainerEngine
from updater.core.report import ItemReport, Outcome, Versions
from updater.engine import recreate
from updater.errors import EngineError, UpdaterError
from updater.store.journal import Entry, Journal, StateLock, Step

log = logging.getLogger(__name__)


class SelfUpdate(EngineSteps):
    """Hands this updater's container over to its successor, or takes over from a predecessor."""

    def __init__(self, engine: ContainerEngine, journal: Journal, clock: Callable[[], float],
                 sleep: Callable[[float], None], replacement: Replacement,
                 lock: StateLock | None, own_id: str | None) -> None:
        super().__init__(engine, journal, clock, sleep)
        self._replacement = replacement
        self._lock = lock
        self._own_id = own_id

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
            held = _host_ports(old)
            if held and removed_when_stopped(old):
                raise EngineError("it runs with --rm and publishes host ports: the swap helper "
                                  "must stop it first, and the engine would delete it, so it "
                                  "could not be put back if the new one failed; run it without "
                                  "--rm (a restart policy) or on the host network")
            old_image = self._engine.inspect_image(str(old["Image"]))
            new_image = self._replacement.pull(candidate.reference, candidate.new_digest, old,
                                               old_image)
            versions = Versions.from_labels(labels_of(old_image), labels_of(new_image))
            plan = self._plan(old, old_image, new_image, moved_to=candidate.reference)
            # A MAC or an address the successor is created with is this container's while it
            # runs: the successor could not start beside it (or would share a MAC with it).
            pinned = pinned_addresses(plan)
            if pinned and removed_when_stopped(old):
                raise EngineError(f"it runs with --rm and has fixed addresses "
                                  f"({', '.join(pinned)}): the swap helper must stop it "
                                  "first, and the engine would delete it, so it could not be "
                                  "put back if the new one failed; run it without --rm")
            held = held + pinned
            self._require_free_names([container.name])
            if held and self._engine.inspect_container(container.name + SWAP_SUFFIX):
                raise EngineError(f"the name {container.name + SWAP_SUFFIX} is taken; remove "
                                  "that container so the self-update can use it")
        except UpdaterError as exc:
            log.error("%s: self-update failed before anything changed: %s", container.name, exc)
            return self._item(candidate, Outcome.FAILED, f"{exc}; this updater keeps running",
                              started, versions)
        entry = self._journal.begin(container.name, container.id, container.image,
                                    candidate.new_digest, saved_state(old))
        try:
            if held:
                # The engine will not start a container binding the same host ports while this
                # one runs: a helper container stops this one first, then starts the successor.
                log.info("%s: it holds %s: a swap helper stops it, then starts the new one",
                         container.name, ", ".join(held))
                outcome, reason = self._swap_through_helper(
                    entry, container.name, container.id, plan, str(new_image["Id"]),
                    candidate.options, stop_requested)
            else:
                outcome, reason = self._start_successor(entry, container.name, container.id,
                                                        plan, str(new_image["Id"]),
                                                        candidate.options, stop_requested)
        except UpdaterError as exc:
            outcome, reason = self._replacement.abort(entry, exc)
            self._take_lock_back()
        return self._item(candidate, outcome, reason, started, versions)

    def _place_successor(self, entry: int, name: str, own_id: str, plan: recreate.CreatePlan,
                         image_id: str) -> str:
        """Create the successor (not started) and give it the name, this container renamed
        `-updater-old`; journalled step by step. Its ID."""
        self._journal.record(entry, Step.CREATING)
        new_id = self._engine.create(plan.body, name + NEW_SUFFIX, image_id, plan.platform)
        self._journal.record(entry, Step.CREATED, new_id)
        self._connect(new_id, plan)
        self._journal.record(entry, Step.RENAMING)
        self._engine.rename(own_id, name + OLD_SUFFIX)
        self._engine.rename(new_id, name)
        self._journal.record(entry, Step.RENAMED)
        return new_id

    def _start_successor(self, entry: int, name: str, own_id: str, plan: recreate.CreatePlan,
                         image_id: str, options: ContainerOptions,
                         stop_requested: Callable[[], bool]) -> tuple[Outcome, str | None]:
        assert self._lock is not None
        new_id = self._place_successor(entry, name, own_id, plan, image_id)
        self._journal.record(entry, Step.STARTING)
        self._engine.start(new_id)
        self._journal.record(entry, Step.STARTED)
        problem = self._await_running(new_id)
        if problem is not None:
            raise EngineError(f"the successor {problem}")
        self._journal.record(entry, Step.HANDING_OVER)
        log.info("%s: successor %s started; handing over the state lock", name, new_id[:12])
        self._lock.release()
        deadline = self._clock() + options.health_timeout + LOCK_TAKE_BACK
        while not stop_requested():
            state = self._journal.get(entry)
            if state is None or state.step == Step.FINISHED:
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

    def _swap_through_helper(self, entry: int, name: str, own_id: str,
                             plan: recreate.CreatePlan, image_id: str, options: ContainerOptions,
                             stop_requested: Callable[[], bool]) -> tuple[Outcome, str | None]:
        """Create the successor (not started) under the name, then start a short-lived helper
        container of the new image (`updater swap ENTRY`, the same mounts and environment) and
        let go of the state lock: the helper stops this container, starts the successor, and
        puts this one back if the successor does not take over. Here the wait ends when the
        helper stops this container (SIGTERM), or fails before it did."""
        assert self._lock is not None
        new_id = self._place_successor(entry, name, own_id, plan, image_id)
        helper_id = self._engine.create(swap_helper(plan, entry, name), name + SWAP_SUFFIX,
                                        image_id, plan.platform)
        self._journal.record(entry, Step.HANDING_OVER)
        self._lock.release()
        self._engine.start(helper_id)
        log.info("%s: swap helper %s started; it stops this container and starts %s", name,
                 helper_id[:12], new_id[:12])
        deadline = self._clock() + stop_timeout_in(plan.body) + options.health_timeout + \
            LOCK_TAKE_BACK + SWAP_MARGIN
        while not stop_requested():
            helper = self._engine.inspect_container(helper_id)
            if helper is None or not (helper.get("State") or {}).get("Running"):
                raise EngineError("the swap helper ended before it stopped this updater")
            if self._clock() >= deadline:
                self._engine.remove(helper_id, force=True)
                raise EngineError("the swap helper did not stop this updater in time")
            self._sleep(POLL_SECONDS)
        log.info("%s: stopped by the swap helper; the successor %s takes over", name,
                 new_id[:12])
        return Outcome.UPDATED, f"handed over to the new updater container {new_id[:12]} " \
                                "through a swap helper"

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

    def take_over(self, entry: Entry) -> tuple[Outcome, str]:
        """Recovery of a self-update that reached the hand-over."""
        new = self._engine.inspect_container(entry.new_id) if entry.new_id else None
        new_running = bool(new and ((new.get("State") or {}).get("Running")))
        if self._own_id == entry.old_id or not new_running:
            # The predecessor itself restarted mid-hand-over, or the successor is gone.
            self._restore(entry)
            return Outcome.ROLLED_BACK, "undid an interrupted self-update"
        old = self._engine.inspect_container(entry.old_id)
        if old is not None:
            self._engine.stop(entry.old_id, own_stop_timeout(old))
            self._engine.remove(entry.old_id)
        return Outcome.UPDATED, "took over from the previous updater container"


def _host_ports(container: Mapping[str, Any]) -> list[str]:
    """The host ports `container` publishes by number (`-p 8080:8080`): the engine will not
    start another container binding them while it runs. (Ports the engine picks are free.)"""
    bindings = (container.get("HostConfig") or {}).get("PortBindings") or {}
    held = []
    for port, binds in bindings.items():
        for bind in binds or ():
            host_port = str((bind or {}).get("HostPort") or "")
            if host_port not in ("", "0"):
                held.append(f"{host_port}->{port}")
    return sorted(set(held))
