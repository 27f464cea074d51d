"""Crash recovery: on its next start (and each pass) an updater finishes or undoes every update
a killed updater left in flight, from the journal, then starts again the dependants it had
stopped. An update past the proof of the new container is finished, one before it undone; a
self-update that reached the hand-over is taken over (or undone, when the successor is gone).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

from updater.actions.dependants import Dependants
from updater.actions.selfupdate import SelfUpdate
from updater.actions.steps import EngineSteps, LostContainer, stop_limit
from updater.actions.swap import own_stop_timeout
from updater.core import policy
from updater.core.policy import ContainerOptions
from updater.core.ports import ContainerEngine
from updater.core.report import ItemReport, Outcome
from updater.errors import EngineUnavailable, UpdaterError
from updater.store.journal import DEPENDANT, Entry, Journal, Step

log = logging.getLogger(__name__)
# Steps after which the new container has been proven: recovery completes instead of undoing.
_PROVEN = frozenset({Step.VERIFIED, Step.REMOVING_OLD})


class Recovery(EngineSteps):
    """Finishes or undoes what a killed updater left in flight."""

    def __init__(self, engine: ContainerEngine, journal: Journal, clock: Callable[[], float],
                 sleep: Callable[[float], None], dependants: Dependants,
                 self_update: SelfUpdate, own_id: str | None) -> None:
        super().__init__(engine, journal, clock, sleep)
        self._dependants = dependants
        self._self_update = self_update
        self._own_id = own_id

    def recover(self) -> list[ItemReport]:
        """Finish or undo every update a previous updater left in flight, then start again
        the dependants it had stopped (the least dependent first)."""
        entries = self._journal.unfinished()
        reports = [self._recover(entry) for entry in entries if entry.kind != DEPENDANT]
        for entry in reversed([e for e in entries if e.kind == DEPENDANT]):
            reports.append(self._recover_dependant(entry))
        return reports

    def _recover(self, entry: Entry) -> ItemReport:
        try:
            if entry.step == Step.HANDING_OVER or (entry.new_id and entry.new_id == self._own_id):
                outcome, reason = self._self_update.take_over(entry)
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

    def _recover_dependant(self, entry: Entry) -> ItemReport:
        try:
            if entry.step == Step.STOPPING:
                self._finish_stop(entry.old_id)
            self._dependants.bring_back_one(entry, {}, RECOVERY_OPTIONS)
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
        log.info("%s: letting the interrupted stop finish (%s)", container[:12],
                 stop_limit(timeout))
        self._engine.stop(container, timeout)


# How a dependant left stopped by a killed updater is recreated: no settings are at hand then.
RECOVERY_OPTIONS = ContainerOptions(
    monitor_only=False, stop_signal=None, stop_timeout=policy.DEFAULT_STOP_TIMEOUT,
    health_timeout=60.0, rollback=True, hook_timeout=policy.DEFAULT_HOOK_TIMEOUT, hooks={},
    depends_on=())
