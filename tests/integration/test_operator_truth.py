"""What the operator reads, read where the operator reads it: the real JSON sink and `/metrics`
of a running daemon, through an update, a monitor-only digest, a check error repeated, a
rollback and the pass after it, a named pass, and an engine outage and its recovery."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness import images
from harness.dockerd import Dockerd
from harness.procs import free_port
from harness.registry import Registry
from harness.sinks import JsonSink
from tests.integration.helpers import ENABLED, start, start_daemon, wait_until

pytestmark = [pytest.mark.engine, pytest.mark.slow]
TOKEN = "truth-token-0123456789"
EXITS = '["sh", "-c", "exit 3"]'


class _Api:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.auth = {"Authorization": f"Bearer {TOKEN}"}

    def status(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.base}/v1/status", headers=self.auth, timeout=5).json())

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = httpx.get(f"{self.base}/metrics", headers=self.auth, timeout=5).text
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    def history(self) -> list[dict[str, Any]]:
        return list(httpx.get(f"{self.base}/v1/history", headers=self.auth, timeout=5).json())

    def one_pass(self, *names: str) -> dict[str, Any]:
        """Trigger a pass and wait for it to end; the status after it."""
        before = self.status()["passes"]
        answer = httpx.post(f"{self.base}/v1/update", params=[("name", n) for n in names],
                            headers=self.auth, timeout=5)
        assert answer.status_code == 202, answer.text
        return dict(wait_until(lambda: (s := self.status())["passes"] > before
                               and not s["running"] and s, 90, lambda: "the pass"))


def _outcomes(status: dict[str, Any]) -> dict[str, str]:
    return {i["name"]: i["outcome"] for i in (status["last_pass"] or {}).get("items", [])}


def test_what_the_sink_and_metrics_say(engine: Dockerd, registry: Registry, unique: str,
                                       containers: list[str], tmp_path: Path) -> None:
    app, mon, gone = f"{unique}-app", f"{unique}-mon", f"{unique}-gone"
    app_image = f"{registry.host}/truth/{unique}-app:latest"
    mon_image = f"{registry.host}/truth/{unique}-mon:latest"
    images.release(engine.client, app_image, "1.0")
    images.release(engine.client, mon_image, "1.0")
    start(engine, app_image, app, ENABLED, containers)
    start(engine, mon_image, mon, {**ENABLED, "updater.monitor-only": "true"}, containers)
    # In no registry: its check fails the same way every pass.
    gone_image = f"{registry.host}/truth/{unique}-gone:1"
    images.build(engine.client, gone_image, "1.0")
    start(engine, gone_image, gone, ENABLED, containers)
    images.release(engine.client, app_image, "2.0", keep_local=False)
    images.release(engine.client, mon_image, "2.0")
    sink = JsonSink().start()
    port = free_port()
    daemon = start_daemon(engine, tmp_path, {
        "interval": "1h", "update_on_start": True, "state_dir": str(tmp_path / "state"),
        "notify": [sink.url], "http_api": {"listen": f"127.0.0.1:{port}", "token": TOKEN}})
    api = _Api(port)
    messages: Callable[[], list[dict[str, Any]]] = sink.messages
    try:
        # Pass 1 (at start): one message with the update, the available update and the error,
        # each line with what the images say of their versions.
        [first] = wait_until(messages, 60, lambda: "the first message")
        body = first["message"]
        assert f"{app} ({app_image}): updated 1.0 → 2.0" in body
        assert f"{mon} ({mon_image}): update-available (runs 1.0)" in body
        assert f"{gone} ({gone_image}): error (runs 1.0)" in body
        wait_until(lambda: api.status()["passes"] >= 1 and not api.status()["running"], 30,
                   lambda: "the first pass ended")
        series = api.metrics()
        assert series[("updater_watched", (("kind", "container"),))] == 3
        assert series[("updater_passes_total", ())] == 1

        # Pass 2: nothing changed, nothing told (the error and the digest were told).
        api.one_pass()
        assert len(messages()) == 1

        # A release that exits at once: rolled back, told at once and in the pass message.
        images.release(engine.client, app_image, "3.0", cmd=EXITS, keep_local=False)
        status = api.one_pass()
        assert _outcomes(status)[app] == "rolled-back"
        told = messages()[1:]
        assert len(told) == 2 and all(f"{app} ({app_image}): rolled-back 2.0 → 3.0" in m["message"]
                                      for m in told)
        # The pass after it: held back, not announced, not a new history row.
        rows = len(api.history())
        status = api.one_pass()
        assert _outcomes(status)[app] == "held-back"
        assert len(messages()) == 3 and len(api.history()) == rows

        # A pass for one name leaves the gauges of the last full pass.
        api.one_pass(app)
        assert api.metrics()[("updater_watched", (("kind", "container"),))] == 3

        # The engine away for a while: the failing passes are counted and told once; their
        # end is told too.
        outage = threading.Thread(target=engine.restart, kwargs={"down": 15})
        outage.start()
        try:
            wait_until(lambda: api.one_pass().get("last_error"), 40, lambda: "a failed pass")
            api.one_pass()  # fails again: not told again
            failed = [m for m in messages() if "passes are failing" in m["title"]]
            assert api.metrics()[("updater_pass_failures_total", ())] >= 2
        finally:
            outage.join()
        status = api.one_pass()
        assert status["last_error"] is None, status
        back = wait_until(lambda: [m for m in messages() if "passes work again" in m["title"]],
                          30, lambda: f"the recovery message: {messages()}")
        assert len(failed) == 1 and len(back) == 1
        assert "cannot reach the Docker engine" in failed[0]["message"]
        series = api.metrics()
        assert series[("updater_pass_failures_total", ())] >= 1
        assert series[("updater_passes_total", ())] >= 6 + series[
            ("updater_pass_failures_total", ())]
    finally:
        daemon.send_signal(signal.SIGTERM)
        output, _ = daemon.communicate(timeout=60)
        sink.stop()
    assert daemon.returncode == 0, output[-3000:]
    assert "Traceback" not in output
