"""Registry authentication values: `WWW-Authenticate` challenges, credentials, the token cache.

Pure: no I/O here, so the parsing and expiry rules are tested directly.
"""

from __future__ import annotations

import base64
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"  # noqa: S105 - RFC 7230 token, not a password
_PARAM = re.compile(rf'\s*({_TOKEN})\s*=\s*(?:"((?:[^"\\]|\\.)*)"|({_TOKEN}))\s*')
_SCHEME = re.compile(rf"\s*({_TOKEN})(?=[\s,]|$)\s*")
DEFAULT_TOKEN_LIFETIME = 60.0


@dataclass(frozen=True, slots=True)
class Challenge:
    """One challenge of a `WWW-Authenticate` header, e.g. Bearer with realm/service/scope."""

    scheme: str
    params: dict[str, str] = field(default_factory=dict)

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")


@dataclass(frozen=True, slots=True)
class Credentials:
    """A username and password (or identity token) for one registry; never printed."""

    username: str
    password: str = field(repr=False)

    def basic_header(self) -> str:
        pair = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(pair).decode("ascii")


def parse_challenges(header: str) -> list[Challenge]:
    """All challenges in a `WWW-Authenticate` value (RFC 7235); unparsable parts are dropped.

    Scheme names are lower-cased; parameter names too; values are unquoted.
    """
    challenges: list[Challenge] = []
    position = 0
    while position < len(header):
        scheme = _SCHEME.match(header, position)
        if scheme is None:
            break
        params: dict[str, str] = {}
        position = scheme.end()
        while (param := _PARAM.match(header, position)) is not None:
            quoted, bare = param.group(2), param.group(3)
            value = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare
            params[param.group(1).lower()] = value
            position = param.end()
            if header.startswith(",", position):
                position += 1
        challenges.append(Challenge(scheme.group(1).lower(), params))
        position = _skip_separators(header, position)
    return challenges


def _skip_separators(header: str, position: int) -> int:
    while position < len(header) and header[position] in ", \t":
        position += 1
    return position


def preferred(challenges: list[Challenge]) -> Challenge | None:
    """Bearer when offered (it scopes access), else Basic, else None."""
    for scheme in ("bearer", "basic"):
        for challenge in challenges:
            if challenge.scheme == scheme:
                return challenge
    return None


@dataclass(frozen=True, slots=True)
class Token:
    value: str = field(repr=False)
    expires_at: float


class TokenCache:
    """Bearer tokens keyed by (realm, service, scope), kept until shortly before they expire."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, margin: float = 5.0) -> None:
        self._clock = clock
        self._margin = margin
        self._tokens: dict[tuple[str, str, str], Token] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str, str]) -> str | None:
        with self._lock:
            token = self._tokens.get(key)
            if token is None or token.expires_at - self._margin <= self._clock():
                self._tokens.pop(key, None)
                return None
            return token.value

    def put(self, key: tuple[str, str, str], value: str, expires_in: float | None) -> None:
        lifetime = expires_in if expires_in and expires_in > 0 else DEFAULT_TOKEN_LIFETIME
        with self._lock:
            self._tokens[key] = Token(value, self._clock() + lifetime)
