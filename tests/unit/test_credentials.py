"""Credentials from settings and from the Docker client config, helpers included."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from updater.core.settings import RegistrySettings
from updater.errors import CredentialsUnavailable
from updater.registry.auth import Credentials
from updater.registry.credentials import (
    ChainedCredentials,
    DockerConfigCredentials,
    SettingsCredentials,
)


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


@pytest.mark.parametrize("key", ["https://reg.example:5000/", "http://reg.example:5000",
                                 "reg.example:5000", "https://reg.example:5000/v1/",
                                 "HTTPS://Reg.Example:5000"])
def test_auths_keys_in_any_spelling_docker_accepts(tmp_path: Path, key: str) -> None:
    """Docker reads an `auths` key as its host whatever the scheme, path and slash; so does
    the updater (before, only five fixed spellings were tried)."""
    path = _config(tmp_path, {"auths": {key: {"auth": "dTpw"}}})
    assert DockerConfigCredentials(path).lookup("reg.example:5000") == Credentials("u", "p")
    assert DockerConfigCredentials(path).lookup("reg.example:5001") is None


@pytest.mark.parametrize("key", ["https://index.docker.io/v1/", "index.docker.io", "docker.io",
                                 "https://registry-1.docker.io"])
def test_docker_hub_keys(tmp_path: Path, key: str) -> None:
    path = _config(tmp_path, {"auths": {key: {"auth": "dTpw"}}})
    assert DockerConfigCredentials(path).lookup("docker.io") == Credentials("u", "p")


def test_the_key_docker_login_writes_wins_over_other_spellings(tmp_path: Path) -> None:
    path = _config(tmp_path, {"auths": {"https://reg.example/": {"auth": "b2xkOng="},
                                        "reg.example": {"auth": "dTpw"}}})
    assert DockerConfigCredentials(path).lookup("reg.example") == Credentials("u", "p")


def test_identity_token_from_docker_login(tmp_path: Path) -> None:
    """`docker login` against an OAuth2 token server keeps `auth` = base64("user:") and the
    refresh token as `identitytoken`: the identity token is what is used, not an empty
    password."""
    path = _config(tmp_path, {"auths": {"reg.example": {"auth": "YWxpY2U6",
                                                        "identitytoken": "rt-1"}}})
    found = DockerConfigCredentials(path).lookup("reg.example")
    assert found == Credentials("alice", "", identity_token="rt-1")
    assert found is not None and "rt-1" not in repr(found)
    assert found.engine_auth("reg.example") == {
        "username": "alice", "identitytoken": "rt-1", "serveraddress": "reg.example"}


def test_identity_token_from_a_helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A helper answering Username "<token>" holds an identity token, as docker stores it."""
    _helper(tmp_path, "tok", 'echo \'{"Username": "<token>", "Secret": "rt-2"}\'', monkeypatch)
    path = _config(tmp_path, {"credHelpers": {"https://reg.example": "tok"}})
    found = DockerConfigCredentials(path).lookup("reg.example")
    assert found == Credentials("", "", identity_token="rt-2")
    assert found is not None
    assert found.engine_auth("reg.example") == {"identitytoken": "rt-2",
                                                "serveraddress": "reg.example"}


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
