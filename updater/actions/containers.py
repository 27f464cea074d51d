"""The standalone containers of one engine, updated: `ContainerUpdater` is the one object the
update pass uses, made of the three procedures, each in its own module — the replacement with
rollback (`replace.py`, its dependants in `dependants.py`), the self-update hand-over
(`selfupdate.py`, with the swap helper in `swap.py`) and the crash recovery (`recovery.py`),
on the engine steps they share (`steps.py`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from updater.actions.recovery import Recovery
from updater.actions.replace import Replacement
from updater.actions.selfupdate import SelfUpdate
from updater.actions.steps import Candidate, Dependant
from updater.core.ports import ContainerEngine
from updater.core.report import ItemReport
from updater.registry.credentials import CredentialSource
from updater.store.journal import Journal, StateLock
from updater.store.kept import KeptImages


class ContainerUpdater:
    """Updates standalone containers on one engine."""

    def __init__(self, engine: ContainerEngine, journal: Journal, credentials: CredentialSource,
                 cleanup: bool = False, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, own_id: str | None = None,
                 lock: StateLock | None = None, kept: KeptImages | None = None) -> None:
        self._journal = journal
        self._replacement = Replacement(engine, journal, credentials, cleanup, clock, sleep,
                                        kept)
        self._self_update = SelfUpdate(engine, journal, clock, sleep, self._replacement, lock,
                                       own_id)
        self._recovery = Recovery(engine, journal, clock, sleep, self._replacement.dependants,
                                  self._self_update, own_id)

    def rolled_back(self, name: str, digest: str) -> float | None:
        """When updating `name` to `digest` failed and was rolled back, if it was."""
        return self._journal.rolled_back(name, digest)

    def update(self, candidate: Candidate,
               dependants: Sequence[Dependant] = ()) -> list[ItemReport]:
        """Update one container; `dependants` (running, the most dependent first) are stopped
        just before it and started again after. The candidate's report comes first, then one
        for each dependant that could not be brought back."""
        return self._replacement.update(candidate, dependants)

    def hand_over(self, candidate: Candidate,
                  stop_requested: Callable[[], bool]) -> ItemReport:
        """Replace the container this updater runs in (see `SelfUpdate.hand_over`)."""
        return self._self_update.hand_over(candidate, stop_requested)

    def recover(self) -> list[ItemReport]:
        """Finish or undo every update a previous updater left in flight, then start again
        the dependants it had stopped (the least dependent first)."""
        return self._recovery.recover()
