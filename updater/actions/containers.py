"""Replacing one standalone container, in the safe order, with a journal and rollback.

Everything that can be decided is decided before anything is stopped: the new image is pulled,
the replacement created under a temporary name, the temporary names checked free, and for a
container the engine deletes when it stops (`--rm`) a restorable copy created. Then: pre-update
hook → the dependants stopped (each journalled) → graceful stop → rename old to
`<name>-updater-old`, new to `<name>` → start → wait until running (and healthy) → remove old,
post-update hook, the paused state put back, optional image cleanup → the dependants started
again (recreated where they were bound to a replaced container). Any failure before the new one
is proven restores the old one under its name, as it was. Each step is journalled before it is
taken; `recover()` finishes or undoes what a killed updater left.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from updater.actions import hooks
from updater.actions.swap import (
    LOCK_TAKE_BACK,
    SWAP_MARGIN,
    SWAP_OF,
    SWAP_SUFFIX,
    own_stop_timeout,
    pinned_addresses,
    stop_timeout_in,
    swap_helper,
)
from updater.core import order, policy
from updater.core.policy import ContainerOptions
from updater.core.reference import Reference
from updater.core.report import ItemReport, Outcome, Versions
from updater.core.snapshots import ContainerSnapshot
from updater.engine import recreate
from updater.engine.adapter import Engine, image_platform
from updater.errors import EngineError, EngineUnavailable, NotFoundInEngine, UpdaterError
from updater.registry.credentials import CredentialSource
from updater.store import journal
from updater.store.journal import Entry, Journal, StateLock, Step

log = logging.getLogger(__name__)
OLD_SUFFIX = "-updater-old"
NEW_SUFFIX = "-updater-new"
STABLE_SECONDS = 2.0
POLL_SECONDS = 0.25
# How long the engine may take to delete a `--rm` container after it stopped.
REMOVAL_WAIT = 30.0
# Steps after which the new container has been proven: recovery completes instead of undoing.
_PROVEN = frozenset({Step.VERIFIED, Step.REMOVING_OLD})
# Steps before the old container was stopped: a failure here leaves it as it was.
_UNTOUCHED = frozenset({Step.BEGIN, Step.CREATING, Step.CREATED, Step.BACKED_UP})


@dataclass(frozen=True, slots=True)
class Candidate:
    """A container with a newer image waiting in its registry."""

    container: ContainerSnapshot
    reference: Reference
    old_digest: str | None
    new_digest: str
    options: ContainerOptions


@dataclass(frozen=True, slots=True)
class Dependant:
    """A running container that must stop while the one it depends on is replaced."""

    inspect: dict[str, Any]
    options: ContainerOptions

    @property
    def name(self) -> str:
        return str(self.inspect["Name"]).lstrip("/")


@dataclass(frozen=True, slots=True)
class _Stopped:
    """A dependant the update stopped: its journal entry and what it was like before."""

    entry: int
    inspect: dict[str, Any]
    options: ContainerOptions


class LostContainer(EngineError):
    """The old container is gone and there is no copy to restore it from."""


def saved_state(inspect: dict[str, Any]) -> dict[str, Any]:
    """What a restore must put back on a container: its paused state and restart policy."""
    host = inspect.get("HostConfig") or {}
    return {"paused": bool((inspect.get("State") or {}).get("Paused")),
            "restart_policy": host.get("RestartPolicy") or None}


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
            new_image = self._pull(candidate.reference, candidate.new_digest, old, old_image)
            versions = Versions.from_labels(_labels(old_image), _labels(new_image))
            plan = self._plan(old, old_image, new_image)
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
        stopped: list[_Stopped] = []
        try:
            outcome, reason = self._swap(entry, old, plan, str(new_image["Id"]),
                                         candidate.options, dependants, stopped)
        except UpdaterError as exc:
            outcome, reason = self._abort(entry, exc)
        except Exception as exc:  # a bug, or a library failing in a new way: undo, go on
            log.exception("%s: unexpected error during the update", container.name)
            outcome, reason = self._abort(entry, EngineError(
                f"unexpected {type(exc).__name__}: {exc}"))
        replaced = {container.id: container.name} if outcome is Outcome.UPDATED else {}
        item = self._item(candidate, outcome, reason, started, versions)
        return [item, *self._bring_back(stopped, replaced, container.name)]

    def _item(self, candidate: Candidate, outcome: Outcome, reason: str | None,
              started: float, versions: Versions) -> ItemReport:
        return ItemReport(candidate.container.name, candidate.container.image, outcome,
                          old_digest=candidate.old_digest, new_digest=candidate.new_digest,
                          reason=reason, seconds=self._clock() - started, versions=versions)

    def _require_free_names(self, names: Sequence[str]) -> None:
        """The temporary names must be free: a rename onto a taken name after the stop would
        stop the container for nothing."""
        for name in names:
            for temporary in (name + OLD_SUFFIX, name + NEW_SUFFIX):
                found = self._engine.inspect_container(temporary)
                if found is not None:
                    raise EngineError(
                        f"the name {temporary} is taken by another container "
                        f"({str(found['Id'])[:12]}); rename or remove it so the update can "
                        "use it")

    def _swap(self, entry: int, old: dict[str, Any], plan: recreate.CreatePlan, image_id: str,
              options: ContainerOptions, dependants: Sequence[Dependant] = (),
              stopped: list[_Stopped] | None = None) -> tuple[Outcome, str | None]:
        name, old_id = _name(old), str(old["Id"])
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
        removed_on_stop = _removed_on_stop(old)
        if removed_on_stop:
            self._back_up(entry, old, name + OLD_SUFFIX)
        for dependant in dependants:
            self._stop_dependant(dependant, name, stopped if stopped is not None else [])
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

    def _plan(self, old: Mapping[str, Any], old_image: Mapping[str, Any],
              new_image: Mapping[str, Any],
              container_refs: Mapping[str, str] | None = None) -> recreate.CreatePlan:
        """The replacement's create plan for this engine (every network in the body where it
        takes them all, so secondary MAC addresses are kept), on the reference `old` runs."""
        return recreate.plan(old, old_image, new_image, str(old["Config"]["Image"]),
                             container_refs,
                             endpoints_at_create=self._engine.endpoints_at_create())

    def _connect(self, container: str, plan: recreate.CreatePlan) -> None:
        for network, endpoint in plan.extra_networks.items():
            self._engine.connect_network(network, container, endpoint)

    def _back_up(self, entry: int, old: dict[str, Any], name: str) -> None:
        """A stopped copy of a container the engine deletes when it stops (`--rm`), on the
        image it runs, to restore it from if the update fails."""
        image = self._engine.inspect_image(str(old["Image"]))
        copy = self._plan(old, image, image)
        backup_id = self._engine.create(copy.body, name, str(old["Image"]), copy.platform)
        self._journal.record_backup(entry, backup_id)
        self._connect(backup_id, copy)
        log.info("%s: it is removed when it stops (--rm); kept a copy as %s to restore from",
                 _name(old), name)

    def _stop(self, inspect: dict[str, Any], options: ContainerOptions) -> None:
        """Stop gracefully (a paused container is resumed first, so it can shut down); one
        removed on stop is waited for until the engine has deleted it."""
        container, name = str(inspect["Id"]), _name(inspect)
        state = inspect.get("State") or {}
        if state.get("Paused"):
            self._engine.unpause(container)
        log.info("%s: stopping (%s, %s)", name, options.stop_signal or "its stop signal",
                 _limit(options.stop_timeout))
        self._engine.stop(container, options.stop_timeout, options.stop_signal)
        if _removed_on_stop(inspect):
            self._await_removed(container)

    def _await_removed(self, container: str) -> None:
        deadline = self._clock() + REMOVAL_WAIT
        while self._engine.inspect_container(container) is not None:
            if self._clock() >= deadline:
                self._engine.remove(container, force=True)
                return
            self._sleep(POLL_SECONDS)

    def _abort(self, entry: int, error: UpdaterError) -> tuple[Outcome, str | None]:
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

    def _note(self, entry: int, step: Step) -> None:
        """Journal a step of an undo. The undo goes ahead even when the journal cannot be
        written (a full disk): putting the old container back is the safe act either way, and
        an entry left unfinished is undone again (harmlessly) by the next start."""
        try:
            self._journal.record(entry, step)
        except UpdaterError as exc:
            log.error("%s", exc)

    def _close(self, entry: int, outcome: str) -> None:
        try:
            self._journal.finish(entry, outcome)
        except UpdaterError as exc:
            log.error("%s", exc)

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
        old_image = (self._engine.inspect_container(state.old_id)
                     or self._engine.inspect_container(state.backup_id or "") or {}).get("Image")
        self._journal.record(entry, Step.REMOVING_OLD)
        self._remove_old(state)
        log.info("%s: updated", name)
        if "post-update" in options.hooks:
            self._hook(name, name, "post-update", options)
        if state.saved.get("paused"):
            self._pause(new_id, name)
        # Closed last: an updater killed before this finishes it at its start (paused again).
        self._close(state.id, Outcome.UPDATED)
        if self._cleanup and old_image:
            self._remove_image(str(old_image))

    def _remove_old(self, state: Entry) -> None:
        """The new container is proven: the old one (and its copy) go."""
        self._engine.remove(state.old_id)
        if state.backup_id:
            self._engine.remove(state.backup_id)

    def _pause(self, container: str, name: str) -> None:
        found = self._engine.inspect_container(container)
        if found is not None and (found.get("State") or {}).get("Paused"):
            return  # paused already (an updater killed after pausing it, before it said so)
        try:
            self._engine.pause(container)
            log.info("%s: paused again, as it was", name)
        except EngineError as exc:
            log.error("%s: could not pause it again: %s", name, exc)

    # --- dependants -------------------------------------------------------------------------

    def _stop_dependant(self, dependant: Dependant, parent: str,
                        stopped: list[_Stopped]) -> None:
        """Stop a dependant, journalled first so a killed updater starts it again; one the
        engine deletes on stop is first copied (stopped) and the copy takes its name."""
        inspect, name = dependant.inspect, dependant.name
        entry = self._journal.begin(name, str(inspect["Id"]), str(inspect["Config"]["Image"]),
                                    "", saved_state(inspect), kind=journal.DEPENDANT)
        stopped.append(_Stopped(entry, inspect, dependant.options))
        removed_on_stop = _removed_on_stop(inspect)
        if removed_on_stop:
            self._back_up(entry, inspect, name + OLD_SUFFIX)
        log.info("%s: stopping dependant %s first", parent, name)
        self._journal.record(entry, Step.STOPPING)
        self._stop(inspect, dependant.options)
        self._journal.record(entry, Step.STOPPED)
        if removed_on_stop:
            state = self._journal.get(entry)
            assert state is not None and state.backup_id is not None
            self._engine.rename(state.backup_id, name)

    def _bring_back(self, stopped: Sequence[_Stopped], replaced: dict[str, str],
                    parent: str) -> list[ItemReport]:
        """Start the stopped dependants again, the least dependent first; a report for each
        that could not be."""
        items = []
        for dependant in reversed(stopped):
            state = self._journal.get(dependant.entry)
            assert state is not None
            try:
                self._bring_back_one(state, replaced, dependant.options, dependant.inspect)
                self._close(state.id, Outcome.UP_TO_DATE)
            except UpdaterError as exc:
                self._close(state.id, Outcome.FAILED)
                log.error("%s: stopped for the update of %s, could not be started again: %s",
                          state.name, parent, exc)
                items.append(ItemReport(state.name, state.image, Outcome.FAILED, reason=(
                    f"stopped for the update of {parent}; could not be started again: {exc}")))
        return items

    def _bring_back_one(self, state: Entry, replaced: dict[str, str], options: ContainerOptions,
                        captured: dict[str, Any] | None = None) -> None:
        """Run a dependant again as it was; recreated (on the image it runs) when the
        container whose network namespace or link it used was replaced."""
        current = (self._present(state.name) or self._present(state.backup_id)
                   or self._present(state.old_id))
        if current is None:
            raise LostContainer(f"container {state.name} is gone")
        if (current.get("State") or {}).get("Running"):
            return
        if _name(current) != state.name:
            self._engine.rename(str(current["Id"]), state.name)
        self._put_back_restart_policy(current, state)
        # The configuration as it was before the stop (links to a removed container vanish
        # from inspect), the identity and state of the container there is now.
        config = dict(captured or current, Id=current["Id"], Name=current["Name"],
                      State=current.get("State") or {})
        refs = self._replaced_refs(config, replaced)
        if refs is None:
            self._engine.start(str(current["Id"]))
        else:
            new_id = self.rebuild(config, refs, options)
            replaced[str(current["Id"])] = state.name
            current = {"Id": new_id}
        if state.saved.get("paused"):
            self._pause(str(current["Id"]), state.name)
        log.info("%s: dependant started again", state.name)

    def _replaced_refs(self, inspect: dict[str, Any],
                       replaced: dict[str, str]) -> dict[str, str] | None:
        """For a container bound to one that was replaced (a namespace it joined, or a link):
        the old IDs to name instead; None when it is bound to nothing replaced."""
        node = order.Node.from_inspect(inspect)
        links = {link.split(":")[0].lstrip("/") for link in node.links}
        refs = dict(replaced) if links & set(replaced.values()) else {}
        for target in node.shares_namespaces_of:
            if target in replaced:
                refs[target] = replaced[target]
            elif target in replaced.values() or self._engine.inspect_container(target) is None:
                refs[target] = self._journal.name_of(target) or target
        return refs or None

    def _put_back_restart_policy(self, current: dict[str, Any], state: Entry) -> None:
        wanted = state.saved.get("restart_policy")
        found = (current.get("HostConfig") or {}).get("RestartPolicy")
        if wanted and found != wanted:
            self._engine.set_restart_policy(str(current["Id"]), dict(wanted))

    def rebuild(self, inspect: dict[str, Any], container_refs: dict[str, str],
                options: ContainerOptions) -> str:
        """Recreate a stopped container on the image it runs (never by its tag, which may have
        moved), with `network_mode: container:<id>` of replaced containers pointed at their
        names; the new ID, or EngineError if it could not be done."""
        name, old_id = _name(inspect), str(inspect["Id"])
        image_id = str(inspect["Image"])
        image = self._engine.inspect_image(image_id)
        plan = self._plan(inspect, image, image, container_refs)
        entry = self._journal.begin(name, old_id, str(inspect["Config"]["Image"]), image_id,
                                    saved_state(inspect))
        try:
            outcome, reason = self._swap(entry, inspect, plan, image_id, without_hooks(options))
        except UpdaterError as exc:
            outcome, reason = self._abort(entry, exc)
        if outcome is not Outcome.UPDATED:
            raise EngineError(f"could not recreate {name}: {reason}")
        found = self._require(name)
        return str(found["Id"])

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
            held = _host_ports(old)
            if held and _removed_on_stop(old):
                raise EngineError("it runs with --rm and publishes host ports: the swap helper "
                                  "must stop it first, and the engine would delete it, so it "
                                  "could not be put back if the new one failed; run it without "
                                  "--rm (a restart policy) or on the host network")
            old_image = self._engine.inspect_image(str(old["Image"]))
            new_image = self._pull(candidate.reference, candidate.new_digest, old, old_image)
            versions = Versions.from_labels(_labels(old_image), _labels(new_image))
            plan = self._plan(old, old_image, new_image)
            # A MAC or an address the successor is created with is this container's while it
            # runs: the successor could not start beside it (or would share a MAC with it).
            pinned = pinned_addresses(plan)
            if pinned and _removed_on_stop(old):
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
            outcome, reason = self._abort(entry, exc)
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

    def _take_over(self, entry: Entry) -> tuple[Outcome, str]:
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

    # --- steps ------------------------------------------------------------------------------

    def _require(self, container: str) -> dict[str, Any]:
        found = self._engine.inspect_container(container)
        if found is None:
            raise NotFoundInEngine(f"container {container[:12]} disappeared before its update")
        return found

    def _pull(self, ref: Reference, digest: str, old: Mapping[str, Any],
              old_image: Mapping[str, Any]) -> dict[str, Any]:
        """The new image, for the platform the old container runs: one run with `--platform`
        (an emulated architecture) keeps its platform."""
        platform = recreate.manifest_platform(old) or image_platform(old_image)
        credentials = self._credentials.lookup(ref.domain)
        auth = credentials.engine_auth(ref.domain) if credentials else None
        repository = ref.repository if ref.domain != "docker.io" else ref.path
        image_id = self._engine.pull(repository, digest, auth, platform)
        if ref.tag is not None:
            self._engine.tag(image_id, repository, ref.tag)
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

    # --- undo and recovery ----------------------------------------------------------------

    def _restore(self, state: Entry) -> None:
        """Remove the replacement (if any) and bring the old container back under its name, as
        it was (running, or paused); from its copy when the engine deleted it on stop.
        LostContainer when neither is there."""
        name, keep = state.name, {state.old_id, state.backup_id}
        old = self._present(state.old_id)
        backup = self._present(state.backup_id)
        if old is None and backup is None:
            # Never remove the replacement when there is nothing to put in its place.
            raise LostContainer(f"the old container {state.old_id[:12]} is gone (removed) and "
                                "no copy of it was kept; the new one, if any, was left as it is")
        for candidate in (state.new_id, name + NEW_SUFFIX):
            found = self._engine.inspect_container(candidate) if candidate else None
            if found is not None and found["Id"] not in keep:
                self._engine.remove(str(found["Id"]), force=True)
        helper = self._engine.inspect_container(name + SWAP_SUFFIX)
        if helper is not None and _labels(helper).get(SWAP_OF) == name:
            self._engine.remove(str(helper["Id"]), force=True)
        if old is None:
            assert backup is not None
            old = backup
            log.warning("%s: restoring from its copy (the engine removed it on stop)", name)
        elif backup is not None:
            self._engine.remove(str(backup["Id"]), force=True)
        old_id = str(old["Id"])
        if _name(old) != name:
            self._engine.rename(old_id, name)
        self._put_back_restart_policy(old, state)
        if not (old.get("State") or {}).get("Running"):
            self._engine.start(old_id)
        if state.saved.get("paused"):
            self._pause(old_id, name)
        log.info("%s: old container restored", name)

    def _present(self, container: str | None) -> dict[str, Any] | None:
        """The container, unless it is gone or going: a `--rm` container that stopped is being
        deleted by the engine (it cannot be started again), so it is waited out."""
        found = self._engine.inspect_container(container) if container else None
        if found is None or not _being_removed(found):
            return found
        self._await_removed(str(found["Id"]))
        return None

    def _finish_stop(self, container: str) -> None:
        """The updater died while the engine was stopping `container`: the stop may still be
        under way. Let it end (stop again and wait) so the restore does not find the container
        running, leave it, and see it exit a moment later."""
        found = self._engine.inspect_container(container)
        if found is None or not (found.get("State") or {}).get("Running"):
            return
        timeout = own_stop_timeout(found)
        labels = (found.get("Config") or {}).get("Labels") or {}
        with contextlib.suppress(UpdaterError):
            timeout = policy.duration_label(labels, "stop-timeout", timeout)
        log.info("%s: letting the interrupted stop finish (%s)", container[:12], _limit(timeout))
        self._engine.stop(container, timeout)

    def recover(self) -> list[ItemReport]:
        """Finish or undo every update a previous updater left in flight, then start again
        the dependants it had stopped (the least dependent first)."""
        entries = self._journal.unfinished()
        reports = [self._recover(entry) for entry in entries if entry.kind != journal.DEPENDANT]
        for entry in reversed([e for e in entries if e.kind == journal.DEPENDANT]):
            reports.append(self._recover_dependant(entry))
        return reports

    def _recover_dependant(self, entry: Entry) -> ItemReport:
        try:
            if entry.step == Step.STOPPING:
                self._finish_stop(entry.old_id)
            self._bring_back_one(entry, {}, RECOVERY_OPTIONS)
        except UpdaterError as exc:
            self._close(entry.id, Outcome.FAILED)
            log.error("%s: could not start again the dependant an interrupted update had "
                      "stopped: %s", entry.name, exc)
            return ItemReport(entry.name, entry.image, Outcome.FAILED, reason=(
                f"stopped by an interrupted update; could not be started again: {exc}"))
        self._close(entry.id, Outcome.UP_TO_DATE)
        reason = "started again after an interrupted update of what it depends on"
        log.warning("%s: %s", entry.name, reason)
        return ItemReport(entry.name, entry.image, Outcome.RECOVERED, reason=reason)

    def _without_old(self, entry: Entry, lost: LostContainer) -> ItemReport:
        """The old container of an interrupted update is gone (removed by hand, or by the
        engine): a new one running under the name is kept and the update counted done."""
        new = self._engine.inspect_container(entry.name)
        if new is not None and new["Id"] == entry.new_id and (new.get("State") or {}).get(
                "Running"):
            self._close(entry.id, Outcome.UPDATED)
            reason = "finished an interrupted update: the old container was gone, the new runs"
            log.warning("%s: %s", entry.name, reason)
            return ItemReport(entry.name, entry.image, Outcome.RECOVERED,
                              new_digest=entry.new_digest, reason=reason)
        self._close(entry.id, Outcome.FAILED)
        log.error("%s: could not recover the interrupted update: %s", entry.name, lost)
        return ItemReport(entry.name, entry.image, Outcome.ERROR, new_digest=entry.new_digest,
                          reason=f"recovery of an interrupted update failed: {lost}")

    def _recover(self, entry: Entry) -> ItemReport:
        try:
            if entry.step == Step.HANDING_OVER or (entry.new_id and entry.new_id == self._own_id):
                outcome, reason = self._take_over(entry)
                self._close(entry.id, outcome)
                log.warning("%s: %s", entry.name, reason)
                return ItemReport(entry.name, entry.image, outcome, new_digest=entry.new_digest,
                                  reason=reason)
            if entry.step == Step.STOPPING:
                self._finish_stop(entry.old_id)
            if entry.step in _PROVEN:
                self._remove_old(entry)
                if entry.saved.get("paused") and entry.new_id:
                    self._pause(entry.new_id, entry.name)
                self._close(entry.id, Outcome.UPDATED)
                reason = f"finished an update interrupted after step '{entry.step}'"
            else:
                self._restore(entry)
                self._close(entry.id, Outcome.ROLLED_BACK)
                reason = f"undid an update interrupted at step '{entry.step}'"
        except LostContainer as exc:
            return self._without_old(entry, exc)
        except EngineUnavailable as exc:  # kept: the next pass tries again
            log.error("%s: could not recover the interrupted update yet: %s", entry.name, exc)
            return ItemReport(entry.name, entry.image, Outcome.ERROR, new_digest=entry.new_digest,
                              reason=f"recovery of an interrupted update failed: {exc}; the "
                                     "next pass tries again")
        except UpdaterError as exc:
            # Closed, not tried again every pass: what is there now stays as it is.
            self._close(entry.id, Outcome.FAILED)
            log.error("%s: could not recover the interrupted update: %s; left as it is",
                      entry.name, exc)
            return ItemReport(entry.name, entry.image, Outcome.ERROR, new_digest=entry.new_digest,
                              reason=f"recovery of an interrupted update failed: {exc}; left "
                                     "as it is, check it by hand")
        log.warning("%s: %s", entry.name, reason)
        return ItemReport(entry.name, entry.image, Outcome.RECOVERED, new_digest=entry.new_digest,
                          reason=reason)


def without_hooks(options: ContainerOptions) -> ContainerOptions:
    return dataclasses.replace(options, hooks={})


# How a dependant left stopped by a killed updater is recreated: no settings are at hand then.
RECOVERY_OPTIONS = ContainerOptions(
    monitor_only=False, stop_signal=None, stop_timeout=policy.DEFAULT_STOP_TIMEOUT,
    health_timeout=60.0, rollback=True, hook_timeout=policy.DEFAULT_HOOK_TIMEOUT, hooks={},
    depends_on=())


def _labels(image: dict[str, Any]) -> dict[str, str]:
    return dict((image.get("Config") or {}).get("Labels") or {})


def _name(inspect: dict[str, Any]) -> str:
    return str(inspect["Name"]).lstrip("/")


def _removed_on_stop(inspect: dict[str, Any]) -> bool:
    """A running `--rm` container: the engine deletes it as soon as it stops."""
    running = bool((inspect.get("State") or {}).get("Running"))
    return running and bool((inspect.get("HostConfig") or {}).get("AutoRemove"))


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


def _limit(stop_timeout: float) -> str:
    return "no time limit" if stop_timeout < 0 else f"up to {stop_timeout:.0f}s"


def _being_removed(inspect: dict[str, Any]) -> bool:
    """A `--rm` container that ran and stopped: the engine is deleting it. (One only created,
    like a restorable copy, is not.)"""
    status = (inspect.get("State") or {}).get("Status")
    return bool((inspect.get("HostConfig") or {}).get("AutoRemove")) and status in (
        "exited", "dead", "removing")


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
