"""`POST /v1/hooks/registry`: a registry's push notification starts a pass for the items the
push concerns, so an update need not wait for the next interval.

It carries its own token (`webhook_token`: a registry holds it, not an operator), in the
`Authorization: Bearer` header or as `?token=` for registries that can only call a URL. The
body (at most MAX_BODY bytes, read within the request's deadline) is the distribution
registry's event envelope, Docker Hub's webhook or `{"image": "repo:tag"}` (`core.pushes`).
Pushes come in bursts (an image per tag, a CI job pushing ten): their items are gathered until
no push came for QUIET seconds (LONGEST at most after the first), then one pass runs for them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from updater.core.pushes import Push, pushes

log = logging.getLogger(__name__)
MAX_BODY = 1024 * 1024
QUIET = 2.0
LONGEST = 30.0


class Debounce:
    """Names handed in bursts go out as one call of `fire`, once none came for `quiet`
    seconds (or `longest` after the first of the burst). One waiting thread per burst."""

    def __init__(self, fire: Callable[[tuple[str, ...]], None], quiet: float = QUIET,
                 longest: float = LONGEST, clock: Callable[[], float] = time.monotonic) -> None:
        self._fire = fire
        self._quiet = quiet
        self._longest = longest
        self._clock = clock
        self._changed = threading.Condition()
        self._names: set[str] = set()
        self._first = self._last = 0.0
        self._waiting = False

    def add(self, names: Iterable[str]) -> None:
        with self._changed:
            self._names |= set(names)
            self._last = self._clock()
            if not self._waiting:
                self._waiting, self._first = True, self._last
                threading.Thread(target=self._wait, name="push-burst", daemon=True).start()
            self._changed.notify()

    def _wait(self) -> None:
        with self._changed:
            while (due := min(self._last + self._quiet, self._first + self._longest)) > (
                    now := self._clock()):
                self._changed.wait(due - now)
            names, self._names, self._waiting = tuple(sorted(self._names)), set(), False
        try:
            self._fire(names)
        except Exception:
            log.exception("push: the pass for %s could not be queued", ", ".join(names))


class PushHook:
    """Authorises and reads one notification; `concerned` names the items its pushes concern
    (EngineError when the engine cannot say), `debounce` gathers them for a pass."""

    def __init__(self, token: str, concerned: Callable[[list[Push]], list[str]],
                 debounce: Debounce) -> None:
        self._token = hashlib.sha256(token.encode()).digest()
        self._concerned = concerned
        self._debounce = debounce

    def authorized(self, header: str | None, query: dict[str, list[str]]) -> bool:
        """The Bearer header, else `?token=`; constant time whatever is given."""
        scheme, _, given = (header or "").partition(" ")
        if not header:
            scheme, given = "bearer", (query.get("token") or [""])[0]
        given_hash = hashlib.sha256(given.strip().encode("utf-8", "replace")).digest()
        return hmac.compare_digest(given_hash, self._token) and scheme.lower() == "bearer"

    def answer(self, header: Callable[[str], str | None], query: dict[str, list[str]],
               read: Callable[[int], bytes]) -> tuple[int, Any]:
        """The answer to `POST /v1/hooks/registry`: `header(name)` is a request header,
        `read(n)` reads n bytes of the body."""
        if not self.authorized(header("Authorization"), query):
            return 401, {"error": "missing or wrong webhook token"}
        length = body_length(header("Content-Length"))
        if isinstance(length, str):
            return (413 if "over" in length else 411), {"error": length}
        body = read(length)
        if len(body) < length:
            return 400, {"error": "the body ended before its Content-Length"}
        return self.handle(body)

    def handle(self, body: bytes) -> tuple[int, Any]:
        """The answer to an authorised notification whose body is `body`."""
        try:
            found = pushes(json.loads(body))
        except (ValueError, RecursionError) as exc:  # json's errors are ValueErrors
            return 400, {"error": f"not a push notification this updater reads: {exc}"[:300]}
        if not found:
            return 200, {"pushes": [], "names": []}  # blobs, pulls: nothing moved
        names = self._concerned(found)
        said = ", ".join(f"{p.path}:{p.tag}" for p in found[:5])
        if names:
            log.info("push of %s: a pass for %s in %gs unless more come", said,
                     ", ".join(names), QUIET)
            self._debounce.add(names)
        else:
            log.info("push of %s: no watched item runs it", said)
        return 202, {"pushes": [f"{p.path}:{p.tag}" for p in found], "names": names}


def body_length(header: str | None) -> int | str:
    """The body's length from `Content-Length`, or why it cannot be read."""
    text = (header or "").strip()
    if not (text.isascii() and text.isdigit()):  # '²'.isdigit(), but int('²') fails
        return "give the body's Content-Length"
    length = int(text)
    return length if length <= MAX_BODY else f"the body is over {MAX_BODY} bytes"
