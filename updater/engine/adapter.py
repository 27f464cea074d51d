"""The Docker adapter: engine API calls through the docker SDK; raw dicts become typed snapshots
here and nowhere else. The API version is negotiated, so engines from 20.10 (API 1.41) to the
newest work with the same code.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.utils
import requests.exceptions

from updater.core.snapshots import ContainerSnapshot
from updater.engine import recreate
from updater.engine.calls import call, message, reason
from updater.engine.commands import run_in
from updater.engine.signals import same_signal
from updater.engine.swarm import SwarmCalls
from updater.errors import EngineError, EngineUnavailable, NotFoundInEngine

log = logging.getLogger(__name__)
API_TIMEOUT = 60
# Beyond this a stop timeout means "wait" (a socket timeout cannot be that long anyway).
MAX_STOP_SECONDS = 10 * 365 * 86400
WATCHED_STATES = ("running", "restarting", "paused")


class Engine(SwarmCalls):
    """A connected Docker engine."""

    def __init__(self, client: docker.DockerClient, host: str) -> None:
        self._client = client
        self._api = client.api
        self.host = host
        self._content_addressed: bool | None = None

    @classmethod
    def connect(cls, docker_host: str, timeout: int = API_TIMEOUT) -> Engine:
        """Connect and negotiate the API version; EngineUnavailable names the host if it fails."""
        kwargs: dict[str, Any] = dict(docker.utils.kwargs_from_env())
        kwargs.update(base_url=docker_host, version="auto", timeout=timeout)
        try:
            client = docker.DockerClient(**kwargs)
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise EngineUnavailable(
                f"cannot reach the Docker engine at {docker_host} ({reason(exc)}); "
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
        container whose tag has since moved to another image (the list then shows an image ID),
        and `/info` (once per connection) only when a container runs an image with no names.
        """
        listed = self._call("list containers", self._api.containers,
                            filters={"status": list(WATCHED_STATES)})
        images = self._call("list images", self._api.images)
        digests = {image["Id"]: tuple(image.get("RepoDigests") or ()) for image in images}
        unnamed = {image["Id"] for image in images
                   if not image.get("RepoDigests") and not image.get("RepoTags")}
        unnamed &= {entry.get("ImageID") for entry in listed}
        if unnamed and not self._containerd_store():  # asked only when it matters
            unnamed = set()
        return [self._snapshot(entry, digests, unnamed) for entry in listed]

    def _containerd_store(self) -> bool:
        """Whether images live in containerd (Docker 29's default); read once per connection."""
        if self._content_addressed is None:
            status = self.info().get("DriverStatus") or []
            self._content_addressed = any(
                list(pair)[:2] == ["driver-type", "io.containerd.snapshotter.v1"]
                for pair in status)
        return self._content_addressed

    def _snapshot(self, entry: Mapping[str, Any], digests: Mapping[str, tuple[str, ...]],
                  unnamed: set[str]) -> ContainerSnapshot:
        image = str(entry.get("Image") or "")
        if image.startswith("sha256:") or image == entry.get("ImageID"):
            inspect = self._call("inspect container", self._api.inspect_container, entry["Id"])
            image = str(inspect["Config"]["Image"])
        return ContainerSnapshot(
            id=str(entry["Id"]),
            name=_own_name(entry),
            image=image,
            image_id=str(entry.get("ImageID") or ""),
            state=str(entry.get("State") or ""),
            labels=dict(entry.get("Labels") or {}),
            repo_digests=digests.get(str(entry.get("ImageID")), ()),
            content_digest=str(entry["ImageID"]) if entry.get("ImageID") in unnamed else None,
        )

    # --- swarm -------------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        return dict(self._call("read engine info", self._api.info))

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

    def platform(self, container: ContainerSnapshot) -> str | None:
        """The platform ("os/arch[/variant]") of the image `container` runs; None if unknown.

        The containerd image store keeps every platform of a tag under one image ID, whose
        inspect names the engine's own platform: there the container's own manifest
        descriptor (API >= 1.48) says which one it was created from."""
        try:
            inspect = self.inspect_container(container.id) if self._manifest_descriptors() \
                else None
            return recreate.manifest_platform(inspect or {}) or image_platform(
                self.inspect_image(container.image_id))
        except EngineUnavailable:
            raise
        except EngineError:
            return None

    def endpoints_at_create(self) -> bool:
        """Whether create takes every network of a container, each with its own MAC address
        (API >= 1.44, Docker 25). Older engines take one; the others are connected after, and
        have no MAC of their own (a MAC given to connect before the first start is ignored by
        28.x too, so the body is the only place to keep one)."""
        return self._api_at_least(1, 44)

    def _manifest_descriptors(self) -> bool:
        """Whether container inspect names the manifest it was created from (API >= 1.48)."""
        return self._api_at_least(1, 48)

    def pull(self, repository: str, digest: str, auth: dict[str, str] | None,
             platform: str | None = None) -> str:
        """Pull `repository@digest` with `auth` (None: anonymously) and return the image ID;
        of a multi-platform image, the one for `platform` ("os/arch[/variant]"; None: the
        engine's own)."""
        # Never None to the SDK: it would then run the Docker config's credential helpers
        # itself, and a broken one would escape as a bare JSON error.
        self._call(f"pull {repository}@{digest}", self._api.pull, repository, tag=digest,
                   auth_config=auth or {}, platform=platform)
        return str(self.inspect_image(f"{repository}@{digest}")["Id"])

    def tag(self, image: str, repository: str, tag: str) -> None:
        self._call(f"tag {image} as {repository}:{tag}", self._api.tag, image, repository, tag,
                   force=True)

    def create(self, body: dict[str, Any], name: str, image_id: str | None = None,
               platform: str | None = None) -> str:
        """Create a container from `body`; with `image_id`, on exactly that image although its
        `Image` reference (kept as the container's Config.Image, which is what `docker ps` and
        this updater read) may now name another: the reference is pointed at `image_id` for the
        create and put back right after. `platform` picks one of a multi-platform image's
        (the containerd image store keeps them under one ID)."""
        reference = str(body.get("Image") or "")
        current = self._image_id(reference) if image_id else None
        if image_id is None or current == image_id or "@" in reference or reference.startswith(
                "sha256:"):
            return self._create(body, name, platform)
        repository, tag = _split_tag(reference)
        self.tag(image_id, repository, tag)
        try:
            return self._create(body, name, platform)
        finally:
            if current is not None:
                self.tag(current, repository, tag)

    def _create(self, body: dict[str, Any], name: str, platform: str | None) -> str:
        created = self._call(f"create container {name}", self._api.create_container_from_config,
                             body, name, platform)
        return str(created["Id"])

    def _image_id(self, reference: str) -> str | None:
        try:
            return str(self.inspect_image(reference)["Id"])
        except NotFoundInEngine:
            return None

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
        """Stop gracefully, as `docker stop` does: `signal` (else the container's StopSignal),
        SIGKILL after `timeout` seconds; a negative timeout waits for as long as it takes.

        It is a manual stop, so the restart policy does not bring the container back. The
        engine counts a stop with a signal other than the container's own as a manual stop on
        no version (API 1.42+ sends it, but 28.x restarts the container after it): such a signal
        is sent with the restart policy set to "no" for the moment of the stop, then put back."""
        forever = timeout < 0 or timeout > MAX_STOP_SECONDS
        seconds = -1 if forever else round(timeout)
        inspect = self.inspect_container(container) or {}
        own = (inspect.get("Config") or {}).get("StopSignal") or "SIGTERM"
        if signal is None or same_signal(signal, str(own)):
            self._post(f"stop {container}", f"/containers/{container}/stop", {"t": seconds},
                       None if forever else API_TIMEOUT + seconds)
            return
        policy = dict((inspect.get("HostConfig") or {}).get("RestartPolicy") or {})
        held = policy.get("Name") not in (None, "", "no")
        if held:
            self.set_restart_policy(container, {"Name": "no", "MaximumRetryCount": 0})
        try:
            self._call(f"signal {container}", self._api.kill, container, signal=signal)
            self._wait_exit(container, None if forever else seconds)
        finally:
            if held:
                self.set_restart_policy(container, policy)

    def _wait_exit(self, container: str, seconds: int | None) -> None:
        """Wait for the container to exit; SIGKILL it after `seconds` (None: no limit)."""
        try:
            self._api.wait(container, timeout=None if seconds is None else max(seconds, 1))
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout):
            self._call(f"kill {container}", self._api.kill, container, signal="SIGKILL")
            self._call(f"wait for {container}", self._api.wait, container, timeout=API_TIMEOUT)
        except docker.errors.NotFound:
            return  # removed on exit (--rm)

    def set_restart_policy(self, container: str, policy: dict[str, Any]) -> None:
        """Set a restart policy (held off around a stop, put back after, or by a restore)."""
        self._call(f"set the restart policy of {container}", self._api.update_container,
                   container, restart_policy=policy)

    def pause(self, container: str) -> None:
        self._call(f"pause {container}", self._api.pause, container)

    def unpause(self, container: str) -> None:
        self._call(f"unpause {container}", self._api.unpause, container)

    def remove(self, container: str, force: bool = False) -> None:
        """Remove a container, never its volumes."""
        with contextlib.suppress(NotFoundInEngine):
            self._call(f"remove container {container}", self._api.remove_container, container,
                       v=False, force=force)

    def remove_image(self, image: str) -> None:
        self._call(f"remove image {image}", self._api.remove_image, image)

    def exec(self, container: str, command: str, timeout: float) -> tuple[int | None, str]:
        """Run `sh -c command` inside the container; its exit code and output (None after
        `timeout`, when the command and everything it started were killed)."""
        return run_in(self._api, self._call, container, command, timeout)

    def _call(self, what: str, function: Any, *args: Any, **kwargs: Any) -> Any:
        return call(self.host, what, function, *args, **kwargs)

    def _api_at_least(self, major: int, minor: int) -> bool:
        found = tuple(int(part) for part in self.api_version.split(".")[:2])
        return found >= (major, minor)

    def _post(self, what: str, path: str, params: dict[str, Any],
              timeout: float | None) -> None:
        """POST to an endpoint the SDK lacks a parameter for; errors as `_call` raises them."""
        url = f"{self._api.base_url}/v{self.api_version}{path}"
        response = self._call(what, self._api.post, url, params=params, timeout=timeout)
        if response.status_code == 404:
            raise NotFoundInEngine(f"Docker engine at {self.host} failed to {what}: "
                                   f"{message(response)}")
        if response.status_code >= 400:
            raise EngineError(f"Docker engine at {self.host} failed to {what}: "
                              f"{message(response)}")

def _own_name(entry: Mapping[str, Any]) -> str:
    """The container's name: the list also holds `/other/alias` for each legacy link to it."""
    names = [str(name).lstrip("/") for name in entry.get("Names") or ()]
    own = [name for name in names if "/" not in name]
    return (own or names or [str(entry["Id"])[:12]])[0]


def image_platform(image: Mapping[str, Any]) -> str | None:
    """The platform ("os/arch[/variant]") an image inspect document names; None if unknown."""
    parts = [str(image.get("Os") or ""), str(image.get("Architecture") or "")]
    if not all(parts):
        return None
    return "/".join(parts + ([str(image["Variant"])] if image.get("Variant") else []))


def _split_tag(reference: str) -> tuple[str, str]:
    """`repo:tag` (a digest reference never reaches here) -> (repo, tag); `latest` if none."""
    name, _, tag = reference.rpartition(":")
    if not name or "/" in tag:
        return reference, "latest"
    return name, tag


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
