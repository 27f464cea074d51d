"""Running the real `updater` command and real containers from integration tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from harness.dockerd import Dockerd

ENABLED = {"updater.enable": "true"}


def updater_env(docker_host: str | None, home: Path, settings: dict[str, Any] | None = None,
                config_name: str = "updater.yml") -> dict[str, str]:
    """The environment of an updater process: a private HOME and Docker config, the engine,
    and `settings` written to a config file in `home` named `config_name`."""
    home.mkdir(parents=True, exist_ok=True)
    environment = {"PATH": os.environ["PATH"], "HOME": str(home),
                   "DOCKER_CONFIG": str(home / ".docker")}
    if docker_host is not None:
        environment["DOCKER_HOST"] = docker_host
    if settings is not None:
        config = home / config_name
        config.write_text(yaml.safe_dump(settings))
        environment["UPDATER_CONFIG"] = str(config)
    return environment


def run_updater(args: list[str], engine: Dockerd | None, home: Path,
                settings: dict[str, Any] | None = None,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m updater ARGS` with a private HOME and Docker config, against `engine`."""
    environment = updater_env(engine.host if engine else None, home, settings)
    environment.update(env or {})
    return subprocess.run([sys.executable, "-m", "updater", *args], capture_output=True,
                          text=True, env=environment, timeout=120, check=False)


def start_daemon(engine: Dockerd, home: Path, settings: dict[str, Any],
                 env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """`updater run` in the background with `settings` (and `env` on top of its environment);
    its output (stdout and stderr) piped."""
    environment = updater_env(engine.host, home, settings, "run.yml")
    environment.update(env or {})
    return subprocess.Popen([sys.executable, "-m", "updater", "run"], text=True,
                            env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def check_json(engine: Dockerd, home: Path, settings: dict[str, Any] | None = None,
               names: tuple[str, ...] = ()) -> dict[str, dict[str, Any]]:
    """`updater check --json` parsed into {name: row}; fails the test on a non-zero exit."""
    result = run_updater(["check", "--json", *names], engine, home, settings)
    assert result.returncode == 0, result.stderr
    return {row["name"]: row for row in json.loads(result.stdout)}


def start(engine: Dockerd, image: str, name: str, labels: dict[str, str] | None = None,
          created: list[str] | None = None) -> None:
    """Run a container of `image` named `name` (pulled first if it is not local)."""
    if created is not None:
        created.append(name)
    engine.client.containers.run(image, name=name, labels=labels or {}, detach=True)


def write_docker_config(home: Path, registry: str, user: str, password: str) -> None:
    """A Docker client config.json with `auths` for `registry`, as `docker login` writes it."""
    import base64

    directory = home / ".docker"
    directory.mkdir(parents=True, exist_ok=True)
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    (directory / "config.json").write_text(json.dumps({"auths": {registry: {"auth": token}}}))


def wait_until(condition: Callable[[], Any], timeout: float, what: Callable[[], str]) -> Any:
    """Poll `condition` every 0.5 s; its first truthy value, or an AssertionError with `what()`
    (evaluated then, so it can show logs of the failure) after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"not within {timeout:.0f}s: {what()}")
