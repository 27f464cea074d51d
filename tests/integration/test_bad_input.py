"""Bad input and broken surroundings: one clear line, exit 2 for usage errors, no traceback, and
a failing check never stops the others."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import images
from harness.dockerd import Dockerd
from harness.registry import Registry
from tests.conftest import USERS
from tests.integration.helpers import ENABLED, check_json, run_updater, start

USER, PASSWORD = next(iter(USERS.items()))


def _one_clear_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_unknown_config_key(tmp_path: Path) -> None:
    """An unknown key in the config file is named, with the closest known one, exit 2."""
    result = run_updater(["config"], None, tmp_path, {"intervall": "5m"})
    assert result.returncode == 2
    line = _one_clear_line(result.stderr)
    assert "'intervall'" in line and "'interval'" in line


def test_bad_duration_from_environment(tmp_path: Path) -> None:
    """A malformed duration names the variable and the value, exit 2."""
    result = run_updater(["config"], None, tmp_path, env={"UPDATER_HEALTH_TIMEOUT": "ten"})
    assert result.returncode == 2
    line = _one_clear_line(result.stderr)
    assert "UPDATER_HEALTH_TIMEOUT" in line and "'ten'" in line


def test_unreachable_docker_host(tmp_path: Path) -> None:
    """A Docker host with nothing behind it is named with what to check, exit 2."""
    socket = tmp_path / "absent.sock"
    result = run_updater(["check"], None, tmp_path, env={"DOCKER_HOST": f"unix://{socket}"})
    assert result.returncode == 2
    line = _one_clear_line(result.stderr)
    assert str(socket) in line and "DOCKER_HOST" in line


def test_unknown_command_is_a_usage_error(tmp_path: Path) -> None:
    """A command the tool does not have is one line and exit 2."""
    result = run_updater(["chekc"], None, tmp_path)
    assert result.returncode == 2
    assert "chekc" in _one_clear_line(result.stderr)


@pytest.mark.engine
def test_failures_are_reported_per_container(engine: Dockerd, registry: Registry,
                                             basic_registry: Registry, root: Path, unique: str,
                                             containers: list[str], tmp_path: Path) -> None:
    """A registry that is down, a wrong password, an image ID and a bad label each give an
    `error` row with the reason, while a healthy container is still checked."""
    healthy = f"{registry.host}/ok/{unique}:latest"
    images.release(engine.client, healthy, "1")
    start(engine, healthy, f"{unique}-healthy", ENABLED, containers)

    gone = Registry(root / f"registry-gone-{unique}").start()
    down = f"{gone.host}/down/{unique}:latest"
    images.release(engine.client, down, "1")
    gone.stop()
    start(engine, down, f"{unique}-down", ENABLED, containers)

    private = f"{basic_registry.host}/private/{unique}:latest"
    images.release(engine.client, private, "1", {"username": USER, "password": PASSWORD})
    start(engine, private, f"{unique}-denied", ENABLED, containers)

    image_id = str(engine.client.images.get(healthy).id)
    start(engine, image_id, f"{unique}-by-id", ENABLED, containers)
    start(engine, healthy, f"{unique}-bad-label", {"updater.enable": "maybe"}, containers)

    wrong = {"registries": {basic_registry.host: {"username": USER, "password": "not-it-123"}}}
    rows = check_json(engine, tmp_path, wrong, tuple(containers))

    assert rows[f"{unique}-healthy"]["state"] == "up-to-date"
    reasons = {name.removeprefix(f"{unique}-"): row["error"] for name, row in rows.items()
               if row["state"] == "error"}
    assert set(reasons) == {"down", "denied", "by-id", "bad-label"}
    assert gone.host in reasons["down"] and "unavailable" in reasons["down"]
    assert f"'{USER}'" in reasons["denied"] and "not-it-123" not in reasons["denied"]
    assert "image ID" in reasons["by-id"]
    assert "updater.enable" in reasons["bad-label"] and "'maybe'" in reasons["bad-label"]


@pytest.mark.engine
def test_unknown_name_is_a_usage_error(engine: Dockerd, tmp_path: Path) -> None:
    """Asking to check a container that is not watched says so, exit 2."""
    result = run_updater(["check", "no-such-container-xyz"], engine, tmp_path)
    assert result.returncode == 2
    assert "no-such-container-xyz" in _one_clear_line(result.stderr)


def test_invalid_apprise_url_is_refused(tmp_path: Path) -> None:
    """`updater config` names a notification URL Apprise cannot use, without its secrets."""
    result = run_updater(["config"], None, tmp_path, {"notify": ["nosuchservice://tok3n@x"]})
    assert result.returncode == 2
    line = _one_clear_line(result.stderr)
    assert "nosuchservice://***" in line and "tok3n" not in line
