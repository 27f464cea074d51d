"""Test images built from scratch with busybox (nothing is pulled), pushed to the test registries.

A different VERSION gives a different digest under the same tag: an "upstream release". Every
build also carries a random label, so no two builds share an image ID or digest (the layers
are still cached).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import tarfile
import uuid
from pathlib import Path
from typing import Any

import docker
import docker.errors
import httpx

from harness.dockerd import image_store

DOCKERFILE = """\
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
ARG VERSION=1
RUN echo $VERSION > /version
LABEL org.opencontainers.image.version=$VERSION
ARG NONCE
LABEL harness.nonce=$NONCE
{extra}
CMD {cmd}
"""
# A process that stops at once on SIGTERM.
SLEEPER = '["sh", "-c", "trap \'exit 0\' TERM; while :; do sleep 1; done"]'
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
_PUSHED = re.compile(r"^(?P<tag>[^:\s]+): digest: (?P<digest>sha256:[0-9a-f]{64}) size: \d+$")
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def busybox_path() -> Path:
    found = shutil.which("busybox")
    if found is None:
        raise RuntimeError("busybox not found: apt-get install busybox-static")
    return Path(found).resolve()


def _context(cmd: str, extra: str) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        data = DOCKERFILE.format(cmd=cmd, extra=extra).encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        tar.add(str(busybox_path()), arcname="busybox")
    buffer.seek(0)
    return buffer


def build(client: docker.DockerClient, tag: str, version: str, cmd: str = SLEEPER,
          extra: str = "") -> str:
    """Build the busybox test image with VERSION=`version` as `tag` (with Dockerfile lines
    `extra` and CMD `cmd`); returns the image ID."""
    image, _ = client.images.build(fileobj=_context(cmd, extra), custom_context=True, tag=tag,
                                   buildargs={"VERSION": version, "NONCE": uuid.uuid4().hex},
                                   rm=True, forcerm=True)
    return str(image.id)


def push(client: docker.DockerClient, tag: str, auth: dict[str, str] | None = None) -> str:
    """Push `tag` (repo:tag) and return the manifest digest the registry stored."""
    repository, _, name = tag.rpartition(":")
    digest = None
    for line in client.api.push(repository, name, stream=True, decode=True, auth_config=auth):
        if "error" in line:
            raise RuntimeError(f"push of {tag} failed: {line['error']}")
        digest = (line.get("aux") or {}).get("Digest", digest)
        # The containerd image store sends no aux record, only "TAG: digest: sha256:... size: N".
        found = _PUSHED.match(str(line.get("status") or ""))
        if found and found.group("tag") == name:
            digest = digest or found.group("digest")
    if digest is None:
        raise RuntimeError(f"push of {tag} reported no digest")
    return str(digest)


def release(client: docker.DockerClient, tag: str, version: str,
            auth: dict[str, str] | None = None, *, cmd: str = SLEEPER, extra: str = "",
            keep_local: bool = True) -> str:
    """Build and push VERSION `version` under `tag`; returns the new registry digest. With
    `keep_local=False` the engine forgets the new image, so an update must really pull it."""
    _keep_pulled_as(client, tag, auth)
    image_id = build(client, tag, version, cmd, extra)
    digest = push(client, tag, auth)
    if not keep_local:
        client.images.remove(tag)
        # IDs only: listing Image objects inspects each, racing other tests' removals.
        if image_id in client.api.images(all=True, quiet=True):
            raise RuntimeError(f"{tag} is still local after removal")
    return digest


def _keep_pulled_as(client: docker.DockerClient, tag: str,
                    auth: dict[str, str] | None) -> None:
    """Building the next release here moves `tag` off the image it names now. A graph driver
    keeps that image's RepoDigests; the containerd image store derives them from the image's
    names and drops them with its last name, which a release pushed from another machine
    would not do. So on that store the image gets a digest name first (a pull by digest of what
    it was pushed as, nothing downloaded), and containers on it still show the digest they
    were pulled as."""
    if image_store(client.info()) != "containerd":
        return
    try:
        current = client.images.get(tag)
    except docker.errors.ImageNotFound:
        return
    repository = tag.rpartition(":")[0]
    for entry in dict.fromkeys(current.attrs.get("RepoDigests") or ()):
        name, _, digest = str(entry).partition("@")
        if name != repository:
            continue
        for line in client.api.pull(repository, tag=digest, stream=True, decode=True,
                                    auth_config=auth):
            if "error" in line:
                raise RuntimeError(f"pull of {name}@{digest} failed: {line['error']}")


def push_index(registry: str, repository: str, tag: str, children: dict[str, str],
               auth: tuple[str, str] | None = None) -> str:
    """Put an OCI image index under `repository:tag` whose entries are existing manifests
    (`{"amd64": digest, "arm64": digest}`); returns the index digest."""
    manifests: list[dict[str, Any]] = []
    with httpx.Client(base_url=f"http://{registry}", auth=auth, timeout=30) as http:
        for architecture, digest in children.items():
            # An engine on the containerd image store pushes OCI manifests.
            response = http.get(f"/v2/{repository}/manifests/{digest}",
                                headers={"Accept": f"{DOCKER_MANIFEST}, {OCI_MANIFEST}"})
            response.raise_for_status()
            manifests.append({"mediaType": response.headers["Content-Type"], "digest": digest,
                              "size": len(response.content),
                              "platform": {"architecture": architecture, "os": "linux"}})
        body = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                           "manifests": manifests}).encode()
        response = http.put(f"/v2/{repository}/manifests/{tag}", content=body,
                            headers={"Content-Type": OCI_INDEX})
        response.raise_for_status()
    return "sha256:" + hashlib.sha256(body).hexdigest()


def for_platform(registry: str, repository: str, digest: str, architecture: str,
                 tag: str) -> str:
    """The image `repository@digest` again as an image for linux/`architecture` (its config
    names that architecture; the busybox in it still runs here, as an emulated one would), put
    under `tag` through the registry's API; returns its manifest digest."""
    with httpx.Client(base_url=f"http://{registry}", timeout=30) as http:
        response = http.get(f"/v2/{repository}/manifests/{digest}",
                            headers={"Accept": f"{DOCKER_MANIFEST}, {OCI_MANIFEST}"})
        response.raise_for_status()
        media_type = response.headers["Content-Type"]
        manifest = response.json()
        blob = http.get(f"/v2/{repository}/blobs/{manifest['config']['digest']}",
                        follow_redirects=True)
        blob.raise_for_status()
        config = {**blob.json(), "architecture": architecture, "os": "linux"}
        body = json.dumps(config).encode()
        config_digest = "sha256:" + hashlib.sha256(body).hexdigest()
        upload = http.post(f"/v2/{repository}/blobs/uploads/")
        upload.raise_for_status()
        location = upload.headers["Location"]  # keeps its own query (the upload's state)
        separator = "&" if "?" in location else "?"
        http.put(f"{location}{separator}digest={config_digest}", content=body,
                 headers={"Content-Type": "application/octet-stream"}).raise_for_status()
        manifest["config"] = {**manifest["config"], "digest": config_digest, "size": len(body)}
        encoded = json.dumps(manifest).encode()
        http.put(f"/v2/{repository}/manifests/{tag}", content=encoded,
                 headers={"Content-Type": media_type}).raise_for_status()
    return "sha256:" + hashlib.sha256(encoded).hexdigest()


def retag_in_registry(registry: str, repository: str, source: str, target: str,
                      auth: tuple[str, str] | None = None) -> str:
    """Put the manifest under `repository:source` under `repository:target` too, through the
    registry's HTTP API only, as a release pushed from another machine: no tag of any engine
    moves. Returns its digest."""
    with httpx.Client(base_url=f"http://{registry}", auth=auth, timeout=30) as http:
        response = http.get(f"/v2/{repository}/manifests/{source}",
                            headers={"Accept": f"{DOCKER_MANIFEST}, {OCI_MANIFEST}, {OCI_INDEX}"})
        response.raise_for_status()
        put = http.put(f"/v2/{repository}/manifests/{target}", content=response.content,
                       headers={"Content-Type": response.headers["Content-Type"]})
        put.raise_for_status()
    return "sha256:" + hashlib.sha256(response.content).hexdigest()
