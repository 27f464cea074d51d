"""The engine steps the container procedures share (the replacement with rollback, the
self-update hand-over, the crash recovery), and the values they pass: what to update
(`Candidate`), what stops with it (`Dependant`) and the temporary names on the way. Restoring
the old container lives here too: an update undoes with it, and so do the hand-over and the
recovery.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from updater.actions.swap import SWAP_OF, SWAP_SUFFIX
from updater.core.policy import ContainerOptions
from updater.core.ports import ContainerEngine
from updater.core.reference import Reference, parse
from updater.core.report import ItemReport, Outcome, Versions
from updater.core.snapshots import ContainerSnapshot
from updater.core.tags import retagged
from updater.engine import recreate
from updater.errors import AlreadyExists, EngineError, NotFoundInEngine, UpdaterError
from updater.store.journal import Entry, Journal, Step

log = logging.getLogger(__name__)
OLD_SUFFIX = "-updater-old"
NEW_SUFFIX = "-updater-new"
STABLE_SECONDS = 2.0
POLL_SECONDS = 0.25
# How long the engine may take to delete a `--rm` container after it stopped.
REMOVAL_WAIT = 30.0


@dataclass(frozen=True, slots=True)
class Candidate:
    """A container with a newer image waiting in its registry; or, for an undo, the image
    it ran before (`kept`: that image's ID on this engine, used instead of a pull)."""

    container: ContainerSnapshot
    reference: Reference
    old_digest: str | None
    new_digest: str
    options: ContainerOptions
    kept: str | None = None


@dataclass(frozen=True, slots=True)
class Dependant:
    """A running container that must stop while the one it depends on is replaced."""

    inspect: dict[str, Any]
    options: ContainerOptions

    @property
    def name(self) -> str:
        return str(self.inspect["Name"]).lstrip("/")


class LostContainer(EngineError):
    """The old container is gone and there is no copy to restore it from."""


def saved_state(inspect: dict[str, Any]) -> dict[str, Any]:
    """What a restore must put back on a container: its paused state and restart policy."""
    host = inspect.get("HostConfig") or {}
    return {"paused": bool((inspect.get("State") or {}).get("Paused")),
            "restart_policy": host.get("RestartPolicy") or None}


class EngineSteps:
    """The steps on one engine, each journalled where it must be, that the procedures share."""

    def __init__(self, engine: ContainerEngine, journal: Journal, clock: Callable[[], float],
                 sleep: Callable[[float], None]) -> None:
        self._engine = engine
        self._journal = journal
        self._clock = clock
        self._sleep = sleep

    def _item(self, candidate: Candidate, outcome: Outcome, reason: str | None,
              started: float, versions: Versions) -> ItemReport:
        return ItemReport(candidate.container.name, candidate.container.image, outcome,
                          old_digest=candidate.old_digest, new_digest=candidate.new_digest,
                          reason=reason, seconds=self._clock() - started, versions=versions)

    def _require(self, container: str) -> dict[str, Any]:
        found = self._engine.inspect_container(container)
        if found is None:
            raise NotFoundInEngine(f"container {container[:12]} disappeared before its update")
        return found

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

    def _plan(self, old: Mapping[str, Any], old_image: Mapping[str, Any],
              new_image: Mapping[str, Any], container_refs: Mapping[str, str] | None = None,
              moved_to: Reference | None = None) -> recreate.CreatePlan:
        """The replacement's create plan for this engine (every network in the body where it
        takes them all, so secondary MAC addresses are kept), on the reference `old` runs, or
        on its image name with the newer version tag of `moved_to`."""
        return recreate.plan(old, old_image, new_image, image_name(old, moved_to),
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
                 name_of(old), name)

    def _stop(self, inspect: dict[str, Any], options: ContainerOptions) -> None:
        """Stop gracefully (a paused container is resumed first, so it can shut down); one
        removed on stop is waited for until the engine has deleted it."""
        container, name = str(inspect["Id"]), name_of(inspect)
        state = inspect.get("State") or {}
        if state.get("Paused"):
            self._engine.unpause(container)
        log.info("%s: stopping (%s, %s)", name, options.stop_signal or "its stop signal",
                 stop_limit(options.stop_timeout))
        self._engine.stop(container, options.stop_timeout, options.stop_signal)
        if removed_when_stopped(inspect):
            self._await_removed(container)

    def _await_removed(self, container: str) -> None:
        deadline = self._clock() + REMOVAL_WAIT
        while self._engine.inspect_container(container) is not None:
            if self._clock() >= deadline:
                self._engine.remove(container, force=True)
                return
            self._sleep(POLL_SECONDS)

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
                self._discard(found)
        helper = self._engine.inspect_container(name + SWAP_SUFFIX)
        if helper is not None and labels_of(helper).get(SWAP_OF) == name:
            self._engine.remove(str(helper["Id"]), force=True)
        if old is None:
            assert backup is not None
            old = backup
            log.warning("%s: restoring from its copy (the engine removed it on stop)", name)
        elif backup is not None:
            self._engine.remove(str(backup["Id"]), force=True)
        old_id = str(old["Id"])
        if name_of(old) != name:
            self._engine.rename(old_id, name)
        self._put_back_restart_policy(old, state)
        if not (old.get("State") or {}).get("Running"):
            self._engine.start(old_id)
        if state.saved.get("paused"):
            self._pause(old_id, name)
        log.info("%s: old container restored", name)

    def _discard(self, inspect: dict[str, Any]) -> None:
        """Remove a replacement; one the engine is deleting already (a `--rm` copy that
        exited: the engine answers 409 "removal already in progress") is waited out."""
        container = str(inspect["Id"])
        try:
            self._engine.remove(container, force=True)
        except AlreadyExists:
            self._await_removed(container)

    def _present(self, container: str | None) -> dict[str, Any] | None:
        """The container, unless it is gone or going: a `--rm` container that stopped is being
        deleted by the engine (it cannot be started again), so it is waited out."""
        found = self._engine.inspect_container(container) if container else None
        if found is None or not _being_removed(found):
            return found
        self._await_removed(str(found["Id"]))
        return None

    def _put_back_restart_policy(self, current: dict[str, Any], state: Entry) -> None:
        wanted = state.saved.get("restart_policy")
        found = (current.get("HostConfig") or {}).get("RestartPolicy")
        if wanted and found != wanted:
            self._engine.set_restart_policy(str(current["Id"]), dict(wanted))

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


def labels_of(image: dict[str, Any]) -> dict[str, str]:
    return dict((image.get("Config") or {}).get("Labels") or {})


def name_of(inspect: dict[str, Any]) -> str:
    return str(inspect["Name"]).lstrip("/")


def removed_when_stopped(inspect: dict[str, Any]) -> bool:
    """A running `--rm` container: the engine deletes it as soon as it stops."""
    running = bool((inspect.get("State") or {}).get("Running"))
    return running and bool((inspect.get("HostConfig") or {}).get("AutoRemove"))


def stop_limit(stop_timeout: float) -> str:
    return "no time limit" if stop_timeout < 0 else f"up to {stop_timeout:.0f}s"


def _being_removed(inspect: dict[str, Any]) -> bool:
    """A `--rm` container that ran and stopped: the engine is deleting it. (One only created,
    like a restorable copy, is not.)"""
    status = (inspect.get("State") or {}).get("Status")
    return bool((inspect.get("HostConfig") or {}).get("AutoRemove")) and status in (
        "exited", "dead", "removing")


def image_name(old: Mapping[str, Any], moved_to: Reference | None) -> str:
    """The replacement's `Config.Image`: the old one, as the user wrote it, naming the tag
    of `moved_to` where that is another (a move to a newer version tag)."""
    name = str(old["Config"]["Image"])
    if moved_to is None or moved_to.tag is None:
        return name
    try:
        if parse(name).tag == moved_to.tag:
            return name
    except UpdaterError:
        return name  # an image ID: nothing to rename
    return retagged(name, moved_to.tag)


def moved_versions(versions: Versions, old: Mapping[str, Any],
                   moved_to: Reference) -> Versions:
    """The versions of a move to a newer version tag: the tags, where the images' labels say
    none."""
    name = image_name(old, moved_to)
    if name == str(old["Config"]["Image"]):
        return versions
    old_tag = parse(str(old["Config"]["Image"])).tag
    return dataclasses.replace(versions, old=versions.old or old_tag,
                               new=versions.new or moved_to.tag)
