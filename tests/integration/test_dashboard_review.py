"""Review of the dashboard against a real `updater run`, engine and registry (plain HTTP, no
browser): Update now on a monitor-only container is once only; Undo with nothing to undo and
actions on unknown or removed names say why; the history rows; no token or CSRF token in the
debug log; OCI source labels; `http_api.dashboard: false`."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest

from harness import images
from harness.dockerd import Dockerd
from harness.procs import free_port
from harness.registry import Registry
from tests.integration.helpers import ENABLED, start_daemon, wait_until

pytestmark = [pytest.mark.engine, pytest.mark.slow]
TOKEN = "dashboard-review-token-0123456789"
WAIT = 120.0


def _answers(base: str) -> bool:
    try:
        return httpx.get(f"{base}/v1/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _state(client: httpx.Client, name: str) -> str:
    rows = client.get("/ui/state?v=none").json()["rows"]
    found = [html for key, html in rows.items() if key.endswith(f"|container|{name}")]
    match = re.search(r'data-state="([^"]*)"', found[0]) if found else None
    return match.group(1) if match else ""


def _act(client: httpx.Client, csrf: str, **form: str) -> httpx.Response:
    return client.post("/ui/act", data={"kind": "container", **form, "csrf": csrf,
                                        "confirmed": "yes"})


def test_update_now_once_undo_unknown_and_the_log(
        engine: Dockerd, registry: Registry, unique: str, containers: list[str],
        tmp_path: Path) -> None:
    mon, plain, appr = f"{unique}-mon", f"{unique}-plain.x_y", f"{unique}-appr"
    tags = {mon: f"{registry.host}/rv/{unique}-mon:latest",
            plain: f"{registry.host}/rv/{unique}-plain:latest",
            appr: f"{registry.host}/rv/{unique}-appr:latest"}
    source = 'LABEL org.opencontainers.image.source="https://example.test/a\\"><b>x</b>"'
    for name, tag in tags.items():
        images.release(engine.client, tag, "1", extra=source)
        containers.append(name)
        labels = {mon: {**ENABLED, "updater.monitor-only": "true"},
                  appr: {**ENABLED, "updater.approve": "true"}}.get(name, ENABLED)
        engine.client.containers.run(tag, name=name, detach=True, labels=labels)
    first = {name: engine.client.containers.get(name).attrs["Image"] for name in tags}
    port = free_port()
    daemon = start_daemon(engine, tmp_path / "home", {
        "interval": "1h", "update_on_start": True, "state_dir": str(tmp_path / "state"),
        "log_level": "debug", "keep_images": 1,
        "http_api": {"listen": f"127.0.0.1:{port}", "token": TOKEN}})
    base = f"http://127.0.0.1:{port}"
    csrf = ""
    try:
        wait_until(lambda: _answers(base), 60, lambda: "the API never answered")
        client = httpx.Client(base_url=base, timeout=30, follow_redirects=False)
        login = client.post("/login", data={"token": TOKEN})
        assert login.status_code == 303
        client.cookies.set("updater_session", login.cookies["updater_session"])
        page = client.get("/")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        wait_until(lambda: _state(client, mon) == "up-to-date" and _state(
            client, plain) == "up-to-date", WAIT, lambda: client.get("/ui/state?v=x").text)
        item = client.get("/item", params={"kind": "container", "name": plain})
        assert item.status_code == 200 and "<b>x</b>" not in item.text

        # Undo with nothing to undo: a clear refusal, nothing queued.
        undo = _act(client, csrf, action="undo", name=plain)
        assert undo.status_code == 409, undo.text
        assert "nothing to roll back" in undo.text
        assert "in progress" not in client.get("/").text

        # Actions on a name nothing watches.
        for action in ("update", "undo"):
            unknown = _act(client, csrf, action=action, name=f"{unique}-nope")
            assert unknown.status_code == 404, (action, unknown.text)
        approve = _act(client, csrf, action="approve", name=f"{unique}-nope",
                       digest="sha256:" + "c" * 64)
        assert approve.status_code == 404, approve.text

        # Update now on the monitor-only container: updated, once.
        for tag in tags.values():
            images.release(engine.client, tag, "2", keep_local=False, extra=source)
        assert _act(client, csrf, action="update", name=mon).status_code == 200
        wait_until(lambda: _state(client, mon) == "updated", WAIT,
                   lambda: client.get("/ui/state?v=x").text)
        second = engine.client.containers.get(mon).attrs["Image"]
        assert second != first[mon]
        images.release(engine.client, tags[mon], "3", keep_local=False, extra=source)
        passes = client.get("/ui/state?v=x").json()["status"]["passes"]
        asked = client.post("/v1/update", headers={"Authorization": f"Bearer {TOKEN}"})
        assert asked.status_code == 202
        wait_until(lambda: client.get("/ui/state?v=x").json()["status"]["passes"] > passes
                   and not client.get("/ui/state?v=x").json()["status"]["running"], WAIT,
                   lambda: "no pass")
        assert _state(client, mon) == "update-available"
        assert engine.client.containers.get(mon).attrs["Image"] == second
        history = client.get("/item", params={"kind": "container", "name": mon}).text
        assert "update-asked" in history and "from the dashboard" in history

        # Skip the update waiting for approval: the row must stop offering it.
        assert _state(client, appr) == "waiting"
        row = client.get("/ui/state?v=x").json()["rows"]
        [html] = [h for k, h in row.items() if k.endswith(f"|container|{appr}")]
        digest = re.search(r"digest=(sha256%3A[0-9a-f]+)", html).group(1)  # type: ignore[union-attr]
        skip = _act(client, csrf, action="skip", name=appr,
                    digest=digest.replace("%3A", ":"))
        assert skip.status_code == 200, skip.text
        # Before: the row kept offering Approve and Skip of the rejected digest until the
        # next scheduled pass (an hour here, a day elsewhere), as if nothing had happened.
        key = next(k for k in row if k.endswith(f"|container|{appr}"))
        wait_until(lambda: "Approve" not in client.get("/ui/state?v=x").json()["rows"][key],
                   30, lambda: f"still offered after Skip: {_state(client, appr)}")
        assert engine.client.containers.get(appr).attrs["Image"] == first[appr]

        # A container removed between passes: its page and actions say so.
        engine.client.containers.get(plain).remove(force=True)
        gone = _act(client, csrf, action="update", name=plain)
        assert gone.status_code == 404, gone.text
        assert client.get("/").status_code == 200
        assert client.get("/ui/state?v=x").status_code == 200
    finally:
        daemon.terminate()
        output, _ = daemon.communicate(timeout=60)
    assert TOKEN not in output
    assert csrf and csrf not in output
    assert "Traceback" not in output, output[-3000:]


def test_dashboard_off_serves_no_page(engine: Dockerd, tmp_path: Path) -> None:
    port = free_port()
    daemon = start_daemon(engine, tmp_path / "home", {
        "interval": "1h", "state_dir": str(tmp_path / "state"),
        "http_api": {"listen": f"127.0.0.1:{port}", "token": TOKEN, "dashboard": False}})
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(base), 60, lambda: "the API never answered")
        for path in ("/", "/login", "/item?name=x", "/ui/state", "/static/dashboard.js"):
            assert httpx.get(base + path).status_code == 404, path
        assert httpx.post(base + "/login", data={"token": TOKEN}).status_code == 404
        assert httpx.get(base + "/v1/status").status_code == 401
        status = httpx.get(base + "/v1/status", headers={"Authorization": f"Bearer {TOKEN}"})
        assert status.status_code == 200
    finally:
        daemon.terminate()
        output, _ = daemon.communicate(timeout=60)
    assert "Traceback" not in output


def test_a_bad_session_lifetime_is_one_clear_line(engine: Dockerd, tmp_path: Path) -> None:
    for value in ("soon", "0"):
        daemon = start_daemon(engine, tmp_path / f"home-{value}", {
            "interval": "1h", "state_dir": str(tmp_path / "state"),
            "http_api": {"listen": f"127.0.0.1:{free_port()}", "token": TOKEN,
                         "session_lifetime": value}})
        try:
            output, _ = daemon.communicate(timeout=60)
        except Exception:
            daemon.terminate()
            output, _ = daemon.communicate(timeout=60)
            time.sleep(0)
        assert daemon.returncode not in (0, None), (value, output)
        lines = [line for line in output.splitlines() if "session_lifetime" in line]
        assert len(lines) == 1 and "Traceback" not in output, (value, output)
