"""What push notifications name, and which items they concern: the distribution registry's
envelope (blob events and pulls ignored), Docker Hub's webhook, `{"image": ...}`, malformed
payloads refused with what is wrong."""

from __future__ import annotations

from typing import Any

import pytest

from updater.core.pushes import MAX_EVENTS, Push, Watched, concerned, pushes

MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def _event(action: str, media_type: str, tag: str | None = "latest",
           repository: str = "team/app") -> dict[str, Any]:
    target: dict[str, Any] = {"mediaType": media_type, "repository": repository,
                              "digest": "sha256:" + "a" * 64}
    if tag is not None:
        target["tag"] = tag
    return {"action": action, "target": target, "request": {"host": "127.0.0.1:5000"}}


def test_only_tagged_manifest_pushes_of_an_envelope_count() -> None:
    envelope = {"events": [
        _event("push", "application/octet-stream", tag=None),  # a layer
        _event("pull", "application/octet-stream", tag=None),
        _event("pull", MANIFEST),  # a pull of the manifest changes nothing
        _event("push", MANIFEST, tag=None),  # a push by digest: no tag moved
        _event("push", MANIFEST),
        _event("push", "application/vnd.oci.image.index.v1+json", tag="1.2", repository="x"),
    ]}
    assert pushes(envelope) == [Push("team/app", "latest"), Push("library/x", "1.2")]
    assert pushes({"events": [_event("push", "application/octet-stream", tag=None)]}) == []


def test_docker_hub_and_plain_image_payloads() -> None:
    hub = {"push_data": {"tag": "16.4", "pusher": "someone"},
           "repository": {"repo_name": "library/postgres", "namespace": "library"}}
    assert pushes(hub) == [Push("library/postgres", "16.4")]
    assert pushes({"image": "registry.example:5000/team/app:2"}) == [Push("team/app", "2")]
    assert pushes({"image": "nginx"}) == [Push("library/nginx", "latest")]


@pytest.mark.parametrize(("payload", "message"), [
    ([], "not a JSON object"),
    ({"what": 1}, "not a push notification"),
    ({"events": "x"}, "must be a list"),
    ({"events": [{"action": "push"}] * (MAX_EVENTS + 1)}, "at most"),
    ({"events": [{"action": "push"}]}, "no `target`"),
    ({"events": [_event("push", MANIFEST, repository="")]}, "target.repository"),
    ({"push_data": {"tag": "1"}}, "`push_data` and `repository`"),
    ({"image": "Bad/Name:1"}, "must be lowercase"),
    ({"image": "app@sha256:" + "a" * 64}, "names a digest"),
    ({"image": 5}, "`image` must be a non-empty text"),
])
def test_malformed_payloads_say_what_is_wrong(payload: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pushes(payload)


def test_a_push_concerns_items_on_its_repository_and_tag() -> None:
    items = [Watched("web", "127.0.0.1:5000/team/app:latest", False),
             Watched("web2", "other.registry/team/app", False),  # the host is not compared
             Watched("old", "127.0.0.1:5000/team/app:1", False),
             Watched("versions", "127.0.0.1:5000/team/app:1.0", True),
             Watched("db", "postgres:16", False),
             Watched("broken", "sha256:" + "b" * 64, False)]
    assert concerned([Push("team/app", "latest")], items) == ["versions", "web", "web2"]
    assert concerned([Push("library/postgres", "16"), Push("library/postgres", "16")],
                     items) == ["db"]
    assert concerned([], items) == []
