"""The dashboard's logins: a session is a random ID (the cookie) with its own CSRF token and
an end; only hashes of the IDs are kept, in memory, at most MAX_SESSIONS (the oldest goes).
A restart of the updater logs everyone out."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

MAX_SESSIONS = 64
COOKIE = "updater_session"


@dataclass(frozen=True, slots=True)
class Session:
    csrf: str
    ends: float  # wall clock

    def csrf_matches(self, given: str | None) -> bool:
        """Constant time whatever is given."""
        return hmac.compare_digest(_hash(given or ""), _hash(self.csrf))


class Sessions:
    def __init__(self, lifetime: float, clock: Callable[[], float] = time.time) -> None:
        self.lifetime = lifetime
        self._clock = clock
        self._lock = threading.Lock()  # the API's threads
        self._sessions: dict[bytes, Session] = {}  # by the hash of the ID: insertion order

    def start(self) -> tuple[str, Session]:
        """A new session: its ID (for the cookie only) and the session."""
        session_id = secrets.token_urlsafe(32)
        session = Session(secrets.token_urlsafe(32), self._clock() + self.lifetime)
        with self._lock:
            self._drop_ended()
            while len(self._sessions) >= MAX_SESSIONS:
                del self._sessions[next(iter(self._sessions))]
            self._sessions[_hash(session_id)] = session
        return session_id, session

    def find(self, session_id: str | None) -> Session | None:
        """The live session of `session_id` (a cookie's value), else None."""
        if not session_id:
            return None
        with self._lock:
            session = self._sessions.get(_hash(session_id))
            if session is not None and session.ends <= self._clock():
                del self._sessions[_hash(session_id)]
                return None
        return session

    def end(self, session_id: str | None) -> None:
        with self._lock:
            self._sessions.pop(_hash(session_id or ""), None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def _drop_ended(self) -> None:
        now = self._clock()
        for key in [key for key, session in self._sessions.items() if session.ends <= now]:
            del self._sessions[key]


def _hash(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "replace")).digest()


def cookie_value(header: str | None) -> str | None:
    """The session cookie's value in a `Cookie` header, else None."""
    for part in (header or "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE and value:
            return value
    return None
