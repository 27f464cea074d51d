"""`POST /v1/hooks/registry` through the real API server: its own token (header or `?token=`),
the body read within bounds, malformed payloads refused, blob events and pulls ignored, and a
burst of pushes gathered into one pass (the debounce) for the items they concern."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.unit.test_api_trigger import Control
from updater.core.pushes import Push
from updater.errors import EngineUnavailable
from updater.serve.api import ApiServer
from updater.serve.hooks import MAX_BODY, Debounce, PushHook

API_TOKEN, HOOK_TOKEN = "api-token-0123456789", "hook-token-9876543210"
MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def _envelope(*events: tuple[str, str, str | None]) -> dict[str, Any]:
    return {"events": [{"action": action, "target": {
        "mediaType": media_type, "repository": "team/web", "tag": tag,
        "digest": "sha256:" + "a" * 64}} for action, media_type, tag in events]}


class Fired:
    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.done = threading.Event()

    def __call__(self, names: tuple[str, ...]) -> None:
        self.calls.append(names)
        self.done.set()


BROKEN = {"down": False}


@pytest.fixture
def hooked() -> Iterator[tuple[str, Fired, list[list[Push]]]]:
    fired, asked = Fired(), []
    broken = BROKEN
    broken["down"] = False

    def concerned(found: list[Push]) -> list[str]:
        if broken["down"]:
            raise EngineUnavailable("Docker engine at unix:///x.sock is not reachable")
        asked.append(found)
        return ["web"] if any(p.path == "team/web" for p in found) else []

    hook = PushHook(HOOK_TOKEN, concerned, Debounce(fired, quiet=0.3, longest=5))
    server = ApiServer("127.0.0.1:0", API_TOKEN, Control(), hook).start()
    yield f"http://127.0.0.1:{server.port}/v1/hooks/registry", fired, asked
    server.stop()


def test_a_push_queues_one_pass_for_the_items_it_concerns(
        hooked: tuple[str, Fired, list[list[Push]]]) -> None:
    url, fired, asked = hooked
    answer = httpx.post(url, json=_envelope(("push", MANIFEST, "latest")),
                        headers={"Authorization": f"Bearer {HOOK_TOKEN}"})
    assert (answer.status_code, answer.json()) == (202, {"pushes": ["team/web:latest"],
                                                         "names": ["web"]})
    assert fired.done.wait(5) and fired.calls == [("web",)]
    # `?token=` for registries that can only call a URL; a push of another repository
    # concerns nothing and queues nothing.
    other = httpx.post(url, params={"token": HOOK_TOKEN}, json={"image": "other/app:1"})
    assert (other.status_code, other.json()["names"]) == (202, [])
    assert [p for found in asked for p in found] == [Push("team/web", "latest"),
                                                     Push("other/app", "1")]


def test_blob_events_and_pulls_ask_nothing(hooked: tuple[str, Fired, list[list[Push]]]) -> None:
    url, fired, asked = hooked
    answer = httpx.post(url, params={"token": HOOK_TOKEN}, json=_envelope(
        ("push", "application/octet-stream", None), ("pull", MANIFEST, "latest")))
    assert (answer.status_code, answer.json()) == (200, {"pushes": [], "names": []})
    time.sleep(0.6)
    assert asked == [] and fired.calls == []


def test_a_burst_of_pushes_is_one_pass(hooked: tuple[str, Fired, list[list[Push]]]) -> None:
    url, fired, _ = hooked
    for _ in range(10):
        assert httpx.post(url, params={"token": HOOK_TOKEN}, json=_envelope(
            ("push", MANIFEST, "latest"))).status_code == 202
    assert fired.done.wait(5)
    time.sleep(0.6)  # past another quiet period: nothing more comes
    assert fired.calls == [("web",)]


@pytest.mark.parametrize(("kwargs", "status"), [
    ({"json": {"image": "team/web:1"}}, 401),  # no token
    ({"json": {"image": "team/web:1"}, "headers": {"Authorization": f"Bearer {API_TOKEN}"}},
     401),  # the API's token is not the webhook's
    ({"json": {"image": "team/web:1"}, "params": {"token": "wrong"}}, 401),
    ({"content": b"{not json", "params": {"token": HOOK_TOKEN}}, 400),
    ({"json": {"what": 1}, "params": {"token": HOOK_TOKEN}}, 400),
    ({"json": {"image": "team/web@sha256:" + "a" * 64}, "params": {"token": HOOK_TOKEN}}, 400),
    ({"content": b"x" * (MAX_BODY + 1), "params": {"token": HOOK_TOKEN}}, 413),
])
def test_bad_calls_are_refused_and_change_nothing(
        hooked: tuple[str, Fired, list[list[Push]]], kwargs: dict[str, Any],
        status: int) -> None:
    url, fired, asked = hooked
    answer = httpx.post(url, **kwargs)
    assert answer.status_code == status, answer.text
    assert HOOK_TOKEN not in answer.text and "error" in answer.json()
    time.sleep(0.4)
    assert asked == [] and fired.calls == []


def test_without_content_length_it_is_411(hooked: tuple[str, Fired, list[list[Push]]]) -> None:
    url, _, asked = hooked
    body = json.dumps({"image": "team/web:1"}).encode()

    def chunks() -> Iterator[bytes]:
        yield body  # a generator body is sent chunked, without Content-Length

    answer = httpx.post(url, params={"token": HOOK_TOKEN}, content=chunks())
    assert answer.status_code == 411 and asked == []


def test_an_engine_that_cannot_say_is_503(hooked: tuple[str, Fired, list[list[Push]]]) -> None:
    url, fired, _ = hooked
    BROKEN["down"] = True
    answer = httpx.post(url, params={"token": HOOK_TOKEN}, json={"image": "team/web:1"})
    assert answer.status_code == 503 and "not reachable" in answer.json()["error"]
    assert fired.calls == []


def test_without_a_webhook_token_the_endpoint_is_not_there() -> None:
    server = ApiServer("127.0.0.1:0", API_TOKEN, Control()).start()
    try:
        answer = httpx.post(f"http://127.0.0.1:{server.port}/v1/hooks/registry",
                            params={"token": HOOK_TOKEN}, json={"image": "team/web:1"},
                            headers={"Authorization": f"Bearer {API_TOKEN}"})
    finally:
        server.stop()
    assert answer.status_code == 404


def test_the_debounce_fires_at_the_longest_during_an_endless_burst() -> None:
    fired = Fired()
    debounce = Debounce(fired, quiet=0.3, longest=0.6)
    started = time.monotonic()
    while time.monotonic() - started < 1.0:
        debounce.add(["web"])
        time.sleep(0.05)
    assert fired.done.wait(2)
    assert 1 <= len(fired.calls) <= 3  # not one per push, and not never


def test_the_webhook_token_is_a_secret_setting(tmp_path: Any) -> None:
    """From a file (Docker secrets), masked when shown, redacted from logs; without the HTTP
    API it is refused, naming where it was set."""
    from updater import config
    from updater.errors import ConfigError

    secret = tmp_path / "hook"
    secret.write_text(HOOK_TOKEN + "\n")
    api = {"UPDATER_HTTP_API_LISTEN": "127.0.0.1:8080", "UPDATER_HTTP_API_TOKEN": API_TOKEN}
    loaded = config.load(None, {**api, "UPDATER_WEBHOOK_TOKEN_FILE": str(secret)})
    assert loaded.webhook_token == HOOK_TOKEN and HOOK_TOKEN in loaded.secrets()
    assert HOOK_TOKEN not in config.render(loaded) and HOOK_TOKEN not in repr(loaded)
    with pytest.raises(ConfigError, match=r"UPDATER_WEBHOOK_TOKEN is set but http_api\.listen"):
        config.load(None, {"UPDATER_WEBHOOK_TOKEN": HOOK_TOKEN})


def test_names_a_push_brought_are_not_retried_names_asked_for_are() -> None:
    """A pass for names from push notifications holds back an image whose update was rolled
    back (a re-sent notification must not restart a known-bad image); a name an operator
    asked for in the same pass is tried again, as `updater update NAME` is."""
    import datetime

    from updater.core.report import PassReport
    from updater.core.settings import Settings
    from updater.serve.daemon import Daemon

    seen: list[tuple[tuple[str, ...], frozenset[str]]] = []

    def run_pass(stop_requested: Any, names: tuple[str, ...]) -> PassReport:
        seen.append((names, daemon.retrying))
        if len(seen) == 2:
            daemon.request_stop()
        return PassReport()

    def wait(seconds: float) -> None:
        if not seen:
            daemon.trigger(("web", "db"), asked=False)
        else:
            daemon.trigger(("web",), asked=False)
            daemon.trigger(("api", "web"))

    now = datetime.datetime(2026, 12, 2, tzinfo=datetime.UTC)
    daemon = Daemon(Settings(interval=3600), run_pass, now=lambda: now, wait=wait)
    assert daemon.run() == 0
    assert seen == [(("db", "web"), frozenset()), (("api", "web"), frozenset({"api", "web"}))]
