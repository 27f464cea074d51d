"""Lifecycle hooks: a shell command run inside a container at a point of the update, ended
(killed with everything it started) when it outlives its time limit."""

from __future__ import annotations

import logging
from typing import Protocol

from updater.errors import UpdaterError

log = logging.getLogger(__name__)


class Executor(Protocol):
    def exec(self, container: str, command: str, timeout: float) -> tuple[int | None, str]: ...


def run(engine: Executor, container: str, name: str, hook: str, command: str,
        timeout: float) -> str | None:
    """Run `command` in `container` (the one called `name`); None when it succeeded, else why
    not. It never takes much longer than `timeout`."""
    try:
        code, output = engine.exec(container, command, timeout)
    except UpdaterError as exc:
        log.warning("%s: %s hook could not run: %s", name, hook, exc)
        return f"{hook} hook could not run: {exc}"
    if code is None:
        log.error("%s: %s hook did not finish within %gs; it was ended", name, hook, timeout)
        return f"{hook} hook did not finish within {timeout:g}s (it was ended)"
    if code != 0:
        last = output.strip().splitlines()[-1:] or [""]
        log.warning("%s: %s hook exited %d: %s", name, hook, code, last[0][:200])
        return f"{hook} hook exited with code {code}"
    log.info("%s: %s hook ran", name, hook)
    return None
