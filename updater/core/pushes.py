"""What a push notification names (`POST /v1/hooks/registry`): the repositories and tags pushed,
read from the distribution registry's event envelope, Docker Hub's webhook or a plain
`{"image": "repo:tag"}`; and which watched items a push concerns. Pure: the API takes the
request, the app lists the items.

Only manifest pushes with a tag count: a registry posts an event for every blob of a push, and
for pulls, which change nothing. An item is concerned when its repository path is the one
pushed and, unless it follows version tags (a new tag of its repository is news to it), its
tag too. The registry host is not compared: a registry knows itself under the name the pusher
used, which need not be the one the engines pull from (a same-named repository on another
registry only costs a check).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from updater.core.reference import parse
from updater.errors import UpdaterError

MAX_EVENTS = 1000  # in one envelope; the distribution registry sends a handful
# Manifest media types: a push of one of these with a tag is a new image for that tag.
_MANIFESTS = ("manifest", "image.index")


@dataclass(frozen=True, slots=True)
class Push:
    path: str  # the repository as a reference names it past its registry: `library/nginx`
    tag: str


def pushes(payload: Any) -> list[Push]:
    """The tagged manifest pushes `payload` (parsed JSON) names; ValueError saying what is
    wrong with a payload that is none of the three kinds, or malformed."""
    if not isinstance(payload, dict):
        raise ValueError("the body is not a JSON object")
    if "events" in payload:
        return _envelope(payload["events"])
    if "push_data" in payload:
        return _docker_hub(payload)
    if "image" in payload:
        return [_image(payload["image"])]
    raise ValueError("not a push notification: expected `events` (distribution registry), "
                     "`push_data` (Docker Hub) or `image`")


def _envelope(events: Any) -> list[Push]:
    if not isinstance(events, list) or len(events) > MAX_EVENTS:
        raise ValueError(f"`events` must be a list of at most {MAX_EVENTS} events")
    found = []
    for event in events:
        target = event.get("target") if isinstance(event, dict) else None
        if not isinstance(target, dict):
            raise ValueError("an event has no `target` object")
        media_type = str(target.get("mediaType") or "")
        tag, repository = target.get("tag"), target.get("repository")
        if event.get("action") != "push" or not tag or not any(
                kind in media_type for kind in _MANIFESTS):
            continue  # a blob, a pull, a push by digest: no tag moved
        found.append(_image(f"{_text(repository, 'target.repository')}:{_text(tag, 'tag')}"))
    return found


def _docker_hub(payload: Mapping[str, Any]) -> list[Push]:
    push_data, repository = payload.get("push_data"), payload.get("repository")
    if not isinstance(push_data, dict) or not isinstance(repository, dict):
        raise ValueError("a Docker Hub webhook has `push_data` and `repository` objects")
    name = _text(repository.get("repo_name"), "repository.repo_name")
    return [_image(f"docker.io/{name}:{_text(push_data.get('tag'), 'push_data.tag')}")]


def _image(value: Any) -> Push:
    text = _text(value, "image")
    try:
        ref = parse(text)
    except UpdaterError as exc:
        raise ValueError(str(exc)) from None
    if ref.digest is not None or ref.tag is None:
        raise ValueError(f"image {text[:100]!r} names a digest; name the tag that was pushed")
    return Push(ref.path, ref.tag)


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > 512:
        raise ValueError(f"`{what}` must be a non-empty text")
    return value


@dataclass(frozen=True, slots=True)
class Watched:
    """A watched item as a push concerns it."""

    name: str
    image: str  # the reference it runs (`Config.Image`, a service's image)
    follows_versions: bool  # `updater.tags=semver`


def concerned(found: Iterable[Push], items: Iterable[Watched]) -> list[str]:
    """The names of the items the pushes concern, sorted, each once."""
    pushed = list(found)
    names = set()
    for item in items:
        try:
            ref = parse(item.image)
        except UpdaterError:
            continue  # an image ID or a broken name: no push concerns it
        if any(p.path == ref.path and (item.follows_versions or p.tag == ref.tag)
               for p in pushed):
            names.add(item.name)
    return sorted(names)
