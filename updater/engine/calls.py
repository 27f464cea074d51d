"""Calls to the engine with its failures translated: NotFoundInEngine (404), AlreadyExists
(409), EngineError (any other refusal), EngineUnavailable (the engine cannot be reached), each
naming the engine and what it failed to do, never a URL or a message with secrets."""

from __future__ import annotations

from typing import Any

import docker.errors
import requests
import requests.exceptions

from updater.errors import AlreadyExists, EngineError, EngineUnavailable, NotFoundInEngine


def call(host: str, what: str, function: Any, *args: Any, **kwargs: Any) -> Any:
    """`function(*args, **kwargs)`, an SDK call to the engine at `host` that does `what`."""
    try:
        return function(*args, **kwargs)
    except docker.errors.NotFound as exc:
        raise NotFoundInEngine(f"Docker engine at {host} failed to {what}: "
                               f"{exc.explanation or exc}") from None
    except docker.errors.APIError as exc:
        kind = AlreadyExists if exc.status_code == 409 else EngineError
        raise kind(f"Docker engine at {host} failed to {what}: "
                   f"{exc.explanation or exc}") from None
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise EngineUnavailable(f"lost the Docker engine at {host} while trying to "
                                f"{what} ({reason(exc)})") from None


def message(response: requests.Response) -> str:
    try:
        return str(response.json().get("message", ""))
    except ValueError:
        return response.text[:200]


_CAUSES: tuple[tuple[type[BaseException], str], ...] = (
    (FileNotFoundError, "no socket there"),
    (ConnectionRefusedError, "connection refused"),
    (PermissionError, "permission denied on the socket"),
    (TimeoutError, "timed out"),
)


def reason(exc: BaseException) -> str:
    """A short cause from the exception chain, by type; never a URL or a message with secrets."""
    for inner in _chain(exc):
        for kind, text in _CAUSES:
            if isinstance(inner, kind):
                return text
    return type(exc).__name__


def _chain(exc: BaseException) -> list[BaseException]:
    """`exc` and what caused it, including errors urllib3 carries in its args."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain and len(chain) < 10:
        chain.append(current)
        nested = [a for a in current.args if isinstance(a, BaseException)]
        reason = getattr(current, "reason", None)
        current = current.__cause__ or current.__context__ or (
            reason if isinstance(reason, BaseException) else nested[0] if nested else None)
    return chain
