"""Secrets never leak: registry passwords (and their Basic encoding), the registry's bearer
tokens, notification URLs' credentials and the API token are looked for in everything the
updater says — daemon logs at debug level (text and JSON), errors, notifications, `updater
config`, `updater history`, API answers — after passes that update, fail to authenticate and
deny the API."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness import images
from harness.dockerd import Dockerd
from harness.procs import free_port
from harness.registry import Registry
from harness.sinks import JsonSink
from harness.tokenserver import TokenServer
from tests.conftest import USERS
from tests.integration.helpers import ENABLED, run_updater, start, start_daemon, wait_until

pytestmark = [pytest.mark.engine]
USER, PASSWORD = next(iter(USERS.items()))
API_TOKEN = "api-token-9f8e7d6c5b4a"
NOTIFY_PASSWORD = "notify-pass-31337"
WRONG_PASSWORD = "wrong-password-4242"


def _secrets(tokens: TokenServer) -> list[str]:
    basic = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    wrong = base64.b64encode(f"{USER}:{WRONG_PASSWORD}".encode()).decode()
    return [PASSWORD, basic, API_TOKEN, NOTIFY_PASSWORD, WRONG_PASSWORD, wrong, *tokens.tokens]


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_no_secret_in_any_output(engine: Dockerd, basic_registry: Registry,
                                 token_registry: Registry, token_server: TokenServer,
                                 json_sink: JsonSink, unique: str, containers: list[str],
                                 tmp_path: Path, log_format: str) -> None:
    auth = {"username": USER, "password": PASSWORD}
    images_ = {}
    for registry in (basic_registry, token_registry):
        image = f"{registry.host}/secret/{unique}:latest"
        images.release(engine.client, image, "1", auth)
        engine.client.images.pull(image, auth_config=auth)
        start(engine, image, f"{unique}-{registry.port}", ENABLED, containers)
        images.release(engine.client, image, "2", auth, keep_local=False)
        images_[registry.host] = image
    port = free_port()
    (tmp_path / "password").write_text(PASSWORD + "\n")
    notify = json_sink.url.replace("json://", f"json://notifier:{NOTIFY_PASSWORD}@")
    settings: dict[str, Any] = {
        "state_dir": str(tmp_path / "state"), "log_level": "debug", "log_format": log_format,
        "interval": "1h", "update_on_start": True, "notify": [notify],
        "http_api": {"listen": f"127.0.0.1:{port}", "token": API_TOKEN},
        "registries": {basic_registry.host: {"username": USER,
                                             "password_file": str(tmp_path / "password")},
                       token_registry.host: {"username": USER, "password": PASSWORD}}}
    outputs: dict[str, str] = {}

    daemon = start_daemon(engine, tmp_path, settings)
    try:
        base = f"http://127.0.0.1:{port}"

        def updated() -> bool:
            try:
                status = httpx.get(f"{base}/v1/status", timeout=5,
                                   headers={"Authorization": f"Bearer {API_TOKEN}"}).json()
            except httpx.HTTPError:
                return False
            outputs["api status"] = json.dumps(status)
            items = (status.get("last_pass") or {}).get("items") or []
            return bool(sum(i["outcome"] == "updated" for i in items) == 2)
        wait_until(updated, 90, lambda: f"both updated; {outputs.get('api status')}")
        wait_until(json_sink.messages, 30, lambda: "a notification")
        bearer = {"Authorization": f"Bearer {API_TOKEN}"}
        for path in ("/v1/history", "/metrics"):
            outputs[f"api {path}"] = httpx.get(base + path, headers=bearer, timeout=5).text
        for header in (f"Bearer {API_TOKEN}x", f"Basic {API_TOKEN}", API_TOKEN):
            denied = httpx.get(f"{base}/v1/status", headers={"Authorization": header}, timeout=5)
            assert denied.status_code == 401
            outputs[f"api denied {header[:6]}"] = denied.text + str(denied.headers)
    finally:
        daemon.send_signal(signal.SIGTERM)
        outputs["daemon log"] = daemon.communicate(timeout=60)[0]
    assert daemon.returncode == 0, outputs["daemon log"][-3000:]

    # A wrong password: the registry refuses; the error names the registry, never the value.
    wrong = {**settings, "registries": {
        basic_registry.host: {"username": USER, "password": WRONG_PASSWORD}}}
    images.release(engine.client, images_[basic_registry.host], "3", auth, keep_local=False)
    for command in (["check", "--json"], ["update", "--json"]):
        result = run_updater(command, engine, tmp_path / "wrong", wrong)
        outputs[" ".join(command)] = result.stdout + result.stderr
        assert "unauthorized" in result.stdout.lower() or "credentials" in result.stdout.lower(), (
            result.stdout)
    for command in (["config"], ["history", "--json"]):
        result = run_updater(command, engine, tmp_path, settings)
        assert result.returncode == 0, result.stderr
        outputs[" ".join(command)] = result.stdout + result.stderr
    outputs["notifications"] = json.dumps(json_sink.messages())
    outputs["state database"] = (tmp_path / "state" / "updater.db").read_bytes().decode(
        "latin-1")
    outputs["docker inspect"] = subprocess.run(
        ["docker", "-H", engine.host, "inspect", *[c for c in containers]],
        capture_output=True, text=True, check=False).stdout

    assert token_server.tokens, "the token registry was never asked: the test proves nothing"
    assert "updated" in outputs["notifications"]
    for secret in _secrets(token_server):
        for where, text in outputs.items():
            assert secret not in text, f"a secret ({secret[:4]}…) appears in {where}"
