"""Registry authentication values: `WWW-Authenticate` challenges, credentials, the token cache.

Pure: no I/O here, so the parsing and expiry rules are tested directly.
"""

from __future__ import annotations

import base64
import hashlib
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
    """A username and password for one registry, or the identity token `docker login` keeps
    for a registry whose token server speaks OAuth2 (a refresh token); never printed."""

    username: str
    password: str = field(repr=False)
    identity_token: str | None = field(default=None, repr=False)

    def basic_header(self) -> str:
        pair = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(pair).decode("ascii")

    @property
    def who(self) -> str:
        """How errors name these credentials: the user, or the identity token's owner."""
        if self.identity_token:
            return f"the identity token of {self.username!r}" if self.username else \
                "the identity token from docker login"
        return f"user {self.username!r}"

    def identity(self) -> str:
        """A fingerprint of these credentials (not reversible), so that what was obtained with
        them is never used with others."""
        material = "\0".join([self.username, self.password, self.identity_token or ""])
        return hashlib.sha256(material.encode()).hexdigest()[:32]

    def engine_auth(self, server: str) -> dict[str, str]:
        """The engine's AuthConfig (sent as X-Registry-Auth) for a pull from `server`."""
        if self.identity_token:
            auth = {"identitytoken": self.identity_token, "serveraddress": server}
            return {"username": self.username, **auth} if self.username else auth
        return {"username": self.username, "password": self.password, "serveraddress": server}


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


TokenKey = tuple[str, ...]


def token_key(host: str, credentials: Credentials | None, realm: str, service: str,
              scope: str) -> TokenKey:
    """What a token is filed under: the registry it was obtained for and with which
    credentials, besides what it grants, so a token reaches no other registry and serves no
    other user (two registries may name the same realm and service)."""
    return (host, credentials.identity() if credentials else "", realm, service, scope)


class TokenCache:
    """Bearer tokens by `token_key`, kept until shortly before they expire."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, margin: float = 5.0) -> None:
        self._clock = clock
        self._margin = margin
        self._tokens: dict[TokenKey, Token] = {}
        self._lock = threading.Lock()

    def get(self, key: TokenKey) -> str | None:
        with self._lock:
            token = self._tokens.get(key)
            if token is None or token.expires_at - self._margin <= self._clock():
                self._tokens.pop(key, None)
                return None
            return token.value

    def put(self, key: TokenKey, value: str, expires_in: float | None) -> None:
        lifetime = expires_in if expires_in and expires_in > 0 else DEFAULT_TOKEN_LIFETIME
        now = self._clock()
        with self._lock:
            # Tokens of credentials since rotated are never asked for again: dropped here.
            for stale in [k for k, token in self._tokens.items() if token.expires_at <= now]:
                del self._tokens[stale]
            self._tokens[key] = Token(value, now + lifetime)

    def __len__(self) -> int:
        with self._lock:
            return len(self._tokens)
