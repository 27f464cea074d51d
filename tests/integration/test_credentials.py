"""Credentials from real `docker-credential-*` helpers (shell scripts on PATH) against real
registries: a broken helper fails only its registry's images, and a rotated password is picked
up by the running daemon without a restart."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest

from harness import images
from harness.dockerd import Dockerd
from harness.registry import Registry
from harness.tokenserver import TokenServer
from tests.conftest import USERS
from tests.integration.helpers import ENABLED, run_updater, start, start_daemon, wait_until

pytestmark = [pytest.mark.engine]
USER, PASSWORD = next(iter(USERS.items()))
AUTH = {"username": USER, "password": PASSWORD}


def helper(home: Path, name: str, script: str) -> dict[str, str]:
    """Install `docker-credential-<name>` (a shell script) in `home`/bin; the PATH to use."""
    program = home / "bin" / f"docker-credential-{name}"
    program.parent.mkdir(parents=True, exist_ok=True)
    program.write_text(f"#!/bin/sh\n{script}\n")
    program.chmod(program.stat().st_mode | stat.S_IEXEC)
    return {"PATH": f"{program.parent}{os.pathsep}{os.environ['PATH']}"}


def cred_helpers(home: Path, helpers: dict[str, str]) -> None:
    """A Docker config.json in `home` whose credHelpers send each registry to a helper."""
    (home / ".docker").mkdir(parents=True, exist_ok=True)
    (home / ".docker" / "config.json").write_text(json.dumps({"credHelpers": helpers}))


@pytest.mark.matrix
def test_broken_helper_fails_only_its_registry(engine: Dockerd, registry: Registry,
                                               basic_registry: Registry, unique: str,
                                               containers: list[str], tmp_path: Path) -> None:
    """A helper printing garbage for two registries: the anonymous one never asks for
    credentials, so its container is checked and updated in the same pass; the container on
    the registry that needs them shows the helper's error; nothing else stops."""
    open_image = f"{registry.host}/open/{unique}:latest"
    private_image = f"{basic_registry.host}/private/{unique}:latest"
    images.release(engine.client, open_image, "1")
    images.release(engine.client, private_image, "1", AUTH)
    engine.client.images.pull(private_image, auth_config=AUTH)
    start(engine, open_image, f"{unique}-open", ENABLED, containers)
    start(engine, private_image, f"{unique}-private", ENABLED, containers)
    new_digest = images.release(engine.client, open_image, "2", keep_local=False)
    images.release(engine.client, private_image, "2", AUTH, keep_local=False)
    path = helper(tmp_path, "garbage", "echo 'this is not JSON'")
    cred_helpers(tmp_path, {registry.host: "garbage", basic_registry.host: "garbage"})
    settings = {"state_dir": str(tmp_path / "state")}

    checked = run_updater(["check", "--json"], engine, tmp_path, settings, path)
    updated = run_updater(["update", "--json"], engine, tmp_path, settings, path)

    assert checked.returncode == 0, checked.stderr
    rows = {row["name"]: row for row in json.loads(checked.stdout)}
    assert rows[f"{unique}-open"]["state"] == "update-available"
    assert rows[f"{unique}-private"]["state"] == "error"
    assert "docker-credential-garbage" in rows[f"{unique}-private"]["error"]
    assert updated.returncode == 0, updated.stderr
    items = {item["name"]: item for item in json.loads(updated.stdout)["items"]}
    assert items[f"{unique}-open"]["outcome"] == "updated"
    assert items[f"{unique}-open"]["new_digest"] == new_digest
    assert items[f"{unique}-private"]["outcome"] == "error"
    assert "docker-credential-garbage" in items[f"{unique}-private"]["reason"]
    assert "this is not JSON" not in checked.stdout + checked.stderr + updated.stderr


class Lines:
    """Reads a process's output in a thread, so the test can look at it while it runs."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._thread.start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.lines.append(line)

    def passes(self) -> list[str]:
        return [line for line in list(self.lines) if " pass: " in line]


@pytest.mark.slow
def test_rotated_helper_password_is_picked_up_by_the_running_daemon(
        engine: Dockerd, root: Path, unique: str, containers: list[str],
        tmp_path: Path) -> None:
    """The helper's password changes while `updater run` runs (tokens live 8 s): at most one
    pass fails, and the next update is applied without a restart."""
    users = dict(USERS)
    tokens = TokenServer(root / f"tokens-{unique}", users, lifetime=8).start()
    server = Registry(root / f"registry-{unique}", token_server=tokens).start()
    daemon = None
    try:
        image = f"{server.host}/rotate/{unique}:latest"
        images.release(engine.client, image, "1", AUTH)
        engine.client.images.pull(image, auth_config=AUTH)
        start(engine, image, unique, ENABLED, containers)
        secret = tmp_path / "secret"
        secret.write_text(PASSWORD)
        path = helper(tmp_path, "rotating", f"read host; printf '{{\"Username\": \"{USER}\", "
                                            f"\"Secret\": \"%s\"}}' \"$(cat {secret})\"")
        cred_helpers(tmp_path, {server.host: "rotating"})
        daemon = start_daemon(engine, tmp_path, {"interval": "1s", "update_on_start": True,
                                                 "state_dir": str(tmp_path / "state")}, path)
        output = Lines(daemon)
        wait_until(lambda: len(output.passes()) >= 2, 60, lambda: "".join(output.lines))

        users[USER] = "rotated-password-77"
        secret.write_text(users[USER])
        time.sleep(4)  # the client keeps a token 5 s short of its 8 s: none from before is left
        old_image = engine.client.containers.get(unique).attrs["Image"]
        images.release(engine.client, image, "2", {"username": USER, "password": users[USER]},
                       keep_local=False)
        wait_until(lambda: engine.client.containers.get(unique).attrs["Image"] != old_image,
                   90, lambda: "".join(output.lines))
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=60) == 0
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.kill()
            daemon.wait(timeout=30)
        server.stop()
        tokens.stop()
    failed = [line for line in output.passes() if "error" in line]
    print(f"password rotated: {len(failed)} failed passes of {len(output.passes())}")
    assert len(failed) <= 1, failed
    assert engine.client.containers.get(unique).attrs["State"]["Running"]
