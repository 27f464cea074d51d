"""Running a command inside a container (the hooks): `sh -c`, its exit code and output, and
after a time limit the command and every process it started killed (the engine has no call to
end an exec, so a second exec does it, finding the process tree through /proc)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

import docker.errors
import requests.exceptions

from updater.errors import EngineError

Call = Callable[..., Any]  # the adapter's call: (what, function, *args, **kwargs)


# The hook's shell says its PID first (in the container's PID namespace) so it can be killed.
_PID_MARK = "updater-hook-pid="
_ANNOUNCE_PID = f'echo "{_PID_MARK}$$"\n'
# Kills a process and all its descendants, found through /proc with shell built-ins only.
_KILL_TREE = (
    'tree() { for s in /proc/[0-9]*/status; do p=${s#/proc/}; p=${p%/status}; '
    'while read -r k v; do if [ "$k" = PPid: ]; then [ "$v" = "$1" ] && tree "$p"; break; fi; '
    'done 2>/dev/null < "$s"; done; kill -KILL "$1" 2>/dev/null; }; tree "$0"')
EXEC_KILL_WAIT = 5.0


class ExecOutput:
    """The output of an exec, read on a thread: its PID once announced, the rest as text."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.pid: int | None = None
        self._chunks: list[bytes] = []
        self._lock = threading.Lock()

    def read(self, stream: Any) -> None:
        try:
            for chunk in stream:
                with self._lock:
                    self._chunks.append(chunk)
                    if self.pid is None:
                        self.pid = announced_pid(b"".join(self._chunks))
        except (docker.errors.DockerException, requests.exceptions.RequestException, OSError):
            pass  # the engine went away: the caller sees no exit code
        finally:
            self.done.set()

    def text(self) -> str:
        with self._lock:
            data = b"".join(self._chunks).decode("utf-8", "replace")
        first, _, rest = data.partition("\n")
        return rest if first.startswith(_PID_MARK) else data


def announced_pid(data: bytes) -> int | None:
    first, newline, _ = data.partition(b"\n")
    text = first.decode("ascii", "replace")
    if newline and text.startswith(_PID_MARK) and text[len(_PID_MARK):].isdigit():
        return int(text[len(_PID_MARK):])
    return None


def run_in(api: Any, call: Call, container: str, command: str,
           timeout: float) -> tuple[int | None, str]:
    """Run `sh -c command` inside the container; its exit code and output. After `timeout`
    seconds the command and every process it started are killed: the code is then None."""
    created = call(f"exec in {container}", api.exec_create, container,
                         ["sh", "-c", _ANNOUNCE_PID + command])
    run = ExecOutput()
    stream = call(f"exec in {container}", api.exec_start, created["Id"],
                        stream=True)
    threading.Thread(target=run.read, args=(stream,), daemon=True).start()
    if not run.done.wait(timeout):
        if run.pid is not None:
            with contextlib.suppress(EngineError):
                kill = call(f"exec in {container}", api.exec_create,
                                  container, ["sh", "-c", _KILL_TREE, str(run.pid)])
                call(f"exec in {container}", api.exec_start, kill["Id"])
        run.done.wait(EXEC_KILL_WAIT)
        return None, run.text()
    result = call(f"inspect exec in {container}", api.exec_inspect,
                        created["Id"])
    code = result.get("ExitCode")
    return (int(code) if code is not None else None), run.text()
