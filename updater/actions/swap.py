"""The swap helper of a self-update (`updater swap ENTRY`): a short-lived container of the new
image, started by an updater that publishes host ports. The engine will not start the
successor while the old updater holds those ports, so the helper stops the old one first,
starts the successor, and waits for it to take over (it finishes the journal entry). If it
does not — it exits, or takes too long — the helper removes it, gives the old updater its name
back and starts it again; the old updater's recovery then closes the entry as rolled back.
So the host is never left without an updater: one of the two always runs at the end.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from updater.actions.containers import LOCK_TAKE_BACK, SWAP_MARGIN, own_stop_timeout
from updater.engine.adapter import Engine
from updater.errors import EngineError, UpdaterError
from updater.store.journal import Journal, Step

log = logging.getLogger(__name__)
POLL_SECONDS = 0.5


def swap(engine: Engine, journal: Journal, entry_id: int, health_timeout: float,
         clock: Callable[[], float] = time.monotonic,
         sleep: Callable[[float], None] = time.sleep) -> int:
    """Carry out the hand-over journalled as `entry_id`; 0 when the successor took over, 1
    when the old updater was put back."""
    entry = journal.get(entry_id)
    if entry is None or entry.step != Step.HANDING_OVER or not entry.new_id:
        raise UpdaterError(f"no self-update waiting for a swap as journal entry {entry_id}")
    old = engine.inspect_container(entry.old_id)
    if old is None:
        raise UpdaterError(f"the updater container {entry.old_id[:12]} to swap is gone")
    log.info("%s: stopping the old updater %s", entry.name, entry.old_id[:12])
    engine.stop(entry.old_id, own_stop_timeout(old))
    try:
        log.info("%s: starting the successor %s", entry.name, entry.new_id[:12])
        engine.start(entry.new_id)
        problem = _await_take_over(engine, journal, entry_id, entry.new_id,
                                   health_timeout + LOCK_TAKE_BACK + SWAP_MARGIN, clock, sleep)
    except EngineError as exc:
        problem = str(exc)
    if problem is None:
        log.info("%s: the successor took over", entry.name)
        return 0
    log.error("%s: the successor %s; putting the old updater back", entry.name, problem)
    engine.remove(entry.new_id, force=True)
    if (engine.inspect_container(entry.name) or {}).get("Id") != entry.old_id:
        engine.rename(entry.old_id, entry.name)
    engine.start(entry.old_id)  # its recovery closes the entry (rolled back)
    return 1


def _await_take_over(engine: Engine, journal: Journal, entry_id: int, new_id: str,
                     timeout: float, clock: Callable[[], float],
                     sleep: Callable[[float], None]) -> str | None:
    """None once the successor finished the entry; else what went wrong."""
    deadline = clock() + timeout
    while True:
        entry = journal.get(entry_id)
        if entry is None or entry.step == Step.FINISHED:
            return None
        state = (engine.inspect_container(new_id) or {}).get("State") or {}
        if not state.get("Running") or state.get("Restarting"):
            return f"stopped with exit code {state.get('ExitCode')} before it took over"
        if clock() >= deadline:
            return f"did not take over within {timeout:g}s"
        sleep(POLL_SECONDS)
