"""Notifications, history, the HTTP API and metrics, against real sinks and a real Prometheus."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from harness import images
from harness.dockerd import Dockerd
from harness.procs import free_port
from harness.prometheus import Prometheus
from harness.registry import Registry
from harness.sinks import JsonSink, SmtpSink
from tests.integration.helpers import ENABLED, run_updater, start, start_daemon, wait_until
from tests.integration.test_update import update

pytestmark = [pytest.mark.engine]
TOKEN = "api-token-for-tests-0123"
SOURCE = 'LABEL org.opencontainers.image.source=https://git.example.invalid/team/app'


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    sink = SmtpSink().start()
    yield sink
    sink.stop()


def test_one_batched_message_with_versions(engine: Dockerd, registry: Registry,
                                           json_sink: JsonSink, unique: str,
                                           containers: list[str], tmp_path: Path) -> None:
    """A pass that updates two containers sends one message naming both, with the version
    change from the images' OCI labels."""
    for name in ("web", "api"):
        image = f"{registry.host}/notify/{unique}-{name}:latest"
        images.release(engine.client, image, "1.4.2", extra=SOURCE)
        start(engine, image, f"{unique}-{name}", ENABLED, containers)
        images.release(engine.client, image, "1.4.3", extra=SOURCE, keep_local=False)

    code, items = update(engine, tmp_path, *containers, settings={"notify": [json_sink.url]})

    assert code == 0 and {i["outcome"] for i in items.values()} == {"updated"}
    [message] = json_sink.messages()
    assert "2 updated" in message["title"]
    for name in containers:
        assert f"{name} (" in message["message"]
    assert message["message"].count("1.4.2 → 1.4.3") == 2
    assert "https://git.example.invalid/team/app" in message["message"]


def test_rolled_back_update_is_mailed(engine: Dockerd, registry: Registry, smtp_sink: SmtpSink,
                                      unique: str, containers: list[str],
                                      tmp_path: Path) -> None:
    """The failure of a rolled-back update reaches a local SMTP server."""
    image = f"{registry.host}/mail/{unique}:latest"
    images.release(engine.client, image, "1")
    start(engine, image, unique, ENABLED, containers)
    images.release(engine.client, image, "2", cmd='["sh", "-c", "exit 4"]', keep_local=False)

    code, items = update(engine, tmp_path, unique, settings={"notify": [smtp_sink.url]})

    assert code == 1 and items[unique]["outcome"] == "rolled-back"
    mails = wait_until(smtp_sink.texts, 10, lambda: "mail")
    assert any("rolled-back" in mail and unique in mail and "exit code 4" in mail
               for mail in mails), mails


def test_sink_down_does_not_fail_the_pass_and_is_retried(engine: Dockerd, registry: Registry,
                                                         unique: str, containers: list[str],
                                                         tmp_path: Path) -> None:
    """An unreachable sink: the update succeeds, the message waits, and the next pass delivers
    it once the sink is up."""
    image = f"{registry.host}/down/{unique}:latest"
    images.release(engine.client, image, "1")
    start(engine, image, unique, ENABLED, containers)
    images.release(engine.client, image, "2", keep_local=False)
    port = free_port()  # nothing listens there yet: connection refused
    settings = {"notify": [f"json://127.0.0.1:{port}/hook"]}

    code, items = update(engine, tmp_path, unique, settings=settings)
    assert code == 0 and items[unique]["outcome"] == "updated"

    sink = JsonSink(port).start()
    try:
        update(engine, tmp_path, unique, settings=settings)
        received = wait_until(sink.messages, 10, lambda: "the retried delivery")
    finally:
        sink.stop()
    assert any(f"{unique} (" in m["message"] and "updated" in m["message"] for m in received)


def test_history_survives_a_restart(engine: Dockerd, registry: Registry, unique: str,
                                    containers: list[str], tmp_path: Path) -> None:
    """An update recorded by one updater process is listed by `updater history` in the next."""
    image = f"{registry.host}/history/{unique}:latest"
    images.release(engine.client, image, "1.0")
    start(engine, image, unique, ENABLED, containers)
    images.release(engine.client, image, "1.1", keep_local=False)
    update(engine, tmp_path, unique)

    result = run_updater(["history", "--json", unique], engine, tmp_path,
                         {"state_dir": str(tmp_path / "state")})
    assert result.returncode == 0, result.stderr
    [entry] = json.loads(result.stdout)
    assert (entry["name"], entry["outcome"]) == (unique, "updated")
    assert (entry["old_version"], entry["new_version"]) == ("1.0", "1.1")
    table = run_updater(["history"], engine, tmp_path, {"state_dir": str(tmp_path / "state")})
    assert unique in table.stdout and "1.0" in table.stdout


@pytest.mark.slow
def test_api_token_trigger_history_and_prometheus_scrape(
        engine: Dockerd, registry: Registry, unique: str, containers: list[str],
        tmp_path: Path) -> None:
    """The API refuses a missing or wrong token, a trigger runs a pass, and a real Prometheus
    scrapes /metrics; the series are read back through Prometheus's query API."""
    image = f"{registry.host}/api/{unique}:latest"
    images.release(engine.client, image, "1")
    start(engine, image, unique, ENABLED, containers)
    old_image = engine.client.containers.get(unique).attrs["Image"]
    port = free_port()
    daemon = start_daemon(engine, tmp_path, {
        "interval": "1h", "state_dir": str(tmp_path / "state"),
        "http_api": {"listen": f"127.0.0.1:{port}", "token": TOKEN}})
    base = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    prometheus = Prometheus(tmp_path / "prometheus", f"127.0.0.1:{port}", TOKEN)
    try:
        wait_until(lambda: _get(f"{base}/v1/health") == 200, 20, lambda: "API start")
        assert _get(f"{base}/v1/status") == 401
        assert _get(f"{base}/v1/status", {"Authorization": "Bearer wrong"}) == 401
        assert _get(f"{base}/metrics") == 401
        images.release(engine.client, image, "2", keep_local=False)
        answer = httpx.post(f"{base}/v1/update", params={"name": unique}, headers=auth,
                            timeout=5)
        assert answer.status_code == 202
        wait_until(lambda: engine.client.containers.get(unique).attrs["Image"] != old_image,
                   60, lambda: "the triggered update")
        history = wait_until(lambda: httpx.get(f"{base}/v1/history", headers=auth,
                                               timeout=5).json(), 10, lambda: "history")
        assert history[0]["name"] == unique and history[0]["outcome"] == "updated"
        status = httpx.get(f"{base}/v1/status", headers=auth, timeout=5).json()
        assert status["passes"] >= 1
        prometheus.start()
        series = wait_until(lambda: prometheus.query(
            'updater_items_total{outcome="updated"}'), 30, lambda: "the scrape")
        assert float(series[0]["value"][1]) >= 1
        requests = prometheus.query("sum(updater_registry_requests_total)")
        assert float(requests[0]["value"][1]) >= 1
    finally:
        prometheus.stop()
        daemon.send_signal(signal.SIGTERM)
        output, _ = daemon.communicate(timeout=60)
    assert daemon.returncode == 0, output
    assert TOKEN not in output


def _get(url: str, headers: dict[str, str] | None = None) -> int:
    try:
        return httpx.get(url, headers=headers, timeout=2).status_code
    except httpx.TransportError:
        return 0
