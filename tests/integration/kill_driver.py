"""Runs one `updater update` pass that SIGKILLs itself right after the journal records a
given step: a real process dying at a known point of an update, for the crash-safety tests.

    python -m tests.integration.kill_driver STEP [NAME...]   (settings from UPDATER_* as usual)

STEP may be `STEP:N`: the Nth time any entry records it (a dependant's entry records the
same steps as the update's, before it).
"""

from __future__ import annotations

import os
import signal
import sys

from updater import config
from updater.app import Application
from updater.store.journal import Journal, Step


class KillingJournal(Journal):
    def __init__(self, state_dir: str, step: str) -> None:
        super().__init__(state_dir)
        self._step, _, count = step.partition(":")
        self._left = int(count or 1)

    def record(self, entry: int, step: Step, new_id: str | None = None) -> None:
        super().record(entry, step, new_id)
        if step == self._step:
            self._left -= 1
            if self._left == 0:
                os.kill(os.getpid(), signal.SIGKILL)


def main(argv: list[str]) -> int:
    step, names = argv[0], argv[1:]
    settings = config.load()
    with Application(settings, KillingJournal(settings.state_dir, step)) as app:
        app.run_pass(names)
    return 3  # the step was never reached


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
