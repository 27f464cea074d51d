"""Where registry credentials come from: the settings first, then the Docker client config
(`credHelpers`, `credsStore` through `docker-credential-*` helpers, then `auths`).

The Docker config is read anew on every lookup: `docker login` and helpers change what it
yields while the daemon runs, and the registry client asks only when a registry challenges
(and again when its copy is old or refused). Whatever cannot be read is a
CredentialsUnavailable: an error of the images on that one registry, never of the whole pass.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

from updater.core.reference import DEFAULT_DOMAIN, registry_host
from updater.core.settings import RegistrySettings
from updater.errors import CredentialsUnavailable
from updater.registry.auth import Credentials

log = logging.getLogger(__name__)
HELPER_TIMEOUT = 10.0
DOCKER_HUB_ADDRESS = "https://index.docker.io/v1/"
# A helper's Username for an identity token (`docker login`), not a secret itself.
IDENTITY_TOKEN_USER = "<token>"  # noqa: S105


class CredentialSource(Protocol):
    def lookup(self, host: str) -> Credentials | None:
        """Credentials for the registry at `host` (host[:port]), or None."""


def server_address(host: str) -> str:
    """The name `docker login` files `host` under (and asks a credential store for)."""
    host = registry_host(host)
    return DOCKER_HUB_ADDRESS if host == DEFAULT_DOMAIN else host


def matching_key(keys: Iterable[str], host: str) -> str | None:
    """The key of a Docker config section that names the registry `host`: the key `docker
    login` writes, else the first key naming the same host in any spelling Docker accepts
    (`https://host:5000/`, `http://host:5000`, `index.docker.io` for docker.io)."""
    keys = list(keys)
    wanted = server_address(host)
    if wanted in keys:
        return wanted
    host = registry_host(host)
    return next((key for key in keys if registry_host(key) == host), None)


class SettingsCredentials:
    """Credentials from the `registries` setting."""

    def __init__(self, registries: Mapping[str, RegistrySettings]) -> None:
        self._registries = registries

    def lookup(self, host: str) -> Credentials | None:
        entry = self._registries.get(registry_host(host))
        if entry is None or entry.username is None:
            return None
        return Credentials(entry.username, entry.password or "")


class DockerConfigCredentials:
    """Credentials from a Docker client `config.json`, read at each lookup."""

    def __init__(self, path: Path | None = None) -> None:
        self._path = path or default_config_path()

    def lookup(self, host: str) -> Credentials | None:
        document = _read_config(self._path)
        helpers = _section(document, "credHelpers", self._path)
        key = matching_key(helpers, host)
        if key is not None:  # asked for the name docker login filed it under, as Docker does
            return _from_helper(str(helpers[key]), server_address(host))
        if document.get("credsStore"):
            found = _from_helper(str(document["credsStore"]), server_address(host))
            if found is not None:
                return found
        auths = _section(document, "auths", self._path)
        key = matching_key(auths, host)
        return None if key is None else _from_auth_entry(auths[key], key, self._path)


class ChainedCredentials:
    """The first source that knows the host wins."""

    def __init__(self, *sources: CredentialSource) -> None:
        self._sources = sources

    def lookup(self, host: str) -> Credentials | None:
        for source in self._sources:
            found = source.lookup(host)
            if found is not None:
                return found
        return None


def default_config_path() -> Path:
    directory = os.environ.get("DOCKER_CONFIG") or str(Path.home() / ".docker")
    return Path(directory) / "config.json"


def _read_config(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise CredentialsUnavailable(
            f"cannot read Docker config {path}: {exc.strerror}") from None
    except ValueError:
        raise CredentialsUnavailable(
            f"Docker config {path} is not valid JSON; fix or remove it") from None
    if not isinstance(document, dict):
        raise CredentialsUnavailable(
            f"Docker config {path} is not a JSON object; fix or remove it")
    return document


def _section(document: dict[str, Any], name: str, path: Path) -> dict[str, Any]:
    section = document.get(name) or {}
    if not isinstance(section, dict):
        raise CredentialsUnavailable(f"{name!r} in Docker config {path} is not a JSON object; "
                                     "fix or remove it")
    return section


def _from_auth_entry(entry: Any, key: str, path: Path) -> Credentials | None:
    """An `auths` entry: `auth` (base64 of user:password) or username/password, or the
    `identitytoken` that `docker login` keeps instead of a password for OAuth2 registries."""
    if not isinstance(entry, dict):
        return None
    if entry.get("identitytoken"):
        username = str(entry.get("username") or "")
        if entry.get("auth"):
            username = _decoded_auth(entry["auth"], key, path)[0]
        return Credentials(username, "", identity_token=str(entry["identitytoken"]))
    if entry.get("auth"):
        return Credentials(*_decoded_auth(entry["auth"], key, path))
    if entry.get("username"):
        return Credentials(str(entry["username"]), str(entry.get("password") or ""))
    return None


def _decoded_auth(value: Any, key: str, path: Path) -> tuple[str, str]:
    try:
        decoded = base64.b64decode(str(value), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise CredentialsUnavailable(f"the 'auth' entry for {key} in {path} is not base64 "
                                     "of user:password; run docker login again") from None
    username, separator, password = decoded.partition(":")
    if not separator:
        raise CredentialsUnavailable(f"the 'auth' entry for {key} in {path} has no ':' "
                                     "between user and password; run docker login again")
    return username, password


def _from_helper(helper: str, key: str) -> Credentials | None:
    """Ask `docker-credential-<helper> get`; None when it knows nothing of `key`."""
    program = f"docker-credential-{helper}"
    try:
        result = subprocess.run([program, "get"], input=key.encode(), capture_output=True,
                                timeout=HELPER_TIMEOUT, check=False)
    except FileNotFoundError:
        raise CredentialsUnavailable(f"credential helper {program} named in the Docker config "
                                     "is not installed; install it or remove it from "
                                     "config.json") from None
    except OSError as exc:
        raise CredentialsUnavailable(f"credential helper {program} could not be run "
                                     f"({exc.strerror}); check that it is executable") from None
    except subprocess.TimeoutExpired:
        raise CredentialsUnavailable(f"credential helper {program} did not answer for {key} "
                                     f"within {HELPER_TIMEOUT:.0f}s") from None
    if result.returncode != 0:
        log.debug("credential helper %s has no entry for %s", program, key)
        return None
    try:
        answer = json.loads(result.stdout)
        username, secret = str(answer["Username"]), str(answer["Secret"])
    except (ValueError, KeyError, TypeError):
        # Its output is not shown: it may hold the secret itself.
        raise CredentialsUnavailable(f"credential helper {program} gave an answer for {key} "
                                     "that is not {Username, Secret} JSON; fix the helper or "
                                     "its credHelpers entry") from None
    if username == IDENTITY_TOKEN_USER:
        return Credentials("", "", identity_token=secret)
    return Credentials(username, secret)
