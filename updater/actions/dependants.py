"""The containers that depend on one being replaced: stopped just before it (each journalled,
so a killed updater starts it again), started again after it, the least dependent first, and
recreated when they were bound to the replaced container (its network namespace, or a link).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from updater.actions.steps import (
    OLD_SUFFIX,
    Dependant,
    EngineSteps,
    LostContainer,
    name_of,
    removed_when_stopped,
    saved_state,
)
from updater.core import order
from updater.core.policy import ContainerOptions
from updater.core.ports import ContainerEngine
from updater.core.report import ItemReport, Outcome
from updater.errors import UpdaterError
from updater.store.journal import DEPENDANT, Entry, Journal, Step

log = logging.getLogger(__name__)
# Recreates a stopped container on the image it runs: (inspect, container refs, options) -> ID.
Rebuild = Callable[[dict[str, Any], dict[str, str], ContainerOptions], str]


@dataclass(frozen=True, slots=True)
class Stopped:
    """A dependant the update stopped: its journal entry and what it was like before."""

    entry: int
    inspect: dict[str, Any]
    options: ContainerOptions


class Dependants(EngineSteps):
    """Stops and starts again the dependants of a container being replaced."""

    def __init__(self, engine: ContainerEngine, journal: Journal, clock: Callable[[], float],
                 sleep: Callable[[float], None], rebuild: Rebuild) -> None:
        super().__init__(engine, journal, clock, sleep)
        self._rebuild = rebuild

    def stop(self, dependant: Dependant, parent: str, stopped: list[Stopped]) -> None:
        """Stop a dependant, journalled first so a killed updater starts it again; one the
        engine deletes on stop is first copied (stopped) and the copy takes its name."""
        inspect, name = dependant.inspect, dependant.name
        entry = self._journal.begin(name, str(inspect["Id"]), str(inspect["Config"]["Image"]),
                                    "", saved_state(inspect), kind=DEPENDANT)
        stopped.append(Stopped(entry, inspect, dependant.options))
        removed_on_stop = removed_when_stopped(inspect)
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

    def bring_back(self, stopped: Sequence[Stopped], replaced: dict[str, str],
                   parent: str) -> list[ItemReport]:
        """Start the stopped dependants again, the least dependent first; a report for each
        that could not be."""
        items = []
        for dependant in reversed(stopped):
            state = self._journal.get(dependant.entry)
            assert state is not None
            try:
                self.bring_back_one(state, replaced, dependant.options, dependant.inspect)
                self._close(state.id, Outcome.UP_TO_DATE)
            except UpdaterError as exc:
                self._close(state.id, Outcome.FAILED)
                log.error("%s: stopped for the update of %s, could not be started again: %s",
                          state.name, parent, exc)
                items.append(ItemReport(state.name, state.image, Outcome.FAILED, reason=(
                    f"stopped for the update of {parent}; could not be started again: {exc}")))
        return items

    def bring_back_one(self, state: Entry, replaced: dict[str, str], options: ContainerOptions,
                       captured: dict[str, Any] | None = None) -> None:
        """Run a dependant again as it was; recreated (on the image it runs) when the
        container whose network namespace or link it used was replaced."""
        current = (self._present(state.name) or self._present(state.backup_id)
                   or self._present(state.old_id))
        if current is None:
            raise LostContainer(f"container {state.name} is gone")
        if (current.get("State") or {}).get("Running"):
            return
        if name_of(current) != state.name:
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
            new_id = self._rebuild(config, refs, options)
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
