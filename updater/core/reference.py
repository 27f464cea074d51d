"""Docker image references: the grammar of distribution/reference and Docker's normalisation.

`parse("redis")` gives `docker.io/library/redis:latest`, the same name Docker itself would use,
so two ways of writing one image compare equal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from updater.errors import InvalidReference

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_NAMESPACE = "library"
NAME_TOTAL_LENGTH_MAX = 255

_ALPHA_NUMERIC = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALPHA_NUMERIC}(?:{_SEPARATOR}{_ALPHA_NUMERIC})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*"
_IPV6 = r"\[[a-fA-F0-9:]+\]"
_DOMAIN = rf"(?:{_DOMAIN_NAME}|{_IPV6})(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_NAME = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"

_REFERENCE = re.compile(rf"({_NAME})(?::({_TAG}))?(?:@({_DIGEST}))?", re.ASCII)
_IDENTIFIER = re.compile(r"[a-f0-9]{64}")
_DIGEST_HEX_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}


_HUB_HOSTS = frozenset({DEFAULT_DOMAIN, LEGACY_DEFAULT_DOMAIN, "registry-1.docker.io"})


def registry_host(key: str) -> str:
    """The registry a Docker config key or `registries` key names, as Docker reads such keys:
    scheme and path dropped (`https://host:5000/` is `host:5000`), lower case, and every Docker
    Hub spelling (`https://index.docker.io/v1/`) as `docker.io`, the domain of its references."""
    text = key.strip()
    scheme, separator, rest = text.partition("://")
    if separator and scheme.lower() in ("http", "https"):
        text = rest
    host = text.split("/", 1)[0].lower()
    return DEFAULT_DOMAIN if host in _HUB_HOSTS else host


def registry_key_path(key: str) -> str:
    """What follows the host in a registry key (`/v1/` of `https://index.docker.io/v1/`)."""
    text = key.strip()
    _, separator, rest = text.partition("://")
    text = rest if separator else text
    _, slash, path = text.partition("/")
    return slash + path


@dataclass(frozen=True, slots=True)
class Reference:
    """A fully normalised image reference."""

    domain: str
    path: str
    tag: str | None
    digest: str | None

    @property
    def repository(self) -> str:
        """`domain/path`: the name RepoDigests and registry scopes use."""
        return f"{self.domain}/{self.path}"

    @property
    def pinned(self) -> bool:
        """True when the reference names a digest, so its content can never change."""
        return self.digest is not None

    def __str__(self) -> str:
        text = self.repository
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text


def parse(text: str) -> Reference:
    """Parse and normalise `text` the way `docker pull` does; raise InvalidReference if invalid."""
    if not text:
        raise InvalidReference("invalid image reference '': it is empty")
    if _IDENTIFIER.fullmatch(text):
        raise InvalidReference(
            f"invalid image reference {text!r}: a 64-character hex string is an image ID, "
            "not a repository name"
        )
    domain, remainder = _split_domain(text)
    remote_name = remainder.split(":", 1)[0]
    if remote_name.lower() != remote_name:
        raise InvalidReference(
            f"invalid image reference {text!r}: the repository name must be lowercase"
        )
    match = _REFERENCE.fullmatch(f"{domain}/{remainder}")
    if match is None:
        raise InvalidReference(
            f"invalid image reference {text!r}: expected [host[:port]/]name[:tag][@digest]"
        )
    name, tag, digest = match.groups()
    if len(name) > NAME_TOTAL_LENGTH_MAX:
        raise InvalidReference(
            f"invalid image reference {text[:40]!r}...: the name is longer than "
            f"{NAME_TOTAL_LENGTH_MAX} characters"
        )
    if digest is not None:
        _check_digest(text, digest)
    if tag is None and digest is None:
        tag = "latest"
    return Reference(domain=domain, path=name[len(domain) + 1 :], tag=tag, digest=digest)


def _split_domain(text: str) -> tuple[str, str]:
    """Split off the registry host the way Docker decides what a first component is."""
    first, slash, rest = text.partition("/")
    is_domain = bool(slash) and (
        any(c in first for c in ".:") or first == "localhost" or first.lower() != first
    )
    domain, remainder = (first, rest) if is_domain else (DEFAULT_DOMAIN, text)
    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in remainder:
        remainder = f"{OFFICIAL_NAMESPACE}/{remainder}"
    return domain, remainder


def _check_digest(text: str, digest: str) -> None:
    algorithm, _, hex_part = digest.partition(":")
    expected = _DIGEST_HEX_LENGTHS.get(algorithm)
    if expected is None:
        raise InvalidReference(
            f"invalid image reference {text!r}: unsupported digest algorithm {algorithm!r} "
            "(use sha256, sha384 or sha512)"
        )
    if len(hex_part) != expected or hex_part.lower() != hex_part:
        raise InvalidReference(
            f"invalid image reference {text!r}: a {algorithm} digest has {expected} "
            "lowercase hex digits"
        )


def repository_of(text: str) -> str | None:
    """The normalised `domain/path` of a RepoDigests/RepoTags entry, or None if unparsable."""
    try:
        return parse(text).repository
    except InvalidReference:
        return None
