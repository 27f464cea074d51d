"""Version tags (`updater.tags=semver`): which of a repository's tags a container or service on
a version tag moves to.

A tag is a version when it reads `[v]MAJOR[.MINOR[.PATCH]][-PRERELEASE|-SUFFIX]`. What follows
the first dash is a pre-release when it starts with a pre-release word (`rc1`, `beta.2`,
`alpha`, `pre`, `dev`...), else a suffix naming a variant (`alpine`, `slim-bookworm`); a
pre-release may carry a suffix after it (`2.0.0-rc1-alpine`). A candidate keeps the current
tag's `v`, suffix and precision (`1.25-alpine` moves to `1.27-alpine`, never to `1.27` or
`1.27.1-alpine`), is a pre-release only when the current tag is one, stays within the current
major or minor as asked, and fully matches `include` and none of `exclude`. The newest wins.

Versions are ordered by SemVer precedence (python-semver), with the letters and digits of a
pre-release split first so that `rc10` comes after `rc2`, as people mean it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from updater.core.policy import PREFIX, label
from updater.core.settings import Settings
from updater.errors import ConfigError

if TYPE_CHECKING:
    import semver

_VERSION = re.compile(r"(?P<v>v?)(?P<numbers>\d+(?:\.\d+){0,2})(?:-(?P<rest>[0-9A-Za-z.\-_]+))?")
_PRERELEASE = re.compile(r"(?:alpha|beta|rc|pre|preview|dev|snapshot|nightly|canary|a|b)"
                         r"(?:[._]?\d+)*", re.IGNORECASE)


class Within(StrEnum):
    MAJOR = "major"  # 1.4 -> 1.9, never 2.0
    MINOR = "minor"  # 1.4.1 -> 1.4.7, never 1.5.0
    NONE = "none"  # any newer version


class Mode(StrEnum):
    DIGEST = "digest"  # follow the digest behind the tag in use
    SEMVER = "semver"  # move to newer version tags


@dataclass(frozen=True, slots=True)
class TagPolicy:
    within: Within = Within.MAJOR
    include: re.Pattern[str] | None = None
    exclude: re.Pattern[str] | None = None


@dataclass(frozen=True, slots=True)
class Version:
    tag: str
    prefix: str  # "v" or ""
    numbers: tuple[int, ...]
    prerelease: str | None
    suffix: str | None

    @property
    def key(self) -> semver.Version:
        import semver  # loaded only where version tags are followed

        major, minor, patch = (*self.numbers, 0, 0)[:3]
        return semver.Version(major, minor, patch, prerelease=_dotted(self.prerelease))

    def same_kind(self, other: Version) -> bool:
        """The same `v`, suffix and precision: a tag `other` may move to."""
        return (self.prefix, self.suffix, len(self.numbers)) == \
            (other.prefix, other.suffix, len(other.numbers))


def tag_policy(labels: Mapping[str, str], settings: Settings) -> TagPolicy | None:
    """The version-tag rules of a container or service (`updater.tags`, else the `tags`
    setting), None when it follows its tag's digest; ConfigError naming a bad label."""
    mode = label(labels, "tags") or settings.tags
    if mode not in tuple(Mode):
        raise ConfigError(f"label {PREFIX}tags={mode!r} is not one of digest, semver; fix the "
                          "label")
    if mode == Mode.DIGEST:
        return None
    within = label(labels, "tags.within") or Within.MAJOR.value
    if within not in tuple(Within):
        raise ConfigError(f"label {PREFIX}tags.within={within!r} is not one of major, minor, "
                          "none; fix the label")
    return TagPolicy(Within(within), _pattern(labels, "tags.include"),
                     _pattern(labels, "tags.exclude"))


def _pattern(labels: Mapping[str, str], name: str) -> re.Pattern[str] | None:
    text = label(labels, name)
    if text is None:
        return None
    try:
        return re.compile(text)
    except re.error as exc:
        raise ConfigError(f"label {PREFIX}{name}={text!r} is not a regular expression ({exc}); "
                          "fix the label") from None


def parse(tag: str) -> Version | None:
    """The version a tag names, or None when it is not a version tag (`latest`, `stable`)."""
    match = _VERSION.fullmatch(tag)
    if match is None:
        return None
    numbers = tuple(int(part) for part in match["numbers"].split("."))
    rest = match["rest"]
    prerelease = suffix = None
    if rest:
        first, _, after = rest.partition("-")
        if _PRERELEASE.fullmatch(first):
            prerelease, suffix = first, after or None
        else:
            suffix = rest
    return Version(tag, match["v"], numbers, prerelease, suffix)


def newest(current: str, tags: Iterable[str], policy: TagPolicy) -> str | None:
    """The newest tag `current` may move to under `policy`; None when none is newer. A
    current tag that is no version is a ValueError naming it."""
    now = parse(current)
    if now is None:
        raise ValueError(f"tag {current!r} is not a version ([v]MAJOR[.MINOR[.PATCH]]"
                         "[-SUFFIX]); updater.tags=semver needs one, or set updater.tags=digest")
    best: Version | None = None
    for tag in tags:
        found = parse(tag)
        if found is None or not _allowed(now, found, policy):
            continue
        if best is None or found.key > best.key:
            best = found
    return best.tag if best is not None else None


def _allowed(now: Version, found: Version, policy: TagPolicy) -> bool:
    if not now.same_kind(found) or found.key <= now.key:
        return False
    if found.prerelease is not None and now.prerelease is None:
        return False
    if policy.within is Within.MAJOR and found.numbers[0] != now.numbers[0]:
        return False
    if policy.within is Within.MINOR and found.numbers[:2] != now.numbers[:2]:
        return False
    if policy.include is not None and not policy.include.fullmatch(found.tag):
        return False
    return policy.exclude is None or not policy.exclude.fullmatch(found.tag)


def _dotted(prerelease: str | None) -> str | None:
    """`rc10` -> `rc.10`: SemVer compares identifiers, so digits apart from letters order
    numerically (`rc.2` < `rc.10`, where `rc2` > `rc10`)."""
    if prerelease is None:
        return None
    parts = re.findall(r"[A-Za-z]+|\d+", prerelease)
    return ".".join(parts) or None


def retagged(image: str, tag: str) -> str:
    """`image` as the user wrote it (`reg:5000/app:1.2`, `nginx`) naming `tag` instead."""
    name = image.split("@", 1)[0]
    base, colon, old = name.rpartition(":")
    if colon and "/" not in old:
        name = base
    return f"{name}:{tag}"
