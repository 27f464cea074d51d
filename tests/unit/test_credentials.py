"""Credentials from settings and from the Docker client config, helpers included."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from updater.auth import Credentials
from updater.config import RegistrySettings
from updater.credentials import (
    ChainedCredentials,
    DockerConfigCredentials,
    SettingsCredentials,
)
from updater.errors import CredentialsUnavailable


def _config(tmp_path: Path, document: object) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(document))
    return path


def _helper(tmp_path: Path, name: str, script: str, monkeypatch: pytest.MonkeyPatch) -> None:
    program = tmp_path / "bin" / f"docker-credential-{name}"
    program.parent.mkdir(exist_ok=True)
    program.write_text(f"#!/bin/sh\n{script}\n")
    program.chmod(program.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{program.parent}{os.pathsep}{os.environ['PATH']}")


def test_auths_entry(tmp_path: Path) -> None:
    """`auths.<host>.auth` is base64 user:password (the password may contain ':')."""
    path = _config(tmp_path, {"auths": {"reg.example": {"auth": "YWxpY2U6cHc6eA=="}}})
    assert DockerConfigCredentials(path).lookup("reg.example") == Credentials("alice", "pw:x")
    assert DockerConfigCredentials(path).lookup("other.example") is None


def test_docker_hub_legacy_key(tmp_path: Path) -> None:
    """Docker Hub credentials are filed under https://index.docker.io/v1/."""
    path = _config(tmp_path, {"auths": {"https://index.docker.io/v1/": {"auth": "dTpw"}}})
    assert DockerConfigCredentials(path).lookup("docker.io") == Credentials("u", "p")


def test_cred_helper_wins_over_auths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """credHelpers for the host are asked first, with the host on stdin."""
    _helper(tmp_path, "fake", 'read h; echo "{\\"Username\\":\\"h-$h\\",\\"Secret\\":\\"s\\"}"',
            monkeypatch)
    path = _config(tmp_path, {"credHelpers": {"reg.example": "fake"},
                              "auths": {"reg.example": {"auth": "dTpw"}}})
    assert DockerConfigCredentials(path).lookup("reg.example") == Credentials("h-reg.example", "s")


def test_creds_store_then_auths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """credsStore is asked; when it knows nothing (exit 1) the auths entry is used."""
    _helper(tmp_path, "store", "echo credentials not found; exit 1", monkeypatch)
    path = _config(tmp_path, {"credsStore": "store", "auths": {"reg.example": {"auth": "dTpw"}}})
    assert DockerConfigCredentials(path).lookup("reg.example") == Credentials("u", "p")


def test_missing_helper_is_a_clear_error(tmp_path: Path) -> None:
    """A helper that is not installed is named."""
    path = _config(tmp_path, {"credsStore": "absent-helper-xyz"})
    with pytest.raises(CredentialsUnavailable, match="docker-credential-absent-helper-xyz"):
        DockerConfigCredentials(path).lookup("reg.example")


def test_broken_config_is_a_clear_error(tmp_path: Path) -> None:
    """A config.json that is not JSON, or an auth that is not base64, is named."""
    broken = tmp_path / "config.json"
    broken.write_text("{nope")
    with pytest.raises(CredentialsUnavailable, match="not valid JSON"):
        DockerConfigCredentials(broken).lookup("x")
    path = _config(tmp_path, {"auths": {"x": {"auth": "!!!"}}})
    with pytest.raises(CredentialsUnavailable, match="not base64"):
        DockerConfigCredentials(path).lookup("x")


def test_settings_first(tmp_path: Path) -> None:
    """Settings credentials win over the Docker config; absent file means no credentials."""
    chain = ChainedCredentials(
        SettingsCredentials({"reg.example": RegistrySettings(username="s", password="p")}),
        DockerConfigCredentials(tmp_path / "absent.json"))
    assert chain.lookup("reg.example") == Credentials("s", "p")
    assert chain.lookup("other.example") is None


def test_config_is_read_again_at_each_lookup(tmp_path: Path) -> None:
    """A `docker login` while the daemon runs is seen by the next lookup."""
    path = _config(tmp_path, {"auths": {"reg.example": {"auth": "dTpw"}}})
    source = DockerConfigCredentials(path)
    assert source.lookup("reg.example") == Credentials("u", "p")
    _config(tmp_path, {"auths": {"reg.example": {"auth": "dTpweA=="}}})
    assert source.lookup("reg.example") == Credentials("u", "px")


def test_helper_that_cannot_run_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A helper that is not executable is a CredentialsUnavailable naming it, not a crash."""
    _helper(tmp_path, "noexec", "exit 0", monkeypatch)
    (tmp_path / "bin" / "docker-credential-noexec").chmod(0o644)
    path = _config(tmp_path, {"credHelpers": {"reg.example": "noexec"}})
    with pytest.raises(CredentialsUnavailable, match="docker-credential-noexec"):
        DockerConfigCredentials(path).lookup("reg.example")


def test_garbage_from_a_helper_is_not_repeated(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A helper printing something that is not JSON: the error names the helper and the
    registry, never what it printed (it may be the secret)."""
    _helper(tmp_path, "garbage", "echo s3cret-not-json", monkeypatch)
    path = _config(tmp_path, {"credHelpers": {"reg.example": "garbage"}})
    with pytest.raises(CredentialsUnavailable) as caught:
        DockerConfigCredentials(path).lookup("reg.example")
    assert "docker-credential-garbage" in str(caught.value)
    assert "reg.example" in str(caught.value) and "s3cret" not in str(caught.value)
