"""The HTTP API's routing and token check on a real loopback socket; log redaction and JSON."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from updater.errors import ConfigError
from updater.logs import JsonFormatter, Redactor
from updater.serve.api import ApiServer, parse_listen

TOKEN = "s3cret-token-value"


class Control:
    def __init__(self) -> None:
        self.triggered: list[tuple[str, ...]] = []

    def trigger(self, names: tuple[str, ...] = ()) -> None:
        self.triggered.append(names)

    def status(self) -> dict[str, Any]:
        return {"passes": 3}

    def history(self, name: str | None, limit: int) -> list[dict[str, Any]]:
        return [{"name": name, "limit": limit}]

    def metrics(self) -> bytes:
        return b"updater_passes_total 3.0\n"

    def pending(self) -> dict[str, Any]:
        return {"as_of": None, "items": []}

    def decide(self, name: str, digest: str | None, decision: str) -> str:
        return digest or ""

    def rollback(self, name: str) -> str:
        return name


@pytest.fixture
def api() -> Iterator[tuple[str, Control]]:
    control = Control()
    server = ApiServer("127.0.0.1:0", TOKEN, control).start()
    yield f"http://127.0.0.1:{server.port}", control
    server.stop()


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_health_needs_no_token(api: tuple[str, Control]) -> None:
    """/v1/health answers without a token (for HEALTHCHECK)."""
    base, _ = api
    assert httpx.get(f"{base}/v1/health").json() == {"status": "ok"}


@pytest.mark.parametrize("header", [None, "Bearer wrong", f"Basic {TOKEN}", f"Bearer {TOKEN}x",
                                    "Bearer"])
def test_everything_else_needs_the_token(api: tuple[str, Control], header: str | None) -> None:
    """A missing, wrong or differently-schemed token is 401 everywhere but health."""
    base, control = api
    headers = {"Authorization": header} if header else {}
    for method, path in (("GET", "/v1/status"), ("POST", "/v1/update"), ("GET", "/v1/history"),
                         ("GET", "/metrics")):
        assert httpx.request(method, f"{base}{path}", headers=headers).status_code == 401
    assert control.triggered == []


def test_routes_with_the_token(api: tuple[str, Control]) -> None:
    """Status, trigger (with names), history and metrics answer with the right token."""
    base, control = api
    assert httpx.get(f"{base}/v1/status", headers=AUTH).json() == {"passes": 3}
    answer = httpx.post(f"{base}/v1/update?name=a&name=b", headers=AUTH)
    assert answer.status_code == 202 and control.triggered == [("a", "b")]
    assert httpx.get(f"{base}/v1/history?name=a&limit=5", headers=AUTH).json() == [
        {"name": "a", "limit": 5}]
    metrics = httpx.get(f"{base}/metrics", headers=AUTH)
    assert metrics.text.startswith("updater_passes_total")
    assert metrics.headers["Content-Type"].startswith("text/plain")


def test_malformed_requests(api: tuple[str, Control]) -> None:
    """Unknown paths are 404, wrong methods 405, bad parameters 400."""
    base, _ = api
    assert httpx.get(f"{base}/v2/nothing", headers=AUTH).status_code == 404
    assert httpx.get(f"{base}/v1/update", headers=AUTH).status_code == 405
    assert httpx.get(f"{base}/v1/history?limit=zero", headers=AUTH).status_code == 400
    assert httpx.post(f"{base}/v1/update?name=", headers=AUTH).status_code == 400


@pytest.mark.parametrize("listen", ["8080", "host:", "host:99999", "a:b"])
def test_bad_listen_address(listen: str) -> None:
    """A listen address that is not host:port is named."""
    with pytest.raises(ConfigError, match="is not host:port"):
        parse_listen(listen)


def test_listen_forms() -> None:
    """host:port, [v6]:port and :port are accepted."""
    assert parse_listen("127.0.0.1:80") == ("127.0.0.1", 80)
    assert parse_listen("[::1]:8080") == ("::1", 8080)
    assert parse_listen(":9") == ("0.0.0.0", 9)  # noqa: S104 - what ":port" means


def test_redactor_masks_secrets_in_messages_and_arguments() -> None:
    """Every known secret is replaced by *** in the final message."""
    record = logging.LogRecord("updater", logging.INFO, __file__, 1, "token %s and %s",
                               (TOKEN, "pw-123456"), None)
    Redactor([TOKEN, "pw-123456", ""]).filter(record)
    assert record.getMessage() == "token *** and ***"


def test_json_log_lines() -> None:
    """--log-format json writes one JSON object per line with level and message."""
    record = logging.LogRecord("updater.passes", logging.WARNING, __file__, 1, "x %d", (1,), None)
    entry = json.loads(JsonFormatter().format(record))
    assert (entry["level"], entry["logger"], entry["message"]) == ("warning", "updater.passes",
                                                                    "x 1")


def test_history_keeps_a_repeated_state_once(tmp_path: Path) -> None:
    """An available update or an error is a row when it starts (or changes), not every pass;
    updates are always rows."""
    from updater.core.report import ItemReport, Outcome
    from updater.store.history import History

    history = History(str(tmp_path))
    available = ItemReport("mon", "r/mon:1", Outcome.AVAILABLE, new_digest="sha256:" + "b" * 64)
    error = ItemReport("gone", "r/gone:1", Outcome.ERROR, reason="not found (HTTP 404)")
    for when in range(5):
        history.record(float(when), [available, error,
                                     ItemReport("app", "r/app:1", Outcome.UPDATED)])
    history.record(9.0, [ItemReport("gone", "r/gone:1", Outcome.ERROR, reason="unreachable")])
    rows = [(e["name"], e["outcome"]) for e in history.entries(limit=100)]
    assert rows.count(("mon", "update-available")) == 1
    assert rows.count(("gone", "error")) == 2
    assert rows.count(("app", "updated")) == 5
    history.close()
