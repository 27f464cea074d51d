"""Named triggers through the real API server: a name the daemon does not watch is refused
with 404 and nothing is queued; when the names cannot be checked, 503."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from updater.core.report import ItemReport, Outcome, PassReport, pending
from updater.errors import EngineUnavailable, NotWatched, UpdaterError
from updater.serve.api import ApiServer

TOKEN = "trigger-token-0123456789"
WATCHED = {"web", "db"}
WAITING_DIGEST = "sha256:" + "b" * 64
REPORT = PassReport(started=100.0, finished=160.0, items=[
    ItemReport("web", "reg/web:1", Outcome.WAITING, new_digest="sha256:b",
               reason="minimum age 3d: eligible at 2026-12-05 02:00:00 UTC",
               target="reg/web:1"),
    ItemReport("db", "reg/db:16", Outcome.UP_TO_DATE),
    ItemReport("api", "reg/api:2", Outcome.HELD_BACK, new_digest="sha256:c",
               reason="held back: this image was rolled back at 12:00")])


class Control:
    def __init__(self) -> None:
        self.queued: list[tuple[str, ...]] = []
        self.decided: list[tuple[str, str, str]] = []
        self.engine_down = False

    def trigger(self, names: tuple[str, ...] = ()) -> None:
        if self.engine_down:
            raise EngineUnavailable("Docker engine at unix:///x.sock is not reachable")
        missing = sorted(set(names) - WATCHED)
        if missing:
            raise NotWatched(f"no watched container or service named {', '.join(missing)}")
        self.queued.append(names)

    def status(self) -> dict[str, Any]:
        return {}

    def history(self, name: str | None, limit: int) -> list[dict[str, Any]]:
        return []

    def metrics(self) -> bytes:
        return b""

    def pending(self) -> dict[str, Any]:
        return pending(REPORT)

    def decide(self, name: str, digest: str | None, decision: str) -> str:
        if name not in WATCHED:
            raise NotWatched(f"no watched container or service named {name}")
        if digest is not None and not digest.startswith("sha256:"):
            raise UpdaterError(f"--digest {digest!r} is not a digest")
        self.decided.append((name, digest or WAITING_DIGEST, decision))
        return digest or WAITING_DIGEST

    def rollback(self, name: str) -> str:
        if name not in WATCHED:
            raise NotWatched(f"no watched container or service named {name}")
        if name == "db":
            raise UpdaterError("nothing to roll back for db: no update of it is recorded")
        self.queued.append(("rollback", name))
        return "reg/web:1"


@pytest.fixture
def api() -> Iterator[tuple[httpx.Client, Control]]:
    control = Control()
    server = ApiServer("127.0.0.1:0", TOKEN, control).start()
    with httpx.Client(base_url=f"http://127.0.0.1:{server.port}",
                      headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        yield client, control
    server.stop()


def test_unwatched_name_is_404_and_queues_nothing(api: tuple[httpx.Client, Control]) -> None:
    """A bogus name among good ones: 404 naming it; no pass queued."""
    client, control = api
    answer = client.post("/v1/update", params=[("name", "web"), ("name", "bogus")])
    assert answer.status_code == 404 and "bogus" in answer.json()["error"]
    assert control.queued == []
    assert client.post("/v1/update", params={"name": "web"}).status_code == 202
    assert control.queued == [("web",)]


def test_names_that_cannot_be_checked_are_503(api: tuple[httpx.Client, Control]) -> None:
    """With the engine unreachable a named trigger is 503 with the reason, not queued."""
    client, control = api
    control.engine_down = True
    answer = client.post("/v1/update", params={"name": "web"})
    assert answer.status_code == 503 and "not reachable" in answer.json()["error"]


def test_empty_name_is_400(api: tuple[httpx.Client, Control]) -> None:
    """A malformed name list is a 400 before anything is looked up."""
    client, control = api
    assert client.post("/v1/update", params={"name": ""}).status_code == 400
    assert control.queued == []


def test_pending_lists_what_the_last_pass_left_waiting(api: tuple[httpx.Client, Control]) -> None:
    client, _ = api
    answer = client.get("/v1/pending")
    assert answer.status_code == 200
    assert answer.json() == {"as_of": 160.0, "items": [
        {"name": "api", "kind": "container", "image": "reg/api:2", "target": None,
         "digest": "sha256:c", "outcome": "held-back",
         "why": "held back: this image was rolled back at 12:00"},
        {"name": "web", "kind": "container", "image": "reg/web:1", "target": "reg/web:1",
         "digest": "sha256:b", "outcome": "waiting",
         "why": "minimum age 3d: eligible at 2026-12-05 02:00:00 UTC"}]}
    assert httpx.get(f"{client.base_url}/v1/pending").status_code == 401  # no token


def test_approve_and_skip(api: tuple[httpx.Client, Control]) -> None:
    """An approval of what `web` waits for now, or of a named digest; a skip names its digest;
    an unknown name is 404, a bad digest 400; nothing is decided without the token."""
    client, control = api
    answer = client.post("/v1/approve", params={"name": "web"})
    assert (answer.status_code, answer.json()) == (200, {
        "name": "web", "digest": WAITING_DIGEST, "decision": "approved"})
    digest = "sha256:" + "c" * 64
    assert client.post("/v1/skip", params={"name": "db", "digest": digest}).status_code == 200
    assert client.post("/v1/skip", params={"name": "db"}).status_code == 400
    assert client.post("/v1/approve", params={"name": "nope"}).status_code == 404
    assert client.post("/v1/approve", params={"name": "web", "digest": "x"}).status_code == 400
    assert client.post("/v1/approve", params=[("name", "web"), ("name", "db")]).status_code == 400
    assert httpx.post(f"{client.base_url}/v1/approve",
                      params={"name": "web"}).status_code == 401
    assert control.decided == [("web", WAITING_DIGEST, "approved"), ("db", digest, "skipped")]


def test_rollback_is_queued_or_refused(api: tuple[httpx.Client, Control]) -> None:
    """A rollback is queued (202, naming the image it goes back to); nothing to go back to is
    409, an unknown name 404, a missing name 400, no token 401: nothing queued for those."""
    client, control = api
    answer = client.post("/v1/rollback", params={"name": "web"})
    assert (answer.status_code, answer.json()) == (202, {"queued": True, "name": "web",
                                                         "to": "reg/web:1"})
    assert client.post("/v1/rollback", params={"name": "db"}).status_code == 409
    assert client.post("/v1/rollback", params={"name": "bogus"}).status_code == 404
    assert client.post("/v1/rollback").status_code == 400
    assert httpx.post(f"{client.base_url}/v1/rollback?name=web").status_code == 401
    assert control.queued == [("rollback", "web")]
