"""The Docker adapter: engine API calls through the docker SDK; raw dicts become typed snapshots
here and nowhere else. The API version is negotiated, so engines from 20.10 (API 1.41) to the
newest work with the same code.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.utils
import requests.exceptions

from updater.errors import EngineError, EngineUnavailable, NotFoundInEngine

log = logging.getLogger(__name__)
API_TIMEOUT = 60
WATCHED_STATES = ("running", "restarting", "paused")


@dataclass(frozen=True, slots=True)
class ContainerSnapshot:
    """What the updater needs to know about one container, as the engine listed it."""

    id: str
    name: str
    image: str
    image_id: str
    state: str
    labels: Mapping[str, str] = field(default_factory=dict)
    repo_digests: tuple[str, ...] = ()


class Engine:
    """A connected Docker engine."""

    def __init__(self, client: docker.DockerClient, host: str) -> None:
        self._client = client
        self._api = client.api
        self.host = host

    @classmethod
    def connect(cls, docker_host: str, timeout: int = API_TIMEOUT) -> Engine:
        """Connect and negotiate the API version; EngineUnavailable names the host if it fails."""
        kwargs: dict[str, Any] = dict(docker.utils.kwargs_from_env())
        kwargs.update(base_url=docker_host, version="auto", timeout=timeout)
        try:
            client = docker.DockerClient(**kwargs)
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise EngineUnavailable(
                f"cannot reach the Docker engine at {docker_host} ({_reason(exc)}); "
                "check docker_host / DOCKER_HOST and that dockerd is running") from None
        return cls(client, docker_host)

    @property
    def api_version(self) -> str:
        return str(self._api.api_version)

    def close(self) -> None:
        self._client.close()

    def host_name(self) -> str | None:
        """The engine's host name (`docker info` Name), for notifications."""
        try:
            return str(self._call("read engine info", self._api.info).get("Name") or "") or None
        except EngineError:
            return None

    def containers(self) -> list[ContainerSnapshot]:
        """Running (and restarting or paused) containers with their image's RepoDigests.

        Two list calls per pass, whatever the number of containers; an inspect only for a
        container whose tag has since moved to another image (the list then shows an image ID).
        """
        listed = self._call("list containers", self._api.containers,
                            filters={"status": list(WATCHED_STATES)})
        images = self._call("list images", self._api.images)
        digests = {image["Id"]: tuple(image.get("RepoDigests") or ()) for image in images}
        return [self._snapshot(entry, digests) for entry in listed]

    def _snapshot(self, entry: Mapping[str, Any],
                  digests: Mapping[str, tuple[str, ...]]) -> ContainerSnapshot:
        image = str(entry.get("Image") or "")
        if image.startswith("sha256:") or image == entry.get("ImageID"):
            inspect = self._call("inspect container", self._api.inspect_container, entry["Id"])
            image = str(inspect["Config"]["Image"])
        names = entry.get("Names") or [entry["Id"][:12]]
        return ContainerSnapshot(
            id=str(entry["Id"]),
            name=str(names[0]).lstrip("/"),
            image=image,
            image_id=str(entry.get("ImageID") or ""),
            state=str(entry.get("State") or ""),
            labels=dict(entry.get("Labels") or {}),
            repo_digests=digests.get(str(entry.get("ImageID")), ()),
        )

    # --- swarm -------------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        return dict(self._call("read engine info", self._api.info))

    def inspect_node(self, node: str) -> dict[str, Any]:
        return dict(self._call(f"inspect node {node}", self._api.inspect_node, node))

    def tasks(self, service: str | None = None) -> list[dict[str, Any]]:
        """Tasks of one service, or every task the swarm wants running."""
        filters = {"service": service} if service else {"desired-state": "running"}
        return list(self._call("list tasks", self._api.tasks, filters=filters))

    def nodes(self) -> list[dict[str, Any]]:
        return list(self._call("list nodes", self._api.nodes))

    def services(self) -> list[dict[str, Any]]:
        return list(self._call("list services", self._api.services))

    def inspect_service(self, service: str) -> dict[str, Any]:
        return dict(self._call(f"inspect service {service}", self._api.inspect_service,
                               service))

    def update_service(self, service: str, version: int, spec: dict[str, Any],
                       registry_auth: str | None, rollback: bool = False) -> None:
        """POST the whole spec with the version index as the optimistic lock."""
        url = f"{self._api.base_url}/v{self.api_version}/services/{service}/update"
        params: dict[str, Any] = {"version": version}
        if rollback:
            params["rollback"] = "previous"
        headers = {"Content-Type": "application/json"}
        if registry_auth:
            headers["X-Registry-Auth"] = registry_auth
        response = self._call(f"update service {service}", self._api.post, url,
                              data=json.dumps(spec), params=params, headers=headers)
        if response.status_code >= 400:
            try:
                message = response.json().get("message", "")
            except ValueError:
                message = response.text[:200]
            raise EngineError(f"Docker engine at {self.host} refused to update service "
                              f"{service}: {message}")

    def rollback_service(self, service: str, version: int) -> None:
        spec = self.inspect_service(service)["Spec"]
        self.update_service(service, version, spec, None, rollback=True)

    # --- single containers and images -------------------------------------------------------

    def inspect_container(self, container: str) -> dict[str, Any] | None:
        """The engine's inspect document, or None when no such container exists."""
        try:
            return dict(self._call(f"inspect container {container}", self._api.inspect_container,
                                   container))
        except NotFoundInEngine:
            return None

    def inspect_image(self, image: str) -> dict[str, Any]:
        return dict(self._call(f"inspect image {image}", self._api.inspect_image, image))

    def pull(self, repository: str, digest: str, auth: dict[str, str] | None) -> str:
        """Pull `repository@digest` and return the image ID."""
        self._call(f"pull {repository}@{digest}", self._api.pull, repository, tag=digest,
                   auth_config=auth)
        return str(self.inspect_image(f"{repository}@{digest}")["Id"])

    def tag(self, image: str, repository: str, tag: str) -> None:
        self._call(f"tag {image} as {repository}:{tag}", self._api.tag, image, repository, tag,
                   force=True)

    def create(self, body: dict[str, Any], name: str) -> str:
        created = self._call(f"create container {name}", self._api.create_container_from_config,
                             body, name)
        return str(created["Id"])

    def connect_network(self, network: str, container: str, endpoint: dict[str, Any]) -> None:
        ipam = endpoint.get("IPAMConfig") or {}
        self._call(f"connect {container} to network {network}",
                   self._api.connect_container_to_network, container, network,
                   ipv4_address=ipam.get("IPv4Address") or None,
                   ipv6_address=ipam.get("IPv6Address") or None,
                   aliases=endpoint.get("Aliases"), links=endpoint.get("Links"),
                   link_local_ips=ipam.get("LinkLocalIPs") or None,
                   driver_opt=endpoint.get("DriverOpts"))

    def rename(self, container: str, name: str) -> None:
        self._call(f"rename {container} to {name}", self._api.rename, container, name)

    def start(self, container: str) -> None:
        self._call(f"start {container}", self._api.start, container)

    def stop(self, container: str, timeout: float, signal: str | None = None) -> None:
        """Stop gracefully: `signal` (else the container's StopSignal), SIGKILL after `timeout`."""
        seconds = max(0, round(timeout))
        if signal is None:
            self._call(f"stop {container}", self._api.stop, container, timeout=seconds)
            return
        self._call(f"signal {container}", self._api.kill, container, signal=signal)
        try:
            self._api.wait(container, timeout=seconds + 5)
        except requests.exceptions.ConnectionError:
            self._call(f"kill {container}", self._api.kill, container, signal="SIGKILL")

    def remove(self, container: str, force: bool = False) -> None:
        """Remove a container, never its volumes."""
        with contextlib.suppress(NotFoundInEngine):
            self._call(f"remove container {container}", self._api.remove_container, container,
                       v=False, force=force)

    def remove_image(self, image: str) -> None:
        self._call(f"remove image {image}", self._api.remove_image, image)

    def exec(self, container: str, command: str) -> tuple[int, str]:
        """Run `sh -c command` inside the container; its exit code and output."""
        created = self._call(f"exec in {container}", self._api.exec_create, container,
                             ["sh", "-c", command])
        output = self._call(f"exec in {container}", self._api.exec_start, created["Id"])
        result = self._call(f"inspect exec in {container}", self._api.exec_inspect,
                            created["Id"])
        text = output.decode("utf-8", "replace") if isinstance(output, bytes) else str(output)
        return int(result.get("ExitCode") or 0), text

    def _call(self, what: str, function: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except docker.errors.NotFound as exc:
            raise NotFoundInEngine(f"Docker engine at {self.host} failed to {what}: "
                            f"{exc.explanation or exc}") from None
        except docker.errors.APIError as exc:
            raise EngineError(f"Docker engine at {self.host} failed to {what}: "
                              f"{exc.explanation or exc}") from None
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise EngineUnavailable(f"lost the Docker engine at {self.host} while trying to "
                                    f"{what} ({_reason(exc)})") from None


_CAUSES: tuple[tuple[type[BaseException], str], ...] = (
    (FileNotFoundError, "no socket there"),
    (ConnectionRefusedError, "connection refused"),
    (PermissionError, "permission denied on the socket"),
    (TimeoutError, "timed out"),
)


def _reason(exc: BaseException) -> str:
    """A short cause from the exception chain, by type; never a URL or a message with secrets."""
    for inner in _chain(exc):
        for kind, text in _CAUSES:
            if isinstance(inner, kind):
                return text
    return type(exc).__name__


def _chain(exc: BaseException) -> list[BaseException]:
    """`exc` and what caused it, including errors urllib3 carries in its args."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain and len(chain) < 10:
        chain.append(current)
        nested = [a for a in current.args if isinstance(a, BaseException)]
        reason = getattr(current, "reason", None)
        current = current.__cause__ or current.__context__ or (
            reason if isinstance(reason, BaseException) else nested[0] if nested else None)
    return chain


_CONTAINER_MOUNT = re.compile(r"/containers/([0-9a-f]{64})/(?:hostname|resolv\.conf|hosts)")


def own_container_id(mountinfo: str | None = None) -> str | None:
    """The ID of the container this process runs in, from the files Docker bind-mounts into
    every container (/etc/hostname and friends); None when not in a Docker container."""
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            return None
    match = _CONTAINER_MOUNT.search(mountinfo)
    return match.group(1) if match else None
