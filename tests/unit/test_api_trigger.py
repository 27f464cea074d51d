"""Named triggers through the real API server: a name the daemon does not watch is refused
with 404 and nothing is queued; when the names cannot be checked, 503."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from updater.errors import EngineUnavailable, NotWatched
from updater.serve.api import ApiServer

TOKEN = "trigger-token-0123456789"
WATCHED = {"web", "db"}


class Control:
    def __init__(self) -> None:
        self.queued: list[tuple[str, ...]] = []
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
